//! The small building blocks: linear layers, norms, multi-head attention, rotary embeddings.
//!
//! Weights are drawn on the host from a seeded `StdRng`, so a given seed gives bit-identical
//! initial weights on every device (flex, wgpu, the browser) and in the PyTorch reference.

use burn::module::{Module, Param, ParamId};
use burn::tensor::{Device, Tensor};
use rand::rngs::StdRng;
use rand::Rng;

use crate::tensor_util::floats;

/// Standard deviation of the initial weights (GPT-2's 0.02).
pub const INIT_STD: f64 = 0.02;

/// First parameter id of a model: ids are `FIRST_PARAM_ID + k` for the k-th parameter created.
const FIRST_PARAM_ID: u64 = 0xE6A0_0000;

/// Host-side parameter initialiser: a seeded RNG plus the device the parameters live on.
///
/// Parameter ids are deterministic too (the k-th parameter created gets the same id in every
/// model of the same config): optimizer state is keyed by parameter id, so a model rebuilt from
/// a checkpoint finds its saved AdamW moments again.
pub struct Init<'a> {
    /// Seeded generator; the order of draws defines the weights.
    pub rng: StdRng,
    /// Where the parameters are created.
    pub device: &'a Device,
    /// Parameters created so far.
    pub created: u64,
}

impl Init<'_> {
    /// A parameter holding `tensor`, with the next deterministic id.
    pub fn param_from<const D: usize>(&mut self, tensor: Tensor<D>) -> Param<Tensor<D>> {
        self.param(tensor)
    }

    /// `count` uniform values with mean 0 and standard deviation `std` (`U(−√3·std, √3·std)`).
    pub fn uniform_values(&mut self, count: usize, std: f64) -> Vec<f32> {
        let bound = (3.0f64).sqrt() * std;
        (0..count).map(|_| self.rng.random_range(-bound..bound) as f32).collect()
    }

    fn param<const D: usize>(&mut self, tensor: Tensor<D>) -> Param<Tensor<D>> {
        let (_, value, mapper) = Param::from_tensor(tensor).consume();
        self.created += 1;
        Param::from_mapped_value(ParamId::from(FIRST_PARAM_ID + self.created), value, mapper)
    }

    /// Uniform values with mean 0 and standard deviation `std` (`U(−√3·std, √3·std)`).
    pub fn uniform<const D: usize>(&mut self, shape: [usize; D], std: f64) -> Param<Tensor<D>> {
        let bound = (3.0f64).sqrt() * std;
        let count: usize = shape.iter().product();
        let values = (0..count).map(|_| self.rng.random_range(-bound..bound) as f32).collect();
        let tensor = floats(values, shape, self.device);
        self.param(tensor)
    }

    /// A constant-filled parameter (norm gains, biases).
    pub fn constant<const D: usize>(&mut self, shape: [usize; D], value: f32) -> Param<Tensor<D>> {
        let count: usize = shape.iter().product();
        let tensor = floats(vec![value; count], shape, self.device);
        self.param(tensor)
    }
}

/// `y = x W + b`, `W: [d_in, d_out]`.
#[derive(Module, Debug)]
pub struct Linear {
    /// `[d_in, d_out]`
    pub weight: Param<Tensor<2>>,
    /// `[d_out]`, absent for bias-free layers.
    pub bias: Option<Param<Tensor<1>>>,
}

impl Linear {
    /// A layer with weights of standard deviation `std` and a zero bias if `bias`.
    pub fn new(init: &mut Init, d_in: usize, d_out: usize, bias: bool, std: f64) -> Self {
        let weight = init.uniform([d_in, d_out], std);
        let bias = bias.then(|| init.constant([d_out], 0.0));
        Self { weight, bias }
    }

    /// # Shapes
    /// - x: `[..., d_in]` → `[..., d_out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        super::fused::linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()))
    }
}

/// Root-mean-square norm (the language model's norm): `x / rms(x) · gain`.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// `[D]`
    pub gain: Param<Tensor<1>>,
    /// Added under the square root.
    pub eps: f64,
}

impl RmsNorm {
    /// Gain 1, `eps = 1e-6`.
    pub fn new(init: &mut Init, width: usize) -> Self {
        Self { gain: init.constant([width], 1.0), eps: 1e-6 }
    }

