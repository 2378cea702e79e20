//! Where a new run's model starts: a preset's random weights, a pretrained language model
//! (`--init-lm`: the decoder and tokenizer of a GGUF or Hugging Face Llama checkpoint, with a new
//! vision tower and connector), or a whole SmolVLM checkpoint (`--init`).
//!
//! A pretrained language model becomes a `smolvlm` embedder: its vision tower is SigLIP-shaped,
//! sized like the `mini` preset of the same name (`tiny`, `small`, `base`: the towers these
//! machines train from scratch), and the connector merges 2×2 patches (pixel shuffle, scale 2)
//! into the decoder's width. The tokenizer is the checkpoint's, with its own control tokens as
//! `<bos>` / `<eos>` (a chat model's `<|im_start|>` / `<|im_end|>`), and the prompts are written
//! as a chat turn.

use std::path::Path;

use burn::tensor::Device;

use crate::model::smolvlm::mobilenet::{stem_tensors, VisionStem};
use crate::model::smolvlm::{LoadReport, MemorySource, Part, SmolVlm};
use crate::model::{Architecture, Embedder, LlamaConfig, LoraConfig, ModelConfig, SiglipConfig, SmolVlmConfig};
use crate::parts::Merges;
use crate::pretrained::tfjs::TfjsModel;
use crate::prompt::{Pooling, PromptConfig, SpecialTokens};
use crate::store::HostTensor;
use crate::tokenizer::Tokenizer;
use crate::{EgaError, Result};

/// A model built from a checkpoint, with what the build did.
pub struct Started {
    /// Its config.
    pub config: ModelConfig,
    /// The model.
    pub model: Embedder,
    /// The checkpoint's tokenizer.
    pub tokenizer: Tokenizer,
    /// Tensors loaded and made fresh.
    pub report: LoadReport,
    /// The LoRA merges its weights went through ([`crate::parts`]): an own model's recorded ones,
    /// then the adapters `--init` merged.
    pub merges: Merges,
}

/// The SigLIP-shaped vision tower of the same size as the `mini` preset `preset`'s vision
/// encoder (`tiny`: 32 px, width 64, 2 layers; `small`: 64 px, width 128, 4 layers; `base`:
/// 128 px, width 384, 6 layers).
pub fn vision_tower(preset: &str) -> Result<SiglipConfig> {
    let mini = ModelConfig::preset(preset)?;
    let v = &mini.mini().ok_or_else(|| EgaError::config("preset", preset, "is not a mini preset"))?.vision;
    Ok(SiglipConfig {
        hidden_size: v.width,
        intermediate_size: v.width * v.mlp_ratio,
        num_hidden_layers: v.layers,
        num_attention_heads: v.heads,
        num_channels: v.channels,
        image_size: v.image_size,
        patch_size: v.patch_size,
        layer_norm_eps: 1e-6,
        stem: None,
    })
}

/// The longest prompt of the `mini` preset `preset` (its language model's context).
fn preset_context(preset: &str) -> Result<usize> {
    Ok(ModelConfig::preset(preset)?.max_seq_len())
}

/// The first of `names` that `tokenizer` knows, as an id.
fn first_token(tokenizer: &tokenizers::Tokenizer, names: &[&str]) -> Option<u32> {
    names.iter().find_map(|name| tokenizer.token_to_id(name))
}

