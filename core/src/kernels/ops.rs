//! The WGSL kernels as backend operations of burn's cubecl backend, so they run wherever burn's
//! `Cube` backend type does: directly on `CubeBackend` (the default build), and inside
//! burn-fusion's stream with ega-core's `fusion` feature (`Cube = Fusion<CubeBackend>`).
//!
//! `#[backend_extension(.., Fusion)]` generates the `Fusion<B>` implementation: each call computes
//! its outputs' shapes and dtypes now (the `*_meta` functions), registers an opaque custom
//! operation in the fusion stream, and returns lazy fusion tensors; when the stream executes, the
//! operation gets the inputs' `CubeTensor`s from the fusion handle container, runs the
//! `CubeBackend` implementation below (which launches the WGSL) and publishes its outputs. Fused
//! element-wise work before and after a kernel is flushed around it, in stream order, and never
//! crosses it. No host synchronisation is involved.

use burn::backend::backend_extension;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{into_contiguous, CubeBackend};
use burn::backend::Backend;
#[cfg(feature = "fusion")]
use burn::backend::{fusion::custom::TensorSpec, DType, Shape};

use super::ega;
use super::topk;
use super::EgaKernelParams;

/// The kernels as operations of a backend (implemented by `CubeBackend`; the fusion wrapper is
/// generated with the `fusion` feature).
#[backend_extension(Cube, Fusion: cfg(feature = "fusion"))]
pub trait WgslKernels: Backend {
    /// `shaders/ega_loss.wgsl` on `S [N, M]` (f32): `(loss [N], stats [N, 2], S contiguous)`.
    /// The third output is `S` itself when it already was contiguous (the backward reads it).
    #[fusion(meta = ega_forward_meta)]
    fn ega_forward(
        s: FloatTensor<Self>,
        params: EgaKernelParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// `shaders/ega_loss_backward.wgsl`: `G [N, M]` from contiguous `S`, the forward's stats and
    /// the upstream per-row gradients `[N]`.
    #[fusion(dtype = s, shape = s)]
    fn ega_backward(
        s: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        grad_rows: FloatTensor<Self>,
        params: EgaKernelParams,
    ) -> FloatTensor<Self>;

    /// `shaders/topk_cosine.wgsl` (+ `topk_cosine_merge.wgsl`) on a score block `[q, n]` (f32):
    /// `(indices u32 [q, k], scores f32 [q, k])`, padded with index `u32::MAX` past `n`.
    #[fusion(meta = topk_select_meta)]
    fn topk_select(scores: FloatTensor<Self>, d: usize, k: usize) -> (IntTensor<Self>, FloatTensor<Self>);
}

#[cfg(feature = "fusion")]
fn ega_forward_meta(s: &TensorSpec, _params: &EgaKernelParams) -> (TensorSpec, TensorSpec, TensorSpec) {
    let n = s.shape[0];
    (TensorSpec::new(Shape::new([n]), DType::F32), TensorSpec::new(Shape::new([n, 2]), DType::F32), s.clone())
}

#[cfg(feature = "fusion")]
fn topk_select_meta(scores: &TensorSpec, _d: &usize, k: &usize) -> (TensorSpec, TensorSpec) {
    let shape = Shape::new([scores.shape[0], *k]);
    (TensorSpec::new(shape.clone(), DType::U32), TensorSpec::new(shape, DType::F32))
}

impl WgslKernels for CubeBackend {
    fn ega_forward(
        s: FloatTensor<Self>,
        params: EgaKernelParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let s = into_contiguous(s);
        let (loss, stats) = ega::forward(&s, &params);
        (loss, stats, s)
    }

    fn ega_backward(
        s: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        grad_rows: FloatTensor<Self>,
        params: EgaKernelParams,
    ) -> FloatTensor<Self> {
        // Contiguous already when it came from `ega_forward`; the mean's backward hands over an
        // expanded (stride-0) `grad_rows`, which becomes a real [N] buffer here.
        ega::backward(&into_contiguous(s), &into_contiguous(stats), into_contiguous(grad_rows), &params)
    }

    fn topk_select(scores: FloatTensor<Self>, d: usize, k: usize) -> (IntTensor<Self>, FloatTensor<Self>) {
        let scores = into_contiguous(scores);
        let shape = scores.meta.shape();
        let (q, n) = (shape[0], shape[1]);
        topk::select(&scores, q, n, d, k)
    }
}