    /// # Shapes
    /// - x: `[B, L, D]` → `[B, L, D]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        super::fused::rms_norm(x, self.gain.val(), self.eps)
    }
}

/// Layer norm with gain and bias (the vision encoder's norm).
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// `[D]`
    pub gain: Param<Tensor<1>>,
    /// `[D]`
    pub bias: Param<Tensor<1>>,
    /// Added to the variance.
    pub eps: f64,
}

impl LayerNorm {
    /// Gain 1, bias 0, `eps = 1e-5`.
    pub fn new(init: &mut Init, width: usize) -> Self {
        Self { gain: init.constant([width], 1.0), bias: init.constant([width], 0.0), eps: 1e-5 }
    }

    /// # Shapes
    /// - x: `[B, L, D]` → `[B, L, D]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        super::fused::layer_norm(x, self.gain.val(), self.bias.val(), self.eps)
    }
}

/// Rotary position embedding tables for `len` positions: `(cos, sin)`, each `[1, 1, len, hd/2]`.
///
/// Rotate-half convention (as in LLaMA): pairs are `(x[k], x[k + hd/2])`, frequency
/// `θ^(−2k/hd)` (RoFormer, Su et al. 2021, eq. 15).
pub fn rope_tables(len: usize, head_dim: usize, theta: f64, device: &Device) -> (Tensor<4>, Tensor<4>) {
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(len * half);
    let mut sin = Vec::with_capacity(len * half);
    for position in 0..len {
        for k in 0..half {
            let angle = position as f64 * theta.powf(-(2.0 * k as f64) / head_dim as f64);
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (floats(cos, [1, 1, len, half], device), floats(sin, [1, 1, len, half], device))
}

/// Applies rotary embeddings to `x` `[B, H, L, hd]` with the tables of [`rope_tables`]
/// (one pass on flex: [`super::fused::rope`]; its reference is [`super::fused::rope_reference`]).
pub fn apply_rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    super::fused::rope(x, cos, sin)
}

/// Multi-head self-attention with a fused QKV projection.
#[derive(Module, Debug)]
pub struct Attention {
    /// `[D, 3D]`: queries, keys, values.
    pub qkv: Linear,
    /// `[D, D]`
    pub out: Linear,
    /// Number of heads `H`.
    pub heads: usize,
}

impl Attention {
    /// `bias` for the vision encoder (ViT style), no bias in the language model (LLaMA style).
    /// The output projection starts `out_std`-scaled (GPT-2's 1/√(2·layers) residual scaling).
    pub fn new(init: &mut Init, width: usize, heads: usize, bias: bool, out_std: f64) -> Self {
        Self {
            qkv: Linear::new(init, width, 3 * width, bias, INIT_STD),
            out: Linear::new(init, width, width, bias, out_std),
            heads,
        }
    }

    /// `rope`: rotary tables for causal language modelling, `None` for the vision encoder.
    /// `mask_bias`: additive attention bias `[B, 1, L, L]` (0 allowed, a large negative masked).
    ///
    /// # Shapes
    /// - x: `[B, L, D]` → `[B, L, D]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: Option<(&Tensor<4>, &Tensor<4>)>,
        mask_bias: Option<&Tensor<4>>,
    ) -> Tensor<3> {
        let [b, l, d] = x.dims();
        let head_dim = d / self.heads;
        let qkv = self.qkv.forward(x).reshape([b, l, 3, self.heads, head_dim]); // [B, L, 3, H, hd]
        let qkv = qkv.permute([2, 0, 3, 1, 4]); // [3, B, H, L, hd]
        let part = |index: usize| -> Tensor<4> {
            qkv.clone()
                .slice([index..index + 1, 0..b, 0..self.heads, 0..l, 0..head_dim])
                .reshape([b, self.heads, l, head_dim])
        };
        let (mut q, mut k, v) = (part(0), part(1), part(2)); // each [B, H, L, hd]
        if let Some((cos, sin)) = rope {
            q = apply_rope(q, cos, sin);
            k = apply_rope(k, cos, sin);
        }
        let scores = q.matmul(k.swap_dims(2, 3)); // [B, H, L, L]
        let weights = super::fused::attention_softmax(scores, 1.0 / (head_dim as f64).sqrt(), mask_bias);
        let context = weights.matmul(v); // [B, H, L, hd]
        let context = context.swap_dims(1, 2).reshape([b, l, d]); // [B, L, D]
        self.out.forward(context)
    }
}
