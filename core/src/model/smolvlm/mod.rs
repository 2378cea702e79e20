//! The `smolvlm` architecture (Idefics3 / SmolVLM): a SigLIP vision tower, the Idefics3 connector
//! (pixel shuffle + linear projection) and a Llama-family decoder, with Hugging Face's parameter
//! names so that a checkpoint's keys map one to one.

pub mod config;

pub use config::{LlamaConfig, SiglipConfig};
