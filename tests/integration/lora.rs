//! Fine-tuning (issue 14): freezing by part, LoRA adapters on the decoder, their merge, staged
//! recipes' stage arithmetic, and starting from the real pretrained SmolLM2 decoder.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use ega_core::checkpoint::{self, RunState};
use ega_core::data::shapes::{ShapesConfig, ShapesDataset};
use ega_core::data::{Dataset, Split};
use ega_core::loss::LossConfig;
use ega_core::model::smolvlm::merge_lora;
use ega_core::model::{Architecture, Embedder, FreezePart, LoraConfig, ModelConfig};
use ega_core::pretrained::HostTensor;
use ega_core::tensor_util::to_f64_vec;
use ega_core::tokenizer::Tokenizer;
use ega_core::train::{batch_indices, make_batch, stage_at, Stage, TrainBatch, TrainConfig, Trainer};
use ega_tests::assert_close;

/// The tiny random `smolvlm` preset with a tokenizer trained on `shapes`, and its LoRA variant.
fn setup() -> (ModelConfig, ModelConfig, ShapesDataset, Tokenizer) {
    let mut plain = ModelConfig::tiny_smolvlm();
    let data = ShapesDataset::new(ShapesConfig { image_size: 32, ..ShapesConfig::default() });
    let corpus = ega_core::data::tokenizer_corpus(&data, 200).unwrap();
    let tokenizer = Tokenizer::train(corpus.iter(), plain.vocab_size()).unwrap();
    plain.set_vocab_size(tokenizer.vocab_size());
    let mut adapted = plain.clone();
    if let Architecture::Smolvlm(s) = &mut adapted.architecture {
        s.lora =
            Some(LoraConfig { rank: 4, alpha: 8.0, targets: vec!["q_proj".into(), "v_proj".into(), "up_proj".into()] });
    }
    (plain, adapted, data, tokenizer)
}

fn batch(config: &ModelConfig, data: &ShapesDataset, tokenizer: &Tokenizer, device: &Device) -> TrainBatch {
    make_batch(data, Split::Test, &[0, 1, 2, 3, 4], 1, config, tokenizer, device).unwrap()
}

/// Query and target embeddings of `batch`, flattened.
fn embeddings(model: &Embedder, batch: &TrainBatch) -> Vec<f64> {
    let mut out = to_f64_vec(model.embed(&batch.queries)).unwrap();
    out.extend(to_f64_vec(model.embed(&batch.targets)).unwrap());
    out
}

fn train_config(steps: usize, freeze: Vec<FreezePart>) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 5,
        hard_negatives: 1,
        lr: 1e-2,
        warmup_steps: 1,
        alpha_warmup: false,
        seed: 3,
        freeze,
        ..TrainConfig::default()
    }
}

fn run_steps(
    trainer: &mut Trainer,
    config: &ModelConfig,
    data: &ShapesDataset,
    tokenizer: &Tokenizer,
    until: usize,
) -> Vec<f64> {
    let device = trainer.model().devices()[0].clone();
    let len = data.len(Split::Train).unwrap();
    let mut losses = Vec::new();
    while trainer.step < until {
        let indices = batch_indices(trainer.config.seed, trainer.step, trainer.config.batch_size, len).unwrap();
        let batch = make_batch(data, Split::Train, &indices, 1, config, tokenizer, &device).unwrap();
        losses.push(trainer.step(&batch).unwrap().loss);
    }
    losses
}

/// A model of `adapted` whose adapters took 3 steps (decoder frozen), on flex without autodiff.
fn trained_adapters(adapted: &ModelConfig, data: &ShapesDataset, tokenizer: &Tokenizer) -> Embedder {
    let device = Device::flex().autodiff();
    let model = Embedder::new(adapted, 4, &device).unwrap();
    let mut trainer = Trainer::new(model, train_config(3, vec![FreezePart::Lm]), LossConfig::default(), 0).unwrap();
    run_steps(&mut trainer, adapted, data, tokenizer, 3);
    trainer.into_model().valid()
}