/// The control tokens of a pretrained tokenizer as this project's special tokens: `<bos>` starts
/// a prompt (`<|im_start|>`, `<|begin_of_text|>`, `<s>`), `<eos>` ends it and its hidden state is
/// the embedding (`<|im_end|>`, `<|eot_id|>`, `</s>`, `<|endoftext|>`), `<pad>` fills (masked
/// out), and `<image>` marks where image tokens go (its embedding is never read: image features
/// replace it). A tokenizer without an `<image>` token lends one of its rarely used control tokens
/// for it; the choice is saved with the model.
pub fn lm_special_tokens(tokenizer: &tokenizers::Tokenizer, what: &str) -> Result<SpecialTokens> {
    let missing = |role: &str, names: &[&str]| {
        EgaError::Tokenizer(format!("{what}: the tokenizer has no {role} token (looked for {})", names.join(", ")))
    };
    let bos_names = ["<|im_start|>", "<|begin_of_text|>", "<s>"];
    let eos_names = ["<|im_end|>", "<|eot_id|>", "</s>", "<|endoftext|>"];
    let bos = first_token(tokenizer, &bos_names).ok_or_else(|| missing("start", &bos_names))?;
    let eos = first_token(tokenizer, &eos_names).ok_or_else(|| missing("end", &eos_names))?;
    let pad = first_token(tokenizer, &["<|endoftext|>", "<pad>", "<unk>"]).unwrap_or(eos);
    let image_names = ["<image>", "<|image|>", "<empty_output>", "<jupyter_script>", "<unk>"];
    let image = image_names
        .iter()
        .filter_map(|name| tokenizer.token_to_id(name))
        .find(|id| *id != bos && *id != eos && *id != pad)
        .ok_or_else(|| missing("spare control", &image_names))?;
    let around = tokenizer.token_to_id("<fake_token_around_image>");
    let global = tokenizer.token_to_id("<global-img>");
    Ok(SpecialTokens { pad, bos, eos, image, image_around: around, image_global: global })
}

/// Prompts written as a chat turn of an instruction-tuned model (`<bos>` is its turn opener).
pub fn chat_prompts() -> PromptConfig {
    PromptConfig {
        query: "user\nFind an image that matches the caption: {text}".into(),
        target: "user\n<image> Summarize the image in one word:".into(),
        pooling: Pooling::Last,
    }
}

/// Keeps the first `lm_layers` layers of the decoder `text` (all when `None`); more than it has,
/// or none, is an error naming how many it has.
fn cut_layers(text: &mut LlamaConfig, lm_layers: Option<usize>) -> Result<()> {
    if let Some(k) = lm_layers {
        let layers = text.num_hidden_layers;
        if k == 0 || k > layers {
            return Err(EgaError::config(
                "lm_layers",
                k,
                format!("must be between 1 and the decoder's {layers} layers"),
            ));
        }
        text.num_hidden_layers = k;
    }
    Ok(())
}

/// The config of an embedder on the decoder `text` (its first `lm_layers` layers when given) with
/// the vision tower of `vision_preset` and `lora` adapters.
pub fn lm_embedder_config(
    name: &str,
    text: &LlamaConfig,
    vision_preset: &str,
    lm_layers: Option<usize>,
    lora: Option<LoraConfig>,
    special: SpecialTokens,
) -> Result<ModelConfig> {
    let mut text_config = text.clone();
    cut_layers(&mut text_config, lm_layers)?;
    let max_seq_len = preset_context(vision_preset)?.min(text_config.max_position_embeddings);
    let config = ModelConfig {
        preset: name.to_string(),
        architecture: Architecture::Smolvlm(SmolVlmConfig {
            vision_config: vision_tower(vision_preset)?,
            text_config,
            scale_factor: 2,
            max_seq_len,
            lora,
        }),
        special,
        prompts: chat_prompts(),
    };
    config.validate()?;
    Ok(config)
}

