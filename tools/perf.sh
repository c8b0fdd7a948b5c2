#!/usr/bin/env bash
# The README's performance table: starts a fresh local 3-node cluster (--fsync always), runs
# loadgen's three standard workloads RUNS times each (default 3), and prints the medians.
#
#   bash tools/perf.sh            # RUNS=5 DURATION=20 bash tools/perf.sh for a longer run
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
FSYNC=${FSYNC:-always}        # FSYNC=never: the same without fdatasync (unsafe; shows the disk's share)
# SERVER_ARGS="--snapshot-entries 0": extra options for every node (here: no snapshots).
TARGET=${TARGET:-leader}      # TARGET=any: spread connections over all nodes (followers forward)
source tools/local_cluster.sh
start_local_cluster "${BASE_PORT:-24000}" --fsync "$FSYNC"
cat >"$data/median.py" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in sys.stdin if line.strip()]
def med(path):
    values = []
    for row in rows:
        for key in path:
            row = row[key]
        values.append(row)
    return statistics.median(values)
print("| %s | %s | %.1f | %.2f | %.2f | %.1f | %d |" % (
    sys.argv[1], format(round(med(["msgs_per_s"])), ","), med(["mb_per_s"]),
    med(["latency_ms", "p50"]), med(["latency_ms", "p99"]), med(["latency_ms", "max"]), len(rows)))
PY

run() { # name, loadgen args...
  local name=$1; shift
  local results=()
  for i in $(seq 1 "$RUNS"); do
    results+=("$(target/release/loadgen --nodes "$nodes" --duration "$DURATION" --warmup 1 --target "$TARGET" --json "$@" 2>/dev/null | tail -1)")
  done
  printf '%s\n' "${results[@]}" | python3 "$data/median.py" "$name"
}

echo "| workload (100-byte messages, 3 nodes, --fsync $FSYNC, --target $TARGET) | msgs/s | MB/s | p50 ms | p99 ms | max ms | runs |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
run "closed loop, 1 connection, pipeline 1" --connections 1 --pipeline 1
run "closed loop, 64 connections, pipeline 1" --connections 64 --pipeline 1
run "pipelined, 64 connections x depth 64" --connections 64 --pipeline 64
run "key-value set, 64 connections x depth 64" --connections 64 --pipeline 64 --op set
run "linearizable get, 64 connections x depth 64" --connections 64 --pipeline 64 --op get
