//! Turning captions and images into model inputs, and into embeddings.
//!
//! Queries are captions in the query template, targets are images in the target template
//! (`ModelConfig::prompts`). Everything here works on host data (strings, RGB images) and returns
//! device tensors, so the trainer, the evaluator, the indexer and the browser share it.

use burn::tensor::{Device, Tensor};

use crate::data::{image_tensor_data, RgbImage};
use crate::model::{Embedder, EmbedderInput, ModelConfig};
use crate::prompt::{tokenize_prompts, AssembledBatch};
use crate::tensor_util::floats;
use crate::tokenizer::Tokenizer;
use crate::{EgaError, Result};

/// Model inputs for captions as queries. Captions too long for the model are cut (keeping
/// `<bos>`, the instruction and `<eos>`), so that any text can be embedded.
pub fn query_input(
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    captions: &[&str],
    device: &Device,
) -> Result<EmbedderInput> {
    let template = &config.prompts.query;
    // Room the template itself takes, so the caption can be cut to fit.
    let fixed = crate::prompt::encode_prompt(template, "", false, &config.special, &mut |s| {
        tokenizer.encode(s).unwrap_or_default()
    })?
    .len();
    let budget = config.language.max_seq_len.saturating_sub(fixed);
    if budget == 0 {
        return Err(EgaError::Prompt(format!(
            "the query template {template:?} alone fills the model's {} tokens",
            config.language.max_seq_len
        )));
    }
    let mut failure = None;
    let mut encode = |s: &str| match tokenizer.encode(s) {
        Ok(mut ids) => {
            ids.truncate(budget);
            ids
        }
        Err(err) => {
            failure.get_or_insert(err);
            Vec::new()
        }
    };
    let items: Vec<(&str, Option<usize>)> = captions.iter().map(|c| (*c, None)).collect();
    let prompts = tokenize_prompts(template, &config.special, &items, &mut encode)?;
    if let Some(err) = failure {
        return Err(err);
    }
    let batch =
        AssembledBatch::new(&prompts, config.vision.image_tokens(), 0, &config.special, config.language.max_seq_len)?;
    EmbedderInput::new(&batch, None, device)
}

/// `[B, 3, S, S]` pixels in `[0, 1]` of images resized to the model's input size `S`.
pub fn image_tensor(config: &ModelConfig, images: &[&RgbImage], device: &Device) -> Tensor<4> {
    let size = config.vision.image_size;
    let pixels: Vec<f32> = images.iter().flat_map(|image| image_tensor_data(image, size)).collect();
    floats(pixels, [images.len(), 3, size, size], device)
}

/// Model inputs for images as targets.
pub fn target_input(
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    images: &[&RgbImage],
    device: &Device,
) -> Result<EmbedderInput> {
    if images.is_empty() {
        return Err(EgaError::Prompt("no images to embed".into()));
    }
    let mut failure = None;
    let mut encode = |s: &str| {
        tokenizer.encode(s).unwrap_or_else(|err| {
            failure.get_or_insert(err);
            Vec::new()
        })
    };
    let items: Vec<(&str, Option<usize>)> = (0..images.len()).map(|i| ("", Some(i))).collect();
    let prompts = tokenize_prompts(&config.prompts.target, &config.special, &items, &mut encode)?;
    if let Some(err) = failure {
        return Err(err);
    }
    let batch = AssembledBatch::new(
        &prompts,
        config.vision.image_tokens(),
        images.len(),
        &config.special,
        config.language.max_seq_len,
    )?;
    EmbedderInput::new(&batch, Some(image_tensor(config, images, device)), device)
}

/// Unit-norm embeddings `[B, d]` of captions, in batches of `batch_size` (no autodiff needed).
pub fn embed_captions(
    model: &Embedder,
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    captions: &[&str],
    batch_size: usize,
    device: &Device,
) -> Result<Tensor<2>> {
    let mut parts = Vec::new();
    for chunk in captions.chunks(batch_size.max(1)) {
        parts.push(model.embed(&query_input(config, tokenizer, chunk, device)?));
    }
    if parts.is_empty() {
        return Err(EgaError::Prompt("no captions to embed".into()));
    }
    Ok(Tensor::cat(parts, 0))
}

/// Unit-norm embeddings `[B, d]` of images, in batches of `batch_size`.
pub fn embed_images(
    model: &Embedder,
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    images: &[&RgbImage],
    batch_size: usize,
    device: &Device,
) -> Result<Tensor<2>> {
    let mut parts = Vec::new();
    for chunk in images.chunks(batch_size.max(1)) {
        parts.push(model.embed(&target_input(config, tokenizer, chunk, device)?));
    }
    if parts.is_empty() {
        return Err(EgaError::Prompt("no images to embed".into()));
    }
    Ok(Tensor::cat(parts, 0))
}
