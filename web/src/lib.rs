//! The web demo's wasm module: a thin layer of `#[wasm_bindgen]` calls over ega-core.
//!
//! - [`init_backend`] opens WebGPU through burn's wgpu backend, or falls back to the CPU backend
//!   (`flex`) and says why; every object below runs on the backend chosen there.
//! - [`Searcher`]: a model bundle + gallery index, text search, images added by the user.
//! - [`Lab`]: two copies of a model trained side by side with info-NCE and EGA (`ega_core::lab`).
//! - [`ega_example`]: EGA's matrices of any small similarity matrix (the worked example).
//! - [`TopkBench`]: the WGSL top-k over an index the page made, for the benchmark view.
//!
//! Reads from the device are asynchronous (WebGPU cannot block), so the methods that read
//! return promises; errors come back as readable messages, never as panics.

use std::cell::RefCell;
use std::rc::Rc;

use burn::tensor::{Device, Int, Tensor};
use ega_core::gallery::{Gallery, LoadedModel};
use ega_core::index::IndexEntry;
use ega_core::lab::LabConfig;
use ega_core::loss::{oracle, LossConfig, Rescale};
use ega_core::EgaError;
use js_sys::Promise;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

/// Installs the panic hook: a bug shows as a readable message in the console.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

fn js_error(err: EgaError) -> JsError {
    JsError::new(&err.to_string())
}

fn js_value(err: EgaError) -> JsValue {
    JsValue::from(js_error(err))
}

/// The backend every object of this module uses.
#[derive(Clone)]
struct Backend {
    device: Device,
    name: &'static str,
    adapter: String,
    reason: String,
}

impl Backend {
    fn cpu(reason: impl Into<String>) -> Self {
        Backend { device: Device::flex(), name: "cpu", adapter: "burn flex (wasm)".into(), reason: reason.into() }
    }

    fn json(&self) -> String {
        serde_json::json!({"backend": self.name, "adapter": self.adapter, "reason": self.reason}).to_string()
    }
}

thread_local! {
    static BACKEND: RefCell<Option<Backend>> = const { RefCell::new(None) };
}

fn backend() -> Backend {
    BACKEND.with(|b| b.borrow().clone()).unwrap_or_else(|| Backend::cpu("init_backend was not called"))
}

/// True when the global object has `navigator.gpu` (browsers with WebGPU; not node).
fn has_webgpu() -> bool {
    let global = js_sys::global();
    let Ok(navigator) = js_sys::Reflect::get(&global, &JsValue::from_str("navigator")) else {
        return false;
    };
    if navigator.is_undefined() || navigator.is_null() {
        return false;
    }
    js_sys::Reflect::get(&navigator, &JsValue::from_str("gpu"))
        .map(|gpu| !gpu.is_undefined() && !gpu.is_null())
        .unwrap_or(false)
}

/// Opens burn's wgpu backend on the browser's WebGPU adapter.
#[cfg(feature = "webgpu")]
async fn open_webgpu() -> Result<Backend, String> {
    match Device::wgpu_options().init_with_setup_async().await {
        Ok((device, setup)) => {
            let info = setup.adapter.get_info();
            let adapter = if info.name.is_empty() { "WebGPU adapter".to_string() } else { info.name };
            Ok(Backend { device, name: "webgpu", adapter, reason: "WebGPU adapter opened".into() })
        }
        Err(err) => Err(format!("the WebGPU adapter failed: {err}")),
    }
}

/// The CPU module (built without the `webgpu` feature) has no WebGPU backend to open.
#[cfg(not(feature = "webgpu"))]
async fn open_webgpu() -> Result<Backend, String> {
    Err("this is the page's CPU module, built without WebGPU (the `web-gpu` package has it)".to_string())
}

/// Whether this module was built with the WebGPU backend (`web-gpu`) or is the CPU module (`web`).
#[wasm_bindgen]
pub fn has_webgpu_backend() -> bool {
    cfg!(feature = "webgpu")
}

