//! The `smolvlm` architecture (Idefics3 / SmolVLM, the family of SmolVLM-256M/500M/2.2B):
//!
//! ```text
//! image ─► SigLIP (patch embedding + learned positions, pre-norm LayerNorm blocks with a
//!          GELU-tanh MLP, post-layernorm) ─► pixel shuffle by scale_factor ─► linear ─► K tokens
//! text  ─► embed_tokens ─► spliced at <fake_token_around_image> <global-img> <image>×K <fake…>
//!   Llama decoder (q/k/v/o projections, grouped-query attention, RoPE, RMSNorm, SwiGLU)
//!   ─► final RMSNorm ─► hidden state of the last token ─► L2 norm
//! ```
//!
//! Parameters are built straight from a checkpoint ([`TensorSource`], Hugging Face names), part by
//! part: a part missing from the checkpoint is freshly initialised only when the caller says so
//! ([`Part`]). Linear weights are kept as `[in, out]` (burn's layout; checkpoints store `[out, in]`
//! and are transposed on load and on export).

pub mod config;
pub mod mobilenet;

pub use config::{LlamaConfig, LoraConfig, SiglipConfig, LORA_TARGETS};

use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor};
use rand::SeedableRng;

use super::embedder::EmbedderInput;
use super::fused;
use super::layers::{apply_rope, rope_tables, Init, INIT_STD};
use super::SmolVlmConfig;
use crate::store::{HostTensor, TensorSource};
use crate::tensor_util::floats;
use crate::{EgaError, Result};

/// The three parts of the model, as checkpoints name their prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// `vision_model.*`: the SigLIP tower.
    Vision,
    /// `connector.*`: pixel shuffle + projection.
    Connector,
    /// `text_model.*`: the decoder.
    Text,
    /// `text_model.*.lora_{A,B}.weight`: the decoder's low-rank adapters (when the config has
    /// them). Not loaded: fresh adapters (`A` random, `B = 0`) that leave the output unchanged.
    Lora,
    /// `vision_model.embeddings.stem.*`: the tower's pretrained convolutional stem (when the
    /// config has one; [`mobilenet`]). Always frozen.
    Stem,
}

impl Part {
    /// Every part.
    pub const ALL: [Part; 5] = [Part::Vision, Part::Connector, Part::Text, Part::Lora, Part::Stem];
    /// Every part but the adapters: a model's weights with fresh adapters.
    pub const BASE: [Part; 4] = [Part::Vision, Part::Connector, Part::Text, Part::Stem];

    /// The checkpoint prefix of the part.
    pub fn prefix(self) -> &'static str {
        match self {
            Part::Vision | Part::Stem => "vision_model",
            Part::Connector => "connector",
            Part::Text | Part::Lora => "text_model",
        }
    }
}

/// What building a model from a checkpoint did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Tensors taken from the checkpoint.
    pub loaded: usize,
    /// Tensors freshly initialised (their part was not asked for from the checkpoint).
    pub fresh: usize,
    /// Parameters taken from the checkpoint.
    pub loaded_params: usize,
}

/// Builds parameters from a checkpoint or fresh, in a fixed order (parameter ids depend only on
/// the order, so optimizer state finds its parameters again).
struct Builder<'a, 's, 'l> {
    init: Init<'a>,
    source: Option<&'s mut dyn TensorSource>,
    load: &'l [Part],
    report: LoadReport,
    /// The decoder's adapters, when the config has them.
    lora: Option<LoraConfig>,
}

/// How a fresh tensor starts.
#[derive(Clone, Copy)]
enum Fresh {
    /// Mean 0, standard deviation [`INIT_STD`].
    Normal,
    /// All `value`.
    Constant(f32),
    /// Mean 0, this standard deviation.
    Std(f64),
}

