#!/usr/bin/env python3
"""The telnet client behind tools/history_bench.sh (one subcommand per measurement).

  history_bench.py status PORT                  this node's `status` as `key value` lines
  history_bench.py seed PORT ROOM COUNT         post COUNT short messages to #ROOM (creates it)
  history_bench.py wait PORT APPLIED START_NS DEADLINE_S
        poll `status` every 10 ms until the node answers and until its `applied` >= APPLIED;
        prints both times in ms since START_NS (a `date +%s%N` taken just before the restart)
  history_bench.py history PORT ROOM N COUNT DEADLINE_S
        COUNT requests `history #ROOM N`, one at a time on one connection; prints p50/p99/max ms
  history_bench.py chatlog PORT DEADLINE_S
        one `get chatLog`, read as fast as possible until `end <count>`; prints bytes, messages,
        seconds and MB/s (MB = 10^6 bytes)
  history_bench.py probe PORT DEADLINE_S
        `status` every 100 ms on one connection until SIGTERM or the deadline; prints the
        round trips' count, p50, p99 and max ms (how long the node's loop stalls)
  history_bench.py snapshots BYTES_PER_ENTRY LOG...
        from node logs, each snapshot a node took: index, file bytes, seconds from capture to
        durable, and the WAL bytes logged since its previous one (estimated as the entries
        between them times BYTES_PER_ENTRY, given as `<node>=<bytes>,...`)

Every connection first leaves #general (which a new telnet connection is in), so live `msg`
lines from the write load do not mix into the answers; any that still arrive are skipped and
not counted. Exit status 1 on a timeout or an `err` answer, with the partial figures printed.
"""
import datetime
import inspect
import math
import re
import os
import signal
import socket
import sys
import time

FINAL = (b"ack", b"err", b"end")


class Conn:
    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb", buffering=1 << 16)

    def command(self, line):
        """Sends one command; returns (listing lines, final line), skipping live `msg` lines."""
        self.sock.sendall(line.encode() + b"\n")
        lines = []
        while True:
            got = self.file.readline()
            if not got:
                raise ConnectionError(f"connection closed during `{line}`")
            got = got.rstrip(b"\r\n")
            if got.startswith(b"msg "):
                continue
            if got.split(b" ", 1)[0] in FINAL:
                return lines, got.decode(errors="replace")
            lines.append(got)

    def leave_general(self):
        self.command("leave #general")

    def close(self):
        self.sock.close()


def status(port, timeout=5.0):
    conn = Conn(port, timeout)
    try:
        lines, final = conn.command("status")
    finally:
        conn.close()
    if final != "end":
        raise RuntimeError(f"status: {final}")
    out = {}
    for line in lines:
        key, _, value = line.decode(errors="replace").partition(" ")
        out[key] = value
    return out


def cmd_status(port):
    for key, value in status(int(port)).items():
        print(key, value)


def cmd_seed(port, room, count):
    conn = Conn(int(port))
    _, final = conn.command(f"join #{room}")
    if not final.startswith("ack"):
        sys.exit(f"seed: join #{room}: {final}")
    for i in range(int(count)):
        while True:
            _, final = conn.command(f"msg #{room} early message {i} in #{room}")
            if final.startswith("ack"):
                break
            if "no leader" not in final:
                sys.exit(f"seed: {final}")
            time.sleep(0.1)
    conn.close()
    print(f"seed: posted {count} messages to #{room}")


def cmd_wait(port, applied, start_ns, deadline_s):
    port, applied, start_ns = int(port), int(applied), int(start_ns)
    deadline = start_ns / 1e9 + float(deadline_s)
    answered = None
    while time.time() < deadline:
        try:
            st = status(port, timeout=1.0)
        except (OSError, RuntimeError, ConnectionError):
            time.sleep(0.01)
            continue
        now_ms = (time.time_ns() - start_ns) / 1e6
        if answered is None:
            answered = now_ms
            print(f"answered_status_ms {answered:.0f}")
        if int(st.get("applied", "0")) >= applied:
            print(f"caught_up_ms {now_ms:.0f} (applied {st.get('applied')} >= {applied})")
            return
        time.sleep(0.01)
    print(f"TIMEOUT after {deadline_s} s (answered_status_ms {answered})")
    sys.exit(1)


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    rank = math.ceil(p / 100 * len(sorted_values))  # nearest rank
    return sorted_values[min(len(sorted_values), max(1, rank)) - 1]


