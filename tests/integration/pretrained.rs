//! The real SmolLM2-135M-Instruct (Q4_1 GGUF from `bash scripts/setup-pretrained.sh`) in ega-core's
//! Llama decoder against transformers loading the same GGUF (`gguf_file=`, which dequantizes the
//! same blocks): final hidden states and last-position logits on three prompts agree to 1e-3
//! relative, and the tied head's top next token after "The capital of France is" is " Paris".
//! SKIPPED loudly without the checkpoint or transformers; failing under `REQUIRE_PRETRAINED=1` /
//! `REQUIRE_TORCH=1`.

use std::path::Path;
use std::process::Command;

use burn::tensor::Device;
use ega_core::model::smolvlm::LlamaModel;
use ega_core::pretrained::safetensors::{Rename, SafetensorsSource};
use ega_core::pretrained::TensorSource;
use ega_core::tensor_util::{ints, to_f64_vec};
use ega_tests::{pretrained_gguf, python_with};
use serde_json::Value;

/// Relative tolerance: the largest difference over the largest magnitude of the reference.
const RELATIVE: f64 = 1e-3;

fn relative_difference(actual: &[f64], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len());
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
    let worst = actual.iter().zip(expected).fold(0.0f64, |m, (a, e)| m.max((a - e).abs()));
    worst / scale
}

#[test]
fn smollm2_gguf_decoder_matches_transformers() {
    let test = "smollm2_gguf_decoder_matches_transformers";
    let Some(gguf) = pretrained_gguf(test) else { return };
    let Some(python) = python_with("torch, transformers, gguf, accelerate", test) else { return };
    let out_dir = std::env::temp_dir().join(format!("ega-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("reference.safetensors");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/hf_reference.py");
    let run = Command::new(&python)
        .arg(&script)
        .args(["--threads", "2", "gguf-decoder", gguf.to_str().unwrap(), out.to_str().unwrap()])
        .output()
        .expect("run hf_reference.py");
    assert!(run.status.success(), "hf_reference.py failed:\n{}", String::from_utf8_lossy(&run.stderr));
    let info: Value = serde_json::from_slice(&std::fs::read(out_dir.join("reference.json")).unwrap()).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let mut reference =
        SafetensorsSource::from_files("reference", vec![(out.display().to_string(), bytes)], Rename::Smolvlm).unwrap();

    let device = Device::flex();
    let started = std::time::Instant::now();
    let mut checkpoint = ega_core::pretrained::open(&gguf).expect("open the GGUF");
    let config = checkpoint.text_config().clone();
    assert_eq!((config.num_hidden_layers, config.hidden_size, config.num_attention_heads), (30, 576, 9));
    assert_eq!((config.num_key_value_heads, config.intermediate_size, config.vocab_size), (3, 1536, 49152));
    assert!(config.tie_word_embeddings);
    let (model, report) = LlamaModel::from_source(&config, checkpoint.source.as_mut(), &device).expect("build");
    eprintln!(
        "loaded {} tensors ({} parameters) from {} in {:.1} s",
        report.loaded,
        report.loaded_params,
        gguf.display(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(report.loaded_params as u64, info["parameters"].as_u64().unwrap(), "every parameter of the decoder");

    for (k, prompt) in info["prompts"].as_array().unwrap().iter().enumerate() {
        let ids: Vec<i64> = prompt["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let l = ids.len();
        let hidden = model.forward_ids(ints(ids.clone(), [1, l], &device));
        let logits = model.tied_logits(hidden.clone());
        let vocab = config.vocab_size;
        let hidden_values = to_f64_vec(hidden).unwrap();
        let last_logits: Vec<f64> = to_f64_vec(logits).unwrap()[(l - 1) * vocab..].to_vec();
        let take = |r: &mut SafetensorsSource, name: &str| -> Vec<f64> {
            r.take(name).unwrap().unwrap().data.iter().map(|&v| v as f64).collect()
        };
        let h = relative_difference(&hidden_values, &take(&mut reference, &format!("hidden_{k}")));
        let g = relative_difference(&last_logits, &take(&mut reference, &format!("logits_last_{k}")));
        eprintln!("prompt {k} {:?}: relative difference hidden {h:.2e}, logits {g:.2e}", prompt["text"]);
        assert!(h <= RELATIVE, "prompt {k}: final hidden states differ by {h:e} (relative) from transformers'");
        assert!(g <= RELATIVE, "prompt {k}: last-position logits differ by {g:e} (relative)");
        if k == 0 {
            assert_eq!(ids, vec![504, 3575, 282, 4649, 314], "The capital of France is");
            let best =
                last_logits.iter().enumerate().fold((0, f64::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
            let paris = prompt["top5"][0][1].as_u64().unwrap() as usize;
            assert_eq!(prompt["top5"][0][0].as_str(), Some(" Paris"));
            assert_eq!(best.0, paris, "the top next token is \" Paris\" (logit {:.2})", best.1);
        }
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}