impl Builder<'_, '_, '_> {
    /// The tensor `name` of part `part` with checkpoint shape `shape`, as stored (no transpose).
    fn tensor(&mut self, part: Part, name: &str, shape: &[usize], fresh: Fresh) -> Result<HostTensor> {
        if self.load.contains(&part) {
            let source =
                self.source.as_deref_mut().ok_or_else(|| EgaError::Data("no checkpoint to load from".into()))?;
            let what = source.name().to_string();
            let tensor = source
                .take(name)?
                .ok_or_else(|| EgaError::format(&what, format!("no tensor {name}, which the model config needs")))?;
            if tensor.shape != shape {
                return Err(EgaError::format(
                    &what,
                    format!("tensor {name} has shape {:?}, the model config needs {:?}", tensor.shape, shape),
                ));
            }
            if tensor.data.len() != tensor.numel() {
                return Err(EgaError::format(&what, format!("tensor {name} holds a wrong number of values")));
            }
            if let Some(bad) = tensor.data.iter().position(|v| !v.is_finite()) {
                return Err(EgaError::format(
                    &what,
                    format!("tensor {name} holds a non-finite value ({} at index {bad})", tensor.data[bad]),
                ));
            }
            self.report.loaded += 1;
            self.report.loaded_params += tensor.data.len();
            return Ok(tensor);
        }
        self.report.fresh += 1;
        let count: usize = shape.iter().product();
        let data = match fresh {
            Fresh::Normal => self.init.uniform_values(count, INIT_STD),
            Fresh::Std(std) => self.init.uniform_values(count, std),
            Fresh::Constant(value) => vec![value; count],
        };
        Ok(HostTensor { shape: shape.to_vec(), data })
    }

    fn param1(&mut self, part: Part, name: &str, len: usize, fresh: Fresh) -> Result<Param<Tensor<1>>> {
        let t = self.tensor(part, name, &[len], fresh)?;
        Ok(self.init.param_from(floats(t.data, [len], self.init.device)))
    }

    fn param2(&mut self, part: Part, name: &str, shape: [usize; 2], fresh: Fresh) -> Result<Param<Tensor<2>>> {
        let t = self.tensor(part, name, &shape, fresh)?;
        Ok(self.init.param_from(floats(t.data, shape, self.init.device)))
    }

    /// A linear layer stored as `{name}.weight` `[out, in]` (and `{name}.bias` `[out]`).
    fn linear(&mut self, part: Part, name: &str, d_in: usize, d_out: usize, bias: bool) -> Result<HfLinear> {
        let w = self.tensor(part, &format!("{name}.weight"), &[d_out, d_in], Fresh::Normal)?;
        let weight = self.init.param_from(floats(transpose(&w.data, d_out, d_in), [d_in, d_out], self.init.device));
        let bias =
            if bias { Some(self.param1(part, &format!("{name}.bias"), d_out, Fresh::Constant(0.0))?) } else { None };
        Ok(HfLinear { weight, bias, lora: None })
    }

    /// A decoder projection (`target`: `q_proj`, …, no bias), with its LoRA adapter when the
    /// config targets it: `A` `[rank, in]` fresh like PEFT's (uniform, bound `1/√in`), `B`
    /// `[out, rank]` fresh at zero.
    fn projection(&mut self, name: &str, target: &str, d_in: usize, d_out: usize) -> Result<HfLinear> {
        let mut linear = self.linear(Part::Text, name, d_in, d_out, false)?;
        let Some(lora) = self.lora.clone().filter(|l| l.targets(target)) else { return Ok(linear) };
        let r = lora.rank;
        let std = 1.0 / (3.0 * d_in as f64).sqrt();
        let a = self.tensor(Part::Lora, &format!("{name}.lora_A.weight"), &[r, d_in], Fresh::Std(std))?;
        let b = self.tensor(Part::Lora, &format!("{name}.lora_B.weight"), &[d_out, r], Fresh::Constant(0.0))?;
        let device = self.init.device;
        linear.lora = Some(Lora {
            a: self.init.param_from(floats(transpose(&a.data, r, d_in), [d_in, r], device)),
            b: self.init.param_from(floats(transpose(&b.data, d_out, r), [r, d_out], device)),
            scale: lora.scale(),
        });
        Ok(linear)
    }

    fn layer_norm(&mut self, part: Part, name: &str, width: usize, eps: f64) -> Result<HfLayerNorm> {
        Ok(HfLayerNorm {
            weight: self.param1(part, &format!("{name}.weight"), width, Fresh::Constant(1.0))?,
            bias: self.param1(part, &format!("{name}.bias"), width, Fresh::Constant(0.0))?,
            eps,
        })
    }

    fn rms_norm(&mut self, part: Part, name: &str, width: usize, eps: f64) -> Result<HfRmsNorm> {
        Ok(HfRmsNorm { weight: self.param1(part, &format!("{name}.weight"), width, Fresh::Constant(1.0))?, eps })
    }
}

/// `[rows, cols]` row-major → `[cols, rows]` row-major.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// `y = x W + b` with `W` kept as `[in, out]`, plus `scale · (x A) B` when it has an adapter.
#[derive(Module, Debug)]
pub struct HfLinear {
    /// `[in, out]`
    pub weight: Param<Tensor<2>>,
    /// `[out]`
    pub bias: Option<Param<Tensor<1>>>,
    /// The low-rank adapter (decoder projections only).
    pub lora: Option<Lora>,
}

/// A LoRA adapter of one linear layer.
#[derive(Module, Debug)]
pub struct Lora {
    /// `A` `[in, rank]` (saved as `lora_A.weight` `[rank, in]`).
    pub a: Param<Tensor<2>>,
    /// `B` `[rank, out]` (saved as `lora_B.weight` `[out, rank]`).
    pub b: Param<Tensor<2>>,
    /// `alpha / rank`.
    pub scale: f64,
}

impl HfLinear {
    /// # Shapes
    /// - x: `[..., in]` → `[..., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        use super::fused::linear;
        match &self.lora {
            None => linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val())),
            Some(lora) => {
                let low = linear(linear(x.clone(), lora.a.val(), None), lora.b.val(), None);
                linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val())) + low.mul_scalar(lora.scale)
            }
        }
    }
}

/// LayerNorm with weight and bias.
#[derive(Module, Debug)]
pub struct HfLayerNorm {
    /// `[D]`
    pub weight: Param<Tensor<1>>,
    /// `[D]`
    pub bias: Param<Tensor<1>>,
    /// Added to the variance.
    pub eps: f64,
}

impl HfLayerNorm {
    /// # Shapes
    /// - x: `[B, L, D]` → `[B, L, D]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        fused::layer_norm(x, self.weight.val(), self.bias.val(), self.eps)
    }
}

/// RMSNorm with a weight (Llama's).
#[derive(Module, Debug)]
pub struct HfRmsNorm {
    /// `[D]`
    pub weight: Param<Tensor<1>>,
    /// Added to the mean square.
    pub eps: f64,
}

impl HfRmsNorm {
    /// # Shapes
    /// - x: `[B, L, D]` → `[B, L, D]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        fused::rms_norm(x, self.weight.val(), self.eps)
    }
}

/// Scaled dot-product attention of `[B, H, L, hd]` queries over keys/values, with an optional
/// additive bias `[B, 1, L, L]`. → `[B, L, H·hd]`
fn attend(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Option<&Tensor<4>>) -> Tensor<3> {
    let [b, h, l, hd] = q.dims();
    let scores = q.matmul(k.swap_dims(2, 3)); // [B, H, L, L]
    fused::attention_softmax(scores, 1.0 / (hd as f64).sqrt(), bias).matmul(v).swap_dims(1, 2).reshape([b, l, h * hd])
}

