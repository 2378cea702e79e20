//! Hugging Face model folders: `config.json`, the weights as `model.safetensors` or as shards
//! listed by `model.safetensors.index.json`, and `tokenizer.json`.
//!
//! Tensors stored as F32, F16 or BF16 are handed out as `f32`; names are normalised to the
//! `smolvlm` names: an `Idefics3ForConditionalGeneration` / `SmolVLMForConditionalGeneration`
//! checkpoint's `model.` prefix is dropped, and a Llama checkpoint's `model.*` decoder becomes
//! `text_model.*`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ::safetensors::tensor::{Dtype as StDtype, Metadata, SafeTensors};

use super::{HostTensor, StoredTensor, TensorSource};
use crate::model::{LlamaConfig, SiglipConfig, SmolVlmConfig};
use crate::{EgaError, Result};

/// Where one tensor lies: which file, its dtype, shape and byte range (within the file).
#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    dtype: StDtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// One or more safetensors files read into memory, their tensors by (normalised) name.
pub struct SafetensorsSource {
    name: String,
    files: Vec<Vec<u8>>,
    entries: HashMap<String, Entry>,
    /// How names in the files become `smolvlm` names.
    rename: Rename,
}

/// How a checkpoint's tensor names map to `smolvlm` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rename {
    /// Already `vision_model.*` / `connector.*` / `text_model.*` (an `Idefics3Model`, or this
    /// project's own bundles); a leading `model.` (the ForConditionalGeneration classes) is dropped.
    Smolvlm,
    /// A Llama decoder (`LlamaForCausalLM`, `LlamaModel`): `model.X` / `X` → `text_model.X`.
    Llama,
}

impl Rename {
    fn apply(self, key: &str) -> String {
        match self {
            Rename::Smolvlm => key.strip_prefix("model.").unwrap_or(key).to_string(),
            Rename::Llama => {
                let bare = key.strip_prefix("model.").unwrap_or(key);
                if bare.starts_with("lm_head.") {
                    bare.to_string()
                } else {
                    format!("text_model.{bare}")
                }
            }
        }
    }
}

fn dtype_name(dtype: StDtype) -> String {
    format!("{dtype:?}")
}

impl SafetensorsSource {
    /// Tensors of safetensors files' bytes; `name` names the checkpoint in messages.
    pub fn from_files(name: &str, files: Vec<(String, Vec<u8>)>, rename: Rename) -> Result<Self> {
        let mut entries = HashMap::new();
        let mut bytes = Vec::with_capacity(files.len());
        for (index, (file_name, data)) in files.into_iter().enumerate() {
            let (header, metadata): (usize, Metadata) = SafeTensors::read_metadata(&data)
                .map_err(|err| EgaError::format(&file_name, format!("not a readable safetensors file: {err}")))?;
            let base = 8 + header;
            for (key, info) in metadata.tensors() {
                let (start, end) = info.data_offsets;
                let entry = Entry {
                    file: index,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start: base.saturating_add(start),
                    end: base.saturating_add(end),
                };
                if entry.end > data.len() {
                    return Err(EgaError::format(
                        &file_name,
                        format!("tensor {key} lies outside the file (truncated?)"),
                    ));
                }
                let renamed = rename.apply(&key);
                if entries.insert(renamed.clone(), entry).is_some() {
                    return Err(EgaError::format(&name, format!("tensor {renamed} is stored twice")));
                }
            }
            bytes.push(data);
        }
        Ok(Self { name: name.to_string(), files: bytes, entries, rename })
    }

    /// How this source renames tensors.
    pub fn rename(&self) -> Rename {
        self.rename
    }
}

