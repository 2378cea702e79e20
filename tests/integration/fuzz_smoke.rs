//! The CI smoke run of the fuzz targets (issue 16): every committed seed of `fuzz/corpus/<target>/`
//! and a few hundred deterministic mutations of each (bit flips, interesting numbers, truncations,
//! insertions, deletions, splices with another seed; a seeded RNG) go through the same
//! `ega_core::fuzzing` functions the `cargo +nightly fuzz` targets call, each under
//! `catch_unwind`, so a panic names its target, seed and mutation and leaves the input in
//! `target/fuzz-smoke-failures/`. The long runs are `cargo +nightly fuzz run <target>` (README,
//! "Reliability").
//!
//! The seeds are written by `EGA_WRITE_FUZZ_CORPUS=1 cargo test -p ega-tests fuzz_smoke::write_seed_corpus`
//! from real small inputs made by ega-core itself (a saved micro bundle, an encoded index, …).

use std::path::{Path, PathBuf};

use ega_core::fuzzing::{self, join_parts, TARGETS};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

/// The committed seeds of `target`, by file name (sorted).
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir().join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}: the fuzz seed corpus is missing", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// Numbers that break length and offset arithmetic.
const INTERESTING: [u64; 10] = [0, 1, 0x7f, 0xff, 0xffff, 0x8000_0000, 0xffff_ffff, 1 << 32, 1 << 63, u64::MAX];

/// One random edit of `data` (which may be empty); `other` is another seed to splice with.
/// Returns what it did, for the failure message.
fn mutate_once(data: &mut Vec<u8>, other: &[u8], rng: &mut StdRng) -> String {
    let len = data.len();
    let at = if len == 0 { 0 } else { rng.random_range(0..len) };
    match rng.random_range(0..9) {
        0 if len > 0 => {
            let bit = rng.random_range(0..8);
            data[at] ^= 1 << bit;
            format!("flip bit {bit} of byte {at}")
        }
        1 if len > 0 => {
            let value = INTERESTING[rng.random_range(0..INTERESTING.len())] as u8;
            data[at] = value;
            format!("byte {at} = {value}")
        }
        2 if len >= 8 => {
            let at = rng.random_range(0..=len - 8);
            let value = INTERESTING[rng.random_range(0..INTERESTING.len())];
            data[at..at + 8].copy_from_slice(&value.to_le_bytes());
            format!("u64 at {at} = {value}")
        }
        3 => {
            data.truncate(at);
            format!("truncate to {at}")
        }
        4 => {
            let n = rng.random_range(1..=16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            data.splice(at..at, bytes);
            format!("insert {n} random bytes at {at}")
        }
        5 if len > 0 => {
            let end = (at + rng.random_range(1..=64)).min(len);
            data.drain(at..end);
            format!("delete {at}..{end}")
        }
        6 if !other.is_empty() => {
            let from = rng.random_range(0..other.len());
            data.truncate(at);
            data.extend_from_slice(&other[from..]);
            format!("splice: first {at} bytes, then the other seed from {from}")
        }
        7 if len > 0 => {
            // A decimal number where JSON expects a small one.
            let digits = ["99999999999999999999", "4294967296", "-1", "1e308", "0", "18446744073709551615"];
            let pick = digits[rng.random_range(0..digits.len())];
            data.splice(at..at, pick.bytes());
            format!("insert {pick} at {at}")
        }
        _ if len > 0 => {
            let end = (at + rng.random_range(1..=32)).min(len);
            let chunk = data[at..end].to_vec();
            data.splice(end..end, chunk);
            format!("duplicate {at}..{end}")
        }
        _ => {
            data.push(rng.random());
            "append a byte".into()
        }
    }
}

fn run_caught(target: &str, what: &str, data: &[u8]) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| assert!(fuzzing::run(target, data))));
    if result.is_err() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-smoke-failures");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{target}-{}", ega_core::store::fnv_hex(&[data])));
        std::fs::write(&file, data).unwrap();
        panic!(
            "fuzz target {target} panicked on {what}; the input is in {} (replay: cargo +nightly fuzz run {target} {})",
            file.display(),
            file.display()
        );
    }
}

/// Mutants per seed: about 20 000 inputs in all, a few seconds.
const MUTANTS_PER_SEED: usize = 1000;

