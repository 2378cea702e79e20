//! The text tokenizer: a byte-level BPE (Sennrich et al. 2016; GPT-2's byte-level variant)
//! trained with the `tokenizers` crate on the training captions, or loaded from a Hugging Face
//! `tokenizer.json`. Ids 0–3 are `<pad>`, `<bos>`, `<eos>`, `<image>` ([`SpecialTokens`]).
//!
//! One feature set everywhere (`unstable_wasm`: fancy-regex, no onig), so natively and in the
//! browser the same text gives the same ids. Byte-level means every string is encodable: there
//! is no unknown token. Text is NFKC-normalised and lower-cased.

use std::str::FromStr;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::{Lowercase, Sequence, NFKC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

use crate::prompt::SpecialTokens;
use crate::{EgaError, Result};

/// The special tokens, in id order.
pub const SPECIAL_TOKENS: [&str; 4] = ["<pad>", "<bos>", "<eos>", "<image>"];

/// A trained or loaded tokenizer, with the ids of the special tokens prompts use.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("vocab_size", &self.vocab_size()).finish()
    }
}

/// A Hugging Face `tokenizer.json` as a `tokenizers` tokenizer, a leading byte-order mark read
/// past. The text is checked to be well-formed JSON first: `tokenizers` 0.22 panics (an
/// `expect("Helper")` in its decoder deserializer) on a syntax error inside `"decoder"` instead of
/// returning it (found by the fuzz smoke test, issue 16).
pub fn parse_tokenizers_json(json: &str) -> Result<tokenizers::Tokenizer> {
    let json = json.strip_prefix('\u{feff}').unwrap_or(json);
    serde_json::from_str::<serde::de::IgnoredAny>(json)
        .map_err(|err| EgaError::Tokenizer(format!("not valid JSON: {err}")))?;
    tokenizers::Tokenizer::from_str(json).map_err(tokenizer_error)
}

fn tokenizer_error(err: impl std::fmt::Display) -> EgaError {
    EgaError::Tokenizer(err.to_string())
}

impl Tokenizer {
    /// Trains a BPE with at most `vocab_size` tokens (special tokens and the 256 byte tokens
    /// included) on `texts`.
    pub fn train<S: AsRef<str> + Send>(texts: impl Iterator<Item = S> + Send, vocab_size: usize) -> Result<Self> {
        let minimum = SPECIAL_TOKENS.len() + 256;
        if vocab_size < minimum {
            return Err(EgaError::config(
                "language.vocab_size",
                vocab_size,
                format!("a byte-level BPE needs at least {minimum} tokens"),
            ));
        }
        let mut inner = tokenizers::Tokenizer::new(BPE::default());
        inner.with_normalizer(Some(Sequence::new(vec![NFKC.into(), Lowercase.into()])));
        inner.with_pre_tokenizer(Some(ByteLevel::default()));
        inner.with_decoder(Some(ByteLevel::default()));
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(SPECIAL_TOKENS.iter().map(|t| AddedToken::from(*t, true)).collect())
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        inner.train(&mut trainer, texts).map_err(tokenizer_error)?;
        let tokenizer = Self { inner, special: SpecialTokens::default() };
        tokenizer.check_special_tokens()?;
        Ok(tokenizer)
    }

    /// Loads a Hugging Face `tokenizer.json` (its special tokens must have ids 0–3 in order).
    pub fn from_json(json: &str) -> Result<Self> {
        Self::from_json_with(json, SpecialTokens::default())
    }

    /// Loads a Hugging Face `tokenizer.json` whose special tokens have the ids `special` says
    /// (the default ids 0–3 must be this project's `<pad>`, `<bos>`, `<eos>`, `<image>`; other
    /// ids, a pretrained tokenizer's, must lie inside its vocabulary).
    pub fn from_json_with(json: &str, special: SpecialTokens) -> Result<Self> {
        // A byte-order mark (an editor on Windows) is not JSON: read past it.
        let inner = parse_tokenizers_json(json)?;
        Self::from_tokenizers(inner, special)
    }

    /// Wraps a `tokenizers` tokenizer (e.g. one built from a GGUF file) with its special ids.
    pub fn from_tokenizers(inner: tokenizers::Tokenizer, special: SpecialTokens) -> Result<Self> {
        let tokenizer = Self { inner, special };
        if special == SpecialTokens::default() {
            tokenizer.check_special_tokens()?;
        } else {
            let size = tokenizer.vocab_size();
            for id in tokenizer.special_ids() {
                if id as usize >= size {
                    return Err(EgaError::Tokenizer(format!(
                        "special token id {id} lies outside the tokenizer's {size} tokens"
                    )));
                }
            }
        }
        Ok(tokenizer)
    }

    /// The `tokenizers` tokenizer inside.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    fn special_ids(&self) -> Vec<u32> {
        let s = &self.special;
        [Some(s.pad), Some(s.bos), Some(s.eos), Some(s.image), s.image_around, s.image_global]
            .into_iter()
            .flatten()
            .collect()
    }

    /// The `tokenizer.json` text.
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(true).map_err(tokenizer_error)
    }

    fn check_special_tokens(&self) -> Result<()> {
        for (id, token) in SPECIAL_TOKENS.iter().enumerate() {
            match self.inner.token_to_id(token) {
                Some(found) if found as usize == id => {}
                found => {
                    return Err(EgaError::Tokenizer(format!(
                        "special token {token} must have id {id}, found {found:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The special-token ids (0–3 for this project's own tokenizers).
    pub fn special(&self) -> SpecialTokens {
        self.special
    }

    /// Number of tokens (the model's `vocab_size` must be at least this).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The largest id the tokenizer can produce (vocabulary and added tokens), `None` when empty.
    /// It can exceed [`Tokenizer::vocab_size`] when the ids have gaps; the model's embedding table
    /// must hold it.
    pub fn largest_id(&self) -> Option<u32> {
        self.inner.get_vocab(true).into_values().max()
    }

    /// Refuses a tokenizer with an id outside a model's `model_vocab`-row embedding table (the
    /// lookup would panic); `name` names the tokenizer file in the message.
    pub fn check_fits(&self, model_vocab: usize, name: &str) -> Result<()> {
        let (count, largest) = (self.vocab_size(), self.largest_id().unwrap_or(0) as usize);
        if count > model_vocab || largest >= model_vocab {
            return Err(EgaError::format(&name, format!(
                "the tokenizer has {count} tokens with ids up to {largest}, but the model's vocab_size is {model_vocab} (ids must be < {model_vocab}): a tokenizer of another model?"
            )));
        }
        Ok(())
    }

    /// Ids of plain text, without special tokens: a user who types `<image>` gets text, never the
    /// image placeholder.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(text, false).map_err(tokenizer_error)?;
        if self.special == SpecialTokens::default() {
            return Ok(encoding.get_ids().iter().copied().filter(|&id| id as usize >= SPECIAL_TOKENS.len()).collect());
        }
        let special = self.special_ids();
        Ok(encoding.get_ids().iter().copied().filter(|id| !special.contains(id)).collect())
    }

    /// Text of ids (special tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(tokenizer_error)
    }
}
