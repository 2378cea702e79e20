#!/usr/bin/env bash
# Rebuilds the committed demo bundles assets/shapes and assets/openmoji: train, index the held-out
# gallery, export for the web (each export writes its model card, README.md). About 50 minutes on
# 2 CPU cores, most of it the `small` shapes model. Usage: bash scripts/make-demo-bundles.sh [shapes|openmoji]...
set -euo pipefail
cd "$(dirname "$0")/.."
native() { cargo run -q -p native -- "$@"; }
which=("${@:-shapes openmoji}")

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
    *) echo "unknown bundle $name (shapes or openmoji)" >&2; exit 2 ;;
  esac
done