#[test]
fn fuzz_seeds_and_mutations_do_not_panic() {
    let start = std::time::Instant::now();
    let mut total = 0;
    for target in TARGETS {
        let seeds = seeds(target);
        assert!(!seeds.is_empty(), "fuzz/corpus/{target}/ holds no seeds");
        for (index, (name, seed)) in seeds.iter().enumerate() {
            run_caught(target, &format!("seed {name}"), seed);
            let other = &seeds[(index + 1) % seeds.len()].1;
            let mut rng = StdRng::seed_from_u64(0x16_f022 + index as u64 * 1000 + target.len() as u64);
            for mutant in 0..MUTANTS_PER_SEED {
                let mut data = seed.clone();
                let edits: Vec<String> =
                    (0..rng.random_range(1..=4)).map(|_| mutate_once(&mut data, other, &mut rng)).collect();
                run_caught(target, &format!("mutant {mutant} of seed {name} ({})", edits.join("; ")), &data);
                total += 1;
            }
        }
    }
    eprintln!("fuzz smoke: {total} mutants of the committed seeds in {:.1} s", start.elapsed().as_secs_f64());
}

// ---- The seed corpus (written on request, committed) ----

fn write_seeds(target: &str, seeds: &[(&str, Vec<u8>)]) {
    let dir = corpus_dir().join(target);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn jsonl_lines(lines: &[serde_json::Value]) -> Vec<u8> {
    lines.iter().map(|l| l.to_string() + "\n").collect::<String>().into_bytes()
}

fn jsonl_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use serde_json::json;
    let basic = jsonl_lines(&[
        json!({"image": "a.png", "text": "a red circle"}),
        json!({"image": "photos/b.jpg", "text": "a blue square", "neg_text": ["a red square"], "neg_image": ["c.png"]}),
        json!({"image": "/abs/d.png", "text": "a green triangle", "neg_text": "a green circle"}),
    ]);
    let mmeb = jsonl_lines(&[
        json!({"qry_image_path": "img/1.png", "pos_text": "<|image_1|> a cat on a sofa", "neg_image_path": ["img/2.png"]}),
        json!({"qry": "<|image_1|> find the dog", "pos_image_path": "img/3.png", "neg_text": ["a wolf", ""]}),
    ]);
    let mut splits = b"\xEF\xBB\xBF".to_vec();
    for line in [
        json!({"image": "a.png", "text": "first", "split": "train", "id": 7}),
        json!({"image": "b.png", "text": "second", "split": "test", "id": "b"}),
        json!({"image": "c.png", "text": "third", "split": null, "id": null}),
    ] {
        splits.extend(line.to_string().bytes());
        splits.extend(b"\r\n");
    }
    let mut bad = jsonl_lines(&[
        json!({"image": "a.png", "text": "good"}),
        json!({"imgae": "a.png", "text": "misspelt key"}),
        json!({"image": "missing.png", "text": "no such image"}),
        json!(["not", "an", "object"]),
        json!({"image": "a.png", "text": 5}),
        json!({"image": ["a.png", "b.png"], "text": "two images"}),
        json!({"image": "a.png", "text": "<|image_1|>"}),
        json!({"image": "a.png", "text": "bad split", "split": "val"}),
        json!({"image": "a.png", "text": "bad id", "id": [1]}),
    ]);
    bad.extend(b"\n   \n{\"image\": \"a.png\", \"text\": \"caf\xC3\n{not json\n");
    let held_out: Vec<serde_json::Value> =
        (0..41).map(|i| json!({"image": format!("{i}.png"), "text": format!("shape {i}")})).collect();
    vec![
        ("basic.jsonl", basic),
        ("mmeb.jsonl", mmeb),
        ("splits_bom_crlf.jsonl", splits),
        ("bad_lines.jsonl", bad),
        ("held_out.jsonl", jsonl_lines(&held_out)),
    ]
}