/// Saves `model` of `config` as an f32 bundle in `dir` (a `--init` source).
fn save_bundle(dir: &std::path::Path, model: &Embedder, config: &ModelConfig, tokenizer: &Tokenizer) {
    let (loss, meta) = (LossConfig::default(), serde_json::Value::Null);
    ega_core::bundle::save(dir, model, config, tokenizer, &loss, "shapes", 0, &meta, ega_core::store::StoredDtype::F32)
        .unwrap();
}

/// The adapter of the first layer's `q_proj` (A then B), read back.
fn first_adapter(model: &Embedder) -> (Vec<f64>, Vec<f64>) {
    let lora = model.as_smolvlm().unwrap().text_model.layers[0].self_attn.q_proj.lora.as_ref().expect("an adapter");
    (to_f64_vec(lora.a.val()).unwrap(), to_f64_vec(lora.b.val()).unwrap())
}

/// A fresh adapter (`B = 0`) leaves every embedding exactly as it was: bit for bit, not to a
/// tolerance. Only the targeted projections get one.
#[test]
fn a_fresh_lora_leaves_the_output_unchanged_exactly() {
    let (plain, adapted, data, tokenizer) = setup();
    let device = Device::flex();
    let model = Embedder::new(&plain, 1, &device).unwrap();
    let with_lora = model.rebuild(&adapted, 7, &device).unwrap();
    let b = batch(&plain, &data, &tokenizer, &device);
    assert_eq!(embeddings(&with_lora, &b), embeddings(&model, &b), "a fresh adapter changes nothing");
    let (a, b_weights) = first_adapter(&with_lora);
    assert!(a.iter().any(|v| *v != 0.0), "A starts random");
    assert!(b_weights.iter().all(|v| *v == 0.0), "B starts at zero");
    let layer = &with_lora.as_smolvlm().unwrap().text_model.layers[1];
    assert!(layer.self_attn.v_proj.lora.is_some() && layer.mlp.up_proj.lora.is_some());
    assert!(layer.self_attn.k_proj.lora.is_none() && layer.mlp.down_proj.lora.is_none(), "only the targets");
    // 2 layers × (q: 64→64, v: 64→32, up: 64→172), rank 4.
    let added = with_lora.num_params() - model.num_params();
    assert_eq!(added, 2 * 4 * ((64 + 64) + (64 + 32) + (64 + 172)));
}

/// Every parameter's gradient, and whether it takes one, line up.
struct GradientCheck<'a> {
    grads: &'a GradientsParams,
    trainable_with_grad: usize,
    frozen_without_grad: usize,
    mismatched: usize,
}

impl ModuleVisitor for GradientCheck<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        match (param.is_require_grad(), self.grads.get::<D>(param.id).is_some()) {
            (true, true) => self.trainable_with_grad += 1,
            (false, false) => self.frozen_without_grad += 1,
            _ => self.mismatched += 1,
        }
    }
}

