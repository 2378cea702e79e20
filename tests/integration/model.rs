//! The embedder: shapes, unit norm, padding invariance, causality, images matter, padding does
//! not; the same seed gives the same model on every device. On flex and on wgpu.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use ega_core::embed::prompts_input;
use ega_core::model::{Embedder, EmbedderInput, ModelConfig};
use ega_core::prompt::{tokenize_prompts, Pooling, TokenizedPrompt};
use ega_core::tensor_util::{floats, ints, to_f64_vec};
use ega_tests::{assert_close, devices, draw_shape, WordTokenizer};

fn tiny() -> ModelConfig {
    ModelConfig::tiny()
}

fn input(
    config: &ModelConfig,
    prompts: &[TokenizedPrompt],
    images: Option<Tensor<4>>,
    device: &Device,
) -> EmbedderInput {
    prompts_input(config, prompts, images, device).expect("valid input")
}

fn queries(config: &ModelConfig, texts: &[&str], tokenizer: &mut WordTokenizer) -> Vec<TokenizedPrompt> {
    let items: Vec<_> = texts.iter().map(|t| (*t, None)).collect();
    tokenize_prompts(&config.prompts.query, &config.special, &items, &mut |s| Ok(tokenizer.encode(s))).unwrap()
}

fn two_images(device: &Device) -> Tensor<4> {
    let mut pixels = draw_shape(32, [0.9, 0.1, 0.1], false, 0.3, 0.3, 0.2);
    pixels.extend(draw_shape(32, [0.1, 0.2, 0.9], true, 0.7, 0.6, 0.25));
    floats(pixels, [2, 3, 32, 32], device)
}

fn rows(values: Vec<f64>, width: usize) -> Vec<Vec<f64>> {
    values.chunks(width).map(<[f64]>::to_vec).collect()
}

#[test]
fn embeddings_have_the_right_shape_and_unit_norm() {
    let config = tiny();
    for (name, device) in devices("embeddings_have_the_right_shape_and_unit_norm") {
        let model = Embedder::new(&config, 1, &device).unwrap();
        let mut tokenizer = WordTokenizer::default();
        let texts = ["a red square", "a blue circle on the right", "green"];
        let prompts = queries(&config, &texts, &mut tokenizer);
        let query_input = input(&config, &prompts, None, &device);
        let hidden = model.hidden_states(&query_input);
        assert_eq!(hidden.dims(), [3, query_input.seq_len, 64], "{name} hidden shape");
        let embeddings = model.embed(&query_input);
        assert_eq!(embeddings.dims(), [3, 64], "{name} embedding shape");
        for (row, values) in rows(to_f64_vec(embeddings).unwrap(), 64).iter().enumerate() {
            let norm = values.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{name} row {row} norm {norm}");
        }
        // Targets: image tokens spliced in; K = 4 for the tiny preset.
        let targets =
            tokenize_prompts(&config.prompts.target, &config.special, &[("", Some(0)), ("", Some(1))], &mut |s| {
                Ok(tokenizer.encode(s))
            })
            .unwrap();
        let target_input = input(&config, &targets, Some(two_images(&device)), &device);
        assert_eq!(target_input.seq_len, targets[0].ids.len() - 1 + 4, "{name}: <image> becomes K = 4 tokens");
        assert_eq!(model.embed(&target_input).dims(), [2, 64]);
        assert_eq!(model.as_mini().unwrap().image_tokens(two_images(&device)).dims(), [2, 4, 64]);
    }
}

