//! The web demo's wasm module: a thin layer of `#[wasm_bindgen]` calls over ega-core.
//!
//! Today it exposes EGA's matrices for a similarity matrix (the lab's worked example); the
//! search page and the live lab build on it.

use ega_core::loss::{oracle, LossConfig, Rescale};
use wasm_bindgen::prelude::*;

/// EGA's `P`, `h`, `P̄`, loss and gradients of a row-major `[n, m]` similarity matrix, as JSON.
/// Errors (bad shape, bad options) come back as a readable message, never a panic.
#[wasm_bindgen]
pub fn ega_example(
    similarities: Vec<f64>,
    n: usize,
    m: usize,
    tau: f64,
    alpha: f64,
    tau_h: f64,
    rescale_sum: bool,
) -> Result<String, JsError> {
    if n == 0 || m < n || similarities.len() != n * m {
        return Err(JsError::new(&format!(
            "need an [n, m] matrix with 1 <= n <= m; got n = {n}, m = {m}, {} values",
            similarities.len()
        )));
    }
    let config = LossConfig {
        tau,
        alpha,
        tau_h: Some(tau_h),
        rescale: if rescale_sum { Rescale::Sum } else { Rescale::None },
        ..LossConfig::default()
    };
    config.validate().map_err(|err| JsError::new(&err.to_string()))?;
    let result = oracle::ega_one_direction(&similarities, n, m, &config);
    let json = serde_json::json!({
        "loss": result.loss,
        "probs": result.probs,
        "hardness": result.hardness,
        "amplified_probs": result.amplified_probs,
        "grad_infonce": result.grad_infonce,
        "grad": result.grad,
    });
    Ok(json.to_string())
}

/// The version of ega-core compiled into this module.
#[wasm_bindgen]
pub fn version() -> String {
    ega_core::VERSION.to_string()
}

/// Token ids of each text under a tokenizer given as `tokenizer.json` (HF format), as a JSON array
/// of arrays. The same ega-core code as natively: `web/tests/tokenize.mjs` checks the ids equal the
/// native ones on a fixed caption list.
#[wasm_bindgen]
pub fn tokenize(tokenizer_json: &str, texts: Vec<String>) -> Result<String, JsError> {
    let tokenizer =
        ega_core::tokenizer::Tokenizer::from_json(tokenizer_json).map_err(|err| JsError::new(&err.to_string()))?;
    let ids = texts.iter().map(|text| tokenizer.encode(text)).collect::<ega_core::Result<Vec<_>>>();
    Ok(serde_json::to_string(&ids.map_err(|err| JsError::new(&err.to_string()))?)?)
}

/// A model bundle and its gallery index, loaded in the page from their files' bytes, searching on
/// the CPU backend (`flex`; its reads complete at once, so search is synchronous). The same
/// ega-core code as `native search`: `web/tests/search.mjs` checks the committed demo bundles
/// answer their recorded query here too.
#[wasm_bindgen]
pub struct Searcher {
    bundle: ega_core::bundle::Bundle,
    index: ega_core::index::Index,
    device: burn::tensor::Device,
}

#[wasm_bindgen]
impl Searcher {
    /// Loads `model/config.json`, `model/model.safetensors`, `model/tokenizer.json`,
    /// `index/index.bin` and `index/index.json`; refuses an index made by another model.
    #[wasm_bindgen(constructor)]
    pub fn new(
        config_json: &[u8],
        weights: Vec<u8>,
        tokenizer_json: &str,
        index_bin: &[u8],
        index_json: &[u8],
    ) -> Result<Searcher, JsError> {
        let device = burn::tensor::Device::flex();
        let error = |err: ega_core::EgaError| JsError::new(&err.to_string());
        let bundle = ega_core::bundle::from_bytes(config_json, weights, tokenizer_json, None, "model", &device)
            .map_err(error)?;
        let index = ega_core::index::Index::from_bytes(index_bin, index_json, "index").map_err(error)?;
        index.check_model(&bundle.config.model_id, bundle.config.model.embed_dim(), "the bundle").map_err(error)?;
        Ok(Searcher { bundle, index, device })
    }

    /// Rows in the gallery.
    pub fn count(&self) -> usize {
        self.index.meta.count
    }

    /// The model id of the bundle (and its index).
    pub fn model_id(&self) -> String {
        self.bundle.config.model_id.clone()
    }

    /// The top `k` gallery rows for a text query, as JSON `[{row, id, caption, thumbnail, score}]`.
    pub fn search(&self, query: &str, k: usize) -> Result<String, JsError> {
        if query.trim().is_empty() {
            return Err(JsError::new("the query is empty"));
        }
        if k == 0 {
            return Err(JsError::new("k must be at least 1"));
        }
        let error = |err: ega_core::EgaError| JsError::new(&err.to_string());
        let config = &self.bundle.config.model;
        let embedding = ega_core::embed::embed_captions(
            &self.bundle.model,
            config,
            &self.bundle.tokenizer,
            &[query],
            1,
            &self.device,
        )
        .map_err(error)?;
        let query = ega_core::tensor_util::to_f32_vec(embedding).map_err(error)?;
        let hits = ega_core::index::search_host(&self.index.rows, self.index.meta.dim, &query, k);
        let results: Vec<serde_json::Value> = hits
            .iter()
            .map(|hit| {
                let entry = &self.index.meta.entries[hit.row];
                serde_json::json!({"row": hit.row, "id": entry.id, "caption": entry.caption,
                    "thumbnail": entry.thumbnail, "score": hit.score})
            })
            .collect();
        Ok(serde_json::Value::from(results).to_string())
    }
}
