//! `native train` and `native eval`: arranging ega-core's trainer, data, checkpoints and
//! evaluation into a run folder, with progress and a final table.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::module::Module;
use clap::Args;
use ega_core::checkpoint::{self, RunOptions, RunState};
use ega_core::data::text_pairs::TextPairs;
use ega_core::data::{self, Split};
use ega_core::device::{self, DeviceChoice};
use ega_core::eval::freeform::{evaluate_freeform_against, Against, FreeformMetrics, QuerySet};
use ega_core::eval::{evaluate, RetrievalMetrics};
use ega_core::kernels;
use ega_core::loss::{LossConfig, LossKind};
use ega_core::model::{Embedder, FreezePart, LoraConfig, ModelConfig};
use ega_core::parts::Merges;
use ega_core::tokenizer::Tokenizer;
use ega_core::train::{batch_indices, make_batch, make_text_batch, stage_at, total_steps, Stage, TrainConfig, Trainer};
use ega_core::EgaError;
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{LossArgs, StartArgs, DEVICE_HELP};

/// A run to train or resume, resolved from `TrainArgs` (by [`command`]) or built by `ablate`:
/// the loss and training configs themselves, not flags.
pub struct TrainRequest {
    /// Preset name of a new run.
    pub preset: String,
    /// Data spec of a new run.
    pub data: String,
    /// Skip bad JSONL lines instead of failing (given on a resume: from now on).
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
    /// Evaluate on held-out pairs every this many steps (0: only at the end). `None`: the
    /// resumed run's saved value (a new run: the default).
    pub eval_every: Option<usize>,
    /// Pairs of the final evaluation (the periodic ones use at most 200). `None` as above.
    pub eval_count: Option<usize>,
    /// Checkpoint every this many steps. `None` as above.
    pub checkpoint_every: Option<usize>,
    /// A resumed run's new length in steps (`--steps` given with `--resume`): it changes the
    /// length of the run's last stage. `None`: as saved.
    pub steps: Option<usize>,
    /// Stop after this step (for tests of resuming); the run stays resumable.
    pub stop_after: Option<usize>,
    /// Where a new run's model starts.
    pub start: ModelStart,
    /// Decoder layers to keep of a pretrained start.
    pub lm_layers: Option<usize>,
    /// A pretrained vision stem's folder for a new run's smolvlm model (`--vision-stem`).
    pub vision_stem: Option<PathBuf>,
    /// LoRA adapters of a new run's model (a recipe's stages name their own).
    pub lora: Option<LoraConfig>,
    /// A staged recipe's stages (empty: one stage of `train` and `loss`).
    pub stages: Vec<Stage>,
    /// Prompt templates and pooling of a new run's model that replace its defaults.
    pub prompts: PromptOverride,
}

/// `--query-prompt` / `--target-prompt` / `--pooling`: what replaces a new model's own.
#[derive(Debug, Clone, Default)]
pub struct PromptOverride {
    /// The caption's template (`{text}` once).
    pub query: Option<String>,
    /// The image's template (`<image>` once).
    pub target: Option<String>,
    /// How embeddings are pooled.
    pub pooling: Option<ega_core::prompt::Pooling>,
}

impl PromptOverride {
    /// Puts what was given into `config`'s prompts (checked by `PromptConfig::validate`).
    fn apply(&self, config: &mut ModelConfig) -> Result<()> {
        if let Some(query) = &self.query {
            config.prompts.query = query.clone();
        }
        if let Some(target) = &self.target {
            config.prompts.target = target.clone();
        }
        if let Some(pooling) = self.pooling {
            config.prompts.pooling = pooling;
        }
        config.prompts.validate()?;
        Ok(())
    }
}

/// Where a new run's model starts.
#[derive(Debug, Clone)]
pub enum ModelStart {
    /// The preset's random weights (and a tokenizer trained on the data).
    Preset,
    /// A pretrained language model's decoder and tokenizer (`--init-lm`).
    Lm(PathBuf),
    /// A whole SmolVLM checkpoint (`--init`).
    Smolvlm(PathBuf),
}

