//! The one integration-test binary of the workspace.

mod assets;
mod data;
mod data_sources;
mod freeform;
mod fused;
mod fuzz_smoke;
mod gguf;
mod grad_cache;
mod kernels;
mod lab;
mod learning;
mod lora;
mod loss;
mod mobilenet;
mod model;
mod pretrained;
mod prompt;
mod reliability;
mod smolvlm;
mod torch_parity;
mod train;
