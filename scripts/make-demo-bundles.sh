#!/usr/bin/env bash
# Rebuilds the committed demo bundles assets/shapes and assets/openmoji (train, index the held-out
# gallery, export for the web; each export writes its model card, README.md) and assets/lab (the
# lab's starting model: `tiny` trained with info-NCE, which the page fine-tunes with info-NCE and
# EGA side by side). About 50 minutes on 2 CPU cores, most of it the `small` shapes model.
# openmoji-lm (not in the default list: ~80 minutes, needs `bash scripts/setup-extras.sh
# pretrained wordnet openmoji mobilenet`): SmolLM2-135M's first 8 decoder layers with mean pooling,
# a text stage (300 steps of LoRA on WordNet + OpenMoji keyword pairs), then the recipe's alignment
# and contrastive stages with a vision tower on the pretrained MobileNetV2 stem; exported as parts (assets/openmoji-lm/parts/, a few MB) that
# `native assemble assets/openmoji-lm` turns back into the whole model with the GGUF.
# Usage: bash scripts/make-demo-bundles.sh [shapes|openmoji|lab|openmoji-lm]...
set -euo pipefail
cd "$(dirname "$0")/.."
native() { cargo run -q -p native -- "$@"; }
which=("${@:-shapes openmoji lab}")

for name in ${which[@]}; do
  case "$name" in
    shapes)
      native train --steps 2000 --eval-every 500 --device cpu --out runs/demo-shapes-small
      native index --model runs/demo-shapes-small --images shapes --split test --count 300 --device cpu --out runs/demo-shapes-index
      rm -rf assets/shapes
      native export --model runs/demo-shapes-small --index runs/demo-shapes-index --device cpu --out assets/shapes
      ;;
    openmoji)
      bash scripts/setup-openmoji.sh
      native train --data openmoji --preset tiny --steps 1500 --batch-size 32 --warmup 60 --eval-every 500 --device cpu \
        --out runs/demo-openmoji-tiny
      native index --model runs/demo-openmoji-tiny --images openmoji --split test --device cpu --out runs/demo-openmoji-index
      rm -rf assets/openmoji
      native export --model runs/demo-openmoji-tiny --index runs/demo-openmoji-index --device cpu --out assets/openmoji
      ;;
    lab)
      rm -rf runs/lab-base
      native train --preset tiny --loss infonce --steps 600 --batch-size 32 --lr 2e-3 --warmup 60 --eval-every 0 \
        --device cpu --out runs/lab-base
      rm -rf assets/lab/model && mkdir -p assets/lab/model
      cp runs/lab-base/bundle/{config.json,model.safetensors,tokenizer.json,metrics.json} assets/lab/model/
      ;;
    openmoji-lm)
      gguf=data/pretrained/SmolLM2-135M-Instruct.Q4_1.gguf
      # The text stage alone (stopped at its end), then the recipe from its checkpoint: --init
      # merges the text stage's adapters into the decoder and records the merge for the parts.
      native train --init-lm $gguf --lm-layers 8 --pooling mean --data openmoji --recipe pretrained-lm \
        --text-steps 300 --align-steps 1 --steps 1 --stop-after 300 --eval-every 0 --device cpu --out runs/demo-lm8-text
      # The vision tower reads nsfwjs's MobileNetV2 (frozen ImageNet layers, --vision-stem).
      bash scripts/setup-mobilenet.sh
      native train --init runs/demo-lm8-text/checkpoints/step-000300 --vision-stem data/mobilenet --data openmoji \
        --recipe pretrained-lm --align-steps 1000 --steps 300 --eval-every 0 --device cpu --out runs/demo-lm8
      native index --model runs/demo-lm8 --images openmoji --split test --device cpu --out runs/demo-lm8-index
      rm -rf assets/openmoji-lm
      native export --model runs/demo-lm8 --index runs/demo-lm8-index --device cpu --out assets/openmoji-lm \
        --parts-base $gguf
      ;;
    *) echo "unknown bundle $name (shapes, openmoji, lab or openmoji-lm)" >&2; exit 2 ;;
  esac
done