impl TensorSource for SafetensorsSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn stored(&self) -> Vec<StoredTensor> {
        let mut out: Vec<StoredTensor> = self
            .entries
            .iter()
            .map(|(name, e)| StoredTensor { name: name.clone(), shape: e.shape.clone(), dtype: dtype_name(e.dtype) })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn take(&mut self, key: &str) -> Result<Option<HostTensor>> {
        let Some(entry) = self.entries.get(key) else { return Ok(None) };
        let raw = &self.files[entry.file][entry.start..entry.end];
        let count = entry.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let width = match entry.dtype {
            StDtype::F32 => 4,
            StDtype::F16 | StDtype::BF16 => 2,
            other => {
                return Err(EgaError::format(
                    &self.name,
                    format!("tensor {key} is stored as {other:?}; this loader reads F32, F16 and BF16"),
                ))
            }
        };
        if count.and_then(|c| c.checked_mul(width)) != Some(raw.len()) {
            return Err(EgaError::format(
                &self.name,
                format!("tensor {key}: {} bytes do not hold shape {:?} of {:?}", raw.len(), entry.shape, entry.dtype),
            ));
        }
        let data: Vec<f32> = match entry.dtype {
            StDtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            StDtype::F16 => raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            _ => raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        };
        Ok(Some(HostTensor { shape: entry.shape.clone(), data }))
    }
}

/// What a Hugging Face folder's `config.json` describes.
#[derive(Debug, Clone, PartialEq)]
pub enum HfModel {
    /// An Idefics3 / SmolVLM model: the whole `smolvlm` architecture; `image_token_id` from the
    /// config when it names one.
    Smolvlm { config: SmolVlmConfig, image_token_id: Option<u32> },
    /// A Llama-family decoder only.
    Llama(LlamaConfig),
}

fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>> {
    crate::fs::read_regular(path, cap)
}

/// Reads an Idefics3 vision config (`vision_config`).
pub fn siglip_from_hf(value: &serde_json::Value, name: &str) -> Result<SiglipConfig> {
    let field = |key: &str| value.get(key).filter(|v| !v.is_null());
    let usize_of = |key: &str, default: Option<usize>| -> Result<usize> {
        match field(key).and_then(|v| v.as_u64()) {
            Some(v) => Ok(v as usize),
            None => default.ok_or_else(|| EgaError::format(&name, format!("vision_config.{key} is missing"))),
        }
    };
    if let Some(act) = field("hidden_act").and_then(|v| v.as_str()) {
        if act != "gelu_pytorch_tanh" {
            return Err(EgaError::format(
                &name,
                format!("vision_config.hidden_act {act:?} is not supported (only \"gelu_pytorch_tanh\")"),
            ));
        }
    }
    Ok(SiglipConfig {
        hidden_size: usize_of("hidden_size", Some(1152))?,
        intermediate_size: usize_of("intermediate_size", Some(3072))?,
        num_hidden_layers: usize_of("num_hidden_layers", Some(12))?,
        num_attention_heads: usize_of("num_attention_heads", Some(16))?,
        num_channels: usize_of("num_channels", Some(3))?,
        image_size: usize_of("image_size", Some(224))?,
        patch_size: usize_of("patch_size", Some(32))?,
        layer_norm_eps: field("layer_norm_eps").and_then(|v| v.as_f64()).unwrap_or(1e-6),
        stem: None,
    })
}

