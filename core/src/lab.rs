//! The engine of the web demo's lab: two copies of one freshly initialised model trained in
//! lock-step on the same shapes batches, one with info-NCE and one with EGA, and what the lab
//! draws of them: a fixed batch with deliberate hard negatives (its `S`, `P`, `h`, `P̄`, `G` and a
//! 2-D PCA of its embeddings), and a small held-out evaluation.
//!
//! Nothing here reads a tensor back. Methods return tensors and host functions take the values
//! that were read, so the page can read asynchronously (WebGPU) while native tests read blocking.

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::bundle::Bundle;
use crate::data::shapes::{ShapesConfig, ShapesDataset};
use crate::data::{tokenizer_corpus, Dataset, RgbImage, Sample, Split};
use crate::embed::{query_input, target_input};
use crate::eval;
use crate::loss::{oracle, LossConfig, LossKind, Rescale};
use crate::model::{Embedder, EmbedderInput, ModelConfig};
use crate::tokenizer::Tokenizer;
use crate::train::{batch_indices, make_batch, PendingStep, StepStats, TrainBatch, TrainConfig, Trainer};
use crate::{EgaError, Result};

/// Steps of plain info-NCE before EGA's α starts to ramp in a lab started from scratch, and the
/// length of the ramp: a fresh model's embeddings are all alike, and un-rescaled EGA's extra push
/// would first drive captions and images apart as two clusters (see
/// [`TrainConfig::alpha_warmup`]). A lab that fine-tunes a trained model uses α from the start.
pub const ALPHA_START: usize = 5;
/// See [`ALPHA_START`].
pub const ALPHA_RAMP: usize = 15;

/// The lab's settings (the page keeps them in its URL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LabConfig {
    /// Model preset of both copies.
    pub preset: String,
    /// Pairs per batch `N` (2 to 16).
    pub batch_size: usize,
    /// Explicit hard-negative images per pair (0 to 3): `M = N·(1 + this)`.
    pub hard_negatives: usize,
    /// Temperature τ of both losses.
    pub tau: f64,
    /// EGA's α.
    pub alpha: f64,
    /// EGA's hardness temperature τ_h.
    pub tau_h: f64,
    /// EGA's rescale mode. `sum` by default, as in training: with `none`, the extra push of every
    /// negative adds up and at α = 1 drives a small batch's embeddings apart (the lab shows it).
    pub rescale: Rescale,
    /// Peak learning rate of both copies.
    pub lr: f64,
    /// Seed of the shared initialisation and data order.
    pub seed: u64,
    /// Held-out pairs evaluated (4 to 128).
    pub heldout: usize,
}

impl Default for LabConfig {
    fn default() -> Self {
        Self {
            preset: "tiny".into(),
            batch_size: 6,
            hard_negatives: 1,
            tau: 0.05,
            alpha: 1.0,
            tau_h: 0.05,
            rescale: Rescale::Sum,
            lr: 5e-4,
            seed: 0,
            heldout: 32,
        }
    }
}

