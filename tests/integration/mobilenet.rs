//! The MobileNetV2 stem (issue 14: the one pretrained vision network a package carries): the TF.js
//! reader, the stem against TF.js itself running nsfwjs's file (`scripts/mobilenet_reference.mjs`),
//! and a `smolvlm` tower with the stem (saved and loaded back, never trained).

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use ega_core::model::smolvlm::mobilenet::{stem_tensors, VisionStem};
use ega_core::model::smolvlm::{MemorySource, Part, SmolVlm};
use ega_core::model::{ModelConfig, SmolVlmConfig};
use ega_core::pretrained::tfjs::TfjsModel;
use ega_core::tensor_util::{floats, to_f32_vec};

/// `data/mobilenet` when `scripts/setup-mobilenet.sh` has run; otherwise SKIPPED (a failure when
/// `REQUIRE_MOBILENET=1`).
fn mobilenet_dir(test: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mobilenet");
    if dir.join("weights.bin").exists() && dir.join("reference/node_modules/@tensorflow/tfjs-layers").exists() {
        return Some(dir);
    }
    if std::env::var("REQUIRE_MOBILENET").is_ok_and(|v| v == "1") {
        panic!("REQUIRE_MOBILENET=1 but {} is missing: run scripts/setup-mobilenet.sh", dir.display());
    }
    eprintln!("\n*** SKIPPED {test}: {} missing (scripts/setup-mobilenet.sh) ***\n", dir.display());
    None
}

/// The tiny random `smolvlm` with a MobileNetV2 stem on a 32 px image (a 2×2 patch grid).
fn stem_config() -> SmolVlmConfig {
    let mut config = ModelConfig::tiny_smolvlm().smolvlm().unwrap().clone();
    config.vision_config.image_size = 32;
    config.vision_config.patch_size = 16;
    config.vision_config.stem = Some(VisionStem::MobilenetV2Block10);
    config.validate().unwrap();
    config
}

fn write_model(dir: &Path, weights: serde_json::Value, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let json = serde_json::json!({
        "modelTopology": {"model_config": {"class_name": "Model", "config": {"layers": []}}},
        "weightsManifest": [{"paths": ["weights.bin"], "weights": weights}],
    });
    std::fs::write(dir.join("model.json"), json.to_string()).unwrap();
    std::fs::write(dir.join("weights.bin"), bytes).unwrap();
}

