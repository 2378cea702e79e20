//! The miniature LLaVA-style multimodal embedder.
//!
//! ```text
//! image ─► ViT ─► projector (2×2 merge + MLP) ─► K image tokens ─┐
//! text  ─► token ids ─► token embeddings ────────────────────────┤ spliced at <image>
//!                                                                ▼
//!   decoder-only LM (RoPE, RMSNorm, SwiGLU, causal) ─► hidden state at <eos> ─► L2 norm
//! ```

mod embedder;
pub mod fused;
pub mod language;
pub mod layers;
pub mod projector;
pub mod smolvlm;
pub mod vision;

pub use embedder::{l2_normalize, pool, pool_last, Embedder, EmbedderInput, MiniEmbedder};

use serde::{Deserialize, Serialize};

pub use smolvlm::{LlamaConfig, LoraConfig, SiglipConfig};

pub use crate::prompt::ImageSlot;
use crate::prompt::{PromptConfig, SpecialTokens};
use crate::{EgaError, Result};

/// The vision encoder's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionConfig {
    /// Side of the (square) input image in pixels.
    pub image_size: usize,
    /// Side of a patch in pixels.
    pub patch_size: usize,
    /// Colour channels (3: RGB).
    pub channels: usize,
    /// Token width `Dv`.
    pub width: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP hidden width as a multiple of `width`.
    pub mlp_ratio: usize,
}

impl VisionConfig {
    /// Side of the patch grid.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Number of patches `P`.
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Number of image tokens `K` after the 2×2 merge.
    pub fn image_tokens(&self) -> usize {
        self.num_patches() / 4
    }
}

/// The language model's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanguageConfig {
    /// Vocabulary size (special tokens included).
    pub vocab_size: usize,
    /// Model width `D` (also the embedding dimension).
    pub width: usize,
    /// Decoder blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// SwiGLU hidden width `F` (≈ 8/3·D, rounded to a multiple of 4, as in LLaMA).
    pub ffn_hidden: usize,
    /// Longest prompt, image tokens included.
    pub max_seq_len: usize,
    /// RoPE base θ.
    pub rope_theta: f64,
}

/// The `mini` architecture: the small from-scratch model (ViT → 2×2 merge MLP → LLaMA-style LM).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MiniConfig {
    /// The vision encoder.
    pub vision: VisionConfig,
    /// The language model.
    pub language: LanguageConfig,
}

/// The `smolvlm` architecture (Idefics3 / SmolVLM): Hugging Face's `vision_config`,
/// `text_config` and `scale_factor`, plus the longest prompt this embedder accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmolVlmConfig {
    /// The SigLIP vision tower.
    pub vision_config: SiglipConfig,
    /// The Llama-family decoder.
    pub text_config: LlamaConfig,
    /// Pixel-shuffle factor of the connector (a `g×g` patch grid becomes `(g/s)²` image tokens).
    pub scale_factor: usize,
    /// Longest prompt, image tokens included (at most `text_config.max_position_embeddings`).
    pub max_seq_len: usize,
    /// Low-rank adapters on the decoder's projections (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
}

/// A part of a model that training can freeze (`--freeze vision,lm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FreezePart {
    /// The vision tower (`mini`: `vision`; `smolvlm`: `vision_model`).
    Vision,
    /// What maps image features into the language model (`projector` / `connector`).
    Connector,
    /// The language model (`language` / `text_model`), token embeddings included; its LoRA
    /// adapters, when it has them, stay trainable.
    Lm,
}

impl std::str::FromStr for FreezePart {
    type Err = EgaError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "vision" | "vision_model" => Ok(Self::Vision),
            "connector" | "projector" => Ok(Self::Connector),
            "lm" | "language" | "text" | "text_model" | "decoder" => Ok(Self::Lm),
            other => Err(EgaError::config("freeze", other, "expected vision, connector or lm")),
        }
    }
}

impl std::fmt::Display for FreezePart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Vision => "vision",
            Self::Connector => "connector",
            Self::Lm => "lm",
        })
    }
}

/// The architecture a model is built with: serialised as `"architecture": "mini" | "smolvlm"`
/// beside its own fields. Configs written before architectures existed have no such field and
/// are `mini`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "architecture", rename_all = "lowercase")]
pub enum Architecture {
    /// The from-scratch model.
    Mini(MiniConfig),
    /// SigLIP + Idefics3 connector + Llama decoder.
    Smolvlm(SmolVlmConfig),
}

