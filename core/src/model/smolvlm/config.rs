//! The `smolvlm` architecture's shape, with Hugging Face's field names (Idefics3Config with its
//! `vision_config` and `text_config`), so a checkpoint's `config.json` reads straight in.

use serde::{Deserialize, Serialize};

use super::mobilenet::VisionStem;
use crate::{EgaError, Result};

/// The SigLIP vision tower (`vision_config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiglipConfig {
    /// Token width.
    pub hidden_size: usize,
    /// MLP hidden width.
    pub intermediate_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Colour channels (3).
    pub num_channels: usize,
    /// Side of the (square) input image in pixels.
    pub image_size: usize,
    /// Side of a patch in pixels.
    pub patch_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// A pretrained convolutional stem in place of the patch embedding's pixels (this project's
    /// field; absent in Hugging Face configs): the patch embedding then reads the stem's feature
    /// map, `patch_size` must equal the stem's stride and `num_channels` stays the image's 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stem: Option<VisionStem>,
}

impl SiglipConfig {
    /// Side of the patch grid.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Number of patches.
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    /// What one patch embedding reads: `num_channels · patch_size²` pixels, or the stem's channels.
    pub fn patch_dim(&self) -> usize {
        match self.stem {
            Some(stem) => stem.channels(),
            None => self.num_channels * self.patch_size * self.patch_size,
        }
    }
}

/// The Llama-family decoder (`text_config`; also what a GGUF with `general.architecture = llama`
/// describes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width (also the embedding dimension).
    pub hidden_size: usize,
    /// SwiGLU hidden width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than the query heads).
    pub num_key_value_heads: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base θ.
    pub rope_theta: f64,
    /// Longest sequence the model was trained for.
    pub max_position_embeddings: usize,
    /// Whether the output head shares the token embedding (no `lm_head.weight` stored then).
    pub tie_word_embeddings: bool,
}

