//! The fused EGA / info-NCE loss: `shaders/ega_loss.wgsl` (forward: per-row loss, max and sum of
//! exponentials) and `shaders/ega_loss_backward.wgsl` (backward: `P`, `h`, `P̄` and `G` in one
//! pass per row), wrapped as a burn autodiff operation whose forward and backward both run WGSL.
//!
//! The operation maps `S [N, M]` to the per-row losses `[N]` ([`ega_rows_fused`], with its own
//! [`EgaKernelParams`]); the mean over rows and, with `symmetric`, the transposed term are
//! ordinary burn ops around it in `loss` (which maps a `LossConfig` to the parameters), so
//! autodiff hands the backward kernel one upstream gradient per row, on the device.
//!
//! The kernels are launched through [`WgslKernels`](super::ops::WgslKernels) on burn's `Cube`
//! backend, so under burn-fusion (ega-core's `fusion` feature) they run as custom operations of
//! the fused stream.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{CheckpointStrategy, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::CubeTensor;
use burn::backend::{Autodiff, Cube, DType, Shape};
use burn::tensor::Tensor;

use super::launch::{empty_like_device, launch, WgslKernel};
use super::ops::WgslKernels;
use super::EgaKernelParams;

/// Threads per workgroup (one workgroup per row): 64 up to 4096 columns, 256 beyond (WebGPU's
/// default limit). Each thread should have a few columns to itself: with 4 per thread the
/// workgroup reduction costs as much as the row (measured with `bench kernels` on lavapipe:
/// N = M = 1024 took 19.5 ms with 256 threads, 8.1 ms with 64).
const FORWARD: &str = include_str!("../../../shaders/ega_loss.wgsl");
const BACKWARD: &str = include_str!("../../../shaders/ega_loss_backward.wgsl");

fn workgroup_for(m: usize) -> u32 {
    if m <= 4096 {
        64
    } else {
        256
    }
}

impl EgaKernelParams {
    /// The uniform `EgaParams` of both shaders: n, m, tau, tau_h, alpha, reserved, grad_scale, rescale.
    fn fields(&self, n: usize, m: usize) -> [u32; 8] {
        [
            n as u32,
            m as u32,
            self.tau.to_bits(),
            self.tau_h.to_bits(),
            self.alpha.to_bits(),
            0,
            1.0f32.to_bits(),
            self.rescale_sum as u32,
        ]
    }
}

fn dims2(tensor: &CubeTensor) -> (usize, usize) {
    let shape = tensor.meta.shape();
    (shape[0], shape[1])
}

/// Forward kernel on a contiguous f32 `S [N, M]`: `(loss [N], stats [N, 2])`.
pub(super) fn forward(s: &CubeTensor, params: &EgaKernelParams) -> (CubeTensor, CubeTensor) {
    let (n, m) = dims2(s);
    let loss = empty_like_device(s, Shape::new([n]), DType::F32);
    let stats = empty_like_device(s, Shape::new([n, 2]), DType::F32);
    let kernel = WgslKernel { file: "ega_loss.wgsl", source: FORWARD, workgroup: workgroup_for(m), values: vec![] };
    launch(kernel, &[s, &loss, &stats], params.fields(n, m), n);
    (loss, stats)
}

/// Backward kernel: `G [N, M]` from contiguous `S`, the forward's stats and the upstream per-row
/// gradients (all contiguous).
pub(super) fn backward(
    s: &CubeTensor,
    stats: &CubeTensor,
    grad_rows: CubeTensor,
    params: &EgaKernelParams,
) -> CubeTensor {
    let (n, m) = dims2(s);
    let grad_s = empty_like_device(s, Shape::new([n, m]), DType::F32);
    let kernel =
        WgslKernel { file: "ega_loss_backward.wgsl", source: BACKWARD, workgroup: workgroup_for(m), values: vec![] };
    launch(kernel, &[s, &stats, &grad_rows, &grad_s], params.fields(n, m), n);
    grad_s
}

/// The autodiff node of the fused loss: its backward is EGA's `G`, from the backward kernel.
#[derive(Debug)]
struct EgaRowsBackward;

impl Backward<Cube, 1> for EgaRowsBackward {
    /// `S` (contiguous f32), the forward's `[N, 2]` stats, the options.
    type State = (FloatTensor<Cube>, FloatTensor<Cube>, EgaKernelParams);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad_rows = grads.consume::<Cube>(&ops.node);
        let (s, stats, params) = ops.state;
        if let Some(node) = parent {
            grads.register::<Cube>(node.id, Cube::ega_backward(s, stats, grad_rows, params));
        }
    }
}

fn rows_autodiff<C: CheckpointStrategy>(
    s: FloatTensor<Autodiff<Cube, C>>,
    params: EgaKernelParams,
) -> FloatTensor<Autodiff<Cube, C>> {
    let (s, guard) = s.into_parts();
    let (loss, stats, s) = Cube::ega_forward(s, params);
    match EgaRowsBackward.prepare::<C>([guard]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((s, stats, params), loss),
        OpsKind::UnTracked(prep) => prep.finish(loss),
    }
}

/// Per-row losses `[N]` of `S [N, M]` through the kernels, or `Err(S)` back when they cannot run
/// on this tensor (not on wgpu, not f32, or an autodiff graph with gradient checkpointing).
///
/// # Shapes
/// - similarities: `[N, M]` → `[N]`
pub fn ega_rows_fused(similarities: Tensor<2>, params: EgaKernelParams) -> Result<Tensor<1>, Tensor<2>> {
    let device = similarities.device();
    if similarities.dtype() != DType::F32 || !super::is_wgpu(&device) {
        return Err(similarities);
    }
    if device.is_autodiff() {
        match similarities.clone().try_into_primitive::<Autodiff<Cube, NoCheckpointing>>() {
            Ok(s) => Ok(Tensor::from_primitive::<Autodiff<Cube, NoCheckpointing>>(rows_autodiff::<NoCheckpointing>(
                s, params,
            ))),
            Err(_) => Err(similarities),
        }
    } else {
        match similarities.clone().try_into_primitive::<Cube>() {
            Ok(s) => Ok(Tensor::from_primitive::<Cube>(Cube::ega_forward(s, params).0)),
            Err(_) => Err(similarities),
        }
    }
}
