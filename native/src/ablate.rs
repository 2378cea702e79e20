//! `native ablate`: the same training run with several losses × seeds, everything else equal, and
//! a markdown table of mean ± std. Each run is an ordinary run folder under the ablation folder: a
//! finished run is reused, an interrupted one is resumed, so an ablation stopped half-way loses
//! nothing.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use ega_core::data::Split;
use ega_core::device::DeviceChoice;
use ega_core::eval::RetrievalMetrics;
use ega_core::loss::{LossConfig, LossKind, Rescale};
use ega_core::model::ModelConfig;
use ega_core::train::TrainConfig;

use crate::args::{training_loss, StartArgs, DEVICE_HELP};
use crate::train::{self, finished_metrics, ModelStart, SplitMetrics, TrainRequest};

/// `native ablate`'s flags. The loss and training defaults not written here are `training_loss()`'s
/// and `TrainConfig`'s.
#[derive(Args, Debug)]
pub struct AblateArgs {
    /// Losses to compare, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "infonce,ega,llave,hcl")]
    pub losses: Vec<LossKind>,
    /// Seeds, comma-separated (each changes the initialisation and the data order).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub seeds: Vec<u64>,
    /// Model preset of every run.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Data (as for train).
    #[arg(long, default_value = "shapes")]
    pub data: String,
    /// Skip (and count) bad data lines.
    #[arg(long)]
    pub skip_bad: bool,
    /// Temperature τ.
    #[arg(long, default_value_t = training_loss().tau)]
    pub tau: f64,
    /// EGA amplification α (LLaVE and HCL use their own β flags' defaults).
    #[arg(long, default_value_t = training_loss().alpha)]
    pub alpha: f64,
    /// EGA rescale mode: none or sum (sum, as for train).
    #[arg(long, default_value_t = training_loss().rescale)]
    pub rescale: Rescale,
    /// Optimizer steps per run.
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    /// Pairs per step.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Explicit hard-negative images per pair appended to the targets.
    #[arg(long, default_value_t = TrainConfig::default().hard_negatives)]
    pub hard_negatives: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    pub lr: f64,
    /// Warm-up steps (learning rate; EGA's α starts after them and ramps over as many).
    #[arg(long, default_value_t = 60)]
    pub warmup: usize,
    /// Pairs per split of each run's final evaluation.
    #[arg(long, default_value_t = 300)]
    pub eval_count: usize,
    #[arg(long, default_value = "auto", help = DEVICE_HELP)]
    pub device: DeviceChoice,
    /// Ablation folder (one run folder per loss and seed, plus ablation.md and ablation.json).
    #[arg(long, default_value = "runs/ablate")]
    pub out: PathBuf,
    #[command(flatten)]
    pub start: StartArgs,
}

/// One row of the table: a metric extracted from a split's results.
struct Column {
    title: &'static str,
    split: Split,
    value: fn(&RetrievalMetrics) -> Option<f64>,
}

const COLUMNS: &[Column] = &[
    Column { title: "test t2i R@1", split: Split::Test, value: |m| Some(m.t2i_r1) },
    Column { title: "test i2t R@1", split: Split::Test, value: |m| Some(m.i2t_r1) },
    Column { title: "test t2i MRR", split: Split::Test, value: |m| Some(m.t2i_mrr) },
    Column { title: "test hard-neg acc (image)", split: Split::Test, value: |m| m.hard_negative_image_acc },
    Column { title: "test hard-neg acc (caption)", split: Split::Test, value: |m| m.hard_negative_caption_acc },
    Column { title: "unseen t2i R@1", split: Split::Unseen, value: |m| Some(m.t2i_r1) },
    Column { title: "unseen hard-neg acc (image)", split: Split::Unseen, value: |m| m.hard_negative_image_acc },
];

/// Mean and sample standard deviation (0 for a single value).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// The markdown table: one row per loss, `mean ± std` in percent (MRR as a fraction) over seeds.
fn table(results: &[(LossKind, Vec<SplitMetrics>)]) -> String {
    let columns: Vec<&Column> = COLUMNS
        .iter()
        .filter(|c| {
            results
                .iter()
                .any(|(_, runs)| runs.iter().any(|r| r.iter().any(|(s, m)| *s == c.split && (c.value)(m).is_some())))
        })
        .collect();
    let mut out = String::from("| loss | runs |");
    for c in &columns {
        out.push_str(&format!(" {} |", c.title));
    }
    out.push_str("\n|---|---:|");
    out.push_str(&"---:|".repeat(columns.len()));
    out.push('\n');
    for (loss, runs) in results {
        out.push_str(&format!("| {loss} | {} |", runs.len()));
        for c in &columns {
            let values: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.iter().find(|(s, _)| *s == c.split).and_then(|(_, m)| (c.value)(m)))
                .collect();
            if values.is_empty() {
                out.push_str(" – |");
                continue;
            }
            let (mean, std) = mean_std(&values);
            let scale = if c.title.ends_with("MRR") { 1.0 } else { 100.0 };
            let digits = if scale == 1.0 { 3 } else { 1 };
            out.push_str(&format!(" {:.digits$} ± {:.digits$} |", mean * scale, std * scale));
        }
        out.push('\n');
    }
    out
}