/// Everything that defines an embedder; saved with every checkpoint and bundle: the architecture
/// and its shape, plus what is not part of any architecture (the special-token ids the prompts
/// use, and the prompt templates).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The preset this config started from (`tiny`, `small`, `base`, a checkpoint's name), or `custom`.
    pub preset: String,
    /// The architecture and its shape.
    pub architecture: Architecture,
    /// Ids of `<pad>`, `<bos>`, `<eos>`, `<image>` (and the image wrapper tokens of `smolvlm`).
    pub special: SpecialTokens,
    /// Query and target instructions.
    pub prompts: PromptConfig,
}

/// The serialised form of [`ModelConfig`] (the architecture's fields beside `preset`).
#[derive(Serialize, Deserialize)]
struct ModelConfigRepr {
    preset: String,
    #[serde(flatten)]
    architecture: Architecture,
    #[serde(default)]
    special: SpecialTokens,
    #[serde(default)]
    prompts: PromptConfig,
}

/// The `mini` config exactly as it was serialised before architectures existed: the model id of
/// a `mini` model hashes this, so ids of earlier bundles and indexes stay valid.
#[derive(Serialize)]
struct LegacyMiniRepr<'a> {
    preset: &'a str,
    vision: &'a VisionConfig,
    language: &'a LanguageConfig,
    special: &'a SpecialTokens,
    prompts: &'a PromptConfig,
}

impl Serialize for ModelConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        ModelConfigRepr {
            preset: self.preset.clone(),
            architecture: self.architecture.clone(),
            special: self.special,
            prompts: self.prompts.clone(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ModelConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let mut value = serde_json::Value::deserialize(deserializer)?;
        if let Some(object) = value.as_object_mut() {
            // Configs from before the architecture seam are `mini`.
            object.entry("architecture").or_insert_with(|| serde_json::Value::from("mini"));
        }
        let repr: ModelConfigRepr = serde_json::from_value(value).map_err(serde::de::Error::custom)?;
        Ok(Self { preset: repr.preset, architecture: repr.architecture, special: repr.special, prompts: repr.prompts })
    }
}

/// The names of the presets, smallest first.
pub const PRESETS: [&str; 4] = ["tiny", "small", "base", "tiny-smolvlm"];

impl ModelConfig {
    /// For tests: 32 px images, 2 + 2 layers, width 64 (16 patches → 4 image tokens).
    pub fn tiny() -> Self {
        Self {
            preset: "tiny".into(),
            architecture: Architecture::Mini(MiniConfig {
                vision: VisionConfig {
                    image_size: 32,
                    patch_size: 8,
                    channels: 3,
                    width: 64,
                    layers: 2,
                    heads: 4,
                    mlp_ratio: 4,
                },
                language: LanguageConfig {
                    vocab_size: 512,
                    width: 64,
                    layers: 2,
                    heads: 4,
                    ffn_hidden: 172,
                    max_seq_len: 64,
                    rope_theta: 10_000.0,
                },
            }),
            special: SpecialTokens::default(),
            prompts: PromptConfig::default(),
        }
    }

    /// The default: 64 px images, ViT 4 × 128, LM 4 × 256, about 4.7 M parameters; trains on a
    /// laptop CPU in minutes (64 patches → 16 image tokens).
    pub fn small() -> Self {
        Self {
            preset: "small".into(),
            architecture: Architecture::Mini(MiniConfig {
                vision: VisionConfig {
                    image_size: 64,
                    patch_size: 8,
                    channels: 3,
                    width: 128,
                    layers: 4,
                    heads: 4,
                    mlp_ratio: 4,
                },
                language: LanguageConfig {
                    vocab_size: 2048,
                    width: 256,
                    layers: 4,
                    heads: 8,
                    ffn_hidden: 688,
                    max_seq_len: 96,
                    rope_theta: 10_000.0,
                },
            }),
            special: SpecialTokens::default(),
            prompts: PromptConfig::default(),
        }
    }

    /// For GPUs: 128 px images, ViT 6 × 384 (16 px patches), LM 8 × 512, about 41 M parameters.
    pub fn base() -> Self {
        Self {
            preset: "base".into(),
            architecture: Architecture::Mini(MiniConfig {
                vision: VisionConfig {
                    image_size: 128,
                    patch_size: 16,
                    channels: 3,
                    width: 384,
                    layers: 6,
                    heads: 6,
                    mlp_ratio: 4,
                },
                language: LanguageConfig {
                    vocab_size: 8192,
                    width: 512,
                    layers: 8,
                    heads: 8,
                    ffn_hidden: 1376,
                    max_seq_len: 128,
                    rope_theta: 10_000.0,
                },
            }),
            special: SpecialTokens::default(),
            prompts: PromptConfig::default(),
        }
    }