impl LabConfig {
    /// Checks ranges (the loss options through [`LossConfig::validate`]).
    pub fn validate(&self) -> Result<()> {
        if !(2..=16).contains(&self.batch_size) {
            return Err(EgaError::config("batch_size", self.batch_size, "must be between 2 and 16"));
        }
        if self.hard_negatives > 3 {
            return Err(EgaError::config("hard_negatives", self.hard_negatives, "must be between 0 and 3"));
        }
        if !(4..=128).contains(&self.heldout) {
            return Err(EgaError::config("heldout", self.heldout, "must be between 4 and 128"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(EgaError::config("lr", self.lr, "must be a finite number > 0"));
        }
        for loss in self.losses() {
            loss.validate()?;
        }
        Ok(())
    }

    /// The two losses, in the lab's order: info-NCE, then EGA with the same τ.
    pub fn losses(&self) -> [LossConfig; 2] {
        [
            LossConfig::infonce(self.tau),
            LossConfig {
                kind: LossKind::Ega,
                tau: self.tau,
                alpha: self.alpha,
                tau_h: Some(self.tau_h),
                rescale: self.rescale,
                ..LossConfig::default()
            },
        ]
    }
}

/// What the lab shows of one model on its fixed batch.
#[derive(Debug, Clone, Serialize)]
pub struct LabView {
    /// `info-NCE` or `EGA`.
    pub loss: &'static str,
    /// `S`, `P`, `h`, `P̄`, `G` (row-major `[n, m]`) and the loss value, in float64.
    pub s: Vec<f64>,
    /// `P = softmax(S/τ)`.
    pub probs: Vec<f64>,
    /// The hardness `h` (0 on the diagonal).
    pub hardness: Vec<f64>,
    /// `P̄` (equal to `P` for info-NCE).
    pub amplified: Vec<f64>,
    /// `G = ∂L/∂S` as this loss sets it.
    pub grad: Vec<f64>,
    /// The loss of the batch.
    pub value: f64,
    /// 2-D PCA coordinates of the `n` query embeddings, then of the `m` target embeddings.
    pub pca: Vec<[f32; 2]>,
}

/// Held-out quality of one model.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LabMetrics {
    /// Text→image recall@1 among the held-out images.
    pub r1: f64,
    /// How often a caption scores its own image above its controlled hard-negative image.
    pub hard_negative_acc: f64,
}

/// Two models, info-NCE and EGA, trained side by side.
pub struct Lab {
    /// The settings.
    pub config: LabConfig,
    /// Both copies' shape.
    pub model_config: ModelConfig,
    /// The tokenizer both copies use.
    pub tokenizer: Tokenizer,
    dataset: ShapesDataset,
    trainers: [Trainer; 2],
    view: TrainBatch,
    view_samples: Vec<Sample>,
    heldout: [EmbedderInput; 3],
    device: Device,
}

/// Test-split pairs `0..n` with `negatives` hard-negative images each.
fn test_samples(dataset: &ShapesDataset, n: usize) -> Result<Vec<Sample>> {
    (0..n).map(|i| dataset.sample(Split::Test, i)).collect()
}

impl Lab {
    /// A lab on `device` (an autodiff device) from scratch: a tokenizer trained on the shapes
    /// captions, one model initialised from `config.seed` and copied for both losses.
    pub fn new(config: LabConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let mut model_config = ModelConfig::preset(&config.preset)?;
        let dataset = Self::dataset(&config, &model_config);
        let corpus = tokenizer_corpus(&dataset, 1000)?;
        let tokenizer = Tokenizer::train(corpus.iter(), model_config.vocab_size())?;
        model_config.set_vocab_size(tokenizer.vocab_size());
        let model = Embedder::new(&model_config, config.seed, device)?;
        Self::build(config, model, model_config, tokenizer, dataset, true, device)
    }

    /// A lab that fine-tunes two copies of a trained model (a bundle loaded on `device`, an
    /// autodiff device). `config.preset` is ignored: the bundle's shape wins.
    pub fn from_bundle(config: LabConfig, bundle: Bundle, device: &Device) -> Result<Self> {
        config.validate()?;
        let model_config = bundle.config.model.clone();
        let config = LabConfig { preset: model_config.preset.clone(), ..config };
        let dataset = Self::dataset(&config, &model_config);
        Self::build(config, bundle.model, model_config, bundle.tokenizer, dataset, false, device)
    }

    fn dataset(config: &LabConfig, model_config: &ModelConfig) -> ShapesDataset {
        ShapesDataset::new(ShapesConfig {
            image_size: model_config.image_size() as u32,
            negatives: config.hard_negatives.max(1),
            ..ShapesConfig::default()
        })
    }

    fn build(
        config: LabConfig,
        model: Embedder,
        model_config: ModelConfig,
        tokenizer: Tokenizer,
        dataset: ShapesDataset,
        fresh: bool,
        device: &Device,
    ) -> Result<Self> {
        let train = TrainConfig {
            steps: 5_000,
            batch_size: config.batch_size,
            hard_negatives: config.hard_negatives,
            lr: config.lr,
            warmup_steps: 10,
            alpha_warmup: fresh,
            alpha_start: ALPHA_START,
            alpha_ramp: ALPHA_RAMP,
            seed: config.seed,
            ..TrainConfig::default()
        };
        let [infonce, ega] = config.losses();
        let trainers = [Trainer::new(model.clone(), train.clone(), infonce, 0)?, Trainer::new(model, train, ega, 0)?];
        let view_samples = test_samples(&dataset, config.batch_size)?;
        let indices: Vec<usize> = (0..config.batch_size).collect();
        let view =
            make_batch(&dataset, Split::Test, &indices, config.hard_negatives, &model_config, &tokenizer, device)?;
        let heldout_samples = test_samples(&dataset, config.heldout)?;
        let captions: Vec<&str> = heldout_samples.iter().map(|s| s.caption.as_str()).collect();
        let images: Vec<_> = heldout_samples.iter().map(|s| &s.image).collect();
        let negatives: Vec<_> = heldout_samples.iter().map(|s| &s.negative_images[0]).collect();
        let heldout = [
            query_input(&model_config, &tokenizer, &captions, device)?,
            target_input(&model_config, &tokenizer, &images, device)?,
            target_input(&model_config, &tokenizer, &negatives, device)?,
        ];
        Ok(Self {
            config,
            model_config,
            tokenizer,
            dataset,
            trainers,
            view,
            view_samples,
            heldout,
            device: device.clone(),
        })
    }

