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