impl LlamaConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Reads Hugging Face's `config.json` of a Llama model (or an Idefics3 `text_config`): the
    /// fields above, with `rope_theta` either top-level (transformers 4) or in `rope_parameters`
    /// (transformers 5). `name` names the file in messages.
    pub fn from_hf(value: &serde_json::Value, name: &str) -> Result<Self> {
        let field = |key: &str| value.get(key).filter(|v| !v.is_null());
        let usize_of = |key: &str| -> Result<usize> {
            field(key)
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .ok_or_else(|| EgaError::format(&name, format!("{key} is missing or not a whole number")))
        };
        let hidden_size = usize_of("hidden_size")?;
        let num_attention_heads = usize_of("num_attention_heads")?;
        let rope_theta = field("rope_theta")
            .and_then(|v| v.as_f64())
            .or_else(|| field("rope_parameters").and_then(|p| p.get("rope_theta")).and_then(|v| v.as_f64()))
            .unwrap_or(10_000.0);
        if let Some(kind) = field("rope_parameters").and_then(|p| p.get("rope_type")).and_then(|v| v.as_str()) {
            if kind != "default" {
                return Err(EgaError::format(&name, format!("rope_type {kind:?} is not supported (only \"default\")")));
            }
        }
        if let Some(scaling) = field("rope_scaling") {
            return Err(EgaError::format(&name, format!("rope_scaling {scaling} is not supported")));
        }
        if let Some(head_dim) = field("head_dim").and_then(|v| v.as_u64()) {
            // Checked: both come from the file, and a huge head_dim overflowed the product.
            if (head_dim as usize).checked_mul(num_attention_heads) != Some(hidden_size) {
                return Err(EgaError::format(&name, format!(
                    "head_dim {head_dim} × num_attention_heads {num_attention_heads} ≠ hidden_size {hidden_size} (not supported)"
                )));
            }
        }
        if let Some(act) = field("hidden_act").and_then(|v| v.as_str()) {
            if act != "silu" {
                return Err(EgaError::format(&name, format!("hidden_act {act:?} is not supported (only \"silu\")")));
            }
        }
        let config = Self {
            vocab_size: usize_of("vocab_size")?,
            hidden_size,
            intermediate_size: usize_of("intermediate_size")?,
            num_hidden_layers: usize_of("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads: field("num_key_value_heads")
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .unwrap_or(num_attention_heads),
            rms_norm_eps: field("rms_norm_eps").and_then(|v| v.as_f64()).unwrap_or(1e-6),
            rope_theta,
            max_position_embeddings: field("max_position_embeddings").and_then(|v| v.as_u64()).unwrap_or(2048) as usize,
            tie_word_embeddings: field("tie_word_embeddings").and_then(|v| v.as_bool()).unwrap_or(false),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks that the shapes fit together and stay inside [`crate::model::bounds`].
    pub fn validate(&self) -> Result<()> {
        use crate::model::{bounds, check_bound, check_total};
        for (field, value, bound) in [
            ("text_config.vocab_size", self.vocab_size, bounds::VOCAB),
            ("text_config.hidden_size", self.hidden_size, bounds::WIDTH),
            ("text_config.intermediate_size", self.intermediate_size, bounds::WIDTH),
            ("text_config.num_hidden_layers", self.num_hidden_layers, bounds::LAYERS),
            ("text_config.num_attention_heads", self.num_attention_heads, bounds::WIDTH),
            ("text_config.num_key_value_heads", self.num_key_value_heads, bounds::WIDTH),
            ("text_config.max_position_embeddings", self.max_position_embeddings, bounds::SEQ_LEN),
        ] {
            check_bound(field, value, bound)?;
        }
        for (field, value) in [
            ("text_config.vocab_size", self.vocab_size),
            ("text_config.hidden_size", self.hidden_size),
            ("text_config.intermediate_size", self.intermediate_size),
            ("text_config.num_attention_heads", self.num_attention_heads),
            ("text_config.num_key_value_heads", self.num_key_value_heads),
            ("text_config.max_position_embeddings", self.max_position_embeddings),
        ] {
            if value == 0 {
                return Err(EgaError::config(field, value, "must be > 0"));
            }
        }
        if self.hidden_size % self.num_attention_heads != 0 || self.head_dim() % 2 != 0 {
            return Err(EgaError::config(
                "text_config.num_attention_heads",
                self.num_attention_heads,
                format!("must divide hidden_size {} into an even head size (RoPE rotates pairs)", self.hidden_size),
            ));
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(EgaError::config(
                "text_config.num_key_value_heads",
                self.num_key_value_heads,
                format!("must divide num_attention_heads {}", self.num_attention_heads),
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return Err(EgaError::config("text_config.rope_theta", self.rope_theta, "must be a finite number > 1"));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(EgaError::config("text_config.rms_norm_eps", self.rms_norm_eps, "must be a finite number > 0"));
        }
        let (width, ffn, layers) = (self.hidden_size, self.intermediate_size, self.num_hidden_layers);
        let embeddings = if self.tie_word_embeddings { 1 } else { 2 };
        check_total(
            "text_config.hidden_size",
            "the parameter count",
            &[&[self.vocab_size, width, embeddings], &[layers, width, width, 4], &[layers, width, ffn, 3]],
            bounds::PARAMETERS,
        )?;
        Ok(())
    }
}

/// The decoder projections LoRA can adapt (Llama's names).
pub const LORA_TARGETS: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// Low-rank adapters on the decoder's projections (Hu et al. 2021, "LoRA"): each targeted
/// `y = x W` becomes `y = x W + (alpha / rank) · (x A) B`, with `A` `[in, rank]` and `B`
/// `[rank, out]`. A fresh adapter has `B = 0`, so it leaves the model's output exactly as it was.
/// Saved as `<linear>.lora_A.weight` `[rank, in]` and `<linear>.lora_B.weight` `[out, rank]`
/// (PEFT's layout), beside the linear's own weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank `r` of the update.
    pub rank: usize,
    /// Scale numerator: the update is multiplied by `alpha / rank`.
    pub alpha: f64,
    /// Which projections of every decoder layer get an adapter (a subset of [`LORA_TARGETS`]).
    pub targets: Vec<String>,
}

impl LoraConfig {
    /// The default targets: every attention projection.
    pub fn default_targets() -> Vec<String> {
        ["q_proj", "k_proj", "v_proj", "o_proj"].map(String::from).to_vec()
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Whether the projection `name` (`q_proj`, …) gets an adapter.
    pub fn targets(&self, name: &str) -> bool {
        self.targets.iter().any(|t| t == name)
    }

    /// Checks the rank, alpha and target names.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 || self.rank > crate::model::bounds::WIDTH {
            return Err(EgaError::config("lora.rank", self.rank, "must be at least 1"));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(EgaError::config("lora.alpha", self.alpha, "must be a finite number > 0"));
        }
        if self.targets.is_empty() {
            return Err(EgaError::config(
                "lora.targets",
                "[]",
                format!("name at least one of {}", LORA_TARGETS.join(", ")),
            ));
        }
        for target in &self.targets {
            if !LORA_TARGETS.contains(&target.as_str()) {
                return Err(EgaError::config(
                    "lora.targets",
                    target,
                    format!("expected one of {}", LORA_TARGETS.join(", ")),
                ));
            }
        }
        Ok(())
    }
}
