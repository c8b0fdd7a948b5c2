#!/usr/bin/env python3
"""Draws loadgen's `--json` lines as an SVG line chart: msgs/s (top panel) and p50/p99 latency
(bottom panel) against connections or rate on a log-scaled x axis. Stdlib only; it reads the
given files (or stdin) and writes only the SVG file named by --out.

    python3 tools/curve.py --out target/curve/closed_loop.svg runs.jsonl
    python3 tools/curve.py --x rate --out open.svg raftchat.jsonl:raftchat etcd.jsonl:etcd
    python3 tools/curve.py --table runs.jsonl    # the markdown table instead (stdout)

Each input line is one run: an object with "msgs_per_s", "latency_ms": {"p50", "p99"} and the
x field ("connections" by default, or "rate"), and where loadgen saw them "entries_per_sync" and
"cpu_us_per_msg". Several runs at one x are drawn (and tabled) as their median.
A `FILE:LABEL` argument names a series; lines that are not JSON objects are skipped with a note.
"""
import argparse
import json
import math
import statistics
import sys
from xml.sax.saxutils import escape

WIDTH_PX, PANEL_PX, MARGIN_PX = 820, 230, 70
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def read_runs(lines, x_field):
    """{x: [run, ...]} from JSON lines; bad lines are reported on stderr and skipped."""
    by_x = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            run = json.loads(line)
            x = float(run[x_field])
            point = (float(run["msgs_per_s"]), float(run["latency_ms"]["p50"]),
                     float(run["latency_ms"]["p99"]), optional(run, "entries_per_sync"),
                     optional(run, "cpu_us_per_msg"), optional(run["latency_ms"], "p99.9"))
        except (ValueError, KeyError, TypeError) as e:
            print(f"curve.py: line {number} skipped: {e!r}", file=sys.stderr)
            continue
        if x > 0:
            by_x.setdefault(x, []).append(point)
    return by_x


def optional(run, key):
    """A number the run may lack (loadgen leaves out what it could not see)."""
    v = run.get(key)
    return float(v) if isinstance(v, (int, float)) else None