/// `[B, L, H·hd]` → `[B, H, L, hd]`
fn heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [b, l, d] = x.dims();
    x.reshape([b, l, heads, d / heads]).swap_dims(1, 2)
}

/// `vision_model.embeddings.position_embedding`.
#[derive(Module, Debug)]
pub struct PositionEmbedding {
    /// `[P, D]`
    pub weight: Param<Tensor<2>>,
}

/// `vision_model.embeddings`: patch embedding (a stride-`p` convolution, kept as a linear layer
/// over flattened `(C, p, p)` patches) plus learned positions.
#[derive(Module, Debug)]
pub struct SiglipEmbeddings {
    /// The pretrained convolutional stem the patches are read from, when the config has one.
    pub stem: Option<mobilenet::MobileNetStem>,
    /// `[C·p·p, D]` (the checkpoint's `[D, C, p, p]` convolution, flattened and transposed); with
    /// a stem `[channels, D]` (stored `[D, channels, 1, 1]`).
    pub patch_embedding: HfLinear,
    /// Learned position of each patch (row-major over the grid).
    pub position_embedding: PositionEmbedding,
    /// Patch side in pixels.
    pub patch_size: usize,
}

/// SigLIP self-attention (with biases).
#[derive(Module, Debug)]
pub struct SiglipAttention {
    /// `q_proj`
    pub q_proj: HfLinear,
    /// `k_proj`
    pub k_proj: HfLinear,
    /// `v_proj`
    pub v_proj: HfLinear,
    /// `out_proj`
    pub out_proj: HfLinear,
    /// Heads.
    pub heads: usize,
}

/// SigLIP MLP: `fc2(gelu_tanh(fc1(x)))`.
#[derive(Module, Debug)]
pub struct SiglipMlp {
    /// `fc1`
    pub fc1: HfLinear,
    /// `fc2`
    pub fc2: HfLinear,
}

/// One pre-norm encoder layer.
#[derive(Module, Debug)]
pub struct SiglipLayer {
    /// Norm before attention.
    pub layer_norm1: HfLayerNorm,
    /// Bidirectional attention.
    pub self_attn: SiglipAttention,
    /// Norm before the MLP.
    pub layer_norm2: HfLayerNorm,
    /// The MLP.
    pub mlp: SiglipMlp,
}

/// `vision_model.encoder`.
#[derive(Module, Debug)]
pub struct SiglipEncoder {
    /// The layers.
    pub layers: Vec<SiglipLayer>,
}

/// The SigLIP vision tower.
#[derive(Module, Debug)]
pub struct SiglipVision {
    /// Patches + positions.
    pub embeddings: SiglipEmbeddings,
    /// The encoder layers.
    pub encoder: SiglipEncoder,
    /// Final LayerNorm.
    pub post_layernorm: HfLayerNorm,
}

impl SiglipVision {
    fn build(b: &mut Builder, c: &SiglipConfig) -> Result<Self> {
        let (d, p, part) = (c.hidden_size, c.patch_size, Part::Vision);
        let patch_dim = c.patch_dim();
        let stem = match c.stem {
            Some(kind) => {
                let mut params = Vec::new();
                for (i, spec) in kind.convs().iter().enumerate() {
                    let shape = spec.weight_shape();
                    let w = b.tensor(Part::Stem, &mobilenet::tensor_name(i, "weight"), &shape, Fresh::Normal)?;
                    let bias =
                        b.param1(Part::Stem, &mobilenet::tensor_name(i, "bias"), shape[0], Fresh::Constant(0.0))?;
                    params.push((b.init.param_from(floats(w.data, shape, b.init.device)), bias));
                }
                Some(mobilenet::MobileNetStem::new(kind, params))
            }
            None => None,
        };
        // The checkpoint's convolution `[D, C, p, p]` is a `[D, C·p·p]` linear weight (with a
        // stem, a 1×1 convolution over its channels).
        let stored_shape = if c.stem.is_some() { [d, patch_dim, 1, 1] } else { [d, c.num_channels, p, p] };
        let w = b.tensor(part, "vision_model.embeddings.patch_embedding.weight", &stored_shape, Fresh::Normal)?;
        let weight = b.init.param_from(floats(transpose(&w.data, d, patch_dim), [patch_dim, d], b.init.device));
        let bias = Some(b.param1(part, "vision_model.embeddings.patch_embedding.bias", d, Fresh::Constant(0.0))?);
        let position =
            b.param2(part, "vision_model.embeddings.position_embedding.weight", [c.num_patches(), d], Fresh::Normal)?;
        let embeddings = SiglipEmbeddings {
            stem,
            patch_embedding: HfLinear { weight, bias, lora: None },
            position_embedding: PositionEmbedding { weight: position },
            patch_size: p,
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let n = format!("vision_model.encoder.layers.{i}");
            let eps = c.layer_norm_eps;
            layers.push(SiglipLayer {
                layer_norm1: b.layer_norm(part, &format!("{n}.layer_norm1"), d, eps)?,
                self_attn: SiglipAttention {
                    q_proj: b.linear(part, &format!("{n}.self_attn.q_proj"), d, d, true)?,
                    k_proj: b.linear(part, &format!("{n}.self_attn.k_proj"), d, d, true)?,
                    v_proj: b.linear(part, &format!("{n}.self_attn.v_proj"), d, d, true)?,
                    out_proj: b.linear(part, &format!("{n}.self_attn.out_proj"), d, d, true)?,
                    heads: c.num_attention_heads,
                },
                layer_norm2: b.layer_norm(part, &format!("{n}.layer_norm2"), d, eps)?,
                mlp: SiglipMlp {
                    fc1: b.linear(part, &format!("{n}.mlp.fc1"), d, c.intermediate_size, true)?,
                    fc2: b.linear(part, &format!("{n}.mlp.fc2"), c.intermediate_size, d, true)?,
                },
            });
        }
        let post_layernorm = b.layer_norm(part, "vision_model.post_layernorm", d, c.layer_norm_eps)?;
        Ok(Self { embeddings, encoder: SiglipEncoder { layers }, post_layernorm })
    }

