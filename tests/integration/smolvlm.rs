//! The `smolvlm` architecture against Hugging Face transformers (issue 12).
//!
//! `python bench/hf_reference.py tiny-smolvlm DIR` builds a tiny random Idefics3 (SmolVLM) model
//! with transformers (every weight, norms and biases included, perturbed so none is trivial),
//! saves it as a Hugging Face folder and writes what transformers computes on a fixed image and
//! two prompts. ega-core loads the folder and must agree to 1e-4 (float32 both sides) on the
//! vision tower's output, the connector's output, the decoder's last hidden states for a text
//! prompt and for an image prompt (image tokens laid out as the SmolVLM processor does for one
//! global image), and the pooled embeddings; once with grouped-query attention, once without.

use std::path::Path;
use std::process::Command;

use burn::tensor::Device;
use ega_core::embed::prompts_input;
use ega_core::model::smolvlm::{Part, SmolVlm};
use ega_core::model::{Architecture, Embedder, ModelConfig};
use ega_core::pretrained::safetensors::{parse_hf_config, HfFolder, HfModel, Rename, SafetensorsSource};
use ega_core::pretrained::TensorSource;
use ega_core::prompt::{PromptConfig, SpecialTokens, TokenizedPrompt};
use ega_core::tensor_util::{floats, to_f64_vec};
use ega_tests::{assert_close, python_with};
use serde_json::Value;

/// Largest absolute difference allowed (issue 12).
const TOLERANCE: f64 = 1e-4;