/// Chooses the backend once: `mode` is `auto` (WebGPU when the browser offers a working adapter,
/// else the CPU backend), `webgpu` (WebGPU or an error) or `cpu`. Returns JSON
/// `{backend: "webgpu" | "cpu", adapter, reason}`; a second call returns the first choice.
#[wasm_bindgen]
pub async fn init_backend(mode: String) -> Result<String, JsError> {
    if let Some(chosen) = BACKEND.with(|b| b.borrow().clone()) {
        return Ok(chosen.json());
    }
    let chosen = match mode.as_str() {
        "cpu" => Backend::cpu("the CPU backend was asked for"),
        "auto" | "webgpu" => {
            let fallback = if !has_webgpu() {
                Err("this browser has no WebGPU (navigator.gpu is missing)".to_string())
            } else {
                open_webgpu().await
            };
            match fallback {
                Ok(backend) => backend,
                Err(why) if mode == "auto" => Backend::cpu(format!("{why}; using the CPU backend")),
                Err(why) => return Err(JsError::new(&why)),
            }
        }
        other => return Err(JsError::new(&format!("unknown backend {other:?}: expected auto, webgpu or cpu"))),
    };
    BACKEND.with(|b| *b.borrow_mut() = Some(chosen.clone()));
    Ok(chosen.json())
}

/// Reads a float tensor back (asynchronously: the only way on WebGPU).
async fn read(tensor: Tensor<2>) -> Result<Vec<f32>, JsValue> {
    let data = tensor.into_data_async().await.map_err(|err| js_value(EgaError::Readback(format!("{err:?}"))))?;
    Ok(data.iter::<f32>().collect())
}

/// Reads an int tensor back.
async fn read_ints(tensor: Tensor<2, Int>) -> Result<Vec<i64>, JsValue> {
    let data = tensor.into_data_async().await.map_err(|err| js_value(EgaError::Readback(format!("{err:?}"))))?;
    Ok(data.iter::<i64>().collect())
}

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
    config.validate().map_err(js_error)?;
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
    let tokenizer = ega_core::tokenizer::Tokenizer::from_json(tokenizer_json).map_err(js_error)?;
    let ids = texts.iter().map(|text| tokenizer.encode(text)).collect::<ega_core::Result<Vec<_>>>();
    Ok(serde_json::to_string(&ids.map_err(js_error)?)?)
}

/// Unit-norm embeddings of `texts` (as queries) and of `images` (`[n, 3, S, S]` values in
/// `[0, 1]`, as targets) under a bundle given as its files' bytes, on the backend chosen by
/// [`init_backend`]: a promise of JSON `{"texts": [[…]], "images": [[…]]}`. The same ega-core code
/// as natively; `web/tests/smolvlm.mjs` checks a tiny `smolvlm` bundle embeds here as it does
/// natively.
#[wasm_bindgen]
pub fn embed_bundle(
    config_json: &[u8],
    weights: Vec<u8>,
    tokenizer_json: &str,
    texts: Vec<String>,
    images: Vec<f32>,
) -> Result<Promise, JsError> {
    let backend = backend();
    let bundle = ega_core::bundle::from_bytes(config_json, weights, tokenizer_json, None, "model", &backend.device)
        .map_err(js_error)?;
    Ok(future_to_promise(async move {
        let config = &bundle.config.model;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let texts =
            ega_core::embed::embed_captions(&bundle.model, config, &bundle.tokenizer, &refs, 8, &backend.device)
                .map_err(js_value)?;
        let dim = config.embed_dim();
        let text_rows = read(texts).await?;
        let size = config.image_size();
        let per_image = 3 * size * size;
        let mut image_rows = Vec::new();
        if !images.is_empty() {
            if images.len() % per_image != 0 {
                return Err(JsError::new(&format!(
                    "images: {} values is not a whole number of 3×{size}×{size} images",
                    images.len()
                ))
                .into());
            }
            let n = images.len() / per_image;
            let pixels = ega_core::tensor_util::floats(images, [n, 3, size, size], &backend.device);
            let items: Vec<(&str, Option<usize>)> = (0..n).map(|i| ("", Some(i))).collect();
            let prompts =
                ega_core::prompt::tokenize_prompts(&config.prompts.target, &config.special, &items, &mut |t| {
                    bundle.tokenizer.encode(t)
                })
                .map_err(js_value)?;
            let input =
                ega_core::embed::prompts_input(config, &prompts, Some(pixels), &backend.device).map_err(js_value)?;
            image_rows = read(bundle.model.embed(&input)).await?;
        }
        let rows = |values: &[f32]| -> Vec<Vec<f32>> { values.chunks(dim).map(<[f32]>::to_vec).collect() };
        let out = serde_json::json!({ "texts": rows(&text_rows), "images": rows(&image_rows) });
        Ok(JsValue::from_str(&out.to_string()))
    }))
}

