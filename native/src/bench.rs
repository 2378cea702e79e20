//! `native bench kernels`: the fused WGSL kernels against the same computation composed from burn
//! ops, on one device, in one run. Medians of repeated runs after warm-up; results as ratios.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::{Device, Tensor};
use clap::{Args, Subcommand};
use ega_core::device::{self, DeviceChoice};
use ega_core::kernels::{self, topk_cosine, topk_reference, LossPath};
use ega_core::loss::{contrastive_loss, contrastive_loss_reference, LossConfig};
use ega_core::tensor_util::{floats, to_f32_vec};
use serde::Serialize;

/// `native bench`'s benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// The fused WGSL kernels (EGA loss forward + backward, top-k search) against the same
    /// computation composed from burn ops, plus the loss kernel's bytes/s against a device copy.
    Kernels(KernelBenchArgs),
    /// ega-core against PyTorch (bench/torch_reference.py, after `bash bench/setup.sh`) on this
    /// machine, sides alternating: training samples/s, EGA's step-time overhead over info-NCE, and
    /// images/s embedded for an index, on the CPU (flex) and on wgpu.
    Train(crate::bench_train::TrainBenchArgs),
    /// Forward throughput (tokens/s) of a pretrained Llama-family decoder, e.g. the SmolLM2-135M
    /// GGUF from `bash scripts/setup-pretrained.sh`, in ega-core (flex) against Hugging Face
    /// transformers (bench/hf_bench.py) with the same threads and token ids, and the load times.
    Decoder(crate::bench_decoder::DecoderBenchArgs),
}

/// `bench kernels`' flags.
#[derive(Args, Debug)]
pub struct KernelBenchArgs {
    /// Device: the fused kernels need wgpu (a GPU, or software Vulkan).
    #[arg(long, default_value = "wgpu")]
    pub device: DeviceChoice,
    /// Timed runs per measurement; the median is reported.
    #[arg(long, default_value_t = 7)]
    pub repeats: usize,
    /// Untimed warm-up runs before timing.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Loss sizes N = M, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "256,1024,4096")]
    pub loss_sizes: Vec<usize>,
    /// Top-k index sizes n, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub index_sizes: Vec<usize>,
    /// Queries per top-k search.
    #[arg(long, default_value_t = 32)]
    pub queries: usize,
    /// Embedding dimension d of the top-k index.
    #[arg(long, default_value_t = 256)]
    pub dim: usize,
    /// Results per query.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct LossRow {
    n: usize,
    fused_ms: f64,
    composed_ms: f64,
    speedup: f64,
    fused_bytes: f64,
    fused_gb_per_s: f64,
    copy_gb_per_s: f64,
    fraction_of_copy_bandwidth: f64,
}

#[derive(Debug, Serialize)]
struct TopkRow {
    n: usize,
    queries: usize,
    dim: usize,
    k: usize,
    fused_ms: f64,
    composed_ms: f64,
    speedup: f64,
    /// The `[q, n]` score matmul alone (burn), which both paths contain.
    matmul_ms: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    device: String,
    repeats: usize,
    warmup: usize,
    loss: Vec<LossRow>,
    topk: Vec<TopkRow>,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Median wall time in ms of `run` (which must finish its device work before returning).
fn time_ms(warmup: usize, repeats: usize, mut run: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warmup {
        run()?;
    }
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        run()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(times))
}

fn sync(device: &Device) -> Result<()> {
    device.sync().map_err(|err| anyhow::anyhow!("device sync failed: {err:?}"))
}

fn random(shape: [usize; 2], seed: u64, device: &Device) -> Tensor<2> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let values = (0..shape[0] * shape[1]).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    floats(values, shape, device)
}

fn unit_rows(rows: usize, dim: usize, seed: u64, device: &Device) -> Tensor<2> {
    let x = random([rows, dim], seed, device);
    let norm = x.clone().square().sum_dim(1).sqrt();
    x / norm
}

/// One forward + backward of the loss on `s`, finished on the device. The loss and `G` stay alive
/// until the sync: burn-fusion need not write an output that was dropped before its stream ran.
fn loss_step(s: &Tensor<2>, config: &LossConfig, fused: bool, device: &Device) -> Result<()> {
    let leaf = s.clone().require_grad();
    let loss =
        if fused { contrastive_loss(leaf.clone(), config)? } else { contrastive_loss_reference(leaf.clone(), config)? };
    let grads = loss.clone().backward();
    let grad = leaf.grad(&grads).context("no gradient reached S")?;
    sync(device)?;
    drop((loss, grad));
    Ok(())
}

/// `native bench …`.
pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Kernels(args) => kernels(&args),
        BenchCommand::Train(args) => crate::bench_train::run(args),
        BenchCommand::Decoder(args) => crate::bench_decoder::run(args),
    }
}