    /// A tiny random `smolvlm` model (SigLIP 32 px, width 32, 2 layers; a 2-layer Llama decoder of
    /// width 64 with grouped-query attention): the staged recipe and LoRA at a size tests run in
    /// seconds, with no checkpoint.
    pub fn tiny_smolvlm() -> Self {
        Self {
            preset: "tiny-smolvlm".into(),
            architecture: Architecture::Smolvlm(SmolVlmConfig {
                vision_config: SiglipConfig {
                    hidden_size: 32,
                    intermediate_size: 64,
                    num_hidden_layers: 2,
                    num_attention_heads: 4,
                    num_channels: 3,
                    image_size: 32,
                    patch_size: 8,
                    layer_norm_eps: 1e-6,
                    stem: None,
                },
                text_config: LlamaConfig {
                    vocab_size: 512,
                    hidden_size: 64,
                    intermediate_size: 172,
                    num_hidden_layers: 2,
                    num_attention_heads: 4,
                    num_key_value_heads: 2,
                    rms_norm_eps: 1e-5,
                    rope_theta: 10_000.0,
                    max_position_embeddings: 64,
                    tie_word_embeddings: true,
                },
                scale_factor: 2,
                max_seq_len: 64,
                lora: None,
            }),
            special: SpecialTokens::default(),
            prompts: PromptConfig::default(),
        }
    }

    /// A preset by name.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "tiny" => Ok(Self::tiny()),
            "small" => Ok(Self::small()),
            "base" => Ok(Self::base()),
            "tiny-smolvlm" => Ok(Self::tiny_smolvlm()),
            other => Err(EgaError::config("preset", other, format!("expected one of {}", PRESETS.join(", ")))),
        }
    }

    /// The `mini` shapes, when this is a `mini` model.
    pub fn mini(&self) -> Option<&MiniConfig> {
        match &self.architecture {
            Architecture::Mini(mini) => Some(mini),
            Architecture::Smolvlm(_) => None,
        }
    }

    /// The `mini` shapes, mutably (tests and presets edit them).
    pub fn mini_mut(&mut self) -> Option<&mut MiniConfig> {
        match &mut self.architecture {
            Architecture::Mini(mini) => Some(mini),
            Architecture::Smolvlm(_) => None,
        }
    }

    /// The `smolvlm` shapes, when this is a `smolvlm` model.
    pub fn smolvlm(&self) -> Option<&SmolVlmConfig> {
        match &self.architecture {
            Architecture::Smolvlm(smolvlm) => Some(smolvlm),
            Architecture::Mini(_) => None,
        }
    }

    /// The architecture's name as configs spell it (`mini`, `smolvlm`).
    pub fn architecture_name(&self) -> &'static str {
        match &self.architecture {
            Architecture::Mini(_) => "mini",
            Architecture::Smolvlm(_) => "smolvlm",
        }
    }

    /// Embedding dimension (the language model's width).
    pub fn embed_dim(&self) -> usize {
        match &self.architecture {
            Architecture::Mini(m) => m.language.width,
            Architecture::Smolvlm(s) => s.text_config.hidden_size,
        }
    }

    /// Side of the square images the model reads, in pixels.
    pub fn image_size(&self) -> usize {
        match &self.architecture {
            Architecture::Mini(m) => m.vision.image_size,
            Architecture::Smolvlm(s) => s.vision_config.image_size,
        }
    }

    /// Image tokens `K` one image becomes in the language model's input.
    pub fn image_tokens(&self) -> usize {
        match &self.architecture {
            Architecture::Mini(m) => m.vision.image_tokens(),
            Architecture::Smolvlm(s) => s.vision_config.num_patches() / (s.scale_factor * s.scale_factor),
        }
    }

    /// How one `<image>` of a prompt is laid out: text ids before the `K` image tokens, `K`, text
    /// ids after. `mini`: just the image tokens; `smolvlm`: as the SmolVLM processor writes one
    /// global image, `<fake_token_around_image> <global-img> <image>×K <fake_token_around_image>`.
    pub fn image_slot(&self) -> ImageSlot {
        let tokens = self.image_tokens();
        match &self.architecture {
            Architecture::Mini(_) => ImageSlot { before: vec![], tokens, after: vec![] },
            Architecture::Smolvlm(_) => {
                let around = self.special.image_around.into_iter();
                let before = around.clone().chain(self.special.image_global).collect();
                ImageSlot { before, tokens, after: around.collect() }
            }
        }
    }

    /// Size of the token embedding table.
    pub fn vocab_size(&self) -> usize {
        match &self.architecture {
            Architecture::Mini(m) => m.language.vocab_size,
            Architecture::Smolvlm(s) => s.text_config.vocab_size,
        }
    }

    /// Sets the size of the token embedding table (to a trained tokenizer's).
    pub fn set_vocab_size(&mut self, vocab_size: usize) {
        match &mut self.architecture {
            Architecture::Mini(m) => m.language.vocab_size = vocab_size,
            Architecture::Smolvlm(s) => s.text_config.vocab_size = vocab_size,
        }
    }

    /// Longest prompt, image tokens included.
    pub fn max_seq_len(&self) -> usize {
        match &self.architecture {
            Architecture::Mini(m) => m.language.max_seq_len,
            Architecture::Smolvlm(s) => s.max_seq_len,
        }
    }

    /// The bytes a model id hashes for this config (see `weights::model_id`). A `mini`
    /// config hashes its pre-architecture serialisation, so earlier ids stay valid.
    pub fn id_bytes(&self) -> Result<Vec<u8>> {
        let bytes = match &self.architecture {
            Architecture::Mini(m) => serde_json::to_vec(&LegacyMiniRepr {
                preset: &self.preset,
                vision: &m.vision,
                language: &m.language,
                special: &self.special,
                prompts: &self.prompts,
            }),
            Architecture::Smolvlm(_) => serde_json::to_vec(self),
        };
        Ok(bytes?)
    }

    /// Checks that the shapes fit together.
    pub fn validate(&self) -> Result<()> {
        match &self.architecture {
            Architecture::Mini(mini) => mini.validate()?,
            Architecture::Smolvlm(smolvlm) => smolvlm.validate()?,
        }
        let s = &self.special;
        let largest_special = [Some(s.pad), Some(s.bos), Some(s.eos), Some(s.image), s.image_around, s.image_global]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0) as usize;
        if largest_special >= self.vocab_size() {
            return Err(EgaError::config("vocab_size", self.vocab_size(), "must exceed every special token id"));
        }
        self.prompts.validate()
    }
}