    /// Images in `[0, 1]` (normalised to `[−1, 1]` here, as the SmolVLM processor does with mean
    /// and std 0.5) to patch features, row-major over the patch grid.
    ///
    /// # Shapes
    /// - images: `[B, C, H, W]` → `[B, P, Dv]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<3> {
        let [b, c, h, w] = images.dims();
        let p = self.embeddings.patch_size;
        let (gh, gw) = (h / p, w / p);
        let pixels = images.sub_scalar(0.5).mul_scalar(2.0);
        let patches = match &self.embeddings.stem {
            Some(stem) => {
                let features = stem.forward(pixels); // [B, Cs, gh, gw]
                let channels = features.dims()[1];
                features.reshape([b, channels, gh * gw]).swap_dims(1, 2) // [B, P, Cs]
            }
            None => pixels
                .reshape([b, c, gh, p, gw, p])
                .permute([0, 2, 4, 1, 3, 5]) // [B, gh, gw, C, p, p]
                .reshape([b, gh * gw, c * p * p]),
        };
        let mut x = self.embeddings.patch_embedding.forward(patches)
            + self.embeddings.position_embedding.weight.val().unsqueeze::<3>();
        for layer in &self.encoder.layers {
            let a = &layer.self_attn;
            let normed = layer.layer_norm1.forward(x.clone());
            let q = heads(a.q_proj.forward(normed.clone()), a.heads);
            let k = heads(a.k_proj.forward(normed.clone()), a.heads);
            let v = heads(a.v_proj.forward(normed), a.heads);
            x = x + a.out_proj.forward(attend(q, k, v, None));
            let hidden = fused::gelu_tanh(layer.mlp.fc1.forward(layer.layer_norm2.forward(x.clone())));
            x = x + layer.mlp.fc2.forward(hidden);
        }
        self.post_layernorm.forward(x)
    }
}

/// `connector.modality_projection`.
#[derive(Module, Debug)]
pub struct ModalityProjection {
    /// `proj`: `[Dv·s², D]`, no bias.
    pub proj: HfLinear,
}

/// The Idefics3 connector: pixel shuffle, then a linear projection.
#[derive(Module, Debug)]
pub struct Connector {
    /// The projection.
    pub modality_projection: ModalityProjection,
    /// Pixel-shuffle factor `s`.
    pub scale_factor: usize,
}

impl Connector {
    /// Pixel shuffle: the `g×g` grid of `Dv`-wide features becomes a `(g/s)×(g/s)` grid of
    /// `Dv·s²`-wide ones, each holding an `s×s` block (in Idefics3's order: within a block, the
    /// `s` rows' features side by side, each row's `s` columns side by side).
    ///
    /// # Shapes
    /// - x: `[B, g·g, Dv]` → `[B, (g/s)², Dv·s²]`
    pub fn pixel_shuffle(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, seq, dv] = x.dims();
        let s = self.scale_factor;
        let g = (seq as f64).sqrt().round() as usize;
        let gs = g / s;
        // [B, g(rows), g/s (column blocks), s·Dv]: each row's s neighbouring columns side by side.
        let x = x.reshape([b, g, gs, s * dv]);
        // [B, g/s (column blocks), g (rows), s·Dv] → merge s neighbouring rows.
        let x = x.swap_dims(1, 2).reshape([b, gs, gs, s * s * dv]); // [B, col block, row block, s²·Dv]
        x.swap_dims(1, 2).reshape([b, gs * gs, s * s * dv])
    }

    /// # Shapes
    /// - x: `[B, g·g, Dv]` → `[B, K, D]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.modality_projection.proj.forward(self.pixel_shuffle(x))
    }
}

/// `text_model.embed_tokens`.
#[derive(Module, Debug)]
pub struct TokenEmbedding {
    /// `[V, D]`
    pub weight: Param<Tensor<2>>,
}

/// Llama attention: separate projections, grouped-query heads.
#[derive(Module, Debug)]
pub struct LlamaAttention {
    /// `q_proj` `[D, H·hd]`
    pub q_proj: HfLinear,
    /// `k_proj` `[D, Hkv·hd]`
    pub k_proj: HfLinear,
    /// `v_proj` `[D, Hkv·hd]`
    pub v_proj: HfLinear,
    /// `o_proj` `[H·hd, D]`
    pub o_proj: HfLinear,
    /// Query heads `H`.
    pub heads: usize,
    /// Key/value heads `Hkv`.
    pub kv_heads: usize,
}

/// SwiGLU: `down(silu(gate(x)) · up(x))`.
#[derive(Module, Debug)]
pub struct LlamaMlp {
    /// `gate_proj`
    pub gate_proj: HfLinear,
    /// `up_proj`
    pub up_proj: HfLinear,
    /// `down_proj`
    pub down_proj: HfLinear,
}