/// Regression guard (issue 2): the same prompt alone and padded inside a batch of longer prompts
/// embeds the same to 1e-5.
#[test]
fn padding_does_not_change_the_embedding() {
    let config = tiny();
    for (name, device) in devices("padding_does_not_change_the_embedding") {
        let model = Embedder::new(&config, 2, &device).unwrap();
        let mut tokenizer = WordTokenizer::default();
        let short = "a red square";
        let alone = model.embed(&input(&config, &queries(&config, &[short], &mut tokenizer), None, &device));
        let long_texts = [short, "a very long caption with many many words that pads the short one a lot"];
        let batch_input = input(&config, &queries(&config, &long_texts, &mut tokenizer), None, &device);
        assert!(batch_input.seq_len > 12, "the batch must actually pad the short prompt");
        let padded = model.embed(&batch_input).slice([0..1, 0..64]);
        assert_close(
            &format!("{name} padded vs alone"),
            &to_f64_vec(padded.clone()).unwrap(),
            &to_f64_vec(alone).unwrap(),
            1e-5,
            0.0,
        );

        // Changing the token ids at the padding positions changes nothing either.
        let mut changed = batch_input.clone();
        let [b, lt] = changed.text_ids.dims();
        let ids: Vec<i64> = (0..b * lt).map(|k| 5 + (k as i64 % 7)).collect();
        let original: Vec<i64> = batch_input.text_ids.clone().into_data().iter::<i64>().collect();
        // Keep the real tokens, overwrite only the padding slots of row 0.
        let real = queries(&config, &[short], &mut tokenizer)[0].ids.len();
        let mixed: Vec<i64> = (0..b * lt).map(|k| if k < lt && k >= real { ids[k] } else { original[k] }).collect();
        let source: Vec<i64> = batch_input.source.clone().into_data().iter::<i64>().collect();
        // Point row 0's padding positions at the now non-pad slots, one after another.
        let l = batch_input.seq_len;
        let remapped: Vec<i64> = (0..b * l)
            .map(|k| if k < l && k >= real { (real + (k - real) % (lt - real)) as i64 } else { source[k] })
            .collect();
        changed.text_ids = ints(mixed, [b, lt], &device);
        changed.source = ints(remapped, [b * l], &device);
        let still = model.embed(&changed).slice([0..1, 0..64]);
        assert_close(
            &format!("{name} other tokens in the padding"),
            &to_f64_vec(still).unwrap(),
            &to_f64_vec(padded).unwrap(),
            1e-5,
            0.0,
        );
    }
}

/// `Pooling::Mean`: the embedding is the L2-normalised mean of the hidden states over each row's
/// real positions (checked on the host against `hidden_states`), padding changes nothing, and it
/// differs from the last token's. A default config saves no `pooling` key (ids of older models
/// stay valid); a mean one saves and reads it back.
#[test]
fn mean_pooling_averages_the_real_positions_and_ignores_padding() {
    let mut config = tiny();
    config.prompts.pooling = Pooling::Mean;
    for (name, device) in devices("mean_pooling_averages_the_real_positions_and_ignores_padding") {
        let model = Embedder::new(&config, 3, &device).unwrap();
        let mut tokenizer = WordTokenizer::default();
        let texts = ["a red square", "a blue circle on the right of a long green line"];
        let batch = input(&config, &queries(&config, &texts, &mut tokenizer), None, &device);
        let (b, l) = (batch.batch, batch.seq_len);
        let hidden = to_f64_vec(model.hidden_states(&batch)).unwrap(); // [B, L, 64]
        let last: Vec<i64> = batch.last.clone().into_data().iter::<i64>().collect();
        let mut expected = Vec::new();
        for row in 0..b {
            let len = last[row] as usize - row * l + 1;
            let mut mean = vec![0.0; 64];
            for p in 0..len {
                for (m, h) in mean.iter_mut().zip(&hidden[(row * l + p) * 64..(row * l + p + 1) * 64]) {
                    *m += h / len as f64;
                }
            }
            let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
            expected.extend(mean.iter().map(|v| v / norm));
        }
        let pooled = to_f64_vec(model.embed(&batch)).unwrap();
        assert_close(&format!("{name} mean pooling"), &pooled, &expected, 1e-5, 1e-5);

        let alone = model.embed(&input(&config, &queries(&config, &texts[..1], &mut tokenizer), None, &device));
        assert_close(&format!("{name} padded vs alone"), &pooled[..64], &to_f64_vec(alone).unwrap(), 1e-5, 0.0);

        let mut last_config = config.clone();
        last_config.prompts.pooling = Pooling::Last;
        let last_batch = input(&last_config, &queries(&last_config, &texts, &mut tokenizer), None, &device);
        let by_last = to_f64_vec(model.embed(&last_batch)).unwrap();
        let gap = pooled.iter().zip(&by_last).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(gap > 1e-3, "{name}: mean and last pooling should differ (max gap {gap})");
    }
    let saved = serde_json::to_value(&config).unwrap();
    assert_eq!(saved["prompts"]["pooling"], "mean", "{saved}");
    assert_eq!(serde_json::from_value::<ModelConfig>(saved).unwrap(), config);
    let default = serde_json::to_value(tiny()).unwrap();
    assert!(default["prompts"].get("pooling").is_none(), "the default is not written: {default}");
}

