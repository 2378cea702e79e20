//! Issue 7: ega-core against an independent PyTorch implementation (`bench/torch_reference.py`).
//!
//! The test builds a `small` model with a fixed seed, writes its weights (safetensors, as bundles
//! store them), a batch of prompts and images, and what ega-core computes from them (embeddings,
//! `S`, the EGA loss, `∂L/∂S` and the gradients of a few parameter tensors) into a temp folder;
//! `python bench/torch_reference.py parity DIR` recomputes all of it with torch (float32 on both
//! sides) and prints the largest absolute differences, which must be ≤ 1e-4.
//!
//! Python: `$PYTHON`, else `bench/.venv/bin/python` (made by `bash bench/setup.sh`), else
//! `python3`. Without torch the test prints SKIPPED loudly; under `REQUIRE_TORCH=1` it fails.

use std::path::Path;
use std::process::Command;

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use ega_core::embed::prompts_input;
use ega_core::loss::{contrastive_loss, similarity_matrix, LossConfig, Rescale};
use ega_core::model::{Embedder, EmbedderInput, ModelConfig};
use ega_core::prompt::{tokenize_prompts, TokenizedPrompt};
use ega_core::tensor_util::{floats, to_f64_vec};
use ega_core::weights::model_to_bytes;
use ega_tests::{uniform, WordTokenizer};
use serde_json::{json, Value};

/// Largest absolute difference allowed between the two implementations (issue 7).
const TOLERANCE: f64 = 1e-4;

fn input(
    config: &ModelConfig,
    prompts: &[TokenizedPrompt],
    images: Option<Tensor<4>>,
    device: &Device,
) -> EmbedderInput {
    prompts_input(config, prompts, images, device).expect("valid input")
}

fn prompts_json(prompts: &[TokenizedPrompt]) -> Value {
    prompts.iter().map(|p| json!({ "ids": p.ids, "image": p.image })).collect()
}

fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f64> {
    to_f64_vec(tensor).expect("readback")
}

fn param_grad<const D: usize>(param: &Param<Tensor<D>>, grads: &burn::tensor::Gradients) -> Vec<f64> {
    values(param.val().grad(grads).expect("the parameter received a gradient"))
}

