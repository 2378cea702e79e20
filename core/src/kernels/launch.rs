//! Launch helpers shared by the kernels: template sources, parameter words, dispatch grids.

use std::collections::BTreeMap;
use std::sync::Mutex;

use burn::backend::wgpu::{CubeTensor, KernelSource, SourceKernel, SourceTemplate};
use burn::backend::{DType, Shape};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::{KernelArguments, MetadataBindingInfo};
use burn::cubecl::{CubeCount, CubeDim};

/// WebGPU's default limit on workgroups per dispatch dimension; grids beyond it use `y`.
const MAX_GROUPS_PER_DIM: usize = 65_535;

/// `groups` workgroups laid out as `(x, y, 1)` with `x <= 65535` (the shaders linearise
/// `workgroup_id.x + workgroup_id.y · num_workgroups.x` and skip the excess).
pub fn grid(groups: usize) -> CubeCount {
    let x = groups.clamp(1, MAX_GROUPS_PER_DIM);
    CubeCount::Static(x as u32, groups.div_ceil(MAX_GROUPS_PER_DIM).max(1) as u32, 1)
}

/// Eight 32-bit parameter fields as the four little-endian u64 words burn uploads as the
/// uniform buffer (field 0 is the low half of word 0).
fn words(fields: [u32; 8]) -> Vec<u64> {
    fields.chunks(2).map(|pair| pair[0] as u64 | (pair[1] as u64) << 32).collect()
}

/// A fresh, uninitialised contiguous tensor of `shape` and `dtype` next to `like`.
pub fn empty_like_device(like: &CubeTensor, shape: Shape, dtype: DType) -> CubeTensor {
    let bytes = shape.num_elements() * dtype.size();
    let handle = like.client.empty(bytes.max(4));
    CubeTensor::new_contiguous(like.client.clone(), like.device.clone(), shape, handle, dtype)
}

/// A raw WGSL kernel from `shaders/`: its text and the `{{ name }}` template values it is compiled
/// with (`workgroup_size` among them). The pipeline cache key covers the file and every value.
#[derive(Debug, Clone)]
pub struct WgslKernel {
    /// File name in `shaders/` (part of the cache key).
    pub file: &'static str,
    /// The WGSL text.
    pub source: &'static str,
    /// Threads per workgroup (the `workgroup_size` template value).
    pub workgroup: u32,
    /// Further template values.
    pub values: Vec<(&'static str, u32)>,
}

impl KernelSource for WgslKernel {
    fn source(&self) -> SourceTemplate {
        let template = SourceTemplate::new(self.source).register("workgroup_size", self.workgroup.to_string());
        self.values.iter().fold(template, |template, (name, value)| template.register(*name, value.to_string()))
    }
    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.file, self.workgroup, self.values.clone()))
    }
    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Dispatches so far per (shader file, parameter field 0, parameter field 1): see [`launches`].
static LAUNCHES: Mutex<BTreeMap<(&'static str, u32, u32), u64>> = Mutex::new(BTreeMap::new());

/// How many times `file` has been dispatched (in this process) with its first two parameter
/// fields equal to `dims` (the EGA shaders: `N, M`; the top-k shaders: queries, index rows).
/// Counted when the kernel is handed to the device queue: under burn-fusion that is when the
/// fused stream executes the kernel's operation, not when the operation is registered, so a
/// count that moved after a read of the result means the WGSL itself ran.
pub fn launches(file: &'static str, dims: (usize, usize)) -> u64 {
    let counts = LAUNCHES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    counts.get(&(file, dims.0 as u32, dims.1 as u32)).copied().unwrap_or(0)
}

/// Launches `kernel` on `groups` workgroups with `buffers` as `@binding(0..)` and the eight
/// parameter fields as the last binding (the binding contract of `kernels/mod.rs`).
pub fn launch(kernel: WgslKernel, buffers: &[&CubeTensor], params: [u32; 8], groups: usize) {
    let Some(first) = buffers.first() else { return };
    *LAUNCHES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry((kernel.file, params[0], params[1]))
        .or_insert(0) += 1;
    let arguments = buffers
        .iter()
        .fold(KernelArguments::new(), |arguments, buffer| arguments.with_buffer(buffer.handle.clone().binding()))
        .with_info(MetadataBindingInfo::custom(words(params)));
    let cube_dim = CubeDim::new_1d(kernel.workgroup);
    first.client.launch(Box::new(SourceKernel::new(kernel, cube_dim)), grid(groups), arguments);
}