/// With the decoder frozen, only the vision tower, the connector and the adapters receive
/// gradients; the optimizer then keeps state for those alone (its saved state is smaller than a
/// whole model's by about the decoder's share).
#[test]
fn only_trainable_parameters_receive_gradients() {
    let (_, adapted, data, tokenizer) = setup();
    let device = Device::flex().autodiff();
    let model = Embedder::new(&adapted, 2, &device).unwrap();
    let frozen =
        Trainer::new(model.clone(), train_config(5, vec![FreezePart::Lm]), LossConfig::ega(0.05, 1.0), 0).unwrap();
    let b = batch(&adapted, &data, &tokenizer, &device);
    let (_, grads) = frozen.loss_and_gradients(&b).unwrap();
    let mut check = GradientCheck { grads: &grads, trainable_with_grad: 0, frozen_without_grad: 0, mismatched: 0 };
    frozen.model().visit(&mut check);
    assert_eq!(check.mismatched, 0, "a frozen parameter has a gradient, or a trainable one has none");
    assert!(check.frozen_without_grad > 0 && check.trainable_with_grad > 0);
    let text = &frozen.model().as_smolvlm().unwrap().text_model;
    assert!(grads.get::<2>(text.embed_tokens.weight.id).is_none(), "the token embedding is frozen");
    assert!(grads.get::<2>(text.layers[0].self_attn.q_proj.weight.id).is_none(), "q_proj's weight is frozen");
    let lora = text.layers[0].self_attn.q_proj.lora.as_ref().unwrap();
    assert!(grads.get::<2>(lora.a.id).is_some() && grads.get::<2>(lora.b.id).is_some(), "the adapter trains");
    let (trainable, all) = frozen.model().trainable_params();
    let sizes = frozen.model().part_sizes();
    let decoder = sizes.iter().find(|(name, _)| *name == "text_model").unwrap().1;
    let adapters = 2 * 4 * ((64 + 64) + (64 + 32) + (64 + 172));
    assert_eq!(all - trainable, decoder - adapters, "exactly the decoder's own weights are frozen");

    // After one step the optimizer holds moments of the trainable parameters only.
    let mut frozen = frozen;
    let mut whole = Trainer::new(model, train_config(5, vec![]), LossConfig::ega(0.05, 1.0), 0).unwrap();
    frozen.step(&b).unwrap();
    whole.step(&b).unwrap();
    let (small, large) = (frozen.optimizer_bytes().unwrap().len(), whole.optimizer_bytes().unwrap().len());
    let expected = (trainable as f64 / all as f64) * large as f64;
    assert!(
        (small as f64) < 0.8 * large as f64 && (small as f64 - expected).abs() < 0.1 * large as f64,
        "optimizer state {small} bytes frozen vs {large} whole (expected about {expected:.0})"
    );

    // Freezing everything trainable is refused with the option named.
    let all_frozen = train_config(5, vec![FreezePart::Vision, FreezePart::Connector, FreezePart::Lm]);
    let plain = Embedder::new(&ModelConfig::tiny_smolvlm(), 0, &device).unwrap();
    let err = Trainer::new(plain, all_frozen, LossConfig::default(), 0).err().expect("nothing left to train");
    assert!(err.to_string().contains("freeze"), "{err}");
}

/// The gradients of the trainable parameters, flattened in visiting order.
struct GradValues<'a> {
    grads: &'a GradientsParams,
    out: Vec<f64>,
}

impl ModuleVisitor for GradValues<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            self.out.extend(to_f64_vec(grad).unwrap());
        }
    }
}

fn grad_values(model: &Embedder, grads: &GradientsParams) -> Vec<f64> {
    let mut values = GradValues { grads, out: Vec::new() };
    model.visit(&mut values);
    values.out
}

