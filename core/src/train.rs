//! One training step and the pieces of a training run, shared by the native trainer and the
//! browser lab: data order, batches with explicit hard negatives, the learning-rate and α
//! schedules, AdamW with gradient clipping, and a step that refuses a non-finite loss.
//!
//! Everything a step depends on is a function of `(seed, step)` or of the saved model and
//! optimizer state, so a run resumed from a checkpoint continues exactly as it would have.
//!
//! With [`TrainConfig::grad_cache_chunk`] a step is GradCache (Gao et al. 2021, "Scaling Deep
//! Contrastive Learning Batch Size under Memory Limited Setup"; VLM2Vec and QQMM-embed train with
//! it): the batch is embedded in chunks of rows without autodiff, the loss and its gradient with
//! respect to the embeddings are computed on the whole batch, then each chunk is embedded again
//! with autodiff and back-propagates its part of that cached gradient. The parameter gradients
//! are those of the whole batch (up to float rounding) while only one chunk's activations are
//! kept at a time. The embedder's forward has no randomness (no dropout, no augmentation), so
//! the second pass computes the very embeddings of the first and nothing needs replaying; a
//! model part that adds randomness must replay it there.

use burn::module::Module;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, RgbImage, Split};
use crate::embed::{image_tensor, prompts_input, prompts_part_input, query_prompts, target_prompts};
use crate::loss::{contrastive_loss, similarity_matrix, LossConfig};
use crate::model::{Embedder, EmbedderInput, FreezePart, LoraConfig, ModelConfig};
use crate::prompt::TokenizedPrompt;
use crate::tensor_util::scalar;
use crate::tokenizer::Tokenizer;
use crate::{EgaError, Result};

/// How to train; saved with every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Image–caption pairs per step (`N`).
    pub batch_size: usize,
    /// Explicit hard-negative images per pair appended to the targets (`M = N·(1 + this)` when
    /// the data has them).
    pub hard_negatives: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps (the learning rate, and EGA's α when `alpha_warmup`).
    pub warmup_steps: usize,
    /// The cosine schedule ends at `lr · min_lr_ratio`.
    pub min_lr_ratio: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Each parameter's gradient is rescaled to at most this L2 norm (burn's per-tensor norm
    /// clipping); 0 disables it.
    pub grad_clip: f64,
    /// Hold EGA's α at 0 (plain info-NCE) for the first `alpha_start` steps, then ramp it to its
    /// value over `alpha_ramp` steps. From a fresh model every embedding is nearly the same and
    /// un-rescaled EGA's extra push (each row's gradient sums to `α·Σ_j P·h / (Nτ) > 0`) drives
    /// queries and targets apart as two clusters (`S → −1`, loss `→ ln M`) before any contrast is
    /// learnt; once info-NCE has made the positives stand out, the extra push is small.
    pub alpha_warmup: bool,
    /// Steps of plain info-NCE before α starts to ramp (with `alpha_warmup`).
    pub alpha_start: usize,
    /// Steps over which α ramps from 0 to its value (with `alpha_warmup`).
    pub alpha_ramp: usize,
    /// Seed of the model initialisation and the data order.
    pub seed: u64,
    /// GradCache: embed queries and targets in chunks of at most this many rows, so that only
    /// one chunk's activations are held at a time (`None`: the whole batch at once). The
    /// gradients, and so the training, are those of the whole batch; each step embeds twice.
    pub grad_cache_chunk: Option<usize>,
    /// Model parts that take no gradient (and keep no optimizer state): `vision`, `connector`,
    /// `lm` (the decoder's LoRA adapters stay trainable when `lm` is frozen).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<FreezePart>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 500,
            batch_size: 16,
            hard_negatives: 1,
            lr: 5e-4,
            warmup_steps: 50,
            min_lr_ratio: 0.1,
            weight_decay: 0.01,
            grad_clip: 1.0,
            alpha_warmup: true,
            alpha_start: 50,
            alpha_ramp: 50,
            seed: 0,
            grad_cache_chunk: None,
            freeze: Vec::new(),
        }
    }
}

