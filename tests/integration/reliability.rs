//! Regression tests of issue 16 (reliability): bad files are refused on load with a message
//! naming the file, the field and the bound, never with a panic, a hang or a silent wrong answer.
//! Each test names the case of `shared/reliability/repro.sh` it guards.

use ega_core::index::{decode_bin, encode_bin};
use ega_core::store::StoredDtype;

/// A `tiny` bundle saved in a fresh temp folder `name`: (folder, config, tokenizer, saved config).
fn saved_tiny_bundle(name: &str) -> (std::path::PathBuf, ModelConfig, Tokenizer, bundle::BundleConfig) {
    let config = ModelConfig::tiny();
    let model = Embedder::new(&config, 3, &burn::tensor::Device::flex()).unwrap();
    let tokenizer = tiny_tokenizer(&config, "a red circle");
    let dir = temp_dir(name);
    let saved = bundle::save(
        &dir,
        &model,
        &config,
        &tokenizer,
        &Default::default(),
        "shapes",
        1,
        &serde_json::Value::Null,
        Default::default(),
    )
    .unwrap();
    (dir, config, tokenizer, saved)
}

/// Issue 16, `nan_row`: a NaN (or ±Inf) in index.bin's rows is refused on load, naming the row.
#[test]
fn index_rows_with_nan_or_inf_are_refused_naming_the_row() {
    let rows: Vec<f32> = (0..12).map(|v| v as f32 / 16.0).collect();
    for dtype in [StoredDtype::F32, StoredDtype::F16] {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut damaged = rows.clone();
            damaged[9] = bad; // row 2, column 1 of 3 rows of 4
            let bin = encode_bin(&damaged, 3, 4, dtype, "0123456789abcdef").unwrap();
            let err = decode_bin(&bin, "ix/index.bin").unwrap_err().to_string();
            assert!(err.contains("ix/index.bin") && err.contains("row 2") && err.contains("non-finite"), "{err}");
        }
    }
}

use ega_core::bundle;
use ega_core::model::{Embedder, LlamaConfig, ModelConfig, SiglipConfig, SmolVlmConfig};
use ega_core::store::fnv_hex;
use ega_core::tokenizer::Tokenizer;
use ega_core::weights::{model_from_bytes, model_id, model_to_bytes};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ega-reliability-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tiny_tokenizer(config: &ModelConfig, extra: &str) -> Tokenizer {
    let mut corpus = ega_core::data::shapes::caption_vocabulary();
    corpus.push(extra.into());
    Tokenizer::train(corpus.iter(), config.vocab_size()).unwrap()
}

/// A tiny mini model's weights as safetensors: (header, data, first tensor name in name order).
fn tiny_weights() -> (ModelConfig, Vec<u8>) {
    let config = ModelConfig::tiny();
    let model = Embedder::new(&config, 3, &burn::tensor::Device::flex()).unwrap();
    (config, model_to_bytes(&model).unwrap())
}

fn split_safetensors(bytes: &[u8]) -> (serde_json::Map<String, serde_json::Value>, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&bytes[8..8 + n]).unwrap(), bytes[8 + n..].to_vec())
}

fn join_safetensors(header: &serde_json::Map<String, serde_json::Value>, data: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(header).unwrap();
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(data);
    out
}

const TENSOR: &str = "language.blocks.0.attn.out.weight";

/// Issue 16, `nan_weights`: NaN or ±Inf weights are refused on load, naming the tensor (they made
/// every embedding NaN and eval report R@1 = 100%).
#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let (config, bytes) = tiny_weights();
    let device = burn::tensor::Device::flex();
    assert!(model_from_bytes(&config, bytes.clone(), &device, "m/model.safetensors").is_ok());
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let (header, mut data) = split_safetensors(&bytes);
        let start = header[TENSOR]["data_offsets"][0].as_u64().unwrap() as usize + 8;
        data[start..start + 4].copy_from_slice(&bad.to_le_bytes());
        let err = model_from_bytes(&config, join_safetensors(&header, &data), &device, "m/model.safetensors")
            .err()
            .expect("non-finite weights load")
            .to_string();
        assert!(err.contains("m/model.safetensors") && err.contains(TENSOR) && err.contains("non-finite"), "{err}");
    }
}

