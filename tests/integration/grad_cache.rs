//! GradCache (issue 17): a step with `grad_cache_chunk` gives the whole batch's loss and
//! parameter gradients, on flex and on wgpu (where the fused loss kernel runs); a chunked run
//! resumes exactly; a chunk of 0 rows is a clear error.

use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use ega_core::checkpoint::{self, RunState};
use ega_core::data::shapes::{ShapesConfig, ShapesDataset};
use ega_core::data::{Dataset, Split};
use ega_core::embed::{image_tensor, prompts_input, prompts_part_input, query_prompts, target_prompts};
use ega_core::loss::{LossConfig, LossKind, Rescale};
use ega_core::model::{Embedder, ModelConfig};
use ega_core::tensor_util::to_f64_vec;
use ega_core::tokenizer::Tokenizer;
use ega_core::train::{batch_indices, make_batch, TrainBatch, TrainConfig, Trainer};
use ega_tests::{assert_close, devices};

fn setup() -> (ModelConfig, ShapesDataset, Tokenizer) {
    let mut config = ModelConfig::tiny();
    let data = ShapesDataset::new(ShapesConfig { image_size: 32, ..ShapesConfig::default() });
    let corpus = ega_core::data::tokenizer_corpus(&data, 200).unwrap();
    let tokenizer = Tokenizer::train(corpus.iter(), config.vocab_size()).unwrap();
    config.set_vocab_size(tokenizer.vocab_size());
    (config, data, tokenizer)
}

/// 5 pairs + 1 hard negative each (`N = 5`, `M = 10`), α at full strength from step 0.
fn train_config(grad_cache_chunk: Option<usize>) -> TrainConfig {
    TrainConfig {
        steps: 10,
        batch_size: 5,
        hard_negatives: 1,
        warmup_steps: 1,
        alpha_warmup: false,
        seed: 3,
        grad_cache_chunk,
        ..TrainConfig::default()
    }
}

fn batch_at(
    trainer: &Trainer,
    data: &dyn Dataset,
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    device: &Device,
) -> TrainBatch {
    let len = data.len(Split::Train).unwrap();
    let indices = batch_indices(trainer.config.seed, trainer.step, trainer.config.batch_size, len).unwrap();
    make_batch(data, Split::Train, &indices, trainer.config.hard_negatives, config, tokenizer, device).unwrap()
}

/// The gradients of a few parameters spread over the model, by name.
fn some_gradients(model: &Embedder, grads: &GradientsParams) -> Vec<(&'static str, Vec<f64>)> {
    let mini = model.as_mini().unwrap();
    let read = |tensor: Option<Tensor<2>>| to_f64_vec(tensor.expect("the parameter has a gradient")).unwrap();
    vec![
        ("language.token_embed", read(grads.get::<2>(mini.language.token_embed.id))),
        ("language.blocks[0].attn.qkv.weight", read(grads.get::<2>(mini.language.blocks[0].attn.qkv.weight.id))),
        ("vision.patch_embed.weight", read(grads.get::<2>(mini.vision.patch_embed.weight.id))),
        ("vision.blocks[1].fc2.weight", read(grads.get::<2>(mini.vision.blocks[1].fc2.weight.id))),
        ("projector.fc1.weight", read(grads.get::<2>(mini.projector.fc1.weight.id))),
        ("projector.fc2.weight", read(grads.get::<2>(mini.projector.fc2.weight.id))),
    ]
}

