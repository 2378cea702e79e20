//! Prompt templates and the host-side assembly of a batch of token sequences into what the
//! embedder reads (text ids, where each position's embedding comes from, lengths, masks).
//!
//! A template is a string with at most one `{text}` and at most one `<image>`; the assembler adds
//! `<bos>` in front and `<eos>` at the end: `"<bos> {instruction} <image tokens> {text} <eos>"`.

use serde::{Deserialize, Serialize};

use crate::{EgaError, Result};

/// The placeholder for the caption in a template.
pub const TEXT_SLOT: &str = "{text}";
/// The placeholder for the image tokens in a template.
pub const IMAGE_SLOT: &str = "<image>";

/// Ids of the special tokens (the tokenizer reserves them first, in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialTokens {
    /// `<pad>`: fills rows shorter than the batch's longest.
    pub pad: u32,
    /// `<bos>`: starts every prompt.
    pub bos: u32,
    /// `<eos>`: ends every prompt; its hidden state is the embedding.
    pub eos: u32,
    /// `<image>`: where the image tokens are spliced in.
    pub image: u32,
    /// `smolvlm`: the token written on both sides of an image (`<fake_token_around_image>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_around: Option<u32>,
    /// `smolvlm`: the token that says the image is the global (whole) one (`<global-img>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_global: Option<u32>,
}

impl Default for SpecialTokens {
    fn default() -> Self {
        Self { pad: 0, bos: 1, eos: 2, image: 3, image_around: None, image_global: None }
    }
}

/// How a prompt's hidden states become its embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The hidden state at `<eos>`, the prompt's last token (what a decoder trained as an
    /// embedder reads).
    #[default]
    Last,
    /// The mean of the hidden states of every real position, `<bos>` to `<eos>` (padding left
    /// out): a frozen decoder's end-of-turn state is a poor sentence embedding, its mean much
    /// less so (README, "What the text side knows").
    Mean,
}

impl Pooling {
    /// Whether this is the default, [`Pooling::Last`] (left out of saved configs, so models saved
    /// before pooling could be chosen keep their ids).
    pub fn is_last(&self) -> bool {
        *self == Pooling::Last
    }
}

impl std::str::FromStr for Pooling {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "last" => Ok(Pooling::Last),
            "mean" => Ok(Pooling::Mean),
            other => Err(format!("{other:?} is not a pooling: last or mean")),
        }
    }
}

impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pooling::Last => "last",
            Pooling::Mean => "mean",
        })
    }
}

/// The instructions that turn a caption into a query and an image into a target
/// (VLM2Vec / QQMM style: one language model, two instructions), and how the embedding is read
/// from the prompt's hidden states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptConfig {
    /// Template of a text query.
    pub query: String,
    /// Template of an image target.
    pub target: String,
    /// How the hidden states of both become the embedding.
    #[serde(default, skip_serializing_if = "Pooling::is_last")]
    pub pooling: Pooling,
}

impl Default for PromptConfig {
    fn default() -> Self {
        Self {
            query: "Find an image that matches the caption: {text}".to_string(),
            target: "<image> Summarize the image in one word:".to_string(),
            pooling: Pooling::Last,
        }
    }
}

impl PromptConfig {
    /// Checks both templates.
    pub fn validate(&self) -> Result<()> {
        for (name, template) in [("query", &self.query), ("target", &self.target)] {
            for slot in [TEXT_SLOT, IMAGE_SLOT] {
                if template.matches(slot).count() > 1 {
                    return Err(EgaError::Prompt(format!("the {name} template {template:?} has more than one {slot}")));
                }
            }
        }
        Ok(())
    }
}

/// Longest text, in characters, that is tokenized: 64 characters per position of the longest
/// context a model here runs (8192). Prompts are cut to the context after tokenizing anyway; a
/// 100 MB caption was tokenized whole first (5 GB, an abort; issue 16).
pub const MAX_TEXT_CHARS: usize = 64 * 8192;