/// With the text path frozen (decoder frozen, no adapters) the trainer embeds each caption once
/// and takes it from its cache afterwards; the loss and gradients are those of embedding the
/// captions every step (to 1e-5), and a few steps follow the same losses. With adapters, or a
/// decoder that trains, there is no cache.
#[test]
fn a_frozen_text_path_embeds_each_caption_once() {
    let (plain, adapted, data, tokenizer) = setup();
    let device = Device::flex().autodiff();
    let model = Embedder::new(&plain, 5, &device).unwrap();
    let config = train_config(4, vec![FreezePart::Lm]);
    let cached = Trainer::new(model.clone(), config.clone(), LossConfig::ega(0.05, 1.0), 0).unwrap();
    assert_eq!(cached.caption_cache_stats().map(|s| (s.captions, s.hits, s.misses)), Some((0, 0, 0)));
    let b = batch(&plain, &data, &tokenizer, &device);
    // A batch without its prompts cannot use the cache: the reference, embedded as a batch.
    let uncached_batch = TrainBatch { prompts: None, ..b.clone() };
    let (reference_loss, reference_grads) = cached.loss_and_gradients(&uncached_batch).unwrap();
    assert_eq!(cached.caption_cache_stats().unwrap().misses, 0, "the batch without prompts bypassed the cache");
    let (first_loss, first_grads) = cached.loss_and_gradients(&b).unwrap();
    let first = cached.caption_cache_stats().unwrap();
    assert_eq!(first.hits + first.misses, 5, "{first:?}");
    assert!(first.misses >= 1 && first.captions == first.misses, "{first:?}");
    let (second_loss, second_grads) = cached.loss_and_gradients(&b).unwrap();
    let second = cached.caption_cache_stats().unwrap();
    assert_eq!((second.captions, second.misses, second.hits), (first.captions, first.misses, first.hits + 5));
    let reference = grad_values(cached.model(), &reference_grads);
    assert!(!reference.is_empty() && reference.iter().any(|g| *g != 0.0), "the vision side has gradients");
    for (what, loss, grads) in [("first", first_loss, &first_grads), ("cached", second_loss, &second_grads)] {
        assert_close(&format!("{what} loss"), &[loss], &[reference_loss], 1e-5, 1e-5);
        assert_close(&format!("{what} gradients"), &grad_values(cached.model(), grads), &reference, 1e-5, 1e-4);
    }

    // Training with the cache follows the losses of training without it.
    let mut with_cache = cached;
    let cached_losses = run_steps(&mut with_cache, &plain, &data, &tokenizer, 4);
    let mut without = Trainer::new(model, config, LossConfig::ega(0.05, 1.0), 0).unwrap();
    let len = data.len(Split::Train).unwrap();
    let mut plain_losses = Vec::new();
    while without.step < 4 {
        let indices = batch_indices(without.config.seed, without.step, 5, len).unwrap();
        let batch = make_batch(&data, Split::Train, &indices, 1, &plain, &tokenizer, &device).unwrap();
        plain_losses.push(without.step(&TrainBatch { prompts: None, ..batch }).unwrap().loss);
    }
    assert_close("losses with and without the cache", &cached_losses, &plain_losses, 1e-5, 1e-5);
    assert!(with_cache.caption_cache_stats().unwrap().misses > first.misses, "new captions were embedded");

    // Adapters on the frozen decoder, or a decoder that trains: the text path trains, no cache.
    let lora = Embedder::new(&adapted, 5, &device).unwrap();
    let lora = Trainer::new(lora, train_config(4, vec![FreezePart::Lm]), LossConfig::default(), 0).unwrap();
    assert!(lora.caption_cache_stats().is_none());
    let whole =
        Trainer::new(Embedder::new(&plain, 5, &device).unwrap(), train_config(4, vec![]), LossConfig::default(), 0);
    assert!(whole.unwrap().caption_cache_stats().is_none());
}

/// Merging trained adapters into the weights gives the same embeddings to 1e-5, as a model
/// without adapters; and the adapters did change the output (the test is not vacuous).
#[test]
fn merged_lora_equals_unmerged() {
    let (plain, adapted, data, tokenizer) = setup();
    let trained = trained_adapters(&adapted, &data, &tokenizer);
    let device = Device::flex();
    assert!(first_adapter(&trained).1.iter().any(|v| *v != 0.0), "training moved B");
    let (merged_config, merged) = trained.merged_lora(&adapted, &device).unwrap().expect("there are adapters");
    assert_eq!(merged_config.smolvlm().unwrap().lora, None);
    assert_eq!(merged_config.smolvlm().unwrap().text_config, plain.smolvlm().unwrap().text_config);
    assert!(merged.as_smolvlm().unwrap().text_model.layers[0].self_attn.q_proj.lora.is_none());
    let b = batch(&adapted, &data, &tokenizer, &device);
    let (with_adapters, after_merge) = (embeddings(&trained, &b), embeddings(&merged, &b));
    assert_close("merged vs unmerged embeddings", &after_merge, &with_adapters, 1e-5, 1e-5);
    let without = embeddings(&trained.rebuild(&plain, 0, &device).unwrap(), &b);
    let moved = without.iter().zip(&with_adapters).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(moved > 1e-3, "the adapters must matter: largest change {moved}");
    assert!(Embedder::new(&plain, 0, &device).unwrap().merged_lora(&plain, &device).unwrap().is_none());
}