/// `--init-lm PATH`: an embedder whose decoder (and tokenizer) is the checkpoint's — a GGUF file
/// or a Hugging Face folder of a Llama model (or of a SmolVLM, whose decoder alone is taken) —
/// and whose vision tower (sized as `vision_preset`), connector and LoRA adapters are fresh from
/// `seed`.
pub fn from_lm(
    path: &Path,
    vision_preset: &str,
    lm_layers: Option<usize>,
    lora: Option<LoraConfig>,
    seed: u64,
    device: &Device,
) -> Result<Started> {
    let mut checkpoint = crate::pretrained::open(path)?;
    let what = checkpoint.path.clone();
    let inner = checkpoint.tokenizer.take().ok_or_else(|| {
        EgaError::Data(format!("{what}: carries no tokenizer this build can read, which --init-lm needs"))
    })?;
    let special = lm_special_tokens(&inner, &what)?;
    let name = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "pretrained".into());
    let config = lm_embedder_config(&name, checkpoint.text_config(), vision_preset, lm_layers, lora, special)?;
    let tokenizer = Tokenizer::from_tokenizers(inner, special)?;
    tokenizer.check_fits(config.vocab_size(), &what)?;
    let smolvlm = config.smolvlm().expect("built as smolvlm");
    let (model, report) = SmolVlm::build(smolvlm, Some(checkpoint.source.as_mut()), &[Part::Text], seed, device)?;
    Ok(Started { config, model: Embedder::Smolvlm(model), tokenizer, report, merges: Merges::default() })
}

/// A `smolvlm` model this project wrote: a bundle, a run folder (its latest checkpoint) or a
/// checkpoint folder; `None` when `path` is none of these.
fn own_model(path: &Path, device: &Device) -> Result<Option<(ModelConfig, Embedder, Tokenizer, Merges)>> {
    let is_bundle = || {
        crate::fs::read_regular(&path.join("config.json"), crate::fs::MAX_JSON)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(crate::fs::strip_bom(&bytes)).ok())
            .is_some_and(|config| config.get("model_id").is_some())
    };
    if path.join("run.json").exists() || path.join("checkpoints").join("latest").exists() {
        let checkpoint = if path.join("run.json").exists() {
            crate::checkpoint::load(path, device)?
        } else {
            crate::checkpoint::load_latest(path, device)?
        };
        return Ok(Some((checkpoint.state.model, checkpoint.model, checkpoint.tokenizer, checkpoint.merges)));
    }
    if is_bundle() {
        let bundle = crate::bundle::load(path, device)?;
        return Ok(Some((bundle.config.model, bundle.model, bundle.tokenizer, Merges::read(path)?)));
    }
    Ok(None)
}

