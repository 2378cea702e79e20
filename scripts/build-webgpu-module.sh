#!/usr/bin/env bash
# The page's second wasm module, with the WebGPU backend and the WGSL kernels (the `web-gpu`
# package). Trunk runs this as a post-build hook (Trunk.toml), after it has built the page's
# CPU module (`web`, which has no wgpu/cubecl and is a fraction of the size). The page imports
# this module only when it runs search, the lab or the benchmark on WebGPU (web/js/modules.js).
#
# Output, in trunk's staging folder (then dist/): webgpu/web_gpu.js, webgpu/web_gpu_bg.wasm and
# webgpu/module.json ({"js", "wasm", "sha256", "bytes"}: the page imports the files with the
# digest as a query, so a rebuilt module is never served from a stale cache).
# Run by hand: TRUNK_STAGING_DIR=dist TRUNK_PROFILE=release bash scripts/build-webgpu-module.sh
set -euo pipefail
cd "$(dirname "$0")/.."
staging=${TRUNK_STAGING_DIR:?"run by trunk (Trunk.toml's hook), or set TRUNK_STAGING_DIR"}
if [[ "${TRUNK_PROFILE:-release}" == release ]]; then
  profile=web        # Trunk.toml's cargo_profile
  folder=web
else
  profile=dev
  folder=debug
fi
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
echo "building the WebGPU module (web-gpu, profile $profile)" >&2
cargo build --locked -p web-gpu --target wasm32-unknown-unknown --profile "$profile"
out="$staging/webgpu"
rm -rf "$out"
mkdir -p "$out"
wasm-bindgen --target web --no-typescript --out-dir "$out" "$target_dir/wasm32-unknown-unknown/$folder/web_gpu.wasm"
python3 - "$out" <<'PY'
import hashlib, json, os, sys
out = sys.argv[1]
wasm = os.path.join(out, "web_gpu_bg.wasm")
data = open(wasm, "rb").read()
manifest = {"js": "web_gpu.js", "wasm": "web_gpu_bg.wasm", "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
json.dump(manifest, open(os.path.join(out, "module.json"), "w"))
print(f"webgpu/web_gpu_bg.wasm: {len(data)} bytes", file=sys.stderr)
PY
