//! Model bundles: what training produces and what `index`, `search` and the web page load.
//!
//! ```text
//! <bundle>/model.safetensors   the weights (burn-store safetensors; f32, or f16 for the web)
//! <bundle>/config.json         BundleConfig: model (preset, prompts), loss, data, steps, versions, model id
//! <bundle>/tokenizer.json      the tokenizer (Hugging Face format)
//! <bundle>/metrics.json        the evaluation the model got (free-form JSON)
//! ```
//!
//! The model id is a hash of the weights and the model config: an index records the id of the
//! model that made it, and searching it with another model is refused.
//! Loading checks the format version and every tensor's shape, and reports what does not match;
//! foreign or truncated files are errors, never panics.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{model_from_bytes, model_to_bytes, write_atomic};
use crate::index::Dtype;
use crate::loss::LossConfig;
use crate::model::{Embedder, ModelConfig};
use crate::tokenizer::Tokenizer;
use crate::{EgaError, Result};

/// Version of the bundle files written here.
pub const BUNDLE_FORMAT_VERSION: u32 = 1;

/// `config.json` of a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleConfig {
    /// [`BUNDLE_FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// ega-core's version of the writer.
    pub ega_core_version: String,
    /// Hash of the weights and model config (16 hex digits).
    pub model_id: String,
    /// The model (preset name, sizes, prompts, special tokens).
    pub model: ModelConfig,
    /// The loss it was trained with.
    pub loss: LossConfig,
    /// The training data, as given on the command line.
    pub data: String,
    /// Optimizer steps it was trained for.
    pub steps: usize,
    /// How `model.safetensors` stores the weights (f16 is expanded to f32 on load).
    #[serde(default)]
    pub weights_dtype: Dtype,
    /// [`fnv_hex`] of `tokenizer.json`'s bytes, checked on load (bundles written before it was
    /// recorded have none). Not part of the model id, so older indexes keep verifying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_hash: Option<String>,
    /// [`fnv_hex`] of `model.safetensors`' bytes alone: when the model id does not match, it tells
    /// replaced weights from an edited config (bundles written before it was recorded have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_hash: Option<String>,
}

/// A loaded bundle.
pub struct Bundle {
    /// `config.json`.
    pub config: BundleConfig,
    /// The model on the requested device.
    pub model: Embedder,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// `metrics.json` (`null` when absent).
    pub metrics: serde_json::Value,
}

