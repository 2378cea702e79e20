//! One-pass CPU kernels for the norms, the attention softmax, SwiGLU, GELU (tanh form) and RoPE
//! of both architectures.
//!
//! Composed from burn ops, an RMSNorm is six passes over `[B, L, D]` (square, mean, add, sqrt,
//! divide, scale), each writing a new tensor, and its autodiff backward about twice that; the
//! attention softmax with its scale and mask adds five more passes over `[B, H, L, L]`, RoPE
//! eight (two slices, four products, two sums and a concatenation). On burn's
//! flex backend (the CPU) each function here is instead one pass forward and one (or two)
//! backward: a burn autodiff operation ([`Backward`]) whose forward and backward are plain loops
//! over rows, spread over rayon's threads by row. Every row is computed by one thread in a fixed
//! order, and the per-column sums of the backward (the gain's and bias's gradients) run over rows
//! in order, so the values never depend on the thread count (exact resume stays exact).
//!
//! Everywhere else (wgpu, f16/bf16 tensors, gradient checkpointing) the `*_reference`
//! compositions of burn ops run; they are the definition, and `tests/integration/fused.rs`
//! holds the kernels to them (values and gradients).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, DType, Flex};
use burn::tensor::activation::softmax;
use burn::tensor::Tensor;

/// The flex backend under autodiff, as the trainer's devices build it.
type FlexAd = Autodiff<Flex, NoCheckpointing>;

/// Below this many elements a kernel runs on the calling thread (rayon's hand-off costs more).
#[cfg(not(target_family = "wasm"))]
const PARALLEL_MIN_ELEMENTS: usize = 1 << 14;

/// Kernel passes so far on flex, for tests that must see the kernels run.
static KERNEL_CALLS: AtomicU64 = AtomicU64::new(0);

/// How many times a kernel of this module has run on flex (any thread, any test).
pub fn kernel_calls() -> u64 {
    KERNEL_CALLS.load(Ordering::Relaxed)
}

/// Columns per task of the per-column sums.
const COLUMN_BLOCK: usize = 64;

// ---------------------------------------------------------------------------------------------
// The references: the definitions, as burn ops (they run on wgpu and are what the tests compare).
// ---------------------------------------------------------------------------------------------

/// `x / sqrt(mean(x²) + eps) · gain` over the last dimension, composed from burn ops.
///
/// # Shapes
/// - x: `[B, L, D]`, gain: `[D]` → `[B, L, D]`
pub fn rms_norm_reference(x: Tensor<3>, gain: Tensor<1>, eps: f64) -> Tensor<3> {
    let rms = x.clone().square().mean_dim(2).add_scalar(eps).sqrt(); // [B, L, 1]
    x / rms * gain.unsqueeze::<3>()
}

/// `(x − mean) / sqrt(var + eps) · gain + bias` over the last dimension (biased variance),
/// composed from burn ops.
///
/// # Shapes
/// - x: `[B, L, D]`, gain, bias: `[D]` → `[B, L, D]`
pub fn layer_norm_reference(x: Tensor<3>, gain: Tensor<1>, bias: Tensor<1>, eps: f64) -> Tensor<3> {
    let mean = x.clone().mean_dim(2); // [B, L, 1]
    let centered = x - mean;
    let var = centered.clone().square().mean_dim(2); // [B, L, 1]
    centered / var.add_scalar(eps).sqrt() * gain.unsqueeze::<3>() + bias.unsqueeze::<3>()
}

/// `softmax(scores · scale + bias)` over the last dimension, composed from burn ops. The bias
/// (an attention mask: 0 where allowed, a large negative where not) broadcasts over heads.
///
/// # Shapes
/// - scores: `[B, H, Lq, Lk]`, bias: `[B or 1, H or 1, Lq, Lk]` → `[B, H, Lq, Lk]`
pub fn attention_softmax_reference(scores: Tensor<4>, scale: f64, bias: Option<&Tensor<4>>) -> Tensor<4> {
    let mut scores = scores.mul_scalar(scale);
    if let Some(bias) = bias {
        scores = scores + bias.clone();
    }
    softmax(scores, 3)
}

// ---------------------------------------------------------------------------------------------
// The public functions: the kernels where they apply, the references elsewhere.
// ---------------------------------------------------------------------------------------------

/// RMSNorm as [`rms_norm_reference`] defines it: one pass on flex, the reference elsewhere.
pub fn rms_norm(x: Tensor<3>, gain: Tensor<1>, eps: f64) -> Tensor<3> {
    match (route(x.clone()), route(gain.clone())) {
        (Routed::Plain(xp), Routed::Plain(gp)) => {
            Tensor::from_primitive::<Flex>(norm_forward(&contiguous(xp), &contiguous(gp), None, eps, Norm::Rms).0)
        }
        (Routed::Tracked(xa), Routed::Tracked(ga)) => {
            Tensor::from_primitive::<FlexAd>(norm_autodiff(xa, ga, None, eps))
        }
        _ => rms_norm_reference(x, gain, eps),
    }
}

