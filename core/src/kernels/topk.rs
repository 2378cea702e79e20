//! Exact top-k cosine search on the device: burn's tiled matmul makes the scores `S = Q Xᵀ`
//! (reading the index once for all queries), then `shaders/topk_cosine.wgsl` selects per-chunk
//! candidates and `shaders/topk_cosine_merge.wgsl` merges them. `S` stays on the device (in
//! blocks of queries, so it never exceeds [`MAX_SCORE_ELEMENTS`]); only the `[q, k]` answer
//! leaves it. Order: score descending, ties by the lower index.
//!
//! [`topk_reference`] is the same search composed from burn ops (matmul + sort), which runs on
//! every device; [`topk_cosine`] picks the kernels on wgpu and the reference elsewhere.

#[cfg(feature = "wgpu")]
use burn::backend::wgpu::CubeTensor;
#[cfg(feature = "wgpu")]
use burn::backend::{Cube, DType, Shape};
use burn::tensor::{Int, Tensor};

#[cfg(feature = "wgpu")]
use super::launch::{empty_like_device, launch, WgslKernel};
#[cfg(feature = "wgpu")]
use super::ops::WgslKernels;
use crate::{EgaError, Result};

/// Threads per workgroup of both passes.
#[cfg(feature = "wgpu")]
const WORKGROUP: u32 = 256;
/// Scores each thread of pass 1 reads (it keeps its best `min(k, 32)` in registers): a chunk is
/// 8192 index rows.
#[cfg(feature = "wgpu")]
const ROWS_PER_THREAD: u32 = 32;
/// Largest score block `[queries, n]` materialised at once (64 Mi floats = 256 MiB, the largest
/// buffer browsers commonly allow).
pub const MAX_SCORE_ELEMENTS: usize = 1 << 26;

/// The `k` best index rows of each query.
#[derive(Debug, Clone)]
pub struct TopK {
    /// `[q, min(k, n)]` row indices, best first.
    pub indices: Tensor<2, Int>,
    /// `[q, min(k, n)]` cosine scores, descending.
    pub scores: Tensor<2>,
}

fn check(queries: &Tensor<2>, index: &Tensor<2>, k: usize) -> Result<(usize, usize, usize)> {
    let [q, d] = queries.dims();
    let [n, d_index] = index.dims();
    if d != d_index {
        return Err(EgaError::Shape {
            context: "top-k search",
            message: format!("queries have dimension {d}, the index {d_index}"),
        });
    }
    if k == 0 {
        return Err(EgaError::config("k", k, "must be at least 1"));
    }
    if q == 0 || n == 0 {
        return Err(EgaError::Shape {
            context: "top-k search",
            message: format!("{q} queries against {n} index rows: both must be non-empty"),
        });
    }
    Ok((q, n, d))
}

/// Both passes on a contiguous f32 score block `[q, n]`: `(indices u32 [q, k], scores f32 [q, k])`,
/// padded with index `u32::MAX` past `n`.
#[cfg(feature = "wgpu")]
pub(super) fn select(scores: &CubeTensor, q: usize, n: usize, d: usize, k: usize) -> (CubeTensor, CubeTensor) {
    let chunk = (WORKGROUP * ROWS_PER_THREAD) as usize;
    let num_chunks = n.div_ceil(chunk).max(1);
    let params = [q as u32, n as u32, d as u32, k as u32, num_chunks as u32, 0, 0, 0];
    let candidates = Shape::new([q, num_chunks * k]);
    let cand_idx = empty_like_device(scores, candidates.clone(), DType::U32);
    let cand_score = empty_like_device(scores, candidates, DType::F32);
    let chunk_kernel = WgslKernel {
        file: "topk_cosine.wgsl",
        source: include_str!("../../../shaders/topk_cosine.wgsl"),
        workgroup: WORKGROUP,
        values: vec![("rows_per_thread", ROWS_PER_THREAD)],
    };
    launch(chunk_kernel, &[scores, &cand_idx, &cand_score], params, q * num_chunks);
    if num_chunks == 1 {
        return (cand_idx, cand_score);
    }
    let out_idx = empty_like_device(scores, Shape::new([q, k]), DType::U32);
    let out_score = empty_like_device(scores, Shape::new([q, k]), DType::F32);
    let merge_kernel = WgslKernel {
        file: "topk_cosine_merge.wgsl",
        source: include_str!("../../../shaders/topk_cosine_merge.wgsl"),
        workgroup: WORKGROUP,
        values: vec![],
    };
    launch(merge_kernel, &[&cand_idx, &cand_score, &out_idx, &out_score], params, q);
    (out_idx, out_score)
}

