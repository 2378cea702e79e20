//! `native bench train`: ega-core against PyTorch (`bench/torch_reference.py`, the same model and
//! loss written independently) on the same machine, in the same run.
//!
//! Both sides get the same batch (the same token ids and pixels, written to a JSON file the
//! PyTorch side reads), the same model shapes and the same optimizer settings. PyTorch runs as a
//! child process (`torch_reference.py serve`) that answers one JSON command per line; the two
//! sides take turns, round after round (the order flips every round), each timing its own steps.
//! Reported: medians of the per-step (per-call) times over all rounds, and their ratios.
//!
//! Measured per backend: a training step (embed N captions + M images → S → loss → backward →
//! AdamW, as `native train` does) with EGA and with info-NCE, and embedding a batch of images
//! for an index (no autodiff).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use burn::tensor::Device;
use clap::Args;
use ega_core::device::{self, DeviceChoice};
use ega_core::embed::prompts_input;
use ega_core::loss::{LossConfig, LossKind, Rescale};
use ega_core::model::{Embedder, EmbedderInput, ModelConfig};
use ega_core::prompt::TokenizedPrompt;
use ega_core::tensor_util::{floats, to_f32_vec};
use ega_core::train::{TrainBatch, TrainConfig, Trainer};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};

use crate::args::{bench_python, threads_or_all, training_loss};

/// `bench train`'s flags.
#[derive(Args, Debug)]
pub struct TrainBenchArgs {
    /// Backends, comma-separated: cpu (flex), wgpu.
    #[arg(long, value_delimiter = ',', default_value = "cpu,wgpu")]
    pub devices: Vec<DeviceChoice>,
    /// Model preset.
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// Threads of both sides (PyTorch's `set_num_threads` and flex's rayon pool); default: every
    /// core. `--threads 1` gives the one-thread comparison.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Pairs per training step on the CPU (plus one hard-negative image per pair).
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Pairs per training step on wgpu (software Vulkan is slow).
    #[arg(long, default_value_t = 4)]
    pub wgpu_batch_size: usize,
    /// Images per embedding call on the CPU.
    #[arg(long, default_value_t = 64)]
    pub index_batch: usize,
    /// Images per embedding call on wgpu.
    #[arg(long, default_value_t = 16)]
    pub wgpu_index_batch: usize,
    /// Rounds on the CPU; each side is measured once per round.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Rounds on wgpu.
    #[arg(long, default_value_t = 3)]
    pub wgpu_rounds: usize,
    /// Timed steps (and embedding calls) per side per round on the CPU.
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// The same on wgpu.
    #[arg(long, default_value_t = 1)]
    pub wgpu_steps: usize,
    /// Untimed steps (calls) of each side first.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// The Python with torch (default: bench/.venv/bin/python when it exists, else python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The PyTorch side.
    #[arg(long, default_value = "bench/torch_reference.py")]
    pub script: PathBuf,
    /// Where the batch file shared with the PyTorch side goes.
    #[arg(long, default_value = "target/bench-train")]
    pub work_dir: PathBuf,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// The median of one side's timings of one measurement.
#[derive(Debug, Clone, Serialize)]
struct Timing {
    median_s: f64,
    samples: usize,
}

#[derive(Debug, Clone, Serialize)]
struct BackendReport {
    backend: String,
    batch_pairs: usize,
    batch_targets: usize,
    index_batch: usize,
    rounds: usize,
    steps_per_round: usize,
    ega_core_train_ega: Timing,
    ega_core_train_infonce: Timing,
    torch_train_ega: Timing,
    torch_train_infonce: Timing,
    ega_core_embed: Timing,
    torch_embed: Timing,
    /// The loss alone (forward + backward on a leaf `S` of shape `[N, M]`), EGA then info-NCE.
    ega_core_loss_alone: [Timing; 2],
    torch_loss_alone: [Timing; 2],
}

#[derive(Debug, Serialize)]
struct Report {
    preset: String,
    params: usize,
    torch_version: String,
    torch_threads: usize,
    /// burn-flex's rayon pool.
    flex_threads: usize,
    /// The BLAS the linear layers use on the CPU (`ega_core::blas`), or "none" (burn's gemm).
    blas: String,
    backends: Vec<BackendReport>,
}

fn median(mut values: Vec<f64>) -> Timing {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    let median_s = if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 };
    Timing { median_s, samples: n }
}