def median_of(values):
    """The median of the values present; None when none is."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def medians(by_x):
    """[(x, msgs_per_s, p50_ms, p99_ms, entries_per_sync, cpu_us_per_msg, p999_ms, runs)]
    sorted by x, each figure the median over its runs."""
    return [(x, *(median_of(p[i] for p in runs) for i in range(6)), len(runs))
            for x, runs in sorted(by_x.items())]


def table(label, rows, x_field):
    """The markdown table of one series."""
    def fmt(v, spec):
        return "n/a" if v is None else format(v, spec)
    out = [f"| {x_field} ({label}) | msgs/s | p50 ms | p99 ms | p99.9 ms | entries/sync "
           "| CPU µs/msg | runs |",
           "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for x, rate, p50, p99, eps, cpu, p999, runs in rows:
        out.append(f"| {x:g} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {fmt(p999, '.2f')} "
                   f"| {fmt(eps, '.2f')} | {fmt(cpu, '.1f')} | {runs} |")
    return "\n".join(out)


def nice_max(v):
    """A round upper bound for an axis holding values up to v."""
    if v <= 0:
        return 1.0
    step = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 4, 5, 6, 8, 10):
        if v <= m * step:
            return m * step
    return 10 * step


def tick(v):
    """An axis label: thousands separated, no exponent."""
    return f"{v:,.0f}" if v >= 100 else f"{v:g}"


class Chart:
    """Two stacked panels sharing one log-scaled x axis."""

    def __init__(self, xs, title, x_label):
        self.lo, self.hi = math.log10(min(xs)), math.log10(max(xs))
        if self.hi - self.lo < 1e-9:
            self.lo, self.hi = self.lo - 0.5, self.hi + 0.5
        self.xs, self.title, self.x_label = xs, title, x_label
        self.parts = []

    def px_x(self, x):
        span = WIDTH_PX - 2 * MARGIN_PX
        return MARGIN_PX + (math.log10(x) - self.lo) / (self.hi - self.lo) * span

    def px_y(self, panel, v, vmax):
        top = 50 + panel * (PANEL_PX + 60)
        return top + PANEL_PX - (v / vmax) * PANEL_PX

    def text(self, x, y, s, anchor="middle", size=12, extra=""):
        self.parts.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" '
                          f'text-anchor="{anchor}" {extra}>{escape(str(s))}</text>')

    def axes(self, panel, vmax, label):
        top = self.px_y(panel, vmax, vmax)
        bottom = self.px_y(panel, 0, vmax)
        for i in range(5):
            v = vmax * i / 4
            y = self.px_y(panel, v, vmax)
            self.parts.append(f'<line x1="{MARGIN_PX}" x2="{WIDTH_PX - MARGIN_PX}" y1="{y:.1f}" '
                              f'y2="{y:.1f}" stroke="#ddd"/>')
            self.text(MARGIN_PX - 6, y + 4, tick(v), anchor="end", size=11)
        for x in self.xs:
            px = self.px_x(x)
            self.parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{top:.1f}" '
                              f'y2="{bottom:.1f}" stroke="#eee"/>')
            self.text(px, bottom + 16, tick(x), size=11)
        self.text(MARGIN_PX, top - 10, label, anchor="start", size=12, extra='font-weight="bold"')

    def line(self, panel, points, vmax, color, dashed=False):
        coords = " ".join(f"{self.px_x(x):.1f},{self.px_y(panel, v, vmax):.1f}" for x, v in points)
        dash = ' stroke-dasharray="6,4"' if dashed else ""
        self.parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" '
                          f'stroke-width="2"{dash}/>')
        for x, v in points:
            self.parts.append(f'<circle cx="{self.px_x(x):.1f}" '
                              f'cy="{self.px_y(panel, v, vmax):.1f}" r="3" fill="{color}"/>')

    def svg(self):
        height = 50 + 2 * (PANEL_PX + 60) + 20
        self.text(WIDTH_PX / 2, 24, self.title, size=15, extra='font-weight="bold"')
        self.text(WIDTH_PX / 2, height - 12, self.x_label + " (log scale)", size=12)
        body = "\n".join(self.parts)
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_PX}" height="{height}" '
                f'font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n'
                f'{body}\n</svg>\n')


def draw(series, title, x_label):
    """The SVG text for [(label, medians)]."""
    xs = sorted({p[0] for _, rows in series for p in rows})
    chart = Chart(xs, title, x_label)
    rate_max = nice_max(max(p[1] for _, rows in series for p in rows))
    lat_max = nice_max(max(p[3] for _, rows in series for p in rows))
    chart.axes(0, rate_max, "committed msgs/s")
    chart.axes(1, lat_max, "latency ms (solid p50, dashed p99)")
    for i, (label, rows) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        chart.line(0, [(p[0], p[1]) for p in rows], rate_max, color)
        chart.line(1, [(p[0], p[2]) for p in rows], lat_max, color)
        chart.line(1, [(p[0], p[3]) for p in rows], lat_max, color, dashed=True)
        chart.text(WIDTH_PX - MARGIN_PX, 50 + 16 * i, label, anchor="end",
                   extra=f'fill="{color}" font-weight="bold"')
    return chart.svg()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="*", help="FILE or FILE:LABEL with loadgen --json lines "
                    "(default: stdin)")
    ap.add_argument("--out", help="the SVG file to write")
    ap.add_argument("--table", action="store_true", help="print the markdown table instead")
    ap.add_argument("--x", default="connections", help="x field: connections (default) or rate")
    ap.add_argument("--title", default="closed loop: throughput and latency against connections")
    args = ap.parse_args(argv)
    series = []
    for spec in args.inputs or ["-"]:
        path, _, label = spec.partition(":")
        try:
            lines = sys.stdin.readlines() if path == "-" else open(path).readlines()
        except OSError as e:
            print(f"curve.py: {e}", file=sys.stderr)
            return 2
        rows = medians(read_runs(lines, args.x))
        if rows:
            series.append((label or ("raftchat" if path == "-" else path), rows))
    if not series:
        print("curve.py: no usable runs in the input", file=sys.stderr)
        return 1
    if args.table:
        print("\n\n".join(table(label, rows, args.x) for label, rows in series))
        return 0
    if not args.out:
        print("curve.py: give --out FILE.svg (or --table)", file=sys.stderr)
        return 2
    with open(args.out, "w") as f:
        f.write(draw(series, args.title, args.x))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