/// A micro bundle's four files, as `native train` would save them, in `dtype`.
fn micro_bundle(dtype: ega_core::store::StoredDtype) -> [Vec<u8>; 4] {
    let config = fuzzing::micro_config();
    let device = burn::tensor::Device::flex();
    let model = ega_core::model::Embedder::new(&config, 5, &device).unwrap();
    let corpus = ["a red circle", "a blue square", "a green triangle on a white background"];
    let tokenizer = ega_core::tokenizer::Tokenizer::train(corpus.iter(), config.vocab_size()).unwrap();
    let dir = std::env::temp_dir().join(format!("ega-fuzz-seed-bundle-{dtype:?}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let metrics = serde_json::json!({"recall_at_1": 0.5});
    ega_core::bundle::save(&dir, &model, &config, &tokenizer, &Default::default(), "shapes", 3, &metrics, dtype)
        .unwrap();
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let files = [read("config.json"), read("tokenizer.json"), read("model.safetensors"), read("metrics.json")];
    // The seed is a real bundle: it loads.
    ega_core::bundle::load(&dir, &device).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    files
}

fn bundle_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use ega_core::store::StoredDtype;
    let f32_bundle = micro_bundle(StoredDtype::F32);
    let f16_bundle = micro_bundle(StoredDtype::F16);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/smolvlm-tiny");
    let hf_config = std::fs::read(fixture.join("config.json")).unwrap();
    let hf_tokenizer = std::fs::read(fixture.join("tokenizer.json")).unwrap();
    let llama = serde_json::json!({
        "model_type": "llama", "vocab_size": 300, "hidden_size": 16, "intermediate_size": 32,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64, "tie_word_embeddings": true
    });
    let parts = |files: &[Vec<u8>]| join_parts(&files.iter().map(Vec::as_slice).collect::<Vec<_>>());
    vec![
        ("micro_f32.bundle", parts(&f32_bundle)),
        ("micro_f16.bundle", parts(&f16_bundle)),
        ("hf_smolvlm_config_and_tokenizer.bundle", parts(&[hf_config, hf_tokenizer])),
        ("hf_llama_config.bundle", parts(&[serde_json::to_vec_pretty(&llama).unwrap(), f32_bundle[1].clone()])),
    ]
}

/// A safetensors file whose tensors are given as (name, dtype, shape, raw bytes).
fn safetensors_file(tensors: &[(&str, &str, &[usize], Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut header = serde_json::to_vec(&header).unwrap();
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    out.extend(data);
    out
}

fn safetensors_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use ega_core::store::StoredDtype;
    let [_, _, f32_weights, _] = micro_bundle(StoredDtype::F32);
    let f16_weights = ega_core::store::safetensors::convert(&f32_weights, StoredDtype::F16, "seed").unwrap();
    let values: Vec<f32> = (0..24).map(|i| i as f32 * 0.125 - 1.0).collect();
    let f32_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let f16_bytes: Vec<u8> = values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
    let bf16_bytes: Vec<u8> = values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
    let hf = safetensors_file(&[
        ("model.text_model.norm.weight", "F32", &[24], f32_bytes.clone()),
        ("model.text_model.layers.0.self_attn.q_proj.weight", "F16", &[4, 6], f16_bytes),
        ("model.vision_model.embeddings.patch_embedding.bias", "BF16", &[2, 3, 4], bf16_bytes),
        ("model.text_model.embed_tokens.weight", "I64", &[3], vec![1; 24]),
        ("empty", "F32", &[0, 5], vec![]),
    ]);
    vec![("micro_f32.safetensors", f32_weights), ("micro_f16.safetensors", f16_weights), ("hf_dtypes.safetensors", hf)]
}

fn index_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use ega_core::index::{encode_bin, IndexEntry, IndexMeta, INDEX_FORMAT_VERSION};
    use ega_core::store::StoredDtype;
    let (count, dim) = (3, 4);
    let rows: Vec<f32> = (0..count * dim).map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0).collect();
    let entry = |i: usize| IndexEntry {
        id: format!("img{i}.png"),
        caption: (i != 1).then(|| format!("shape {i}")),
        image: Some(format!("/photos/img{i}.png")),
        thumbnail: (i != 2).then(|| format!("thumbs/{i}.png")),
    };
    let mut out = Vec::new();
    for (name, dtype, split) in [
        ("f32.index", StoredDtype::F32, None),
        ("f16_test_split.index", StoredDtype::F16, Some(ega_core::data::Split::Test)),
    ] {
        let bin = encode_bin(&rows, count, dim, dtype, "0123456789abcdef").unwrap();
        let meta = IndexMeta {
            format_version: INDEX_FORMAT_VERSION,
            model_id: "0123456789abcdef".into(),
            model: "runs/micro".into(),
            source: "jsonl:pairs.jsonl".into(),
            split,
            count,
            dim,
            dtype,
            entries: (0..count).map(entry).collect(),
        };
        let json = serde_json::to_vec_pretty(&meta).unwrap();
        // The seed is a real index: it loads.
        ega_core::index::Index::from_bytes(&bin, &json, "seed").unwrap();
        out.push((name, join_parts(&[&bin, &json])));
    }
    out.push(("bin_only.index", encode_bin(&rows[..dim], 1, dim, StoredDtype::F32, "fedcba9876543210").unwrap()));
    out
}

/// A GGUF writer (version 3, alignment 32) for the seeds.
#[derive(Default)]
struct Gguf {
    metadata: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

fn gguf_string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend(s.bytes());
    out
}