/// Reads a Hugging Face `config.json` (`name` names it in messages): Idefics3 / SmolVLM
/// (`model_type` `idefics3` or `smolvlm`) or Llama (`llama`); anything else is an error naming it.
pub fn parse_hf_config(bytes: &[u8], name: &str) -> Result<HfModel> {
    let value: serde_json::Value = serde_json::from_slice(crate::fs::strip_bom(bytes))
        .map_err(|err| EgaError::format(&name, format!("not JSON: {err}")))?;
    let model_type = value.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
    match model_type {
        "idefics3" | "smolvlm" => {
            let vision = value.get("vision_config").cloned().unwrap_or(serde_json::json!({}));
            let text = value
                .get("text_config")
                .ok_or_else(|| EgaError::format(&name, format!("an {model_type} config without text_config")))?;
            let text_config = LlamaConfig::from_hf(text, &format!("{name} (text_config)"))?;
            let max_seq_len = text_config.max_position_embeddings.min(4096);
            let config = SmolVlmConfig {
                vision_config: siglip_from_hf(&vision, name)?,
                text_config,
                scale_factor: value.get("scale_factor").and_then(|v| v.as_u64()).unwrap_or(2) as usize,
                max_seq_len,
                lora: None,
            };
            config.validate().map_err(|err| EgaError::format(&name, err.to_string()))?;
            let image_token_id = value.get("image_token_id").and_then(|v| v.as_u64()).map(|v| v as u32);
            Ok(HfModel::Smolvlm { config, image_token_id })
        }
        "llama" => Ok(HfModel::Llama(LlamaConfig::from_hf(&value, name)?)),
        "" => Err(EgaError::format(&name, "no model_type: not a Hugging Face model config")),
        other => Err(EgaError::format(
            &name,
            format!("model_type {other:?} is not supported (supported: idefics3, smolvlm, llama)"),
        )),
    }
}

/// A Hugging Face model folder, opened.
pub struct HfFolder {
    /// The folder.
    pub dir: PathBuf,
    /// What `config.json` describes.
    pub model: HfModel,
    /// The weights.
    pub source: SafetensorsSource,
    /// `tokenizer.json`, when the folder has one.
    pub tokenizer_json: Option<String>,
}

/// Largest weights file this reads (64 GiB).
const MAX_WEIGHTS: u64 = 64 << 30;
/// Largest JSON file this reads (64 MiB).
const MAX_JSON: u64 = 64 << 20;

impl HfFolder {
    /// Opens `dir`: `config.json`, then `model.safetensors` or the shards that
    /// `model.safetensors.index.json` lists, and `tokenizer.json` if present.
    pub fn open(dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(EgaError::Data(format!("{}: no config.json: not a Hugging Face model folder", dir.display())));
        }
        let model = parse_hf_config(&read_capped(&config_path, MAX_JSON)?, &config_path.display().to_string())?;
        let rename = match model {
            HfModel::Smolvlm { .. } => Rename::Smolvlm,
            HfModel::Llama(_) => Rename::Llama,
        };
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let mut files = Vec::new();
        if single.is_file() {
            files.push((single.display().to_string(), read_capped(&single, MAX_WEIGHTS)?));
        } else if index.is_file() {
            let value: serde_json::Value =
                serde_json::from_slice(crate::fs::strip_bom(&read_capped(&index, MAX_JSON)?))
                    .map_err(|err| EgaError::format(index.display(), format!("not JSON: {err}")))?;
            let map = value
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| EgaError::format(index.display(), "no weight_map"))?;
            let mut shards: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
            shards.sort_unstable();
            shards.dedup();
            for shard in shards {
                if shard.contains('/') || shard.contains('\\') || shard.starts_with('.') {
                    return Err(EgaError::format(
                        index.display(),
                        format!("shard name {shard:?} is not a plain file name"),
                    ));
                }
                let path = dir.join(shard);
                files.push((path.display().to_string(), read_capped(&path, MAX_WEIGHTS)?));
            }
        } else {
            return Err(EgaError::Data(format!(
                "{}: neither model.safetensors nor model.safetensors.index.json",
                dir.display()
            )));
        }
        let source = SafetensorsSource::from_files(&dir.display().to_string(), files, rename)?;
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer_json = if tokenizer_path.is_file() {
            Some(
                String::from_utf8(read_capped(&tokenizer_path, MAX_JSON)?)
                    .map_err(|_| EgaError::format(tokenizer_path.display(), "not UTF-8"))?,
            )
        } else {
            None
        };
        Ok(Self { dir: dir.to_path_buf(), model, source, tokenizer_json })
    }
}