/// Bounds on the sizes a config may ask for, checked before anything is allocated (issue 16: an
/// image size of 2^40 overflowed a multiplication, a width of 2^40 asked for a petabyte). Each is
/// far above any model this project runs (SmolVLM-2.2B: width 2048, FFN 8192, 24 layers, vocab
/// 49 280; Llama-3-70B: width 8192, FFN 28 672, 80 layers, vocab 128 256, context 131 072).
pub mod bounds {
    /// Largest image side in pixels.
    pub const IMAGE_SIZE: usize = 4096;
    /// Largest image channel count.
    pub const CHANNELS: usize = 16;
    /// Largest width of any layer (model width, FFN width, MLP width).
    pub const WIDTH: usize = 65_536;
    /// Largest number of layers of a tower.
    pub const LAYERS: usize = 1024;
    /// Largest vocabulary.
    pub const VOCAB: usize = 1 << 24;
    /// Largest sequence length / context.
    pub const SEQ_LEN: usize = 1 << 20;
    /// Largest parameter count (2^36 ≈ 69 G parameters, 256 GiB as f32).
    pub const PARAMETERS: u128 = 1 << 36;
    /// Largest attention score matrix of one sample, heads × positions² (2^34 values, 64 GiB).
    pub const ATTENTION_SCORES: u128 = 1 << 34;
}

/// Refuses `value` above `bound` for `field`, with the bound in the message.
pub(crate) fn check_bound(field: &'static str, value: usize, bound: usize) -> Result<()> {
    if value > bound {
        return Err(EgaError::config(field, value, format!("must be at most {bound}")));
    }
    Ok(())
}

/// The product of `factors` without overflow (`u128`; `None` past it).
pub(crate) fn checked_product(factors: &[usize]) -> Option<u128> {
    factors.iter().try_fold(1u128, |acc, &f| acc.checked_mul(f as u128))
}