/// One decoder layer.
#[derive(Module, Debug)]
pub struct LlamaLayer {
    /// Attention.
    pub self_attn: LlamaAttention,
    /// Feed-forward.
    pub mlp: LlamaMlp,
    /// Norm before attention.
    pub input_layernorm: HfRmsNorm,
    /// Norm before the feed-forward.
    pub post_attention_layernorm: HfRmsNorm,
}

/// The Llama decoder.
#[derive(Module, Debug)]
pub struct LlamaModel {
    /// Token embeddings.
    pub embed_tokens: TokenEmbedding,
    /// The layers.
    pub layers: Vec<LlamaLayer>,
    /// Final norm.
    pub norm: HfRmsNorm,
    /// RoPE base θ.
    pub rope_theta: f64,
}

impl LlamaModel {
    fn build(b: &mut Builder, c: &LlamaConfig) -> Result<Self> {
        let (d, hd, part) = (c.hidden_size, c.head_dim(), Part::Text);
        let embed = b.param2(part, "text_model.embed_tokens.weight", [c.vocab_size, d], Fresh::Normal)?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let n = format!("text_model.layers.{i}");
            let (q, kv) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
            layers.push(LlamaLayer {
                self_attn: LlamaAttention {
                    q_proj: b.projection(&format!("{n}.self_attn.q_proj"), "q_proj", d, q)?,
                    k_proj: b.projection(&format!("{n}.self_attn.k_proj"), "k_proj", d, kv)?,
                    v_proj: b.projection(&format!("{n}.self_attn.v_proj"), "v_proj", d, kv)?,
                    o_proj: b.projection(&format!("{n}.self_attn.o_proj"), "o_proj", q, d)?,
                    heads: c.num_attention_heads,
                    kv_heads: c.num_key_value_heads,
                },
                mlp: LlamaMlp {
                    gate_proj: b.projection(&format!("{n}.mlp.gate_proj"), "gate_proj", d, c.intermediate_size)?,
                    up_proj: b.projection(&format!("{n}.mlp.up_proj"), "up_proj", d, c.intermediate_size)?,
                    down_proj: b.projection(&format!("{n}.mlp.down_proj"), "down_proj", c.intermediate_size, d)?,
                },
                input_layernorm: b.rms_norm(part, &format!("{n}.input_layernorm"), d, c.rms_norm_eps)?,
                post_attention_layernorm: b.rms_norm(
                    part,
                    &format!("{n}.post_attention_layernorm"),
                    d,
                    c.rms_norm_eps,
                )?,
            });
        }
        let norm = b.rms_norm(part, "text_model.norm", d, c.rms_norm_eps)?;
        Ok(Self { embed_tokens: TokenEmbedding { weight: embed }, layers, norm, rope_theta: c.rope_theta })
    }

    /// A decoder alone with every weight from `source` (Hugging Face `text_model.*` names).
    pub fn from_source(
        config: &LlamaConfig,
        source: &mut dyn TensorSource,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        config.validate()?;
        let init = Init { rng: rand::rngs::StdRng::seed_from_u64(0), device, created: 0 };
        let load = [Part::Text];
        let mut b = Builder { init, source: Some(source), load: &load, report: LoadReport::default(), lora: None };
        let model = Self::build(&mut b, config)?;
        Ok((model, b.report))
    }

    /// The tied output head's logits (token embedding as the output matrix).
    ///
    /// # Shapes
    /// - hidden: `[B, L, D]` → `[B, L, V]`
    pub fn tied_logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let weight = self.embed_tokens.weight.val(); // [V, D]
        let [b, l, d] = hidden.dims();
        let v = weight.dims()[0];
        hidden.reshape([b * l, d]).matmul(weight.transpose()).reshape([b, l, v])
    }

    /// Causal forward of token ids (no padding): the final hidden states.
    ///
    /// # Shapes
    /// - ids: `[B, L]` → `[B, L, D]`
    pub fn forward_ids(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [b, l] = ids.dims();
        let device = ids.device();
        let mut bias = vec![0.0f32; l * l];
        for i in 0..l {
            for j in i + 1..l {
                bias[i * l + j] = super::embedder::MASKED;
            }
        }
        let bias = floats(bias, [1, 1, l, l], &device).expand([b, 1, l, l]);
        self.forward(self.embed(ids), &bias)
    }

    /// Looks up token embeddings.
    ///
    /// # Shapes
    /// - ids: `[B, L]` → `[B, L, D]`
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        burn::tensor::module::embedding(self.embed_tokens.weight.val(), ids)
    }

    /// Runs the decoder over input embeddings; returns the final (normed) hidden states.
    ///
    /// # Shapes
    /// - inputs: `[B, L, D]`, mask_bias: `[B, 1, L, L]` → `[B, L, D]`
    pub fn forward(&self, inputs: Tensor<3>, mask_bias: &Tensor<4>) -> Tensor<3> {
        let [_, l, _] = inputs.dims();
        let mut x = inputs;
        let Some(first) = self.layers.first() else { return self.norm.forward(x) };
        let head_dim = first.self_attn.q_proj.weight.dims()[1] / first.self_attn.heads;
        let (cos, sin) = rope_tables(l, head_dim, self.rope_theta, &x.device());
        for layer in &self.layers {
            let a = &layer.self_attn;
            let normed = layer.input_layernorm.forward(x.clone());
            let q = apply_rope(heads(a.q_proj.forward(normed.clone()), a.heads), &cos, &sin);
            let k = apply_rope(heads(a.k_proj.forward(normed.clone()), a.kv_heads), &cos, &sin);
            let v = heads(a.v_proj.forward(normed), a.kv_heads);
            let (k, v) = (repeat_kv(k, a.heads / a.kv_heads), repeat_kv(v, a.heads / a.kv_heads));
            x = x + a.o_proj.forward(attend(q, k, v, Some(mask_bias)));
            let normed = layer.post_attention_layernorm.forward(x.clone());
            let hidden = fused::swiglu(layer.mlp.gate_proj.forward(normed.clone()), layer.mlp.up_proj.forward(normed));
            x = x + layer.mlp.down_proj.forward(hidden);
        }
        self.norm.forward(x)
    }
}