impl TrainConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(EgaError::config("steps", self.steps, "must be at least 1"));
        }
        if self.batch_size < 2 {
            return Err(EgaError::config(
                "batch_size",
                self.batch_size,
                "must be at least 2 (a contrastive batch needs negatives)",
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(EgaError::config("lr", self.lr, "must be a finite number > 0"));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(EgaError::config("min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(EgaError::config("weight_decay", self.weight_decay, "must be a finite number >= 0"));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return Err(EgaError::config(
                "grad_clip",
                self.grad_clip,
                "must be a finite number >= 0 (0 disables clipping)",
            ));
        }
        if self.grad_cache_chunk == Some(0) {
            return Err(EgaError::config(
                "grad_cache_chunk",
                0,
                "must be at least 1 (rows embedded at a time), or unset to embed the whole batch at once",
            ));
        }
        Ok(())
    }

    /// Learning rate at `step` (0-based): linear warm-up, then cosine decay to `lr·min_lr_ratio`.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        let floor = self.lr * self.min_lr_ratio;
        floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }

    /// The loss options at `step`: with `alpha_warmup`, α = 0 before `alpha_start`, then a linear
    /// ramp over `alpha_ramp` steps.
    pub fn loss_at(&self, loss: &LossConfig, step: usize) -> LossConfig {
        if !self.alpha_warmup {
            return loss.clone();
        }
        let ramp = if step < self.alpha_start {
            0.0
        } else {
            ((step - self.alpha_start + 1) as f64 / self.alpha_ramp.max(1) as f64).min(1.0)
        };
        LossConfig { alpha: loss.alpha * ramp, ..loss.clone() }
    }
}

/// The training-split indices of `step`: a fresh permutation of `0..len` per epoch, seeded by
/// `(seed, epoch)`, read `batch_size` at a time. No pair appears twice in a batch.
pub fn batch_indices(seed: u64, step: usize, batch_size: usize, len: usize) -> Result<Vec<usize>> {
    if batch_size > len {
        return Err(EgaError::Data(format!("the training split has {len} pairs, fewer than a batch of {batch_size}")));
    }
    let per_epoch = len / batch_size; // batches per epoch; the tail of each permutation is dropped
    let (epoch, position) = (step / per_epoch, step % per_epoch);
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    order.shuffle(&mut rng);
    Ok(order[position * batch_size..(position + 1) * batch_size].to_vec())
}

/// A batch ready for the model: `N` caption queries, `M >= N` image targets (the positives
/// first, then the explicit hard negatives).
#[derive(Debug, Clone)]
pub struct TrainBatch {
    /// The caption queries.
    pub queries: EmbedderInput,
    /// The image targets.
    pub targets: EmbedderInput,
    /// `N`.
    pub n: usize,
    /// `M`.
    pub m: usize,
    /// The prompts the inputs were laid out from, which GradCache lays out again a chunk of rows
    /// at a time (`None`: the batch cannot be chunked).
    pub prompts: Option<BatchPrompts>,
}

/// What a [`TrainBatch`]'s inputs were laid out from (host data; the images are the targets'
/// image tensor).
#[derive(Debug, Clone)]
pub struct BatchPrompts {
    /// The model config the layout follows (image slot, special tokens, context).
    pub config: ModelConfig,
    /// `N` query prompts.
    pub queries: Vec<TokenizedPrompt>,
    /// `M` target prompts.
    pub targets: Vec<TokenizedPrompt>,
}

impl TrainBatch {
    /// Lays out `queries` and `targets` (whose prompts refer to rows of `images`, `[Bi, C, H, W]`)
    /// on `device`, keeping the prompts for GradCache.
    pub fn new(
        config: &ModelConfig,
        queries: Vec<TokenizedPrompt>,
        targets: Vec<TokenizedPrompt>,
        images: Option<Tensor<4>>,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            queries: prompts_input(config, &queries, None, device)?,
            targets: prompts_input(config, &targets, images, device)?,
            n: queries.len(),
            m: targets.len(),
            prompts: Some(BatchPrompts { config: config.clone(), queries, targets }),
        })
    }
}

