//! Turning captions and images into model inputs, and into embeddings.
//!
//! Queries are captions in the query template, targets are images in the target template
//! (`ModelConfig::prompts`). Everything here works on host data (strings, RGB images) and returns
//! device tensors, so the trainer, the evaluator, the indexer and the browser share it.

use burn::tensor::{Device, Tensor};

use crate::data::{image_tensor_data, RgbImage};
use crate::model::{Embedder, EmbedderInput, ModelConfig};
use crate::prompt::{encode_prompt, tokenize_prompts, AssembledBatch, TokenizedPrompt};
use crate::tensor_util::{floats, ints};
use crate::tokenizer::Tokenizer;
use crate::{EgaError, Result};

/// Tokenizes one prompt per item with `template`; ids of each text are cut to `text_budget` tokens.
fn tokenize(
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    template: &str,
    items: &[(&str, Option<usize>)],
    text_budget: usize,
) -> Result<Vec<TokenizedPrompt>> {
    let mut encode = |s: &str| {
        let mut ids = tokenizer.encode(s)?;
        ids.truncate(text_budget);
        Ok(ids)
    };
    tokenize_prompts(template, &config.special, items, &mut encode)
}

/// Lays tokenized prompts out for the model (padding, image-token slots, attention mask) and moves
/// them with their images to `device`.
pub fn prompts_input(
    config: &ModelConfig,
    prompts: &[TokenizedPrompt],
    images: Option<Tensor<4>>,
    device: &Device,
) -> Result<EmbedderInput> {
    let num_images = images.as_ref().map_or(0, |i| i.dims()[0]);
    let batch = AssembledBatch::new(prompts, &config.image_slot(), num_images, &config.special, config.max_seq_len())?;
    EmbedderInput::new(&batch, images, config.prompts.pooling, device)
}

/// How many caption tokens a query keeps: the model's context minus what the query template
/// itself takes. Longer captions are cut to this by [`query_input`].
pub fn query_token_budget(config: &ModelConfig, tokenizer: &Tokenizer) -> Result<usize> {
    let template = &config.prompts.query;
    let fixed = encode_prompt(template, "", false, &config.special, &mut |s| tokenizer.encode(s))?.len();
    let budget = config.max_seq_len().saturating_sub(fixed);
    if budget == 0 {
        return Err(EgaError::Prompt(format!(
            "the query template {template:?} alone fills the model's {} tokens",
            config.max_seq_len()
        )));
    }
    Ok(budget)
}

/// The query prompts of captions. Captions too long for the model are cut (keeping `<bos>`, the
/// instruction and `<eos>`), so that any text can be embedded.
pub fn query_prompts(config: &ModelConfig, tokenizer: &Tokenizer, captions: &[&str]) -> Result<Vec<TokenizedPrompt>> {
    let budget = query_token_budget(config, tokenizer)?;
    let items: Vec<(&str, Option<usize>)> = captions.iter().map(|c| (*c, None)).collect();
    tokenize(config, tokenizer, &config.prompts.query, &items, budget)
}

/// Model inputs for captions as queries (the prompts of [`query_prompts`]).
pub fn query_input(
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    captions: &[&str],
    device: &Device,
) -> Result<EmbedderInput> {
    prompts_input(config, &query_prompts(config, tokenizer, captions)?, None, device)
}

/// `[B, 3, S, S]` pixels in `[0, 1]` of images resized to the model's input size `S`.
pub fn image_tensor(config: &ModelConfig, images: &[&RgbImage], device: &Device) -> Tensor<4> {
    let size = config.image_size();
    let pixels: Vec<f32> = images.iter().flat_map(|image| image_tensor_data(image, size)).collect();
    floats(pixels, [images.len(), 3, size, size], device)
}

/// The target prompts of `count` images: prompt `i` refers to image `i`.
pub fn target_prompts(config: &ModelConfig, tokenizer: &Tokenizer, count: usize) -> Result<Vec<TokenizedPrompt>> {
    if count == 0 {
        return Err(EgaError::Prompt("no images to embed".into()));
    }
    let items: Vec<(&str, Option<usize>)> = (0..count).map(|i| ("", Some(i))).collect();
    tokenize(config, tokenizer, &config.prompts.target, &items, usize::MAX)
}

/// Model inputs for images as targets (the prompts of [`target_prompts`]).
pub fn target_input(
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    images: &[&RgbImage],
    device: &Device,
) -> Result<EmbedderInput> {
    let prompts = target_prompts(config, tokenizer, images.len())?;
    prompts_input(config, &prompts, Some(image_tensor(config, images, device)), device)
}

/// Model inputs of `prompts` alone, a slice of a batch's prompts: the images they refer to are
/// taken from the batch's `images` (rows in order of first reference) and renumbered, so each
/// part carries exactly its own images. Laying a batch out again in parts changes only the
/// padding, which the attention mask hides.
pub fn prompts_part_input(
    config: &ModelConfig,
    prompts: &[TokenizedPrompt],
    images: Option<&Tensor<4>>,
    device: &Device,
) -> Result<EmbedderInput> {
    let mut taken: Vec<usize> = Vec::new(); // batch image row of each of this part's images
    let part: Vec<TokenizedPrompt> = prompts
        .iter()
        .map(|prompt| {
            let image = prompt.image.map(|row| match taken.iter().position(|&t| t == row) {
                Some(k) => k,
                None => {
                    taken.push(row);
                    taken.len() - 1
                }
            });
            TokenizedPrompt { ids: prompt.ids.clone(), image }
        })
        .collect();
    let images = match images {
        Some(all) if !taken.is_empty() => {
            let available = all.dims()[0];
            if let Some(&row) = taken.iter().find(|&&row| row >= available) {
                return Err(EgaError::Prompt(format!("a prompt refers to image {row} but the batch has {available}")));
            }
            let rows = ints(taken.iter().map(|&r| r as i64).collect(), [taken.len()], &all.device());
            Some(all.clone().select(0, rows)) // [part images, C, H, W]
        }
        // No images referred to; or referred to but none given, which `prompts_input` reports.
        _ => None,
    };
    prompts_input(config, &part, images, device)
}

/// Embeds `items` `batch_size` at a time with `input` making each batch's model inputs.
fn embed_in_batches<T>(
    model: &Embedder,
    items: &[T],
    batch_size: usize,
    what: &str,
    mut input: impl FnMut(&[T]) -> Result<EmbedderInput>,
) -> Result<Tensor<2>> {
    if items.is_empty() {
        return Err(EgaError::Prompt(format!("no {what} to embed")));
    }
    let parts = items.chunks(batch_size.max(1)).map(|chunk| Ok(model.embed(&input(chunk)?))).collect::<Result<_>>()?;
    Ok(Tensor::cat(parts, 0))
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
    embed_in_batches(model, captions, batch_size, "captions", |chunk| query_input(config, tokenizer, chunk, device))
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
    embed_in_batches(model, images, batch_size, "images", |chunk| target_input(config, tokenizer, chunk, device))
}
