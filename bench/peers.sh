#!/usr/bin/env bash
# The peer comparison of docs/BENCHMARKS.md ("Beside NATS, Mosquitto and
# Redis"), in one command from a fresh clone:
#
#   bench/peers.sh                      # every scenario, every peer (about 8 minutes)
#   bench/peers.sh --only nats,redis    # a subset; --help for every flag
#
# It installs nats-server, mosquitto and redis-server with apt-get when one
# is missing (and says so), builds confab-bench with the `peers` feature,
# and runs `confab-bench peers`, which starts each broker on a free loopback
# port with its configuration, a CA and certificate made at run time and its
# data in a temporary directory (JetStream file store; Mosquitto persistence
# on), runs confab and each peer interleaved (confab, peer, confab, ...),
# stops each broker by its pid and prints one table of ratios and the
# semantic differences. Progress goes to stderr, the table to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v redis-server >/dev/null || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
    echo "peers.sh: installing ${missing[*]} with apt-get" >&2
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
# The packages may start system-wide services; the comparison uses its own
# brokers on free ports and leaves those alone.
cargo build --release -p confab-bench --features peers >&2
exe="${CARGO_TARGET_DIR:-target}/release/confab-bench"
echo "peers.sh: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" >&2
exec "$exe" peers "$@"
