//! The embedder: prompt assembly on the device, the language model, last-token pooling and
//! L2 normalisation.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use rand::SeedableRng;

use super::language::LanguageModel;
use super::layers::Init;
use super::projector::Projector;
use super::vision::VisionEncoder;
use super::ModelConfig;
use crate::prompt::AssembledBatch;
use crate::tensor_util::{floats, ints};
use crate::{EgaError, Result};

/// Attention-bias value of a masked position: `exp` of it underflows to exactly 0.
const MASKED: f32 = -1.0e9;

/// The whole model.
#[derive(Module, Debug)]
pub struct Embedder {
    /// The ViT.
    pub vision: VisionEncoder,
    /// Patch merge + MLP into the language model's width.
    pub projector: Projector,
    /// The decoder-only language model.
    pub language: LanguageModel,
}

/// A batch ready for the embedder, as tensors on its device.
#[derive(Debug, Clone)]
pub struct EmbedderInput {
    /// `[B, Lt]` text ids.
    pub text_ids: Tensor<2, Int>,
    /// `[B·L]` source row of each position (see [`AssembledBatch`]).
    pub source: Tensor<1, Int>,
    /// `[B, 1, L, L]` causal + key-padding attention bias.
    pub mask_bias: Tensor<4>,
    /// `[B]` flat index `b·L + length_b − 1` of each row's last real position.
    pub last: Tensor<1, Int>,
    /// `B`, `L`.
    pub batch: usize,
    /// `L`.
    pub seq_len: usize,
    /// Images the batch refers to, `[Bi, C, H, W]` in `[0, 1]`.
    pub images: Option<Tensor<4>>,
}

impl EmbedderInput {
    /// Moves an assembled host batch and its images to `device`.
    pub fn new(batch: &AssembledBatch, images: Option<Tensor<4>>, device: &Device) -> Result<Self> {
        let given = images.as_ref().map(|i| i.dims()[0]).unwrap_or(0);
        if given != batch.num_images {
            return Err(EgaError::Shape {
                context: "embedder input",
                message: format!("the prompts refer to {} images but {given} were given", batch.num_images),
            });
        }
        let (b, l) = (batch.batch, batch.seq_len);
        let last = batch.lengths.iter().enumerate().map(|(row, &len)| (row * l + len - 1) as i64).collect();
        Ok(Self {
            text_ids: ints(batch.text_ids.clone(), [b, batch.text_len], device),
            source: ints(batch.source.clone(), [b * l], device),
            mask_bias: floats(batch.attention_bias(MASKED), [b, 1, l, l], device),
            last: ints(last, [b], device),
            batch: b,
            seq_len: l,
            images,
        })
    }
}

impl Embedder {
    /// A freshly initialised model; the same `seed` gives the same weights on every device.
    pub fn new(config: &ModelConfig, seed: u64, device: &Device) -> Result<Self> {
        config.validate()?;
        let mut init = Init { rng: rand::rngs::StdRng::seed_from_u64(seed), device, created: 0 };
        Ok(Self {
            vision: VisionEncoder::new(&mut init, &config.vision),
            projector: Projector::new(&mut init, config.vision.width, config.language.width, config.vision.grid()),
            language: LanguageModel::new(&mut init, &config.language),
        })
    }

    /// Image tokens for the language model.
    ///
    /// # Shapes
    /// - images: `[Bi, C, H, W]` → `[Bi, K, D]`
    pub fn image_tokens(&self, images: Tensor<4>) -> Tensor<3> {
        self.projector.forward(self.vision.forward(images))
    }

    /// Final hidden states of every position.
    ///
    /// # Shapes
    /// - → `[B, L, D]`
    pub fn hidden_states(&self, input: &EmbedderInput) -> Tensor<3> {
        let text = self.language.embed_tokens(input.text_ids.clone()); // [B, Lt, D]
        let [b, lt, d] = text.dims();
        let mut pool = text.reshape([b * lt, d]); // [B·Lt, D]
        if let Some(images) = &input.images {
            let tokens = self.image_tokens(images.clone()); // [Bi, K, D]
            let [bi, k, _] = tokens.dims();
            pool = Tensor::cat(vec![pool, tokens.reshape([bi * k, d])], 0); // [B·Lt + Bi·K, D]
        }
        let inputs = pool.select(0, input.source.clone()).reshape([input.batch, input.seq_len, d]); // [B, L, D]
        self.language.forward(inputs, &input.mask_bias)
    }

    /// Unit-norm embeddings: the hidden state at each row's last real token, L2-normalised.
    ///
    /// # Shapes
    /// - → `[B, D]`
    pub fn embed(&self, input: &EmbedderInput) -> Tensor<2> {
        let hidden = self.hidden_states(input); // [B, L, D]
        let [b, l, d] = hidden.dims();
        let pooled = hidden.reshape([b * l, d]).select(0, input.last.clone()); // [B, D]
        l2_normalize(pooled)
    }
}

/// Rows scaled to unit L2 norm.
///
/// # Shapes
/// - x: `[B, D]` → `[B, D]`
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).add_scalar(1e-12).sqrt(); // [B, 1]
    x / norm
}