/// `native train`'s flags. Defaults: `TrainConfig`'s, `RunOptions`' and `training_loss()`'s.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Model preset: tiny, small or base (the from-scratch `mini` models), or tiny-smolvlm (a tiny
    /// random SmolVLM-shaped model, for trying LoRA and the recipe in seconds). With --init-lm it
    /// sizes the new vision tower (tiny: 32 px, small: 64 px, base: 128 px).
    #[arg(long, default_value = "small")]
    pub preset: String,
    #[command(flatten)]
    pub start: StartArgs,
    /// A staged recipe in one run folder (resumable across stages). pretrained-lm: stage 1
    /// "align" trains the vision tower and connector with the decoder frozen (info-NCE, no hard
    /// negatives; --align-steps, --align-lr), then stage 2 "contrastive" adds LoRA adapters to the
    /// decoder and trains them with the vision tower and connector (--loss with --hard-negatives;
    /// --steps, --lr). With --text-steps, a "text" stage comes first (text pairs only; its
    /// adapters are merged into the decoder before stage 1).
    #[arg(long, value_enum)]
    pub recipe: Option<RecipeName>,
    /// Steps of the recipe's alignment stage.
    #[arg(long, default_value_t = 200)]
    pub align_steps: usize,
    /// Peak learning rate of the recipe's alignment stage.
    #[arg(long, default_value_t = 1e-3)]
    pub align_lr: f64,
    /// Steps of a text stage run before the recipe's alignment stage (0: none): LoRA adapters on
    /// the decoder learn, text against text (--text-data), to put a description next to the name
    /// it describes; they are then merged into the decoder, which the alignment stage keeps frozen.
    #[arg(long, default_value_t = 0)]
    pub text_steps: usize,
    /// The text stage's pairs: wordnet[:DIR] (definition → words; scripts/setup-wordnet.sh),
    /// openmoji[:DIR] (the training split's keywords → annotation), tsv:FILE (QUERY<TAB>TARGET
    /// lines), or several joined by ',' (SOURCE*K repeats one K times).
    #[arg(long, default_value = "wordnet,openmoji*8")]
    pub text_data: String,
    /// Peak learning rate of the text stage.
    #[arg(long, default_value_t = 5e-4)]
    pub text_lr: f64,
    /// Pairs per step of the text stage.
    #[arg(long, default_value_t = 32)]
    pub text_batch_size: usize,
    /// Data: shapes (built in, nothing to download), openmoji[:DIR], openclipart[:DIR], fluentui[:DIR]
    /// (after scripts/setup-extras.sh NAME), jsonl:FILE (your own pairs), or a weighted mix of those:
    /// mix:openmoji=0.5,fluentui=0.3,openclipart=0.2 (mix:a,b weighs them equally).
    #[arg(long, default_value = "shapes")]
    pub data: String,
    /// Skip (and count) bad JSONL lines and unreadable images instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    #[command(flatten)]
    pub loss: LossArgs,
    /// Optimizer steps (the default run, `small` on shapes, fits in 15 minutes on 2 CPU cores).
    /// With --resume: the run's new length (its last stage is lengthened or shortened, and its
    /// learning-rate schedule recomputed over the new length).
    #[arg(long, default_value_t = TrainConfig::default().steps)]
    pub steps: usize,
    /// Pairs per step.
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    pub batch_size: usize,
    /// Explicit hard-negative images per pair appended to the targets (when the data has them).
    #[arg(long, default_value_t = TrainConfig::default().hard_negatives)]
    pub hard_negatives: usize,
    /// Peak learning rate (AdamW, linear warm-up then cosine).
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    pub lr: f64,
    /// Learning-rate warm-up steps.
    #[arg(long, default_value_t = TrainConfig::default().warmup_steps)]
    pub warmup: usize,
    /// Use EGA's full α from the first step (by default α is 0 for --alpha-start steps, then
    /// ramps in over --alpha-ramp steps: from a fresh model un-rescaled EGA can collapse the
    /// embeddings before anything is learnt).
    #[arg(long)]
    pub no_alpha_warmup: bool,
    /// Steps of plain info-NCE before EGA's α starts to ramp (default: --warmup).
    #[arg(long)]
    pub alpha_start: Option<usize>,
    /// Steps over which α ramps to its value (default: --warmup).
    #[arg(long)]
    pub alpha_ramp: Option<usize>,
    /// Per-tensor gradient-norm clip (0 disables).
    #[arg(long, default_value_t = TrainConfig::default().grad_clip)]
    pub grad_clip: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = TrainConfig::default().weight_decay)]
    pub weight_decay: f64,
    /// Seed of the initialisation and the data order.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    pub seed: u64,
    /// GradCache: embed the batch C rows at a time (twice: without, then with autodiff), so
    /// activation memory is that of C rows while the gradients stay the whole batch's.
    #[arg(long, value_name = "C")]
    pub grad_cache_chunk: Option<usize>,
    #[arg(long, default_value = "auto", help = DEVICE_HELP)]
    pub device: DeviceChoice,
    /// Run folder (default: runs/<loss>-<preset>-seed<seed>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this folder from its latest checkpoint (the newest intact one), with
    /// the options it was started with; only --steps, --eval-every, --eval-count,
    /// --checkpoint-every, --skip-bad and --device may be given with it. A finished run is left
    /// as it is.
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Evaluate on 200 held-out pairs every this many steps (0: only at the end).
    #[arg(long, default_value_t = RunOptions::default().eval_every)]
    pub eval_every: usize,
    /// Held-out pairs of the final evaluation (per split).
    #[arg(long, default_value_t = RunOptions::default().eval_count)]
    pub eval_count: usize,
    /// Write a checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = RunOptions::default().checkpoint_every)]
    pub checkpoint_every: usize,
    /// Stop after this many steps in total (the run stays resumable).
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
}

/// Staged training recipes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecipeName {
    /// Align a new vision tower to a frozen pretrained decoder, then tune with LoRA and hard
    /// negatives.
    PretrainedLm,
}

/// Flags `--resume` takes: the rest are the run's own, saved in its run.json.
const RESUME_FLAGS: &[&str] =
    &["resume", "device", "steps", "eval-every", "eval-count", "checkpoint-every", "skip-bad", "stop-after"];