/// Loads the samples of `indices` and lays them out, with up to `hard_negatives` negative
/// images per pair appended to the targets.
pub fn make_batch(
    dataset: &dyn Dataset,
    split: Split,
    indices: &[usize],
    hard_negatives: usize,
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    device: &Device,
) -> Result<TrainBatch> {
    let samples = indices.iter().map(|&i| dataset.sample(split, i)).collect::<Result<Vec<_>>>()?;
    let captions: Vec<&str> = samples.iter().map(|s| s.caption.as_str()).collect();
    let mut images: Vec<&RgbImage> = samples.iter().map(|s| &s.image).collect();
    images.extend(samples.iter().flat_map(|s| s.negative_images.iter().take(hard_negatives)));
    let queries = query_prompts(config, tokenizer, &captions)?;
    let targets = target_prompts(config, tokenizer, images.len())?;
    TrainBatch::new(config, queries, targets, Some(image_tensor(config, &images, device)), device)
}

/// A text-only batch: pairs `indices` of `pairs`, the queries and the targets both laid out with
/// the query prompt (the prompt captions are embedded with, so that what a text stage teaches is
/// what the image side is later aligned to). No images, no hard negatives (`M = N`).
pub fn make_text_batch(
    pairs: &crate::data::text_pairs::TextPairs,
    indices: &[usize],
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    device: &Device,
) -> Result<TrainBatch> {
    let (mut queries, mut targets) = (Vec::with_capacity(indices.len()), Vec::with_capacity(indices.len()));
    for &index in indices {
        let (query, target) = pairs.pair(index)?;
        queries.push(query);
        targets.push(target);
    }
    let queries = query_prompts(config, tokenizer, &queries)?;
    let targets = query_prompts(config, tokenizer, &targets)?;
    TrainBatch::new(config, queries, targets, None, device)
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    /// The step just taken (0-based).
    pub step: usize,
    /// Its loss (before the update).
    pub loss: f64,
    /// Its learning rate.
    pub lr: f64,
    /// Its EGA α.
    pub alpha: f64,
}

/// A step's loss, computed but not yet applied (see [`Trainer::forward`]).
pub struct PendingStep {
    /// The one-element loss tensor (with its autodiff graph).
    pub loss: Tensor<1>,
    step: usize,
    lr: f64,
    alpha: f64,
    /// With GradCache: what the second pass needs.
    cache: Option<GradCache>,
}

/// GradCache's first pass, kept for the second: the whole batch's embeddings as autodiff leaves
/// (the loss's graph starts at them) and the chunks of rows they were embedded in.
struct GradCache {
    /// `[N, d]` query embeddings, a leaf that requires grad.
    queries: Tensor<2>,
    /// `[M, d]` target embeddings, a leaf that requires grad.
    targets: Tensor<2>,
    /// The query rows, a chunk at a time, in order (on the autodiff device).
    query_chunks: Vec<EmbedderInput>,
    /// The target rows, a chunk at a time, in order.
    target_chunks: Vec<EmbedderInput>,
}

impl GradCache {
    /// The first pass: `batch` laid out in chunks of at most `rows` rows and embedded by `model`
    /// without autodiff (no activations are kept beyond a chunk).
    fn embed(model: &Embedder, batch: &TrainBatch, rows: usize) -> Result<Self> {
        let prompts = batch.prompts.as_ref().ok_or_else(|| {
            EgaError::Data(
                "grad_cache_chunk is set but the batch keeps no prompts to chunk (use TrainBatch::new)".into(),
            )
        })?;
        let device = batch.queries.text_ids.device();
        let chunks = |all: &[TokenizedPrompt], images: Option<&Tensor<4>>| -> Result<Vec<EmbedderInput>> {
            all.chunks(rows).map(|part| prompts_part_input(&prompts.config, part, images, &device)).collect()
        };
        let query_chunks = chunks(&prompts.queries, batch.queries.images.as_ref())?;
        let target_chunks = chunks(&prompts.targets, batch.targets.images.as_ref())?;
        let frozen = model.valid(); // the same weights on the device without autodiff
        let leaf = |chunks: &[EmbedderInput]| -> Tensor<2> {
            let parts = chunks.iter().map(|chunk| frozen.embed(&chunk.without_autodiff())).collect();
            Tensor::cat(parts, 0).autodiff().require_grad() // [rows, d]
        };
        Ok(Self { queries: leaf(&query_chunks), targets: leaf(&target_chunks), query_chunks, target_chunks })
    }

