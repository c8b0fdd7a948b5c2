#!/usr/bin/env bash
# The same closed-loop curve as tools/curve.sh, for etcd: starts a 3-member etcd cluster on
# loopback ports in a temp dir (removed on exit), puts 100-byte values with one request in
# flight per connection at each C, RUNS times (default 3), and prints the same markdown table
# (median msgs/s, p50, p99, the members' CPU µs per put with etcd_load.py; entries/sync is
# raftchat's own counter: n/a here) and
# writes target/curve/etcd_closed_loop.svg. The load is etcd's own `benchmark put` tool when it
# is on PATH (TOTAL puts per run), else tools/etcd_load.py over the v3 HTTP gateway (a Python
# client: above a few thousand puts/s it measures itself as much as etcd; the table says which).
#
#   bash tools/etcd_curve.sh                        # DURATION=5 RUNS=3, C = 1 2 4 ... 256
#   DURATION=1 RUNS=1 CONNS="1 16" bash tools/etcd_curve.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-1 2 4 8 16 32 64 256 1024}
TOTAL=${TOTAL:-20000}
if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
  echo "etcd_curve.sh: etcd and etcdctl are not installed. On Debian/Ubuntu:" >&2
  echo "  sudo apt-get install -y etcd-server etcd-client" >&2
  echo "(optional, a faster load: go install go.etcd.io/etcd/v3/tools/benchmark@latest)" >&2
  exit 2
fi
out=target/curve
mkdir -p "$out"
base=${BASE_PORT:-24300}
data=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$data"' EXIT
cluster=""
for i in 0 1 2; do
  cluster+="${cluster:+,}m$i=http://127.0.0.1:$((base + 10 + i))"
done
endpoints=""
for i in 0 1 2; do
  client=$((base + i)); peer=$((base + 10 + i))
  endpoints+="${endpoints:+,}127.0.0.1:$client"
  etcd --name "m$i" --data-dir "$data/m$i" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token curve \
    --log-level warn >"$data/m$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 1 100); do
  ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done
ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >&2 || { echo "etcd did not become healthy; logs in $data" >&2; exit 3; }

# etcd's `benchmark put` summary as one loadgen-shaped JSON line.
bench_json() { # connections
  python3 -c '
import json, re, sys
text = sys.stdin.read()
rate = float(re.search(r"Requests/sec:\s*([0-9.]+)", text).group(1))
pct = {m.group(1): float(m.group(2)) * 1000 for m in re.finditer(r"([0-9.]+)% in ([0-9.]+) secs", text)}
slowest = float(re.search(r"Slowest:\s*([0-9.]+)", text).group(1)) * 1000
print(json.dumps({"connections": int(sys.argv[1]), "pipeline": 1, "client": "etcd benchmark put",
    "msgs_per_s": rate, "latency_ms": {"p50": pct["50"], "p90": pct.get("90"), "p99": pct["99"], "max": slowest}}))
' "$1"
}

runs="$out/etcd_closed_loop.jsonl"
: >"$runs"
for c in $CONNS; do
  for _ in $(seq 1 "$RUNS"); do
    if command -v benchmark >/dev/null; then
      benchmark --endpoints "$endpoints" --conns "$c" --clients "$c" put --key-size 8 \
        --val-size 100 --total "$TOTAL" --sequential-keys 2>>"$data/load.log" | bench_json "$c" >>"$runs" || true
    else
      python3 tools/etcd_load.py --endpoints "$endpoints" --connections "$c" \
        --duration "$DURATION" --warmup 1 --pids "$(IFS=,; echo "${pids[*]}")" 2>>"$data/load.log" >>"$runs" || true
    fi
  done
done
client=$(command -v benchmark >/dev/null && echo "etcd benchmark put" || echo "tools/etcd_load.py over the HTTP gateway")
echo "etcd $(etcd --version | head -1 | awk '{print $NF}'), closed loop, 100-byte puts, 3 members, load: $client, medians of $RUNS runs"
echo
python3 tools/curve.py --table "$runs:etcd"
python3 tools/curve.py --out "$out/etcd_closed_loop.svg" --title "etcd closed loop: throughput and latency against connections" "$runs:etcd"
if [ -s "$out/closed_loop.jsonl" ]; then
  python3 tools/curve.py --out "$out/closed_loop_vs_etcd.svg" --title "raftchat and etcd, closed loop" \
    "$out/closed_loop.jsonl:raftchat" "$runs:etcd"
  echo "wrote $out/etcd_closed_loop.svg and $out/closed_loop_vs_etcd.svg"
else
  echo "wrote $out/etcd_closed_loop.svg"
fi
