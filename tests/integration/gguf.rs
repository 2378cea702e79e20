//! The GGUF loader on the real SmolLM2-135M-Instruct file (`bash scripts/setup-pretrained.sh`):
//! its config, every Hugging Face tensor with its shape, and parity with Hugging Face transformers
//! (`bench/hf_gguf_tokenizer.py`): token ids of the embedded tokenizer, and dequantized rows of a
//! Q4_1 and a Q8_0 tensor (the `gguf` package's dequantization, transformers' Q/K un-permutation).
//!
//! Without the file the tests print SKIPPED loudly (fail under `REQUIRE_PRETRAINED=1`); without a
//! Python that imports transformers and gguf (`$PYTHON`, else `bench/.venv/bin/python`, else
//! `python3`) the parity test prints SKIPPED (fails under `REQUIRE_TORCH=1`).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use ega_core::pretrained::gguf::{take_all, GgufCheckpoint};
use ega_core::pretrained::TensorSource;
use serde_json::{json, Value};

const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Largest difference allowed between ega-core's and the `gguf` package's dequantized values.
const DEQUANT_TOLERANCE: f64 = 1e-6;

#[test]
fn gguf_smollm2_config_and_tensors() {
    let test = "gguf_smollm2_config_and_tensors";
    let Some(path) = ega_tests::pretrained_gguf(test) else { return };
    let started = Instant::now();
    let mut checkpoint = GgufCheckpoint::open(&path).unwrap();
    let opened = started.elapsed();
    let config = checkpoint.llama_config().unwrap();
    assert_eq!(config.num_hidden_layers, 30);
    assert_eq!(config.hidden_size, 576);
    assert_eq!((config.num_attention_heads, config.num_key_value_heads), (9, 3));
    assert_eq!(config.intermediate_size, 1536);
    assert_eq!(config.vocab_size, 49152);
    assert_eq!(config.rope_theta, 100_000.0);
    assert_eq!(config.max_position_embeddings, 8192);
    assert!((config.rms_norm_eps - 1e-5).abs() < 1e-9);
    assert!(config.tie_word_embeddings);

    let summary = checkpoint.metadata_summary();
    eprintln!("{summary}");
    assert_eq!(summary.architecture, "llama");
    assert_eq!(summary.file_type.as_deref(), Some("MOSTLY_Q4_1"));
    assert_eq!(summary.tensor_count, 272);
    assert_eq!(summary.tensor_types.get("Q4_1"), Some(&210));

    let (d, ffn, kv) = (576, 1536, 3 * 64);
    let mut expected = vec![("text_model.embed_tokens.weight".to_string(), vec![49152, d], "Q8_0")];
    expected.push(("text_model.norm.weight".to_string(), vec![d], "F32"));
    for layer in 0..30 {
        let p = format!("text_model.layers.{layer}");
        for (name, shape, dtype) in [
            ("self_attn.q_proj.weight", vec![d, d], "Q4_1"),
            ("self_attn.k_proj.weight", vec![kv, d], "Q4_1"),
            ("self_attn.v_proj.weight", vec![kv, d], "Q4_1"),
            ("self_attn.o_proj.weight", vec![d, d], "Q4_1"),
            ("mlp.gate_proj.weight", vec![ffn, d], "Q4_1"),
            ("mlp.up_proj.weight", vec![ffn, d], "Q4_1"),
            ("mlp.down_proj.weight", vec![d, ffn], "Q4_1"),
            ("input_layernorm.weight", vec![d], "F32"),
            ("post_attention_layernorm.weight", vec![d], "F32"),
        ] {
            expected.push((format!("{p}.{name}"), shape, dtype));
        }
    }
    let stored = checkpoint.stored();
    assert_eq!(stored.len(), expected.len(), "tensor count");
    for (name, shape, dtype) in &expected {
        let found = stored.iter().find(|t| &t.name == name).unwrap_or_else(|| panic!("{name} is missing"));
        assert_eq!((&found.shape, found.dtype.as_str()), (shape, *dtype), "{name}");
    }

    let started = Instant::now();
    let tensors = take_all(&mut checkpoint).unwrap();
    let dequantized = started.elapsed();
    let values: usize = tensors.values().map(|t| t.data.len()).sum();
    assert_eq!(values, 134_515_008, "parameters (transformers counts 134 515 008)");
    for (name, shape, _) in &expected {
        let tensor = &tensors[name];
        assert_eq!(&tensor.shape, shape, "{name}");
        assert!(tensor.data.iter().all(|v| v.is_finite()), "{name} holds a non-finite value");
    }
    eprintln!(
        "{FILE}: read + parsed in {:.2} s, {values} values dequantized to f32 in {:.2} s",
        opened.as_secs_f64(),
        dequantized.as_secs_f64()
    );
}

