#!/usr/bin/env bash
# Measures issue 20's targets (history larger than memory) on a fresh local 3-node cluster with
# default flags (plus SERVER_ARGS), in phases; every figure is one labelled line on stdout, and
# the commands and parameters are printed first. The telnet side is tools/history_bench.py.
#
#   1 fill       post `#early` EARLY messages (a room whose whole history is old), then MESSAGES
#                messages of SIZE bytes with loadgen (CONNECTIONS x PIPELINE, to the leader);
#                every node's RSS each SAMPLE_S s and at the end, with the chat length (`status`),
#                loadgen's throughput and latency, and each node's data dir by part (wal,
#                snapshots, history) and its newest snapshot file.
#   2 restart    kill -9 one follower, start it again with the same command line, and time
#                until it answers `status` and until it has applied the leader's commit index
#                (ms); its log's lines on loading the snapshot, the store and the log.
#   3 history    while loadgen writes LOAD_RATE msgs/s (open loop, 4 connections), HISTORY_REQUESTS
#                requests `history #general 50` (the room loadgen writes) and as many
#                `history #early 50` one at a time on one telnet connection to READ_NODE;
#                p50/p99/max ms.
#   4 chatlog    under the same write load, one `get chatLog` on READ_NODE read as fast as
#                possible: bytes, messages, seconds, MB/s (bounded by CHATLOG_TIMEOUT_S); and the
#                peak RSS of every node during phases 3-4 (sampled every second).
#   cold         (only when named in PHASES; root) COLD_ROUNDS times: drop the page cache, send
#                `history #early 50` and right behind it `status` on a second connection; both
#                answers' ms. Then drop it again and read `get chatLog` as in phase 4, with
#                `status` timed meanwhile: what a cold disk costs the other clients.
#   5 snapshots  from the node logs: every snapshot taken (index, bytes, seconds from capture
#                to durable) and the WAL bytes logged since the previous one (the entries between
#                them times the node's mean WAL bytes per entry at the end of the fill).
#
#   bash tools/history_bench.sh                                  # 1,000,000 x 100 B, ~3 min
#   MESSAGES=1000000 SIZE=1000 bash tools/history_bench.sh       # the issue's sizes
#   MESSAGES=20000000 SIZE=100 bash tools/history_bench.sh
#   PHASES="fill restart" SERVER_ARGS="--memory-budget-mib 128" bash tools/history_bench.sh
#   PHASES="fill cold" bash tools/history_bench.sh                # reads from a cold disk
#
# Every phase is bounded in time (FILL_TIMEOUT_S, RESTART_TIMEOUT_S, HISTORY_TIMEOUT_S,
# CHATLOG_TIMEOUT_S), and the fill stops early when the machine runs short of memory or disk
# (MIN_MEM_MIB, MIN_DISK_GIB). The cluster's data dir is a temporary dir, removed at exit; with
# OUT=<dir> the node logs and loadgen outputs are copied there first. The data dirs need about
# 3 x (2 x WAL + snapshot + store) of disk: check `df -h /tmp` before a large run.
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${MESSAGES:-1000000}
SIZE=${SIZE:-100}
CONNECTIONS=${CONNECTIONS:-64}
PIPELINE=${PIPELINE:-64}
EARLY=${EARLY:-50}
SAMPLE_S=${SAMPLE_S:-5}
LOAD_RATE=${LOAD_RATE:-10000}
HISTORY_REQUESTS=${HISTORY_REQUESTS:-2000}
COLD_ROUNDS=${COLD_ROUNDS:-20}
READ_NODE=${READ_NODE:-leader}   # leader, follower or a node id
FILL_TIMEOUT_S=${FILL_TIMEOUT_S:-3600}
RESTART_TIMEOUT_S=${RESTART_TIMEOUT_S:-300}
HISTORY_TIMEOUT_S=${HISTORY_TIMEOUT_S:-300}
CHATLOG_TIMEOUT_S=${CHATLOG_TIMEOUT_S:-300}
PHASES=${PHASES:-fill restart history chatlog snapshots}
OUT=${OUT:-}
MIN_MEM_MIB=${MIN_MEM_MIB:-2048}  # the fill stops early below this MemAvailable ...
MIN_DISK_GIB=${MIN_DISK_GIB:-5}   # ... or this much free disk, rather than starve the machine
base=${BASE_PORT:-26500}
py="python3 tools/history_bench.py"

