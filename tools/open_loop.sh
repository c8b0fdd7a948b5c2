#!/usr/bin/env bash
# The open-loop table, as a room fills: a fresh local 3-node cluster (--fsync always), then
# `loadgen --rate R` spread over CONNECTIONS connections (default 2,000; each connection sends
# on its own schedule, latency counted from the scheduled send, so a slow node cannot hide
# its backlog), R stepped up until the cluster no longer keeps up. Prints the markdown table
# of medians (msgs/s, p50, p99, p99.9, leader entries/sync, node CPU µs/msg) and writes
# target/curve/open_loop.svg (raw runs in target/curve/open_loop.jsonl).
#
#   bash tools/open_loop.sh                                  # RUNS=3 DURATION=5
#   RATES="1000 5000" RUNS=1 DURATION=2 bash tools/open_loop.sh   # a smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-2000}
RATES=${RATES:-1000 2000 5000 10000 20000 30000 40000 50000 60000}
FSYNC=${FSYNC:-always}
out=target/curve
mkdir -p "$out"
source tools/local_cluster.sh
start_local_cluster "${BASE_PORT:-24200}" --fsync "$FSYNC"
runs="$out/open_loop.jsonl"
: >"$runs"
for r in $RATES; do
  for _ in $(seq 1 "$RUNS"); do
    target/release/loadgen --nodes "$nodes" --connections "$CONNECTIONS" --rate "$r" \
      --duration "$DURATION" --warmup 1 --json 2>>"$data/loadgen.log" | tail -1 >>"$runs" || true
  done
done
echo "open loop, $CONNECTIONS connections, 100-byte messages, 3 nodes, --fsync $FSYNC, medians of $RUNS runs of ${DURATION} s"
echo
python3 tools/curve.py --x rate --table "$runs:raftchat"
python3 tools/curve.py --x rate --out "$out/open_loop.svg" "$runs:raftchat"
echo
echo "wrote $out/open_loop.svg"