fn reference(dir: &Path) -> (Value, SafetensorsSource) {
    let json: Value = serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let path = dir.join("reference.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let source =
        SafetensorsSource::from_files("reference", vec![(path.display().to_string(), bytes)], Rename::Smolvlm).unwrap();
    (json, source)
}

fn expected(source: &mut SafetensorsSource, name: &str) -> Vec<f64> {
    source
        .take(name)
        .unwrap()
        .unwrap_or_else(|| panic!("reference has {name}"))
        .data
        .iter()
        .map(|&v| v as f64)
        .collect()
}

fn ids(json: &Value, key: &str) -> Vec<u32> {
    json[key].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

fn check(gqa: bool) {
    let test = if gqa { "smolvlm_matches_transformers_gqa" } else { "smolvlm_matches_transformers_mha" };
    let Some(python) = python_with("torch, transformers, safetensors", test) else { return };
    let dir = std::env::temp_dir().join(format!("ega-{test}-{}", std::process::id()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/hf_reference.py");
    let flag = if gqa { "--gqa" } else { "--no-gqa" };
    let out = Command::new(&python)
        .arg(&script)
        .args(["tiny-smolvlm", dir.to_str().unwrap(), flag, "--seed", "3"])
        .output()
        .expect("run hf_reference.py");
    assert!(out.status.success(), "hf_reference.py failed:\n{}", String::from_utf8_lossy(&out.stderr));

    let device = Device::flex();
    let mut folder = HfFolder::open(&dir).expect("ega-core reads the transformers folder");
    let HfModel::Smolvlm { config: smolvlm, image_token_id } = folder.model.clone() else {
        panic!("an Idefics3 folder is a smolvlm model")
    };
    assert_eq!(smolvlm.text_config.num_key_value_heads, if gqa { 2 } else { 4 });
    assert_eq!(smolvlm.text_config.rope_theta, 50_000.0);
    let (model, report) = SmolVlm::build(&smolvlm, Some(&mut folder.source), &Part::ALL, 0, &device).expect("build");
    assert_eq!(report.fresh, 0, "every tensor comes from the checkpoint");

    let (json, mut reference) = reference(&dir);
    assert_eq!(image_token_id, json["image_token_id"].as_u64().map(|v| v as u32));
    assert_eq!(report.loaded_params as u64, json["parameters"].as_u64().unwrap(), "every parameter loaded");
    let size = smolvlm.vision_config.image_size;
    let pixels: Vec<f32> = expected(&mut reference, "pixels").iter().map(|&v| v as f32).collect();
    let image = floats(pixels, [1, 3, size, size], &device);

    let vision = model.vision_model.forward(image.clone());
    let vision_values = to_f64_vec(vision.clone()).unwrap();
    assert_close("vision tower output", &vision_values, &expected(&mut reference, "vision_out"), TOLERANCE, 0.0);
    let connector = to_f64_vec(model.connector.forward(vision)).unwrap();
    assert_close("connector output", &connector, &expected(&mut reference, "connector_out"), TOLERANCE, 0.0);

    // The embedder's own prompt layout: one `<image>` id in the prompt becomes
    // `<fake_token_around_image> <global-img> <image>×K <fake_token_around_image>`.
    let image_id = image_token_id.unwrap();
    let special = SpecialTokens {
        pad: 0,
        bos: 1,
        eos: 2,
        image: image_id,
        image_around: Some(json["fake_token_around_image_id"].as_u64().unwrap() as u32),
        image_global: Some(json["global_img_token_id"].as_u64().unwrap() as u32),
    };
    let config = ModelConfig {
        preset: "tiny-hf".into(),
        architecture: Architecture::Smolvlm(smolvlm.clone()),
        special,
        prompts: PromptConfig::default(),
    };
    config.validate().unwrap();
    let full_image_ids = ids(&json, "image_ids");
    let mut collapsed = Vec::new();
    for &id in &full_image_ids {
        let wrapper = Some(id) == special.image_around || Some(id) == special.image_global;
        if id == image_id {
            if collapsed.last() != Some(&image_id) {
                collapsed.push(image_id);
            }
        } else if !wrapper {
            collapsed.push(id);
        }
    }
    let embedder = Embedder::Smolvlm(model);
    let text_prompt = TokenizedPrompt { ids: ids(&json, "text_ids"), image: None };
    let image_prompt = TokenizedPrompt { ids: collapsed, image: Some(0) };

    let text_input = prompts_input(&config, &[text_prompt], None, &device).unwrap();
    let text_hidden = to_f64_vec(embedder.hidden_states(&text_input)).unwrap();
    assert_close(
        "text prompt last hidden states",
        &text_hidden,
        &expected(&mut reference, "text_hidden"),
        TOLERANCE,
        0.0,
    );
    let image_input = prompts_input(&config, &[image_prompt.clone()], Some(image.clone()), &device).unwrap();
    assert_eq!(image_input.seq_len, full_image_ids.len(), "the processor's layout of one global image");
    let image_hidden = to_f64_vec(embedder.hidden_states(&image_input)).unwrap();
    assert_close(
        "image prompt last hidden states",
        &image_hidden,
        &expected(&mut reference, "image_hidden"),
        TOLERANCE,
        0.0,
    );
    let text_embedding = to_f64_vec(embedder.embed(&text_input)).unwrap();
    assert_close("text embedding", &text_embedding, &expected(&mut reference, "text_embedding"), TOLERANCE, 0.0);
    let image_embedding = to_f64_vec(embedder.embed(&image_input)).unwrap();
    assert_close("image embedding", &image_embedding, &expected(&mut reference, "image_embedding"), TOLERANCE, 0.0);

    // A batch of both, padded: the padded row's embedding is unchanged.
    let both = prompts_input(
        &config,
        &[TokenizedPrompt { ids: ids(&json, "text_ids"), image: None }, image_prompt],
        Some(image),
        &device,
    )
    .unwrap();
    let batch = to_f64_vec(embedder.embed(&both)).unwrap();
    let d = smolvlm.text_config.hidden_size;
    assert_close("padded text row", &batch[..d], &text_embedding, TOLERANCE, 0.0);
    assert_close("image row", &batch[d..], &image_embedding, TOLERANCE, 0.0);

    // The model's own export is a Hugging Face checkpoint again: it reloads to the same outputs.
    let bytes = ega_core::weights::model_to_bytes(&embedder).unwrap();
    let reloaded = ega_core::weights::model_from_bytes(&config, bytes, &device, "exported").unwrap();
    let again = to_f64_vec(reloaded.embed(&text_input)).unwrap();
    assert_close("reloaded export", &again, &text_embedding, 1e-6, 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn smolvlm_matches_transformers_gqa() {
    check(true);
}

#[test]
fn smolvlm_matches_transformers_mha() {
    check(false);
}

/// Writes a folder with `config` as config.json and `tensors` as model.safetensors.
fn folder_with(
    name: &str,
    config: &Value,
    tensors: &[(String, ega_core::pretrained::HostTensor)],
) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ega-smolvlm-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), serde_json::to_vec(config).unwrap()).unwrap();
    std::fs::write(dir.join("model.safetensors"), ega_core::store::safetensors::to_bytes(tensors).unwrap()).unwrap();
    dir
}

fn tiny_hf_config() -> Value {
    serde_json::json!({
        "model_type": "idefics3",
        "scale_factor": 2,
        "image_token_id": 100,
        "vision_config": { "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "image_size": 16, "patch_size": 4, "hidden_act": "gelu_pytorch_tanh" },
        "text_config": { "model_type": "llama", "vocab_size": 128, "hidden_size": 16, "intermediate_size": 32,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "rms_norm_eps": 1e-5,
            "max_position_embeddings": 64 }
    })
}

/// Bad checkpoints are clear errors naming what is wrong, never panics.
#[test]
fn bad_hf_folders_are_clear_errors() {
    let device = Device::flex();
    let config = tiny_hf_config();
    let HfModel::Smolvlm { config: smolvlm, .. } = parse_hf_config(&serde_json::to_vec(&config).unwrap(), "c").unwrap()
    else {
        panic!("smolvlm")
    };
    let (model, _) = SmolVlm::build(&smolvlm, None, &[], 1, &device).unwrap();
    let tensors = model.export().unwrap();

    // A complete folder loads, and a tensor missing from it is named.
    let good = folder_with("good", &config, &tensors);
    let mut folder = HfFolder::open(&good).unwrap();
    SmolVlm::build(&smolvlm, Some(&mut folder.source), &Part::ALL, 0, &device).unwrap();
    let missing: Vec<_> = tensors.iter().filter(|(n, _)| n != "text_model.norm.weight").cloned().collect();
    let dir = folder_with("missing", &config, &missing);
    let mut folder = HfFolder::open(&dir).unwrap();
    let err = SmolVlm::build(&smolvlm, Some(&mut folder.source), &Part::ALL, 0, &device).err().unwrap().to_string();
    assert!(err.contains("text_model.norm.weight"), "{err}");

    // A tensor of the wrong shape: both shapes named.
    let mut wrong = tensors.clone();
    let q = wrong.iter_mut().find(|(n, _)| n == "text_model.layers.0.self_attn.q_proj.weight").unwrap();
    q.1 = ega_core::pretrained::HostTensor { shape: vec![8, 16], data: vec![0.0; 128] };
    let dir = folder_with("wrong", &config, &wrong);
    let mut folder = HfFolder::open(&dir).unwrap();
    let err = SmolVlm::build(&smolvlm, Some(&mut folder.source), &Part::ALL, 0, &device).err().unwrap().to_string();
    assert!(err.contains("q_proj.weight") && err.contains("[8, 16]") && err.contains("[16, 16]"), "{err}");

    // Only the decoder from the checkpoint, the vision tower and connector fresh.
    let text_only: Vec<_> = tensors.iter().filter(|(n, _)| n.starts_with("text_model.")).cloned().collect();
    let dir = folder_with("text-only", &config, &text_only);
    let mut folder = HfFolder::open(&dir).unwrap();
    let (partial, report) = SmolVlm::build(&smolvlm, Some(&mut folder.source), &[Part::Text], 5, &device).unwrap();
    assert!(report.fresh > 0 && report.loaded == text_only.len());
    let a = to_f64_vec(partial.text_model.norm.weight.val()).unwrap();
    let b = to_f64_vec(model.text_model.norm.weight.val()).unwrap();
    assert_eq!(a, b, "the decoder came from the checkpoint");

    // A truncated safetensors file.
    let bytes = std::fs::read(good.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let err = HfFolder::open(&dir).err().unwrap().to_string();
    assert!(err.contains("model.safetensors"), "{err}");

    // A config of an unknown architecture, and one that is not a model config at all.
    let mut other = config.clone();
    other["model_type"] = Value::from("mamba");
    let err = parse_hf_config(&serde_json::to_vec(&other).unwrap(), "x/config.json").unwrap_err().to_string();
    assert!(err.contains("mamba") && err.contains("x/config.json"), "{err}");
    let err = parse_hf_config(b"{\"hello\": 1}", "y/config.json").unwrap_err().to_string();
    assert!(err.contains("model_type"), "{err}");

    // A BF16 / F16 checkpoint reads as f32 (values representable in bf16 compare exactly).
    let value: f32 = 0.375;
    let mut bf16 = Vec::new();
    bf16.extend_from_slice(&half::bf16::from_f32(value).to_le_bytes());
    bf16.extend_from_slice(&half::bf16::from_f32(-2.0).to_le_bytes());
    let header = br#"{"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}"#;
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header);
    file.extend_from_slice(&bf16);
    let mut source = SafetensorsSource::from_files("bf16", vec![("bf16".into(), file)], Rename::Smolvlm).unwrap();
    assert_eq!(source.take("w").unwrap().unwrap().data, vec![0.375, -2.0]);
    for dir in [good, dir] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A Llama checkpoint's `model.*` names become `text_model.*`.
#[test]
fn llama_names_map_to_text_model() {
    let mut file = Vec::new();
    let header = br#"{"model.norm.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    file.extend_from_slice(&(header.len() as u64).to_le_bytes());
    file.extend_from_slice(header);
    file.extend_from_slice(&1.5f32.to_le_bytes());
    let mut source = SafetensorsSource::from_files("llama", vec![("llama".into(), file)], Rename::Llama).unwrap();
    assert_eq!(source.take("text_model.norm.weight").unwrap().unwrap().data, vec![1.5]);
}

/// The committed tiny `smolvlm` bundle (`tests/fixtures/smolvlm-tiny/`) embeds its texts and images
/// natively as recorded in its `expected.json`; `web/tests/smolvlm.mjs` holds the wasm build to
/// the same numbers. `EGA_WRITE_FIXTURES=1` rewrites the fixture (a fresh random tiny model).
#[test]
fn committed_tiny_smolvlm_bundle_embeds_as_recorded() {
    use ega_core::embed::{embed_captions, prompts_input};
    use ega_core::prompt::tokenize_prompts;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/smolvlm-tiny");
    let device = Device::flex();
    let texts = ["a red circle", "two blue squares", "café 👍🏽"];
    let size = 16;
    let pixels = ega_tests::uniform(2 * 3 * size * size, 0.0, 1.0, 11);
    let embed = |bundle: &ega_core::bundle::Bundle| -> (Vec<f64>, Vec<f64>) {
        let config = &bundle.config.model;
        let t = embed_captions(&bundle.model, config, &bundle.tokenizer, &texts, 8, &device).unwrap();
        let items: Vec<(&str, Option<usize>)> = (0..2).map(|i| ("", Some(i))).collect();
        let prompts =
            tokenize_prompts(&config.prompts.target, &config.special, &items, &mut |s| bundle.tokenizer.encode(s))
                .unwrap();
        let images = floats(pixels.iter().map(|&v| v as f32).collect(), [2, 3, size, size], &device);
        let input = prompts_input(config, &prompts, Some(images), &device).unwrap();
        (to_f64_vec(t).unwrap(), to_f64_vec(bundle.model.embed(&input)).unwrap())
    };
    if std::env::var("EGA_WRITE_FIXTURES").is_ok_and(|v| v == "1") {
        let HfModel::Smolvlm { config: smolvlm, .. } =
            parse_hf_config(&serde_json::to_vec(&tiny_hf_config()).unwrap(), "tiny").unwrap()
        else {
            panic!("smolvlm")
        };
        let corpus = ["a red circle", "two blue squares", "a green triangle left of a star"];
        let tokenizer = ega_core::tokenizer::Tokenizer::train(corpus.iter(), 300).unwrap();
        let mut smolvlm = smolvlm;
        smolvlm.text_config.vocab_size = tokenizer.vocab_size();
        let config = ModelConfig {
            preset: "tiny-smolvlm".into(),
            architecture: Architecture::Smolvlm(smolvlm),
            special: SpecialTokens::default(),
            prompts: PromptConfig::default(),
        };
        let model = Embedder::new(&config, 7, &device).unwrap();
        ega_core::bundle::save(
            &dir,
            &model,
            &config,
            &tokenizer,
            &ega_core::loss::LossConfig::default(),
            "none (random weights: a test fixture)",
            0,
            &serde_json::json!({}),
            ega_core::store::StoredDtype::F32,
        )
        .unwrap();
        let bundle = ega_core::bundle::load(&dir, &device).unwrap();
        let (t, i) = embed(&bundle);
        let expected = serde_json::json!({ "texts": texts, "image_size": size, "pixels": pixels,
            "text_embeddings": t, "image_embeddings": i, "dim": config.embed_dim() });
        std::fs::write(dir.join("expected.json"), serde_json::to_string(&expected).unwrap()).unwrap();
    }
    let bundle = ega_core::bundle::load(&dir, &device).expect("the committed tiny smolvlm bundle loads");
    assert_eq!(bundle.config.model.architecture_name(), "smolvlm");
    let expected: Value = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let numbers =
        |key: &str| -> Vec<f64> { expected[key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect() };
    let (t, i) = embed(&bundle);
    assert_close("text embeddings", &t, &numbers("text_embeddings"), 1e-5, 0.0);
    assert_close("image embeddings", &i, &numbers("image_embeddings"), 1e-5, 0.0);
}
