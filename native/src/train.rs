//! `native train` and `native eval`: arranging ega-core's trainer, data, checkpoints and
//! evaluation into a run folder, with progress and a final table.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::module::Module;
use ega_core::checkpoint::{self, RunState};
use ega_core::data::{self, Split};
use ega_core::device::{self, DeviceChoice};
use ega_core::eval::freeform::{evaluate_freeform, FreeformMetrics, QuerySet};
use ega_core::eval::{evaluate, RetrievalMetrics};
use ega_core::kernels;
use ega_core::loss::LossConfig;
use ega_core::model::{Embedder, ModelConfig};
use ega_core::tokenizer::Tokenizer;
use ega_core::train::{batch_indices, make_batch, TrainConfig, Trainer};
use ega_core::EgaError;
use indicatif::{ProgressBar, ProgressStyle};

/// Everything `native train` needs, already validated by the argument parser.
pub struct TrainRequest {
    /// Preset name of a new run.
    pub preset: String,
    /// Data spec of a new run.
    pub data: String,
    /// Skip bad JSONL lines instead of failing.
    pub skip_bad: bool,
    /// Loss of a new run.
    pub loss: LossConfig,
    /// Training options of a new run.
    pub train: TrainConfig,
    /// Device.
    pub device: DeviceChoice,
    /// Run folder (new run), or the run to resume.
    pub out: PathBuf,
    /// Resume `out` from its latest checkpoint.
    pub resume: bool,
    /// Evaluate on this many test pairs every `eval_every` steps (0: never).
    pub eval_every: usize,
    /// Pairs of the periodic and final evaluations.
    pub eval_count: usize,
    /// Checkpoint every this many steps.
    pub checkpoint_every: usize,
    /// Stop after this step (for tests of resuming); the run stays resumable.
    pub stop_after: Option<usize>,
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} step {pos}/{len} [{bar:30}] {msg} ETA {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Appends one JSON line to the metrics log.
fn log_line(log: &mut std::fs::File, value: serde_json::Value) -> Result<()> {
    writeln!(log, "{value}").context("writing metrics.jsonl")?;
    log.flush().context("writing metrics.jsonl")
}

/// Drops lines of steps >= `from` from the metrics log (left by a run killed after its last
/// checkpoint), so a resumed run's log reads as one uninterrupted run.
fn truncate_log(path: &Path, from: usize) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let bytes = ega_core::fs::read_regular(path, ega_core::fs::MAX_DATASET)?;
    let content = String::from_utf8_lossy(&bytes);
    let kept: Vec<&str> = content
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|step| (step as usize) < from)
        })
        .collect();
    let mut text = kept.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    checkpoint::write_atomic(path, text.as_bytes()).context("rewriting metrics.jsonl")
}

/// Final metrics of a finished run, per reported split.
pub type SplitMetrics = Vec<(Split, RetrievalMetrics)>;