/// Issue 16, `bf16`: a tensor stored as BF16 (or any non-F32 dtype) in a mini model's weights is
/// a clear error naming the tensor and dtype, not a matmul panic.
#[test]
fn non_f32_weights_are_refused_naming_the_tensor_and_dtype() {
    let (config, bytes) = tiny_weights();
    let device = burn::tensor::Device::flex();
    for dtype in ["BF16", "F64", "I32"] {
        let (mut header, data) = split_safetensors(&bytes);
        header[TENSOR]["dtype"] = dtype.into();
        let result = std::panic::catch_unwind(|| {
            model_from_bytes(&config, join_safetensors(&header, &data), &device, "m/model.safetensors")
                .err()
                .map(|e| e.to_string())
        });
        let err = result.expect("loading panicked").expect("a BF16 tensor loads");
        assert!(err.contains(TENSOR) && err.contains(dtype), "{err}");
    }
}

/// Issue 16, `cfg_overflow` / `cfg_huge_alloc`: sizes from a config are bounded before anything
/// is allocated, with the bound in the message; the real SmolLM2 and a SmolVLM-2.2B-sized config
/// still validate.
#[test]
fn config_sizes_are_bounded_with_the_bound_in_the_message() {
    let mut bad = ModelConfig::tiny();
    bad.mini_mut().unwrap().vision.image_size = 1 << 40;
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("vision.image_size") && err.contains("4096"), "{err}");
    let mut bad = ModelConfig::tiny();
    bad.mini_mut().unwrap().language.width = 1 << 40;
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("language.width") && err.contains("65536"), "{err}");
    let mut bad = ModelConfig::tiny();
    bad.mini_mut().unwrap().language.layers = 1 << 20;
    assert!(bad.validate().unwrap_err().to_string().contains("language.layers"));
    // Each size in bounds, the product not: 2^24 × 65 536 embedding values.
    let mut bad = ModelConfig::tiny();
    let mini = bad.mini_mut().unwrap();
    (mini.language.vocab_size, mini.language.width, mini.language.heads) = (1 << 24, 65_536, 256);
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("parameter count") && err.contains(&(1u64 << 36).to_string()), "{err}");
    // Attention scores of a 2^20-position prompt.
    let mut bad = ModelConfig::tiny();
    bad.mini_mut().unwrap().language.max_seq_len = 1 << 20;
    assert!(bad.validate().unwrap_err().to_string().contains("max_seq_len"));
    // A bundle config with such a size is refused when it is parsed.
    let mut json = serde_json::json!({"format_version": 1, "ega_core_version": "x", "model_id": "0000000000000000",
        "model": ModelConfig::tiny(), "loss": ega_core::loss::LossConfig::default(), "data": "shapes", "steps": 1});
    json["model"]["vision"]["image_size"] = (1u64 << 40).into();
    let err = bundle::parse_config(&serde_json::to_vec(&json).unwrap(), "m/config.json").err().unwrap().to_string();
    assert!(err.contains("m/config.json") && err.contains("vision.image_size"), "{err}");

    let smollm2 = LlamaConfig {
        vocab_size: 49152,
        hidden_size: 576,
        intermediate_size: 1536,
        num_hidden_layers: 30,
        num_attention_heads: 9,
        num_key_value_heads: 3,
        rms_norm_eps: 1e-5,
        rope_theta: 100_000.0,
        max_position_embeddings: 8192,
        tie_word_embeddings: true,
    };
    smollm2.validate().expect("SmolLM2-135M validates");
    let text_config = LlamaConfig {
        vocab_size: 49280,
        hidden_size: 2048,
        intermediate_size: 8192,
        num_hidden_layers: 24,
        num_attention_heads: 32,
        num_key_value_heads: 32,
        rope_theta: 273_768.0,
        max_position_embeddings: 16384,
        tie_word_embeddings: false,
        ..smollm2
    };
    let vision_config = SiglipConfig {
        hidden_size: 1152,
        intermediate_size: 4304,
        num_hidden_layers: 27,
        num_attention_heads: 16,
        num_channels: 3,
        image_size: 378,
        patch_size: 14,
        layer_norm_eps: 1e-6,
        stem: None,
    };
    let smolvlm = SmolVlmConfig { vision_config, text_config, scale_factor: 3, max_seq_len: 8192, lora: None };
    smolvlm.validate().expect("a SmolVLM-2.2B-sized config validates");
    let mut bad = smolvlm.clone();
    bad.text_config.hidden_size = 1 << 40;
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("text_config.hidden_size") && err.contains("65536"), "{err}");
    let mut bad = smolvlm;
    bad.vision_config.image_size = 1 << 40;
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("vision_config.image_size") && err.contains("4096"), "{err}");
}

