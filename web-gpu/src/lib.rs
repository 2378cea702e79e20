//! The page's second wasm module: the same `#[wasm_bindgen]` API as the `web` package, built with
//! its `webgpu` feature (burn's wgpu backend on WebGPU, the fused WGSL kernels). The page starts
//! on `web`'s CPU module, which is a fraction of this one's size, and imports this module only
//! when search, the lab or the benchmark run on WebGPU (`web/js/modules.js`, `webgpu`). Built by
//! `scripts/build-webgpu-module.sh`, a Trunk hook.

pub use web::*;
