#!/usr/bin/env bash
# Set-up of the PyTorch side of the benchmarks and of the parity test (not a runtime dependency).
# Creates bench/.venv (git-ignored) with PyTorch (CPU use only), numpy, safetensors, and Hugging Face
# transformers + gguf + accelerate (the reference the pretrained-model parity tests compare with).
#
# PyTorch's CPU-only wheel index is not reachable from these machines, so this installs the
# default PyPI wheel, which also pulls NVIDIA's CUDA libraries (~4 GB unpacked): `import torch`
# loads them even when only the CPU is used. Nothing CUDA is used by bench/torch_reference.py.
#
# Usage: bash bench/setup.sh            (idempotent: a venv whose torch imports is kept)
#        PYTHON=python3.11 bash bench/setup.sh
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
venv=.venv
torch_version=2.15.0
transformers_version=5.24.0

if [[ -x $venv/bin/python ]] && $venv/bin/python -c "import torch, numpy, safetensors, gguf, accelerate, transformers; assert torch.__version__.startswith('$torch_version'); assert transformers.__version__ == '$transformers_version'" 2>/dev/null; then
  echo "bench/.venv ready: $($venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
  exit 0
fi
$python -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "torch==$torch_version" "numpy>=1.26" "safetensors>=0.4" \
  "transformers==$transformers_version" gguf accelerate
"$venv/bin/python" -c 'import torch; import transformers; print("bench/.venv ready: torch", torch.__version__, "transformers", transformers.__version__, "threads", torch.get_num_threads())'