/// 64-bit FNV-1a, as 16 hex digits.
pub fn fnv_hex(parts: &[&[u8]]) -> String {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for &byte in *part {
            hash = (hash ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// The id of a model: a hash of its safetensors bytes and its config.
pub fn model_id(weights: &[u8], config: &ModelConfig) -> Result<String> {
    Ok(fnv_hex(&[weights, &config.id_bytes()?]))
}

/// Writes a bundle folder (each file atomically). Returns its config.
#[allow(clippy::too_many_arguments)]
pub fn save(
    dir: &Path,
    model: &Embedder,
    model_config: &ModelConfig,
    tokenizer: &Tokenizer,
    loss: &LossConfig,
    data: &str,
    steps: usize,
    metrics: &serde_json::Value,
    weights_dtype: Dtype,
) -> Result<BundleConfig> {
    std::fs::create_dir_all(dir).map_err(|err| EgaError::io(dir, err))?;
    let weights = match weights_dtype {
        Dtype::F32 => model_to_bytes(model)?,
        Dtype::F16 => safetensors_convert(&model_to_bytes(model)?, Dtype::F16, "the model")?,
    };
    let tokenizer_json = tokenizer.to_json()?;
    let config = BundleConfig {
        format_version: BUNDLE_FORMAT_VERSION,
        ega_core_version: crate::VERSION.to_string(),
        model_id: model_id(&weights, model_config)?,
        model: model_config.clone(),
        loss: loss.clone(),
        data: data.to_string(),
        steps,
        weights_dtype,
        tokenizer_hash: Some(fnv_hex(&[tokenizer_json.as_bytes()])),
        weights_hash: Some(fnv_hex(&[&weights])),
    };
    let json_error = |err: serde_json::Error| EgaError::Data(err.to_string());
    write_atomic(&dir.join("model.safetensors"), &weights)?;
    write_atomic(&dir.join("tokenizer.json"), tokenizer_json.as_bytes())?;
    write_atomic(&dir.join("metrics.json"), serde_json::to_string_pretty(metrics).map_err(json_error)?.as_bytes())?;
    // config.json last: a folder with a config is a complete bundle.
    write_atomic(&dir.join("config.json"), serde_json::to_string_pretty(&config).map_err(json_error)?.as_bytes())?;
    Ok(config)
}

/// Reads and checks a bundle's `config.json` (format version, model config).
pub fn parse_config(bytes: &[u8], name: &str) -> Result<BundleConfig> {
    let value: serde_json::Value = serde_json::from_slice(crate::fs::strip_bom(bytes))
        .map_err(|err| EgaError::Data(format!("{name}: not JSON: {err}")))?;
    match value.get("format_version").and_then(|v| v.as_u64()) {
        Some(v) if v == BUNDLE_FORMAT_VERSION as u64 => {}
        Some(v) => {
            return Err(EgaError::Data(format!(
                "{name}: bundle format version {v}; this build reads version {BUNDLE_FORMAT_VERSION} (written by ega-core {})",
                value.get("ega_core_version").and_then(|v| v.as_str()).unwrap_or("?")
            )));
        }
        None => return Err(EgaError::Data(format!("{name}: no format_version: not an EGA bundle config"))),
    }
    let config: BundleConfig = serde_json::from_value(value)
        .map_err(|err| EgaError::Data(format!("{name}: unreadable bundle config: {err}")))?;
    config.model.validate().map_err(|err| EgaError::Data(format!("{name}: {err}")))?;
    Ok(config)
}

/// A bundle from its files' contents (the web page fetches them; natively [`load`] reads them).
/// `name` names the bundle in messages.
pub fn from_bytes(
    config_json: &[u8],
    weights: Vec<u8>,
    tokenizer_json: &str,
    metrics_json: Option<&[u8]>,
    name: &str,
    device: &Device,
) -> Result<Bundle> {
    let config = parse_config(config_json, &format!("{name}/config.json"))?;
    if let Some(expected) = &config.tokenizer_hash {
        let hash = fnv_hex(&[tokenizer_json.as_bytes()]);
        if &hash != expected {
            return Err(EgaError::Data(format!(
                "{name}/tokenizer.json: its hash {hash} differs from config.json's tokenizer_hash {expected}: tokenizer.json differs from the one this bundle was saved with"
            )));
        }
    }
    let tokenizer = Tokenizer::from_json_with(tokenizer_json, config.model.special)
        .map_err(|err| EgaError::Data(format!("{name}/tokenizer.json: {err}")))?;
    tokenizer.check_fits(config.model.vocab_size(), &format!("{name}/tokenizer.json"))?;
    let id = model_id(&weights, &config.model)?;
    if id != config.model_id {
        let expected = &config.model_id;
        let weights_as_saved = config.weights_hash.as_ref().map(|h| *h == fnv_hex(&[&weights]));
        return Err(EgaError::Data(match weights_as_saved {
            Some(true) => format!(
                "{name}/config.json: its \"model\" section was edited after the bundle was saved: the weights are the saved ones (their weights_hash matches), but with this config their hash {id} differs from model_id {expected}; restore config.json, or save a new bundle"
            ),
            Some(false) => format!(
                "{name}/model.safetensors: its hash {id} differs from config.json's model_id {expected} (weights replaced or damaged: weights_hash differs too)"
            ),
            None => format!(
                "{name}/model.safetensors: its hash {id} with config.json's \"model\" section differs from model_id {expected}: the weights were replaced or damaged, or config.json was edited"
            ),
        }));
    }
    let what = format!("{name}/model.safetensors");
    let weights = match config.weights_dtype {
        Dtype::F32 => weights,
        Dtype::F16 => safetensors_convert(&weights, Dtype::F32, &what)?,
    };
    let model = model_from_bytes(&config.model, weights, device, &what)?;
    let metrics = match metrics_json {
        Some(bytes) => serde_json::from_slice(crate::fs::strip_bom(bytes)).unwrap_or(serde_json::Value::Null),
        None => serde_json::Value::Null,
    };
    Ok(Bundle { config, model, tokenizer, metrics })
}

/// Re-encodes every F32 tensor of a safetensors file as `to` (F16 ↔ F32; other dtypes are kept).
/// `name` names the file in messages: a truncated or foreign file is an error.
pub fn safetensors_convert(bytes: &[u8], to: Dtype, name: &str) -> Result<Vec<u8>> {
    let bad = |why: &str| EgaError::Data(format!("{name}: not a readable safetensors file: {why}"));
    let header_len = bytes.get(..8).ok_or_else(|| bad("shorter than 8 bytes"))?;
    let header_len = u64::from_le_bytes(header_len.try_into().map_err(|_| bad("header length"))?) as usize;
    let header = bytes.get(8..8usize.saturating_add(header_len)).ok_or_else(|| bad("truncated header"))?;
    let data = &bytes[8 + header_len..];
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|err| bad(&format!("header is not JSON: {err}")))?;
    let (from_name, to_name) = match to {
        Dtype::F16 => ("F32", "F16"),
        Dtype::F32 => ("F16", "F32"),
    };
    let mut tensors: Vec<(String, serde_json::Value, usize, usize)> = Vec::new();
    let mut out_header = serde_json::Map::new();
    for (key, value) in header {
        if key == "__metadata__" {
            out_header.insert(key, value);
            continue;
        }
        let offsets = value
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .and_then(|o| Some((o.first()?.as_u64()? as usize, o.get(1)?.as_u64()? as usize)))
            .ok_or_else(|| bad(&format!("tensor {key} has no data_offsets")))?;
        if offsets.0 > offsets.1 || offsets.1 > data.len() {
            return Err(bad(&format!("tensor {key} lies outside the file (truncated?)")));
        }
        tensors.push((key, value, offsets.0, offsets.1));
    }
    tensors.sort_by_key(|t| t.2);
    let mut out_data: Vec<u8> = Vec::with_capacity(data.len());
    for (key, mut value, start, end) in tensors {
        let raw = &data[start..end];
        let converted: Vec<u8> = if value.get("dtype").and_then(|d| d.as_str()) == Some(from_name) {
            value["dtype"] = serde_json::Value::from(to_name);
            match to {
                Dtype::F16 => raw
                    .chunks_exact(4)
                    .flat_map(|c| half::f16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes())
                    .collect(),
                Dtype::F32 => raw
                    .chunks_exact(2)
                    .flat_map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32().to_le_bytes())
                    .collect(),
            }
        } else {
            raw.to_vec()
        };
        let begin = out_data.len();
        out_data.extend_from_slice(&converted);
        value["data_offsets"] = serde_json::json!([begin, out_data.len()]);
        out_header.insert(key, value);
    }
    let mut header = serde_json::to_vec(&out_header).map_err(|err| bad(&err.to_string()))?;
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + out_data.len());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&out_data);
    Ok(out)
}

