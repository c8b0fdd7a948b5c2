#!/usr/bin/env bash
# Screen test: what a person sees. Starts a local 3-node cluster with the launcher, opens two
# real telnet sessions to two different nodes inside tmux, chats, and checks both screens.
#
#   bash tools/screen_test.sh          (installs telnet with apt-get if it is missing)
#
# Exits 0 when both screens show what they should; prints the screens either way.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v telnet >/dev/null || { apt-get update -qq && apt-get install -y -qq telnet >/dev/null; }
command -v tmux >/dev/null || { apt-get update -qq && apt-get install -y -qq tmux >/dev/null; }
cargo build --release --quiet --bin cluster

base=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
base=$(( (base % 20000) + 30000 ))
data=$(mktemp -d)
session="raftchat-screen-$$"
cleanup() {
  tmux kill-session -t "$session" 2>/dev/null || true
  [ -n "${cluster_pid:-}" ] && kill -INT "$cluster_pid" 2>/dev/null && wait "$cluster_pid" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

target/release/cluster --base-port "$base" --data-dir "$data" >"$data/cluster.log" 2>&1 &
cluster_pid=$!

screen() { tmux capture-pane -p -t "$session:$1"; }
wait_screen() { # window, text, seconds
  for _ in $(seq 1 $(( $3 * 10 ))); do screen "$1" | grep -qF -- "$2" && return 0; sleep 0.1; done
  echo "screen $1 never showed: $2"; return 1
}

tmux new-session -d -s "$session" -x 160 -y 40 -n alice "telnet 127.0.0.1 $base"
tmux new-window -t "$session" -n bob "telnet 127.0.0.1 $((base + 1))"
wait_screen alice "hello raftchat node 0" 20
wait_screen bob "hello raftchat node 1" 20

tmux send-keys -t "$session:alice" "nick alice" Enter
wait_screen alice "ack nick alice" 10
# The first message may meet an election in progress: retry until acknowledged.
for _ in $(seq 1 30); do
  tmux send-keys -t "$session:alice" "msg Hello, Raft!" Enter
  sleep 0.5
  screen alice | grep -qE "^ack [0-9]+" && break
done
wait_screen bob "msg 1 " 10 || { echo "==== alice ===="; screen alice; echo "==== bob ===="; screen bob; exit 1; }
wait_screen bob "#general <alice> Hello, Raft!" 10
tmux send-keys -t "$session:bob" "get chatLog" Enter
wait_screen bob "end 1" 10

echo "==== alice (node 0) ===="; screen alice | sed '/^$/d'
echo "==== bob (node 1) ===="; screen bob | sed '/^$/d'
echo "screen test: passed"
