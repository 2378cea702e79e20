//! The embedder: prompt assembly on the device, the language model, last-token pooling and
//! L2 normalisation.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use rand::SeedableRng;

use super::language::LanguageModel;
use super::layers::Init;
use super::projector::Projector;
use super::smolvlm::SmolVlm;
use super::vision::VisionEncoder;
use super::{Architecture, FreezePart, ModelConfig};
use crate::prompt::{AssembledBatch, Pooling};
use crate::tensor_util::{floats, ints};
use crate::{EgaError, Result};

/// Attention-bias value of a masked position: `exp` of it underflows to exactly 0.
pub(crate) const MASKED: f32 = -1.0e9;

/// An embedder of any architecture: token and image inputs to unit-norm embeddings.
///
/// Saved weights carry no variant name (stores skip enum variants), so a `mini` model's tensor
/// names are those of [`MiniEmbedder`], a `smolvlm` model's those of Hugging Face.
#[derive(Module, Debug)]
pub enum Embedder {
    /// The from-scratch model.
    Mini(MiniEmbedder),
    /// SigLIP + Idefics3 connector + Llama decoder.
    Smolvlm(SmolVlm),
}

impl Embedder {
    /// A freshly initialised model; the same `seed` gives the same weights on every device.
    pub fn new(config: &ModelConfig, seed: u64, device: &Device) -> Result<Self> {
        config.validate()?;
        Ok(match &config.architecture {
            Architecture::Mini(_) => Embedder::Mini(MiniEmbedder::new(config, seed, device)?),
            Architecture::Smolvlm(smolvlm) => Embedder::Smolvlm(SmolVlm::build(smolvlm, None, &[], seed, device)?.0),
        })
    }

    /// The `mini` model inside, if it is one.
    pub fn as_mini(&self) -> Option<&MiniEmbedder> {
        match self {
            Embedder::Mini(mini) => Some(mini),
            Embedder::Smolvlm(_) => None,
        }
    }

    /// The `smolvlm` model inside, if it is one.
    pub fn as_smolvlm(&self) -> Option<&SmolVlm> {
        match self {
            Embedder::Smolvlm(smolvlm) => Some(smolvlm),
            Embedder::Mini(_) => None,
        }
    }

    /// Final hidden states of every position.
    ///
    /// # Shapes
    /// - → `[B, L, D]`
    pub fn hidden_states(&self, input: &EmbedderInput) -> Tensor<3> {
        match self {
            Embedder::Mini(mini) => mini.hidden_states(input),
            Embedder::Smolvlm(smolvlm) => smolvlm.hidden_states(input),
        }
    }

    /// Unit-norm embeddings: the hidden state at each row's last real token (or, when the input
    /// was made for mean pooling, the mean over its real tokens), L2-normalised.
    ///
    /// # Shapes
    /// - → `[B, D]`
    pub fn embed(&self, input: &EmbedderInput) -> Tensor<2> {
        pool(self.hidden_states(input), input)
    }

    /// The model with the parameters of `parts` frozen: they take no gradient and the optimizer
    /// keeps no state for them (a `smolvlm` decoder's LoRA adapters stay trainable when `Lm` is).
    pub fn with_frozen(self, parts: &[FreezePart]) -> Self {
        use super::smolvlm::Part;
        match self {
            Embedder::Mini(mut m) => {
                for part in parts {
                    match part {
                        FreezePart::Vision => m.vision = m.vision.no_grad(),
                        FreezePart::Connector => m.projector = m.projector.no_grad(),
                        FreezePart::Lm => m.language = m.language.no_grad(),
                    }
                }
                Embedder::Mini(m)
            }
            Embedder::Smolvlm(s) => {
                let parts: Vec<Part> = parts
                    .iter()
                    .map(|part| match part {
                        FreezePart::Vision => Part::Vision,
                        FreezePart::Connector => Part::Connector,
                        FreezePart::Lm => Part::Text,
                    })
                    .collect();
                Embedder::Smolvlm(s.with_frozen(&parts))
            }
        }
    }

