//! A model's weights as safetensors bytes and back, and the model id (the hash of those bytes and
//! the config) that bundles and checkpoints record. Above the architectures (`model`) and the
//! checkpoint formats (`pretrained`: a `smolvlm` model's bytes are read as a Hugging Face
//! safetensors file); below `bundle` and `checkpoint`.

use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::Device;

use crate::model::smolvlm::{Part, SmolVlm};
use crate::model::{Architecture, Embedder, MiniEmbedder, ModelConfig};
use crate::pretrained::safetensors::{Rename, SafetensorsSource};
use crate::store::{fnv_hex, safetensors};
use crate::{EgaError, Result};

/// The id of a model: a hash of its safetensors bytes and its config.
pub fn model_id(weights: &[u8], config: &ModelConfig) -> Result<String> {
    Ok(fnv_hex(&[weights, &config.id_bytes()?]))
}

/// The model's weights as safetensors bytes: a `mini` model's burn tensor names, a `smolvlm`
/// model's Hugging Face names and layout (blocking read-back: native only).
pub fn model_to_bytes(model: &Embedder) -> Result<Vec<u8>> {
    match model {
        Embedder::Mini(mini) => {
            // burn-store's default metadata is a HashMap, written in a random key order: without
            // it the same weights always give the same bytes, so the same model id (issue 16).
            let mut store = SafetensorsStore::from_bytes(None).clear_metadata();
            mini.save_into(&mut store).map_err(|err| EgaError::Data(format!("serialising the weights: {err}")))?;
            store.get_bytes().map_err(|err| EgaError::Data(format!("serialising the weights: {err}")))
        }
        Embedder::Smolvlm(smolvlm) => safetensors::to_bytes(&smolvlm.export()?),
    }
}

/// A model of `config` with the weights of `bytes`; every tensor must be present with its shape.
/// `what` names the file in messages.
pub fn model_from_bytes(config: &ModelConfig, bytes: Vec<u8>, device: &Device, what: &str) -> Result<Embedder> {
    match &config.architecture {
        Architecture::Mini(_) => {
            safetensors::check_f32_finite(&bytes, what)?;
            let mut model = MiniEmbedder::new(config, 0, device)?;
            let mut store = SafetensorsStore::from_bytes(Some(bytes));
            let result = model.load_from(&mut store).map_err(|err| {
                EgaError::format(&what, format!("not a usable safetensors file for this model: {err}"))
            })?;
            if !result.is_success() || !result.missing.is_empty() {
                return Err(EgaError::format(&what, format!("the weights do not match the model config: {result}")));
            }
            Ok(Embedder::Mini(model))
        }
        Architecture::Smolvlm(smolvlm) => {
            let mut source = SafetensorsSource::from_files(what, vec![(what.to_string(), bytes)], Rename::Smolvlm)?;
            let (model, _) = SmolVlm::build(smolvlm, Some(&mut source), &Part::ALL, 0, device)?;
            Ok(Embedder::Smolvlm(model))
        }
    }
}
