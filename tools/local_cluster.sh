# Sourced by the measuring scripts (perf.sh, curve.sh, open_loop.sh, memory.sh): builds the
# binaries, starts a fresh local 3-node cluster in a temporary data dir and stops it (and
# removes the dir) when the script exits. Sets `data` (the temp dir, also for logs) and `nodes`
# (the loadgen --nodes list). Arguments: the base port, then options for `cluster`.
# CLUSTER_LOG_LEVEL (default warn) is the nodes' --log-level; SERVER_ARGS go to every node.
#
#   source tools/local_cluster.sh
#   start_local_cluster 24100 --fsync always
start_local_cluster() {
  local base=$1
  shift
  cargo build --release --quiet --bin cluster --bin loadgen
  data=$(mktemp -d)
  target/release/cluster --base-port "$base" --data-dir "$data" --log-level "${CLUSTER_LOG_LEVEL:-warn}" "$@" \
    -- ${SERVER_ARGS:-} >"$data/cluster.log" 2>&1 &
  cluster_pid=$!
  trap 'kill -INT $cluster_pid 2>/dev/null; wait $cluster_pid 2>/dev/null; rm -rf "$data"' EXIT
  nodes="127.0.0.1:$base,127.0.0.1:$((base+1)),127.0.0.1:$((base+2))"
  # Wait (up to 30 s) until a node answers `status` with a leader.
  local i
  for i in $(seq 1 300); do
    if python3 - "$base" 2>/dev/null <<'PY'; then
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"status\n")
f = s.makefile("rb")
for line in f:
    if line.startswith(b"leader ") and line.split()[1].isdigit():
        sys.exit(0)
    if line.startswith((b"end", b"ack", b"err")):
        sys.exit(1)
sys.exit(1)
PY
      return 0
    fi
    sleep 0.1
  done
  echo "the local cluster on port $base elected no leader in 30 s; its log:" >&2
  tail -20 "$data/cluster.log" >&2
  return 1
}