    /// The second pass: every parameter's gradient of the loss whose backward gave `grads`,
    /// accumulated chunk by chunk. Each chunk is embedded again with autodiff and
    /// back-propagates `sum(embeddings ⊙ sg(d loss / d embeddings))`, whose parameter gradient
    /// is that chunk's share of the whole batch's.
    fn parameter_gradients(self, model: &Embedder, grads: burn::tensor::Gradients) -> Result<GradientsParams> {
        let missing = |what: &str| EgaError::Data(format!("GradCache: the loss has no gradient for the {what}"));
        let query_grad = self.queries.grad(&grads).ok_or_else(|| missing("query embeddings"))?; // [N, d]
        let target_grad = self.targets.grad(&grads).ok_or_else(|| missing("target embeddings"))?; // [M, d]
        drop(grads);
        let mut accumulator = GradientsAccumulator::<Embedder>::new();
        for (chunks, embedding_grad) in [(&self.query_chunks, query_grad), (&self.target_chunks, target_grad)] {
            let mut first = 0;
            for chunk in chunks {
                let cached = embedding_grad.clone().narrow(0, first, chunk.batch); // [rows, d], no autodiff
                let surrogate = (model.embed(chunk) * cached).sum(); // [1]
                accumulator.accumulate(model, GradientsParams::from_grads(surrogate.backward(), model));
                first += chunk.batch;
            }
        }
        Ok(accumulator.grads())
    }
}

/// The query embeddings of captions, kept while the text path has no trainable parameter (a
/// frozen decoder without adapters: the recipe's alignment stage, `--freeze lm`), so that each
/// caption runs through the language model once per stage instead of once per step.
///
/// Each caption is embedded on its own (a batch of one, no padding), so its cached embedding is
/// a function of the caption alone, the same whichever batch first met it; a resumed run, whose
/// cache starts empty, therefore computes the very values the uninterrupted run used.
#[derive(Default)]
struct CaptionCache {
    /// Query prompt ids → `[1, d]` embedding on the device (without autodiff).
    rows: std::collections::HashMap<Vec<u32>, Tensor<2>>,
    /// Captions found in the cache, and embedded, so far.
    hits: usize,
    misses: usize,
}

/// How the caption cache of a [`Trainer`] has done (see [`Trainer::caption_cache_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptionCacheStats {
    /// Captions embedded (once each).
    pub captions: usize,
    /// Query rows taken from the cache.
    pub hits: usize,
    /// Query rows embedded (and then cached).
    pub misses: usize,
}

/// A model, its optimizer and its place in the schedule.
pub struct Trainer {
    model: Option<Embedder>,
    optimizer: ModuleOptimizer,
    /// Present when the text path is frozen (see [`CaptionCache`]).
    captions: Option<std::sync::Mutex<CaptionCache>>,
    /// The training options.
    pub config: TrainConfig,
    /// The loss options (α at full strength; the schedule ramps it).
    pub loss: LossConfig,
    /// The next step to take.
    pub step: usize,
}

impl Trainer {
    /// A trainer for `model` (on an autodiff device) from step `step` (0 for a new run), with the
    /// parts `config.freeze` names frozen.
    pub fn new(model: Embedder, config: TrainConfig, loss: LossConfig, step: usize) -> Result<Self> {
        config.validate()?;
        loss.validate()?;
        // Every parameter trainable, then the stage's frozen parts (a model can come from a stage
        // that froze others).
        let model = model.set_require_grad(true).with_frozen(&config.freeze);
        if model.trainable_params().0 == 0 {
            return Err(EgaError::config(
                "freeze",
                config.freeze.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
                "leaves no parameter to train",
            ));
        }
        let mut adamw = AdamWConfig::new().with_weight_decay(config.weight_decay as f32);
        if config.grad_clip > 0.0 {
            adamw = adamw.with_grad_clipping(Some(GradientClippingConfig::Norm(config.grad_clip as f32)));
        }
        let captions = (!model.text_path_trainable()).then(Default::default);
        Ok(Self { model: Some(model), optimizer: adamw.init(), captions, config, loss, step })
    }

    /// What the caption cache did so far; `None` when the text path trains (no cache).
    pub fn caption_cache_stats(&self) -> Option<CaptionCacheStats> {
        let cache = self.captions.as_ref()?.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(CaptionCacheStats { captions: cache.rows.len(), hits: cache.hits, misses: cache.misses })
    }