def cmd_history(port, room, n, count, deadline_s):
    conn = Conn(int(port), timeout=10.0)
    conn.leave_general()
    deadline = time.time() + float(deadline_s)
    times, lines_seen, errors = [], 0, []
    for _ in range(int(count)):
        if time.time() > deadline:
            break
        t0 = time.perf_counter()
        lines, final = conn.command(f"history #{room} {n}")
        times.append((time.perf_counter() - t0) * 1000)
        lines_seen += len(lines)
        if not final.startswith("end"):
            errors.append(final)
    conn.close()
    times.sort()
    mean_lines = lines_seen / len(times) if times else 0
    print(
        f"requests {len(times)} lines_per_answer {mean_lines:.1f} errors {len(errors)} "
        f"p50_ms {percentile(times, 50):.2f} p99_ms {percentile(times, 99):.2f} "
        f"max_ms {times[-1] if times else float('nan'):.2f} "
        f"mean_ms {sum(times) / max(1, len(times)):.2f}"
    )
    if errors:
        print("first error:", errors[0])
    if len(times) < int(count) or errors:
        sys.exit(1)


def cmd_chatlog(port, deadline_s):
    sock = socket.create_connection(("127.0.0.1", int(port)), timeout=10.0)
    conn = Conn.__new__(Conn)
    conn.sock, conn.file = sock, sock.makefile("rb", buffering=1 << 16)
    conn.leave_general()
    # The makefile buffer is empty after the final line of `leave`: read the socket directly.
    sock.sendall(b"get chatLog\n")
    buf = bytearray(4 << 20)
    view = memoryview(buf)
    total, newlines, live, tail = 0, 0, 0, b"\n"
    started = time.perf_counter()
    deadline = started + float(deadline_s)
    end_count = None
    sock.settimeout(1.0)
    while time.perf_counter() < deadline:
        try:
            got = sock.recv_into(buf)
        except socket.timeout:
            continue
        if got == 0:
            break
        total += got
        newlines += buf.count(b"\n", 0, got)
        live += buf.count(b"\nmsg ", 0, got)
        # The final line ends the answer: only the chunk's end needs looking at.
        window = tail + bytes(view[max(0, got - 64) : got])
        at = window.rfind(b"\nend ")
        if at >= 0 and window.endswith(b"\n"):
            end_count = int(window[at + 5 :].split()[0])
            break
        if window.find(b"\nerr ") >= 0 and window.endswith(b"\n"):
            print("answer:", window[window.find(b"\nerr ") + 1 :].decode(errors="replace").strip())
            break
        tail = window[-64:]
    seconds = time.perf_counter() - started
    sock.close()
    mb_s = total / 1e6 / seconds if seconds > 0 else 0.0
    state = "complete" if end_count is not None else "TIMEOUT (partial)"
    messages = end_count if end_count is not None else newlines - live
    print(
        f"{state} bytes {total} messages {messages} seconds {seconds:.2f} "
        f"mb_per_s {mb_s:.1f} msgs_per_s {messages / seconds if seconds else 0:.0f}"
    )
    if end_count is None:
        sys.exit(1)


def cmd_probe(port, deadline_s):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    deadline = time.time() + float(deadline_s)
    times, failures = [], 0
    conn = None
    while not stop and time.time() < deadline:
        t0 = time.perf_counter()
        try:
            if conn is None:
                conn = Conn(int(port), timeout=30.0)
            conn.command("status")
            times.append((time.perf_counter() - t0) * 1000)
        except (OSError, ConnectionError):
            failures += 1
            conn = None
        time.sleep(max(0.0, 0.1 - (time.perf_counter() - t0)))
    times.sort()
    print(
        f"status round trips {len(times)} failed {failures} p50_ms {percentile(times, 50):.1f} "
        f"p99_ms {percentile(times, 99):.1f} max_ms {times[-1] if times else float('nan'):.1f}"
    )