/// The PyTorch side: a child process speaking one JSON line each way.
struct TorchServer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl TorchServer {
    fn start(python: &Path, script: &Path, threads: usize) -> Result<Self> {
        let mut child = Command::new(python)
            .arg(script)
            .args(["serve", "--threads", &threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} {} (run `bash bench/setup.sh`, or pass --python)",
                    python.display(),
                    script.display()
                )
            })?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        Ok(Self { child, stdin, stdout })
    }

    fn call(&mut self, request: Value) -> Result<Value> {
        writeln!(self.stdin, "{request}").context("writing to the PyTorch side")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).context("reading from the PyTorch side")?;
        ensure!(!line.is_empty(), "the PyTorch side exited (see its messages above)");
        let reply: Value = serde_json::from_str(&line).with_context(|| format!("bad reply {line:?}"))?;
        if let Some(err) = reply.get("error") {
            bail!("the PyTorch side: {err}");
        }
        Ok(reply)
    }

    fn seconds(&mut self, request: Value) -> Result<Vec<f64>> {
        let reply = self.call(request)?;
        reply["seconds"]
            .as_array()
            .context("no seconds in the reply")?
            .iter()
            .map(|v| v.as_f64().context("a time that is not a number"))
            .collect()
    }
}

impl Drop for TorchServer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({ "cmd": "quit" }));
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

/// The batch both sides use: prompts as token ids (the default query template is 1 + 9 instruction
/// tokens + a 4–12-token caption + `<eos>`; the target template `<bos> <image> … <eos>`), with
/// deterministic ids and pixels.
struct SharedBatch {
    queries: Vec<TokenizedPrompt>,
    targets: Vec<TokenizedPrompt>,
    images: Vec<f32>,
    index: Vec<TokenizedPrompt>,
    index_images: Vec<f32>,
}

fn shared_batch(config: &ModelConfig, pairs: usize, index_batch: usize, seed: u64) -> SharedBatch {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let special = config.special;
    let vocab = config.vocab_size() as u32;
    let first_word = 4; // after <pad>, <bos>, <eos>, <image>
    let instruction: Vec<u32> = (0..9).map(|_| rng.random_range(first_word..vocab)).collect();
    let target_words: Vec<u32> = (0..6).map(|_| rng.random_range(first_word..vocab)).collect();
    let queries = (0..pairs)
        .map(|_| {
            let caption_len = rng.random_range(4..=12);
            let mut ids = vec![special.bos];
            ids.extend(&instruction);
            ids.extend((0..caption_len).map(|_| rng.random_range(first_word..vocab)));
            ids.push(special.eos);
            TokenizedPrompt { ids, image: None }
        })
        .collect();
    let target = |image: usize| {
        let mut ids = vec![special.bos, special.image];
        ids.extend(&target_words);
        ids.push(special.eos);
        TokenizedPrompt { ids, image: Some(image) }
    };
    let pixels_per_image = 3 * config.image_size() * config.image_size();
    let mut pixels = |count: usize| (0..count * pixels_per_image).map(|_| rng.random_range(0.0f32..1.0)).collect();
    let targets_count = 2 * pairs; // one hard-negative image per pair, as `native train` by default
    SharedBatch {
        queries,
        targets: (0..targets_count).map(target).collect(),
        images: pixels(targets_count),
        index: (0..index_batch).map(target).collect(),
        index_images: pixels(index_batch),
    }
}

fn prompts_json(prompts: &[TokenizedPrompt]) -> Value {
    prompts.iter().map(|p| json!({ "ids": p.ids, "image": p.image })).collect()
}

fn embedder_input(
    config: &ModelConfig,
    prompts: &[TokenizedPrompt],
    pixels: &[f32],
    device: &Device,
) -> Result<EmbedderInput> {
    let count = pixels.len() / (3 * config.image_size() * config.image_size());
    let size = config.image_size();
    let images = (count > 0).then(|| floats(pixels.to_vec(), [count, 3, size, size], device));
    Ok(prompts_input(config, prompts, images, device)?)
}

/// The training options of both sides (`native train`'s defaults, α held at full strength).
fn train_config(pairs: usize) -> TrainConfig {
    TrainConfig { batch_size: pairs, alpha_warmup: false, ..TrainConfig::default() }
}

/// `native train`'s default EGA (`rescale = sum`) or info-NCE at the same τ.
fn loss_config(kind: LossKind) -> LossConfig {
    match kind {
        LossKind::InfoNce => LossConfig::infonce(training_loss().tau),
        _ => training_loss(),
    }
}

