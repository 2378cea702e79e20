#!/usr/bin/env bash
# Both sides of README's "Performance: ega-core against PyTorch": sets up PyTorch in bench/.venv
# (bench/setup.sh), builds the command line, and runs `native bench train`, which starts
# bench/torch_reference.py as its PyTorch side and alternates the two. Results: the markdown table
# on stdout, and as JSON in $BENCH_JSON (default runs/bench-train.json). Extra arguments go to
# `bench train` (see `native bench train --help`), e.g.
#   BENCH_JSON=runs/bench-train-torch2.json bash bench/run.sh --devices cpu --threads 2
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/setup.sh
cargo build -p native
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
mkdir -p runs
target/debug/native bench train --json "${BENCH_JSON:-runs/bench-train.json}" "$@"
