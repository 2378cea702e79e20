#!/usr/bin/env bash
# README's test command: the Rust tests (unit, integration, command line), then the web package
# built for wasm32 and run in node, where it must tokenize exactly like the native build and
# search the committed demo bundles like it.
# Needs: the wasm32-unknown-unknown target, wasm-bindgen-cli 0.2.130, node (README, "Set up").
# Extra arguments go to `cargo test` (e.g. `bash scripts/test.sh data::`).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test "$@"

want=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [[ "$have" != "$want" ]]; then
  echo "error: wasm-bindgen-cli $want is needed (found: ${have:-none}): cargo install wasm-bindgen-cli --version $want" >&2
  exit 1
fi
cargo build -p web --target wasm32-unknown-unknown
wasm-bindgen --target nodejs --out-dir target/web-node target/wasm32-unknown-unknown/debug/web.wasm
node web/tests/tokenize.mjs target/web-node
node web/tests/search.mjs target/web-node
node web/tests/lab.mjs target/web-node