impl Gguf {
    fn string(&mut self, key: &str, value: &str) {
        self.metadata.push((key.into(), 8, gguf_string(value)));
    }
    fn u32(&mut self, key: &str, value: u32) {
        self.metadata.push((key.into(), 4, value.to_le_bytes().to_vec()));
    }
    fn f32(&mut self, key: &str, value: f32) {
        self.metadata.push((key.into(), 6, value.to_le_bytes().to_vec()));
    }
    fn array(&mut self, key: &str, item_kind: u32, items: Vec<Vec<u8>>) {
        let mut bytes = item_kind.to_le_bytes().to_vec();
        bytes.extend((items.len() as u64).to_le_bytes());
        bytes.extend(items.concat());
        self.metadata.push((key.into(), 9, bytes));
    }
    fn tensor(&mut self, name: &str, dims: &[u64], kind: u32, data: Vec<u8>) {
        self.tensors.push((name.into(), dims.to_vec(), kind, data));
    }
    fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.metadata.len() as u64).to_le_bytes());
        for (key, kind, value) in &self.metadata {
            out.extend(gguf_string(key));
            out.extend(kind.to_le_bytes());
            out.extend(value);
        }
        let mut offset = 0u64;
        for (name, dims, kind, data) in &self.tensors {
            out.extend(gguf_string(name));
            out.extend((dims.len() as u32).to_le_bytes());
            dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend(kind.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset += (data.len() as u64).div_ceil(32) * 32;
        }
        // The data section starts at the next multiple of the alignment; each tensor is padded to it.
        out.resize(out.len().div_ceil(32) * 32, 0);
        for (_, _, _, data) in &self.tensors {
            out.extend(data);
            out.resize(out.len().div_ceil(32) * 32, 0);
        }
        out
    }
}

/// `blocks` quantized blocks of `block_bytes` bytes, each starting with `scales` f16 scales.
fn quantized(blocks: usize, block_bytes: usize, scales: usize, rng: &mut StdRng) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks * block_bytes);
    for _ in 0..blocks {
        for s in 0..scales {
            out.extend(half::f16::from_f32(0.01 * (s + 1) as f32).to_le_bytes());
        }
        out.extend((0..block_bytes - 2 * scales).map(|_| rng.random::<u8>()));
    }
    out
}

/// A one-layer Llama decoder (width 32, 2 query heads and 1 key-value head of 16, FFN 64) with a
/// GPT-2 style tokenizer of 12 tokens, its tensors in each type the reader dequantizes.
fn llama_gguf(pre: &str, rng: &mut StdRng) -> Vec<u8> {
    let tokens = ["<|endoftext|>", "<|im_start|>", "a", "b", "c", "Ġ", "ab", "Ġa", "Ġab", "x", "ĠÿĠ", "<user>"];
    let types = [3i32, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4];
    let (width, ffn, vocab) = (32u64, 64u64, tokens.len() as u64);
    let mut g = Gguf::default();
    g.string("general.architecture", "llama");
    g.string("general.name", "micro llama");
    g.u32("general.alignment", 32);
    g.u32("general.file_type", 7);
    g.u32("llama.context_length", 64);
    g.u32("llama.embedding_length", width as u32);
    g.u32("llama.feed_forward_length", ffn as u32);
    g.u32("llama.block_count", 1);
    g.u32("llama.attention.head_count", 2);
    g.u32("llama.attention.head_count_kv", 1);
    g.u32("llama.rope.dimension_count", 16);
    g.f32("llama.attention.layer_norm_rms_epsilon", 1e-5);
    g.f32("llama.rope.freq_base", 10_000.0);
    g.string("tokenizer.ggml.model", "gpt2");
    g.string("tokenizer.ggml.pre", pre);
    g.array("tokenizer.ggml.tokens", 8, tokens.iter().map(|t| gguf_string(t)).collect());
    g.array("tokenizer.ggml.token_type", 5, types.iter().map(|t| t.to_le_bytes().to_vec()).collect());
    g.array("tokenizer.ggml.merges", 8, ["a b", "Ġ a", "Ġa b"].iter().map(|m| gguf_string(m)).collect());
    g.u32("tokenizer.ggml.bos_token_id", 1);
    g.u32("tokenizer.ggml.eos_token_id", 0);
    let f32s = |n: u64, rng: &mut StdRng| -> Vec<u8> {
        (0..n).flat_map(|_| (rng.random::<f32>() - 0.5).to_le_bytes()).collect()
    };
    let f16s = |n: u64, rng: &mut StdRng| -> Vec<u8> {
        (0..n).flat_map(|_| half::f16::from_f32(rng.random::<f32>() - 0.5).to_le_bytes()).collect()
    };
    let bf16s = |n: u64, rng: &mut StdRng| -> Vec<u8> {
        (0..n).flat_map(|_| half::bf16::from_f32(rng.random::<f32>() - 0.5).to_le_bytes()).collect()
    };
    let blocks = |inner: u64, outer: u64| (inner * outer / 32) as usize;
    g.tensor("token_embd.weight", &[width, vocab], 8, quantized(blocks(width, vocab), 34, 1, rng)); // Q8_0
    g.tensor("output_norm.weight", &[width], 0, f32s(width, rng));
    g.tensor("blk.0.attn_norm.weight", &[width], 0, f32s(width, rng));
    g.tensor("blk.0.ffn_norm.weight", &[width], 1, f16s(width, rng));
    g.tensor("blk.0.attn_q.weight", &[width, width], 2, quantized(blocks(width, width), 18, 1, rng)); // Q4_0
    g.tensor("blk.0.attn_k.weight", &[width, 16], 30, bf16s(width * 16, rng));
    g.tensor("blk.0.attn_v.weight", &[width, 16], 3, quantized(blocks(width, 16), 20, 2, rng)); // Q4_1
    g.tensor("blk.0.attn_output.weight", &[width, width], 6, quantized(blocks(width, width), 22, 1, rng)); // Q5_0
    g.tensor("blk.0.ffn_gate.weight", &[width, ffn], 7, quantized(blocks(width, ffn), 24, 2, rng)); // Q5_1
    g.tensor("blk.0.ffn_up.weight", &[width, ffn], 8, quantized(blocks(width, ffn), 34, 1, rng));
    g.tensor("blk.0.ffn_down.weight", &[ffn, width], 2, quantized(blocks(ffn, width), 18, 1, rng));
    g.bytes()
}

