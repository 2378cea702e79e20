//! The trainer: schedules, data order, exact resume from a checkpoint, and a non-finite loss
//! stopping training with the step named.

use burn::tensor::Device;
use ega_core::checkpoint::{self, RunState};
use ega_core::data::shapes::{ShapesConfig, ShapesDataset};
use ega_core::data::{Dataset, Split};
use ega_core::loss::LossConfig;
use ega_core::model::{Embedder, ModelConfig};
use ega_core::tokenizer::Tokenizer;
use ega_core::train::{batch_indices, make_batch, TrainConfig, Trainer};
use ega_core::EgaError;
use ega_tests::assert_close;

fn setup() -> (ModelConfig, ShapesDataset, Tokenizer, TrainConfig) {
    let mut config = ModelConfig::tiny();
    let data = ShapesDataset::new(ShapesConfig { image_size: 32, ..ShapesConfig::default() });
    let corpus = ega_core::data::tokenizer_corpus(&data, 200).unwrap();
    let tokenizer = Tokenizer::train(corpus.iter(), config.vocab_size()).unwrap();
    config.set_vocab_size(tokenizer.vocab_size());
    let train = TrainConfig {
        steps: 8,
        batch_size: 6,
        warmup_steps: 2,
        alpha_start: 2,
        alpha_ramp: 2,
        seed: 5,
        ..TrainConfig::default()
    };
    (config, data, tokenizer, train)
}

fn steps(
    trainer: &mut Trainer,
    data: &dyn Dataset,
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    until: usize,
    device: &Device,
) -> Vec<f64> {
    let len = data.len(Split::Train).unwrap();
    let mut losses = Vec::new();
    while trainer.step < until {
        let indices = batch_indices(trainer.config.seed, trainer.step, trainer.config.batch_size, len).unwrap();
        let batch =
            make_batch(data, Split::Train, &indices, trainer.config.hard_negatives, config, tokenizer, device).unwrap();
        losses.push(trainer.step(&batch).unwrap().loss);
    }
    losses
}