#[test]
fn small_model_and_ega_gradients_match_pytorch() {
    let test = "small_model_and_ega_gradients_match_pytorch";
    let Some(python) = ega_tests::python_with("torch, safetensors.torch", test) else { return };
    let dir = std::env::temp_dir().join(format!("ega-torch-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let device = Device::flex().autodiff();
    let config = ModelConfig::small();
    let model = Embedder::new(&config, 7, &device).unwrap();
    std::fs::write(dir.join("model.safetensors"), model_to_bytes(&model).unwrap()).unwrap();

    // N = 4 captions of different lengths (padding inside the batch); M = 6 images: 4 positives
    // and 2 extra hard negatives shared by every query.
    let mut tokenizer = WordTokenizer::default();
    let captions = [
        ("a red circle", None),
        ("two blue squares left of a small green triangle", None),
        ("yellow", None),
        ("a purple star above an orange hexagon", None),
    ];
    let queries =
        tokenize_prompts(&config.prompts.query, &config.special, &captions, &mut |s| Ok(tokenizer.encode(s))).unwrap();
    let image_items: Vec<(&str, Option<usize>)> = (0..6).map(|i| ("", Some(i))).collect();
    let targets =
        tokenize_prompts(&config.prompts.target, &config.special, &image_items, &mut |s| Ok(tokenizer.encode(s)))
            .unwrap();
    let size = config.image_size();
    let pixels = uniform(6 * 3 * size * size, 0.0, 1.0, 77);
    let images = floats(pixels.iter().map(|&v| v as f32).collect(), [6, 3, size, size], &device);

    let q = model.embed(&input(&config, &queries, None, &device));
    let t = model.embed(&input(&config, &targets, Some(images), &device));
    let s = similarity_matrix(q.clone(), t.clone());
    let loss_config = LossConfig::ega(0.05, 1.0);
    let loss = contrastive_loss(s.clone(), &loss_config).unwrap();
    let loss_value = values(loss.clone())[0];
    let grads = loss.backward();
    let mut param_grads = serde_json::Map::new();
    let mini = model.as_mini().expect("a mini model");
    let lm = &mini.language;
    for (name, grad) in [
        ("language.token_embed", param_grad(&lm.token_embed, &grads)),
        ("language.blocks.3.down.weight", param_grad(&lm.blocks[3].down.weight, &grads)),
        ("language.blocks.0.attn.qkv.weight", param_grad(&lm.blocks[0].attn.qkv.weight, &grads)),
        ("language.norm.gain", param_grad(&lm.norm.gain, &grads)),
        ("projector.fc1.weight", param_grad(&mini.projector.fc1.weight, &grads)),
        ("vision.blocks.2.fc1.bias", param_grad(mini.vision.blocks[2].fc1.bias.as_ref().unwrap(), &grads)),
        ("vision.patch_embed.weight", param_grad(&model.as_mini().unwrap().vision.patch_embed.weight, &grads)),
        ("vision.pos_embed", param_grad(&mini.vision.pos_embed, &grads)),
    ] {
        param_grads.insert(name.into(), json!(grad));
    }

    // ∂L/∂S through the loss op alone, for the trained loss and two other option sets.
    let s_values = values(s.clone());
    let grad_s = |config: &LossConfig| -> Vec<f64> {
        let leaf = floats(s_values.iter().map(|&v| v as f32).collect(), [4, 6], &device).require_grad();
        let grads = contrastive_loss(leaf.clone(), config).unwrap().backward();
        values(leaf.grad(&grads).expect("a gradient reached S"))
    };
    let sum_rescale = LossConfig { rescale: Rescale::Sum, tau_h: Some(0.1), alpha: 2.0, ..LossConfig::ega(0.05, 2.0) };
    let case = json!({
        "magic": "ega-torch-parity",
        "version": 1,
        "preset": config.preset,
        "queries": prompts_json(&queries),
        "targets": prompts_json(&targets),
        "images": pixels.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        "loss": { "kind": "ega", "tau": 0.05, "alpha": 1.0, "rescale": "none" },
        "query_embeddings": values(q),
        "target_embeddings": values(t),
        "similarities": s_values,
        "loss_value": loss_value,
        "grad_s": grad_s(&loss_config),
        "param_grads": param_grads,
        "extra_losses": {
            "infonce": { "loss": { "kind": "infonce", "tau": 0.05 }, "grad_s": grad_s(&LossConfig::infonce(0.05)) },
            "ega alpha 2, tau_h 0.1, rescale sum": {
                "loss": { "kind": "ega", "tau": 0.05, "alpha": 2.0, "tau_h": 0.1, "rescale": "sum" },
                "grad_s": grad_s(&sum_rescale),
            },
        },
    });
    std::fs::write(dir.join("case.json"), serde_json::to_vec(&case).unwrap()).unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/torch_reference.py");
    let out = Command::new(&python).arg(&script).arg("parity").arg(&dir).output().expect("running the torch reference");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} parity failed:\n{stdout}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|err| panic!("bad report {stdout:?}: {err}"));
    eprintln!("torch parity, largest |ega-core − torch| (float32 both sides):");
    let report = report.as_object().expect("a JSON object");
    assert_eq!(report["parameters"].as_u64(), Some(model.num_params() as u64), "parameter counts differ");
    let mut failures = Vec::new();
    let mut compared = 0;
    for (what, diff) in report.iter().filter(|(k, _)| k.as_str() != "parameters") {
        let diff = diff.as_f64().expect("a number");
        eprintln!("  {what:<48} {diff:.2e}");
        compared += 1;
        if !(diff <= TOLERANCE) {
            failures.push(format!("{what}: {diff:.3e}"));
        }
    }
    // embeddings ×2, S, loss, ∂L/∂S ×3 and the 8 parameter gradients.
    assert_eq!(compared, 15, "the report compares fewer things than the case holds");
    assert!(failures.is_empty(), "ega-core and PyTorch differ by more than {TOLERANCE:e}: {}", failures.join(", "));
    std::fs::remove_dir_all(&dir).ok();
}
