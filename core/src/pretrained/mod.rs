//! Pretrained checkpoints: reading weights that other tools wrote.
//!
//! - [`safetensors`]: a Hugging Face model folder (`config.json`, `model.safetensors` or a sharded
//!   `model.safetensors.index.json`, `tokenizer.json`).
//! - [`gguf`]: a llama.cpp GGUF file of a Llama-family decoder (dequantized on load, the Q/K row
//!   permutation undone, its embedded tokenizer turned into a `tokenizers` tokenizer).
//!
//! Every source hands out tensors by their **Hugging Face name** (`text_model.layers.0.self_attn.
//! q_proj.weight`, …) as `f32` in PyTorch layout (row-major, outermost dimension first; a linear
//! weight is `[out, in]`). The model builds its parameters straight from them: no large model is
//! randomly initialised on the host before its weights arrive.

pub mod gguf;
pub mod safetensors;

use crate::Result;

/// A tensor read from a checkpoint: `f32` values, row-major, in PyTorch / Hugging Face layout.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first (a linear weight: `[out, in]`).
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// Number of values the shape holds.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// What a checkpoint stores a tensor as (for `native info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTensor {
    /// Hugging Face name.
    pub name: String,
    /// Dimensions in PyTorch order.
    pub shape: Vec<usize>,
    /// Stored type as the file names it: `F32`, `F16`, `BF16`, `Q8_0`, `Q4_1`, …
    pub dtype: String,
}

/// A checkpoint's tensors, by Hugging Face name.
pub trait TensorSource {
    /// The checkpoint, as messages should name it (a path).
    fn name(&self) -> &str;
    /// Every tensor the checkpoint holds, with its stored type.
    fn stored(&self) -> Vec<StoredTensor>;
    /// The tensor stored as `key`, converted to `f32` (dequantized, permuted back where the format
    /// requires); `None` when the checkpoint has no such tensor. A source may free a tensor's bytes
    /// once it has been handed out.
    fn take(&mut self, key: &str) -> Result<Option<HostTensor>>;
}