/// `native bench kernels`.
fn kernels(options: &KernelBenchArgs) -> Result<()> {
    anyhow::ensure!(options.repeats >= 1, "--repeats must be at least 1");
    anyhow::ensure!(options.k >= 1, "-k must be at least 1");
    anyhow::ensure!(options.queries >= 1 && options.dim >= 1, "--queries and --dim must be at least 1");
    if let Some(n) = options.loss_sizes.iter().chain(&options.index_sizes).find(|&&n| n == 0) {
        anyhow::bail!("sizes must be at least 1, got {n}");
    }
    let json = options.json.as_deref();
    let selected = device::select(options.device)?;
    if kernels::ega_path(&selected.device) != LossPath::FusedWgsl {
        bail!(
            "the fused kernels run on wgpu devices only; {} is not one (try --device wgpu{})",
            selected.description,
            if kernels::kernels_enabled() { "" } else { ", and unset EGA_KERNELS" }
        );
    }
    let device = selected.device.clone();
    let autodiff = device.clone().autodiff();
    eprintln!("bench kernels on {}", selected.description);
    let config = LossConfig::default();
    let mut loss_rows = Vec::new();
    for &n in &options.loss_sizes {
        eprint!("  EGA loss N = M = {n} ... ");
        let s = random([n, n], n as u64, &autodiff);
        let fused = time_ms(options.warmup, options.repeats, || loss_step(&s, &config, true, &autodiff))?;
        let composed = time_ms(options.warmup, options.repeats, || loss_step(&s, &config, false, &autodiff))?;
        // Bytes the fused pair must move at least: the forward reads S; the backward reads S and
        // writes G (per-row scalars are negligible).
        let bytes = 3.0 * (n * n * 4) as f64;
        // A plain device copy of the same number of bytes: read and write a buffer of bytes/2.
        let copy_elems = (n * n * 3).div_ceil(2);
        let source = random([copy_elems, 1], 7, &device);
        let copy = time_ms(options.warmup, options.repeats, || {
            let copied = source.clone().add_scalar(0.0);
            sync(&device)?;
            drop(copied);
            Ok(())
        })?;
        let fused_rate = bytes / (fused * 1e-3);
        let copy_rate = (2 * copy_elems * 4) as f64 / (copy * 1e-3);
        eprintln!("fused {fused:.2} ms, composed {composed:.2} ms");
        loss_rows.push(LossRow {
            n,
            fused_ms: fused,
            composed_ms: composed,
            speedup: composed / fused,
            fused_bytes: bytes,
            fused_gb_per_s: fused_rate / 1e9,
            copy_gb_per_s: copy_rate / 1e9,
            fraction_of_copy_bandwidth: fused_rate / copy_rate,
        });
    }
    let mut topk_rows = Vec::new();
    for &n in &options.index_sizes {
        eprint!("  top-{} over n = {n}, d = {}, {} queries ... ", options.k, options.dim, options.queries);
        let index = unit_rows(n, options.dim, n as u64, &device);
        let queries = unit_rows(options.queries, options.dim, 3, &device);
        let search = |fused: bool| -> Result<()> {
            let result = if fused {
                topk_cosine(queries.clone(), index.clone(), options.k)?
            } else {
                topk_reference(queries.clone(), index.clone(), options.k)?
            };
            // Both end with the [q, k] answer on the host, as a search does.
            let scores = to_f32_vec(result.scores)?;
            anyhow::ensure!(scores.len() == options.queries * options.k.min(n), "unexpected result size");
            Ok(())
        };
        let fused = time_ms(options.warmup, options.repeats, || search(true))?;
        let composed = time_ms(options.warmup, options.repeats, || search(false))?;
        let matmul = time_ms(options.warmup, options.repeats, || {
            let scores = queries.clone().matmul(index.clone().transpose());
            sync(&device)?;
            drop(scores);
            Ok(())
        })?;
        eprintln!("fused {fused:.2} ms, composed {composed:.2} ms, score matmul alone {matmul:.2} ms");
        topk_rows.push(TopkRow {
            n,
            queries: options.queries,
            dim: options.dim,
            k: options.k,
            fused_ms: fused,
            composed_ms: composed,
            speedup: composed / fused,
            matmul_ms: matmul,
        });
    }

    println!("\nEGA loss, forward + backward, fused WGSL vs composed burn ops ({}):\n", selected.description);
    println!("| N = M | fused ms | composed ms | speed-up | fused GB/s | copy GB/s | of copy bandwidth |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in &loss_rows {
        println!(
            "| {} | {:.2} | {:.2} | {:.1}× | {:.2} | {:.2} | {:.0}% |",
            r.n,
            r.fused_ms,
            r.composed_ms,
            r.speedup,
            r.fused_gb_per_s,
            r.copy_gb_per_s,
            100.0 * r.fraction_of_copy_bandwidth
        );
    }
    println!("\nTop-{} cosine search, fused WGSL vs matmul + sort in burn ops:\n", options.k);
    println!("| n | d | queries | fused ms | composed ms | speed-up | score matmul alone ms |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in &topk_rows {
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.1}× | {:.2} |",
            r.n, r.dim, r.queries, r.fused_ms, r.composed_ms, r.speedup, r.matmul_ms
        );
    }
    println!("\nmedians of {} runs after {} warm-up runs", options.repeats, options.warmup);
    if let Some(path) = json {
        let report = Report {
            device: selected.description.clone(),
            repeats: options.repeats,
            warmup: options.warmup,
            loss: loss_rows,
            topk: topk_rows,
        };
        let text = serde_json::to_string_pretty(&report)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