/// Refuses a parameter count or attention size computed from `terms` (a sum of products) above
/// `bound`; `what` names the quantity in the message.
pub(crate) fn check_total(field: &'static str, what: &str, terms: &[&[usize]], bound: u128) -> Result<()> {
    let total = terms.iter().try_fold(0u128, |acc, term| checked_product(term).and_then(|p| acc.checked_add(p)));
    match total {
        Some(total) if total <= bound => Ok(()),
        total => Err(EgaError::config(
            field,
            total.map_or("more than 2^128".to_string(), |t| t.to_string()),
            format!("{what} must be at most {bound}"),
        )),
    }
}

impl MiniConfig {
    /// Checks that the shapes fit together and stay inside [`bounds`].
    pub fn validate(&self) -> Result<()> {
        let v = &self.vision;
        let l = &self.language;
        for (field, value, bound) in [
            ("vision.image_size", v.image_size, bounds::IMAGE_SIZE),
            ("vision.patch_size", v.patch_size, bounds::IMAGE_SIZE),
            ("vision.channels", v.channels, bounds::CHANNELS),
            ("vision.width", v.width, bounds::WIDTH),
            ("vision.layers", v.layers, bounds::LAYERS),
            ("vision.heads", v.heads, bounds::WIDTH),
            ("vision.mlp_ratio", v.mlp_ratio, bounds::WIDTH),
            ("language.vocab_size", l.vocab_size, bounds::VOCAB),
            ("language.width", l.width, bounds::WIDTH),
            ("language.layers", l.layers, bounds::LAYERS),
            ("language.heads", l.heads, bounds::WIDTH),
            ("language.ffn_hidden", l.ffn_hidden, bounds::WIDTH),
            ("language.max_seq_len", l.max_seq_len, bounds::SEQ_LEN),
        ] {
            check_bound(field, value, bound)?;
        }
        let mlp = v.width.saturating_mul(v.mlp_ratio);
        check_bound("vision.mlp_ratio", mlp, bounds::WIDTH).map_err(|_| {
            EgaError::config(
                "vision.mlp_ratio",
                v.mlp_ratio,
                format!("times vision.width {} must be at most {}", v.width, bounds::WIDTH),
            )
        })?;
        let positive = [
            ("vision.image_size", v.image_size),
            ("vision.patch_size", v.patch_size),
            ("vision.channels", v.channels),
            ("vision.width", v.width),
            ("vision.heads", v.heads),
            ("vision.mlp_ratio", v.mlp_ratio),
            ("language.vocab_size", l.vocab_size),
            ("language.width", l.width),
            ("language.heads", l.heads),
            ("language.ffn_hidden", l.ffn_hidden),
            ("language.max_seq_len", l.max_seq_len),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(EgaError::config(field, value, "must be > 0"));
            }
        }
        if v.image_size % v.patch_size != 0 || v.grid() % 2 != 0 {
            return Err(EgaError::config(
                "vision.image_size",
                v.image_size,
                format!("must be an even multiple of patch_size {} (the projector merges 2×2 patches)", v.patch_size),
            ));
        }
        if v.width % v.heads != 0 {
            return Err(EgaError::config("vision.heads", v.heads, format!("must divide vision.width {}", v.width)));
        }
        if l.width % l.heads != 0 || (l.width / l.heads) % 2 != 0 {
            return Err(EgaError::config(
                "language.heads",
                l.heads,
                format!("must divide language.width {} into an even head size (RoPE rotates pairs)", l.width),
            ));
        }
        if !(l.rope_theta.is_finite() && l.rope_theta > 1.0) {
            return Err(EgaError::config("language.rope_theta", l.rope_theta, "must be a finite number > 1"));
        }
        let patches = v.grid() * v.grid();
        check_total(
            "language.width",
            "the parameter count",
            &[
                &[v.channels, v.patch_size, v.patch_size, v.width],
                &[patches, v.width],
                &[v.layers, v.width, v.width, 4],
                &[v.layers, v.width, mlp, 2],
                &[v.width, 4, l.width],
                &[l.width, l.width],
                &[l.vocab_size, l.width],
                &[l.layers, l.width, l.width, 4],
                &[l.layers, l.width, l.ffn_hidden, 3],
            ],
            bounds::PARAMETERS,
        )?;
        check_total(
            "vision.image_size",
            "vision heads × patches²",
            &[&[v.heads, patches, patches]],
            bounds::ATTENTION_SCORES,
        )?;
        check_total(
            "language.max_seq_len",
            "language heads × max_seq_len²",
            &[&[l.heads, l.max_seq_len, l.max_seq_len]],
            bounds::ATTENTION_SCORES,
        )?;
        Ok(())
    }
}