/// LayerNorm as [`layer_norm_reference`] defines it: one pass on flex, the reference elsewhere.
pub fn layer_norm(x: Tensor<3>, gain: Tensor<1>, bias: Tensor<1>, eps: f64) -> Tensor<3> {
    match (route(x.clone()), route(gain.clone()), route(bias.clone())) {
        (Routed::Plain(xp), Routed::Plain(gp), Routed::Plain(bp)) => Tensor::from_primitive::<Flex>(
            norm_forward(&contiguous(xp), &contiguous(gp), Some(&contiguous(bp)), eps, Norm::Layer).0,
        ),
        (Routed::Tracked(xa), Routed::Tracked(ga), Routed::Tracked(ba)) => {
            Tensor::from_primitive::<FlexAd>(norm_autodiff(xa, ga, Some(ba), eps))
        }
        _ => layer_norm_reference(x, gain, bias, eps),
    }
}

/// The attention weights `softmax(scores · scale + bias)` as [`attention_softmax_reference`]
/// defines them: one pass on flex, the reference elsewhere. The bias is a constant (a mask): when
/// it requires a gradient, or its shape does not broadcast as documented, the reference runs.
pub fn attention_softmax(scores: Tensor<4>, scale: f64, bias: Option<&Tensor<4>>) -> Tensor<4> {
    let [b, h, q, k] = scores.dims();
    let bias_ok = bias.is_none_or(|bias| {
        let [bb, bh, bq, bk] = bias.dims();
        !bias.is_require_grad() && (bb == b || bb == 1) && (bh == h || bh == 1) && bq == q && bk == k
    });
    if !bias_ok {
        return attention_softmax_reference(scores, scale, bias);
    }
    // The bias as a plain flex tensor (it carries no gradient), with its head stride.
    let bias_plain = match bias.map(|bias| plain(bias.clone())) {
        None => None,
        Some(Some(p)) => Some(contiguous(p)),
        Some(None) => return attention_softmax_reference(scores, scale, bias),
    };
    let mask = bias_plain.as_ref().map(|p| {
        let dims = p.layout().shape().to_vec();
        MaskLayout { data: p, heads: h, batch_broadcast: dims[0] == 1, head_broadcast: dims[1] == 1 }
    });
    match route(scores.clone()) {
        Routed::Plain(sp) => Tensor::from_primitive::<Flex>(softmax_forward(&contiguous(sp), scale, mask.as_ref())),
        Routed::Tracked(sa) => {
            let (sp, guard) = sa.into_parts();
            let y = softmax_forward(&contiguous(sp), scale, mask.as_ref());
            let out = match SoftmaxBackward.prepare::<NoCheckpointing>([guard]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish((y.clone(), scale as f32), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            Tensor::from_primitive::<FlexAd>(out)
        }
        Routed::Other => attention_softmax_reference(scores, scale, bias),
    }
}

// ---------------------------------------------------------------------------------------------
// Routing: which backend a tensor lives on.
// ---------------------------------------------------------------------------------------------

enum Routed {
    /// An f32 flex tensor (no autodiff).
    Plain(FlexTensor),
    /// An f32 flex tensor under autodiff without checkpointing.
    Tracked(FloatTensor<FlexAd>),
    /// Anything else: the reference runs.
    Other,
}

fn route<const D: usize>(t: Tensor<D>) -> Routed {
    if t.dtype() != DType::F32 {
        return Routed::Other;
    }
    if t.device().is_autodiff() {
        t.try_into_primitive::<FlexAd>().map_or(Routed::Other, Routed::Tracked)
    } else {
        t.try_into_primitive::<Flex>().map_or(Routed::Other, Routed::Plain)
    }
}

/// The flex primitive of a tensor that carries no gradient (autodiff or not), if on flex in f32.
fn plain<const D: usize>(t: Tensor<D>) -> Option<FlexTensor> {
    match route(t) {
        Routed::Plain(p) => Some(p),
        Routed::Tracked(a) => Some(a.into_primitive()),
        Routed::Other => None,
    }
}

/// `t` laid out so that `as_slice` sees it whole (a copy only when it is strided or offset).
fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 flex tensor")
}

/// A fresh f32 tensor of `shape`, filled by `fill` on its contiguous storage.
fn new_tensor(shape: burn::tensor::Shape, fill: impl FnOnce(&mut [f32])) -> FlexTensor {
    let mut out = FlexTensor::empty(shape, DType::F32);
    fill(out.storage_mut::<f32>());
    out
}

// ---------------------------------------------------------------------------------------------
// Row helpers.
// ---------------------------------------------------------------------------------------------

/// Calls `f(i, row_i)` for every row of length `d` of `out`, spread over threads when large.
fn for_rows(out: &mut [f32], d: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    #[cfg(not(target_family = "wasm"))]
    if out.len() >= PARALLEL_MIN_ELEMENTS {
        use rayon::prelude::*;
        out.par_chunks_mut(d).enumerate().for_each(|(i, row)| f(i, row));
        return;
    }
    out.chunks_mut(d).enumerate().for_each(|(i, row)| f(i, row));
}

/// `f(i)` for each of `rows` rows, collected in row order.
fn map_rows<T: Send>(rows: usize, elements: usize, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    #[cfg(not(target_family = "wasm"))]
    if elements >= PARALLEL_MIN_ELEMENTS {
        use rayon::prelude::*;
        return (0..rows).into_par_iter().map(f).collect();
    }
    let _ = elements;
    (0..rows).map(f).collect()
}

/// Per-column sums over rows: `out[j] = Σ_i term(i, j)`, rows added in order (deterministic),
/// blocks of columns spread over threads. `term(i, cols, acc)` adds row `i`'s terms for the
/// columns `cols` into `acc`.
fn column_sums(
    rows: usize,
    d: usize,
    term: impl Fn(usize, std::ops::Range<usize>, &mut [f32]) + Sync + Send,
) -> Vec<f32> {
    let mut out = vec![0f32; d];
    let block = |(b, acc): (usize, &mut [f32])| {
        let cols = b * COLUMN_BLOCK..b * COLUMN_BLOCK + acc.len();
        for i in 0..rows {
            term(i, cols.clone(), acc);
        }
    };
    #[cfg(not(target_family = "wasm"))]
    if rows * d >= PARALLEL_MIN_ELEMENTS {
        use rayon::prelude::*;
        out.par_chunks_mut(COLUMN_BLOCK).enumerate().for_each(block);
        return out;
    }
    out.chunks_mut(COLUMN_BLOCK).enumerate().for_each(block);
    out
}

/// `Σ a_k` with eight partial sums (so the loop vectorises).
fn sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ a_k · b_k` with eight partial sums.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

// ---------------------------------------------------------------------------------------------
// RMSNorm and LayerNorm.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Norm {
    Rms,
    Layer,
}

/// A row's `(mean, 1/sqrt(var + eps))`; the mean is 0 for RMSNorm (whose "var" is mean(x²)).
fn row_stats(row: &[f32], eps: f64, norm: Norm) -> (f32, f32) {
    let d = row.len() as f32;
    let mean = match norm {
        Norm::Rms => 0.0,
        Norm::Layer => sum(row) / d,
    };
    let var = match norm {
        Norm::Rms => dot(row, row) / d,
        Norm::Layer => row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d,
    };
    (mean, (1.0 / (var as f64 + eps).sqrt()) as f32)
}

/// The forward of either norm on contiguous `x [.., D]`, `gain [D]`, `bias [D]`.
/// Returns the output and each row's `(mean, 1/σ)` (which the backward keeps).
fn norm_forward(
    x: &FlexTensor,
    gain: &FlexTensor,
    bias: Option<&FlexTensor>,
    eps: f64,
    norm: Norm,
) -> (FlexTensor, Arc<[(f32, f32)]>) {
    KERNEL_CALLS.fetch_add(1, Ordering::Relaxed);
    let (xs, g) = (slice(x), slice(gain));
    let b = bias.map(slice);
    let d = g.len();
    let stats: Arc<[(f32, f32)]> =
        map_rows(xs.len() / d, xs.len(), |i| row_stats(&xs[i * d..(i + 1) * d], eps, norm)).into();
    let y = new_tensor(x.layout().shape().clone(), |y| {
        for_rows(y, d, |i, out| {
            let row = &xs[i * d..(i + 1) * d];
            let (mean, r) = stats[i];
            match b {
                None => out.iter_mut().zip(row).zip(g).for_each(|((o, &v), &gj)| *o = (v - mean) * r * gj),
                Some(b) => {
                    for j in 0..d {
                        out[j] = (row[j] - mean) * r * g[j] + b[j];
                    }
                }
            }
        })
    });
    (y, stats)
}

/// The autodiff node of either norm.
#[derive(Debug)]
struct NormBackward;

/// `x`, `gain`, each row's `(mean, 1/σ)`, which norm.
type NormState = (FlexTensor, FlexTensor, Arc<[(f32, f32)]>, Norm);

impl Backward<Flex, 3> for NormBackward {
    type State = NormState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [x_node, gain_node, bias_node] = ops.parents;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let (x, gain, stats, norm) = ops.state;
        let (xs, g, dys) = (slice(&x), slice(&gain), slice(&dy));
        let d = g.len();
        let rows = xs.len() / d;
        if let Some(node) = x_node {
            // dx = r · (g·dy − mean(g·dy) − x̂ · mean(g·dy · x̂)), without the mean term for RMSNorm.
            let dx = new_tensor(x.layout().shape().clone(), |dx| {
                for_rows(dx, d, |i, out| {
                    let (row, dyr) = (&xs[i * d..(i + 1) * d], &dys[i * d..(i + 1) * d]);
                    let (mean, r) = stats[i];
                    let mut s_gy = 0f32;
                    let mut s_gy_xhat = 0f32;
                    for j in 0..d {
                        let gy = g[j] * dyr[j];
                        out[j] = gy;
                        s_gy += gy;
                        s_gy_xhat += gy * (row[j] - mean) * r;
                    }
                    let m_gy = if norm == Norm::Layer { s_gy / d as f32 } else { 0.0 };
                    let m_gy_xhat = s_gy_xhat / d as f32;
                    for j in 0..d {
                        out[j] = r * (out[j] - m_gy - (row[j] - mean) * r * m_gy_xhat);
                    }
                })
            });
            grads.register::<Flex>(node.id, dx);
        }
        if let Some(node) = gain_node {
            let dg = column_sums(rows, d, |i, cols, acc| {
                let (mean, r) = stats[i];
                for (a, j) in acc.iter_mut().zip(cols) {
                    *a += dys[i * d + j] * (xs[i * d + j] - mean) * r;
                }
            });
            grads.register::<Flex>(node.id, FlexTensor::from_data(burn::tensor::TensorData::new(dg, [d])));
        }
        if let Some(node) = bias_node {
            let db = column_sums(rows, d, |i, cols, acc| {
                for (a, j) in acc.iter_mut().zip(cols) {
                    *a += dys[i * d + j];
                }
            });
            grads.register::<Flex>(node.id, FlexTensor::from_data(burn::tensor::TensorData::new(db, [d])));
        }
    }
}

/// The norm as a tracked operation; without a bias its third parent is a stand-in that never
/// requires a gradient.
fn norm_autodiff(
    x: FloatTensor<FlexAd>,
    gain: FloatTensor<FlexAd>,
    bias: Option<FloatTensor<FlexAd>>,
    eps: f64,
) -> FloatTensor<FlexAd> {
    let norm = if bias.is_some() { Norm::Layer } else { Norm::Rms };
    let (xp, x_guard) = x.into_parts();
    let (gp, g_guard) = gain.into_parts();
    let (xp, gp) = (contiguous(xp), contiguous(gp));
    let (bp, b_guard) = match bias.map(|bias| bias.into_parts()) {
        Some((bp, guard)) => (Some(contiguous(bp)), Some(guard)),
        None => (None, None),
    };
    let (y, stats) = norm_forward(&xp, &gp, bp.as_ref(), eps, norm);
    let state = (xp, gp, stats, norm);
    // The two node types differ only in their number of parents.
    match b_guard {
        Some(b_guard) => {
            match NormBackward.prepare::<NoCheckpointing>([x_guard, g_guard, b_guard]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish(state, y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            }
        }
        None => match RmsBackward.prepare::<NoCheckpointing>([x_guard, g_guard]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        },
    }
}

/// RMSNorm's node: two parents (x, gain); the backward is the norms' one without a bias.
#[derive(Debug)]
struct RmsBackward;

impl Backward<Flex, 2> for RmsBackward {
    type State = NormState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [x_node, gain_node] = ops.parents;
        let three = Ops { parents: [x_node, gain_node, None], node: ops.node, state: ops.state };
        NormBackward.backward(three, grads, checkpointer);
    }
}

// ---------------------------------------------------------------------------------------------
// The attention softmax.
// ---------------------------------------------------------------------------------------------

/// Where row `(b, h, q)` of the scores finds its bias row.
struct MaskLayout<'a> {
    data: &'a FlexTensor,
    heads: usize,
    batch_broadcast: bool,
    head_broadcast: bool,
}

impl MaskLayout<'_> {
    /// The bias row of score row `i` (rows of `Lq` per head, `H` heads per batch item).
    fn row(&self, i: usize, lq: usize, lk: usize) -> &[f32] {
        let (q, bh) = (i % lq, i / lq);
        let (h, b) = (bh % self.heads, bh / self.heads);
        let b = if self.batch_broadcast { 0 } else { b };
        let h = if self.head_broadcast { 0 } else { h };
        let heads = if self.head_broadcast { 1 } else { self.heads };
        let start = ((b * heads + h) * lq + q) * lk;
        &slice(self.data)[start..start + lk]
    }
}

fn softmax_forward(scores: &FlexTensor, scale: f64, mask: Option<&MaskLayout>) -> FlexTensor {
    KERNEL_CALLS.fetch_add(1, Ordering::Relaxed);
    let shape = scores.layout().shape().clone();
    let (lq, lk) = (shape[2], shape[3]);
    let s = slice(scores);
    let scale = scale as f32;
    new_tensor(shape, |y| {
        for_rows(y, lk, |i, out| {
            let row = &s[i * lk..(i + 1) * lk];
            match mask {
                Some(mask) => {
                    let bias = mask.row(i, lq, lk);
                    for j in 0..lk {
                        out[j] = row[j] * scale + bias[j];
                    }
                }
                None => out.iter_mut().zip(row).for_each(|(o, &v)| *o = v * scale),
            }
            let max = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0f32;
            for o in out.iter_mut() {
                *o = (*o - max).exp();
                total += *o;
            }
            let inv = 1.0 / total;
            out.iter_mut().for_each(|o| *o *= inv);
        })
    })
}

/// The softmax's node: `∂scores = scale · y · (dy − Σ dy·y)` per row.
#[derive(Debug)]
struct SoftmaxBackward;

impl Backward<Flex, 1> for SoftmaxBackward {
    /// The weights `y` and the scale.
    type State = (FlexTensor, f32);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [parent] = ops.parents;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let (y, scale) = ops.state;
        let Some(node) = parent else { return };
        let lk = y.layout().shape()[3];
        let (ys, dys) = (slice(&y), slice(&dy));
        let ds = new_tensor(y.layout().shape().clone(), |ds| {
            for_rows(ds, lk, |i, out| {
                let (yr, dyr) = (&ys[i * lk..(i + 1) * lk], &dys[i * lk..(i + 1) * lk]);
                let inner = dot(yr, dyr);
                for j in 0..lk {
                    out[j] = scale * yr[j] * (dyr[j] - inner);
                }
            })
        });
        grads.register::<Flex>(node.id, ds);
    }
}

// ---------------------------------------------------------------------------------------------
// Element-wise: SwiGLU's gate, SigLIP's GELU (tanh form).
// ---------------------------------------------------------------------------------------------

/// Elements per task of the element-wise kernels.
const ELEMENT_BLOCK: usize = 4096;

/// Calls `f(start, chunk)` over `out` in blocks of [`ELEMENT_BLOCK`], spread over threads when large.
fn for_blocks(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    #[cfg(not(target_family = "wasm"))]
    if out.len() >= PARALLEL_MIN_ELEMENTS {
        use rayon::prelude::*;
        out.par_chunks_mut(ELEMENT_BLOCK).enumerate().for_each(|(b, chunk)| f(b * ELEMENT_BLOCK, chunk));
        return;
    }
    out.chunks_mut(ELEMENT_BLOCK).enumerate().for_each(|(b, chunk)| f(b * ELEMENT_BLOCK, chunk));
}

/// `silu(gate) · up`, composed from burn ops.
pub fn swiglu_reference<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    burn::tensor::activation::silu(gate) * up
}

/// SwiGLU's gating `silu(gate) · up` (`silu(g) = g·σ(g)`), as [`swiglu_reference`] defines it:
/// one pass on flex, the reference elsewhere (or when the shapes differ).
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    if gate.dims() != up.dims() {
        return swiglu_reference(gate, up);
    }
    match (route(gate.clone()), route(up.clone())) {
        (Routed::Plain(g), Routed::Plain(u)) => {
            Tensor::from_primitive::<Flex>(swiglu_forward(&contiguous(g), &contiguous(u)))
        }
        (Routed::Tracked(ga), Routed::Tracked(ua)) => {
            let (g, g_guard) = ga.into_parts();
            let (u, u_guard) = ua.into_parts();
            let (g, u) = (contiguous(g), contiguous(u));
            let y = swiglu_forward(&g, &u);
            let out = match SwigluBackward.prepare::<NoCheckpointing>([g_guard, u_guard]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish((g, u), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            Tensor::from_primitive::<FlexAd>(out)
        }
        _ => swiglu_reference(gate, up),
    }
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

fn swiglu_forward(gate: &FlexTensor, up: &FlexTensor) -> FlexTensor {
    KERNEL_CALLS.fetch_add(1, Ordering::Relaxed);
    let (g, u) = (slice(gate), slice(up));
    new_tensor(gate.layout().shape().clone(), |y| {
        for_blocks(y, |start, out| {
            for (k, o) in out.iter_mut().enumerate() {
                let (gv, uv) = (g[start + k], u[start + k]);
                *o = gv * sigmoid(gv) * uv;
            }
        })
    })
}

/// SwiGLU's node: `∂gate = dy · up · σ(g)(1 + g(1 − σ(g)))`, `∂up = dy · g·σ(g)`.
#[derive(Debug)]
struct SwigluBackward;

impl Backward<Flex, 2> for SwigluBackward {
    /// `gate`, `up` (contiguous).
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [gate_node, up_node] = ops.parents;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let (gate, up) = ops.state;
        let (g, u, dys) = (slice(&gate), slice(&up), slice(&dy));
        let shape = gate.layout().shape().clone();
        if let Some(node) = gate_node {
            let dg = new_tensor(shape.clone(), |dg| {
                for_blocks(dg, |start, out| {
                    for (k, o) in out.iter_mut().enumerate() {
                        let (gv, s) = (g[start + k], sigmoid(g[start + k]));
                        *o = dys[start + k] * u[start + k] * s * (1.0 + gv * (1.0 - s));
                    }
                })
            });
            grads.register::<Flex>(node.id, dg);
        }
        if let Some(node) = up_node {
            let du = new_tensor(shape, |du| {
                for_blocks(du, |start, out| {
                    for (k, o) in out.iter_mut().enumerate() {
                        let gv = g[start + k];
                        *o = dys[start + k] * gv * sigmoid(gv);
                    }
                })
            });
            grads.register::<Flex>(node.id, du);
        }
    }
}

/// `√(2/π)`, GELU's tanh-form constant.
const GELU_C: f64 = 0.797_884_560_802_865_4;

/// GELU with the tanh approximation (`gelu_pytorch_tanh`, SigLIP's activation),
/// `x/2 · (1 + tanh(√(2/π)·(x + 0.044715·x³)))`, composed from burn ops.
pub fn gelu_tanh_reference<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715)).mul_scalar(GELU_C);
    x.mul_scalar(0.5) * inner.tanh().add_scalar(1.0)
}

/// GELU (tanh form) as [`gelu_tanh_reference`] defines it: one pass on flex, the reference elsewhere.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    match route(x.clone()) {
        Routed::Plain(p) => Tensor::from_primitive::<Flex>(gelu_tanh_forward(&contiguous(p))),
        Routed::Tracked(a) => {
            let (p, guard) = a.into_parts();
            let p = contiguous(p);
            let y = gelu_tanh_forward(&p);
            let out = match GeluTanhBackward.prepare::<NoCheckpointing>([guard]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish(p, y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            Tensor::from_primitive::<FlexAd>(out)
        }
        Routed::Other => gelu_tanh_reference(x),
    }
}

/// `(gelu(x), ∂gelu/∂x)` of one value.
fn gelu_tanh_value(x: f32) -> (f32, f32) {
    let c = GELU_C as f32;
    let t = (c * (x + 0.044715 * x * x * x)).tanh();
    let y = 0.5 * x * (1.0 + t);
    let dy = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x);
    (y, dy)
}

fn gelu_tanh_forward(x: &FlexTensor) -> FlexTensor {
    KERNEL_CALLS.fetch_add(1, Ordering::Relaxed);
    let xs = slice(x);
    new_tensor(x.layout().shape().clone(), |y| {
        for_blocks(y, |start, out| {
            for (k, o) in out.iter_mut().enumerate() {
                *o = gelu_tanh_value(xs[start + k]).0;
            }
        })
    })
}

/// GELU's node: `∂x = dy · gelu'(x)`.
#[derive(Debug)]
struct GeluTanhBackward;

impl Backward<Flex, 1> for GeluTanhBackward {
    /// `x` (contiguous).
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [parent] = ops.parents;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let Some(node) = parent else { return };
        let x = ops.state;
        let (xs, dys) = (slice(&x), slice(&dy));
        let dx = new_tensor(x.layout().shape().clone(), |dx| {
            for_blocks(dx, |start, out| {
                for (k, o) in out.iter_mut().enumerate() {
                    *o = dys[start + k] * gelu_tanh_value(xs[start + k]).1;
                }
            })
        });
        grads.register::<Flex>(node.id, dx);
    }
}