/// The host merge on numbers worked by hand: `W = [[1, 2], [3, 4]]`, `A = [[1, -1]]`,
/// `B = [[2], [0.5]]`, scale 3/1: `W + 3·B·A = [[7, -4], [4.5, 2.5]]`. A half adapter is an error.
#[test]
fn merge_lora_by_hand() {
    let t = |shape: Vec<usize>, data: Vec<f32>| HostTensor { shape, data };
    let tensors = vec![
        ("x.weight".to_string(), t(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0])),
        ("x.lora_A.weight".to_string(), t(vec![1, 2], vec![1.0, -1.0])),
        ("x.lora_B.weight".to_string(), t(vec![2, 1], vec![2.0, 0.5])),
        ("y.weight".to_string(), t(vec![1], vec![9.0])),
    ];
    let lora = LoraConfig { rank: 1, alpha: 3.0, targets: vec!["q_proj".into()] };
    let merged = merge_lora(tensors.clone(), &lora).unwrap();
    assert_eq!(merged.len(), 2);
    assert_eq!(merged[0].1.data, vec![7.0, -4.0, 4.5, 2.5]);
    assert_eq!(merged[1].1.data, vec![9.0]);
    let half: Vec<_> = tensors.into_iter().filter(|(n, _)| n != "x.lora_B.weight").collect();
    let err = merge_lora(half, &lora).unwrap_err().to_string();
    assert!(err.contains("x") && err.contains("lora_B"), "{err}");
}

/// A LoRA run with the decoder frozen, stopped after 3 steps, saved, loaded and resumed, gives
/// the loss curve and adapter weights of an uninterrupted run.
#[test]
fn a_lora_run_resumes_exactly() {
    let (_, adapted, data, tokenizer) = setup();
    let device = Device::flex().autodiff();
    let train = train_config(6, vec![FreezePart::Lm]);
    let loss = LossConfig::ega(0.05, 1.0);
    let new_trainer =
        || Trainer::new(Embedder::new(&adapted, 5, &device).unwrap(), train.clone(), loss.clone(), 0).unwrap();
    let mut straight = new_trainer();
    let uninterrupted = run_steps(&mut straight, &adapted, &data, &tokenizer, 6);

    let mut first = new_trainer();
    let mut resumed = run_steps(&mut first, &adapted, &data, &tokenizer, 3);
    let run = std::env::temp_dir().join(format!("ega-test-lora-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);
    let state = RunState::new(3, adapted.clone(), loss.clone(), train.clone(), "shapes");
    checkpoint::save(&run, &state, first.model(), &first.optimizer_bytes().unwrap(), &tokenizer).unwrap();
    drop(first);
    let loaded = checkpoint::load_latest(&run, &device).unwrap();
    let _ = std::fs::remove_dir_all(&run);
    assert_eq!(loaded.state, state, "the LoRA config and the frozen parts are saved with the run");
    let mut second = Trainer::new(loaded.model, loaded.state.train, loaded.state.loss, 3).unwrap();
    second.load_optimizer_bytes(loaded.optimizer).unwrap();
    resumed.extend(run_steps(&mut second, &adapted, &data, &loaded.tokenizer, 6));
    assert_close("loss curve, resumed vs uninterrupted", &resumed, &uninterrupted, 1e-6, 1e-6);
    let (a, b) = (first_adapter(second.model()), first_adapter(straight.model()));
    assert_close("adapter A after 6 steps", &a.0, &b.0, 1e-7, 1e-6);
    assert_close("adapter B after 6 steps", &a.1, &b.1, 1e-7, 1e-6);
    assert!(b.1.iter().any(|v| *v != 0.0), "B trained");
}

/// Global steps map to (stage, step within it) and back across the boundary.
#[test]
fn stages_split_the_step_count() {
    let stage = |name: &str, steps| Stage {
        name: name.into(),
        train: TrainConfig { steps, ..TrainConfig::default() },
        loss: LossConfig::default(),
        lora: None,
        text_pairs: None,
    };
    let stages = [stage("align", 3), stage("contrastive", 2)];
    let at: Vec<_> = (0..6).map(|step| stage_at(&stages, step)).collect();
    assert_eq!(at, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0)]);
    assert_eq!(ega_core::train::total_steps(&stages), 5);
    let mini = ModelConfig::tiny();
    let with_lora = Stage {
        lora: Some(LoraConfig { rank: 2, alpha: 4.0, targets: LoraConfig::default_targets() }),
        ..stage("x", 1)
    };
    let err = ega_core::train::validate_stages(&[with_lora], &mini).unwrap_err().to_string();
    assert!(err.contains("smolvlm"), "LoRA on a mini model is refused: {err}");
    let bad = LoraConfig { rank: 2, alpha: 4.0, targets: vec!["qkv".into()] };
    assert!(bad.validate().unwrap_err().to_string().contains("q_proj"));
}