    /// The same weights as a model of `config`, whose shapes must be this model's except for the
    /// LoRA adapters, which `config` may add, change or drop (new ones start fresh from `seed`;
    /// see [`SmolVlm::rebuild`]). A `mini` model has no adapters: `config` must be its own.
    pub fn rebuild(&self, config: &ModelConfig, seed: u64, device: &Device) -> Result<Self> {
        match (self, &config.architecture) {
            (Embedder::Smolvlm(model), Architecture::Smolvlm(smolvlm)) => {
                Ok(Embedder::Smolvlm(model.rebuild(smolvlm, seed, device)?.0))
            }
            (Embedder::Mini(mini), Architecture::Mini(_)) => Ok(Embedder::Mini(mini.clone())),
            _ => Err(EgaError::Data("a model cannot be re-built as another architecture".into())),
        }
    }

    /// The model with its LoRA adapters merged into the weights they adapt, and its config without
    /// adapters; `None` when it has none. Blocking read-back: native only.
    pub fn merged_lora(&self, config: &ModelConfig, device: &Device) -> Result<Option<(ModelConfig, Self)>> {
        let (Embedder::Smolvlm(model), Architecture::Smolvlm(smolvlm)) = (self, &config.architecture) else {
            return Ok(None);
        };
        Ok(model.merged(smolvlm, device)?.map(|(plain, merged)| {
            (ModelConfig { architecture: Architecture::Smolvlm(plain), ..config.clone() }, Embedder::Smolvlm(merged))
        }))
    }

    /// Parameters that take a gradient (those not frozen), and all parameters.
    pub fn trainable_params(&self) -> (usize, usize) {
        let mut count = ParamCount(0, 0);
        self.visit(&mut count);
        (count.0, count.1)
    }

    /// Whether a text-only input's embedding depends on a trainable parameter: false when the
    /// language model (and, in a `smolvlm` decoder, every LoRA adapter) is frozen, in which case
    /// a caption's embedding does not change from step to step (the trainer then caches it).
    pub fn text_path_trainable(&self) -> bool {
        match self {
            Embedder::Mini(m) => trainable_params_of(&m.language) > 0,
            Embedder::Smolvlm(s) => trainable_params_of(&s.text_model) > 0,
        }
    }

    /// Parameter counts by part, named as the architecture names its parts.
    pub fn part_sizes(&self) -> Vec<(&'static str, usize)> {
        match self {
            Embedder::Mini(m) => vec![
                ("vision", m.vision.num_params()),
                ("projector", m.projector.num_params()),
                ("language", m.language.num_params()),
            ],
            Embedder::Smolvlm(s) => vec![
                ("vision_model", s.vision_model.num_params()),
                ("connector", s.connector.num_params()),
                ("text_model", s.text_model.num_params()),
            ],
        }
    }
}

/// Counts parameters: (taking a gradient, all).
struct ParamCount(usize, usize);

impl burn::module::ModuleVisitor for ParamCount {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
        let n: usize = param.val().dims().iter().product();
        self.1 += n;
        if param.is_require_grad() {
            self.0 += n;
        }
    }
}

/// Parameters of `module` that take a gradient.
fn trainable_params_of<M: Module>(module: &M) -> usize {
    let mut count = ParamCount(0, 0);
    module.visit(&mut count);
    count.0
}

/// The embedding `input` asks for from `hidden`: [`pool_last`], or the weighted sum of its
/// [`EmbedderInput::mean_weights`] (the mean over real positions), L2-normalised.
///
/// # Shapes
/// - hidden: `[B, L, D]` → `[B, D]`
pub fn pool(hidden: Tensor<3>, input: &EmbedderInput) -> Tensor<2> {
    match &input.mean_weights {
        None => pool_last(hidden, &input.last),
        Some(weights) => {
            let [b, _, d] = hidden.dims();
            l2_normalize((hidden * weights.clone()).sum_dim(1).reshape([b, d]))
        }
    }
}