#[test]
fn attention_is_causal() {
    let config = tiny();
    for (name, device) in devices("attention_is_causal") {
        let model = Embedder::new(&config, 3, &device).unwrap();
        let mut tokenizer = WordTokenizer::default();
        let prompts = queries(&config, &["a red square on the left"], &mut tokenizer);
        let mut changed = prompts.clone();
        let position = prompts[0].ids.len() - 3; // a word near the end
        changed[0].ids[position] = 200;
        let before = model.hidden_states(&input(&config, &prompts, None, &device));
        let after = model.hidden_states(&input(&config, &changed, None, &device));
        let [_, l, d] = before.dims();
        let early = |t: Tensor<3>| to_f64_vec(t.slice([0..1, 0..position, 0..d])).unwrap();
        assert_close(
            &format!("{name} positions before the change"),
            &early(after.clone()),
            &early(before.clone()),
            1e-5,
            0.0,
        );
        let late = |t: Tensor<3>| to_f64_vec(t.slice([0..1, position..l, 0..d])).unwrap();
        let moved = late(after).iter().zip(late(before)).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(moved > 1e-4, "{name}: the changed token and later positions must change (moved {moved})");
    }
}

#[test]
fn the_image_changes_the_embedding() {
    let config = tiny();
    for (name, device) in devices("the_image_changes_the_embedding") {
        let model = Embedder::new(&config, 4, &device).unwrap();
        let mut tokenizer = WordTokenizer::default();
        let targets =
            tokenize_prompts(&config.prompts.target, &config.special, &[("", Some(0)), ("", Some(1))], &mut |s| {
                Ok(tokenizer.encode(s))
            })
            .unwrap();
        assert_eq!(targets[0].ids, targets[1].ids, "same text, different images");
        let embeddings =
            rows(to_f64_vec(model.embed(&input(&config, &targets, Some(two_images(&device)), &device))).unwrap(), 64);
        let difference = embeddings[0].iter().zip(&embeddings[1]).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(difference > 1e-3, "{name}: two images gave embeddings within {difference}");
    }
}

/// Host-side initialisation: the same seed gives the same model, hence the same embeddings, on
/// flex and on wgpu; another seed gives another model.
#[test]
fn same_seed_same_model_on_every_device() {
    let config = tiny();
    let mut tokenizer = WordTokenizer::default();
    let texts = ["a red square", "two blue circles above a green triangle"];
    let mut results = Vec::new();
    for (name, device) in devices("same_seed_same_model_on_every_device") {
        let model = Embedder::new(&config, 9, &device).unwrap();
        let prompts = queries(&config, &texts, &mut tokenizer);
        let mut targets =
            tokenize_prompts(&config.prompts.target, &config.special, &[("", Some(0)), ("", Some(1))], &mut |s| {
                Ok(tokenizer.encode(s))
            })
            .unwrap();
        targets.extend(prompts);
        let embeddings =
            to_f64_vec(model.embed(&input(&config, &targets, Some(two_images(&device)), &device))).unwrap();
        let other = Embedder::new(&config, 10, &device).unwrap();
        assert_ne!(
            to_f64_vec(other.as_mini().unwrap().language.token_embed.val()).unwrap(),
            to_f64_vec(model.as_mini().unwrap().language.token_embed.val()).unwrap()
        );
        results.push((name, embeddings));
    }
    let (_, reference) = &results[0];
    for (name, embeddings) in &results[1..] {
        assert_close(&format!("{name} vs flex"), embeddings, reference, 1e-4, 1e-3);
    }
}

#[test]
fn presets_have_the_documented_sizes_and_configs_round_trip() {
    let cpu = Device::flex();
    for (preset, low, high) in
        [("tiny", 100_000, 400_000), ("small", 4_000_000, 6_000_000), ("base", 35_000_000, 45_000_000)]
    {
        let config = ModelConfig::preset(preset).unwrap();
        let params = Embedder::new(&config, 0, &cpu).unwrap().num_params();
        assert!((low..high).contains(&params), "{preset}: {params} parameters");
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), config, "{preset} round trip");
    }
    assert!(ModelConfig::preset("huge").unwrap_err().to_string().contains("tiny, small, base"));
    let mut bad = ModelConfig::tiny();
    bad.mini_mut().unwrap().vision.image_size = 36;
    assert!(bad.validate().unwrap_err().to_string().contains("vision.image_size"));
    let mut bad = ModelConfig::tiny();
    bad.mini_mut().unwrap().language.heads = 5;
    assert!(bad.validate().unwrap_err().to_string().contains("language.heads"));
    let mut bad = ModelConfig::tiny();
    bad.prompts.query = "{text} {text}".into();
    assert!(bad.validate().is_err());
}