/// `text`'s first [`MAX_TEXT_CHARS`] characters.
pub fn cut_text(text: &str) -> &str {
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Tokenizes `template` with `text` in its `{text}` slot: `<bos> … <eos>`, with the `<image>`
/// id where the template says. `encode` turns plain text into ids (the tokenizer); its errors
/// are passed on.
///
/// `has_image` must agree with the template: an image without an `<image>` slot, or a slot
/// without an image, is an error.
pub fn encode_prompt(
    template: &str,
    text: &str,
    has_image: bool,
    special: &SpecialTokens,
    encode: &mut dyn FnMut(&str) -> Result<Vec<u32>>,
) -> Result<Vec<u32>> {
    let template_has_image = template.contains(IMAGE_SLOT);
    if template_has_image != has_image {
        return Err(EgaError::Prompt(if has_image {
            format!("an image was given but the template {template:?} has no {IMAGE_SLOT} slot")
        } else {
            format!("the template {template:?} has an {IMAGE_SLOT} slot but no image was given")
        }));
    }
    let text = cut_text(text);
    let mut ids = vec![special.bos];
    for (index, image_piece) in template.split(IMAGE_SLOT).enumerate() {
        if index > 0 {
            ids.push(special.image);
        }
        for (slot, text_piece) in image_piece.split(TEXT_SLOT).enumerate() {
            let pieces = if slot > 0 { [text, text_piece] } else { ["", text_piece] };
            for piece in pieces.map(str::trim).into_iter().filter(|p| !p.is_empty()) {
                ids.extend(encode(piece)?);
            }
        }
    }
    ids.push(special.eos);
    Ok(ids)
}

/// One row of a batch: token ids (with the `<image>` id at most once) and, if it has one,
/// the index of its image in the batch's image tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedPrompt {
    /// Token ids, `<bos> … <eos>`.
    pub ids: Vec<u32>,
    /// Row of the image tensor spliced in at the `<image>` id.
    pub image: Option<usize>,
}

/// A batch laid out for the embedder (host vectors; the embedder makes tensors of them).
///
/// The language model's input at row `b`, position `p` is row `source[b·L + p]` of
/// `concat(text_embeddings.reshape([B·Lt, D]), image_tokens.reshape([Bi·K, D]))`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembledBatch {
    /// Rows `B`.
    pub batch: usize,
    /// Text ids without image placeholders, `[B, Lt]`, padded with `<pad>` (every row has at least
    /// one `<pad>`, which padding positions point at).
    pub text_ids: Vec<i64>,
    /// `Lt`.
    pub text_len: usize,
    /// Source row of every position, `[B, L]` (see the type's docs).
    pub source: Vec<i64>,
    /// `L`: the longest row after splicing `K` image tokens.
    pub seq_len: usize,
    /// Real length of each row (its last real position is the `<eos>` that is pooled).
    pub lengths: Vec<usize>,
    /// Number of images `Bi` the batch refers to.
    pub num_images: usize,
}

