//! Entry points for fuzzing the readers of untrusted files (issue 16): each takes arbitrary bytes,
//! runs the real loader on them and throws the result away. A loader must answer any input with
//! `Ok` or an [`crate::EgaError`]; a panic, a hang or an unbounded allocation is a bug.
//!
//! The `cargo fuzz` targets in `fuzz/fuzz_targets/` are one-line wrappers around these functions,
//! and the stable test `tests/integration/fuzz_smoke.rs` replays the committed seeds
//! (`fuzz/corpus/<target>/`) and deterministic mutations of them through the same functions.
//!
//! Inputs that stand for several files (a bundle, an index) are the files' contents joined by
//! [`PART_SEPARATOR`] ([`join_parts`] / [`split_parts`]).

use std::path::Path;

use crate::bundle;
use crate::data::jsonl::JsonlDataset;
use crate::data::Split;
use crate::index::{self, Index};
use crate::model::ModelConfig;
use crate::pretrained::gguf::{GgufCheckpoint, GgufFile};
use crate::pretrained::safetensors::{parse_hf_config, Rename, SafetensorsSource};
use crate::pretrained::TensorSource;
use crate::store::{self, StoredDtype};
use crate::tokenizer::Tokenizer;

/// Separates the files of a multi-file input.
pub const PART_SEPARATOR: &[u8] = b"\n--ega-fuzz-part--\n";

/// Names of the fuzz targets, as `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`.
pub const TARGETS: [&str; 5] = ["jsonl", "bundle", "safetensors", "index", "gguf"];

/// Runs the target called `name` (one of [`TARGETS`]) on `data`; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "jsonl" => jsonl(data),
        "bundle" => bundle(data),
        "safetensors" => safetensors(data),
        "index" => index(data),
        "gguf" => gguf(data),
        _ => return false,
    }
    true
}

/// Files joined into one input.
pub fn join_parts(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(PART_SEPARATOR)
}