/// `--init-lm` on the real SmolLM2-135M GGUF: the first 2 decoder layers come from the file (the
/// token embedding, 9 tensors a layer, the final norm), the vision tower and connector are new,
/// the tokenizer's chat tokens open and close the prompts, and the decoder computes what the
/// decoder alone computes on the same ids (which the transformers parity test pins down).
#[test]
fn init_lm_builds_an_embedder_on_the_pretrained_decoder() {
    let Some(path) = ega_tests::pretrained_gguf("init_lm_builds_an_embedder_on_the_pretrained_decoder") else {
        return;
    };
    let device = Device::flex();
    let started = ega_core::init::from_lm(&path, "tiny", Some(2), None, 0, &device).unwrap();
    assert_eq!(started.report.loaded, 1 + 2 * 9 + 1, "{:?}", started.report);
    assert!(started.report.fresh > 0, "the vision tower and connector are fresh");
    let special = started.config.special;
    assert_eq!(started.tokenizer.inner().id_to_token(special.bos).as_deref(), Some("<|im_start|>"));
    assert_eq!(started.tokenizer.inner().id_to_token(special.eos).as_deref(), Some("<|im_end|>"));
    assert_eq!(started.config.embed_dim(), 576);
    assert_eq!(started.config.image_size(), 32);

    let queries = ega_core::embed::query_prompts(&started.config, &started.tokenizer, &["a koala in a tree"]).unwrap();
    let input = ega_core::embed::prompts_input(&started.config, &queries, None, &device).unwrap();
    let hidden = started.model.hidden_states(&input); // [1, L, 576]
    let ids: Vec<i64> = queries[0].ids.iter().map(|&id| id as i64).collect();
    let len = ids.len();
    let mut source = ega_core::pretrained::open(&path).unwrap();
    let mut text = started.config.smolvlm().unwrap().text_config.clone();
    text.num_hidden_layers = 2;
    let (decoder, _) =
        ega_core::model::smolvlm::LlamaModel::from_source(&text, source.source.as_mut(), &device).unwrap();
    let alone = decoder.forward_ids(ega_core::tensor_util::ints(ids, [1, len], &device));
    let row = |t: Tensor<3>| to_f64_vec(t.narrow(1, 0, len)).unwrap();
    assert_close("embedder decoder vs the decoder alone", &row(hidden), &row(alone), 1e-5, 1e-5);
}