/// A model bundle and its gallery index, loaded in the page from their files' bytes: an
/// `ega_core::gallery::Gallery`, the same code as `native search` (one device rule: the WGSL
/// top-k on WebGPU, the exact host loop on the CPU backend). `web/tests/search.mjs` and the
/// browser tests check the committed demo bundles answer their recorded query here too.
#[wasm_bindgen]
pub struct Searcher {
    gallery: Rc<RefCell<Gallery>>,
    backend: &'static str,
}

#[wasm_bindgen]
impl Searcher {
    /// Loads `model/config.json`, `model/model.safetensors`, `model/tokenizer.json`,
    /// `index/index.bin` and `index/index.json` onto `device`: `backend` (the one
    /// [`init_backend`] chose; the default) or `cpu` (burn's flex backend in wasm, which the page
    /// picks on a software WebGPU adapter). Refuses an index made by another model.
    #[wasm_bindgen(constructor)]
    pub fn new(
        config_json: &[u8],
        weights: Vec<u8>,
        tokenizer_json: &str,
        index_bin: &[u8],
        index_json: &[u8],
        device: Option<String>,
    ) -> Result<Searcher, JsError> {
        let backend = match device.as_deref().unwrap_or("backend") {
            "backend" => backend(),
            "cpu" => Backend::cpu("the CPU backend was asked for"),
            other => return Err(JsError::new(&format!("unknown search device {other:?}: expected backend or cpu"))),
        };
        let bundle = ega_core::bundle::from_bytes(config_json, weights, tokenizer_json, None, "model", &backend.device)
            .map_err(js_error)?;
        let index = ega_core::index::Index::from_bytes(index_bin, index_json, "index").map_err(js_error)?;
        let model = LoadedModel::from_bundle(bundle, "the bundle");
        let gallery = Gallery::open(model, index, &backend.device).map_err(js_error)?;
        Ok(Searcher { gallery: Rc::new(RefCell::new(gallery)), backend: backend.name })
    }

    /// Rows in the gallery (including added images).
    pub fn count(&self) -> usize {
        self.gallery.borrow().len()
    }

    /// The model id of the bundle (and its index).
    pub fn model_id(&self) -> String {
        self.gallery.borrow().model_id().to_string()
    }

    /// The backend this searcher runs on (`webgpu` or `cpu`).
    pub fn backend(&self) -> String {
        self.backend.to_string()
    }

    /// The side of the model's square image input, in pixels.
    pub fn image_size(&self) -> usize {
        self.gallery.borrow().model().config.image_size()
    }

    /// The top `k` gallery rows for a text query: a promise of JSON
    /// `[{row, id, caption, thumbnail, score}]`. On WebGPU the WGSL top-k runs over the rows kept on
    /// the device; on the CPU backend, the exact host loop.
    pub fn search(&self, query: String, k: usize) -> Promise {
        let gallery = self.gallery.clone();
        future_to_promise(async move {
            let pending = {
                let mut gallery = gallery.borrow_mut();
                let embedding = gallery.embed_text(&query).map_err(js_value)?;
                gallery.start_search(embedding, k).map_err(js_value)?
            };
            let read = pending.read_async().await.map_err(js_value)?;
            let gallery = gallery.borrow();
            let results: Vec<serde_json::Value> = gallery
                .finish_search(read)
                .iter()
                .filter_map(|hit| {
                    let entry = gallery.entry(hit.row)?;
                    Some(serde_json::json!({"row": hit.row, "id": entry.id, "caption": entry.caption,
                        "thumbnail": entry.thumbnail, "score": hit.score}))
                })
                .collect();
            Ok(JsValue::from_str(&serde_json::Value::from(results).to_string()))
        })
    }

    /// Embeds a user's image (`width × height` RGB bytes, already decoded and downscaled by the
    /// page) and adds it to the gallery as `id` with `thumbnail` (a URL the page made). A promise of
    /// the new row's number. The image never leaves the page.
    pub fn add_image(&self, rgb: Vec<u8>, width: u32, height: u32, id: String, thumbnail: String) -> Promise {
        let gallery = self.gallery.clone();
        future_to_promise(async move {
            let expected = width as usize * height as usize * 3;
            if width == 0 || height == 0 || rgb.len() != expected {
                return Err(JsError::new(&format!(
                    "{id}: expected {width}×{height}×3 = {expected} bytes of RGB, got {}",
                    rgb.len()
                ))
                .into());
            }
            let image = ega_core::data::RgbImage::from_raw(width, height, rgb)
                .ok_or_else(|| JsError::new(&format!("{id}: the pixels do not form an image")))?;
            let embedding = gallery.borrow().embed_images(&[&image]).map_err(js_value)?;
            let values = read(embedding).await?;
            let entry = IndexEntry { id, caption: None, image: None, thumbnail: Some(thumbnail) };
            let rows = gallery.borrow_mut().add_rows(&values, vec![entry]).map_err(js_value)?;
            Ok(JsValue::from(rows.start))
        })
    }
}

