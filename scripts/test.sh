#!/usr/bin/env bash
# README's test command: the Rust tests (unit, integration, command line), then the web package
# built for wasm32 and run in node, where it must tokenize exactly like the native build, search
# the committed demo bundles like it and run the lab; then the demo page built by trunk and tested
# in headless Chromium (WebGPU on SwiftShader; with REQUIRE_GPU=1 it must not fall back to the CPU).
# It first installs what the machine lacks (scripts/setup-test.sh: Vulkan, node, Chromium, the wasm
# target, wasm-bindgen-cli, trunk; EGA_SKIP_SETUP=1 skips that). Screenshots and the page's
# benchmark land in target/browser-test. Optional data (OpenMoji, the pretrained GGUF, PyTorch):
# scripts/setup-extras.sh; tests that need them say SKIPPED without them.
# Extra arguments go to `cargo test` (e.g. `bash scripts/test.sh data::`).
set -euo pipefail
cd "$(dirname "$0")/.."

[[ "${EGA_SKIP_SETUP:-0}" == 1 ]] || bash scripts/setup-test.sh

cargo test "$@"

# Split demo bundles (assets/*/parts/): their model file is assembled from the SmolLM2 GGUF of
# scripts/setup-extras.sh pretrained, byte for byte, before the
# node tests search them and trunk copies assets/ into the page.
for parts in assets/*/parts/parts.json; do
  [[ -f "$parts" ]] || continue
  bundle=${parts%/parts/parts.json}
  if [[ -f data/pretrained/SmolLM2-135M-Instruct.Q4_1.gguf ]]; then
    cargo run -q -p native -- assemble "$bundle"
  elif [[ "${REQUIRE_PRETRAINED:-0}" == 1 ]]; then
    echo "REQUIRE_PRETRAINED=1 but data/pretrained holds no GGUF to assemble $bundle from" >&2; exit 1
  else
    echo "*** SKIPPED assembling $bundle: run bash scripts/setup-extras.sh pretrained ***"
  fi
done

# The page's CPU module in the page's own profile (Trunk.toml), so trunk below reuses the build.
cargo build -p web --target wasm32-unknown-unknown --profile web
target_dir=${CARGO_TARGET_DIR:-target}
wasm-bindgen --target nodejs --out-dir target/web-node "$target_dir/wasm32-unknown-unknown/web/web.wasm"
node web/tests/tokenize.mjs target/web-node
node web/tests/search.mjs target/web-node
node web/tests/lab.mjs target/web-node
node web/tests/smolvlm.mjs target/web-node

chromium=$(command -v "${CHROMIUM:-chromium}" || command -v chromium-browser)
trunk build --offline
(cd web/tests && npm ci --no-audit --no-fund --loglevel=error)
CHROMIUM="$chromium" node web/tests/browser.mjs dist target/browser-test
