// The reference for ega-core's MobileNetV2 stem: TF.js (tfjs-layers on its pure-JavaScript CPU
// backend) runs nsfwjs's own model file and prints one layer's output.
//
//   node scripts/mobilenet_reference.mjs DIR LAYER INPUT OUTPUT B H W
//
// DIR is what scripts/setup-mobilenet.sh wrote (model.json, weights.bin, reference/node_modules);
// INPUT holds B×H×W×3 little-endian f32 (NHWC, the values the Keras model takes: [−1, 1]);
// OUTPUT receives the layer's activations as little-endian f32, NHWC, and its shape is printed
// as JSON on stdout. The model is cut after LAYER and its input set to H×W (Keras saved it for 224×224).
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const [dir, layerName, inputPath, outputPath, ...dims] = process.argv.slice(2);
if (!dir || !layerName || !inputPath || !outputPath || dims.length !== 3) {
  console.error("usage: node scripts/mobilenet_reference.mjs DIR LAYER INPUT OUTPUT B H W");
  process.exit(2);
}
const [b, h, w] = dims.map(Number);
const require = createRequire(path.resolve(dir, "reference", "package.json"));
const tf = require("@tensorflow/tfjs-core");
require("@tensorflow/tfjs-backend-cpu");
const tfl = require("@tensorflow/tfjs-layers");
await tf.setBackend("cpu");

const model = JSON.parse(fs.readFileSync(path.join(dir, "model.json"), "utf8"));
const bytes = fs.readFileSync(path.join(dir, "weights.bin"));
// Keep the layers LAYER depends on (the classifier head needs a 224 px input), LAYER as output.
const graph = model.modelTopology.model_config.config;
const byName = new Map(graph.layers.map((l) => [l.name, l]));
if (!byName.has(layerName)) {
  console.error(`the model has no layer ${layerName}`);
  process.exit(2);
}
const keep = new Set();
const visit = (name) => {
  if (keep.has(name)) return;
  keep.add(name);
  for (const node of byName.get(name).inbound_nodes) for (const [from] of node) visit(from);
};
visit(layerName);
graph.layers = graph.layers.filter((l) => keep.has(l.name));
graph.output_layers = [[layerName, 0, 0]];
for (const layer of graph.layers) {
  if (layer.class_name === "InputLayer") layer.config.batch_input_shape = [null, h, w, 3];
}
const weights = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
const cut = await tfl.loadLayersModel(
  tf.io.fromMemory({
    modelTopology: model.modelTopology,
    weightSpecs: model.weightsManifest[0].weights,
    weightData: weights,
  }),
  { strict: false },
);
const input = new Float32Array(fs.readFileSync(inputPath).buffer.slice(0));
if (input.length !== b * h * w * 3) {
  console.error(`${inputPath} holds ${input.length} values, expected ${b}×${h}×${w}×3`);
  process.exit(2);
}
const out = cut.predict(tf.tensor4d(input, [b, h, w, 3]));
const values = await out.data();
fs.writeFileSync(outputPath, Buffer.from(values.buffer, values.byteOffset, values.byteLength));
console.log(JSON.stringify(out.shape));