/// Loads a bundle folder.
pub fn load(dir: &Path, device: &Device) -> Result<Bundle> {
    let read = |file: &str| {
        let cap = if file.ends_with(".json") { crate::fs::MAX_JSON } else { crate::fs::MAX_WEIGHTS };
        crate::fs::read_regular(&dir.join(file), cap)
    };
    if !dir.join("config.json").exists() {
        return Err(missing_config(dir));
    }
    let config = read("config.json")?;
    let weights = read("model.safetensors")?;
    let tokenizer = String::from_utf8(read("tokenizer.json")?)
        .map_err(|_| EgaError::Data(format!("{}/tokenizer.json is not UTF-8", dir.display())))?;
    let metrics = crate::fs::read_regular(&dir.join("metrics.json"), crate::fs::MAX_JSON).ok();
    from_bytes(&config, weights, &tokenizer, metrics.as_deref(), &dir.display().to_string(), device)
}

fn missing_config(dir: &Path) -> EgaError {
    let present: Vec<&str> =
        ["model.safetensors", "tokenizer.json", "metrics.json"].into_iter().filter(|f| dir.join(f).exists()).collect();
    EgaError::Data(format!(
        "{}: no config.json: not a complete model bundle (a bundle holds config.json, model.safetensors and tokenizer.json{}; a run folder from `native train` holds one in bundle/)",
        dir.display(),
        if present.is_empty() { String::new() } else { format!("; this folder has {}", present.join(", ")) }
    ))
}

/// The bundle folder a user means by `path`: the folder itself when it holds `config.json`, else
/// a run folder's `bundle/`.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join("config.json").exists() {
        return Ok(path.to_path_buf());
    }
    if !path.exists() {
        return Err(EgaError::Data(format!("{}: no such file or folder", path.display())));
    }
    if path.join("model.safetensors").exists() || path.join("tokenizer.json").exists() {
        // A bundle that lost its config, not a run (issue 16: it was called "no checkpoint").
        return Err(missing_config(path));
    }
    if path.join("bundle").join("config.json").exists() {
        return Ok(path.join("bundle"));
    }
    if path.join("checkpoints").exists() {
        return Err(EgaError::Data(format!(
            "{}: this run has no bundle yet (a run writes bundle/ when it finishes; finish it with --resume {0})",
            path.display()
        )));
    }
    Err(EgaError::Data(format!(
        "{}: not a model bundle (config.json, model.safetensors, tokenizer.json) nor a run folder with bundle/",
        path.display()
    )))
}
