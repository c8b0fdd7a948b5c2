#!/usr/bin/env bash
# What TLS costs: starts two fresh local 3-node clusters (--fsync always) side by side, one
# plain and one with `cluster --tls`, each on free ports with its own temp data dir; runs
# loadgen's closed loop at C=1 and C=64 and pipelined 64 x 64 on each, interleaved A/B (plain
# and TLS alternate, the order flipping every round), RUNS rounds (default 3) of DURATION s
# (default 3) after 1 s of warm-up; then the handshake rate (`loadgen --handshakes`, new
# connections per second node 0 accepts: connect, TLS handshake, one round trip, close), plain
# and TLS alike. Prints a markdown table of medians.
#
#   bash tools/tls_perf.sh                    # RUNS=5 DURATION=10 bash tools/tls_perf.sh
#   HANDSHAKES=5000 bash tools/tls_perf.sh    # connections per handshake run (default 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-3}
HANDSHAKES=${HANDSHAKES:-2000}
cargo build --release --quiet --bin cluster --bin loadgen
work=$(mktemp -d)

# A base port with 3 consecutive free ports (the cluster binds base, base+1, base+2).
free_base() {
  python3 - "$@" <<'PY'
import socket, sys
taken = {int(p) for p in sys.argv[1:]}
for _ in range(100):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); base = s.getsockname()[1]; s.close()
    if base + 2 > 65535 or any(p in taken for p in range(base, base + 3)):
        continue
    ok = True
    for p in range(base, base + 3):
        t = socket.socket()
        try:
            t.bind(("127.0.0.1", p))
        except OSError:
            ok = False
        t.close()
    if ok:
        print(base); sys.exit(0)
sys.exit("no 3 consecutive free ports found")
PY
}
plain_base=$(free_base)
tls_base=$(free_base "$plain_base" $((plain_base + 1)) $((plain_base + 2)))
target/release/cluster --base-port "$plain_base" --data-dir "$work/plain" --fsync always --log-level warn >"$work/plain.log" 2>&1 &
plain_pid=$!
target/release/cluster --tls --base-port "$tls_base" --data-dir "$work/tls" --fsync always --log-level warn >"$work/tls.log" 2>&1 &
tls_pid=$!
trap 'kill -INT $plain_pid $tls_pid 2>/dev/null; wait $plain_pid $tls_pid 2>/dev/null; rm -rf "$work"' EXIT
nodes() { echo "127.0.0.1:$1,127.0.0.1:$(($1 + 1)),127.0.0.1:$(($1 + 2))"; }
sleep 3
ca="$work/tls/certs/ca.pem"

# mode (plain|tls), then loadgen args; appends the JSON line to $work/<mode>-<label>.jsonl
load() {
  local mode=$1 label=$2; shift 2
  local args=(--nodes "$(nodes "$plain_base")")
  if [ "$mode" = tls ]; then args=(--nodes "$(nodes "$tls_base")" --tls --ca "$ca"); fi
  target/release/loadgen "${args[@]}" --json "$@" 2>>"$work/loadgen.log" | tail -1 >>"$work/$mode-$label.jsonl" || true
}

workloads=("c1:--connections 1 --pipeline 1" "c64:--connections 64 --pipeline 1" "p64:--connections 64 --pipeline 64")
for round in $(seq 1 "$RUNS"); do
  order="plain tls"
  if [ $((round % 2)) = 0 ]; then order="tls plain"; fi
  for w in "${workloads[@]}"; do
    label=${w%%:*}
    for mode in $order; do
      # shellcheck disable=SC2086
      load "$mode" "$label" ${w#*:} --duration "$DURATION" --warmup 1
    done
  done
  for mode in $order; do
    load "$mode" hs --handshakes "$HANDSHAKES" --threads 2
  done
done

python3 - "$work" "$RUNS" "$DURATION" "$HANDSHAKES" <<'PY'
import json, statistics, sys
work, runs, duration, handshakes = sys.argv[1:]
def rows(mode, label):
    try:
        with open(f"{work}/{mode}-{label}.jsonl") as f:
            return [json.loads(l) for l in f if l.strip()]
    except (OSError, ValueError):
        return []
def med(rs, *path):
    vals = []
    for r in rs:
        for k in path:
            r = r[k]
        vals.append(r)
    return statistics.median(vals) if vals else float("nan")
def pct(a, b):
    return f"{(b - a) / a * 100:+.0f}%" if a == a and b == b and a else "?"
print(f"3 nodes, --fsync always, 100-byte messages; medians of {runs} interleaved runs of {duration} s "
      f"(plain and TLS clusters side by side, A/B alternating)")
print()
print("| workload | plain msgs/s | TLS msgs/s | TLS vs plain | plain p50 / p99 ms | TLS p50 / p99 ms | runs |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
names = {"c1": "closed loop, C=1", "c64": "closed loop, C=64", "p64": "pipelined, 64 x 64"}
for label, name in names.items():
    p, t = rows("plain", label), rows("tls", label)
    pm, tm = med(p, "msgs_per_s"), med(t, "msgs_per_s")
    print(f"| {name} | {pm:,.0f} | {tm:,.0f} | {pct(pm, tm)} | "
          f"{med(p, 'latency_ms', 'p50'):.2f} / {med(p, 'latency_ms', 'p99'):.2f} | "
          f"{med(t, 'latency_ms', 'p50'):.2f} / {med(t, 'latency_ms', 'p99'):.2f} | {min(len(p), len(t))} |")
p, t = rows("plain", "hs"), rows("tls", "hs")
pm, tm = med(p, "per_s"), med(t, "per_s")
print(f"| new connections/s to one node ({handshakes} each: connect, handshake, 1 round trip, close; 2 threads) "
      f"| {pm:,.0f} | {tm:,.0f} | {pct(pm, tm)} | "
      f"{med(p, 'latency_ms', 'p50'):.2f} / {med(p, 'latency_ms', 'p99'):.2f} | "
      f"{med(t, 'latency_ms', 'p50'):.2f} / {med(t, 'latency_ms', 'p99'):.2f} | {min(len(p), len(t))} |")
PY