/// Each key/value head serves `n` consecutive query heads: `[B, Hkv, L, hd]` → `[B, Hkv·n, L, hd]`.
fn repeat_kv(x: Tensor<4>, n: usize) -> Tensor<4> {
    if n == 1 {
        return x;
    }
    let [b, h, l, hd] = x.dims();
    x.unsqueeze_dim::<5>(2).expand([b, h, n, l, hd]).reshape([b, h * n, l, hd])
}

/// The whole `smolvlm` embedder.
#[derive(Module, Debug)]
pub struct SmolVlm {
    /// SigLIP.
    pub vision_model: SiglipVision,
    /// Pixel shuffle + projection.
    pub connector: Connector,
    /// The decoder.
    pub text_model: LlamaModel,
}

impl SmolVlm {
    /// Builds the model: the parts in `load` from `source` (Hugging Face names; a missing tensor
    /// or a wrong shape is an error naming it), the others freshly initialised from `seed`.
    pub fn build(
        config: &SmolVlmConfig,
        source: Option<&mut dyn TensorSource>,
        load: &[Part],
        seed: u64,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        config.validate()?;
        if !load.is_empty() && source.is_none() {
            return Err(EgaError::Data("parts to load were named but no checkpoint was given".into()));
        }
        let init = Init { rng: rand::rngs::StdRng::seed_from_u64(seed), device, created: 0 };
        let mut b = Builder { init, source, load, report: LoadReport::default(), lora: config.lora.clone() };
        let v = &config.vision_config;
        let vision_model = SiglipVision::build(&mut b, v)?;
        let d_in = v.hidden_size * config.scale_factor * config.scale_factor;
        let proj = b.linear(
            Part::Connector,
            "connector.modality_projection.proj",
            d_in,
            config.text_config.hidden_size,
            false,
        )?;
        let connector =
            Connector { modality_projection: ModalityProjection { proj }, scale_factor: config.scale_factor };
        let text_model = LlamaModel::build(&mut b, &config.text_config)?;
        Ok((Self { vision_model, connector, text_model }, b.report))
    }

    /// Image tokens for the decoder.
    ///
    /// # Shapes
    /// - images: `[Bi, C, H, W]` in `[0, 1]` → `[Bi, K, D]`
    pub fn image_tokens(&self, images: Tensor<4>) -> Tensor<3> {
        self.connector.forward(self.vision_model.forward(images))
    }

    /// Final hidden states of every position.
    ///
    /// # Shapes
    /// - → `[B, L, D]`
    pub fn hidden_states(&self, input: &EmbedderInput) -> Tensor<3> {
        let text = self.text_model.embed(input.text_ids.clone()); // [B, Lt, D]
        let [b, lt, d] = text.dims();
        let mut pool = text.reshape([b * lt, d]);
        if let Some(images) = &input.images {
            let tokens = self.image_tokens(images.clone());
            let [bi, k, _] = tokens.dims();
            pool = Tensor::cat(vec![pool, tokens.reshape([bi * k, d])], 0);
        }
        let inputs = pool.select(0, input.source.clone()).reshape([input.batch, input.seq_len, d]);
        self.text_model.forward(inputs, &input.mask_bias)
    }

