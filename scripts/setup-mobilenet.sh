#!/usr/bin/env bash
# Fetches the one pretrained vision network the package registries carry: the MobileNetV2 inside
# npm's nsfwjs 4.4.0 (a Keras model for TF.js, 224 px input, weights quantized to uint8; its layers
# up to block_10 were frozen at their ImageNet weights when nsfwjs fine-tuned the rest for its five
# classes). Writes, from the package's browserify-wrapped files:
#   DIR/model.json     the Keras topology + the weights manifest (paths: weights.bin)
#   DIR/weights.bin    the quantized weights, as TF.js stores them
# and installs TF.js itself (tfjs-core, tfjs-layers, tfjs-backend-cpu 4.22.0, pure JavaScript) in
# DIR/reference/, which runs the same file for the parity test (`tests/integration/mobilenet.rs`,
# through `scripts/mobilenet_reference.mjs`).
# Usage: bash scripts/setup-mobilenet.sh [DIR]   (default data/mobilenet; ~25 MB + ~20 MB download)
#
# nsfwjs © Infinite Red, MIT licence (DIR/LICENSE). MobileNetV2: Sandler et al. 2018.
set -euo pipefail
VERSION=4.4.0
SHA256=585cd178f3b994337c4d10a87b080d342fc52f8b9bf0085c4d1f345a3a1c5382
TFJS=4.22.0
dir=${1:-data/mobilenet}

if [[ -f "$dir/weights.bin" && -f "$dir/VERSION" && "$(cat "$dir/VERSION")" == "$VERSION tfjs $TFJS" \
      && -d "$dir/reference/node_modules/@tensorflow/tfjs-layers" ]]; then
  echo "MobileNetV2 (nsfwjs $VERSION) is already in $dir"
  exit 0
fi
source "$(dirname "${BASH_SOURCE[0]}")/npm-fetch.sh"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
npm_fetch nsfwjs "$VERSION" "$SHA256" "$work"
tar -xzf "$work/nsfwjs-$VERSION.tgz" -C "$work" package/LICENSE \
  package/dist/models/mobilenet_v2/model.min.js package/dist/models/mobilenet_v2/group1-shard1of1.min.js

mkdir -p "$(dirname "$dir")"
staging="$dir.partial"
rm -rf "$staging"
mkdir -p "$staging"
# The two files are UMD bundles: the model's exports {modelTopology, weightsManifest}, the shard's
# a base64 string of the weights' bytes.
node - "$work/package/dist/models/mobilenet_v2" "$staging" <<'JS'
const fs = require("fs"), path = require("path");
const [src, out] = process.argv.slice(2);
const model = require(path.join(src, "model.min.js"));
if (!model.modelTopology || !Array.isArray(model.weightsManifest) || model.weightsManifest.length !== 1) {
  throw new Error("nsfwjs's model.min.js does not hold one weights group as expected");
}
const shard = require(path.join(src, "group1-shard1of1.min.js"));
if (typeof shard !== "string") throw new Error("nsfwjs's weight shard is not a base64 string");
const bytes = Buffer.from(shard, "base64");
model.weightsManifest[0].paths = ["weights.bin"];
fs.writeFileSync(path.join(out, "model.json"), JSON.stringify(model));
fs.writeFileSync(path.join(out, "weights.bin"), bytes);
console.log(`MobileNetV2: ${model.weightsManifest[0].weights.length} weight tensors, ${bytes.length} bytes`);
JS
mv "$work/package/LICENSE" "$staging/LICENSE"

# TF.js, the reference implementation that reads this file (parity tests only).
mkdir -p "$staging/reference"
echo '{"name": "ega-mobilenet-reference", "private": true}' > "$staging/reference/package.json"
(cd "$staging/reference" && npm install --silent --no-audit --no-fund \
  "@tensorflow/tfjs-core@$TFJS" "@tensorflow/tfjs-layers@$TFJS" "@tensorflow/tfjs-backend-cpu@$TFJS" >/dev/null)

cat > "$staging/CREDIT.md" <<CREDIT
MobileNetV2 (Sandler et al. 2018) as fine-tuned and packaged by nsfwjs $VERSION (© Infinite Red,
MIT, LICENSE): dist/models/mobilenet_v2, unwrapped by scripts/setup-mobilenet.sh. reference/ holds
TF.js $TFJS (Apache-2.0) for the parity test.
CREDIT
echo "$VERSION tfjs $TFJS" > "$staging/VERSION"
rm -rf "$dir"
mv "$staging" "$dir"
echo "MobileNetV2 (nsfwjs $VERSION) in $dir; TF.js $TFJS in $dir/reference"