#[test]
fn gguf_smollm2_matches_transformers() {
    let test = "gguf_smollm2_matches_transformers";
    let Some(path) = ega_tests::pretrained_gguf(test) else { return };
    let Some(python) = ega_tests::python_with("transformers, gguf", test) else { return };
    let texts = [
        "The capital of France is",
        "Hello, world! A plain ASCII sentence.",
        "café naïve",
        "👍🏽 🐨",
        "東京タワー",
        "fn main() { println!(\"{}\", x); }",
        "12345 3.14",
        "a  b   c\t\td\n\ne \n",
        "   leading and trailing   ",
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n",
        "",
    ];
    // GGUF names: a Q8_0 (the embedding), a plain Q4_1, and the permuted Q4_1 query and key.
    let rows = [
        ("token_embd.weight", "text_model.embed_tokens.weight", vec![0usize, 504, 49151]),
        ("blk.0.ffn_down.weight", "text_model.layers.0.mlp.down_proj.weight", vec![0, 1, 575]),
        ("blk.7.attn_q.weight", "text_model.layers.7.self_attn.q_proj.weight", vec![0, 1, 31, 32, 33, 575]),
        ("blk.7.attn_k.weight", "text_model.layers.7.self_attn.k_proj.weight", vec![0, 1, 32, 64, 191]),
    ];
    let request = json!({
        "texts": texts,
        "rows": rows.iter().map(|(gguf, _, r)| json!({ "tensor": gguf, "rows": r })).collect::<Vec<_>>(),
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/hf_gguf_tokenizer.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the transformers reference");
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{} failed:\n{}", script.display(), String::from_utf8_lossy(&out.stderr));
    let reply: Value = serde_json::from_slice(&out.stdout).expect("a JSON reply");

    let mut checkpoint = GgufCheckpoint::open(&path).unwrap();
    let tokenizer = checkpoint.tokenizer().unwrap();
    let mut mismatches = Vec::new();
    for (text, expected) in texts.iter().zip(reply["ids"].as_array().unwrap()) {
        let expected: Vec<u32> = expected.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let ids = tokenizer.encode(*text, true).unwrap().get_ids().to_vec();
        if ids != expected {
            mismatches.push(format!("{text:?}: ega-core {ids:?}, transformers {expected:?}"));
        }
    }
    assert!(mismatches.is_empty(), "tokenizer ids differ:\n{}", mismatches.join("\n"));
    assert_eq!(tokenizer.encode("The capital of France is", true).unwrap().get_ids(), &[504, 3575, 282, 4649, 314]);

    for (gguf, hf, row_ids) in &rows {
        let tensor = checkpoint.take(hf).unwrap().unwrap();
        let cols = tensor.shape[1];
        let reference = reply["rows"][gguf].as_array().unwrap();
        let mut largest = 0.0f64;
        for (&row, expected) in row_ids.iter().zip(reference) {
            let expected = expected.as_array().unwrap();
            assert_eq!(expected.len(), cols, "{gguf} row {row}");
            for (c, e) in expected.iter().enumerate() {
                largest = largest.max((tensor.data[row * cols + c] as f64 - e.as_f64().unwrap()).abs());
            }
        }
        eprintln!("{gguf}: largest |ega-core − gguf package| over rows {row_ids:?}: {largest:.2e}");
        assert!(largest <= DEQUANT_TOLERANCE, "{gguf} differs by {largest:e}");
    }
}