/// `--init PATH`: a whole SmolVLM — a Hugging Face Idefics3 / SmolVLM folder, or a `smolvlm`
/// bundle, run or checkpoint of this project (to tune further) — every part loaded, the decoder
/// cut to its first `lm_layers` layers when given, and `lora` adapters (fresh from `seed` unless
/// the model already has these very adapters; an own model's other adapters are first merged into
/// the weights they adapt, so what they learnt is kept).
pub fn from_smolvlm(
    path: &Path,
    lm_layers: Option<usize>,
    lora: Option<LoraConfig>,
    seed: u64,
    device: &Device,
) -> Result<Started> {
    if let Some((mut config, mut model, tokenizer, mut merges)) = own_model(path, device)? {
        let what = path.display();
        if config.smolvlm().is_some_and(|s| s.lora.is_some() && s.lora != lora) {
            if let Some((plain, merged)) = merges.merge_into_weights("init", &model, &config, device)? {
                (config, model) = (plain, merged);
            }
        }
        let Architecture::Smolvlm(smolvlm) = &mut config.architecture else {
            return Err(EgaError::Data(format!(
                "{what}: a mini model; --init takes a smolvlm model (a mini run continues with --resume)"
            )));
        };
        let layers = smolvlm.text_config.num_hidden_layers;
        cut_layers(&mut smolvlm.text_config, lm_layers)?;
        let unchanged = smolvlm.lora == lora && lm_layers.is_none_or(|k| k == layers);
        smolvlm.lora = lora;
        let (model, report) = match (&model, &config.architecture) {
            (Embedder::Smolvlm(own), Architecture::Smolvlm(smolvlm)) if !unchanged => {
                let (rebuilt, report) = own.rebuild(smolvlm, seed, device)?;
                (Embedder::Smolvlm(rebuilt), report)
            }
            _ => {
                struct Tensors(usize);
                impl burn::module::ModuleVisitor for Tensors {
                    fn visit_float<const D: usize>(&mut self, _: &burn::module::Param<burn::tensor::Tensor<D>>) {
                        self.0 += 1;
                    }
                }
                let mut tensors = Tensors(0);
                burn::module::Module::visit(&model, &mut tensors);
                let params = burn::module::Module::num_params(&model);
                (model, LoadReport { loaded: tensors.0, fresh: 0, loaded_params: params })
            }
        };
        if let Some(k) = lm_layers {
            merges.cut_layers(k);
        }
        return Ok(Started { config, model, tokenizer, report, merges });
    }
    let mut checkpoint = crate::pretrained::open(path)?;
    let what = checkpoint.path.clone();
    let mut smolvlm = checkpoint.smolvlm_config().cloned().ok_or_else(|| {
        EgaError::Data(format!("{what}: not a SmolVLM checkpoint (for a language model use --init-lm)"))
    })?;
    let inner = checkpoint
        .tokenizer
        .take()
        .ok_or_else(|| EgaError::Data(format!("{what}: has no tokenizer.json, which --init needs")))?;
    let mut special = lm_special_tokens(&inner, &what)?;
    if let crate::pretrained::safetensors::HfModel::Smolvlm { image_token_id: Some(id), .. } = &checkpoint.model {
        special.image = *id;
    }
    cut_layers(&mut smolvlm.text_config, lm_layers)?;
    smolvlm.lora = lora;
    let name = path.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "smolvlm".into());
    let config = ModelConfig {
        preset: name,
        architecture: Architecture::Smolvlm(smolvlm.clone()),
        special,
        prompts: chat_prompts(),
    };
    config.validate()?;
    let tokenizer = Tokenizer::from_tokenizers(inner, special)?;
    tokenizer.check_fits(config.vocab_size(), &what)?;
    let (model, report) = SmolVlm::build(&smolvlm, Some(checkpoint.source.as_mut()), &Part::BASE, seed, device)?;
    Ok(Started { config, model: Embedder::Smolvlm(model), tokenizer, report, merges: Merges::default() })
}

/// `--vision-stem DIR`: `started`'s model with a new vision tower whose patches come from the
/// pretrained MobileNetV2 stem in `dir` (`scripts/setup-mobilenet.sh`; [`VisionStem`], frozen):
/// the same patch grid (the image side becomes 16 × the grid: 128 px for the `small` tower), the
/// tower's layers and the connector fresh from `seed`, the decoder (and its adapters) kept.
pub fn with_vision_stem(started: Started, dir: &Path, seed: u64, device: &Device) -> Result<Started> {
    let Started { mut config, model, tokenizer, merges, .. } = started;
    let (Architecture::Smolvlm(smolvlm), Embedder::Smolvlm(own)) = (&mut config.architecture, &model) else {
        return Err(EgaError::Data(
            "--vision-stem needs a smolvlm model (--init-lm PATH, --init PATH or --preset tiny-smolvlm)".into(),
        ));
    };
    let stem = VisionStem::MobilenetV2Block10;
    let v = &mut smolvlm.vision_config;
    let grid = v.grid();
    v.patch_size = stem.stride();
    v.image_size = grid * stem.stride();
    v.num_channels = 3;
    v.stem = Some(stem);
    smolvlm.validate()?;
    let tfjs = TfjsModel::open(dir)?;
    let mut tensors: Vec<(String, HostTensor)> =
        own.export()?.into_iter().filter(|(name, _)| name.starts_with(Part::Text.prefix())).collect();
    tensors.extend(stem_tensors(stem, &tfjs)?);
    let mut source = MemorySource::new(&tfjs.path, tensors);
    let load =
        if smolvlm.lora.is_some() { vec![Part::Text, Part::Lora, Part::Stem] } else { vec![Part::Text, Part::Stem] };
    let (model, report) = SmolVlm::build(smolvlm, Some(&mut source), &load, seed, device)?;
    Ok(Started { config, model: Embedder::Smolvlm(model), tokenizer, report, merges })
}
