#!/usr/bin/env bash
# The GPU check: on a machine with a real GPU (NVIDIA through Vulkan, or any wgpu adapter), print
# the adapter, run the GPU tests with REQUIRE_GPU=1, then `native bench kernels` and (when a Python
# with torch is there) `native bench train --devices wgpu` at GPU-sized shapes, writing JSON and logs
# to $OUT (default target/gpu-check).
#
# Usage: bash scripts/gpu-check.sh            GPU-sized shapes (N = M up to 16 384, batch 64)
#        GPU_CHECK_QUICK=1 bash scripts/gpu-check.sh   small shapes (lavapipe: proves the script works)
#        CARGO_TARGET_DIR=/path/to/target bash scripts/gpu-check.sh   reuse a build folder
# Budget: within 8 minutes including the build on a 16-core machine (a warm build folder makes the
# build seconds). Every step's time is printed and written to $OUT/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-target/gpu-check}
mkdir -p "$out"
start=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - start )) s)" | tee -a "$out/summary.txt"; }
: > "$out/summary.txt"

step "build (tests and the native binary, dev profile with optimised dependencies)"
cargo build -q -p native
cargo test -q --no-run 2>&1 | tail -2
native=${CARGO_TARGET_DIR:-target}/debug/native

step "adapter"
"$native" info --device wgpu --json > "$out/info.json" || { cat "$out/info.json"; echo "no wgpu adapter" >&2; exit 1; }
python3 -c "import json,sys; a=json.load(open(sys.argv[1]))['wgpu_adapter']; print(a)" "$out/info.json" | tee -a "$out/summary.txt"

step "GPU tests (REQUIRE_GPU=1: a missing adapter fails them)"
REQUIRE_GPU=1 cargo test -q --test integration -- kernels:: loss:: model:: learning:: 2>&1 | tee "$out/tests.log" | grep -E "^test result|FAILED|panicked" | tee -a "$out/summary.txt"
grep -q "^test result: ok" "$out/tests.log" || { echo "GPU tests failed (see $out/tests.log)" >&2; exit 1; }

if [[ "${GPU_CHECK_QUICK:-0}" == 1 ]]; then
  loss_sizes=256,1024; index_sizes=10000; batch=4; index_batch=16; rounds=1
else
  loss_sizes=1024,4096,16384; index_sizes=100000,1000000; batch=64; index_batch=256; rounds=3
fi

step "bench kernels (loss N = M in $loss_sizes, top-k over $index_sizes rows)"
"$native" bench kernels --device wgpu --loss-sizes "$loss_sizes" --index-sizes "$index_sizes" \
  --json "$out/bench-kernels.json" 2>&1 | tee "$out/bench-kernels.md" | tail -20

python=${PYTHON:-bench/.venv/bin/python}
if "$python" -c "import torch" 2>/dev/null; then
  step "bench train --devices wgpu (batch $batch pairs + hard negatives)"
  "$native" bench train --devices wgpu --wgpu-batch-size "$batch" --wgpu-index-batch "$index_batch" \
    --wgpu-rounds "$rounds" --python "$python" --json "$out/bench-train.json" 2>&1 | tee "$out/bench-train.md" | tail -12
else
  echo "*** SKIPPED bench train: no Python with torch at $python (bash bench/setup.sh; the PyTorch side is its reference) ***" | tee -a "$out/summary.txt"
fi
step "done"
