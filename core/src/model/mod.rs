//! The miniature LLaVA-style multimodal embedder.
//!
//! ```text
//! image ─► ViT ─► projector (2×2 merge + MLP) ─► K image tokens ─┐
//! text  ─► token ids ─► token embeddings ────────────────────────┤ spliced at <image>
//!                                                                ▼
//!   decoder-only LM (RoPE, RMSNorm, SwiGLU, causal) ─► hidden state at <eos> ─► L2 norm
//! ```

mod embedder;
pub mod language;
pub mod layers;
pub mod projector;
pub mod smolvlm;
pub mod vision;

pub use embedder::{Embedder, EmbedderInput};

use serde::{Deserialize, Serialize};

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

/// Everything that defines the model; saved with every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The preset this config started from (`tiny`, `small`, `base`), or `custom`.
    pub preset: String,
    /// The vision encoder.
    pub vision: VisionConfig,
    /// The language model.
    pub language: LanguageConfig,
    /// Ids of `<pad>`, `<bos>`, `<eos>`, `<image>`.
    #[serde(default)]
    pub special: SpecialTokens,
    /// Query and target instructions.
    #[serde(default)]
    pub prompts: PromptConfig,
}

/// The names of the presets, smallest first.
pub const PRESETS: [&str; 3] = ["tiny", "small", "base"];

impl ModelConfig {
    /// For tests: 32 px images, 2 + 2 layers, width 64 (16 patches → 4 image tokens).
    pub fn tiny() -> Self {
        Self {
            preset: "tiny".into(),
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
            special: SpecialTokens::default(),
            prompts: PromptConfig::default(),
        }
    }

    /// The default: 64 px images, ViT 4 × 128, LM 4 × 256, about 4.7 M parameters; trains on a
    /// laptop CPU in minutes (64 patches → 16 image tokens).
    pub fn small() -> Self {
        Self {
            preset: "small".into(),
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
            special: SpecialTokens::default(),
            prompts: PromptConfig::default(),
        }
    }

    /// For GPUs: 128 px images, ViT 6 × 384 (16 px patches), LM 8 × 512, about 41 M parameters.
    pub fn base() -> Self {
        Self {
            preset: "base".into(),
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
            other => Err(EgaError::config("preset", other, format!("expected one of {}", PRESETS.join(", ")))),
        }
    }

    /// Embedding dimension (the language model's width).
    pub fn embed_dim(&self) -> usize {
        self.language.width
    }

    /// Checks that the shapes fit together.
    pub fn validate(&self) -> Result<()> {
        let v = &self.vision;
        let l = &self.language;
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
        let s = &self.special;
        let largest_special = s.pad.max(s.bos).max(s.eos).max(s.image) as usize;
        if largest_special >= l.vocab_size {
            return Err(EgaError::config("language.vocab_size", l.vocab_size, "must exceed every special token id"));
        }
        if !(l.rope_theta.is_finite() && l.rope_theta > 1.0) {
            return Err(EgaError::config("language.rope_theta", l.rope_theta, "must be a finite number > 1"));
        }
        self.prompts.validate()
    }
}