has_phase() { [[ " $PHASES " == *" $1 "* ]]; }
stamp() { date -u +%H:%M:%S; }

echo "# tools/history_bench.sh on commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src tools || echo '+dirty'), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores"
echo "# MESSAGES=$MESSAGES SIZE=$SIZE CONNECTIONS=$CONNECTIONS PIPELINE=$PIPELINE EARLY=$EARLY LOAD_RATE=$LOAD_RATE HISTORY_REQUESTS=$HISTORY_REQUESTS READ_NODE=$READ_NODE SERVER_ARGS='${SERVER_ARGS:-}' PHASES='$PHASES'"

CLUSTER_LOG_LEVEL=info
source tools/local_cluster.sh
start_local_cluster "$base"

declare -A node_pid
for pid in $(pgrep -P "$cluster_pid"); do
  mapfile -d '' -t argv <"/proc/$pid/cmdline"
  [[ ${argv[1]:-} == --run-node ]] && node_pid[${argv[2]}]=$pid
done
restarted_id="" restarted_pid="" load_pid="" sampler_pid=""

cleanup() {
  set +e # a failed kill or wait (the cluster exits 1 after a kill -9) must not skip the rest
  local p
  for p in "$load_pid" "$sampler_pid"; do
    [[ -n $p ]] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
  done
  if [[ -n $restarted_pid ]]; then
    kill -TERM "$restarted_pid" 2>/dev/null && wait "$restarted_pid" 2>/dev/null
  fi
  kill -INT "$cluster_pid" 2>/dev/null
  wait "$cluster_pid" 2>/dev/null
  if [[ -n $OUT ]]; then
    mkdir -p "$OUT" && cp "$data"/*.log "$data"/*.txt "$OUT"/ 2>/dev/null
  fi
  rm -rf "$data"
}
trap cleanup EXIT

port_of() { echo $((base + $1)); }
field() { # port key: one field of the node's `status` (0 if the node does not answer)
  local v
  v=$($py status "$1" 2>/dev/null | awk -v k="$2" '$1 == k {print $2}')
  echo "${v:-0}"
}
rss_mib() { # node id
  local kib
  kib=$(awk '/^VmRSS/ {print $2}' "/proc/${node_pid[$1]}/status" 2>/dev/null || echo 0)
  echo $((kib / 1024))
}
rss_line() { echo "rss_mib n0=$(rss_mib 0) n1=$(rss_mib 1) n2=$(rss_mib 2)"; }
hwm_line() { # the peak RSS of each node process so far (VmHWM)
  local id kib out=""
  for id in 0 1 2; do
    kib=$(awk '/^VmHWM/ {print $2}' "/proc/${node_pid[$id]}/status" 2>/dev/null || echo 0)
    out="$out n$id=$((kib / 1024))"
  done
  echo "peak_rss_mib$out"
}
leader_id() {
  local id l
  for id in 0 1 2; do
    l=$($py status "$(port_of "$id")" 2>/dev/null | awk '$1 == "leader" {print $2}')
    [[ $l =~ ^[0-9]+$ ]] && { echo "$l"; return; }
  done
  return 1
}
bytes_of() { # files...: their total apparent size
  local total=0 f
  for f in "$@"; do [[ -f $f ]] && total=$((total + $(stat -c %s "$f"))); done
  echo "$total"
}
disk_line() { # node id
  local dir="$data/node-$1" newest
  newest=$(ls -1 "$dir/snapshots" 2>/dev/null | grep '\.snap$' | sort | tail -1 || true)
  echo "disk node $1: wal_bytes $(bytes_of "$dir"/wal-*.log) ($(ls "$dir" | grep -c '^wal-') segments)" \
    "snapshots_bytes $(bytes_of "$dir"/snapshots/*) history_bytes $(bytes_of "$dir"/history/*)" \
    "($(ls "$dir/history" 2>/dev/null | grep -c '\.seg$') segments)" \
    "newest_snapshot ${newest:-none} $( [[ -n $newest ]] && bytes_of "$dir/snapshots/$newest")"
}
wait_applied() { # deadline_s: until every node applied the leader's commit index
  local target deadline=$((SECONDS + $1)) id
  target=$(field "$(port_of "$(leader_id)")" commit)
  for id in 0 1 2; do
    while (($(field "$(port_of "$id")" applied) < target)); do
      ((SECONDS < deadline)) || { echo "wait: node $id did not apply $target in $1 s"; return 1; }
      sleep 0.2
    done
  done
}
lead=$(leader_id)
echo "cluster: ports $base-$((base + 2)), leader node $lead, nodes' pids ${node_pid[0]} ${node_pid[1]} ${node_pid[2]}, data $data"

declare -A wal_per_entry
if has_phase fill; then
  echo "== fill ($(stamp))"
  $py seed "$(port_of "$lead")" early "$EARLY"
  cmd=(target/release/loadgen --nodes "$nodes" --size "$SIZE" --connections "$CONNECTIONS"
    --pipeline "$PIPELINE" --count "$MESSAGES")
  echo "fill command: ${cmd[*]}"
  "${cmd[@]}" >"$data/fill-loadgen.txt" 2>&1 &
  load_pid=$!
  started=$SECONDS
  while kill -0 "$load_pid" 2>/dev/null; do
    sleep 1
    elapsed=$((SECONDS - started))
    if ((elapsed % SAMPLE_S == 0)); then
      echo "fill t=${elapsed}s $(rss_line) messages $(field "$base" messages)"
    fi
    if ((elapsed >= FILL_TIMEOUT_S)); then
      echo "fill: TIMEOUT after $FILL_TIMEOUT_S s, loadgen stopped"
      kill "$load_pid"
      break
    fi
    mem=$(awk '/^MemAvailable/ {print int($2 / 1024)}' /proc/meminfo)
    disk=$(df -Pk "$data" | awk 'NR == 2 {print int($4 / 1024 / 1024)}')
    if ((mem < MIN_MEM_MIB || disk < MIN_DISK_GIB)); then
      echo "fill: STOPPED at ${elapsed}s: MemAvailable $mem MiB (MIN_MEM_MIB=$MIN_MEM_MIB), free disk $disk GiB (MIN_DISK_GIB=$MIN_DISK_GIB)"
      kill "$load_pid"
      break
    fi
  done
  wait "$load_pid" || echo "fill: loadgen exited with status $?"
  load_pid=""
  grep -E "^(committed|throughput|latency|errors) " "$data/fill-loadgen.txt" | sed 's/^/fill loadgen: /'
  wait_applied 600 || true
  echo "fill end ($((SECONDS - started)) s): $(rss_line) $(hwm_line) messages $(field "$base" messages)"
  for id in 0 1 2; do
    disk_line "$id"
    written=$(field "$(port_of "$id")" wal_bytes_written)
    last=$(field "$(port_of "$id")" last)
    wal_per_entry[$id]=$(awk -v w="$written" -v l="$last" 'BEGIN {printf "%.1f", l ? w / l : 0}')
    echo "wal node $id: wal_bytes_written $written over $last entries (${wal_per_entry[$id]} bytes per entry)"
  done
fi

if has_phase restart; then
  echo "== restart ($(stamp))"
  lead=$(leader_id)
  victim=$(((lead + 1) % 3))
  target=$(field "$(port_of "$lead")" commit)
  mapfile -d '' -t argv <"/proc/${node_pid[$victim]}/cmdline"
  echo "restart: kill -9 node $victim (follower; the leader's commit index is $target), then: ${argv[*]}"
  kill -9 "${node_pid[$victim]}"
  while kill -0 "${node_pid[$victim]}" 2>/dev/null; do sleep 0.01; done
  start_ns=$(date +%s%N)
  echo "restart: node $victim started again at $(date -u -d "@${start_ns:0:10}.${start_ns:10:3}" +%H:%M:%S.%3N) UTC"
  "${argv[@]}" >"$data/restarted-node-$victim.log" 2>&1 &
  restarted_pid=$! restarted_id=$victim
  node_pid[$victim]=$restarted_pid
  $py wait "$(port_of "$victim")" "$target" "$start_ns" "$RESTART_TIMEOUT_S" | sed "s/^/restart node $victim: /" || true
  grep -E "loaded snapshot|message store holds|recovered term|torn" "$data/restarted-node-$victim.log" |
    sed "s/^/restart node $victim log: /" || echo "restart node $victim log: no snapshot loaded"
  echo "restart: $(rss_line)"
fi

if has_phase history || has_phase chatlog || has_phase cold; then
  lead=$(leader_id)
  case $READ_NODE in
    leader) read_id=$lead ;;
    follower) read_id=$(((lead + 1) % 3)) ;;
    *) read_id=$READ_NODE ;;
  esac
  read_port=$(port_of "$read_id")
  cmd=(target/release/loadgen --nodes "$nodes" --size "$SIZE" --connections 4 --rate "$LOAD_RATE"
    --duration $((HISTORY_TIMEOUT_S * 2 + CHATLOG_TIMEOUT_S + 60)))
  echo "== write load for phases 3-4 ($(stamp)): ${cmd[*]}"
  "${cmd[@]}" >"$data/load-loadgen.txt" 2>&1 &
  load_pid=$!
  (
    declare -A peak=([0]=0 [1]=0 [2]=0)
    while true; do
      for id in 0 1 2; do
        r=$(rss_mib "$id")
        ((r > peak[$id])) && peak[$id]=$r
      done
      echo "${peak[0]} ${peak[1]} ${peak[2]}" >"$data/peak.txt"
      sleep 1
    done
  ) &
  sampler_pid=$!
  # Let the load start (the leader's commit index moves) before measuring.
  c0=$(field "$(port_of "$lead")" commit)
  for _ in $(seq 1 100); do
    (($(field "$(port_of "$lead")" commit) > c0 + LOAD_RATE / 10)) && break
    sleep 0.1
  done
fi
max_field() { # key: the largest value of a `status` field over the nodes that answer
  local id v max=0
  for id in 0 1 2; do
    v=$(field "$(port_of "$id")" "$1")
    ((v > max)) && max=$v
  done
  echo "$max"
}
under_load() { # label, command...: runs the command while `status` on the read node is timed
  # every 100 ms; then prints the write rate meanwhile, the status round trips and any election
  local label=$1 c0 c1 t0 t1 term0 term1 probe
  shift
  c0=$(max_field commit) term0=$(max_field term) t0=$(date +%s.%N)
  $py probe "$read_port" $((HISTORY_TIMEOUT_S + CHATLOG_TIMEOUT_S)) >"$data/probe.txt" 2>&1 &
  probe=$!
  "$@" | sed "s/^/$label: /" || true
  kill -TERM "$probe" 2>/dev/null
  wait "$probe" 2>/dev/null || true
  c1=$(max_field commit) term1=$(max_field term) t1=$(date +%s.%N)
  echo "$label: write load meanwhile $(awk -v a="$c0" -v b="$c1" -v s="$t0" -v e="$t1" 'BEGIN {printf "%.0f", (b - a) / (e - s)}') entries/s committed"
  sed "s/^/$label: node $read_id loop responsiveness, /" "$data/probe.txt"
  ((term1 == term0)) || echo "$label: ELECTION meanwhile: term $term0 -> $term1, leader now node $(leader_id || echo '?')"
}

if has_phase history; then
  echo "== history ($(stamp)) on node $read_id (READ_NODE=$READ_NODE)"
  for room in general early; do
    under_load "history #$room 50 x $HISTORY_REQUESTS on node $read_id" \
      $py history "$read_port" "$room" 50 "$HISTORY_REQUESTS" "$HISTORY_TIMEOUT_S"
  done
fi

if has_phase chatlog; then
  echo "== chatlog ($(stamp)) on node $read_id"
  under_load "get chatLog on node $read_id" $py chatlog "$read_port" "$CHATLOG_TIMEOUT_S"
fi

if has_phase cold; then
  echo "== cold ($(stamp)) on node $read_id: the page cache dropped before each read (root)"
  $py cold "$read_port" early 50 "$COLD_ROUNDS" | sed "s/^/cold history #early 50 on node $read_id: /" || true
  $py drop_caches
  under_load "cold get chatLog on node $read_id" $py chatlog "$read_port" "$CHATLOG_TIMEOUT_S"
fi

if [[ -n $sampler_pid ]]; then
  kill "$load_pid" "$sampler_pid" 2>/dev/null || true
  wait "$load_pid" "$sampler_pid" 2>/dev/null || true
  load_pid="" sampler_pid=""
  read -r p0 p1 p2 <"$data/peak.txt"
  echo "peak rss_mib during phases 3-4: n0=$p0 n1=$p1 n2=$p2; now $(rss_line) messages $(field "$base" messages)"
fi

if has_phase snapshots; then
  echo "== snapshots ($(stamp))"
  per_entry=""
  for id in 0 1 2; do
    [[ -n ${wal_per_entry[$id]:-} ]] && per_entry="$per_entry$id=${wal_per_entry[$id]},"
  done
  $py snapshots "$per_entry" "$data"/*.log
  for id in 0 1 2; do disk_line "$id"; done
fi
echo "# done ($(stamp))"