    /// Steps both copies have taken.
    pub fn step(&self) -> usize {
        self.trainers[0].step
    }

    /// Changes τ, α, τ_h and the rescale mode of both losses from the next step on (the views
    /// use them at once).
    pub fn set_loss(&mut self, tau: f64, alpha: f64, tau_h: f64, rescale: Rescale) -> Result<()> {
        let config = LabConfig { tau, alpha, tau_h, rescale, ..self.config.clone() };
        config.validate()?;
        let [infonce, ega] = config.losses();
        self.trainers[0].loss = infonce;
        self.trainers[1].loss = ega;
        self.config = config;
        Ok(())
    }

    /// The batch of the next step (the same for both copies: same data order).
    pub fn next_batch(&self) -> Result<TrainBatch> {
        let len = self.dataset.len(Split::Train).unwrap_or(usize::MAX);
        let indices = batch_indices(self.config.seed, self.step(), self.config.batch_size, len)?;
        make_batch(
            &self.dataset,
            Split::Train,
            &indices,
            self.config.hard_negatives,
            &self.model_config,
            &self.tokenizer,
            &self.device,
        )
    }

    /// The first half of copy `which`'s step on `batch` (0: info-NCE, 1: EGA).
    pub fn forward(&self, which: usize, batch: &TrainBatch) -> Result<PendingStep> {
        self.trainers[which].forward(batch)
    }

    /// The second half, with the loss value read back.
    pub fn apply(&mut self, which: usize, pending: PendingStep, value: f64) -> Result<StepStats> {
        self.trainers[which].apply(pending, value)
    }

    /// Both copies' embeddings of the fixed batch: `[n + m, d]` (queries, then targets).
    pub fn view_embeddings(&self, which: usize) -> Tensor<2> {
        let model = self.trainers[which].model();
        Tensor::cat(vec![model.embed(&self.view.queries), model.embed(&self.view.targets)], 0)
    }

    /// The fixed batch's `(n, m)`.
    pub fn view_shape(&self) -> (usize, usize) {
        (self.view.n, self.view.m)
    }

    /// The fixed batch's captions (its queries).
    pub fn view_captions(&self) -> Vec<String> {
        self.view_samples.iter().map(|s| s.caption.clone()).collect()
    }

    /// The fixed batch's images in target order, each with the pair it belongs to: the `n`
    /// positives, then each pair's hard negatives in turn (as [`make_batch`] lays them out).
    pub fn view_targets(&self) -> Vec<(usize, &RgbImage)> {
        let positives = self.view_samples.iter().enumerate().map(|(i, s)| (i, &s.image));
        let negatives =
            self.view_samples.iter().enumerate().flat_map(|(i, s)| {
                s.negative_images.iter().take(self.config.hard_negatives).map(move |image| (i, image))
            });
        positives.chain(negatives).collect()
    }