    /// Every parameter under its Hugging Face name, in checkpoint layout (`[out, in]` linear
    /// weights, the patch embedding as a `[D, C, p, p]` convolution), read back to the host.
    /// Blocking: native only.
    pub fn export(&self) -> Result<Vec<(String, HostTensor)>> {
        let mut out = Vec::new();
        let host1 = |p: &Param<Tensor<1>>| -> Result<HostTensor> {
            Ok(HostTensor { shape: p.val().dims().to_vec(), data: crate::tensor_util::to_f32_vec(p.val())? })
        };
        let host2 = |p: &Param<Tensor<2>>| -> Result<HostTensor> {
            Ok(HostTensor { shape: p.val().dims().to_vec(), data: crate::tensor_util::to_f32_vec(p.val())? })
        };
        let linear = |out: &mut Vec<(String, HostTensor)>, name: &str, l: &HfLinear| -> Result<()> {
            let w = host2(&l.weight)?;
            let (d_in, d_out) = (w.shape[0], w.shape[1]);
            out.push((
                format!("{name}.weight"),
                HostTensor { shape: vec![d_out, d_in], data: transpose(&w.data, d_in, d_out) },
            ));
            if let Some(bias) = &l.bias {
                out.push((format!("{name}.bias"), host1(bias)?));
            }
            if let Some(lora) = &l.lora {
                let (a, b) = (host2(&lora.a)?, host2(&lora.b)?); // [in, r], [r, out]
                let (d_in, r, d_out) = (a.shape[0], a.shape[1], b.shape[1]);
                out.push((
                    format!("{name}.lora_A.weight"),
                    HostTensor { shape: vec![r, d_in], data: transpose(&a.data, d_in, r) },
                ));
                out.push((
                    format!("{name}.lora_B.weight"),
                    HostTensor { shape: vec![d_out, r], data: transpose(&b.data, r, d_out) },
                ));
            }
            Ok(())
        };
        let layer_norm = |out: &mut Vec<(String, HostTensor)>, name: &str, n: &HfLayerNorm| -> Result<()> {
            out.push((format!("{name}.weight"), host1(&n.weight)?));
            out.push((format!("{name}.bias"), host1(&n.bias)?));
            Ok(())
        };
        let vis = &self.vision_model;
        if let Some(stem) = &vis.embeddings.stem {
            for (i, conv) in stem.convs.iter().enumerate() {
                let weight = conv.weight.val();
                let shape = weight.dims().to_vec();
                let data = crate::tensor_util::to_f32_vec(weight)?;
                out.push((mobilenet::tensor_name(i, "weight"), HostTensor { shape, data }));
                out.push((mobilenet::tensor_name(i, "bias"), host1(&conv.bias)?));
            }
        }
        let w = host2(&vis.embeddings.patch_embedding.weight)?;
        let (patch_dim, width) = (w.shape[0], w.shape[1]);
        let p = if vis.embeddings.stem.is_some() { 1 } else { vis.embeddings.patch_size };
        out.push((
            "vision_model.embeddings.patch_embedding.weight".into(),
            HostTensor { shape: vec![width, patch_dim / (p * p), p, p], data: transpose(&w.data, patch_dim, width) },
        ));
        if let Some(bias) = &vis.embeddings.patch_embedding.bias {
            out.push(("vision_model.embeddings.patch_embedding.bias".into(), host1(bias)?));
        }
        out.push((
            "vision_model.embeddings.position_embedding.weight".into(),
            host2(&vis.embeddings.position_embedding.weight)?,
        ));
        for (i, layer) in vis.encoder.layers.iter().enumerate() {
            let n = format!("vision_model.encoder.layers.{i}");
            layer_norm(&mut out, &format!("{n}.layer_norm1"), &layer.layer_norm1)?;
            linear(&mut out, &format!("{n}.self_attn.q_proj"), &layer.self_attn.q_proj)?;
            linear(&mut out, &format!("{n}.self_attn.k_proj"), &layer.self_attn.k_proj)?;
            linear(&mut out, &format!("{n}.self_attn.v_proj"), &layer.self_attn.v_proj)?;
            linear(&mut out, &format!("{n}.self_attn.out_proj"), &layer.self_attn.out_proj)?;
            layer_norm(&mut out, &format!("{n}.layer_norm2"), &layer.layer_norm2)?;
            linear(&mut out, &format!("{n}.mlp.fc1"), &layer.mlp.fc1)?;
            linear(&mut out, &format!("{n}.mlp.fc2"), &layer.mlp.fc2)?;
        }
        layer_norm(&mut out, "vision_model.post_layernorm", &vis.post_layernorm)?;
        linear(&mut out, "connector.modality_projection.proj", &self.connector.modality_projection.proj)?;
        let text = &self.text_model;
        out.push(("text_model.embed_tokens.weight".into(), host2(&text.embed_tokens.weight)?));
        for (i, layer) in text.layers.iter().enumerate() {
            let n = format!("text_model.layers.{i}");
            linear(&mut out, &format!("{n}.self_attn.q_proj"), &layer.self_attn.q_proj)?;
            linear(&mut out, &format!("{n}.self_attn.k_proj"), &layer.self_attn.k_proj)?;
            linear(&mut out, &format!("{n}.self_attn.v_proj"), &layer.self_attn.v_proj)?;
            linear(&mut out, &format!("{n}.self_attn.o_proj"), &layer.self_attn.o_proj)?;
            linear(&mut out, &format!("{n}.mlp.gate_proj"), &layer.mlp.gate_proj)?;
            linear(&mut out, &format!("{n}.mlp.up_proj"), &layer.mlp.up_proj)?;
            linear(&mut out, &format!("{n}.mlp.down_proj"), &layer.mlp.down_proj)?;
            out.push((format!("{n}.input_layernorm.weight"), host1(&layer.input_layernorm.weight)?));
            out.push((format!("{n}.post_attention_layernorm.weight"), host1(&layer.post_attention_layernorm.weight)?));
        }
        out.push(("text_model.norm.weight".into(), host1(&text.norm.weight)?));
        Ok(out)
    }
}

impl LlamaModel {
    /// Every projection of every layer, mutably (for taking the adapters out and back).
    fn projections_mut(&mut self) -> impl Iterator<Item = &mut HfLinear> {
        self.layers.iter_mut().flat_map(|layer| {
            let LlamaLayer { self_attn: a, mlp: m, .. } = layer;
            [
                &mut a.q_proj,
                &mut a.k_proj,
                &mut a.v_proj,
                &mut a.o_proj,
                &mut m.gate_proj,
                &mut m.up_proj,
                &mut m.down_proj,
            ]
        })
    }
}

impl SmolVlm {
    /// The model with the parameters of `parts` frozen (they take no gradient, so the optimizer
    /// keeps no state for them). Freezing [`Part::Text`] leaves the decoder's LoRA adapters
    /// trainable; [`Part::Lora`] freezes those.
    pub fn with_frozen(mut self, parts: &[Part]) -> Self {
        if parts.contains(&Part::Vision) {
            self.vision_model = self.vision_model.no_grad();
        }
        // The pretrained stem never trains.
        self.vision_model.embeddings.stem = self.vision_model.embeddings.stem.take().map(Module::no_grad);
        if parts.contains(&Part::Connector) {
            self.connector = self.connector.no_grad();
        }
        if parts.contains(&Part::Text) {
            let adapters: Vec<Option<Lora>> = self.text_model.projections_mut().map(|p| p.lora.take()).collect();
            self.text_model = self.text_model.no_grad();
            for (projection, adapter) in self.text_model.projections_mut().zip(adapters) {
                projection.lora = adapter;
            }
        }
        if parts.contains(&Part::Lora) {
            for projection in self.text_model.projections_mut() {
                projection.lora = projection.lora.take().map(Module::no_grad);
            }
        }
        self
    }

