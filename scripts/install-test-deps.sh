#!/usr/bin/env bash
# Installs, with apt-get, what the test suite needs beyond npm packages and is
# not on the machine yet: python3 (the course server), tmux (terminal tests),
# openssl (TLS test certificates), Debian's Chromium (browser tests), Debian's
# redis-server (the Redis store and cluster tests start their own), and make
# and g++ (with python3, what npm ci needs to compile better-sqlite3 where its
# prebuilt binary cannot be downloaded), and iproute2 (ip and ss, for a listener
# test in a network namespace of its own).
# Does nothing when all of them are present; installing needs root.
set -euo pipefail

need=()
command -v python3 >/dev/null || need+=(python3)
command -v tmux >/dev/null || need+=(tmux)
command -v openssl >/dev/null || need+=(openssl)
command -v make >/dev/null || need+=(make)
command -v g++ >/dev/null || need+=(g++)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/redis-server ] || need+=(redis-server)
command -v ss >/dev/null || need+=(iproute2)

if ((${#need[@]} == 0)); then
  exit 0
fi
echo "installing: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