/// The long flags of `native train` given on the command line (not defaults), from the train
/// subcommand's matches.
pub fn given_flags(matches: &clap::ArgMatches) -> Vec<String> {
    TrainArgs::augment_args(clap::Command::new("train"))
        .get_arguments()
        .filter(|arg| matches.value_source(arg.get_id().as_str()) == Some(clap::parser::ValueSource::CommandLine))
        .filter_map(|arg| arg.get_long().map(str::to_string))
        .collect()
}

/// `native train`: checks the flags (with --resume, only those a resumed run takes; `given`: the
/// flags given on the command line) and runs or resumes the run.
pub fn command(args: TrainArgs, given: &[String]) -> Result<()> {
    if args.resume.is_some() {
        // A resumed run keeps its own options; one given anyway would be ignored silently.
        let fixed: Vec<String> =
            given.iter().filter(|f| !RESUME_FLAGS.contains(&f.as_str())).map(|f| format!("--{f}")).collect();
        anyhow::ensure!(
            fixed.is_empty(),
            "{} with --resume: a resumed run keeps the options it was started with (saved in its run.json); with --resume only --steps, --eval-every, --eval-count, --checkpoint-every, --skip-bad and --device can be given. Start a new run with --out to change the others",
            fixed.join(", ")
        );
    }
    let is_given = |flag: &str| given.iter().any(|f| f == flag);
    let loss = args.loss.config();
    loss.validate()?;
    let train = TrainConfig {
        steps: args.steps,
        batch_size: args.batch_size,
        hard_negatives: args.hard_negatives,
        lr: args.lr,
        warmup_steps: args.warmup,
        weight_decay: args.weight_decay,
        grad_clip: args.grad_clip,
        alpha_warmup: !args.no_alpha_warmup,
        alpha_start: args.alpha_start.unwrap_or(args.warmup),
        alpha_ramp: args.alpha_ramp.unwrap_or(args.warmup),
        seed: args.seed,
        grad_cache_chunk: args.grad_cache_chunk,
        freeze: args.start.freeze.clone(),
        ..TrainConfig::default()
    };
    train.validate()?;
    ModelConfig::preset(&args.preset)?;
    let (start, lora) = args.start.resolve()?;
    let prompts = args.start.prompts()?;
    // The recipe's stages; without one, the run is a single stage of the options above.
    anyhow::ensure!(
        args.recipe.is_some() || args.text_steps == 0,
        "--text-steps adds a stage to a recipe: give it with --recipe pretrained-lm"
    );
    let (stages, initial_lora) = match args.recipe {
        None => (Vec::new(), lora),
        Some(RecipeName::PretrainedLm) => {
            anyhow::ensure!(args.align_steps >= 1, "--align-steps must be at least 1");
            anyhow::ensure!(
                args.start.freeze.is_empty(),
                "--freeze is set by --recipe pretrained-lm (stage 1: lm; stage 2: lm, with LoRA)"
            );
            let align = TrainConfig {
                steps: args.align_steps,
                lr: args.align_lr,
                hard_negatives: 0,
                warmup_steps: args.warmup.min(args.align_steps / 5),
                alpha_warmup: false,
                freeze: vec![FreezePart::Lm],
                ..train.clone()
            };
            let lora = lora.unwrap_or(args.start.lora(8));
            let contrastive = TrainConfig { freeze: vec![FreezePart::Lm], ..train.clone() };
            let mut stages = Vec::new();
            if args.text_steps > 0 {
                // Checked now: a missing source is better found before the model loads.
                let pairs =
                    TextPairs::open(&args.text_data).with_context(|| format!("--text-data {}", args.text_data))?;
                anyhow::ensure!(
                    pairs.len() >= args.text_batch_size,
                    "--text-data {}: {} pairs, fewer than a batch of {} (--text-batch-size)",
                    args.text_data,
                    pairs.len(),
                    args.text_batch_size
                );
                let text = TrainConfig {
                    steps: args.text_steps,
                    lr: args.text_lr,
                    batch_size: args.text_batch_size,
                    hard_negatives: 0,
                    warmup_steps: args.warmup.min(args.text_steps / 5),
                    alpha_start: args.warmup.min(args.text_steps / 5),
                    alpha_ramp: args.warmup.min(args.text_steps / 5),
                    freeze: vec![FreezePart::Lm, FreezePart::Vision, FreezePart::Connector],
                    ..train.clone()
                };
                stages.push(Stage {
                    name: "text".into(),
                    train: text,
                    loss: loss.clone(),
                    lora: Some(lora.clone()),
                    text_pairs: Some(args.text_data.clone()),
                });
            }
            stages.push(Stage {
                name: "align".into(),
                train: align,
                loss: loss.clone().with_kind(LossKind::InfoNce),
                lora: None,
                text_pairs: None,
            });
            stages.push(Stage {
                name: "contrastive".into(),
                train: contrastive,
                loss: loss.clone(),
                lora: Some(lora),
                text_pairs: None,
            });
            (stages, None)
        }
    };
    anyhow::ensure!(args.eval_count >= 1, "--eval-count must be at least 1");
    anyhow::ensure!(args.steps >= 1, "--steps must be at least 1");
    let resume = args.resume.is_some();
    // A new run takes every option (defaults included); a resumed one only those given.
    let chosen = |flag: &str, value: usize| (!resume || is_given(flag)).then_some(value);
    let (eval_every, eval_count, checkpoint_every) = (
        chosen("eval-every", args.eval_every),
        chosen("eval-count", args.eval_count),
        chosen("checkpoint-every", args.checkpoint_every),
    );
    let steps = if resume { chosen("steps", args.steps) } else { None };
    let (out, resume) = match args.resume {
        Some(dir) => (dir, true),
        None => (
            args.out.unwrap_or_else(|| {
                PathBuf::from(format!("runs/{}-{}{}-seed{}", loss.kind, args.preset, args.start.suffix(), args.seed))
            }),
            false,
        ),
    };
    run(TrainRequest {
        preset: args.preset,
        data: args.data,
        skip_bad: args.skip_bad,
        loss,
        train,
        device: args.device,
        out,
        resume,
        eval_every,
        eval_count,
        checkpoint_every,
        steps,
        stop_after: args.stop_after,
        start,
        lm_layers: args.start.lm_layers,
        vision_stem: args.start.vision_stem.clone(),
        lora: initial_lora,
        stages,
        prompts,
    })?;
    Ok(())
}