def drop_caches():
    """Empties the kernel's page cache (root only), so the next reads go to the disk."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def cmd_cold(port, room, n, rounds):
    """Per round: drop the page cache, send `history #room n` on one connection and, right
    behind it, `status` on another; time both answers. With reads of old history on the event
    loop, `status` waits for the disk; with them off the loop, it does not."""
    reader, prober = Conn(int(port), timeout=30.0), Conn(int(port), timeout=30.0)
    reader.leave_general()
    prober.leave_general()
    history_ms, status_ms, errors = [], [], []
    for _ in range(int(rounds)):
        drop_caches()
        t0 = time.perf_counter()
        reader.sock.sendall(f"history #{room} {n}\n".encode())
        _, final = prober.command("status")
        status_ms.append((time.perf_counter() - t0) * 1000)
        while True:
            got = reader.file.readline()
            if not got:
                raise ConnectionError("connection closed during history")
            if got.split(b" ", 1)[0] in FINAL:
                break
        history_ms.append((time.perf_counter() - t0) * 1000)
        if not got.startswith(b"end"):
            errors.append(got.decode(errors="replace").strip())
    for name, times in (("history", history_ms), ("status behind it", status_ms)):
        times.sort()
        print(
            f"{name}: rounds {len(times)} p50_ms {percentile(times, 50):.2f} "
            f"max_ms {times[-1] if times else float('nan'):.2f}"
        )
    if errors:
        print("first error:", errors[0])
        sys.exit(1)


SNAP_RE = re.compile(
    r"^(?:\[n\d+\] )?(\S+) .*node (\d+): snapshot at index (\d+) "
    r"(?:captured in|durable \((\d+) bytes\))"
)


def log_time(stamp):
    try:
        return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
    except ValueError:
        return None


def cmd_snapshots(bytes_per_entry, *logs):
    per_entry = {}
    for item in filter(None, bytes_per_entry.split(",")):
        node, _, value = item.partition("=")
        per_entry[int(node)] = float(value)
    captured, durable = {}, {}
    for path in logs:
        with open(path, errors="replace") as f:
            for line in f:
                m = SNAP_RE.match(line)
                if not m:
                    continue
                stamp, node, index, size = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
                if size is None:
                    captured[(node, index)] = log_time(stamp)
                else:
                    durable.setdefault(node, []).append((index, int(size), log_time(stamp)))
    if not durable:
        print("snapshots: none in the logs")
    for node in sorted(durable):
        snaps = sorted(set(durable[node]))
        print(f"snapshots node {node}: {len(snaps)} taken")
        previous = 0
        for index, size, at in snaps:
            began = captured.get((node, index))
            secs = f"{at - began:.2f}" if at is not None and began is not None else "?"
            bpe = per_entry.get(node)
            if bpe:
                wal = (index - previous) * bpe
                ratio = f"{size / wal:.2f}" if wal > 0 else "?"
                wal_text = f"wal_bytes_since_previous~{wal:.0f} snapshot/wal {ratio}"
            else:
                wal_text = "wal_bytes_since_previous ?"
            print(
                f"  node {node} snapshot index {index} bytes {size} "
                f"capture_to_durable_s {secs} entries_since_previous {index - previous} {wal_text}"
            )
            previous = index


def main():
    commands = {
        "status": cmd_status,
        "seed": cmd_seed,
        "wait": cmd_wait,
        "history": cmd_history,
        "chatlog": cmd_chatlog,
        "snapshots": cmd_snapshots,
        "probe": cmd_probe,
        "cold": cmd_cold,
        "drop_caches": drop_caches,
    }
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    command = commands[sys.argv[1]]
    params = inspect.signature(command).parameters.values()
    variadic = any(p.kind == p.VAR_POSITIONAL for p in params)
    fixed = sum(p.kind != p.VAR_POSITIONAL for p in params)
    if len(sys.argv) - 2 < fixed or (not variadic and len(sys.argv) - 2 != fixed):
        sys.exit(__doc__)
    command(*sys.argv[2:])


if __name__ == "__main__":
    main()