/// Regression guard (issue 4): a run saved at step 4 and resumed gives the same losses and the
/// same weights as the uninterrupted run (same data order, optimizer state, schedules).
#[test]
fn a_resumed_run_continues_exactly() {
    let (config, data, tokenizer, train) = setup();
    let device = Device::flex().autodiff();
    let loss = LossConfig { rescale: ega_core::loss::Rescale::Sum, ..LossConfig::default() };

    let mut straight =
        Trainer::new(Embedder::new(&config, train.seed, &device).unwrap(), train.clone(), loss.clone(), 0).unwrap();
    let uninterrupted = steps(&mut straight, &data, &config, &tokenizer, 8, &device);

    let mut first =
        Trainer::new(Embedder::new(&config, train.seed, &device).unwrap(), train.clone(), loss.clone(), 0).unwrap();
    let mut resumed_losses = steps(&mut first, &data, &config, &tokenizer, 4, &device);
    let run = std::env::temp_dir().join(format!("ega-test-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);
    let state = RunState::new(first.step, config.clone(), loss.clone(), train.clone(), "shapes");
    checkpoint::save(&run, &state, first.model(), &first.optimizer_bytes().unwrap(), &tokenizer).unwrap();
    drop(first);
    let loaded = checkpoint::load_latest(&run, &device).unwrap();
    assert_eq!(loaded.state, state);
    let mut second = Trainer::new(loaded.model, loaded.state.train, loaded.state.loss, loaded.state.step).unwrap();
    second.load_optimizer_bytes(loaded.optimizer).unwrap();
    resumed_losses.extend(steps(&mut second, &data, &config, &loaded.tokenizer, 8, &device));

    assert_close("loss curve, resumed vs uninterrupted", &resumed_losses, &uninterrupted, 1e-6, 1e-6);
    assert!(uninterrupted[0] != uninterrupted[7], "training must move the loss");
    let weights = |t: &Trainer| {
        ega_core::tensor_util::to_f64_vec(t.model().as_mini().unwrap().language.token_embed.val()).unwrap()
    };
    assert_close("weights after 8 steps", &weights(&second), &weights(&straight), 1e-7, 1e-6);
}

#[test]
fn a_non_finite_loss_stops_with_the_step_named() {
    let (config, data, tokenizer, train) = setup();
    let device = Device::flex().autodiff();
    // τ = 1e-300 is a valid f64 but 1/τ overflows f32: the logits are ±∞ and the loss NaN.
    let loss = LossConfig { tau: 1e-300, ..LossConfig::default() };
    let mut trainer = Trainer::new(Embedder::new(&config, 1, &device).unwrap(), train.clone(), loss, 0).unwrap();
    let indices = batch_indices(train.seed, 0, train.batch_size, 100).unwrap();
    let batch = make_batch(&data, Split::Train, &indices, 1, &config, &tokenizer, &device).unwrap();
    let err = trainer.step(&batch).unwrap_err();
    assert!(matches!(err, EgaError::NonFinite { step: 0, .. }), "{err}");
    assert!(err.to_string().contains("step 0"), "{err}");
    assert_eq!(trainer.step, 0, "the failed step is not counted");
}

#[test]
fn schedules_and_data_order() {
    let train = TrainConfig {
        steps: 100,
        warmup_steps: 10,
        alpha_start: 10,
        alpha_ramp: 10,
        lr: 1e-3,
        min_lr_ratio: 0.1,
        ..TrainConfig::default()
    };
    assert!((train.lr_at(0) - 1e-4).abs() < 1e-12 && (train.lr_at(9) - 1e-3).abs() < 1e-12);
    assert!((train.lr_at(99) - 1e-4).abs() < 2e-6, "cosine ends at lr·min_lr_ratio: {}", train.lr_at(99));
    assert!(train.lr_at(50) < train.lr_at(20));
    let loss = LossConfig::default();
    assert_eq!(train.loss_at(&loss, 5).alpha, 0.0);
    assert!((train.loss_at(&loss, 14).alpha - 0.5).abs() < 1e-12);
    assert_eq!(train.loss_at(&loss, 40).alpha, 1.0);
    // Each epoch is a permutation: no duplicates within a batch or an epoch, all pairs seen.
    let len = 50;
    let mut seen: Vec<usize> = (0..10).flat_map(|step| batch_indices(3, step, 5, len).unwrap()).collect();
    seen.sort();
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
    assert_ne!(batch_indices(3, 10, 5, len).unwrap(), batch_indices(3, 0, 5, len).unwrap(), "a new epoch reshuffles");
    assert_eq!(batch_indices(3, 7, 5, len).unwrap(), batch_indices(3, 7, 5, len).unwrap());
    assert!(batch_indices(3, 0, 60, len).is_err());
    assert!(TrainConfig { batch_size: 1, ..TrainConfig::default() }
        .validate()
        .unwrap_err()
        .to_string()
        .contains("batch_size"));
}

/// Regression guard (issue 4): a truncated, foreign or newer checkpoint is a clear error, never a
/// panic, and names the file.
#[test]
fn damaged_checkpoints_are_clear_errors() {
    let (config, _, tokenizer, train) = setup();
    let device = Device::flex();
    let run = std::env::temp_dir().join(format!("ega-test-damaged-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);
    let state = RunState::new(3, config.clone(), LossConfig::default(), train, "shapes");
    let model = Embedder::new(&config, 0, &device).unwrap();
    // A real (empty) optimizer state: loading checks that it is one (issue 16).
    let trainer = Trainer::new(
        Embedder::new(&config, 0, &device.clone().autodiff()).unwrap(),
        state.train.clone(),
        state.loss.clone(),
        0,
    )
    .unwrap();
    let folder = checkpoint::save(&run, &state, &model, &trainer.optimizer_bytes().unwrap(), &tokenizer).unwrap();
    assert!(checkpoint::load_latest(&run, &device).is_ok());

    let weights = folder.join("model.safetensors");
    let good = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &good[..good.len() / 2]).unwrap();
    let err = checkpoint::load_latest(&run, &device).err().expect("a truncated file must fail").to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    std::fs::write(&weights, b"not safetensors at all").unwrap();
    assert!(checkpoint::load_latest(&run, &device).err().unwrap().to_string().contains("model.safetensors"));
    // Weights of another model (the small preset) do not fit the tiny config.
    let other = Embedder::new(&ModelConfig::small(), 0, &device).unwrap();
    std::fs::write(&weights, ega_core::weights::model_to_bytes(&other).unwrap()).unwrap();
    let err = checkpoint::load_latest(&run, &device).err().unwrap().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    std::fs::write(&weights, &good).unwrap();

    let run_json = folder.join("run.json");
    let text = std::fs::read_to_string(&run_json).unwrap();
    std::fs::write(&run_json, text.replace("\"format_version\": 1", "\"format_version\": 99")).unwrap();
    let err = checkpoint::load_latest(&run, &device).err().unwrap().to_string();
    assert!(err.contains("format version 99"), "{err}");
    std::fs::write(&run_json, "{ truncated").unwrap();
    assert!(checkpoint::load_latest(&run, &device).err().unwrap().to_string().contains("run.json"));
    std::fs::remove_file(run.join("checkpoints/latest")).unwrap();
    assert!(checkpoint::load_latest(&run, &device).err().unwrap().to_string().contains("no checkpoint"));
}
