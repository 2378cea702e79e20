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
pub mod tfjs;

use crate::Result;

/// Host tensors and their sources are defined in the storage floor (the architectures read them
/// without knowing the formats); re-exported here, where the formats implement them.
pub use crate::store::{HostTensor, StoredTensor, TensorSource};

use std::path::Path;

use self::safetensors::{HfFolder, HfModel};
use crate::model::{LlamaConfig, SmolVlmConfig};
use crate::EgaError;

/// What a checkpoint holds, for `native info` and for building a model from it.
pub struct Pretrained {
    /// The path as given.
    pub path: String,
    /// `Hugging Face folder (safetensors)` or `GGUF`.
    pub format: &'static str,
    /// The architecture it describes.
    pub model: HfModel,
    /// Its tensors.
    pub source: Box<dyn TensorSource>,
    /// Its tokenizer, when it carries one.
    pub tokenizer: Option<tokenizers::Tokenizer>,
    /// Format-specific facts worth printing (`general.name`, file type, …).
    pub details: Vec<(String, String)>,
}

impl Pretrained {
    /// The decoder's config (of a whole SmolVLM or of a Llama checkpoint).
    pub fn text_config(&self) -> &LlamaConfig {
        match &self.model {
            HfModel::Smolvlm { config, .. } => &config.text_config,
            HfModel::Llama(config) => config,
        }
    }

    /// The whole SmolVLM config, when the checkpoint is one.
    pub fn smolvlm_config(&self) -> Option<&SmolVlmConfig> {
        match &self.model {
            HfModel::Smolvlm { config, .. } => Some(config),
            HfModel::Llama(_) => None,
        }
    }

    /// Parameter counts by part (`vision_model`, `connector`, `text_model`, `lm_head`) and the
    /// stored types with how many tensors use each.
    pub fn summary(&self) -> (Vec<(String, usize)>, Vec<(String, usize)>) {
        let mut parts: Vec<(String, usize)> = Vec::new();
        let mut dtypes: Vec<(String, usize)> = Vec::new();
        for tensor in self.source.stored() {
            let part = tensor.name.split('.').next().unwrap_or("").to_string();
            let count: usize = tensor.shape.iter().product();
            match parts.iter_mut().find(|(p, _)| *p == part) {
                Some(entry) => entry.1 += count,
                None => parts.push((part, count)),
            }
            match dtypes.iter_mut().find(|(d, _)| *d == tensor.dtype) {
                Some(entry) => entry.1 += 1,
                None => dtypes.push((tensor.dtype.clone(), 1)),
            }
        }
        (parts, dtypes)
    }
}

/// Opens a checkpoint: a Hugging Face folder (`config.json` + safetensors) or a `.gguf` file.
pub fn open(path: &Path) -> Result<Pretrained> {
    let shown = path.display().to_string();
    if path.is_dir() {
        let folder = HfFolder::open(path)?;
        let tokenizer = match &folder.tokenizer_json {
            Some(json) => Some(
                crate::tokenizer::parse_tokenizers_json(json)
                    .map_err(|err| EgaError::format(format_args!("{shown}/tokenizer.json"), err.to_string()))?,
            ),
            None => None,
        };
        return Ok(Pretrained {
            path: shown,
            format: "Hugging Face folder (safetensors)",
            model: folder.model,
            source: Box::new(folder.source),
            tokenizer,
            details: vec![],
        });
    }
    if !path.exists() {
        return Err(EgaError::Data(format!("{shown}: no such file or folder")));
    }
    open_gguf(path)
}

/// A `.gguf` file as a [`Pretrained`] (its decoder; its embedded tokenizer when it is a GPT-2
/// style BPE, otherwise the reason it is not read among the details).
#[cfg(not(target_family = "wasm"))]
fn open_gguf(path: &Path) -> Result<Pretrained> {
    let checkpoint = gguf::GgufCheckpoint::open(path)?;
    let config = checkpoint.llama_config()?;
    let summary = checkpoint.metadata_summary();
    let mut details = vec![("GGUF version".to_string(), summary.version.to_string())];
    if let Some(name) = &summary.model_name {
        details.push(("general.name".into(), name.clone()));
    }
    if let Some(file_type) = &summary.file_type {
        details.push(("general.file_type".into(), file_type.clone()));
    }
    let ids: Vec<String> = checkpoint.special_token_ids().iter().map(|(k, v)| format!("{k} {v}")).collect();
    let tokenizer = match checkpoint.tokenizer() {
        Ok(tokenizer) => {
            let model = summary.tokenizer_model.clone().unwrap_or_else(|| "?".into());
            details.push((
                "tokenizer".into(),
                format!("{model} BPE embedded in the file; special ids: {}", ids.join(", ")),
            ));
            Some(tokenizer)
        }
        Err(err) => {
            details.push(("tokenizer".into(), format!("not read: {err}")));
            None
        }
    };
    Ok(Pretrained {
        path: path.display().to_string(),
        format: "GGUF",
        model: HfModel::Llama(config),
        source: Box::new(checkpoint),
        tokenizer,
        details,
    })
}

#[cfg(target_family = "wasm")]
fn open_gguf(path: &Path) -> Result<Pretrained> {
    Err(EgaError::Data(format!("{}: reading files is native only", path.display())))
}
