#!/usr/bin/env bash
# README's test command: the Rust tests (unit, integration, command line), then the web package
# built for wasm32 and run in node, where it must tokenize exactly like the native build, search
# the committed demo bundles like it and run the lab; then the demo page built by trunk and tested
# in headless Chromium (WebGPU on SwiftShader; with REQUIRE_GPU=1 it must not fall back to the CPU).
# Needs: the wasm32-unknown-unknown target, wasm-bindgen-cli 0.2.130, node + npm, trunk 0.21.14,
# chromium (README, "Set up"). Screenshots and the page's benchmark land in target/browser-test.
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
node web/tests/smolvlm.mjs target/web-node

missing=()
command -v trunk >/dev/null || missing+=("trunk (cargo install trunk --version 0.21.14 --locked)")
command -v "${CHROMIUM:-chromium}" >/dev/null || missing+=("chromium (apt-get install chromium, or CHROMIUM=/path/to/chrome)")
if ((${#missing[@]})); then
  printf 'error: the browser tests need %s\n' "${missing[@]}" >&2
  exit 1
fi
trunk build --offline
(cd web/tests && npm ci --no-audit --no-fund --loglevel=error)
CHROMIUM="$(command -v "${CHROMIUM:-chromium}")" node web/tests/browser.mjs dist target/browser-test