impl TrainRequest {
    /// The single stage of a run without a recipe.
    fn stage_of_plain_run(&self) -> Stage {
        Stage {
            name: "train".into(),
            train: self.train.clone(),
            loss: self.loss.clone(),
            lora: self.lora.clone(),
            text_pairs: None,
        }
    }
}

/// A new run's model config, model, tokenizer, data and the LoRA merges its weights went through.
type NewModel = (ModelConfig, Embedder, Tokenizer, Box<dyn ega_core::data::Dataset>, Merges);

/// A new run's model, its tokenizer and the data.
fn new_model(request: &TrainRequest, device: &burn::tensor::Device) -> Result<NewModel> {
    let seed = request.train.seed;
    let started = Instant::now();
    let pretrained = match &request.start {
        ModelStart::Preset => None,
        ModelStart::Lm(path) => Some((
            path,
            ega_core::init::from_lm(path, &request.preset, request.lm_layers, request.lora.clone(), seed, device)
                .with_context(|| format!("--init-lm {}", path.display()))?,
        )),
        ModelStart::Smolvlm(path) => Some((
            path,
            ega_core::init::from_smolvlm(path, request.lm_layers, request.lora.clone(), seed, device)
                .with_context(|| format!("--init {}", path.display()))?,
        )),
    };
    let pretrained = match (pretrained, &request.vision_stem) {
        (Some((path, start)), Some(dir)) => Some((
            path,
            ega_core::init::with_vision_stem(start, dir, seed, device)
                .with_context(|| format!("--vision-stem {}", dir.display()))?,
        )),
        (pretrained, _) => pretrained,
    };
    if let Some((path, start)) = pretrained {
        eprintln!(
            "{}: {} tensors ({} parameters) loaded, {} fresh, in {:.1} s; tokenizer of {} tokens from the checkpoint",
            path.display(),
            start.report.loaded,
            start.report.loaded_params,
            start.report.fresh,
            started.elapsed().as_secs_f64(),
            start.tokenizer.vocab_size()
        );
        let dataset = data::open(&request.data, start.config.image_size(), request.skip_bad)?;
        let mut config = start.config;
        request.prompts.apply(&mut config)?;
        if !start.merges.is_empty() {
            eprintln!("LoRA adapters merged into the decoder so far: {}", start.merges.names().join(", "));
        }
        return Ok((config, start.model, start.tokenizer, dataset, start.merges));
    }
    let mut model_config = ModelConfig::preset(&request.preset)?;
    request.prompts.apply(&mut model_config)?;
    if let Some(lora) = &request.lora {
        match &mut model_config.architecture {
            ega_core::model::Architecture::Smolvlm(s) => s.lora = Some(lora.clone()),
            _ => bail!(
                "LoRA adapters need a smolvlm model: --init-lm PATH, --init PATH or --preset tiny-smolvlm (preset {} is a mini model)",
                request.preset
            ),
        }
    }
    let dataset = data::open(&request.data, model_config.image_size(), request.skip_bad)?;
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
    let model = Embedder::new(&model_config, seed, device)?;
    if let Some(dir) = &request.vision_stem {
        let start = ega_core::init::Started {
            config: model_config,
            model,
            tokenizer,
            report: Default::default(),
            merges: Merges::default(),
        };
        let start = ega_core::init::with_vision_stem(start, dir, seed, device)
            .with_context(|| format!("--vision-stem {}", dir.display()))?;
        // The stem reads larger images.
        let dataset = data::open(&request.data, start.config.image_size(), request.skip_bad)?;
        return Ok((start.config, start.model, start.tokenizer, dataset, start.merges));
    }
    Ok((model_config, model, tokenizer, dataset, Merges::default()))
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} step {pos}/{len} [{bar:30}] {msg} ETA {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Prints `line` above the progress bar; a hidden bar (not a terminal) swallows `println`, so the
/// line is written plainly then.
fn say(progress: &ProgressBar, line: String) {
    if progress.is_hidden() {
        eprintln!("{line}");
    } else {
        progress.println(line);
    }
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
    ega_core::store::write_atomic(path, text.as_bytes()).context("rewriting metrics.jsonl")
}

/// Final metrics of a finished run, per reported split.
pub type SplitMetrics = Vec<(Split, RetrievalMetrics)>;

/// Runs (or resumes) a training run; returns the final metrics on the test and unseen splits, or
/// `None` when it stopped early (`stop_after`) and stays resumable. One process at a time writes
/// a run folder: it holds `<out>/.lock` (issue 16, `train_concurrent`).
pub fn run(request: TrainRequest) -> Result<Option<SplitMetrics>> {
    let created = !request.out.exists();
    if request.resume && created {
        bail!("--resume {}: no such run folder", request.out.display());
    }
    std::fs::create_dir_all(&request.out).with_context(|| format!("creating {}", request.out.display()))?;
    let locked = ega_core::lock::OutputLock::acquire(&request.out.join(".lock"), &request.out);
    let result = match locked {
        Ok((lock, note)) => {
            if let Some(note) = note {
                eprintln!("{note}");
            }
            let result = run_locked(&request);
            drop(lock);
            result
        }
        Err(err) => Err(err.into()),
    };
    if created && result.is_err() {
        // A new run that failed before writing anything leaves no empty folder behind.
        let _ = std::fs::remove_dir(&request.out);
    }
    result
}

/// The stages of a run: a recipe's, or the one stage of a run without one.
fn stages_of(state: &RunState) -> Vec<Stage> {
    if state.stages.is_empty() {
        vec![Stage {
            name: "train".into(),
            train: state.train.clone(),
            loss: state.loss.clone(),
            lora: state.model.smolvlm().and_then(|s| s.lora.clone()),
            text_pairs: None,
        }]
    } else {
        state.stages.clone()
    }
}

/// `--steps` given with `--resume`: the run's last stage is made longer (or shorter) so that the
/// run ends after `steps` steps. Its learning-rate schedule is computed over the new length.
/// Returns a line that says what changed, or `None` when `steps` is the run's length already.
fn change_length(state: &mut RunState, steps: usize) -> Result<Option<String>> {
    let stages = stages_of(state);
    let total = total_steps(&stages);
    if steps == total {
        return Ok(None);
    }
    let last = stages.len() - 1;
    let last_start = total - stages[last].train.steps;
    if steps < state.step.max(last_start + 1) {
        bail!(
            "--steps {steps} with --resume: the run has taken {} of its {total} steps{}; give at least {}, or leave --steps out to finish it as it was set up",
            state.step,
            if stages.len() > 1 { format!(" and its last stage, {}, starts at step {last_start}", stages[last].name) } else { String::new() },
            state.step.max(last_start + 1)
        );
    }
    let stage_steps = steps - last_start;
    if state.stages.is_empty() {
        state.train.steps = stage_steps;
    } else {
        state.stages[last].train.steps = stage_steps;
        if state.step >= last_start {
            state.train.steps = stage_steps;
        }
    }
    ega_core::train::validate_stages(&stages_of(state), &state.model)?;
    Ok(Some(format!(
        "--steps {steps}: the run now ends after {steps} steps instead of {total}{}; the learning-rate schedule is recomputed over the new length from step {} on",
        if stages.len() > 1 { format!(" (its last stage, {}, has {stage_steps})", stages[last].name) } else { String::new() },
        state.step
    )))
}

/// Options given with `--resume` replace the saved ones (and are saved with the next checkpoint);
/// each change is said.
fn apply_resume_options(state: &mut RunState, request: &TrainRequest) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let options = &mut state.options;
    for (flag, saved, given) in [
        ("--eval-every", &mut options.eval_every, request.eval_every),
        ("--eval-count", &mut options.eval_count, request.eval_count),
        ("--checkpoint-every", &mut options.checkpoint_every, request.checkpoint_every),
    ] {
        if let Some(value) = given.filter(|v| v != saved) {
            notes.push(format!("{flag} {value} replaces the run's {saved}"));
            *saved = value;
        }
    }
    if request.skip_bad && !options.skip_bad {
        notes.push("--skip-bad: bad data lines are skipped from now on".into());
        options.skip_bad = true;
    }
    if let Some(steps) = request.steps {
        notes.extend(change_length(state, steps)?);
    }
    Ok(notes)
}