/// Runs (or resumes) a training run; returns the final metrics on the test and unseen splits, or
/// `None` when it stopped early (`stop_after`) and stays resumable.
pub fn run(request: TrainRequest) -> Result<Option<SplitMetrics>> {
    let selected = device::select(request.device)?;
    let device = selected.device.clone().autodiff();
    let inference = selected.device.clone();
    eprintln!("device: {}", selected.description);
    eprintln!("loss path: {}", kernels::ega_path(&device));

    let (state, model, tokenizer, optimizer, dataset) = if request.resume {
        let checkpoint = checkpoint::load_latest(&request.out, &device)?;
        eprintln!("resuming {} at step {}", checkpoint.folder.display(), checkpoint.state.step);
        let state = checkpoint.state;
        let dataset = data::open(&state.data, state.model.image_size(), request.skip_bad)?;
        (state, checkpoint.model, checkpoint.tokenizer, Some(checkpoint.optimizer), dataset)
    } else {
        let mut model_config = ModelConfig::preset(&request.preset)?;
        let dataset = data::open(&request.data, model_config.image_size(), request.skip_bad)?;
        if request.out.join("checkpoints").exists() {
            bail!(
                "{} already holds a run; use --resume {0} to continue it, or choose another --out",
                request.out.display()
            );
        }
        let started = Instant::now();
        let corpus = data::tokenizer_corpus(dataset.as_ref(), 2000)?;
        let tokenizer = Tokenizer::train(corpus.iter(), model_config.vocab_size())?;
        // The model's table matches the trained vocabulary (never larger than the preset's).
        model_config.set_vocab_size(tokenizer.vocab_size());
        eprintln!(
            "tokenizer: {} tokens, trained on {} texts in {:.1} s",
            tokenizer.vocab_size(),
            corpus.len(),
            started.elapsed().as_secs_f64()
        );
        let model = Embedder::new(&model_config, request.train.seed, &device)?;
        let state = RunState {
            format_version: checkpoint::FORMAT_VERSION,
            ega_core_version: ega_core::VERSION.to_string(),
            step: 0,
            model: model_config,
            loss: request.loss.clone(),
            train: request.train.clone(),
            data: request.data.clone(),
        };
        (state, model, tokenizer, None, dataset)
    };
    let train_len = dataset.len(Split::Train).context("the training split has no length")?;
    std::fs::create_dir_all(&request.out).with_context(|| format!("creating {}", request.out.display()))?;
    let mut trainer = Trainer::new(model, state.train.clone(), state.loss.clone(), state.step)?;
    if let Some(bytes) = optimizer {
        trainer.load_optimizer_bytes(bytes)?;
    }
    let log_path = request.out.join("metrics.jsonl");
    truncate_log(&log_path, trainer.step)?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;

    let total = state.train.steps;
    let last = request.stop_after.map(|s| s.min(total)).unwrap_or(total);
    eprintln!(
        "training {} ({} parameters) on {} with {} for {} steps, batch {} (+{} hard negatives each){} → {}",
        state.model.preset,
        burn::module::Module::num_params(trainer.model()),
        dataset.name(),
        state.loss.kind,
        total,
        state.train.batch_size,
        state.train.hard_negatives,
        state.train.grad_cache_chunk.map(|rows| format!(", GradCache chunks of {rows}")).unwrap_or_default(),
        request.out.display()
    );
    let progress = ProgressBar::new(total as u64).with_style(style());
    progress.set_position(trainer.step as u64);
    let started = Instant::now();
    let first_step = trainer.step;
    let save = |trainer: &Trainer, step: usize| -> Result<()> {
        let snapshot = RunState { step, ..state.clone() };
        checkpoint::save(&request.out, &snapshot, trainer.model(), &trainer.optimizer_bytes()?, &tokenizer)?;
        Ok(())
    };
    while trainer.step < last {
        let step = trainer.step;
        let indices = batch_indices(state.train.seed, step, state.train.batch_size, train_len)?;
        let batch = make_batch(
            dataset.as_ref(),
            Split::Train,
            &indices,
            state.train.hard_negatives,
            &state.model,
            &tokenizer,
            &device,
        )?;
        let stats = match trainer.step(&batch) {
            Ok(stats) => stats,
            Err(err @ EgaError::NonFinite { .. }) => {
                progress.abandon();
                bail!("{err}; resume from {} with a lower --lr", request.out.display());
            }
            Err(err) => return Err(err.into()),
        };
        let done = (trainer.step - first_step) as f64;
        let samples_per_s = done * state.train.batch_size as f64 / started.elapsed().as_secs_f64();
        progress.set_position(trainer.step as u64);
        let message =
            format!("loss {:.4} lr {:.2e} α {:.2} {:.1} samples/s", stats.loss, stats.lr, stats.alpha, samples_per_s);
        if progress.is_hidden() && (trainer.step % 10 == 0 || trainer.step == last) {
            // Not a terminal (a log file, CI): a plain line now and then instead of the bar.
            let eta = (last - trainer.step) as f64 * state.train.batch_size as f64 / samples_per_s.max(1e-9);
            eprintln!("step {}/{total} {message} ETA {eta:.0} s", trainer.step);
        }
        progress.set_message(message);
        log_line(
            &mut log,
            serde_json::json!({"step": stats.step, "loss": stats.loss, "lr": stats.lr, "alpha": stats.alpha,
                "samples_per_s": samples_per_s, "elapsed_s": started.elapsed().as_secs_f64()}),
        )?;
        if request.eval_every > 0 && trainer.step % request.eval_every == 0 && trainer.step < total {
            // Evaluation runs without autodiff: no graph is kept for thousands of forward passes.
            let metrics = evaluate(
                &trainer.model().valid(),
                &state.model,
                &tokenizer,
                dataset.as_ref(),
                Split::Test,
                request.eval_count.min(200),
                64,
                &inference,
            )?;
            let line =
                format!("step {}: test t2i R@1 {:.3}, i2t R@1 {:.3}", trainer.step, metrics.t2i_r1, metrics.i2t_r1);
            // A hidden bar (not a terminal) swallows println: write the line plainly then.
            if progress.is_hidden() {
                eprintln!("{line}");
            } else {
                progress.println(line);
            }
            log_line(&mut log, serde_json::json!({"step": stats.step, "eval": {"test": metrics}}))?;
        }
        if trainer.step % request.checkpoint_every.max(1) == 0 || trainer.step == last {
            save(&trainer, trainer.step)?;
        }
    }
    progress.finish();
    if trainer.step < total {
        eprintln!("stopped after step {} of {total}; continue with --resume {}", trainer.step, request.out.display());
        return Ok(None);
    }
    let final_model = trainer.model().valid();
    let mut results = Vec::new();
    for split in report_splits(dataset.as_ref()) {
        let metrics = evaluate(
            &final_model,
            &state.model,
            &tokenizer,
            dataset.as_ref(),
            split,
            request.eval_count,
            64,
            &inference,
        )?;
        results.push((split, metrics));
    }
    let json = serde_json::json!({
        "steps": total, "data": state.data, "loss": state.loss, "train": state.train, "model": state.model.preset,
        "device": selected.description, "wall_time_s": started.elapsed().as_secs_f64(),
        "eval": results.iter().map(|(split, m)| (split.to_string(), serde_json::to_value(m).unwrap_or_default())).collect::<serde_json::Map<_, _>>(),
    });
    checkpoint::write_atomic(&request.out.join("metrics.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    let bundle_dir = request.out.join("bundle");
    let bundle = ega_core::bundle::save(
        &bundle_dir,
        &final_model,
        &state.model,
        &tokenizer,
        &state.loss,
        &state.data,
        total,
        &json,
        ega_core::index::Dtype::F32,
    )?;
    eprintln!("model bundle {} (model {}) for index / search / export", bundle_dir.display(), bundle.model_id);
    println!("\n{}", metrics_table(&results));
    println!("run folder: {} (resume with --resume, evaluate with `native eval --model {0}`)", request.out.display());
    Ok(Some(results))
}

/// The final metrics a finished run wrote to `metrics.json`, or `None` when it has not finished.
pub fn finished_metrics(run: &Path) -> Option<SplitMetrics> {
    let text =
        String::from_utf8(ega_core::fs::read_regular(&run.join("metrics.json"), ega_core::fs::MAX_JSON).ok()?).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let eval = value.get("eval")?.as_object()?;
    let mut results = Vec::new();
    for split in [Split::Train, Split::Test, Split::Unseen] {
        if let Some(metrics) = eval.get(&split.to_string()) {
            results.push((split, serde_json::from_value(metrics.clone()).ok()?));
        }
    }
    Some(results)
}

/// The splits to report: the held-out ones that have pairs; the training split (with a note) when
/// the data holds none out.
fn report_splits(dataset: &dyn ega_core::data::Dataset) -> Vec<Split> {
    let held_out: Vec<Split> =
        [Split::Test, Split::Unseen].into_iter().filter(|&s| dataset.len(s).unwrap_or(1) > 0).collect();
    if held_out.is_empty() {
        eprintln!("note: {} holds no pairs out (mark lines \"split\": \"test\", or give 40 or more lines); reporting the training pairs", dataset.name());
        return vec![Split::Train];
    }
    held_out
}

fn percent(value: Option<f64>) -> String {
    value.map(|v| format!("{:.1}", 100.0 * v)).unwrap_or_else(|| "–".into())
}

/// A markdown table of metrics per split.
pub fn metrics_table(results: &[(Split, RetrievalMetrics)]) -> String {
    let mut table = String::from(
        "| split | pairs | t2i R@1 | t2i R@5 | t2i R@10 | t2i MRR | i2t R@1 | i2t R@5 | i2t R@10 | i2t MRR | hard-neg acc (image) | hard-neg acc (caption) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (split, m) in results {
        table.push_str(&format!(
            "| {split} | {} | {} | {} | {} | {:.3} | {} | {} | {} | {:.3} | {} | {} |\n",
            m.count,
            percent(Some(m.t2i_r1)),
            percent(Some(m.t2i_r5)),
            percent(Some(m.t2i_r10)),
            m.t2i_mrr,
            percent(Some(m.i2t_r1)),
            percent(Some(m.i2t_r5)),
            percent(Some(m.i2t_r10)),
            m.i2t_mrr,
            percent(m.hard_negative_image_acc),
            percent(m.hard_negative_caption_acc),
        ));
    }
    table
}

/// A markdown table of a free-form query set's success@1/@10.
fn freeform_table(file: &Path, split: Split, m: &FreeformMetrics) -> String {
    format!(
        "| free-form queries | split | queries | gallery | success@1 | success@10 |\n|---|---|---:|---:|---:|---:|\n| {} | {split} | {} | {} | {} | {} |\n",
        file.display().to_string().replace('|', "\\|"),
        m.queries,
        m.gallery,
        percent(Some(m.success_at_1)),
        percent(Some(m.success_at_10)),
    )
}

/// `native eval`: loads a run (or a checkpoint folder) and evaluates it; with `queries` (a query
/// set file and the split whose images are its gallery) also the free-form success@1/@10.
pub fn eval(
    model: &Path,
    data: Option<&str>,
    count: usize,
    device: DeviceChoice,
    json: Option<&Path>,
    queries: Option<(&Path, Split)>,
) -> Result<()> {
    // A bad query file fails before anything is loaded or embedded.
    let query_set = queries.map(|(file, split)| QuerySet::load(file).map(|set| (file, split, set))).transpose()?;
    let selected = device::select(device)?;
    let device = selected.device.clone();
    let loaded = load_model(model, &device)?;
    let spec = data.unwrap_or(&loaded.data);
    let dataset = data::open(spec, loaded.config.image_size(), false)?;
    eprintln!("evaluating {} on {} with {}", loaded.description, dataset.name(), selected.description);
    // Free-form first: an id missing from the gallery is reported before the longer evaluation.
    let freeform = match &query_set {
        Some((file, split, set)) => {
            let metrics = evaluate_freeform(
                &loaded.model,
                &loaded.config,
                &loaded.tokenizer,
                dataset.as_ref(),
                *split,
                set,
                64,
                &device,
            )?;
            Some((*file, *split, metrics))
        }
        None => None,
    };
    let mut results = Vec::new();
    for split in report_splits(dataset.as_ref()) {
        results.push((
            split,
            evaluate(&loaded.model, &loaded.config, &loaded.tokenizer, dataset.as_ref(), split, count, 64, &device)?,
        ));
    }
    println!("{}", metrics_table(&results));
    if let Some((file, split, metrics)) = &freeform {
        println!("{}", freeform_table(file, *split, metrics));
    }
    if let Some(path) = json {
        let mut value: serde_json::Map<_, _> =
            results.iter().map(|(s, m)| (s.to_string(), serde_json::to_value(m).unwrap_or_default())).collect();
        if let Some((file, split, metrics)) = &freeform {
            let entry = serde_json::json!({"file": file.display().to_string(), "split": split,
                "queries": metrics.queries, "gallery": metrics.gallery, "success_at_1": metrics.success_at_1,
                "success_at_10": metrics.success_at_10, "outcomes": metrics.outcomes});
            value.insert("freeform".to_string(), entry);
        }
        checkpoint::write_atomic(path, serde_json::to_string_pretty(&value)?.as_bytes())?;
    }
    Ok(())
}

/// A model to use, from a bundle, a run folder (its `bundle/`, else its latest checkpoint) or a
/// checkpoint folder.
pub struct LoadedModel {
    /// The weights.
    pub model: Embedder,
    /// Its config.
    pub config: ModelConfig,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// The data it was trained on.
    pub data: String,
    /// The bundle's model id (`None` for a checkpoint: index and search need a bundle).
    pub model_id: Option<String>,
    /// Where it came from, for messages.
    pub description: String,
}

/// Loads `path` as a bundle, a run folder or a checkpoint folder.
pub fn load_model(path: &Path, device: &burn::tensor::Device) -> Result<LoadedModel> {
    if let Ok(dir) = ega_core::bundle::resolve(path) {
        let bundle = ega_core::bundle::load(&dir, device)?;
        return Ok(LoadedModel {
            description: format!(
                "bundle {} (model {}, {} steps)",
                dir.display(),
                bundle.config.model_id,
                bundle.config.steps
            ),
            model_id: Some(bundle.config.model_id),
            data: bundle.config.data,
            config: bundle.config.model,
            model: bundle.model,
            tokenizer: bundle.tokenizer,
        });
    }
    let checkpoint = if path.join("run.json").exists() {
        checkpoint::load(path, device)?
    } else {
        checkpoint::load_latest(path, device)?
    };
    Ok(LoadedModel {
        description: format!("{} (step {})", checkpoint.folder.display(), checkpoint.state.step),
        model_id: None,
        data: checkpoint.state.data,
        config: checkpoint.state.model,
        model: checkpoint.model,
        tokenizer: checkpoint.tokenizer,
    })
}
