#!/usr/bin/env bash
# A/B of two builds on the same machine, alternating, three pairs: closed loop at 1, 16 and 64
# connections and pipelined 64 x 64, 4 s each after 1 s of warm-up, a fresh 3-node cluster
# (--fsync always) per run. Prints one line per run: label, workload, msgs/s, p50 ms, p99 ms.
#
#   git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release --bins)
#   cargo build --release --bins && bash tools/ab.sh /tmp/old/target/release target/release
set -u
old=${1:?old build dir}; new=${2:?new build dir}
run_one() { # label bindir port
  local label=$1 bin=$2 base=$3 d; d=$(mktemp -d)
  "$bin/cluster" --base-port "$base" --data-dir "$d" --fsync always --log-level warn >"$d/log" 2>&1 &
  local c=$!
  sleep 3
  local nodes="127.0.0.1:$base,127.0.0.1:$((base+1)),127.0.0.1:$((base+2))"
  for w in "1 1" "16 1" "64 1" "64 64"; do
    set -- $w
    local out
    out=$("$bin/loadgen" --nodes "$nodes" --connections "$1" --pipeline "$2" --duration 4 --warmup 1 --json 2>/dev/null | tail -1)
    echo "$label C=$1 P=$2 $(echo "$out" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(round(r["msgs_per_s"]), r["latency_ms"]["p50"], r["latency_ms"]["p99"])')"
  done
  kill -INT $c; wait $c 2>/dev/null; rm -rf "$d"
}
for pair in 1 2 3; do
  run_one old "$old" $((26000 + pair * 10))
  run_one new "$new" $((26500 + pair * 10))
done
