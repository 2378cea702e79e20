//! `native bench decoder`: forward throughput of a pretrained Llama-family decoder (e.g. the
//! SmolLM2-135M GGUF from `bash scripts/setup-pretrained.sh`) in ega-core against Hugging Face
//! transformers (`bench/hf_bench.py`, after `bash bench/setup.sh`) on the CPU, with the same
//! threads, the same batch of fixed token ids and the same timing rule (one warm-up forward, then
//! the median of `rounds`); plus the load time of the checkpoint on both sides.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::Device;
use clap::Args;
use ega_core::model::smolvlm::LlamaModel;
use ega_core::tensor_util::{ints, to_f32_vec};

use crate::args::{bench_python, threads_or_all};

/// `bench decoder`'s flags: what to measure.
#[derive(Args, Debug)]
pub struct DecoderBenchArgs {
    /// The checkpoint: a `.gguf` file or a Hugging Face folder.
    #[arg(long, default_value = "data/pretrained/SmolLM2-135M-Instruct.Q4_1.gguf")]
    pub model: PathBuf,
    /// Sequences per forward.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 40)]
    pub seq: usize,
    /// Timed forwards per side (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Threads of both sides (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Measure ega-core only (no Python).
    #[arg(long)]
    pub no_transformers: bool,
    /// The Python with transformers (default: bench/.venv/bin/python when it exists, else python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The transformers side.
    #[arg(long, default_value = "bench/hf_bench.py")]
    pub script: PathBuf,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// The text both sides tokenize (and repeat) into the fixed ids; `bench/hf_bench.py` uses the same.
const FILLER: &str =
    "Koalas sleep up to twenty hours a day because their diet of eucalyptus leaves gives them very little energy. ";

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `native bench decoder`: runs the benchmark, prints a markdown table and (--json) writes it.
pub fn run(args: DecoderBenchArgs) -> Result<()> {
    let threads = threads_or_all(args.threads);
    anyhow::ensure!(threads >= 1, "--threads must be at least 1");
    // flex's rayon pool: the same number of threads as the transformers side.
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().context("setting the thread count")?;
    let python = (!args.no_transformers).then(|| bench_python(args.python.clone()));
    let report = measure(&args, threads, python.as_deref())?;
    if let Some(path) = &args.json {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Runs the benchmark with `threads` on both sides (`python`: the transformers side's, `None`:
/// ega-core only) and prints a markdown table (and returns its JSON).
fn measure(options: &DecoderBenchArgs, threads: usize, python: Option<&Path>) -> Result<serde_json::Value> {
    if options.batch == 0 || options.seq == 0 || options.rounds == 0 {
        bail!("--batch, --seq and --rounds must be at least 1");
    }
    let device = Device::flex();
    let started = Instant::now();
    let mut checkpoint =
        ega_core::pretrained::open(&options.model).with_context(|| format!("reading {}", options.model.display()))?;
    let config = checkpoint.text_config().clone();
    let (model, report) = LlamaModel::from_source(&config, checkpoint.source.as_mut(), &device)?;
    let load_s = started.elapsed().as_secs_f64();
    eprintln!("ega-core: loaded {} parameters in {load_s:.2} s", report.loaded_params);

    // Fixed ids: the filler tokenized and repeated; row b starts b tokens later.
    let mut stream: Vec<u32> = match &checkpoint.tokenizer {
        Some(tokenizer) => tokenizer.encode(FILLER, false).map_err(|e| anyhow::anyhow!("{e}"))?.get_ids().to_vec(),
        None => (100..160).collect(),
    };
    let need = options.seq + options.batch;
    while stream.len() < need {
        stream.extend_from_within(..);
    }
    let ids: Vec<i64> = (0..options.batch).flat_map(|b| stream[b..b + options.seq].iter().map(|&t| t as i64)).collect();
    let mut times = Vec::new();
    for round in 0..=options.rounds {
        let input = ints(ids.clone(), [options.batch, options.seq], &device);
        let start = Instant::now();
        let hidden = model.forward_ids(input);
        let _ = to_f32_vec(hidden)?; // wait for the result
        if round > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    let ega_s = median(times);
    let tokens = (options.batch * options.seq) as f64;
    let mut result = serde_json::json!({
        "model": options.model.display().to_string(), "threads": threads, "batch": options.batch,
        "seq": options.seq, "rounds": options.rounds, "blas": ega_core::blas::library().unwrap_or("none"),
        "ega_core": { "tokens_per_s": tokens / ega_s, "median_s": ega_s, "load_s": load_s },
    });
    let torch = match python {
        Some(python) => Some(transformers_side(python, &options.script, options, threads)?),
        None => None,
    };
    println!(
        "decoder forward, {} layers × width {}: batch {} × {} tokens, {} threads, median of {} rounds; linear layers on {}\n",
        config.num_hidden_layers,
        config.hidden_size,
        options.batch,
        options.seq,
        threads,
        options.rounds,
        ega_core::blas::library().unwrap_or("burn's matmul (no system BLAS)")
    );
    println!("| side | tokens/s | forward | load |");
    println!("|---|---:|---:|---:|");
    println!("| ega-core (flex) | {:.0} | {:.3} s | {:.2} s |", tokens / ega_s, ega_s, load_s);
    if let Some(torch) = torch {
        let t_tps = torch["tokens_per_s"].as_f64().unwrap_or(f64::NAN);
        println!(
            "| transformers {} (torch {}) | {:.0} | {:.3} s | {:.2} s |",
            torch["transformers"].as_str().unwrap_or("?"),
            torch["torch"].as_str().unwrap_or("?"),
            t_tps,
            torch["median_s"].as_f64().unwrap_or(f64::NAN),
            torch["load_s"].as_f64().unwrap_or(f64::NAN)
        );
        println!("\nega-core / transformers tokens/s: {:.2}×", (tokens / ega_s) / t_tps);
        result["transformers"] = torch;
    }
    Ok(result)
}

fn transformers_side(
    python: &Path,
    script: &Path,
    options: &DecoderBenchArgs,
    threads: usize,
) -> Result<serde_json::Value> {
    let out = Command::new(python)
        .arg(script)
        .arg("decoder")
        .arg(&options.model)
        .args(["--threads", &threads.to_string()])
        .args(["--batch", &options.batch.to_string(), "--seq", &options.seq.to_string()])
        .args(["--rounds", &options.rounds.to_string()])
        .output()
        .with_context(|| format!("running {} {} (run `bash bench/setup.sh`)", python.display(), script.display()))?;
    if !out.status.success() {
        bail!("{} failed:\n{}", script.display(), String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).context("no JSON from hf_bench.py")?;
    Ok(serde_json::from_str(line)?)
}