/// The lab: two copies of one model trained side by side with info-NCE and EGA on the same
/// shapes batches (see `ega_core::lab`).
#[wasm_bindgen]
pub struct Lab {
    lab: Rc<RefCell<ega_core::lab::Lab>>,
    device: &'static str,
}

#[wasm_bindgen]
impl Lab {
    /// A lab from a JSON `LabConfig` (missing fields take their defaults; unknown ones are refused)
    /// on `device`: `backend` (the one [`init_backend`] chose) or `cpu`. With a bundle's
    /// `config.json`, weights and `tokenizer.json`, both copies start from that trained model (the
    /// page uses `assets/lab`); without, from a fresh initialisation.
    #[wasm_bindgen(constructor)]
    pub fn new(
        config_json: &str,
        device: &str,
        bundle_config: Option<Vec<u8>>,
        weights: Option<Vec<u8>>,
        tokenizer_json: Option<String>,
    ) -> Result<Lab, JsError> {
        let config: LabConfig =
            serde_json::from_str(config_json).map_err(|err| JsError::new(&format!("lab settings: {err}")))?;
        let (device, name) = match device {
            "backend" => {
                let backend = backend();
                (backend.device, backend.name)
            }
            "cpu" => (Device::flex(), "cpu"),
            other => return Err(JsError::new(&format!("unknown lab device {other:?}: expected backend or cpu"))),
        };
        let device = device.autodiff();
        let lab = match (bundle_config, weights, tokenizer_json) {
            (Some(bundle_config), Some(weights), Some(tokenizer)) => {
                let bundle =
                    ega_core::bundle::from_bytes(&bundle_config, weights, &tokenizer, None, "lab model", &device)
                        .map_err(js_error)?;
                ega_core::lab::Lab::from_bundle(config, bundle, &device)
            }
            (None, None, None) => ega_core::lab::Lab::new(config, &device),
            _ => return Err(JsError::new("a lab model needs its config.json, weights and tokenizer.json together")),
        }
        .map_err(js_error)?;
        Ok(Lab { lab: Rc::new(RefCell::new(lab)), device: name })
    }

    /// The device the lab trains on: `webgpu` or `cpu`.
    pub fn device(&self) -> String {
        self.device.to_string()
    }

    /// Steps taken.
    pub fn step_count(&self) -> usize {
        self.lab.borrow().step()
    }

    /// The settings in force, as JSON.
    pub fn config(&self) -> String {
        serde_json::to_string(&self.lab.borrow().config).unwrap_or_default()
    }

    /// Changes τ, α, τ_h and the rescale mode (both copies, from the next step on).
    pub fn set_loss(&self, tau: f64, alpha: f64, tau_h: f64, rescale_sum: bool) -> Result<(), JsError> {
        let rescale = if rescale_sum { Rescale::Sum } else { Rescale::None };
        self.lab.borrow_mut().set_loss(tau, alpha, tau_h, rescale).map_err(js_error)
    }

    /// The fixed batch as JSON `{captions, side, owners, n, m}`: `owners[j]` is the pair target `j`
    /// belongs to (its positive or one of its hard negatives).
    pub fn view_info(&self) -> String {
        let lab = self.lab.borrow();
        let owners: Vec<usize> = lab.view_targets().iter().map(|(owner, _)| *owner).collect();
        let (n, m) = lab.view_shape();
        let side = lab.model_config.image_size();
        serde_json::json!({"captions": lab.view_captions(), "side": side, "owners": owners, "n": n, "m": m}).to_string()
    }

    /// The fixed batch's images (targets in order), RGB bytes one after another.
    pub fn view_pixels(&self) -> Vec<u8> {
        self.lab.borrow().view_targets().iter().flat_map(|(_, image)| image.as_raw().iter().copied()).collect()
    }