fn gguf_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut rng = StdRng::seed_from_u64(16);
    let smollm = llama_gguf("smollm", &mut rng);
    let llama3 = llama_gguf("llama-bpe", &mut rng);
    // The seeds are real checkpoints: config, tokenizer and every tensor read.
    for bytes in [&smollm, &llama3] {
        let mut checkpoint = ega_core::pretrained::gguf::GgufCheckpoint::from_bytes(bytes.clone(), "seed").unwrap();
        checkpoint.llama_config().unwrap();
        checkpoint.tokenizer().unwrap();
        assert_eq!(ega_core::pretrained::gguf::take_all(&mut checkpoint).unwrap().len(), 11);
    }
    let mut header_only = Gguf::default();
    header_only.string("general.architecture", "llama");
    header_only.array(
        "nested",
        9,
        vec![[4u32.to_le_bytes().to_vec(), 2u64.to_le_bytes().to_vec(), vec![1, 0, 0, 0, 2, 0, 0, 0]].concat()],
    );
    header_only.metadata.push(("flag".into(), 7, vec![1]));
    header_only.metadata.push(("big".into(), 10, u64::MAX.to_le_bytes().to_vec()));
    header_only.metadata.push(("neg".into(), 11, (-3i64).to_le_bytes().to_vec()));
    header_only.metadata.push(("ratio".into(), 12, 0.5f64.to_le_bytes().to_vec()));
    vec![("smollm_pre.gguf", smollm), ("llama3_pre.gguf", llama3), ("metadata_types.gguf", header_only.bytes())]
}

/// Writes `fuzz/corpus/` when `EGA_WRITE_FUZZ_CORPUS=1` (otherwise does nothing).
#[test]
fn write_seed_corpus() {
    if std::env::var("EGA_WRITE_FUZZ_CORPUS").as_deref() != Ok("1") {
        return;
    }
    write_seeds("jsonl", &jsonl_seeds());
    write_seeds("bundle", &bundle_seeds());
    write_seeds("safetensors", &safetensors_seeds());
    write_seeds("index", &index_seeds());
    write_seeds("gguf", &gguf_seeds());
}

/// Found by `cargo +nightly fuzz run -a gguf` from the seeds: two tensors of a type without a
/// known size (not checked against the file) with 2^63 values each overflowed the parameter
/// count of `metadata_summary` (`native info`). It saturates now.
#[test]
fn a_gguf_parameter_count_that_overflows_saturates() {
    let mut g = Gguf::default();
    g.string("general.architecture", "llama");
    g.u32("llama.attention.head_count", 2);
    g.tensor("a", &[1 << 63], 16, vec![]); // IQ2_XXS: no block size known here
    g.tensor("b", &[1 << 63], 16, vec![]);
    let checkpoint = ega_core::pretrained::gguf::GgufCheckpoint::from_bytes(g.bytes(), "big.gguf").unwrap();
    assert_eq!(checkpoint.metadata_summary().parameter_count, usize::MAX);
}