// ---------------------------------------------------------------------------------------------
// Rotary position embedding.
// ---------------------------------------------------------------------------------------------

/// Rotary embeddings on `x` `[B, H, L, hd]` with tables `cos`, `sin` `[1, 1, L, hd/2]`, in the
/// rotate-half convention (pairs `(x[k], x[k + hd/2])`), composed from burn ops.
pub fn rope_reference(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let [b, h, l, hd] = x.dims();
    let half = hd / 2;
    let first = x.clone().slice([0..b, 0..h, 0..l, 0..half]);
    let second = x.slice([0..b, 0..h, 0..l, half..hd]);
    let rotated_first = first.clone() * cos.clone() - second.clone() * sin.clone();
    let rotated_second = first * sin.clone() + second * cos.clone();
    Tensor::cat(vec![rotated_first, rotated_second], 3)
}

/// Rotary embeddings as [`rope_reference`] defines them: one pass on flex, the reference
/// elsewhere (or when the tables are not constant `[1, 1, L, hd/2]`).
pub fn rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let [_, _, l, hd] = x.dims();
    let tables_ok = hd % 2 == 0 && [cos, sin].iter().all(|t| t.dims() == [1, 1, l, hd / 2] && !t.is_require_grad());
    let tables = if tables_ok { plain(cos.clone()).zip(plain(sin.clone())) } else { None };
    let Some((cos_p, sin_p)) = tables else { return rope_reference(x, cos, sin) };
    let (cos_p, sin_p) = (contiguous(cos_p), contiguous(sin_p));
    match route(x.clone()) {
        Routed::Plain(p) => Tensor::from_primitive::<Flex>(rope_apply(&contiguous(p), &cos_p, &sin_p, false)),
        Routed::Tracked(a) => {
            let (p, guard) = a.into_parts();
            let y = rope_apply(&contiguous(p), &cos_p, &sin_p, false);
            let out = match RopeBackward.prepare::<NoCheckpointing>([guard]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish((cos_p, sin_p), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            Tensor::from_primitive::<FlexAd>(out)
        }
        Routed::Other => rope_reference(x, cos, sin),
    }
}

/// The rotation of every `[hd]` row of `x` by its position's angles; `inverse` rotates back
/// (the backward: the transpose of a rotation is the opposite rotation).
fn rope_apply(x: &FlexTensor, cos: &FlexTensor, sin: &FlexTensor, inverse: bool) -> FlexTensor {
    KERNEL_CALLS.fetch_add(1, Ordering::Relaxed);
    let shape = x.layout().shape().clone();
    let (l, hd) = (shape[2], shape[3]);
    let half = hd / 2;
    let (xs, c, s) = (slice(x), slice(cos), slice(sin));
    let sign = if inverse { -1.0 } else { 1.0 };
    new_tensor(shape, |y| {
        for_rows(y, hd, |i, out| {
            let row = &xs[i * hd..(i + 1) * hd];
            let position = i % l;
            let (c, s) = (&c[position * half..(position + 1) * half], &s[position * half..(position + 1) * half]);
            for k in 0..half {
                let (a, b) = (row[k], row[k + half]);
                let sk = sign * s[k];
                out[k] = a * c[k] - b * sk;
                out[k + half] = a * sk + b * c[k];
            }
        })
    })
}

/// RoPE's node: `∂x` is `dy` rotated back.
#[derive(Debug)]
struct RopeBackward;

impl Backward<Flex, 1> for RopeBackward {
    /// The tables `cos`, `sin` (contiguous).
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [parent] = ops.parents;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let Some(node) = parent else { return };
        let (cos, sin) = ops.state;
        grads.register::<Flex>(node.id, rope_apply(&dy, &cos, &sin, true));
    }
}

