//! The projector between vision and language (LLaVA-1.5's MLP connector, Liu et al. 2023, with a
//! 2×2 patch merge as in Qwen2-VL / InternVL's pixel shuffle): each 2×2 group of neighbouring patch
//! tokens is concatenated, then an MLP maps it to the language model's width. A `g×g` patch grid
//! becomes `(g/2)²` image tokens.

use burn::module::Module;
use burn::tensor::activation::gelu;
use burn::tensor::Tensor;

use super::layers::{Init, Linear, INIT_STD};

/// Patch merge + two-layer MLP.
#[derive(Module, Debug)]
pub struct Projector {
    /// `[4·Dv, D]`
    pub fc1: Linear,
    /// `[D, D]`
    pub fc2: Linear,
    /// Side of the patch grid (`g`).
    pub grid: usize,
}

impl Projector {
    /// `vision_width` → `language_width`, for a `grid × grid` patch grid (grid even).
    pub fn new(init: &mut Init, vision_width: usize, language_width: usize, grid: usize) -> Self {
        Self {
            fc1: Linear::new(init, 4 * vision_width, language_width, true, INIT_STD),
            fc2: Linear::new(init, language_width, language_width, true, INIT_STD),
            grid,
        }
    }

    /// # Shapes
    /// - patches: `[B, g·g, Dv]` → `[B, K = (g/2)², D]`
    pub fn forward(&self, patches: Tensor<3>) -> Tensor<3> {
        let [b, _, dv] = patches.dims();
        let half = self.grid / 2;
        let merged = patches
            .reshape([b, half, 2, half, 2, dv]) // [B, gy, dy, gx, dx, Dv]
            .permute([0, 1, 3, 2, 4, 5]) // [B, gy, gx, dy, dx, Dv]
            .reshape([b, half * half, 4 * dv]); // [B, K, 4·Dv]
        self.fc2.forward(gelu(self.fc1.forward(merged)))
    }
}
