//! Host code of the WGSL kernels in `shaders/`, run as burn-wgpu raw template kernels on burn
//! tensors in burn's own memory (no copies to the host), on native GPUs and on WebGPU alike.
//!
//! - [`ega`]: the fused EGA / info-NCE loss (`ega_loss.wgsl` forward, `ega_loss_backward.wgsl`
//!   backward) as an autodiff operation.
//! - [`topk`]: exact top-k cosine search (`topk_cosine.wgsl` + `topk_cosine_merge.wgsl`).
//!
//! Binding contract of burn-wgpu 0.22 raw kernels (what every shader here follows): everything is
//! in `@group(0)`; the buffers given with `KernelArguments::with_buffer` are `@binding(0..k)` in
//! order, all `var<storage, read_write>` (cubecl may sub-allocate several tensors from one wgpu
//! buffer); the scalar parameters, given as `MetadataBindingInfo::custom` words, are the last
//! binding and read as a `var<uniform>` struct; the entry point is `main`; the workgroup size
//! comes from the WGSL text only (a `{{ workgroup_size }}` template value). No bounds checks are
//! compiled in and workgroup memory is not zeroed, so the shaders guard every index.
//!
//! The kernels are launched through [`ops::WgslKernels`], a backend extension of burn's `Cube`
//! backend: directly on `CubeBackend` by default, and as custom operations of burn-fusion's lazy
//! stream with ega-core's `fusion` feature. [`launches`] counts the dispatches of each shader.
//!
//! The kernels run when the tensor lives on a wgpu device and is f32; everywhere else (flex, CUDA,
//! another dtype, gradient checkpointing) the burn reference runs. [`ega_path`] says which, and
//! `EGA_KERNELS=off` in the environment forces the reference (for comparisons and debugging).

//! Without ega-core's `wgpu` feature (the page's CPU module) only the references are compiled:
//! [`is_wgpu`] is false, [`ega_path`] is the reference and [`topk_cosine`] is [`topk_reference`].

#[cfg(feature = "wgpu")]
pub mod ega;
#[cfg(feature = "wgpu")]
mod launch;
#[cfg(feature = "wgpu")]
pub mod ops;
pub mod topk;

use burn::tensor::Device;

#[cfg(feature = "wgpu")]
pub use ega::ega_rows_fused;
#[cfg(feature = "wgpu")]
pub use launch::launches;
pub use topk::{topk_cosine, topk_reference, TopK};

/// The WGSL sources, by file name (validated by naga in the tests).
pub const SHADERS: [(&str, &str); 4] = [
    ("ega_loss.wgsl", include_str!("../../../shaders/ega_loss.wgsl")),
    ("ega_loss_backward.wgsl", include_str!("../../../shaders/ega_loss_backward.wgsl")),
    ("topk_cosine.wgsl", include_str!("../../../shaders/topk_cosine.wgsl")),
    ("topk_cosine_merge.wgsl", include_str!("../../../shaders/topk_cosine_merge.wgsl")),
];

/// The scalar options the EGA kernels read (docs/ega.md's options, in f32).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EgaKernelParams {
    /// Temperature τ of the logits.
    pub tau: f32,
    /// Temperature τ_h of the hardness.
    pub tau_h: f32,
    /// Amplification α (0 = info-NCE).
    pub alpha: f32,
    /// `rescale = sum`.
    pub rescale_sum: bool,
}

/// Which implementation computes the loss on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossPath {
    /// The fused WGSL kernels (wgpu devices).
    FusedWgsl,
    /// The burn reference ops (every other device, or `EGA_KERNELS=off`).
    Reference,
}

impl std::fmt::Display for LossPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LossPath::FusedWgsl => "fused WGSL kernels (shaders/ega_loss*.wgsl)",
            LossPath::Reference => "burn reference ops",
        })
    }
}

/// False when `EGA_KERNELS=off` (or `0`, `false`) is set: the reference runs everywhere.
pub fn kernels_enabled() -> bool {
    !matches!(
        std::env::var("EGA_KERNELS").ok().as_deref().map(str::to_ascii_lowercase).as_deref(),
        Some("off" | "0" | "false")
    )
}

/// True when `device` (with or without autodiff) is a wgpu device, where the WGSL kernels run.
#[cfg(feature = "wgpu")]
pub fn is_wgpu(device: &Device) -> bool {
    use burn::backend::{DispatchDevice, RuntimeId};
    matches!(device.clone().without_autodiff().as_dispatch(), DispatchDevice::Cube(cube) if cube.runtime() == RuntimeId::Wgpu)
}

/// Built without wgpu: no device is a wgpu device.
#[cfg(not(feature = "wgpu"))]
pub fn is_wgpu(_device: &Device) -> bool {
    false
}

/// The loss implementation used on `device`.
pub fn ega_path(device: &Device) -> LossPath {
    if kernels_enabled() && is_wgpu(device) {
        LossPath::FusedWgsl
    } else {
        LossPath::Reference
    }
}
