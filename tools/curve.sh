#!/usr/bin/env bash
# The closed-loop curve: starts a fresh local 3-node cluster (--fsync always) like perf.sh,
# runs `loadgen --pipeline 1` RUNS times (default 3) at each connection count, prints the
# markdown table of medians (msgs/s, p50, p99, leader entries/sync, node CPU µs/msg) and
# writes target/curve/closed_loop.svg (and the raw runs in target/curve/closed_loop.jsonl).
#
#   bash tools/curve.sh                          # DURATION=5 RUNS=3 over C = 1 2 4 ... 256
#   DURATION=1 RUNS=1 CONNS="1 16" bash tools/curve.sh    # a smoke run
#   PIPELINE=64 CONNS=64 bash tools/curve.sh                # pipelined 64 x 64 (own files)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-1 2 4 8 16 32 64 256 1024}
FSYNC=${FSYNC:-always}
PIPELINE=${PIPELINE:-1}
name=closed_loop
if [ "$PIPELINE" != 1 ]; then name="pipelined_$PIPELINE"; fi
out=target/curve
mkdir -p "$out"
source tools/local_cluster.sh
start_local_cluster "${BASE_PORT:-24100}" --fsync "$FSYNC"
runs="$out/$name.jsonl"
: >"$runs"
for c in $CONNS; do
  for _ in $(seq 1 "$RUNS"); do
    target/release/loadgen --nodes "$nodes" --connections "$c" --pipeline "$PIPELINE" \
      --duration "$DURATION" --warmup 1 --json 2>>"$data/loadgen.log" | tail -1 >>"$runs" || true
  done
done
echo "$name, 100-byte messages, 3 nodes, --fsync $FSYNC, medians of $RUNS runs of ${DURATION} s"
echo
python3 tools/curve.py --table "$runs:raftchat"
python3 tools/curve.py --out "$out/$name.svg" "$runs:raftchat"
echo
echo "wrote $out/$name.svg"
