#!/usr/bin/env bash
# Chat fan-out to IRC receivers vs to line receivers (a benchmark, not a test): one sockproto-chat
# serving both faces on CPU 0, the load on CPU 1 (shared/tools/loadgen.c, as perf-compare chat uses it).
# The sender speaks on the line face (loadgen sends plain lines); the receivers are IRC clients
# (NICK/USER/JOIN #lobby) in one run and line clients in the other, alternately.  loadgen sends
# connection i to target i mod n (16 targets at most): 15 IRC targets and 1 line target put the
# sender (connection 95) and 5 of the 95 receivers on the line face, the other 90 on IRC.
# Run from the project's root after `make install`:  bash tests/irc_chat_bench.sh [ROUNDS]
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
loadgen_src=${LOADGEN_SRC:-$here/../shared/tools/loadgen.c}
work=$(mktemp -d -t irc-chat-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
cc -O2 -o "$work/loadgen" "$loadgen_src" || { echo "cannot build $loadgen_src"; exit 2; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1" >&2; return 1; }
receivers=95; senders=1; messages=${MESSAGES:-10000}
targets() { local face=$1 t=""; for _ in $(seq 15); do t="$t,127.0.0.1:$face"; done; echo "${t#,},127.0.0.1:$line"; }
for _ in $(seq "${1:-3}"); do
  line=$((30000 + RANDOM % 10000)); irc=$((line + 1))
  taskset -c 0 "$here/.venv/bin/python" -m twisted --log-format text sockproto-chat --history :memory: --flood-rate 0 \
    --max-line-length 512 --listen tcp:$line:interface=127.0.0.1 --irc tcp:$irc:interface=127.0.0.1 \
    >"$work/server.log" 2>&1 & pid=$!
  wait_port $line && wait_port $irc || { cat "$work/server.log"; exit 1; }
  sleep 0.5
  # IRC receivers register and join; the same text reaches the line senders, where it is only chat.
  ircRun=$(taskset -c 1 "$work/loadgen" chat "$(targets $irc)" -c "$receivers" -m "$senders" -k "$messages" \
    --init 'NICK r%d\nUSER r 0 * :r\nJOIN #lobby\n' 2>&1)
  lineRun=$(taskset -c 1 "$work/loadgen" chat "$(targets $line)" -c "$receivers" -m "$senders" -k "$messages" 2>&1)
  kill -0 $pid 2>/dev/null || { echo "sockproto-chat died:"; cat "$work/server.log"; exit 1; }
  kill $pid; wait $pid 2>/dev/null
  a=$(echo "$ircRun" | sed -n 's/.* deliveries_per_s=\([0-9]*\).*/\1/p'); b=$(echo "$lineRun" | sed -n 's/.* deliveries_per_s=\([0-9]*\).*/\1/p')
  echo "irc: $ircRun"
  echo "line: $lineRun"
  echo "deliveries/s to $receivers receivers: irc $a, line $b, ratio $(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2f", a/b}')"
done