    /// What the lab draws of copy `which`, from its view embeddings `values` (`[n + m, d]`, read
    /// back from [`Self::view_embeddings`]).
    pub fn view(&self, which: usize, values: &[f32]) -> Result<LabView> {
        let (n, m) = self.view_shape();
        let d = self.model_config.embed_dim();
        if values.len() != (n + m) * d {
            return Err(EgaError::Shape {
                context: "lab view",
                message: format!("{} values for {} embeddings of dimension {d}", values.len(), n + m),
            });
        }
        let (queries, targets) = values.split_at(n * d);
        let s: Vec<f64> = (0..n * m)
            .map(|k| {
                let (i, j) = (k / m, k % m);
                queries[i * d..(i + 1) * d].iter().zip(&targets[j * d..(j + 1) * d]).map(|(a, b)| (a * b) as f64).sum()
            })
            .collect();
        let loss = &self.config.losses()[which];
        let result = oracle::ega_one_direction(&s, n, m, loss);
        Ok(LabView {
            loss: if which == 0 { "info-NCE" } else { "EGA" },
            value: result.loss,
            probs: result.probs,
            hardness: result.hardness,
            amplified: result.amplified_probs,
            grad: result.grad,
            s,
            pca: pca_2d(values, n + m, d),
        })
    }

    /// Copy `which`'s embeddings of the held-out captions, images and hard-negative images:
    /// `[3·count, d]`.
    pub fn heldout_embeddings(&self, which: usize) -> Tensor<2> {
        let model = self.trainers[which].model();
        Tensor::cat(self.heldout.iter().map(|input| model.embed(input)).collect(), 0)
    }

    /// Held-out recall@1 and hard-negative accuracy from [`Self::heldout_embeddings`]' values.
    pub fn metrics(&self, values: &[f32]) -> Result<LabMetrics> {
        let count = self.config.heldout;
        let d = self.model_config.embed_dim();
        if values.len() != 3 * count * d {
            return Err(EgaError::Shape {
                context: "lab metrics",
                message: format!("{} values for 3 × {count} embeddings of dimension {d}", values.len()),
            });
        }
        let (text, rest) = values.split_at(count * d);
        let (image, negative) = rest.split_at(count * d);
        let (r1, hard_negative_acc) = eval::recall1_and_hard_negative_acc(text, image, negative, count, d);
        Ok(LabMetrics { r1, hard_negative_acc })
    }
}

/// 2-D principal-component coordinates of `rows` points of dimension `d` (row-major): centred,
/// the two leading eigenvectors of the covariance by power iteration with deflation, each signed
/// so that its largest component is positive (stable from one training step to the next).
pub fn pca_2d(points: &[f32], rows: usize, d: usize) -> Vec<[f32; 2]> {
    if rows == 0 || d == 0 {
        return Vec::new();
    }
    let mean: Vec<f64> =
        (0..d).map(|c| (0..rows).map(|r| points[r * d + c] as f64).sum::<f64>() / rows as f64).collect();
    let centred: Vec<f64> = (0..rows * d).map(|k| points[k] as f64 - mean[k % d]).collect();
    let mut covariance = vec![0.0f64; d * d];
    for r in 0..rows {
        let row = &centred[r * d..(r + 1) * d];
        for a in 0..d {
            for b in 0..d {
                covariance[a * d + b] += row[a] * row[b];
            }
        }
    }
    let mut components: Vec<Vec<f64>> = Vec::new();
    for _ in 0..2 {
        let mut v: Vec<f64> = (0..d).map(|c| 1.0 + (c as f64 * 0.618).fract()).collect();
        let mut eigenvalue = 0.0;
        for _ in 0..200 {
            let mut next: Vec<f64> = (0..d).map(|a| (0..d).map(|b| covariance[a * d + b] * v[b]).sum()).collect();
            for u in &components {
                let dot: f64 = next.iter().zip(u).map(|(x, y)| x * y).sum();
                next.iter_mut().zip(u).for_each(|(x, y)| *x -= dot * y);
            }
            let norm = next.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm < 1e-12 {
                break;
            }
            next.iter_mut().for_each(|x| *x /= norm);
            let delta: f64 = next.iter().zip(&v).map(|(x, y)| (x - y).abs()).sum();
            v = next;
            eigenvalue = norm;
            if delta < 1e-10 {
                break;
            }
        }
        let largest = v.iter().copied().fold(0.0f64, |a, x| if x.abs() > a.abs() { x } else { a });
        if largest < 0.0 {
            v.iter_mut().for_each(|x| *x = -*x);
        }
        if eigenvalue == 0.0 {
            v = vec![0.0; d];
        }
        components.push(v);
    }
    (0..rows)
        .map(|r| {
            let row = &centred[r * d..(r + 1) * d];
            let project = |u: &Vec<f64>| row.iter().zip(u).map(|(x, y)| x * y).sum::<f64>() as f32;
            [project(&components[0]), project(&components[1])]
        })
        .collect()
}
