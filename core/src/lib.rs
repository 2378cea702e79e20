//! ega-core: everything that computes in the EGA project.
//!
//! - [`model`]: the miniature LLaVA-style multimodal embedder (ViT → projector → decoder-only LM →
//!   last-token pooling → L2 normalisation).
//! - [`loss`]: info-NCE, EGA (the Explicit Gradient Amplifier, see `docs/ega.md`), LLaVE
//!   hardness weighting and HCL, as reference implementations in burn tensor ops, plus an
//!   independent float64 host oracle of EGA ([`loss::oracle`]).
//! - [`kernels`]: the fused WGSL kernels (EGA loss, top-k search) on wgpu devices.
//! - [`device`]: choosing a burn `Device` (wgpu GPU, software Vulkan, or the `flex` CPU backend).
//! - [`store`]: the storage floor of the file formats ([`checkpoint`], [`bundle`], [`index`]):
//!   atomic writes, model ⇄ bytes, on-disk dtypes, safetensors conversion, hashing.
//!
//! Shape legend used throughout: `N` queries, `M` targets (`M >= N`), `d` embedding width,
//! `B` batch, `L` sequence length, `D` model width, `H` heads, `K` image tokens.

#[cfg(not(target_family = "wasm"))]
pub mod blas;
pub mod bundle;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod embed;
pub mod error;
pub mod eval;
pub mod fs;
pub mod fuzzing;
pub mod gallery;
pub mod index;
pub mod init;
pub mod kernels;
pub mod lab;
#[cfg(not(target_family = "wasm"))]
pub mod lock;
pub mod loss;
pub mod model;
pub mod parts;
pub mod pretrained;
pub mod prompt;
pub mod store;
pub mod tensor_util;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use error::{EgaError, Result};

/// Version of the ega-core crate, written into every saved config.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