/// `--init` on this project's own `smolvlm` bundle continues from its weights: unchanged, the
/// embeddings are the bundle's exactly; with `lm_layers` the decoder is cut, and a cut past the
/// model's layers is an error naming them.
#[test]
fn init_continues_from_an_own_smolvlm_bundle() {
    let (_, adapted, data, tokenizer) = setup();
    let device = Device::flex();
    let model = Embedder::new(&adapted, 6, &device).unwrap();
    let dir = std::env::temp_dir().join(format!("ega-test-init-bundle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    save_bundle(&dir, &model, &adapted, &tokenizer);
    let lora = adapted.smolvlm().unwrap().lora.clone();
    let same = ega_core::init::from_smolvlm(&dir, None, lora.clone(), 0, &device).unwrap();
    assert_eq!(same.config, adapted);
    let b = batch(&adapted, &data, &tokenizer, &device);
    assert_eq!(embeddings(&same.model, &b), embeddings(&model, &b));

    let cut = ega_core::init::from_smolvlm(&dir, Some(1), lora, 0, &device).unwrap();
    assert_eq!(cut.config.smolvlm().unwrap().text_config.num_hidden_layers, 1);
    assert_eq!(cut.model.as_smolvlm().unwrap().text_model.layers.len(), 1);
    let err = ega_core::init::from_smolvlm(&dir, Some(3), None, 0, &device).err().unwrap().to_string();
    assert!(err.contains("lm_layers") && err.contains('2'), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--init` from an own model whose adapters the new run does not keep (another rank, or none,
/// as the recipe's alignment stage wants): they are merged into the weights, not dropped, so the
/// model starts computing what the trained one computed (to 1e-5).
#[test]
fn init_merges_the_adapters_it_does_not_keep() {
    let (_, adapted, data, tokenizer) = setup();
    let trained = trained_adapters(&adapted, &data, &tokenizer);
    let device = Device::flex();
    assert!(first_adapter(&trained).1.iter().any(|v| *v != 0.0), "training moved B");
    let dir = std::env::temp_dir().join(format!("ega-test-init-merge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    save_bundle(&dir, &trained, &adapted, &tokenizer);
    let b = batch(&adapted, &data, &tokenizer, &device);
    let expected = embeddings(&trained, &b);
    let plain = ega_core::init::from_smolvlm(&dir, None, None, 0, &device).unwrap();
    assert_eq!(plain.config.smolvlm().unwrap().lora, None);
    assert_close("--init without adapters", &embeddings(&plain.model, &b), &expected, 1e-5, 1e-5);
    let other = LoraConfig { rank: 2, alpha: 2.0, targets: vec!["k_proj".into()] };
    let rank2 = ega_core::init::from_smolvlm(&dir, None, Some(other.clone()), 0, &device).unwrap();
    assert_eq!(rank2.config.smolvlm().unwrap().lora, Some(other));
    assert_close("--init with fresh other adapters", &embeddings(&rank2.model, &b), &expected, 1e-5, 1e-5);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A text batch (`make_text_batch`: both sides text, the query prompt) trains the decoder's
/// adapters alone: with the decoder, tower and connector frozen, a step moves LoRA's B and no
/// other weight, and the loss falls over a few steps on the same pairs.
#[test]
fn a_text_batch_trains_the_adapters_alone() {
    use ega_core::data::text_pairs::TextPairs;
    let (_, adapted, _, tokenizer) = setup();
    let dir = std::env::temp_dir().join(format!("ega-test-text-batch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pairs.tsv");
    std::fs::write(
        &path,
        "a red thing\tred circle\na blue thing\tblue square\na green one\tgreen star\nyellow\tyellow triangle\n",
    )
    .unwrap();
    let pairs = TextPairs::open(&format!("tsv:{}", path.display())).unwrap();
    let device = Device::flex().autodiff();
    let config = TrainConfig {
        batch_size: 4,
        hard_negatives: 0,
        ..train_config(6, vec![FreezePart::Lm, FreezePart::Vision, FreezePart::Connector])
    };
    let model = Embedder::new(&adapted, 4, &device).unwrap();
    let before = model.valid().as_smolvlm().unwrap().export().unwrap();
    let mut trainer = Trainer::new(model, config, LossConfig::default(), 0).unwrap();
    let batch = ega_core::train::make_text_batch(&pairs, &[0, 1, 2, 3], &adapted, &tokenizer, &device).unwrap();
    assert!(batch.targets.images.is_none() && batch.m == 4);
    let losses: Vec<f64> = (0..6).map(|_| trainer.step(&batch).unwrap().loss).collect();
    assert!(losses[5] < losses[0], "the loss falls on the same pairs: {losses:?}");
    let after = trainer.model().valid().as_smolvlm().unwrap().export().unwrap();
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        let moved = a.data != b.data;
        assert_eq!(moved, name.contains(".lora_"), "{name} moved: {moved}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
