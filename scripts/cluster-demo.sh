#!/usr/bin/env bash
# Tries a confab cluster on this machine: a throwaway redis-server and three
# nodes on loopback, each with its own ports (TCP 20825-20827, web
# 20880-20882; REDIS_PORT, TCP_PORT and HTTP_PORT move them). Ctrl+C stops
# all four. Needs redis-server and a built confab (npm run build); nothing is
# kept (Redis runs without persistence).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
redis_port="${REDIS_PORT:-26379}"
tcp_port="${TCP_PORT:-20825}"
http_port="${HTTP_PORT:-20880}"
confab=(node "$here/dist/cli/main.js" serve)
[ -f "$here/dist/cli/main.js" ] || { echo "build first: npm run build" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }

pids=()
redis_pid=
data="$(mktemp -d)"
stop() {
  trap - INT TERM EXIT
  # Only the processes started here, by their PIDs: the nodes first, so they
  # leave the cluster (their members' "30"s) while Redis is still there.
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -z "$redis_pid" ] || { kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; }
  rm -rf "$data"
}
trap stop INT TERM EXIT

# Each in a session of its own: Ctrl+C reaches this script alone, which stops
# the nodes before Redis.
setsid redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize no --loglevel warning &
redis_pid=$!
for _ in $(seq 50); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.1
done

# Each node's log lines start with its name ($! is still the node's PID); the
# prefixing outlives Ctrl+C, so that the nodes' last lines are shown.
for i in 0 1 2; do
  setsid "${confab[@]}" --redis "redis://127.0.0.1:$redis_port" \
    --port $((tcp_port + i)) --http-port $((http_port + i)) --data-dir "$data/node$i" \
    > >(trap '' INT TERM; exec sed -u "s/^/node$i | /") 2>&1 &
  pids+=($!)
done
echo "three nodes: TCP $tcp_port-$((tcp_port + 2)), web http://127.0.0.1:$http_port/ to :$((http_port + 2))/ (Ctrl+C stops)"
echo "a terminal client that moves to the next node when its own goes:"
echo "  npx confab chat ann --host 127.0.0.1:$tcp_port,127.0.0.1:$((tcp_port + 1)),127.0.0.1:$((tcp_port + 2))"
# For trying the failures of docs/cluster.md by hand (kill -9, kill -STOP).
echo "PIDs: redis-server $redis_pid, node0 ${pids[0]}, node1 ${pids[1]}, node2 ${pids[2]}; node0 started again by hand"
echo "(stop it yourself before Ctrl+C, which removes its data directory and stops Redis):"
printf '  '
printf '%q ' "${confab[@]}" --redis "redis://127.0.0.1:$redis_port" --port "$tcp_port" \
  --http-port "$http_port" --data-dir "$data/node0"
echo
wait