/// Runs (or reuses) every (loss, seed) run and prints and writes the table.
pub fn run(args: AblateArgs) -> Result<()> {
    anyhow::ensure!(!args.losses.is_empty() && !args.seeds.is_empty(), "--losses and --seeds need at least one value");
    anyhow::ensure!(args.eval_count >= 1, "--eval-count must be at least 1");
    // The shared loss options (each run replaces the kind).
    let shared_loss = LossConfig { tau: args.tau, alpha: args.alpha, rescale: args.rescale, ..training_loss() };
    shared_loss.validate()?;
    let shared_train = TrainConfig {
        steps: args.steps,
        batch_size: args.batch_size,
        hard_negatives: args.hard_negatives,
        lr: args.lr,
        warmup_steps: args.warmup,
        alpha_start: args.warmup,
        alpha_ramp: args.warmup,
        seed: 0,
        freeze: args.start.freeze.clone(),
        ..TrainConfig::default()
    };
    shared_train.validate()?;
    ModelConfig::preset(&args.preset)?;
    let (start, lora) = args.start.resolve()?;
    let prompts = args.start.prompts()?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let total = args.losses.len() * args.seeds.len();
    let started = Instant::now();
    let mut results: Vec<(LossKind, Vec<SplitMetrics>)> = Vec::new();
    let mut json_runs = Vec::new();
    let mut done = 0;
    for &kind in &args.losses {
        let mut runs = Vec::new();
        for &seed in &args.seeds {
            done += 1;
            let folder = args.out.join(format!("{kind}-seed{seed}"));
            let metrics = match finished_metrics(&folder) {
                Some(metrics) => {
                    eprintln!("[{done}/{total}] {kind}, seed {seed}: finished earlier, reusing {}", folder.display());
                    metrics
                }
                None => {
                    let resume = folder.join("checkpoints").exists();
                    eprintln!(
                        "[{done}/{total}] {kind}, seed {seed}: {} ({:.0} s into the ablation)",
                        if resume { "resuming" } else { "training" },
                        started.elapsed().as_secs_f64()
                    );
                    let loss = shared_loss.clone().with_kind(kind);
                    let train = TrainConfig { seed, ..shared_train.clone() };
                    train::run(TrainRequest {
                        preset: args.preset.clone(),
                        data: args.data.clone(),
                        skip_bad: args.skip_bad,
                        loss,
                        train,
                        device: args.device,
                        out: folder.clone(),
                        resume,
                        eval_every: Some(0),
                        eval_count: Some(args.eval_count),
                        checkpoint_every: Some(50),
                        steps: None,
                        stop_after: None,
                        start: start.clone(),
                        lm_layers: args.start.lm_layers,
                        vision_stem: args.start.vision_stem.clone(),
                        lora: lora.clone(),
                        stages: Vec::new(),
                        prompts: prompts.clone(),
                    })?
                    .context("the run stopped before its last step")?
                }
            };
            json_runs.push(serde_json::json!({
                "loss": kind.to_string(), "seed": seed, "run": folder,
                "eval": metrics.iter().map(|(s, m)| (s.to_string(), serde_json::to_value(m).unwrap_or_default())).collect::<serde_json::Map<_, _>>(),
            }));
            runs.push(metrics);
        }
        results.push((kind, runs));
    }
    let table = table(&results);
    let seeds: Vec<String> = args.seeds.iter().map(u64::to_string).collect();
    let model = match &start {
        ModelStart::Preset => args.preset.clone(),
        ModelStart::Lm(path) => format!("--init-lm {}", path.display()),
        ModelStart::Smolvlm(path) => format!("--init {}", path.display()),
    };
    let header = format!(
        "Ablation: {model} on {}, {} steps of batch {} (+{} hard negatives), seeds {}, {} pairs per split; mean ± std over seeds (percent; MRR as a fraction).\n\n",
        args.data,
        shared_train.steps,
        shared_train.batch_size,
        shared_train.hard_negatives,
        seeds.join(", "),
        args.eval_count
    );
    let markdown = format!("{header}{table}");
    ega_core::store::write_atomic(&args.out.join("ablation.md"), markdown.as_bytes())?;
    let json = serde_json::json!({"preset": args.preset, "data": args.data, "train": shared_train,
        "loss": shared_loss, "eval_count": args.eval_count, "runs": json_runs});
    ega_core::store::write_atomic(&args.out.join("ablation.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    println!("\n{markdown}");
    println!(
        "written to {} (ablation.md, ablation.json); {:.0} s",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        let (mean, std) = mean_std(&[1.0, 2.0, 3.0]);
        assert!((mean - 2.0).abs() < 1e-12 && (std - 1.0).abs() < 1e-12);
        assert_eq!(mean_std(&[0.5]), (0.5, 0.0));
    }
}