/// Issue 17: one step's loss and parameter gradients with chunks of 2 and of 3 rows (3 divides
/// neither `N = 5` nor `M = 10`) equal those of the whole batch at once to 1e-5, for info-NCE and
/// EGA with hard negatives (the fused kernels on wgpu), and LLaVE and HCL, on flex and on wgpu.
/// (Measured: the largest difference is about 2e-6, on the token embedding.)
#[test]
fn grad_cache_gives_the_whole_batch_gradients() {
    let (config, data, tokenizer) = setup();
    for (name, device) in devices("grad_cache_gives_the_whole_batch_gradients") {
        let device = device.autodiff();
        // Two plain steps first, so that the embeddings differ and EGA's hardness is not flat.
        let mut warm =
            Trainer::new(Embedder::new(&config, 3, &device).unwrap(), train_config(None), LossConfig::infonce(0.05), 0)
                .unwrap();
        for _ in 0..2 {
            let batch = batch_at(&warm, &data, &config, &tokenizer, &device);
            warm.step(&batch).unwrap();
        }
        let model = warm.into_model();
        let llave = LossConfig { kind: LossKind::Llave, ..LossConfig::infonce(0.05) };
        let hcl = LossConfig { kind: LossKind::Hcl, ..LossConfig::infonce(0.05) };
        for loss in [LossConfig::infonce(0.05), LossConfig::ega(0.05, 1.0), llave, hcl] {
            // Clones share parameter ids, so the gradients of the three trainers line up.
            let trainer = |chunk| Trainer::new(model.clone(), train_config(chunk), loss.clone(), 2).unwrap();
            let whole = trainer(None);
            let batch = batch_at(&whole, &data, &config, &tokenizer, &device);
            assert_eq!((batch.n, batch.m), (5, 10));
            let (whole_loss, whole_grads) = whole.loss_and_gradients(&batch).unwrap();
            let expected = some_gradients(&model, &whole_grads);
            assert!(expected.iter().all(|(_, g)| g.iter().any(|v| *v != 0.0)), "{name}: gradients must not vanish");
            for chunk in [2, 3] {
                let (chunked_loss, chunked_grads) = trainer(Some(chunk)).loss_and_gradients(&batch).unwrap();
                let what = format!("{name}, {}, chunks of {chunk}", loss.kind);
                assert_close(&format!("{what}: loss"), &[chunked_loss], &[whole_loss], 1e-6, 1e-6);
                for ((part, actual), (_, expected)) in some_gradients(&model, &chunked_grads).iter().zip(&expected) {
                    assert_close(&format!("{what}: d loss / d {part}"), actual, expected, 1e-5, 0.0);
                }
            }
        }
    }
}

/// A part of a batch laid out on its own carries exactly the images its prompts refer to, in any
/// order and repeated: its embeddings are those rows of the whole batch's.
#[test]
fn a_part_of_a_batch_embeds_as_in_the_whole() {
    let (config, data, tokenizer) = setup();
    let device = Device::flex();
    let model = Embedder::new(&config, 1, &device).unwrap();
    let samples: Vec<_> = (0..4).map(|i| data.sample(Split::Train, i).unwrap()).collect();
    let images: Vec<_> = samples.iter().map(|s| &s.image).collect();
    let prompts = target_prompts(&config, &tokenizer, images.len()).unwrap();
    let pixels = image_tensor(&config, &images, &device);
    let whole =
        to_f64_vec(model.embed(&prompts_input(&config, &prompts, Some(pixels.clone()), &device).unwrap())).unwrap();
    let rows = [3, 1, 3];
    let picked: Vec<_> = rows.iter().map(|&r| prompts[r].clone()).collect();
    let part = prompts_part_input(&config, &picked, Some(&pixels), &device).unwrap();
    assert_eq!(part.images.as_ref().map(|i| i.dims()[0]), Some(2), "images 3 and 1, once each");
    let part = to_f64_vec(model.embed(&part)).unwrap();
    let d = whole.len() / 4;
    let expected: Vec<f64> = rows.iter().flat_map(|&r| whole[r * d..(r + 1) * d].to_vec()).collect();
    assert_close("part embeddings vs the whole batch's rows", &part, &expected, 1e-6, 1e-5);
    let captions =
        prompts_part_input(&config, &query_prompts(&config, &tokenizer, &["a red disc"]).unwrap(), None, &device)
            .unwrap();
    assert!(captions.images.is_none());
}

fn run_steps(
    trainer: &mut Trainer,
    data: &dyn Dataset,
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    until: usize,
    device: &Device,
) -> Vec<f64> {
    let mut losses = Vec::new();
    while trainer.step < until {
        let batch = batch_at(trainer, data, config, tokenizer, device);
        losses.push(trainer.step(&batch).unwrap().loss);
    }
    losses
}