    /// The same weights as a model of `config` (the same shapes, adapters added, changed or
    /// removed): the base weights are carried over and adapters of `config` start fresh from
    /// `seed`, so the new model's output equals this one's when this one has no adapters. Built
    /// exactly as loading a checkpoint of `config` builds it (the same parameter order and ids),
    /// so a run resumed later finds its optimizer state. Blocking read-back: native only.
    pub fn rebuild(&self, config: &SmolVlmConfig, seed: u64, device: &Device) -> Result<(Self, LoadReport)> {
        let tensors = self.export()?.into_iter().filter(|(name, _)| !name.contains(".lora_"));
        let mut source = MemorySource::new("the model being re-built", tensors.collect());
        SmolVlm::build(config, Some(&mut source), &Part::BASE, seed, device)
    }

    /// Every parameter under its Hugging Face name with the LoRA adapters merged into their
    /// linear weights (`W += (alpha/rank) · B A` in checkpoint layout) and no adapter left: the
    /// weights of a plain model (`lora: None`) that computes the same function up to rounding.
    pub fn export_merged(&self, lora: &LoraConfig) -> Result<Vec<(String, HostTensor)>> {
        merge_lora(self.export()?, lora)
    }

    /// The model with its adapters merged into the decoder's weights, as a model of `config`
    /// without adapters (`None` when `config` has none). Blocking read-back: native only.
    pub fn merged(&self, config: &SmolVlmConfig, device: &Device) -> Result<Option<(SmolVlmConfig, Self)>> {
        let Some(lora) = &config.lora else { return Ok(None) };
        let plain = SmolVlmConfig { lora: None, ..config.clone() };
        let mut source = MemorySource::new("the merged model", self.export_merged(lora)?);
        let (model, _) = SmolVlm::build(&plain, Some(&mut source), &Part::BASE, 0, device)?;
        Ok(Some((plain, model)))
    }
}

/// Merges `<linear>.lora_A.weight` `[r, in]` and `<linear>.lora_B.weight` `[out, r]` into
/// `<linear>.weight` `[out, in]` (`W += scale · B A`, in f64) and drops the adapters; a pair with
/// a missing half or a shape that does not fit is an error naming it.
pub fn merge_lora(tensors: Vec<(String, HostTensor)>, lora: &LoraConfig) -> Result<Vec<(String, HostTensor)>> {
    let scale = lora.scale();
    let mut adapters: std::collections::HashMap<String, HostTensor> = std::collections::HashMap::new();
    let mut base = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        if name.ends_with(".lora_A.weight") || name.ends_with(".lora_B.weight") {
            adapters.insert(name, tensor);
        } else {
            base.push((name, tensor));
        }
    }
    for (name, weight) in base.iter_mut() {
        let Some(stem) = name.strip_suffix(".weight") else { continue };
        let (a_name, b_name) = (format!("{stem}.lora_A.weight"), format!("{stem}.lora_B.weight"));
        let (a, b) = match (adapters.remove(&a_name), adapters.remove(&b_name)) {
            (None, None) => continue,
            (Some(a), Some(b)) => (a, b),
            _ => return Err(EgaError::Data(format!("{stem}: a LoRA adapter with only one of lora_A and lora_B"))),
        };
        let (d_out, d_in) = match weight.shape.as_slice() {
            [o, i] => (*o, *i),
            other => return Err(EgaError::Data(format!("{name}: a LoRA adapter on a tensor of shape {other:?}"))),
        };
        let r = a.shape.first().copied().unwrap_or(0);
        if a.shape != [r, d_in] || b.shape != [d_out, r] {
            return Err(EgaError::Data(format!(
                "{stem}: LoRA shapes {:?} and {:?} do not fit the weight {:?}",
                a.shape, b.shape, weight.shape
            )));
        }
        for o in 0..d_out {
            for i in 0..d_in {
                let delta: f64 = (0..r).map(|k| b.data[o * r + k] as f64 * a.data[k * d_in + i] as f64).sum();
                let w = &mut weight.data[o * d_in + i];
                *w = (*w as f64 + scale * delta) as f32;
            }
        }
    }
    if let Some(name) = adapters.keys().min() {
        return Err(EgaError::Data(format!("{name}: a LoRA adapter with no linear weight to merge into")));
    }
    Ok(base)
}

/// Tensors held in memory, by Hugging Face name (a model's own export, re-built).
pub struct MemorySource {
    name: String,
    tensors: std::collections::HashMap<String, HostTensor>,
}

impl MemorySource {
    /// `tensors` under `name` (for messages).
    pub fn new(name: &str, tensors: Vec<(String, HostTensor)>) -> Self {
        Self { name: name.to_string(), tensors: tensors.into_iter().collect() }
    }
}

impl TensorSource for MemorySource {
    fn name(&self) -> &str {
        &self.name
    }

    fn stored(&self) -> Vec<crate::store::StoredTensor> {
        let mut stored: Vec<_> = self
            .tensors
            .iter()
            .map(|(name, t)| crate::store::StoredTensor {
                name: name.clone(),
                shape: t.shape.clone(),
                dtype: "F32".into(),
            })
            .collect();
        stored.sort_by(|a, b| a.name.cmp(&b.name));
        stored
    }

    fn take(&mut self, key: &str) -> Result<Option<HostTensor>> {
        Ok(self.tensors.remove(key))
    }
}