#[test]
fn tfjs_weights_dequantize_as_the_manifest_says() {
    let dir = std::env::temp_dir().join(format!("ega-tfjs-{}", std::process::id()));
    let specs = serde_json::json!([
        {"name": "a/kernel", "shape": [2, 2], "dtype": "float32",
         "quantization": {"min": -1.0, "scale": 0.5, "dtype": "uint8"}},
        {"name": "b/bias", "shape": [2], "dtype": "float32"},
    ]);
    let mut bytes = vec![0u8, 1, 2, 4];
    bytes.extend(1.5f32.to_le_bytes());
    bytes.extend((-2.0f32).to_le_bytes());
    write_model(&dir, specs.clone(), &bytes);
    let model = TfjsModel::open(&dir).unwrap();
    assert_eq!(model.weight("a/kernel", &[2, 2]).unwrap().data, [-1.0, -0.5, 0.0, 1.0]);
    assert_eq!(model.weight("b/bias", &[2]).unwrap().data, [1.5, -2.0]);
    let err = model.weight("b/bias", &[3]).unwrap_err().to_string();
    assert!(err.contains("b/bias") && err.contains("[2]"), "{err}");
    assert!(model.weight("c", &[1]).unwrap_err().to_string().contains("no weight c"));

    // Too few bytes, too many, a path out of the folder: errors naming the problem.
    write_model(&dir, specs.clone(), &bytes[..10]);
    let err = TfjsModel::open(&dir).unwrap_err().to_string();
    assert!(err.contains("b/bias") && err.contains("runs past the end"), "{err}");
    let mut long = bytes.clone();
    long.push(0);
    write_model(&dir, specs, &long);
    let err = TfjsModel::open(&dir).unwrap_err().to_string();
    assert!(err.contains("13 bytes") && err.contains("describes 12"), "{err}");
    let json = r#"{"modelTopology": {"model_config": {"config": {"layers": []}}},
        "weightsManifest": [{"paths": ["../secret"], "weights": []}]}"#;
    std::fs::write(dir.join("model.json"), json).unwrap();
    let err = TfjsModel::open(&dir).unwrap_err().to_string();
    assert!(err.contains("not a plain file name"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn mobilenet_stem_matches_tfjs() {
    let test = "mobilenet_stem_matches_tfjs";
    let Some(dir) = mobilenet_dir(test) else { return };
    let model = TfjsModel::open(&dir).expect("read nsfwjs's MobileNetV2");
    let tensors = stem_tensors(VisionStem::MobilenetV2Block10, &model).expect("the stem's weights");
    assert_eq!(tensors.len(), 2 * 33, "33 convolutions, each with its folded batch norm");

    // Two 64 px images (a 4×4 feature map), values in [−1, 1] as the Keras model takes them.
    let (b, side) = (2usize, 64usize);
    let nhwc: Vec<f32> = (0..b * side * side * 3).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.9).collect();
    let work = std::env::temp_dir().join(format!("ega-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let input = work.join("input.bin");
    let output = work.join("output.bin");
    std::fs::write(&input, nhwc.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/mobilenet_reference.mjs");
    let out = Command::new("node")
        .arg(&script)
        .arg(&dir)
        .arg("block_10_project_BN")
        .arg(&input)
        .arg(&output)
        .args([b.to_string(), side.to_string(), side.to_string()])
        .output()
        .expect("run node (scripts/setup-test.sh installs it)");
    assert!(out.status.success(), "mobilenet_reference.mjs failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.trim_end().ends_with("[2,4,4,96]"), "TF.js's output shape: {stdout}");
    let expected: Vec<f32> =
        std::fs::read(&output).unwrap().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();

    // ega-core: the stem inside a smolvlm tower, loaded from the folded tensors.
    let device = Device::flex();
    let mut source = MemorySource::new("the stem", tensors);
    let (smolvlm, report) = SmolVlm::build(&stem_config(), Some(&mut source), &[Part::Stem], 0, &device).unwrap();
    assert_eq!(report.loaded, 66);
    let stem = smolvlm.vision_model.embeddings.stem.as_ref().expect("the config has a stem");
    let nchw: Vec<f32> = (0..b * 3 * side * side)
        .map(|i| {
            let (n, rest) = (i / (3 * side * side), i % (3 * side * side));
            let (c, y, x) = (rest / (side * side), rest / side % side, rest % side);
            nhwc[((n * side + y) * side + x) * 3 + c]
        })
        .collect();
    let x: Tensor<4> = floats(nchw, [b, 3, side, side], &device);
    let ours = stem.forward(x);
    assert_eq!(ours.dims(), [2, 96, 4, 4]);
    let ours = to_f32_vec(ours.permute([0, 2, 3, 1])).unwrap(); // NHWC like TF.js
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = ours.iter().zip(&expected).map(|(a, e)| (a - e).abs()).fold(0f32, f32::max);
    eprintln!("stem vs TF.js: largest |difference| {worst:.2e} (largest |value| {scale:.2})");
    assert!(scale > 0.5, "TF.js's features are not trivial");
    assert!(worst <= 1e-4 * scale.max(1.0), "stem differs from TF.js by {worst} (values up to {scale})");
    std::fs::remove_dir_all(&work).ok();

    // A graph that is not MobileNetV2's is refused, naming where it differs.
    let mut broken = model;
    broken.layers.retain(|l| l.name != "block_2_add");
    let err = stem_tensors(VisionStem::MobilenetV2Block10, &broken).unwrap_err().to_string();
    assert!(err.contains("block_2") && err.contains("residual"), "{err}");
    broken.weights.remove("block_5_depthwise/depthwise_kernel");
    let err = stem_tensors(VisionStem::MobilenetV2Block10, &broken).unwrap_err().to_string();
    assert!(err.contains("block_5_depthwise/depthwise_kernel"), "{err}");
}

#[test]
fn a_tower_with_a_stem_saves_loads_and_never_trains_its_stem() {
    let device = Device::flex();
    let config = stem_config();
    let (model, report) = SmolVlm::build(&config, None, &[], 5, &device).unwrap();
    assert!(report.fresh >= 66, "the stem's 66 tensors are fresh: {report:?}");
    let images: Tensor<4> =
        floats((0..2 * 3 * 32 * 32).map(|i| (i % 17) as f32 / 16.0).collect::<Vec<_>>(), [2, 3, 32, 32], &device);
    let tokens = to_f32_vec(model.image_tokens(images.clone())).unwrap();

    // Exported and built again: the same tensors, the same output.
    let exported = model.export().unwrap();
    assert!(exported.iter().any(|(n, t)| n == "vision_model.embeddings.stem.0.weight" && t.shape == [32, 3, 3, 3]));
    assert!(exported
        .iter()
        .any(|(n, t)| n == "vision_model.embeddings.patch_embedding.weight" && t.shape == [32, 96, 1, 1]));
    let mut source = MemorySource::new("exported", exported);
    let (again, _) = SmolVlm::build(&config, Some(&mut source), &Part::ALL, 9, &device).unwrap();
    assert_eq!(to_f32_vec(again.image_tokens(images.clone())).unwrap(), tokens);

    // Trainable everywhere else, the stem takes no gradient (on an autodiff device, as training is).
    let mut source = MemorySource::new("exported", again.export().unwrap());
    let (model, _) = SmolVlm::build(&config, Some(&mut source), &Part::ALL, 9, &device.autodiff()).unwrap();
    let model = model.set_require_grad(true).with_frozen(&[]);
    let stem = model.vision_model.embeddings.stem.as_ref().unwrap();
    assert!(stem.convs.iter().all(|c| !c.weight.is_require_grad() && !c.bias.is_require_grad()));
    assert!(model.vision_model.embeddings.patch_embedding.weight.is_require_grad());
}