fn loss_json(kind: LossKind) -> Value {
    let loss = loss_config(kind);
    let rescale = if loss.rescale == Rescale::Sum { "sum" } else { "none" };
    json!({ "kind": loss.kind.to_string(), "tau": loss.tau, "alpha": loss.alpha, "rescale": rescale })
}

/// One backend: both sides, alternating.
#[allow(clippy::too_many_arguments)]
fn bench_backend(
    options: &TrainBenchArgs,
    torch: &mut TorchServer,
    config: &ModelConfig,
    device: &Device,
    label: &str,
    pairs: usize,
    index_batch: usize,
    rounds: usize,
    steps: usize,
) -> Result<BackendReport> {
    let batch = shared_batch(config, pairs, index_batch, 2026);
    let batch_file = options.work_dir.join(format!("bench-train-batch-{pairs}-{index_batch}.json"));
    let shared = json!({
        "queries": prompts_json(&batch.queries),
        "targets": prompts_json(&batch.targets),
        "images": batch.images,
        "index": prompts_json(&batch.index),
        "index_images": batch.index_images,
    });
    std::fs::write(&batch_file, serde_json::to_vec(&shared)?)
        .with_context(|| format!("writing {}", batch_file.display()))?;
    let train = train_config(pairs);
    let setup = torch.call(json!({
        "cmd": "setup", "preset": config.preset, "batch_file": batch_file, "seed": 0,
        "lr": train.lr, "weight_decay": train.weight_decay, "grad_clip": train.grad_clip,
    }))?;
    eprintln!(
        "  {label}: N = {pairs} pairs + {pairs} hard-negative images, index batch {index_batch}; torch side {setup}"
    );

    let autodiff = device.clone().autodiff();
    let size = config.image_size();
    let images = floats(batch.images.clone(), [batch.images.len() / (3 * size * size), 3, size, size], &autodiff);
    let train_batch = TrainBatch::new(config, batch.queries.clone(), batch.targets.clone(), Some(images), &autodiff)?;
    let mut trainers = Vec::new();
    for kind in [LossKind::Ega, LossKind::InfoNce] {
        let model = Embedder::new(config, 0, &autodiff)?;
        trainers.push(Trainer::new(model, train.clone(), loss_config(kind), 0)?);
    }
    let index_model = Embedder::new(config, 0, device)?;

    let mut rust_train = |which: usize, steps: usize| -> Result<Vec<f64>> {
        (0..steps)
            .map(|_| {
                let start = Instant::now();
                trainers[which].step(&train_batch)?; // reads the loss back: the step is finished
                Ok(start.elapsed().as_secs_f64())
            })
            .collect()
    };
    let rust_embed = |calls: usize| -> Result<Vec<f64>> {
        (0..calls)
            .map(|_| {
                let start = Instant::now();
                let input = embedder_input(config, &batch.index, &batch.index_images, device)?;
                let rows = to_f32_vec(index_model.embed(&input))?;
                ensure!(rows.len() == index_batch * config.embed_dim(), "unexpected embedding size");
                Ok(start.elapsed().as_secs_f64())
            })
            .collect()
    };
    let torch_train = |torch: &mut TorchServer, kind: LossKind, steps: usize| {
        torch.seconds(json!({ "cmd": "train", "loss": loss_json(kind), "steps": steps }))
    };
    let torch_embed =
        |torch: &mut TorchServer, calls: usize| torch.seconds(json!({ "cmd": "embed", "repeats": calls }));

    eprint!("  {label}: warm-up ...");
    for (which, kind) in [(0, LossKind::Ega), (1, LossKind::InfoNce)] {
        rust_train(which, options.warmup)?;
        torch_train(torch, kind, options.warmup)?;
    }
    rust_embed(options.warmup)?;
    torch_embed(torch, options.warmup)?;
    eprintln!(" done");

    // [ega-core EGA, ega-core info-NCE, torch EGA, torch info-NCE, ega-core embed, torch embed]
    let mut times: [Vec<f64>; 6] = Default::default();
    for round in 0..rounds {
        let started = Instant::now();
        // Flip which side goes first every round, so neither always runs on a "warm" machine.
        let sides: [bool; 2] = if round % 2 == 0 { [true, false] } else { [false, true] };
        for (which, kind) in [(0, LossKind::Ega), (1, LossKind::InfoNce)] {
            for rust in sides {
                if rust {
                    times[which].extend(rust_train(which, steps)?);
                } else {
                    times[2 + which].extend(torch_train(torch, kind, steps)?);
                }
            }
        }
        for rust in sides {
            if rust {
                times[4].extend(rust_embed(steps)?);
            } else {
                times[5].extend(torch_embed(torch, steps)?);
            }
        }
        eprintln!("  {label}: round {}/{rounds} in {:.1} s", round + 1, started.elapsed().as_secs_f64());
    }
    // The loss alone, to tell its own cost from run-to-run noise in the step times.
    let loss_repeats = 21;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let s_values: Vec<f32> = (0..pairs * 2 * pairs).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let rust_loss = |kind: LossKind| -> Result<Timing> {
        let s = floats(s_values.clone(), [pairs, 2 * pairs], &autodiff);
        let mut times = Vec::new();
        for _ in 0..loss_repeats + 1 {
            let leaf = s.clone().require_grad();
            let start = Instant::now();
            let grads = ega_core::loss::contrastive_loss(leaf.clone(), &loss_config(kind))?.backward();
            to_f32_vec(leaf.grad(&grads).context("no gradient reached S")?)?;
            times.push(start.elapsed().as_secs_f64());
        }
        Ok(median(times[1..].to_vec()))
    };
    let mut torch_loss = |kind: LossKind| -> Result<Timing> {
        let times = torch.seconds(json!({
            "cmd": "loss", "loss": loss_json(kind), "shape": [pairs, 2 * pairs], "repeats": loss_repeats + 1
        }))?;
        Ok(median(times[1..].to_vec()))
    };
    let ega_core_loss_alone = [rust_loss(LossKind::Ega)?, rust_loss(LossKind::InfoNce)?];
    let torch_loss_alone = [torch_loss(LossKind::Ega)?, torch_loss(LossKind::InfoNce)?];
    let [a, b, c, d, e, f] = times.map(median);
    Ok(BackendReport {
        backend: label.to_string(),
        batch_pairs: pairs,
        batch_targets: 2 * pairs,
        index_batch,
        rounds,
        steps_per_round: steps,
        ega_core_train_ega: a,
        ega_core_train_infonce: b,
        torch_train_ega: c,
        torch_train_infonce: d,
        ega_core_embed: e,
        torch_embed: f,
        ega_core_loss_alone,
        torch_loss_alone,
    })
}