/// Issue 17: a run with chunks, saved at step 3 and resumed, gives the same losses and weights as
/// the uninterrupted run; the chunk size is saved with the run, and a `run.json` written before
/// the option existed still loads (without chunks).
#[test]
fn a_grad_cache_run_resumes_exactly() {
    let (config, data, tokenizer) = setup();
    let device = Device::flex().autodiff();
    let train = TrainConfig {
        steps: 6,
        batch_size: 6,
        warmup_steps: 2,
        alpha_start: 2,
        alpha_ramp: 2,
        ..train_config(Some(4))
    };
    let loss = LossConfig { rescale: Rescale::Sum, ..LossConfig::default() };
    let new_trainer =
        || Trainer::new(Embedder::new(&config, train.seed, &device).unwrap(), train.clone(), loss.clone(), 0).unwrap();

    let mut straight = new_trainer();
    let uninterrupted = run_steps(&mut straight, &data, &config, &tokenizer, 6, &device);

    let mut first = new_trainer();
    let mut resumed_losses = run_steps(&mut first, &data, &config, &tokenizer, 3, &device);
    let run = std::env::temp_dir().join(format!("ega-test-grad-cache-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);
    let state = RunState::new(first.step, config.clone(), loss.clone(), train.clone(), "shapes");
    checkpoint::save(&run, &state, first.model(), &first.optimizer_bytes().unwrap(), &tokenizer).unwrap();
    drop(first);
    let loaded = checkpoint::load_latest(&run, &device).unwrap();
    assert_eq!(loaded.state, state);
    assert_eq!(loaded.state.train.grad_cache_chunk, Some(4), "the chunk size is saved with the run");
    let mut second = Trainer::new(loaded.model, loaded.state.train, loaded.state.loss, loaded.state.step).unwrap();
    second.load_optimizer_bytes(loaded.optimizer).unwrap();
    resumed_losses.extend(run_steps(&mut second, &data, &config, &loaded.tokenizer, 6, &device));
    let _ = std::fs::remove_dir_all(&run);

    assert_close("loss curve, resumed vs uninterrupted", &resumed_losses, &uninterrupted, 1e-6, 1e-6);
    assert!(uninterrupted[0] != uninterrupted[5], "training must move the loss");
    let weights = |t: &Trainer| to_f64_vec(t.model().as_mini().unwrap().language.token_embed.val()).unwrap();
    assert_close("weights after 6 steps", &weights(&second), &weights(&straight), 1e-7, 1e-6);

    // A run.json from before the option: no field, no chunks.
    let old: TrainConfig = serde_json::from_str(r#"{"steps": 3, "batch_size": 4}"#).unwrap();
    assert_eq!(old.grad_cache_chunk, None);
}

/// Issue 17: a chunk of 0 rows is an error that names the option and the value; so is a batch
/// that keeps no prompts to chunk.
#[test]
fn bad_grad_cache_settings_are_clear_errors() {
    let err = train_config(Some(0)).validate().unwrap_err().to_string();
    assert!(err.contains("grad_cache_chunk") && err.contains('0'), "{err}");
    let (config, data, tokenizer) = setup();
    let device = Device::flex().autodiff();
    let model = || Embedder::new(&config, 0, &device).unwrap();
    let err = Trainer::new(model(), train_config(Some(0)), LossConfig::default(), 0).err().expect("chunk 0 is refused");
    assert!(err.to_string().contains("grad_cache_chunk"), "{err}");

    let mut trainer = Trainer::new(model(), train_config(Some(2)), LossConfig::default(), 0).unwrap();
    let mut batch = batch_at(&trainer, &data, &config, &tokenizer, &device);
    batch.prompts = None;
    let err = trainer.step(&batch).unwrap_err().to_string();
    assert!(err.contains("grad_cache_chunk"), "{err}");
    assert_eq!(trainer.step, 0, "the failed step is not counted");
}