impl AssembledBatch {
    /// Lays out `prompts` for `num_images` images, each `<image>` id becoming `slot` (the slot's
    /// text ids, then its `K` image tokens, then its closing text ids). `max_len` bounds the
    /// spliced length (the language model's `max_seq_len`).
    pub fn new(
        prompts: &[TokenizedPrompt],
        slot: &ImageSlot,
        num_images: usize,
        special: &SpecialTokens,
        max_len: usize,
    ) -> Result<Self> {
        if prompts.is_empty() {
            return Err(EgaError::Prompt("empty batch".into()));
        }
        let mut lengths = Vec::with_capacity(prompts.len());
        let mut text_rows = Vec::with_capacity(prompts.len());
        for (row, prompt) in prompts.iter().enumerate() {
            let placeholders = prompt.ids.iter().filter(|&&id| id == special.image).count();
            match (placeholders, prompt.image) {
                (0, None) => {}
                (1, Some(image)) if image < num_images => {}
                (1, Some(image)) => {
                    return Err(EgaError::Prompt(format!(
                        "row {row} refers to image {image} but the batch has {num_images}"
                    )))
                }
                (count, image) => {
                    return Err(EgaError::Prompt(format!(
                        "row {row} has {count} <image> ids and {} image",
                        if image.is_some() { "an" } else { "no" }
                    )))
                }
            }
            if prompt.ids.is_empty() {
                return Err(EgaError::Prompt(format!("row {row} has no tokens")));
            }
            let mut text = Vec::with_capacity(prompt.ids.len() + slot.before.len() + slot.after.len());
            for &id in &prompt.ids {
                if id == special.image {
                    text.extend(slot.before.iter().chain(&slot.after));
                } else {
                    text.push(id);
                }
            }
            let length = text.len() + placeholders * slot.tokens;
            if length > max_len {
                return Err(EgaError::Prompt(format!(
                    "row {row} is {length} tokens long (image tokens included); the model takes at most {max_len}"
                )));
            }
            lengths.push(length);
            text_rows.push(text);
        }
        let batch = prompts.len();
        let text_len = text_rows.iter().map(Vec::len).max().unwrap_or(0) + 1;
        let seq_len = lengths.iter().copied().max().unwrap_or(1);
        let mut text_ids = vec![special.pad as i64; batch * text_len];
        let mut source = Vec::with_capacity(batch * seq_len);
        let image_tokens = slot.tokens;
        for (row, prompt) in prompts.iter().enumerate() {
            let mut text_position = 0;
            let mut push_text = |id: u32, source: &mut Vec<i64>| {
                text_ids[row * text_len + text_position] = id as i64;
                source.push((row * text_len + text_position) as i64);
                text_position += 1;
            };
            for &id in &prompt.ids {
                if id == special.image {
                    slot.before.iter().for_each(|&id| push_text(id, &mut source));
                    let image = prompt.image.unwrap_or(0);
                    let first = batch * text_len + image * image_tokens;
                    source.extend((first..first + image_tokens).map(|s| s as i64));
                    slot.after.iter().for_each(|&id| push_text(id, &mut source));
                } else {
                    push_text(id, &mut source);
                }
            }
            let pad_slot = (row * text_len + text_len - 1) as i64;
            source.extend(std::iter::repeat_n(pad_slot, seq_len - lengths[row]));
        }
        Ok(Self { batch, text_ids, text_len, source, seq_len, lengths, num_images })
    }

    /// Additive attention bias `[B, 1, L, L]`, row-major: 0 where query `i` may attend to key `j`
    /// (`j <= i` and `j` is a real token), `mask_value` elsewhere.
    pub fn attention_bias(&self, mask_value: f32) -> Vec<f32> {
        let l = self.seq_len;
        let mut bias = vec![mask_value; self.batch * l * l];
        for (row, &length) in self.lengths.iter().enumerate() {
            for i in 0..l {
                // Every query attends to at least position 0, so no softmax row is empty.
                for j in 0..=i.min(length - 1) {
                    bias[(row * l + i) * l + j] = 0.0;
                }
            }
        }
        bias
    }
}

/// Tokenizes one prompt per item with `template`: `(text, image row)` pairs (`text` fills the
/// `{text}` slot, the image row fills `<image>`).
pub fn tokenize_prompts(
    template: &str,
    special: &SpecialTokens,
    items: &[(&str, Option<usize>)],
    encode: &mut dyn FnMut(&str) -> Result<Vec<u32>>,
) -> Result<Vec<TokenizedPrompt>> {
    items
        .iter()
        .map(|&(text, image)| {
            Ok(TokenizedPrompt { ids: encode_prompt(template, text, image.is_some(), special, encode)?, image })
        })
        .collect()
}

/// How one image is laid out in a prompt (a model config's `image_slot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSlot {
    /// Text ids before the image tokens.
    pub before: Vec<u32>,
    /// Image tokens `K`.
    pub tokens: usize,
    /// Text ids after the image tokens.
    pub after: Vec<u32>,
}

impl ImageSlot {
    /// Positions one image takes in a prompt.
    pub fn len(&self) -> usize {
        self.before.len() + self.tokens + self.after.len()
    }

    /// Whether the slot takes no positions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