/// `native bench train`.
pub fn run(args: TrainBenchArgs) -> Result<()> {
    let threads = threads_or_all(args.threads);
    anyhow::ensure!(threads >= 1, "--threads must be at least 1");
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().context("setting the thread count")?;
    let counts = [threads, args.batch_size, args.wgpu_batch_size, args.index_batch, args.wgpu_index_batch];
    anyhow::ensure!(counts.iter().all(|&n| n >= 1), "--threads and the batch sizes must be at least 1");
    anyhow::ensure!(args.batch_size >= 2 && args.wgpu_batch_size >= 2, "a contrastive batch needs at least 2 pairs");
    anyhow::ensure!(
        args.rounds >= 1 && args.wgpu_rounds >= 1 && args.steps >= 1 && args.wgpu_steps >= 1,
        "--rounds and --steps must be at least 1"
    );
    anyhow::ensure!(!args.devices.is_empty(), "--devices is empty");
    anyhow::ensure!(
        args.script.is_file(),
        "{} not found (run from the repository root, or pass --script)",
        args.script.display()
    );
    let python = bench_python(args.python.clone());
    measure(&args, threads, &python)
}

/// Runs the benchmark with `threads` on both sides and `python` on PyTorch's.
fn measure(options: &TrainBenchArgs, threads: usize, python: &Path) -> Result<()> {
    let json_path = options.json.as_deref();
    let config = ModelConfig::preset(&options.preset)?;
    let params = {
        use burn::module::Module;
        Embedder::new(&config, 0, &Device::flex())?.num_params()
    };
    std::fs::create_dir_all(&options.work_dir).with_context(|| format!("creating {}", options.work_dir.display()))?;
    let mut torch = TorchServer::start(python, &options.script, threads)?;
    let mut torch_version = String::new();
    let mut backends = Vec::new();
    for &choice in &options.devices {
        let selected = device::select(choice)?;
        let (label, pairs, index_batch, rounds, steps) = if selected.is_wgpu {
            let adapter = device::wgpu_adapter().map_err(|why| anyhow::anyhow!("no wgpu adapter: {why}"))?;
            let kind = if adapter.software { "software " } else { "" };
            let label = format!("wgpu, {kind}{} ({})", adapter.backend, adapter.name);
            (label, options.wgpu_batch_size, options.wgpu_index_batch, options.wgpu_rounds, options.wgpu_steps)
        } else {
            ("flex CPU".to_string(), options.batch_size, options.index_batch, options.rounds, options.steps)
        };
        eprintln!("bench train on {}", selected.description);
        let report =
            bench_backend(options, &mut torch, &config, &selected.device, &label, pairs, index_batch, rounds, steps)?;
        backends.push(report);
    }
    let reply = torch.call(json!({ "cmd": "version" }))?;
    torch_version.push_str(reply["torch"].as_str().unwrap_or("?"));
    let report = Report {
        preset: options.preset.clone(),
        params,
        torch_version,
        torch_threads: threads,
        flex_threads: rayon::current_num_threads(),
        blas: ega_core::blas::library().unwrap_or("none").to_string(),
        backends,
    };
    print_table(&report);
    if let Some(path) = json_path {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn print_table(report: &Report) {
    println!(
        "\n`{}` preset ({} parameters); PyTorch {} on the CPU with {} thread(s); ega-core flex: {} \
         thread(s) (burn-flex's rayon pool), linear layers on {}.\n",
        report.preset,
        report.params,
        report.torch_version,
        report.torch_threads,
        report.flex_threads,
        match report.blas.as_str() {
            "none" => "burn's matmul (no system BLAS found)".to_string(),
            library => format!("the system BLAS ({library})"),
        }
    );
    println!("| backend | measurement | ega-core | PyTorch (CPU) | ega-core / PyTorch | target |");
    println!("|---|---|---:|---:|---:|---|");
    for b in &report.backends {
        let per_s = |count: usize, t: &Timing| count as f64 / t.median_s;
        let (ours, theirs) = (per_s(b.batch_pairs, &b.ega_core_train_ega), per_s(b.batch_pairs, &b.torch_train_ega));
        println!(
            "| {} | training, EGA, N = {} pairs + {} images (pairs/s) | {:.2} | {:.2} | {:.2}× | ≥ 1.0× |",
            b.backend,
            b.batch_pairs,
            b.batch_targets,
            ours,
            theirs,
            ours / theirs
        );
        let overhead = |ega: &Timing, infonce: &Timing| 100.0 * (ega.median_s / infonce.median_s - 1.0);
        println!(
            "| {} | step time, EGA over info-NCE (ms: {:.1} vs {:.1} / {:.1} vs {:.1}) | {:+.1}% | {:+.1}% | – | ≤ 2% |",
            b.backend,
            1e3 * b.ega_core_train_ega.median_s,
            1e3 * b.ega_core_train_infonce.median_s,
            1e3 * b.torch_train_ega.median_s,
            1e3 * b.torch_train_infonce.median_s,
            overhead(&b.ega_core_train_ega, &b.ega_core_train_infonce),
            overhead(&b.torch_train_ega, &b.torch_train_infonce),
        );
        let ms = |t: &Timing| 1e3 * t.median_s;
        println!(
            "| {} | the loss alone, forward + backward on S [{}, {}] (ms, EGA / info-NCE) | {:.3} / {:.3} | {:.3} / {:.3} | – | – |",
            b.backend,
            b.batch_pairs,
            b.batch_targets,
            ms(&b.ega_core_loss_alone[0]),
            ms(&b.ega_core_loss_alone[1]),
            ms(&b.torch_loss_alone[0]),
            ms(&b.torch_loss_alone[1]),
        );
        let (ours, theirs) = (per_s(b.index_batch, &b.ega_core_embed), per_s(b.index_batch, &b.torch_embed));
        println!(
            "| {} | embedding images for an index, batches of {} (images/s) | {:.1} | {:.1} | {:.2}× | ≥ 1.0× |",
            b.backend,
            b.index_batch,
            ours,
            theirs,
            ours / theirs
        );
    }
    for b in &report.backends {
        println!(
            "\n{}: medians over {} rounds × {} timed steps (calls) per side, sides alternating, after warm-up",
            b.backend, b.rounds, b.steps_per_round
        );
    }
}
