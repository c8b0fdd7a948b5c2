#!/usr/bin/env bash
# Resident memory of each node under full load: starts a fresh local 3-node cluster, runs
# loadgen (64 connections x depth 64) for DURATION seconds (default 60), and prints every node's
# RSS every 5 s next to the chat log's length, so growth can be told apart from the log itself.
#
#   bash tools/memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-60}
base=${BASE_PORT:-26000}
source tools/local_cluster.sh
start_local_cluster "$base"
target/release/loadgen --nodes "$nodes" --connections 64 --pipeline 64 --duration "$DURATION" >"$data/loadgen.txt" 2>&1 &
loadgen=$!
echo "elapsed_s  rss_mib(node0 node1 node2)  messages_in_log"
for t in $(seq 5 5 "$DURATION"); do
  sleep 5
  rss=""
  for id in 0 1 2; do
    pid=$(pgrep -f "run-node $id 3 $((base + id))" | head -1 || true)
    kib=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    rss="$rss $(( kib / 1024 ))"
  done
  messages=$(printf 'status\r\n' | timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$base; cat >&3; timeout 1 cat <&3" 2>/dev/null | awk '/^messages/ {print $2}' || true)
  printf '%9s  %-26s %s\n' "$t" "$rss" "${messages:-?}"
done
wait $loadgen || true
grep -E "^(committed|throughput|latency|errors|cluster) " "$data/loadgen.txt"