/// A bundle saved with f16 weights loads back into a model whose weights are the f16-rounded
/// originals: its embeddings stay within f16 precision of the f32 model's; bundles refuse a newer
/// format, replaced weights and a truncated file, each with a message that says what is wrong.
#[test]
fn bundles_round_trip_in_f32_and_f16_and_refuse_damage() {
    use ega_core::bundle;
    use ega_core::store::StoredDtype;
    let device = burn::tensor::Device::flex();
    let config = ega_core::model::ModelConfig::tiny();
    let model = ega_core::model::Embedder::new(&config, 3, &device).unwrap();
    let mut corpus = ega_core::data::shapes::caption_vocabulary();
    corpus.push("a red circle".into());
    let tokenizer = ega_core::tokenizer::Tokenizer::train(corpus.iter(), config.vocab_size()).unwrap();
    let dir = std::env::temp_dir().join(format!("ega-bundle-{}", std::process::id()));
    let captions = ["a red circle", "two blue squares above a star"];
    let embed = |model: &ega_core::model::Embedder| {
        ega_core::tensor_util::to_f64_vec(
            ega_core::embed::embed_captions(model, &config, &tokenizer, &captions, 2, &device).unwrap(),
        )
        .unwrap()
    };
    let reference = embed(&model);
    for dtype in [StoredDtype::F32, StoredDtype::F16] {
        let saved = bundle::save(
            &dir,
            &model,
            &config,
            &tokenizer,
            &Default::default(),
            "shapes",
            7,
            &serde_json::json!({"note": "test"}),
            dtype,
        )
        .unwrap();
        let loaded = bundle::load(&dir, &device).unwrap();
        assert_eq!(loaded.config, saved);
        assert_eq!(loaded.metrics["note"], "test");
        let got = embed(&loaded.model);
        let tolerance = if dtype == StoredDtype::F32 { 1e-6 } else { 2e-2 };
        ega_tests::assert_close(&format!("{dtype:?} embeddings"), &got, &reference, tolerance, 0.0);
    }
    let weights_f16 = std::fs::metadata(dir.join("model.safetensors")).unwrap().len();

    // Damage: a newer format, other weights, a truncated file.
    let config_text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), config_text.replace("\"format_version\": 1", "\"format_version\": 9"))
        .unwrap();
    let err = bundle::load(&dir, &device).err().unwrap().to_string();
    assert!(err.contains("format version 9"), "{err}");
    std::fs::write(dir.join("config.json"), &config_text).unwrap();
    let mut weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    let last = weights.len() - 1;
    weights[last] ^= 0x40;
    std::fs::write(dir.join("model.safetensors"), &weights).unwrap();
    let err = bundle::load(&dir, &device).err().unwrap().to_string();
    assert!(err.contains("differs from config.json's model_id"), "{err}");
    let err = ega_core::store::safetensors::convert(&weights[..weights.len() / 3], StoredDtype::F32, "cut.safetensors")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cut.safetensors"), "{err}");
    assert!(weights_f16 < 600_000, "f16 weights of tiny should be about half of 1 MB, got {weights_f16}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The architecture seam: configs name their architecture, configs written before it read as
/// `mini`, and a `mini` model id hashes the config as it was serialised then.
#[test]
fn configs_name_their_architecture_and_old_ones_read_as_mini() {
    let config = ModelConfig::tiny();
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(json["architecture"], "mini");
    let back: ModelConfig = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, config);
    let mut legacy = json.clone();
    legacy.as_object_mut().unwrap().remove("architecture");
    let old: ModelConfig = serde_json::from_value(legacy.clone()).unwrap();
    assert_eq!(old, config);
    // The id bytes are exactly the pre-seam serialisation (field order preset, vision, language,
    // special, prompts), so ids recorded in committed bundles and indexes still verify.
    let id_bytes = String::from_utf8(config.id_bytes().unwrap()).unwrap();
    assert!(id_bytes.starts_with("{\"preset\":\"tiny\",\"vision\":{"), "{id_bytes}");
    assert!(!id_bytes.contains("architecture"), "{id_bytes}");
    // An unknown architecture or an unknown field is an error, not a silent default.
    let mut unknown = json.clone();
    unknown["architecture"] = serde_json::Value::from("transformerxl");
    assert!(serde_json::from_value::<ModelConfig>(unknown).is_err());
    let mut extra = json;
    extra["vision"]["dropout"] = serde_json::Value::from(0.1);
    assert!(serde_json::from_value::<ModelConfig>(extra).is_err());
    assert_eq!(config.architecture_name(), "mini");
    assert!(config.mini().is_some() && config.smolvlm().is_none());
}
