#!/bin/sh
# Instructions per routed message in the server machine (the routing
# benchmark's work, counted by callgrind: machine load does not move it).
#
#   proto/benches/route_instructions.sh [mp|room10|room100 ...]
#
# Builds the `server` bench, runs it in its fixed-count mode
# (CONFAB_ROUTE_COUNT, CONFAB_ROUTE_BATCHES) under callgrind, collecting
# only inside `route_batch` (feeding a batch and draining the server), for
# 5 and for 15 batches, and prints the difference per message: setup and
# warm-up cancel out. Needs valgrind.
set -eu
bin=$(cargo bench -p confab-proto --bench server --no-run 2>&1 | sed -n 's/.*Executable benches\/server.rs (\(.*\))/\1/p')
[ -x "$bin" ] || { echo "route_instructions: no bench binary found" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
ir() {
    CONFAB_ROUTE_COUNT=$1 CONFAB_ROUTE_BATCHES=$2 valgrind --tool=callgrind --toggle-collect='*route_batch*' \
        --callgrind-out-file="$out/cg.$1.$2" "$bin" >/dev/null 2>"$out/err"
    sed -n 's/^\(summary\|totals\): *\([0-9]*\).*/\2/p' "$out/cg.$1.$2" | head -n 1
}
[ $# -gt 0 ] || set -- mp room10 room100
for which in "$@"; do
    case $which in mp) per=1000 ;; room10 | room100) per=100 ;; *) echo "unknown: $which" >&2; exit 2 ;; esac
    a=$(ir "$which" 5)
    b=$(ir "$which" 15)
    echo "$which: $(((b - a) / (10 * per))) instructions per message"
done
