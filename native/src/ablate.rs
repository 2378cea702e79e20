//! `native ablate`: the same training run with several losses × seeds, everything else equal, and
//! a markdown table of mean ± std. Each run is an ordinary run folder under the ablation folder: a
//! finished run is reused, an interrupted one is resumed, so an ablation stopped half-way loses
//! nothing.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use ega_core::data::Split;
use ega_core::device::DeviceChoice;
use ega_core::eval::RetrievalMetrics;
use ega_core::loss::{LossConfig, LossKind};
use ega_core::train::TrainConfig;

use crate::train::{self, finished_metrics, ModelStart, SplitMetrics, TrainRequest};

/// What `native ablate` runs.
pub struct AblateRequest {
    /// Losses compared; each keeps the shared options in `loss` except its kind.
    pub losses: Vec<LossKind>,
    /// Seeds (initialisation and data order).
    pub seeds: Vec<u64>,
    /// Preset, data, training and evaluation options shared by every run.
    pub preset: String,
    /// Data spec.
    pub data: String,
    /// Skip bad data lines.
    pub skip_bad: bool,
    /// Loss options shared by every run (the kind is replaced per run).
    pub loss: LossConfig,
    /// Training options (the seed is replaced per run).
    pub train: TrainConfig,
    /// Device.
    pub device: DeviceChoice,
    /// Pairs per split of each run's final evaluation.
    pub eval_count: usize,
    /// The ablation folder: one run folder per (loss, seed), plus `ablation.md` / `ablation.json`.
    pub out: PathBuf,
    /// Where every run's model starts (a pretrained start is loaded once per run).
    pub start: ModelStart,
    /// Decoder layers kept of a pretrained start.
    pub lm_layers: Option<usize>,
    /// LoRA adapters of every run's model.
    pub lora: Option<ega_core::model::LoraConfig>,
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
pub fn run(request: AblateRequest) -> Result<()> {
    std::fs::create_dir_all(&request.out).with_context(|| format!("creating {}", request.out.display()))?;
    let total = request.losses.len() * request.seeds.len();
    let started = Instant::now();
    let mut results: Vec<(LossKind, Vec<SplitMetrics>)> = Vec::new();
    let mut json_runs = Vec::new();
    let mut done = 0;
    for &kind in &request.losses {
        let mut runs = Vec::new();
        for &seed in &request.seeds {
            done += 1;
            let folder = request.out.join(format!("{kind}-seed{seed}"));
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
                    let loss = request.loss.clone().with_kind(kind);
                    let train = TrainConfig { seed, ..request.train.clone() };
                    train::run(TrainRequest {
                        preset: request.preset.clone(),
                        data: request.data.clone(),
                        skip_bad: request.skip_bad,
                        loss,
                        train,
                        device: request.device,
                        out: folder.clone(),
                        resume,
                        eval_every: Some(0),
                        eval_count: Some(request.eval_count),
                        checkpoint_every: Some(50),
                        steps: None,
                        stop_after: None,
                        start: request.start.clone(),
                        lm_layers: request.lm_layers,
                        lora: request.lora.clone(),
                        stages: Vec::new(),
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
    let seeds: Vec<String> = request.seeds.iter().map(u64::to_string).collect();
    let model = match &request.start {
        ModelStart::Preset => request.preset.clone(),
        ModelStart::Lm(path) => format!("--init-lm {}", path.display()),
        ModelStart::Smolvlm(path) => format!("--init {}", path.display()),
    };
    let header = format!(
        "Ablation: {model} on {}, {} steps of batch {} (+{} hard negatives), seeds {}, {} pairs per split; mean ± std over seeds (percent; MRR as a fraction).\n\n",
        request.data,
        request.train.steps,
        request.train.batch_size,
        request.train.hard_negatives,
        seeds.join(", "),
        request.eval_count
    );
    let markdown = format!("{header}{table}");
    ega_core::store::write_atomic(&request.out.join("ablation.md"), markdown.as_bytes())?;
    let json = serde_json::json!({"preset": request.preset, "data": request.data, "train": request.train,
        "loss": request.loss, "eval_count": request.eval_count, "runs": json_runs});
    ega_core::store::write_atomic(&request.out.join("ablation.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    println!("\n{markdown}");
    println!(
        "written to {} (ablation.md, ablation.json); {:.0} s",
        request.out.display(),
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