/// Issue 16, `tok_oob`: a tokenizer whose ids exceed the model's vocabulary (with as many tokens
/// as before, so its count fits) is refused when a bundle loads, not a panic in the embedding.
#[test]
fn a_tokenizer_with_ids_past_the_vocabulary_is_refused() {
    let device = burn::tensor::Device::flex();
    let (dir, _, tokenizer, _) = saved_tiny_bundle("tok-oob");
    let mut json: serde_json::Value = serde_json::from_str(&tokenizer.to_json().unwrap()).unwrap();
    for (_, id) in json["model"]["vocab"].as_object_mut().unwrap() {
        if id.as_u64().unwrap() >= 4 {
            *id = (id.as_u64().unwrap() + 100_000).into();
        }
    }
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_vec(&json).unwrap()).unwrap();
    // Without the tokenizer hash (a bundle written before it), the id range still catches it.
    let mut bundle_config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    bundle_config.as_object_mut().unwrap().remove("tokenizer_hash");
    std::fs::write(dir.join("config.json"), serde_json::to_vec(&bundle_config).unwrap()).unwrap();
    let err = bundle::load(&dir, &device).err().expect("a tokenizer with ids past the vocabulary loads").to_string();
    assert!(err.contains("tokenizer.json") && err.contains("vocab_size") && err.contains("ids up to"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 16, `tok_swap`: another bundle's tokenizer.json is refused by the tokenizer hash the
/// bundle records (the model id is unchanged, so committed indexes keep verifying), and the
/// committed bundles record the hash of their own tokenizer.
#[test]
fn a_swapped_tokenizer_is_refused_by_its_hash() {
    let device = burn::tensor::Device::flex();
    let (dir, config, tokenizer, saved) = saved_tiny_bundle("tok-swap");
    let json = tokenizer.to_json().unwrap();
    assert_eq!(saved.tokenizer_hash.as_deref(), Some(fnv_hex(&[json.as_bytes()]).as_str()));
    assert!(bundle::load(&dir, &device).is_ok());
    let other = tiny_tokenizer(&config, "zebra quokka axolotl narwhal");
    assert_ne!(other.to_json().unwrap(), json);
    std::fs::write(dir.join("tokenizer.json"), other.to_json().unwrap()).unwrap();
    let err = bundle::load(&dir, &device).err().expect("a swapped tokenizer loads").to_string();
    assert!(err.contains("tokenizer.json differs from the one this bundle was saved with"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);

    let assets = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets");
    for name in ["openmoji", "shapes", "lab"] {
        let model = assets.join(name).join("model");
        let config = bundle::parse_config(&std::fs::read(model.join("config.json")).unwrap(), name).unwrap();
        let tokenizer = std::fs::read(model.join("tokenizer.json")).unwrap();
        assert_eq!(config.tokenizer_hash, Some(fnv_hex(&[&tokenizer])), "assets/{name}/model");
    }
}

/// Issue 16, `model_id_nondet`: the same weights saved twice give the same bytes, so the same
/// model id (burn-store's metadata came from a HashMap, in a random key order).
#[test]
fn the_same_weights_give_the_same_bytes_and_model_id() {
    let config = ModelConfig::tiny();
    let model = Embedder::new(&config, 3, &burn::tensor::Device::flex()).unwrap();
    let first = model_to_bytes(&model).unwrap();
    for _ in 0..6 {
        let again = model_to_bytes(&model).unwrap();
        assert!(again == first, "two saves of one model differ");
        assert_eq!(model_id(&again, &config).unwrap(), model_id(&first, &config).unwrap());
    }
}

/// Issue 16, `fifo` / `devzero`: only regular files are read (a FIFO blocked forever, /dev/zero
/// read until memory ran out), and every read is capped, with the cap in the message.
#[test]
fn only_regular_files_are_read_and_reads_are_capped() {
    use ega_core::fs::{read_regular, MAX_IMAGE};
    let dir = temp_dir("fs");
    let err = read_regular(std::path::Path::new("/dev/zero"), MAX_IMAGE).unwrap_err().to_string();
    assert!(err.contains("/dev/zero") && err.contains("not a regular file"), "{err}");
    let fifo = dir.join("f.png");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().map(|s| s.success()).unwrap_or(false);
    if made {
        let err = read_regular(&fifo, MAX_IMAGE).unwrap_err().to_string();
        assert!(err.contains("f.png") && err.contains("not a regular file"), "{err}");
        // The loaders use it: a FIFO as index.bin fails at once.
        assert!(std::process::Command::new("mkfifo").arg(dir.join("index.bin")).status().unwrap().success());
        let err = ega_core::index::Index::load(&dir).err().unwrap().to_string();
        assert!(err.contains("index.bin") && err.contains("not a regular file"), "{err}");
    }
    let err = read_regular(&dir, MAX_IMAGE).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
    std::fs::write(dir.join("big.png"), vec![0u8; 2000]).unwrap();
    let err = read_regular(&dir.join("big.png"), 1000).unwrap_err().to_string();
    assert!(err.contains("big.png") && err.contains("2000") && err.contains("1000-byte limit"), "{err}");
    assert_eq!(read_regular(&dir.join("big.png"), 2000).unwrap().len(), 2000);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 16, `caption_10mb`: a huge caption is cut by characters before it is tokenized (a 100 MB
/// caption was tokenized whole: 5 GB and an abort).
#[test]
fn huge_captions_are_cut_before_tokenizing() {
    use ega_core::prompt::{encode_prompt, SpecialTokens, MAX_TEXT_CHARS};
    let caption = "a red circle ".repeat(200_000); // 2.6 M characters
    let mut longest = 0;
    let mut encode = |piece: &str| {
        longest = longest.max(piece.chars().count());
        Ok(vec![7u32])
    };
    let special = SpecialTokens::default();
    encode_prompt("{text}", &caption, false, &special, &mut encode).unwrap();
    assert!(longest <= MAX_TEXT_CHARS, "{longest} characters reached the tokenizer");
    // Multi-byte characters are cut on a character boundary.
    let wide = "é".repeat(MAX_TEXT_CHARS + 5);
    assert_eq!(ega_core::prompt::cut_text(&wide).chars().count(), MAX_TEXT_CHARS);
}

/// A tiny run's state at `step`, and a trainer whose (empty) optimizer state a checkpoint holds.
fn tiny_run_state(step: usize) -> (ega_core::checkpoint::RunState, ega_core::train::Trainer) {
    use ega_core::checkpoint::{RunState, FORMAT_VERSION};
    let config = ModelConfig::tiny();
    let train = ega_core::train::TrainConfig::default();
    let loss = ega_core::loss::LossConfig::default();
    let model = Embedder::new(&config, 3, &burn::tensor::Device::flex().autodiff()).unwrap();
    let trainer = ega_core::train::Trainer::new(model, train.clone(), loss.clone(), step).unwrap();
    let state = RunState {
        format_version: FORMAT_VERSION,
        ega_core_version: ega_core::VERSION.into(),
        step,
        model: config,
        loss,
        train,
        data: "shapes".into(),
        stages: vec![],
        options: Default::default(),
        command: vec![],
    };
    (state, trainer)
}

/// Issue 16, `enospc`: temp files and folders of writers that died are removed (a full disk
/// stayed full of them and every resume failed); a damaged latest checkpoint (here its optimizer
/// state, named in the note) falls back to the previous one, which saving keeps for that.
#[test]
fn a_damaged_latest_checkpoint_falls_back_to_the_previous_one() {
    use ega_core::checkpoint::{load_latest, mark_latest, remove_stale_temps, save};
    let run = temp_dir("fallback");
    let device = burn::tensor::Device::flex();
    let tokenizer = tiny_tokenizer(&ModelConfig::tiny(), "a red circle");
    let save_step = |step: usize| {
        let (state, trainer) = tiny_run_state(step);
        save(&run, &state, trainer.model(), &trainer.optimizer_bytes().unwrap(), &tokenizer).unwrap()
    };
    let step = |name: &str| run.join("checkpoints").join(name);
    save_step(1);
    save_step(2);
    assert!(step("step-000001").is_dir() && step("step-000002").is_dir(), "the previous checkpoint is kept");
    let loaded = load_latest(&run, &device).unwrap();
    assert_eq!((loaded.state.step, loaded.passed_over.len()), (2, 0));

    std::fs::write(step("step-000002/optimizer.bin"), b"not an optimizer state").unwrap();
    let loaded = load_latest(&run, &device).unwrap();
    assert_eq!(loaded.state.step, 1, "falls back to the intact checkpoint");
    assert_eq!(loaded.passed_over.len(), 1);
    let why = &loaded.passed_over[0];
    assert!(why.contains("step-000002/optimizer.bin") && why.contains("optimizer state"), "{why}");

    // Resumed from step 1 (`latest` marked), the next save keeps step 1 and drops the damaged 2.
    mark_latest(&run, &loaded.folder).unwrap();
    save_step(3);
    assert!(step("step-000001").is_dir() && step("step-000003").is_dir() && !step("step-000002").exists());

    // A damaged `latest` file: the newest checkpoint folder that loads.
    std::fs::write(run.join("checkpoints/latest"), "../../elsewhere").unwrap();
    let loaded = load_latest(&run, &device).unwrap();
    assert_eq!(loaded.state.step, 3);
    assert!(loaded.passed_over[0].contains("latest"), "{:?}", loaded.passed_over);

    // Leftovers of dead writers go; nothing else does.
    std::fs::create_dir_all(step("step-000004.tmp-4242")).unwrap();
    std::fs::write(step("step-000004.tmp-4242/model.safetensors"), vec![0u8; 4096]).unwrap();
    std::fs::write(run.join("metrics.tmp-4242"), "{}").unwrap();
    std::fs::write(run.join("metrics.jsonl"), "{}\n").unwrap();
    let removed = remove_stale_temps(&run);
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(!step("step-000004.tmp-4242").exists() && !run.join("metrics.tmp-4242").exists());
    assert!(run.join("metrics.jsonl").exists() && step("step-000003").is_dir());

    // Every checkpoint damaged: a clear error naming each.
    for name in ["step-000001", "step-000003"] {
        std::fs::write(step(name).join("run.json"), "{ cut").unwrap();
    }
    let err = load_latest(&run, &device).err().expect("damaged checkpoints load").to_string();
    assert!(err.contains("no checkpoint to resume from") && err.contains("step-000001/run.json"), "{err}");
    let _ = std::fs::remove_dir_all(&run);
}

/// Issue 16, `resume_opts`: run.json keeps the evaluation and checkpoint options, and a run.json
/// written before they were recorded still loads (with the command line's defaults).
#[test]
fn run_json_keeps_the_run_options_and_old_files_still_load() {
    let (mut state, _) = tiny_run_state(5);
    state.options.eval_count = 20;
    state.options.checkpoint_every = 10;
    let json = serde_json::to_value(&state).unwrap();
    assert_eq!(json["options"]["eval_count"], 20);
    let back: ega_core::checkpoint::RunState = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, state);
    let mut old = json;
    old.as_object_mut().unwrap().remove("options");
    let back: ega_core::checkpoint::RunState = serde_json::from_value(old).unwrap();
    assert_eq!(back.options, ega_core::checkpoint::RunOptions::default());
    assert_eq!((back.options.eval_count, back.options.checkpoint_every), (500, 50));
}

/// Issue 16, unclear messages: a bundle whose config.json was edited is blamed on the config (not
/// the weights); replaced weights on the weights; a bundle without config.json says so.
#[test]
fn an_edited_config_and_replaced_weights_are_told_apart() {
    let device = burn::tensor::Device::flex();
    let (dir, _, _, saved) = saved_tiny_bundle("edited-config");
    assert!(saved.weights_hash.is_some());
    let config_path = dir.join("config.json");
    let original = std::fs::read(&config_path).unwrap();
    let mut edited: serde_json::Value = serde_json::from_slice(&original).unwrap();
    edited["model"]["prompts"]["query"] = "Find: {text}".into();
    std::fs::write(&config_path, serde_json::to_vec(&edited).unwrap()).unwrap();
    let err = bundle::load(&dir, &device).err().expect("an edited config loads").to_string();
    assert!(err.contains("config.json") && err.contains("edited") && !err.contains("damaged"), "{err}");
    std::fs::write(&config_path, &original).unwrap();

    let weights_path = dir.join("model.safetensors");
    let mut weights = std::fs::read(&weights_path).unwrap();
    let last = weights.len() - 1;
    weights[last] ^= 1;
    std::fs::write(&weights_path, &weights).unwrap();
    let err = bundle::load(&dir, &device).err().expect("replaced weights load").to_string();
    assert!(err.contains("model.safetensors") && err.contains("replaced or damaged"), "{err}");

    std::fs::remove_file(&config_path).unwrap();
    let err = bundle::resolve(&dir).unwrap_err().to_string();
    assert!(err.contains("no config.json") && err.contains("model.safetensors, tokenizer.json"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 16, unclear messages: a UTF-8 byte-order mark (an editor on Windows) before a JSONL
/// file, a bundle's config.json, tokenizer.json or an index.json is read past, not "expected
/// value at line 1 column 1".
#[test]
fn a_byte_order_mark_is_read_past() {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    let with_bom = |bytes: &[u8]| [BOM, bytes].concat();
    let dir = temp_dir("bom");
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 20, 20])).save(dir.join("red.png")).unwrap();
    std::fs::write(dir.join("pairs.jsonl"), with_bom(b"{\"image\": \"red.png\", \"text\": \"a red square\"}\n"))
        .unwrap();
    let pairs = ega_core::data::jsonl::JsonlDataset::open(dir.join("pairs.jsonl"), false).unwrap();
    assert_eq!(ega_core::data::Dataset::len(&pairs, ega_core::data::Split::Train), Some(1));

    let device = burn::tensor::Device::flex();
    let (bundle_dir, _, tokenizer, _) = saved_tiny_bundle("bom-bundle");
    let config = std::fs::read(bundle_dir.join("config.json")).unwrap();
    std::fs::write(bundle_dir.join("config.json"), with_bom(&config)).unwrap();
    assert!(bundle::load(&bundle_dir, &device).is_ok());
    let json = tokenizer.to_json().unwrap();
    assert!(Tokenizer::from_json(&format!("\u{feff}{json}")).is_ok());

    let bin = encode_bin(&[1.0, 0.0], 1, 2, StoredDtype::F32, "00000000000000aa").unwrap();
    let meta = serde_json::json!({"format_version": 1, "model_id": "00000000000000aa", "model": "m", "source": "s",
        "count": 1, "dim": 2, "dtype": "f32", "entries": [{"id": "x"}]});
    let meta = with_bom(&serde_json::to_vec(&meta).unwrap());
    assert!(ega_core::index::Index::from_bytes(&bin, &meta, "ix").is_ok());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&bundle_dir);
}

/// Issue 16 (found reviewing the fuzz targets' code): a Hugging Face config's `head_dim` times
/// `num_attention_heads` overflowed (a panic in debug builds; in release a wrapped product could
/// equal `hidden_size` and pass). Now a clear error.
#[test]
fn a_huge_head_dim_is_refused_not_overflowed() {
    for (head_dim, heads, hidden) in [(1u64 << 63, 4u64, 16u64), ((1 << 62) + 4, 4, 16)] {
        let config = serde_json::json!({
            "model_type": "llama", "vocab_size": 64, "hidden_size": hidden, "intermediate_size": 32,
            "num_hidden_layers": 1, "num_attention_heads": heads, "head_dim": head_dim
        });
        let bytes = serde_json::to_vec(&config).unwrap();
        let err = ega_core::pretrained::safetensors::parse_hf_config(&bytes, "hf/config.json").unwrap_err().to_string();
        assert!(err.contains("hf/config.json") && err.contains("head_dim"), "{err}");
    }
}

/// Issue 16 (found by `fuzz_smoke`): a syntax error inside tokenizer.json's `"decoder"` made
/// `tokenizers` panic (`expect("Helper")`) instead of returning an error; it is now refused as
/// invalid JSON, for a bundle and for a Hugging Face folder.
#[test]
fn a_tokenizer_json_with_a_broken_decoder_is_an_error_not_a_panic() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/smolvlm-tiny/tokenizer.json");
    let good = std::fs::read_to_string(fixture).unwrap();
    assert!(Tokenizer::from_json(&good).is_ok());
    let at = good.find("\"decoder\"").unwrap();
    let brace = at + good[at..].find('{').unwrap();
    let broken = format!("{}{{7: 1, {}", &good[..brace], &good[brace + 1..]);
    let err = Tokenizer::from_json(&broken).unwrap_err().to_string();
    assert!(err.contains("not valid JSON") && err.contains("key must be a string"), "{err}");
}