    /// The `[N, d]` query embeddings of `batch` from the caption cache (embedding the captions it
    /// lacks), as a constant of the autodiff graph; `None` when there is no cache or the queries
    /// are not plain captions (they carry images, or the batch keeps no prompts).
    fn cached_queries(&self, model: &Embedder, batch: &TrainBatch) -> Result<Option<Tensor<2>>> {
        let (Some(cache), Some(prompts)) = (&self.captions, &batch.prompts) else { return Ok(None) };
        if batch.queries.images.is_some() || prompts.queries.iter().any(|p| p.image.is_some()) {
            return Ok(None);
        }
        let mut cache = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let device = batch.queries.text_ids.device();
        let mut frozen = None;
        let mut rows = Vec::with_capacity(prompts.queries.len());
        for prompt in &prompts.queries {
            if let Some(row) = cache.rows.get(&prompt.ids) {
                rows.push(row.clone());
                cache.hits += 1;
                continue;
            }
            let frozen = frozen.get_or_insert_with(|| model.valid());
            let input = prompts_part_input(&prompts.config, std::slice::from_ref(prompt), None, &device)?;
            let row = frozen.embed(&input.without_autodiff()); // [1, d]
            cache.rows.insert(prompt.ids.clone(), row.clone());
            cache.misses += 1;
            rows.push(row);
        }
        Ok(Some(Tensor::cat(rows, 0).autodiff())) // [N, d], no gradient flows into it
    }

    /// The model.
    pub fn model(&self) -> &Embedder {
        self.model.as_ref().expect("the model is only taken out during a step")
    }

    /// Takes the model out (ends training).
    pub fn into_model(mut self) -> Embedder {
        self.model.take().expect("the model is only taken out during a step")
    }

    /// The optimizer state as bytes (for checkpoints).
    pub fn optimizer_bytes(&self) -> Result<Vec<u8>> {
        self.optimizer
            .into_bytes()
            .map(|b| b.to_vec())
            .map_err(|err| EgaError::Data(format!("saving the optimizer state: {err:?}")))
    }

    /// Restores the optimizer state saved by [`Self::optimizer_bytes`].
    ///
    /// burn 0.22 materialises the loaded state on `Device::default()` (wgpu when it is compiled in)
    /// and moves it to each parameter's device on the next step. That lazily opens the default
    /// wgpu device, after which [`crate::device::wgpu_adapter`] could no longer open it with its
    /// adapter info ("Service already initialized"); so the adapter probe runs first (once per
    /// process), and the default device is the one it opened. When the default device is not
    /// wgpu (`BURN_DEVICE=flex`, which `native --device cpu` sets) nothing of wgpu is opened.
    pub fn load_optimizer_bytes(&mut self, bytes: Vec<u8>) -> Result<()> {
        #[cfg(not(target_family = "wasm"))]
        if crate::kernels::is_wgpu(&burn::tensor::Device::default()) {
            let _ = crate::device::wgpu_adapter();
        }
        let optimizer = std::mem::replace(&mut self.optimizer, AdamWConfig::new().init());
        self.optimizer = optimizer
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
            .map_err(|err| EgaError::Data(format!("loading the optimizer state: {err:?}")))?;
        Ok(())
    }

    /// One step on `batch`: loss, backward, AdamW. A NaN or infinite loss is an error that names
    /// the step; the model is then left as it was before the step. (Blocking readback of the loss:
    /// native, or the CPU backend in the browser; WebGPU uses [`Self::forward`] + [`Self::apply`]
    /// with an asynchronous read in between.)
    pub fn step(&mut self, batch: &TrainBatch) -> Result<StepStats> {
        let pending = self.forward(batch)?;
        let value = scalar(pending.loss.clone())?;
        self.apply(pending, value)
    }

    /// The first half of a step: the loss of `batch` under this step's schedule, not yet read
    /// back nor applied. With GradCache this is the first pass (embeddings in chunks, without
    /// autodiff) and the loss of the whole batch.
    pub fn forward(&self, batch: &TrainBatch) -> Result<PendingStep> {
        let loss_config = self.config.loss_at(&self.loss, self.step);
        let model = self.model();
        let (similarities, cache) = match self.config.grad_cache_chunk {
            None => {
                let queries = match self.cached_queries(model, batch)? {
                    Some(queries) => queries,
                    None => model.embed(&batch.queries),
                };
                (similarity_matrix(queries, model.embed(&batch.targets)), None)
            }
            Some(rows) => {
                let cache = GradCache::embed(model, batch, rows)?;
                (similarity_matrix(cache.queries.clone(), cache.targets.clone()), Some(cache))
            }
        };
        let loss = contrastive_loss(similarities, &loss_config)?;
        Ok(PendingStep { loss, step: self.step, lr: self.config.lr_at(self.step), alpha: loss_config.alpha, cache })
    }