/// The files of an input made by [`join_parts`] (exactly `n`: missing ones are empty, extra
/// separators stay inside the last part).
pub fn split_parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(n);
    let mut rest = data;
    while parts.len() + 1 < n {
        match rest.windows(PART_SEPARATOR.len()).position(|w| w == PART_SEPARATOR) {
            Some(at) => {
                parts.push(&rest[..at]);
                rest = &rest[at + PART_SEPARATOR.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts.resize(n, &[]);
    parts
}

/// Where the fuzzed JSONL file pretends to lie; an image "exists" unless its path says `missing`.
const JSONL_PATH: &str = "fuzz-data/pairs.jsonl";

/// A JSONL dataset file ([`JsonlDataset::from_bytes`], what `JsonlDataset::open` reads), with
/// and without `skip_bad`.
pub fn jsonl(data: &[u8]) {
    let exists = |path: &Path| !path.to_string_lossy().contains("missing");
    for skip_bad in [false, true] {
        if let Ok(dataset) = JsonlDataset::from_bytes(data, Path::new(JSONL_PATH), skip_bad, &exists) {
            let _ = dataset.texts(Split::Train);
            let _ = dataset.texts(Split::Test);
        }
    }
}

/// The model [`bundle`] seeds are built with and [`safetensors`] loads weights into: a `mini`
/// model small enough to build in well under a millisecond.
pub fn micro_config() -> ModelConfig {
    let mut config = ModelConfig::tiny();
    if let Some(mini) = config.mini_mut() {
        mini.vision.image_size = 8;
        mini.vision.patch_size = 4;
        mini.vision.width = 8;
        mini.vision.layers = 1;
        mini.vision.heads = 2;
        mini.vision.mlp_ratio = 2;
        mini.language.vocab_size = 300;
        mini.language.width = 8;
        mini.language.layers = 1;
        mini.language.heads = 2;
        mini.language.ffn_hidden = 16;
        mini.language.max_seq_len = 16;
    }
    config.preset = "micro".into();
    config
}

/// A bundle: `config.json`, `tokenizer.json`, `model.safetensors` and `metrics.json` joined by
/// [`PART_SEPARATOR`]. Runs [`bundle::parse_config`], [`Tokenizer::from_json`] (encoding and
/// decoding a caption with it), the Hugging Face config reader [`parse_hf_config`] on the config
/// part, and [`bundle::from_bytes`] on all four (which builds the model on the CPU when the
/// config, tokenizer and weights agree).
pub fn bundle(data: &[u8]) {
    let parts = split_parts(data, 4);
    let (config, tokenizer, weights, metrics) = (parts[0], parts[1], parts[2], parts[3]);
    let _ = bundle::parse_config(config, "fuzz/config.json");
    let _ = parse_hf_config(config, "fuzz/config.json");
    let Ok(tokenizer) = std::str::from_utf8(tokenizer) else { return };
    if let Ok(parsed) = Tokenizer::from_json(tokenizer) {
        let _ = parsed.check_fits(micro_config().vocab_size(), "fuzz/tokenizer.json");
        if let Ok(ids) = parsed.encode("a red circle on <image> a blue square") {
            let _ = parsed.decode(&ids);
        }
    }
    let device = crate::device::cpu().device;
    let _ = bundle::from_bytes(config, weights.to_vec(), tokenizer, Some(metrics), "fuzz", &device);
}

/// A safetensors file: the Hugging Face reader ([`SafetensorsSource`], every tensor taken), the
/// F16 ↔ F32 conversion of bundles ([`store::safetensors::convert`]) and the loading of a `mini`
/// model's weights ([`crate::weights::model_from_bytes`] into [`micro_config`]).
pub fn safetensors(data: &[u8]) {
    let files = vec![("fuzz.safetensors".to_string(), data.to_vec())];
    if let Ok(mut source) = SafetensorsSource::from_files("fuzz", files, Rename::Smolvlm) {
        for tensor in source.stored() {
            let _ = source.take(&tensor.name);
        }
    }
    let _ = store::safetensors::convert(data, StoredDtype::F16, "fuzz.safetensors");
    let _ = store::safetensors::convert(data, StoredDtype::F32, "fuzz.safetensors");
    let device = crate::device::cpu().device;
    let _ = crate::weights::model_from_bytes(&micro_config(), data.to_vec(), &device, "fuzz.safetensors");
}

/// An index: `index.bin` and `index.json` joined by [`PART_SEPARATOR`] ([`Index::from_bytes`],
/// then a search and the model check), and the first part alone as `index.bin`
/// ([`index::decode_bin`]).
pub fn index(data: &[u8]) {
    let parts = split_parts(data, 2);
    let _ = index::decode_bin(parts[0], "fuzz/index.bin");
    if let Ok(index) = Index::from_bytes(parts[0], parts[1], "fuzz") {
        let dim = index.meta.dim;
        let query: Vec<f32> = (0..dim).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect();
        let _ = index::search_host(&index.rows, dim, &query, 5);
        let _ = index.check_model(&index.meta.model_id, dim, "fuzz");
    }
}

/// A GGUF file: [`GgufFile::parse`] and every tensor dequantized, then as a Llama checkpoint
/// ([`GgufCheckpoint`]): its config, summary, special ids, embedded tokenizer (encoding a caption)
/// and every tensor taken.
pub fn gguf(data: &[u8]) {
    if let Ok(file) = GgufFile::parse(data.to_vec(), "fuzz.gguf") {
        for info in file.tensors() {
            let _ = file.dequantize(&info.name);
        }
    }
    let Ok(mut checkpoint) = GgufCheckpoint::from_bytes(data.to_vec(), "fuzz.gguf") else { return };
    let _ = checkpoint.llama_config();
    let _ = checkpoint.metadata_summary();
    let _ = checkpoint.special_token_ids();
    if let Ok(tokenizer) = checkpoint.tokenizer() {
        if let Ok(encoding) = tokenizer.encode("a red circle <|im_start|> on a blue square", false) {
            let _ = tokenizer.decode(encoding.get_ids(), true);
        }
    }
    for tensor in checkpoint.stored() {
        let _ = checkpoint.take(&tensor.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_split_back() {
        let joined = join_parts(&[b"a", b"", b"c"]);
        assert_eq!(split_parts(&joined, 3), vec![&b"a"[..], b"", b"c"]);
        assert_eq!(split_parts(b"only", 3), vec![&b"only"[..], b"", b""]);
        assert_eq!(split_parts(&joined, 2), vec![&b"a"[..], &joined[1 + PART_SEPARATOR.len()..]]);
    }

    #[test]
    fn the_micro_config_is_valid() {
        micro_config().validate().unwrap();
    }
}