impl SmolVlmConfig {
    /// Checks that the shapes fit together and stay inside [`bounds`].
    pub fn validate(&self) -> Result<()> {
        let v = &self.vision_config;
        for (field, value, bound) in [
            ("vision_config.hidden_size", v.hidden_size, bounds::WIDTH),
            ("vision_config.intermediate_size", v.intermediate_size, bounds::WIDTH),
            ("vision_config.num_hidden_layers", v.num_hidden_layers, bounds::LAYERS),
            ("vision_config.num_attention_heads", v.num_attention_heads, bounds::WIDTH),
            ("vision_config.num_channels", v.num_channels, bounds::CHANNELS),
            ("vision_config.image_size", v.image_size, bounds::IMAGE_SIZE),
            ("vision_config.patch_size", v.patch_size, bounds::IMAGE_SIZE),
            ("scale_factor", self.scale_factor, bounds::IMAGE_SIZE),
            ("max_seq_len", self.max_seq_len, bounds::SEQ_LEN),
        ] {
            check_bound(field, value, bound)?;
        }
        for (field, value) in [
            ("vision_config.hidden_size", v.hidden_size),
            ("vision_config.intermediate_size", v.intermediate_size),
            ("vision_config.num_attention_heads", v.num_attention_heads),
            ("vision_config.num_channels", v.num_channels),
            ("vision_config.image_size", v.image_size),
            ("vision_config.patch_size", v.patch_size),
            ("scale_factor", self.scale_factor),
            ("max_seq_len", self.max_seq_len),
        ] {
            if value == 0 {
                return Err(EgaError::config(field, value, "must be > 0"));
            }
        }
        if v.image_size % v.patch_size != 0 || v.grid() % self.scale_factor != 0 {
            return Err(EgaError::config(
                "vision_config.image_size",
                v.image_size,
                format!(
                    "must be a multiple of patch_size {} whose patch grid scale_factor {} divides",
                    v.patch_size, self.scale_factor
                ),
            ));
        }
        if let Some(stem) = v.stem {
            if v.patch_size != stem.stride() || v.num_channels != 3 {
                return Err(EgaError::config(
                    "vision_config.patch_size",
                    v.patch_size,
                    format!("must be the stem's stride {} (with num_channels 3) when a stem is set", stem.stride()),
                ));
            }
        }
        if v.hidden_size % v.num_attention_heads != 0 {
            return Err(EgaError::config(
                "vision_config.num_attention_heads",
                v.num_attention_heads,
                format!("must divide vision_config.hidden_size {}", v.hidden_size),
            ));
        }
        if !(v.layer_norm_eps.is_finite() && v.layer_norm_eps > 0.0) {
            return Err(EgaError::config(
                "vision_config.layer_norm_eps",
                v.layer_norm_eps,
                "must be a finite number > 0",
            ));
        }
        self.text_config.validate()?;
        if let Some(lora) = &self.lora {
            lora.validate()?;
        }
        let t = &self.text_config;
        let patches = v.grid() * v.grid();
        let merged = v.hidden_size.saturating_mul(self.scale_factor).saturating_mul(self.scale_factor);
        check_total(
            "vision_config.hidden_size",
            "the vision tower and connector's parameter count",
            &[
                &[v.patch_dim(), v.hidden_size],
                &[patches, v.hidden_size],
                &[v.num_hidden_layers, v.hidden_size, v.hidden_size, 4],
                &[v.num_hidden_layers, v.hidden_size, v.intermediate_size, 2],
                &[merged, t.hidden_size],
            ],
            bounds::PARAMETERS,
        )?;
        check_total(
            "vision_config.image_size",
            "vision heads × patches²",
            &[&[v.num_attention_heads, patches, patches]],
            bounds::ATTENTION_SCORES,
        )?;
        check_total(
            "max_seq_len",
            "text heads × max_seq_len²",
            &[&[t.num_attention_heads, self.max_seq_len, self.max_seq_len]],
            bounds::ATTENTION_SCORES,
        )?;
        if self.max_seq_len > self.text_config.max_position_embeddings {
            return Err(EgaError::config(
                "max_seq_len",
                self.max_seq_len,
                format!(
                    "must not exceed text_config.max_position_embeddings {}",
                    self.text_config.max_position_embeddings
                ),
            ));
        }
        Ok(())
    }
}