    /// One training step of both copies on the same batch: a promise of JSON
    /// `{step, losses: [info-NCE, EGA], alpha}` (α is EGA's scheduled value at that step).
    pub fn step(&self) -> Promise {
        let lab = self.lab.clone();
        future_to_promise(async move {
            let pending = {
                let lab = lab.borrow();
                let batch = lab.next_batch().map_err(js_value)?;
                [lab.forward(0, &batch).map_err(js_value)?, lab.forward(1, &batch).map_err(js_value)?]
            };
            let mut values = [0.0f64; 2];
            for (value, p) in values.iter_mut().zip(&pending) {
                let loss = p.loss.clone().reshape([1, 1]);
                *value = read(loss).await?.first().copied().unwrap_or(f32::NAN) as f64;
            }
            let mut lab = lab.borrow_mut();
            let [infonce, ega] = pending;
            let first = lab.apply(0, infonce, values[0]).map_err(js_value)?;
            let second = lab.apply(1, ega, values[1]).map_err(js_value)?;
            let json =
                serde_json::json!({"step": first.step, "losses": [first.loss, second.loss], "alpha": second.alpha});
            Ok(JsValue::from_str(&json.to_string()))
        })
    }

    /// What the lab draws of both copies on the fixed batch: a promise of JSON
    /// `{n, m, views: [LabView; 2]}`.
    pub fn views(&self) -> Promise {
        let lab = self.lab.clone();
        future_to_promise(async move {
            let views =
                for_both(&lab, |lab, which| lab.view_embeddings(which), |lab, which, values| lab.view(which, values))
                    .await?;
            let (n, m) = lab.borrow().view_shape();
            let json = serde_json::json!({"n": n, "m": m, "views": views});
            Ok(JsValue::from_str(&json.to_string()))
        })
    }

    /// Held-out recall@1 and hard-negative accuracy of both copies: a promise of JSON
    /// `[{r1, hard_negative_acc}; 2]`.
    pub fn evaluate(&self) -> Promise {
        let lab = self.lab.clone();
        future_to_promise(async move {
            let metrics =
                for_both(&lab, |lab, which| lab.heldout_embeddings(which), |lab, _, values| lab.metrics(values))
                    .await?;
            Ok(JsValue::from_str(&serde_json::to_string(&metrics).unwrap_or_default()))
        })
    }
}

/// For copy 0 (info-NCE) and copy 1 (EGA): makes a tensor, reads it back (no borrow of the lab is
/// held across the read) and turns the values into a `T`.
async fn for_both<T>(
    lab: &Rc<RefCell<ega_core::lab::Lab>>,
    tensor: impl Fn(&ega_core::lab::Lab, usize) -> Tensor<2>,
    finish: impl Fn(&ega_core::lab::Lab, usize, &[f32]) -> ega_core::Result<T>,
) -> Result<Vec<T>, JsValue> {
    let tensors = {
        let lab = lab.borrow();
        [tensor(&lab, 0), tensor(&lab, 1)]
    };
    let mut results = Vec::new();
    for (which, tensor) in tensors.into_iter().enumerate() {
        let values = read(tensor).await?;
        results.push(finish(&lab.borrow(), which, &values).map_err(js_value)?);
    }
    Ok(results)
}

/// An index of `rows × dim` values (made by the page) kept on the device, for timing the top-k
/// search against a plain JavaScript loop over the same numbers.
#[wasm_bindgen]
pub struct TopkBench {
    index: Tensor<2>,
    dim: usize,
}

#[wasm_bindgen]
impl TopkBench {
    /// Uploads `values` (`rows × dim`, row-major) to the backend's device.
    #[wasm_bindgen(constructor)]
    pub fn new(values: Vec<f32>, dim: usize) -> Result<TopkBench, JsError> {
        if dim == 0 || values.is_empty() || values.len() % dim != 0 {
            return Err(JsError::new(&format!("{} values do not make rows of dimension {dim}", values.len())));
        }
        let rows = values.len() / dim;
        let index = ega_core::tensor_util::floats(values, [rows, dim], &backend().device);
        Ok(TopkBench { index, dim })
    }

    /// The `k` best rows for `query` (a promise of a JSON array of row numbers, best first): the
    /// WGSL kernels on WebGPU, burn's sort on the CPU backend.
    pub fn run(&self, query: Vec<f32>, k: usize) -> Promise {
        let index = self.index.clone();
        let dim = self.dim;
        future_to_promise(async move {
            if query.len() != dim {
                return Err(JsError::new(&format!("the query has {} values, not {dim}", query.len())).into());
            }
            let query = ega_core::tensor_util::floats(query, [1, dim], &index.device());
            let top = ega_core::kernels::topk_cosine(query, index, k).map_err(js_value)?;
            let rows = read_ints(top.indices).await?;
            Ok(JsValue::from_str(&serde_json::to_string(&rows).unwrap_or_default()))
        })
    }
}
