//! A TF.js Keras model (`model.json` + its weight files): the format npm's `nsfwjs` carries its
//! MobileNetV2 in (`scripts/setup-mobilenet.sh` unwraps it).
//!
//! `model.json` holds `modelTopology` (Keras' `model_config`: layers with their class, config and
//! inbound nodes) and `weightsManifest`: groups of weight files read back to back, each weight
//! with its name (`Conv1/kernel`, `bn_Conv1/gamma`, …), shape, dtype and optional quantization
//! (`uint8` / `uint16` values `q` standing for `min + scale · q`). Weights come out as `f32` in
//! Keras layout (a convolution kernel is `[kh, kw, in, out]`, a depthwise one `[kh, kw, C, 1]`).

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::store::HostTensor;
use crate::{EgaError, Result};

/// One layer of the Keras graph.
#[derive(Debug, Clone, Deserialize)]
pub struct KerasLayer {
    /// Its name (`block_1_expand`).
    pub name: String,
    /// Its class (`Conv2D`, `DepthwiseConv2D`, `BatchNormalization`, …).
    pub class_name: String,
    /// Its Keras config, as written.
    pub config: serde_json::Value,
    /// `[[[from_layer, node, tensor, kwargs], …]]`.
    #[serde(default)]
    pub inbound_nodes: Vec<Vec<serde_json::Value>>,
}

impl KerasLayer {
    /// The names of the layers feeding this one.
    pub fn inputs(&self) -> Vec<String> {
        self.inbound_nodes
            .iter()
            .flatten()
            .filter_map(|node| node.get(0).and_then(|v| v.as_str()).map(String::from))
            .collect()
    }
}

#[derive(Deserialize)]
struct ModelJson {
    #[serde(rename = "modelTopology")]
    topology: Topology,
    #[serde(rename = "weightsManifest")]
    manifest: Vec<WeightGroup>,
}

#[derive(Deserialize)]
struct Topology {
    model_config: ModelConfigJson,
}

#[derive(Deserialize)]
struct ModelConfigJson {
    config: GraphJson,
}

#[derive(Deserialize)]
struct GraphJson {
    layers: Vec<KerasLayer>,
}

#[derive(Deserialize)]
struct WeightGroup {
    paths: Vec<String>,
    weights: Vec<WeightSpec>,
}

#[derive(Deserialize)]
struct WeightSpec {
    name: String,
    shape: Vec<usize>,
    dtype: String,
    #[serde(default)]
    quantization: Option<Quantization>,
}

#[derive(Deserialize)]
struct Quantization {
    min: f64,
    scale: f64,
    dtype: String,
}

/// A TF.js Keras model read into memory.
#[derive(Debug)]
pub struct TfjsModel {
    /// `model.json`'s path, for messages.
    pub path: String,
    /// The graph's layers in file order.
    pub layers: Vec<KerasLayer>,
    /// Every weight by name, dequantized to `f32`, Keras layout.
    pub weights: HashMap<String, HostTensor>,
}

/// Bytes per stored value of a TF.js dtype.
fn width(dtype: &str) -> Option<usize> {
    match dtype {
        "uint8" => Some(1),
        "uint16" | "float16" => Some(2),
        "float32" | "int32" => Some(4),
        _ => None,
    }
}

impl TfjsModel {
    /// Reads `dir/model.json` and the weight files it names (beside it).
    pub fn open(dir: &Path) -> Result<Self> {
        let json_path = dir.join("model.json");
        let what = json_path.display().to_string();
        let bytes = crate::fs::read_regular(&json_path, crate::fs::MAX_JSON)?;
        let model: ModelJson = serde_json::from_slice(crate::fs::strip_bom(&bytes))
            .map_err(|e| EgaError::format(&what, format!("not a TF.js Keras model.json: {e}")))?;
        let mut weights = HashMap::new();
        for group in &model.manifest {
            let mut data = Vec::new();
            for file in &group.paths {
                if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                    return Err(EgaError::format(&what, format!("weight file {file:?} is not a plain file name")));
                }
                data.extend(crate::fs::read_regular(&dir.join(file), crate::fs::MAX_WEIGHTS)?);
            }
            let mut offset = 0usize;
            for spec in &group.weights {
                let count =
                    spec.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| {
                        EgaError::format(&what, format!("weight {} has an impossible shape", spec.name))
                    })?;
                let stored = spec.quantization.as_ref().map_or(spec.dtype.as_str(), |q| q.dtype.as_str());
                let bytes_each = width(stored).ok_or_else(|| {
                    EgaError::format(
                        &what,
                        format!("weight {} is stored as {stored}, which is not supported", spec.name),
                    )
                })?;
                let end = count
                    .checked_mul(bytes_each)
                    .and_then(|n| n.checked_add(offset))
                    .filter(|&end| end <= data.len())
                    .ok_or_else(|| {
                        EgaError::format(
                            &what,
                            format!(
                                "weight {} runs past the end of its weight files ({} bytes)",
                                spec.name,
                                data.len()
                            ),
                        )
                    })?;
                let raw = &data[offset..end];
                offset = end;
                let values: Vec<f32> = match (&spec.quantization, stored) {
                    (Some(q), "uint8") => raw.iter().map(|&v| (q.min + q.scale * v as f64) as f32).collect(),
                    (Some(q), "uint16") => raw
                        .chunks_exact(2)
                        .map(|c| (q.min + q.scale * u16::from_le_bytes([c[0], c[1]]) as f64) as f32)
                        .collect(),
                    (Some(_), "float16") => {
                        raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
                    }
                    (None, "float32") => {
                        raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
                    }
                    _ => {
                        return Err(EgaError::format(
                            &what,
                            format!("weight {} has dtype {} stored as {stored} (not supported)", spec.name, spec.dtype),
                        ))
                    }
                };
                if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
                    return Err(EgaError::format(
                        &what,
                        format!("weight {} holds a non-finite value at {bad}", spec.name),
                    ));
                }
                if weights.insert(spec.name.clone(), HostTensor { shape: spec.shape.clone(), data: values }).is_some() {
                    return Err(EgaError::format(&what, format!("weight {} is listed twice", spec.name)));
                }
            }
            if offset != data.len() {
                return Err(EgaError::format(
                    &what,
                    format!("the weight files hold {} bytes, the manifest describes {offset}", data.len()),
                ));
            }
        }
        Ok(Self { path: what, layers: model.topology.model_config.config.layers, weights })
    }

    /// The layer `name`.
    pub fn layer(&self, name: &str) -> Result<&KerasLayer> {
        self.layers
            .iter()
            .find(|l| l.name == name)
            .ok_or_else(|| EgaError::format(&self.path, format!("the model has no layer {name}")))
    }

    /// The weight `name` (`Conv1/kernel`), which must have `shape`.
    pub fn weight(&self, name: &str, shape: &[usize]) -> Result<&HostTensor> {
        let tensor = self
            .weights
            .get(name)
            .ok_or_else(|| EgaError::format(&self.path, format!("the model has no weight {name}")))?;
        if tensor.shape != shape {
            return Err(EgaError::format(
                &self.path,
                format!("weight {name} has shape {:?}, expected {shape:?}", tensor.shape),
            ));
        }
        Ok(tensor)
    }
}
