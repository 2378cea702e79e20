//! Launch helpers shared by the kernels: template sources, parameter words, dispatch grids.

use burn::backend::wgpu::CubeTensor;
use burn::backend::{DType, Shape};
use burn::cubecl::CubeCount;

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
pub fn words(fields: [u32; 8]) -> Vec<u64> {
    fields.chunks(2).map(|pair| pair[0] as u64 | (pair[1] as u64) << 32).collect()
}

/// A fresh, uninitialised contiguous tensor of `shape` and `dtype` next to `like`.
pub fn empty_like_device(like: &CubeTensor, shape: Shape, dtype: DType) -> CubeTensor {
    let bytes = shape.num_elements() * dtype.size();
    let handle = like.client.empty(bytes.max(4));
    CubeTensor::new_contiguous(like.client.clone(), like.device.clone(), shape, handle, dtype)
}