// ---------------------------------------------------------------------------------------------
// Linear layers on a system BLAS.
// ---------------------------------------------------------------------------------------------

/// `x · w + b` (`w` `[in, out]`), as burn's `module::linear` defines it: on flex, when the machine
/// has a BLAS ([`crate::blas`]), one `sgemm` forward and two backward (`dx = dy · wᵀ`,
/// `dw = xᵀ · dy`; the bias's gradient a per-column sum over rows in order); burn's matmul
/// everywhere else.
///
/// # Shapes
/// - x: `[..., in]`, w: `[in, out]`, b: `[out]` → `[..., out]`
pub fn linear<const D: usize>(x: Tensor<D>, w: Tensor<2>, b: Option<Tensor<1>>) -> Tensor<D> {
    #[cfg(not(target_family = "wasm"))]
    if crate::blas::library().is_some() {
        if let Some(y) = blas_linear(x.clone(), w.clone(), b.clone()) {
            return y;
        }
    }
    burn::tensor::module::linear(x, w, b)
}

/// [`linear`] on the BLAS, or `None` when a tensor is not an f32 flex tensor (or the three are
/// not all tracked / all plain).
#[cfg(not(target_family = "wasm"))]
fn blas_linear<const D: usize>(x: Tensor<D>, w: Tensor<2>, b: Option<Tensor<1>>) -> Option<Tensor<D>> {
    let dims = x.dims();
    let [d_in, d_out] = w.dims();
    let rows: usize = dims[..D - 1].iter().product();
    let mut out_dims = dims;
    out_dims[D - 1] = d_out;
    let x2 = x.reshape([rows, d_in]);
    let routed = (route(x2), route(w), b.map(route));
    let y: Tensor<2> = match routed {
        (Routed::Plain(xp), Routed::Plain(wp), None) => {
            Tensor::from_primitive::<Flex>(linear_forward(&contiguous(xp), &contiguous(wp), None)?)
        }
        (Routed::Plain(xp), Routed::Plain(wp), Some(Routed::Plain(bp))) => {
            Tensor::from_primitive::<Flex>(linear_forward(&contiguous(xp), &contiguous(wp), Some(&contiguous(bp)))?)
        }
        (Routed::Tracked(xa), Routed::Tracked(wa), None) => {
            Tensor::from_primitive::<FlexAd>(linear_autodiff(xa, wa, None)?)
        }
        (Routed::Tracked(xa), Routed::Tracked(wa), Some(Routed::Tracked(ba))) => {
            Tensor::from_primitive::<FlexAd>(linear_autodiff(xa, wa, Some(ba))?)
        }
        _ => return None,
    };
    Some(y.reshape(out_dims))
}