/// The saved result of a run that is finished (every step taken, final evaluation and bundle
/// written): its metrics and model id. `None` when something is left to do.
fn finished(run: &Path, state: &RunState) -> Option<(SplitMetrics, String)> {
    if state.step < total_steps(&stages_of(state)) {
        return None;
    }
    let config = ega_core::fs::read_regular(&run.join("bundle/config.json"), ega_core::fs::MAX_JSON).ok()?;
    let config: serde_json::Value = serde_json::from_slice(ega_core::fs::strip_bom(&config)).ok()?;
    let model_id = config.get("model_id")?.as_str()?.to_string();
    Some((finished_metrics(run)?, model_id))
}

fn run_locked(request: &TrainRequest) -> Result<Option<SplitMetrics>> {
    let removed = checkpoint::remove_stale_temps(&request.out);
    if !removed.is_empty() {
        let names: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
        eprintln!("note: removed what a writer that died left behind (a full disk, or killed): {}", names.join(", "));
    }
    let selected = device::select(request.device)?;
    let device = selected.device.clone().autodiff();
    let inference = selected.device.clone();
    eprintln!("device: {}", selected.description);
    eprintln!("loss path: {}", kernels::ega_path(&device));

    let (mut state, mut model, tokenizer, mut optimizer, dataset, mut merges) = if request.resume {
        let checkpoint = checkpoint::load_latest(&request.out, &device)?;
        for reason in &checkpoint.passed_over {
            eprintln!("note: passed over a damaged checkpoint: {reason}");
        }
        if !checkpoint.passed_over.is_empty() {
            eprintln!("note: resuming from the newest intact checkpoint instead, {}", checkpoint.folder.display());
            checkpoint::mark_latest(&request.out, &checkpoint.folder)?;
        }
        let mut state = checkpoint.state;
        let notes = apply_resume_options(&mut state, request)?;
        if let Some((results, model_id)) = finished(&request.out, &state) {
            // Nothing to do, and nothing is touched: no re-evaluation, no new bundle (issue 16,
            // `noop_resume`).
            println!("{}", metrics_table(&results));
            println!(
                "{} is finished: {} of {} steps, bundle {} (model {model_id}); nothing changed{}. Evaluate it again with `native eval --model {0}`, or train it longer with `--resume {0} --steps N`",
                request.out.display(),
                state.step,
                total_steps(&stages_of(&state)),
                request.out.join("bundle").display(),
                if notes.is_empty() { "" } else { " (the options given with --resume apply to a run with steps left)" }
            );
            return Ok(Some(results));
        }
        for note in notes {
            eprintln!("note: {note}");
        }
        eprintln!("resuming {} at step {}", checkpoint.folder.display(), state.step);
        let dataset = data::open(&state.data, state.model.image_size(), state.options.skip_bad)?;
        let optimizer = (checkpoint.optimizer, checkpoint.folder.join("optimizer.bin"));
        (state, checkpoint.model, checkpoint.tokenizer, Some(optimizer), dataset, checkpoint.merges)
    } else {
        if request.out.join("checkpoints").exists() {
            bail!(
                "{} already holds a run; use --resume {0} to continue it, or choose another --out",
                request.out.display()
            );
        }
        let (model_config, model, tokenizer, dataset, merges) = new_model(request, &device)?;
        let stages = request.stages.clone();
        let checked = if stages.is_empty() { vec![request.stage_of_plain_run()] } else { stages.clone() };
        ega_core::train::validate_stages(&checked, &model_config)?;
        let first = stages.first();
        let state = RunState {
            format_version: checkpoint::FORMAT_VERSION,
            ega_core_version: ega_core::VERSION.to_string(),
            step: 0,
            model: model_config,
            loss: first.map_or_else(|| request.loss.clone(), |s| s.loss.clone()),
            train: first.map_or_else(|| request.train.clone(), |s| s.train.clone()),
            data: request.data.clone(),
            stages,
            options: {
                let defaults = checkpoint::RunOptions::default();
                checkpoint::RunOptions {
                    eval_every: request.eval_every.unwrap_or(defaults.eval_every),
                    eval_count: request.eval_count.unwrap_or(defaults.eval_count),
                    checkpoint_every: request.checkpoint_every.unwrap_or(defaults.checkpoint_every),
                    skip_bad: request.skip_bad,
                }
            },
            // As typed, after the program's own name (`native train …`).
            command: std::env::args().skip(1).collect(),
        };
        (state, model, tokenizer, None, dataset, merges)
    };
    if !dataset.skipped().is_empty() {
        eprintln!("skipped {} bad data lines (--skip-bad); first: {}", dataset.skipped().len(), dataset.skipped()[0]);
    }
    let stages = stages_of(&state);
    let train_len = dataset.len(Split::Train).context("the training split has no length")?;
    let log_path = request.out.join("metrics.jsonl");
    truncate_log(&log_path, state.step)?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;

    let total = total_steps(&stages);
    let last = request.stop_after.map(|s| s.min(total)).unwrap_or(total);
    eprintln!(
        "training {} ({} parameters) on {} for {} steps{} → {}",
        state.model.preset,
        burn::module::Module::num_params(&model),
        dataset.name(),
        total,
        if stages.len() > 1 { format!(" in {} stages", stages.len()) } else { String::new() },
        request.out.display()
    );
    let progress = ProgressBar::new(total as u64).with_style(style());
    progress.set_position(state.step as u64);
    let started = Instant::now();
    let mut step = state.step;
    let mut samples = 0usize;
    while step < last {
        let (index, local) = stage_at(&stages, step);
        let stage = &stages[index];
        // The stage's adapters: a model whose adapters differ has them merged into its weights
        // (what a text stage's adapters learnt is kept) and is re-built with the stage's, fresh.
        if let Some(smolvlm) = state.model.smolvlm().filter(|s| s.lora != stage.lora) {
            if smolvlm.lora.is_some() {
                let name = format!("stage-{}-{}", index + 1, stage.name);
                let (plain, merged) = merges
                    .merge_into_weights(&name, &model, &state.model, &device)?
                    .context("merging the previous stage's LoRA adapters")?;
                (model, state.model) = (merged, plain);
                let prefix = format!("stage {}/{} {}", index + 1, stages.len(), stage.name);
                say(&progress, format!("{prefix}: the previous stage's LoRA adapters merged into the decoder"));
            }
            if stage.lora.is_some() {
                let mut config = state.model.clone();
                if let ega_core::model::Architecture::Smolvlm(s) = &mut config.architecture {
                    s.lora = stage.lora.clone();
                }
                model =
                    model.rebuild(&config, stage.train.seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9), &device)?;
                state.model = config;
            }
        }
        state.train = stage.train.clone();
        state.loss = stage.loss.clone();
        let mut trainer = Trainer::new(model, stage.train.clone(), stage.loss.clone(), local)?;
        // Optimizer state saved inside this stage resumes it; at a stage's first step the optimizer
        // starts fresh (a checkpoint at the boundary holds the previous stage's).
        if let Some((bytes, file)) = optimizer.take().filter(|_| local > 0) {
            trainer.load_optimizer_bytes(bytes).with_context(|| file.display().to_string())?;
        }
        let (trainable, all) = trainer.model().trainable_params();
        let prefix = if stages.len() > 1 {
            format!("stage {}/{} {}: ", index + 1, stages.len(), stage.name)
        } else {
            String::new()
        };
        let line = format!(
            "{}{} steps with {}, lr {:.1e}, batch {} (+{} hard negatives each){}{}{}: {trainable} of {all} parameters trained{}",
            prefix,
            stage.train.steps,
            stage.loss.kind,
            stage.train.lr,
            stage.train.batch_size,
            stage.train.hard_negatives,
            stage.train.grad_cache_chunk.map(|rows| format!(", GradCache chunks of {rows}")).unwrap_or_default(),
            if stage.train.freeze.is_empty() {
                String::new()
            } else {
                format!(", frozen: {}", stage.train.freeze.iter().map(ToString::to_string).collect::<Vec<_>>().join(","))
            },
            stage.lora.as_ref().map(|l| format!(", LoRA rank {} α {} on {}", l.rank, l.alpha, l.targets.join(","))).unwrap_or_default(),
            if trainer.caption_cache_stats().is_some() { "; the text path is frozen: each caption is embedded once" } else { "" },
        );
        say(&progress, line);
        let stage_end = (step - local + stage.train.steps).min(last);
        let save = |trainer: &Trainer, state: &RunState, step: usize| -> Result<()> {
            let snapshot = RunState { step, ..state.clone() };
            let optimizer = trainer.optimizer_bytes()?;
            checkpoint::save_with_merges(&request.out, &snapshot, trainer.model(), &optimizer, &tokenizer, &merges)
                .with_context(|| {
                    format!(
                        "writing the checkpoint of step {step} (the run is intact at its last checkpoint: continue it with --resume {})",
                        request.out.display()
                    )
                })?;
            Ok(())
        };
        let text_pairs = match &stage.text_pairs {
            Some(spec) => Some(TextPairs::open(spec).with_context(|| format!("the {} stage's pairs", stage.name))?),
            None => None,
        };
        while step < stage_end {
            let batch = match &text_pairs {
                Some(pairs) => {
                    let indices = batch_indices(stage.train.seed, step, stage.train.batch_size, pairs.len())?;
                    make_text_batch(pairs, &indices, &state.model, &tokenizer, &device)?
                }
                None => {
                    let indices = batch_indices(stage.train.seed, step, stage.train.batch_size, train_len)?;
                    make_batch(
                        dataset.as_ref(),
                        Split::Train,
                        &indices,
                        stage.train.hard_negatives,
                        &state.model,
                        &tokenizer,
                        &device,
                    )?
                }
            };
            let stats = match trainer.step(&batch) {
                Ok(stats) => stats,
                Err(EgaError::NonFinite { value, .. }) => {
                    progress.abandon();
                    let err = EgaError::NonFinite { step, value };
                    bail!("{err}; resume from {} with a lower --lr", request.out.display());
                }
                Err(err) => return Err(err.into()),
            };
            step += 1;
            samples += stage.train.batch_size;
            let samples_per_s = samples as f64 / started.elapsed().as_secs_f64();
            progress.set_position(step as u64);
            let message = format!(
                "loss {:.4} lr {:.2e} α {:.2} {:.1} samples/s",
                stats.loss, stats.lr, stats.alpha, samples_per_s
            );
            if progress.is_hidden() && (step % 10 == 0 || step == last) {
                // Not a terminal (a log file, CI): a plain line now and then instead of the bar.
                let eta = (last - step) as f64 * stage.train.batch_size as f64 / samples_per_s.max(1e-9);
                eprintln!("step {step}/{total} {message} ETA {eta:.0} s");
            }
            progress.set_message(message);
            let mut line = serde_json::json!({"step": step - 1, "loss": stats.loss, "lr": stats.lr,
                "alpha": stats.alpha, "samples_per_s": samples_per_s, "elapsed_s": started.elapsed().as_secs_f64()});
            if stages.len() > 1 {
                line["stage"] = serde_json::json!(stage.name);
            }
            log_line(&mut log, line)?;
            let options = &state.options;
            if options.eval_every > 0 && step % options.eval_every == 0 && step < total {
                // Evaluation runs without autodiff: no graph is kept for thousands of forward passes.
                let metrics = evaluate(
                    &trainer.model().valid(),
                    &state.model,
                    &tokenizer,
                    dataset.as_ref(),
                    Split::Test,
                    options.eval_count.min(200),
                    64,
                    &inference,
                )?;
                let line = format!("step {step}: test t2i R@1 {:.3}, i2t R@1 {:.3}", metrics.t2i_r1, metrics.i2t_r1);
                say(&progress, line);
                log_line(&mut log, serde_json::json!({"step": step - 1, "eval": {"test": metrics}}))?;
            }
            if step % options.checkpoint_every.max(1) == 0 || step == last || step == stage_end {
                save(&trainer, &state, step)?;
            }
        }
        if let Some(cache) = trainer.caption_cache_stats() {
            let line = format!(
                "{}caption cache: {} captions embedded once, {} query rows taken from the cache",
                prefix, cache.captions, cache.hits
            );
            say(&progress, line);
            log_line(&mut log, serde_json::json!({"step": step.saturating_sub(1), "caption_cache": cache}))?;
        }
        model = trainer.into_model();
    }
    progress.finish();
    if step < total {
        eprintln!("stopped after step {step} of {total}; continue with --resume {}", request.out.display());
        return Ok(None);
    }
    let final_model = model.valid();
    let mut results = Vec::new();
    for split in report_splits(dataset.as_ref()) {
        let metrics = evaluate(
            &final_model,
            &state.model,
            &tokenizer,
            dataset.as_ref(),
            split,
            state.options.eval_count,
            64,
            &inference,
        )?;
        results.push((split, metrics));
    }
    let json = serde_json::json!({
        "steps": total, "data": state.data, "loss": state.loss, "train": state.train, "model": state.model.preset,
        "stages": stages.iter().map(|s| serde_json::json!({"name": s.name, "steps": s.train.steps, "lr": s.train.lr,
            "loss": s.loss.kind.to_string(), "freeze": s.train.freeze, "lora": s.lora})).collect::<Vec<_>>(),
        "device": selected.description, "wall_time_s": started.elapsed().as_secs_f64(), "command": state.command,
        "eval": results.iter().map(|(split, m)| (split.to_string(), serde_json::to_value(m).unwrap_or_default())).collect::<serde_json::Map<_, _>>(),
    });
    ega_core::store::write_atomic(&request.out.join("metrics.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
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
        ega_core::store::StoredDtype::F32,
    )?;
    merges.write(&bundle_dir)?;
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
fn freeform_table(file: &Path, split: Split, against: Against, m: &FreeformMetrics) -> String {
    format!(
        "| free-form queries | split | queries | gallery | success@1 | success@10 |\n|---|---|---:|---:|---:|---:|\n| {} | {split} | {} | {} {against} | {} | {} |\n",
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
    queries: Option<(&Path, Split, Against)>,
) -> Result<()> {
    // A bad query file fails before anything is loaded or embedded.
    let query_set = queries
        .map(|(file, split, against)| QuerySet::load(file).map(|set| (file, split, against, set)))
        .transpose()?;
    let selected = device::select(device)?;
    let device = selected.device.clone();
    let loaded = crate::search::load_model(model, &device)?;
    let spec = data.unwrap_or(&loaded.data);
    let dataset = data::open(spec, loaded.config.image_size(), false)?;
    eprintln!("evaluating {} on {} with {}", loaded.description, dataset.name(), selected.description);
    // Free-form first: an id missing from the gallery is reported before the longer evaluation.
    let freeform = match &query_set {
        Some((file, split, against, set)) => {
            let metrics = evaluate_freeform_against(
                &loaded.model,
                &loaded.config,
                &loaded.tokenizer,
                dataset.as_ref(),
                *split,
                set,
                *against,
                64,
                &device,
            )?;
            Some((*file, *split, *against, metrics))
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
    if let Some((file, split, against, metrics)) = &freeform {
        println!("{}", freeform_table(file, *split, *against, metrics));
    }
    if let Some(path) = json {
        let mut value: serde_json::Map<_, _> =
            results.iter().map(|(s, m)| (s.to_string(), serde_json::to_value(m).unwrap_or_default())).collect();
        if let Some((file, split, against, metrics)) = &freeform {
            let entry = serde_json::json!({"file": file.display().to_string(), "split": split, "against": against,
                "queries": metrics.queries, "gallery": metrics.gallery, "success_at_1": metrics.success_at_1,
                "success_at_10": metrics.success_at_10, "outcomes": metrics.outcomes});
            value.insert("freeform".to_string(), entry);
        }
        ega_core::store::write_atomic(path, serde_json::to_string_pretty(&value)?.as_bytes())?;
    }
    Ok(())
}