    /// Every parameter's gradient of `pending`'s loss (with GradCache, the second pass).
    fn gradients(&self, pending: PendingStep) -> Result<GradientsParams> {
        let grads = pending.loss.backward();
        match pending.cache {
            None => Ok(GradientsParams::from_grads(grads, self.model())),
            Some(cache) => cache.parameter_gradients(self.model(), grads),
        }
    }

    /// The loss of `batch` under this step's schedule and every parameter's gradient, what
    /// [`Self::step`] would apply, without applying it (blocking readback: native only). For
    /// tests and diagnostics, e.g. that GradCache gives the whole batch's gradients.
    pub fn loss_and_gradients(&self, batch: &TrainBatch) -> Result<(f64, GradientsParams)> {
        let pending = self.forward(batch)?;
        let value = scalar(pending.loss.clone())?;
        Ok((value, self.gradients(pending)?))
    }

    /// The second half: `value` is the loss read back from `pending.loss`; backward and AdamW.
    pub fn apply(&mut self, pending: PendingStep, value: f64) -> Result<StepStats> {
        let (step, lr, alpha) = (pending.step, pending.lr, pending.alpha);
        if step != self.step {
            return Err(EgaError::Data(format!("a pending step {step} applied at step {}", self.step)));
        }
        if !value.is_finite() {
            return Err(EgaError::NonFinite { step, value });
        }
        let grads = self.gradients(pending)?;
        let model = self.model.take().expect("the model is only taken out during a step");
        self.model = Some(self.optimizer.step(lr, model, grads));
        self.step += 1;
        Ok(StepStats { step, loss: value, lr, alpha })
    }
}

/// One stage of a staged recipe: its own steps, schedule, loss, frozen parts and LoRA adapters.
/// A run's stages follow each other in one run folder; each starts a fresh optimizer (the set of
/// trained parameters changes) and its own learning-rate schedule, and the step count runs on
/// across them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// What the stage is for (`align`, `contrastive`, …), for logs.
    pub name: String,
    /// Its training options (`steps` is the stage's length; `freeze` its frozen parts).
    pub train: TrainConfig,
    /// Its loss.
    pub loss: LossConfig,
    /// The decoder's adapters during the stage (`smolvlm` only): a stage whose adapters differ
    /// from the model's re-builds the model with fresh ones (the base weights carried over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
    /// A text stage's pairs ([`crate::data::text_pairs::TextPairs::open`]'s spec): its batches
    /// are text against text ([`make_text_batch`]) instead of the run's image–text data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_pairs: Option<String>,
}

/// The stage that global step `step` belongs to and the step within it; past the last stage,
/// `(stages.len(), 0)`.
pub fn stage_at(stages: &[Stage], step: usize) -> (usize, usize) {
    let mut first = 0;
    for (index, stage) in stages.iter().enumerate() {
        if step < first + stage.train.steps {
            return (index, step - first);
        }
        first += stage.train.steps;
    }
    (stages.len(), 0)
}

/// The steps of all `stages`.
pub fn total_steps(stages: &[Stage]) -> usize {
    stages.iter().map(|s| s.train.steps).sum()
}

/// Checks every stage (each one's options, and LoRA only where the model can carry it).
pub fn validate_stages(stages: &[Stage], model: &ModelConfig) -> Result<()> {
    if stages.is_empty() {
        return Err(EgaError::config("stages", "[]", "a recipe needs at least one stage"));
    }
    for stage in stages {
        stage.train.validate()?;
        stage.loss.validate()?;
        if let Some(lora) = &stage.lora {
            lora.validate()?;
            if model.smolvlm().is_none() {
                return Err(EgaError::config(
                    "lora",
                    &stage.name,
                    "LoRA adapters need a smolvlm model (--init-lm, --init or a smolvlm preset)",
                ));
            }
        }
    }
    Ok(())
}