/// The hidden state at each row's last real position, L2-normalised.
///
/// # Shapes
/// - hidden: `[B, L, D]`, last: `[B]` flat indices → `[B, D]`
pub fn pool_last(hidden: Tensor<3>, last: &Tensor<1, Int>) -> Tensor<2> {
    let [b, l, d] = hidden.dims();
    l2_normalize(hidden.reshape([b * l, d]).select(0, last.clone()))
}

/// The `mini` model.
#[derive(Module, Debug)]
pub struct MiniEmbedder {
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
    /// `[B, L, 1]` pooling weights for [`Pooling::Mean`]: `1 / length_b` at each real position of
    /// row `b`, 0 at padding; `None` for [`Pooling::Last`].
    pub mean_weights: Option<Tensor<3>>,
}

impl EmbedderInput {
    /// Moves an assembled host batch and its images to `device`, ready for `pooling`.
    pub fn new(batch: &AssembledBatch, images: Option<Tensor<4>>, pooling: Pooling, device: &Device) -> Result<Self> {
        let given = images.as_ref().map(|i| i.dims()[0]).unwrap_or(0);
        if given != batch.num_images {
            return Err(EgaError::Shape {
                context: "embedder input",
                message: format!("the prompts refer to {} images but {given} were given", batch.num_images),
            });
        }
        let (b, l) = (batch.batch, batch.seq_len);
        let last = batch.lengths.iter().enumerate().map(|(row, &len)| (row * l + len - 1) as i64).collect();
        let mean_weights = (pooling == Pooling::Mean).then(|| {
            let mut weights = vec![0.0f32; b * l];
            for (row, &len) in batch.lengths.iter().enumerate() {
                weights[row * l..row * l + len].fill(1.0 / len as f32);
            }
            floats(weights, [b, l, 1], device)
        });
        Ok(Self {
            text_ids: ints(batch.text_ids.clone(), [b, batch.text_len], device),
            source: ints(batch.source.clone(), [b * l], device),
            mask_bias: floats(batch.attention_bias(MASKED), [b, 1, l, l], device),
            last: ints(last, [b], device),
            batch: b,
            seq_len: l,
            images,
            mean_weights,
        })
    }

    /// The same input on the device without autodiff (for a model from `Module::valid`).
    pub fn without_autodiff(&self) -> Self {
        Self {
            text_ids: self.text_ids.clone().without_autodiff(),
            source: self.source.clone().without_autodiff(),
            mask_bias: self.mask_bias.clone().without_autodiff(),
            last: self.last.clone().without_autodiff(),
            batch: self.batch,
            seq_len: self.seq_len,
            images: self.images.clone().map(Tensor::without_autodiff),
            mean_weights: self.mean_weights.clone().map(Tensor::without_autodiff),
        }
    }
}

impl MiniEmbedder {
    /// A freshly initialised model; the same `seed` gives the same weights on every device.
    pub fn new(config: &ModelConfig, seed: u64, device: &Device) -> Result<Self> {
        config.validate()?;
        let mini = config.mini().ok_or_else(|| EgaError::Data("not a mini config".into()))?;
        let mut init = Init { rng: rand::rngs::StdRng::seed_from_u64(seed), device, created: 0 };
        Ok(Self {
            vision: VisionEncoder::new(&mut init, &mini.vision),
            projector: Projector::new(&mut init, mini.vision.width, mini.language.width, mini.vision.grid()),
            language: LanguageModel::new(&mut init, &mini.language),
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

    /// Unit-norm embeddings: the hidden state at each row's last real token (or, when the input
    /// was made for mean pooling, the mean over its real tokens), L2-normalised.
    ///
    /// # Shapes
    /// - → `[B, D]`
    pub fn embed(&self, input: &EmbedderInput) -> Tensor<2> {
        pool(self.hidden_states(input), input)
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
