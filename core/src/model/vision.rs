//! The vision encoder: a small ViT (Dosovitskiy et al. 2021) with pre-norm blocks.
//! Patches are embedded by one linear layer (equivalent to a stride-`p` convolution),
//! learned position embeddings are added, and every patch token is kept for the projector.

use burn::module::{Module, Param};
use burn::tensor::activation::gelu;
use burn::tensor::Tensor;

use super::layers::{Attention, Init, LayerNorm, Linear, INIT_STD};
use super::VisionConfig;

/// One pre-norm transformer block: `x + attn(ln(x))`, then `x + mlp(ln(x))`.
#[derive(Module, Debug)]
pub struct VisionBlock {
    /// Norm before attention.
    pub norm1: LayerNorm,
    /// Bidirectional self-attention.
    pub attn: Attention,
    /// Norm before the MLP.
    pub norm2: LayerNorm,
    /// `[D, 4D]`
    pub fc1: Linear,
    /// `[4D, D]`
    pub fc2: Linear,
}

impl VisionBlock {
    fn new(init: &mut Init, config: &VisionConfig) -> Self {
        let width = config.width;
        let residual_std = INIT_STD / (2.0 * config.layers as f64).sqrt();
        Self {
            norm1: LayerNorm::new(init, width),
            attn: Attention::new(init, width, config.heads, true, residual_std),
            norm2: LayerNorm::new(init, width),
            fc1: Linear::new(init, width, config.mlp_ratio * width, true, INIT_STD),
            fc2: Linear::new(init, config.mlp_ratio * width, width, true, residual_std),
        }
    }

    /// # Shapes
    /// - x: `[B, P, D]` → `[B, P, D]`
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.attn.forward(self.norm1.forward(x), None, None);
        let hidden = gelu(self.fc1.forward(self.norm2.forward(x.clone()))); // [B, P, 4D]
        x + self.fc2.forward(hidden)
    }
}

/// The ViT.
#[derive(Module, Debug)]
pub struct VisionEncoder {
    /// `[C·p·p, D]`: flattened patch → token.
    pub patch_embed: Linear,
    /// `[P, D]` learned position embeddings.
    pub pos_embed: Param<Tensor<2>>,
    /// The transformer blocks.
    pub blocks: Vec<VisionBlock>,
    /// Final norm.
    pub norm: LayerNorm,
    /// Patch side in pixels.
    pub patch_size: usize,
}

impl VisionEncoder {
    /// Initialises the encoder from `config`.
    pub fn new(init: &mut Init, config: &VisionConfig) -> Self {
        let patch_dim = config.channels * config.patch_size * config.patch_size;
        Self {
            patch_embed: Linear::new(init, patch_dim, config.width, true, INIT_STD),
            pos_embed: init.uniform([config.num_patches(), config.width], INIT_STD),
            blocks: (0..config.layers).map(|_| VisionBlock::new(init, config)).collect(),
            norm: LayerNorm::new(init, config.width),
            patch_size: config.patch_size,
        }
    }

    /// Images in `[0, 1]` to patch tokens, row-major over the patch grid.
    ///
    /// # Shapes
    /// - images: `[B, C, H, W]` → `[B, (H/p)·(W/p), D]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<3> {
        let [b, c, h, w] = images.dims();
        let p = self.patch_size;
        let (gh, gw) = (h / p, w / p);
        let pixels = images.sub_scalar(0.5).mul_scalar(2.0); // [-1, 1]
        let patches = pixels
            .reshape([b, c, gh, p, gw, p])
            .permute([0, 2, 4, 1, 3, 5]) // [B, gh, gw, C, p, p]
            .reshape([b, gh * gw, c * p * p]); // [B, P, C·p·p]
        let mut x = self.patch_embed.forward(patches) + self.pos_embed.val().unsqueeze::<3>(); // [B, P, D]
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.norm.forward(x)
    }
}
