//! The decoder-only language model (LLaMA-style, Touvron et al. 2023): RMSNorm pre-norm blocks,
//! causal self-attention with rotary position embeddings, SwiGLU feed-forward (Shazeer 2020).
//! It reads input *embeddings* (text tokens with image tokens already spliced in) and returns
//! the final hidden states; an embedder needs no language-modelling head.

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor};

use super::layers::{rope_tables, Attention, Init, Linear, RmsNorm, INIT_STD};
use super::LanguageConfig;

/// One block: `x + attn(rms(x))`, then `x + swiglu(rms(x))`.
#[derive(Module, Debug)]
pub struct DecoderBlock {
    /// Norm before attention.
    pub attn_norm: RmsNorm,
    /// Causal self-attention with RoPE.
    pub attn: Attention,
    /// Norm before the feed-forward.
    pub ffn_norm: RmsNorm,
    /// `[D, F]` gate projection.
    pub gate: Linear,
    /// `[D, F]` up projection.
    pub up: Linear,
    /// `[F, D]` down projection.
    pub down: Linear,
}

impl DecoderBlock {
    fn new(init: &mut Init, config: &LanguageConfig) -> Self {
        let (d, f) = (config.width, config.ffn_hidden);
        let residual_std = INIT_STD / (2.0 * config.layers as f64).sqrt();
        Self {
            attn_norm: RmsNorm::new(init, d),
            attn: Attention::new(init, d, config.heads, false, residual_std),
            ffn_norm: RmsNorm::new(init, d),
            gate: Linear::new(init, d, f, false, INIT_STD),
            up: Linear::new(init, d, f, false, INIT_STD),
            down: Linear::new(init, f, d, false, residual_std),
        }
    }

    fn forward(&self, x: Tensor<3>, rope: (&Tensor<4>, &Tensor<4>), mask_bias: &Tensor<4>) -> Tensor<3> {
        let x = x.clone() + self.attn.forward(self.attn_norm.forward(x), Some(rope), Some(mask_bias));
        let normed = self.ffn_norm.forward(x.clone());
        let hidden = super::fused::swiglu(self.gate.forward(normed.clone()), self.up.forward(normed)); // [B, L, F]
        x + self.down.forward(hidden)
    }
}

/// The language model.
#[derive(Module, Debug)]
pub struct LanguageModel {
    /// `[V, D]` token embedding table.
    pub token_embed: Param<Tensor<2>>,
    /// The decoder blocks.
    pub blocks: Vec<DecoderBlock>,
    /// Final norm.
    pub norm: RmsNorm,
    /// Heads per attention layer.
    pub heads: usize,
    /// RoPE base θ.
    pub rope_theta: f64,
}

impl LanguageModel {
    /// Initialises the language model from `config`.
    pub fn new(init: &mut Init, config: &LanguageConfig) -> Self {
        Self {
            token_embed: init.uniform([config.vocab_size, config.width], INIT_STD),
            blocks: (0..config.layers).map(|_| DecoderBlock::new(init, config)).collect(),
            norm: RmsNorm::new(init, config.width),
            heads: config.heads,
            rope_theta: config.rope_theta,
        }
    }

    /// Looks up token embeddings.
    ///
    /// # Shapes
    /// - ids: `[B, L]` → `[B, L, D]`
    pub fn embed_tokens(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        burn::tensor::module::embedding(self.token_embed.val(), ids)
    }

    /// Runs the decoder over input embeddings.
    ///
    /// # Shapes
    /// - inputs: `[B, L, D]`, mask_bias: `[B, 1, L, L]` (causal + key padding) → `[B, L, D]`
    pub fn forward(&self, inputs: Tensor<3>, mask_bias: &Tensor<4>) -> Tensor<3> {
        let [_, l, d] = inputs.dims();
        let (cos, sin) = rope_tables(l, d / self.heads, self.rope_theta, &inputs.device());
        let mut x = inputs;
        for block in &self.blocks {
            x = block.forward(x, (&cos, &sin), mask_bias);
        }
        self.norm.forward(x)
    }
}
