#!/usr/bin/env bash
# Rebuilds the browser client's bundle from source: the wasm32 release build
# of confab-web, then wasm-bindgen's `--target web` output (an ES module and
# the .wasm) in client/web/static/pkg/, which the server embeds.
#
# Needs the wasm32-unknown-unknown target (rustup target add) and the
# wasm-bindgen CLI of the version in Cargo.lock (installed here if missing).
# The bundle is committed, so building the server needs neither.
set -euo pipefail
cd "$(dirname "$0")/../.."

version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $version" ]; then
    echo "installing wasm-bindgen-cli $version (the version of the wasm-bindgen crate in Cargo.lock)"
    # Not --locked: the CLI's lock file pins a webpki-roots release that the
    # package registry this project's machines reach does not serve.
    cargo install wasm-bindgen-cli --version "$version"
fi
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true

cargo build -p confab-web --target wasm32-unknown-unknown --release
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
out=client/web/static/pkg
rm -rf "$out"
wasm-bindgen --target web --no-typescript --out-dir "$out" \
    "$target_dir/wasm32-unknown-unknown/release/confab_web.wasm"
ls -l "$out"
