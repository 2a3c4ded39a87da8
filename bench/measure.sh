#!/usr/bin/env bash
# The runs of docs/BENCHMARKS.md, "Over real sockets (confab-bench)": one
# JSON object per line on stdout. Each run is bounded (5 s window, 1 s warmup).
# Usage: bench/measure.sh > results.jsonl
# The machine is shared: run it three times and take the median of each line.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p confab-bench >&2
exe="${CARGO_TARGET_DIR:-target}/release/confab-bench"
# A failed or incomplete run (its JSON says so) does not stop the others.
bin() { "$exe" "$@" || echo "confab-bench exited $? for: $*" >&2; }
common=(--duration 5 --warmup 1 --json)
for t in tcp quic; do
  for p in 64 1024 65536; do
    bin --transport "$t" --scenario mp --payload "$p" --mode closed "${common[@]}"
  done
  bin --transport "$t" --scenario mp --payload 1024 --mode closed --window 16 "${common[@]}"
  bin --transport "$t" --scenario mp --payload 1024 --mode rate --rate 5000 "${common[@]}"
  bin --transport "$t" --scenario mp --senders 4 --receivers 4 --payload 1024 --mode closed "${common[@]}"
  for m in 10 100; do
    bin --transport "$t" --scenario room --receivers "$m" --payload 1024 --mode closed "${common[@]}"
  done
  bin --transport "$t" --scenario room --receivers 10 --payload 1024 --mode rate --rate 1000 "${common[@]}"
  bin --transport "$t" --scenario room --receivers 100 --payload 1024 --mode rate --rate 200 "${common[@]}"
done
# The SQLite store (synchronous=FULL): one fsync per loop turn.
bin --transport tcp --scenario mp --payload 1024 --mode closed --store sqlite "${common[@]}"
bin --transport tcp --scenario mp --payload 1024 --mode closed --window 16 --store sqlite "${common[@]}"
bin --transport tcp --scenario mp --senders 4 --receivers 4 --payload 1024 --mode closed --store sqlite "${common[@]}"
# The no-socket baseline: in-memory links into the same server loop.
bin --transport mem --scenario mp --payload 1024 --mode closed "${common[@]}"
bin --transport mem --scenario room --receivers 100 --payload 1024 --mode closed "${common[@]}"