/// `x [rows, in] · w [in, out] (+ b)` on the BLAS (contiguous inputs).
#[cfg(not(target_family = "wasm"))]
fn linear_forward(x: &FlexTensor, w: &FlexTensor, b: Option<&FlexTensor>) -> Option<FlexTensor> {
    let (xs, ws) = (slice(x), slice(w));
    let d_in = x.layout().shape()[1];
    let d_out = w.layout().shape()[1];
    let rows = xs.len() / d_in.max(1);
    let mut y = FlexTensor::empty(burn::tensor::Shape::from(vec![rows, d_out]), DType::F32);
    let out = y.storage_mut::<f32>();
    // The bias first, then `out = x·w + 1·out`.
    let beta = match b.map(slice) {
        Some(bias) => {
            out.chunks_mut(d_out.max(1)).for_each(|row| row.copy_from_slice(bias));
            1.0
        }
        None => 0.0,
    };
    if !crate::blas::sgemm(false, false, rows, d_out, d_in, xs, ws, beta, out) {
        return None;
    }
    KERNEL_CALLS.fetch_add(1, Ordering::Relaxed);
    Some(y)
}

#[cfg(not(target_family = "wasm"))]
fn linear_autodiff(
    x: FloatTensor<FlexAd>,
    w: FloatTensor<FlexAd>,
    b: Option<FloatTensor<FlexAd>>,
) -> Option<FloatTensor<FlexAd>> {
    let (xp, x_guard) = x.into_parts();
    let (wp, w_guard) = w.into_parts();
    let (xp, wp) = (contiguous(xp), contiguous(wp));
    let (bp, b_guard) = match b.map(|b| b.into_parts()) {
        Some((bp, guard)) => (Some(contiguous(bp)), Some(guard)),
        None => (None, None),
    };
    let y = linear_forward(&xp, &wp, bp.as_ref())?;
    let state = (xp, wp);
    Some(match b_guard {
        Some(b_guard) => {
            match LinearBackward.prepare::<NoCheckpointing>([x_guard, w_guard, b_guard]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish(state, y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            }
        }
        None => match LinearNoBiasBackward.prepare::<NoCheckpointing>([x_guard, w_guard]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        },
    })
}

/// The linear layer's node: parents x, w, b.
#[cfg(not(target_family = "wasm"))]
#[derive(Debug)]
struct LinearBackward;

#[cfg(not(target_family = "wasm"))]
impl Backward<Flex, 3> for LinearBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [x_node, w_node, b_node] = ops.parents;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let (x, w) = ops.state;
        let (xs, ws, dys) = (slice(&x), slice(&w), slice(&dy));
        let d_in = x.layout().shape()[1];
        let d_out = w.layout().shape()[1];
        let rows = xs.len() / d_in.max(1);
        let gemm_ok = |ok: bool| assert!(ok, "the BLAS refused a product it took in the forward");
        if let Some(node) = x_node {
            // dx = dy · wᵀ: [rows, out] · [out, in].
            let dx = new_tensor(x.layout().shape().clone(), |dx| {
                gemm_ok(crate::blas::sgemm(false, true, rows, d_in, d_out, dys, ws, 0.0, dx))
            });
            grads.register::<Flex>(node.id, dx);
        }
        if let Some(node) = w_node {
            // dw = xᵀ · dy: [in, rows] · [rows, out].
            let dw = new_tensor(w.layout().shape().clone(), |dw| {
                gemm_ok(crate::blas::sgemm(true, false, d_in, d_out, rows, xs, dys, 0.0, dw))
            });
            grads.register::<Flex>(node.id, dw);
        }
        if let Some(node) = b_node {
            let db = column_sums(rows, d_out, |i, cols, acc| {
                for (a, j) in acc.iter_mut().zip(cols) {
                    *a += dys[i * d_out + j];
                }
            });
            grads.register::<Flex>(node.id, FlexTensor::from_data(burn::tensor::TensorData::new(db, [d_out])));
        }
        KERNEL_CALLS.fetch_add(1, Ordering::Relaxed);
    }
}

/// The linear layer without a bias: parents x, w.
#[cfg(not(target_family = "wasm"))]
#[derive(Debug)]
struct LinearNoBiasBackward;

#[cfg(not(target_family = "wasm"))]
impl Backward<Flex, 2> for LinearNoBiasBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [x_node, w_node] = ops.parents;
        let three = Ops { parents: [x_node, w_node, None], node: ops.node, state: ops.state };
        LinearBackward.backward(three, grads, checkpointer);
    }
}
