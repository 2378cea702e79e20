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

use crate::loss::LossConfig;
use crate::model::{Embedder, ModelConfig};
use crate::store::{fnv_hex, safetensors, write_atomic, StoredDtype};
use crate::tokenizer::Tokenizer;
use crate::weights::{model_from_bytes, model_id, model_to_bytes};
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
    pub weights_dtype: StoredDtype,
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
    weights_dtype: StoredDtype,
) -> Result<BundleConfig> {
    std::fs::create_dir_all(dir).map_err(|err| EgaError::io(dir, err))?;
    let weights = match weights_dtype {
        StoredDtype::F32 => model_to_bytes(model)?,
        StoredDtype::F16 => safetensors::convert(&model_to_bytes(model)?, StoredDtype::F16, "the model")?,
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
    write_atomic(&dir.join("model.safetensors"), &weights)?;
    write_atomic(&dir.join("tokenizer.json"), tokenizer_json.as_bytes())?;
    write_atomic(&dir.join("metrics.json"), serde_json::to_string_pretty(metrics)?.as_bytes())?;
    // config.json last: a folder with a config is a complete bundle.
    write_atomic(&dir.join("config.json"), serde_json::to_string_pretty(&config)?.as_bytes())?;
    Ok(config)
}

/// Reads and checks a bundle's `config.json` (format version, model config).
pub fn parse_config(bytes: &[u8], name: &str) -> Result<BundleConfig> {
    let value: serde_json::Value = serde_json::from_slice(crate::fs::strip_bom(bytes))
        .map_err(|err| EgaError::format(&name, format!("not JSON: {err}")))?;
    match value.get("format_version").and_then(|v| v.as_u64()) {
        Some(v) if v == BUNDLE_FORMAT_VERSION as u64 => {}
        Some(v) => {
            return Err(EgaError::format(
                &name,
                format!(
                "bundle format version {v}; this build reads version {BUNDLE_FORMAT_VERSION} (written by ega-core {})",
                value.get("ega_core_version").and_then(|v| v.as_str()).unwrap_or("?")
            ),
            ));
        }
        None => return Err(EgaError::format(&name, "no format_version: not an EGA bundle config")),
    }
    let config: BundleConfig = serde_json::from_value(value)
        .map_err(|err| EgaError::format(&name, format!("unreadable bundle config: {err}")))?;
    config.model.validate().map_err(|err| EgaError::format(&name, err.to_string()))?;
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
            return Err(EgaError::format(format_args!("{name}/tokenizer.json"), format!(
                "its hash {hash} differs from config.json's tokenizer_hash {expected}: tokenizer.json differs from the one this bundle was saved with"
            )));
        }
    }
    let tokenizer = Tokenizer::from_json_with(tokenizer_json, config.model.special)
        .map_err(|err| EgaError::format(format_args!("{name}/tokenizer.json"), err.to_string()))?;
    tokenizer.check_fits(config.model.vocab_size(), &format!("{name}/tokenizer.json"))?;
    let id = model_id(&weights, &config.model)?;
    if id != config.model_id {
        let expected = &config.model_id;
        let weights_as_saved = config.weights_hash.as_ref().map(|h| *h == fnv_hex(&[&weights]));
        let (file, problem) = match weights_as_saved {
            Some(true) => ("config.json", format!(
                "its \"model\" section was edited after the bundle was saved: the weights are the saved ones (their weights_hash matches), but with this config their hash {id} differs from model_id {expected}; restore config.json, or save a new bundle"
            )),
            Some(false) => ("model.safetensors", format!(
                "its hash {id} differs from config.json's model_id {expected} (weights replaced or damaged: weights_hash differs too)"
            )),
            None => ("model.safetensors", format!(
                "its hash {id} with config.json's \"model\" section differs from model_id {expected}: the weights were replaced or damaged, or config.json was edited"
            )),
        };
        return Err(EgaError::format(format_args!("{name}/{file}"), problem));
    }
    let what = format!("{name}/model.safetensors");
    let weights = match config.weights_dtype {
        StoredDtype::F32 => weights,
        StoredDtype::F16 => safetensors::convert(&weights, StoredDtype::F32, &what)?,
    };
    let model = model_from_bytes(&config.model, weights, device, &what)?;
    let metrics = match metrics_json {
        Some(bytes) => serde_json::from_slice(crate::fs::strip_bom(bytes)).unwrap_or(serde_json::Value::Null),
        None => serde_json::Value::Null,
    };
    Ok(Bundle { config, model, tokenizer, metrics })
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
        .map_err(|_| EgaError::format(dir.join("tokenizer.json").display(), "not UTF-8"))?;
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