/// Whether the WGSL top-k runs on `device` (for f32 tensors): a wgpu device without autodiff,
/// the kernels not switched off (`EGA_KERNELS=off`). The one rule of where search runs: the
/// gallery keeps its rows on such a device and ranks them there, and ranks them with the exact
/// host loop everywhere else; [`topk_cosine`] falls back to [`topk_reference`] off it.
pub fn runs_on_kernels(device: &burn::tensor::Device) -> bool {
    super::kernels_enabled() && super::is_wgpu(device) && !device.is_autodiff()
}

/// Top-k of unit-norm `queries [q, d]` against unit-norm `index [n, d]`: the WGSL kernels on a
/// wgpu device (f32), [`topk_reference`] elsewhere. `k > n` returns all `n` rows.
///
/// # Shapes
/// - queries: `[q, d]`, index: `[n, d]` → indices, scores: `[q, min(k, n)]`
pub fn topk_cosine(queries: Tensor<2>, index: Tensor<2>, k: usize) -> Result<TopK> {
    topk_cosine_blocked(queries, index, k, MAX_SCORE_ELEMENTS)
}

/// [`topk_cosine`] with score blocks of at most `max_score_elements` (at least one query row).
#[doc(hidden)]
pub fn topk_cosine_blocked(queries: Tensor<2>, index: Tensor<2>, k: usize, max_score_elements: usize) -> Result<TopK> {
    let (q, n, d) = check(&queries, &index, k)?;
    #[cfg(not(feature = "wgpu"))]
    {
        // Built without wgpu (the page's CPU module): no device can run the kernels.
        let _ = (q, n, d, max_score_elements);
        topk_reference(queries, index, k)
    }
    #[cfg(feature = "wgpu")]
    topk_on_kernels(queries, index, k, max_score_elements, (q, n, d))
}

/// The WGSL path of [`topk_cosine_blocked`] (falls back to the reference off wgpu).
#[cfg(feature = "wgpu")]
fn topk_on_kernels(
    queries: Tensor<2>,
    index: Tensor<2>,
    k: usize,
    max_score_elements: usize,
    (q, n, d): (usize, usize, usize),
) -> Result<TopK> {
    let device = queries.device();
    let on_kernels = runs_on_kernels(&device)
        && queries.dtype() == DType::F32
        && index.dtype() == DType::F32
        && n < u32::MAX as usize / 2;
    if !on_kernels {
        return topk_reference(queries, index, k);
    }
    let block = (max_score_elements / n).clamp(1, q);
    let kept = k.min(n);
    let mut indices = Vec::new();
    let mut scores = Vec::new();
    for start in (0..q).step_by(block) {
        let rows = block.min(q - start);
        let block_scores = queries.clone().slice([start..start + rows, 0..d]).matmul(index.clone().transpose()); // [rows, n]
        let Ok(primitive) = block_scores.try_into_primitive::<Cube>() else {
            return topk_reference(queries, index, k);
        };
        let (block_indices, block_top) = Cube::topk_select(primitive, d, kept);
        indices.push(Tensor::<2, Int>::from_primitive::<Cube>(block_indices).slice([0..rows, 0..kept]));
        scores.push(Tensor::<2>::from_primitive::<Cube>(block_top).slice([0..rows, 0..kept]));
    }
    Ok(TopK { indices: Tensor::cat(indices, 0), scores: Tensor::cat(scores, 0) })
}

/// The same search composed from burn ops: `S = Q Xᵀ` (`[q, n]`), a descending sort of each row,
/// the first `min(k, n)` columns. Ties follow burn's sort.
///
/// # Shapes
/// - queries: `[q, d]`, index: `[n, d]` → indices, scores: `[q, min(k, n)]`
pub fn topk_reference(queries: Tensor<2>, index: Tensor<2>, k: usize) -> Result<TopK> {
    let (q, n, _) = check(&queries, &index, k)?;
    let scores = queries.matmul(index.transpose()); // [q, n]
    let (sorted, order) = scores.sort_descending_with_indices(1);
    let kept = k.min(n);
    Ok(TopK { indices: order.slice([0..q, 0..kept]), scores: sorted.slice([0..q, 0..kept]) })
}
