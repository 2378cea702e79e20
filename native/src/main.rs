//! `native`: the EGA command line. Thin: parses arguments, calls ega-core, prints results.

mod ablate;
mod bench;
mod bench_decoder;
mod bench_train;
mod export;
mod search;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use ega_core::device::{self, DeviceChoice};
use ega_core::loss::{self, oracle, LossConfig, Rescale};
use ega_core::model::{Embedder, ModelConfig, PRESETS};
use ega_core::tensor_util::{floats, to_f64_vec};

/// EGA: train and run a multimodal-LLM embedder with the Explicit Gradient Amplifier loss,
/// on wgpu GPUs (Vulkan / Metal / DX12), on the CPU, and in the browser on WebGPU.
#[derive(Parser, Debug)]
#[command(name = "native", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train an embedder (default: the `small` preset on the built-in `shapes` data with EGA),
    /// with progress, a metrics log, checkpoints and a final evaluation table.
    Train(TrainArgs),
    /// Evaluate a trained run: R@1/5/10 and MRR both ways, and hard-negative accuracy, on the
    /// held-out split and (shapes) the unseen-combination split; with --queries FILE also
    /// success@1/@10 of hand-written queries against every image of a split (default test).
    Eval(EvalArgs),
    /// Compare losses × seeds with everything else equal (default: info-NCE, EGA, LLaVE, HCL ×
    /// seeds 0, 1, 2 on the `tiny` preset, about a minute a run on 2 CPU cores) and print a markdown
    /// table of mean ± std. Finished runs are reused and interrupted ones resumed.
    Ablate(AblateArgs),
    /// Embed a gallery of images into a search index: a folder of your images (non-images are
    /// skipped and counted), a JSONL file, or built-in data (shapes, openmoji, openclipart, fluentui).
    Index(IndexArgs),
    /// Rank an index's images for a text query (or --image FILE) with the model that made it.
    Search(SearchArgs),
    /// Write a model bundle and its gallery index in the form the web page loads (f16 where the
    /// measured retrieval does not drop; every file under WebGPU's default buffer limit).
    Export(ExportArgs),
    /// Write a dataset to look at: PNG images (and hard-negative images) plus a JSONL file that
    /// `train --data jsonl:DIR/data.jsonl` reads back.
    GenData(GenDataArgs),
    /// Show the model presets with their parameter counts, and the devices this machine offers.
    Info(InfoArgs),
    /// Compute EGA on a small similarity matrix (default: docs/ega.md's worked example) and print
    /// P, the hardness h, the amplified P̄ and the gradients of info-NCE and EGA.
    Example(ExampleArgs),
    /// Benchmarks, measured in one run on one device; results as ratios.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// The fused WGSL kernels (EGA loss forward + backward, top-k search) against the same
    /// computation composed from burn ops, plus the loss kernel's bytes/s against a device copy.
    Kernels(KernelBenchArgs),
    /// ega-core against PyTorch (bench/torch_reference.py, after `bash bench/setup.sh`) on this
    /// machine, sides alternating: training samples/s, EGA's step-time overhead over info-NCE, and
    /// images/s embedded for an index, on the CPU (flex) and on wgpu.
    Train(TrainBenchArgs),
    /// Forward throughput (tokens/s) of a pretrained Llama-family decoder, e.g. the SmolLM2-135M
    /// GGUF from `bash scripts/setup-pretrained.sh`, in ega-core (flex) against Hugging Face
    /// transformers (bench/hf_bench.py) with the same threads and token ids, and the load times.
    Decoder(DecoderBenchArgs),
}

#[derive(Args, Debug)]
struct DecoderBenchArgs {
    /// The checkpoint: a `.gguf` file or a Hugging Face folder.
    #[arg(long, default_value = "data/pretrained/SmolLM2-135M-Instruct.Q4_1.gguf")]
    model: PathBuf,
    /// Sequences per forward.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 40)]
    seq: usize,
    /// Timed forwards per side (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Threads of both sides (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Measure ega-core only (no Python).
    #[arg(long)]
    no_transformers: bool,
    /// The Python with transformers (default: bench/.venv/bin/python when it exists, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
    /// The transformers side.
    #[arg(long, default_value = "bench/hf_bench.py")]
    script: PathBuf,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct TrainBenchArgs {
    /// Backends, comma-separated: cpu (flex), wgpu.
    #[arg(long, value_delimiter = ',', default_value = "cpu,wgpu")]
    devices: Vec<DeviceChoice>,
    /// Model preset.
    #[arg(long, default_value = "small")]
    preset: String,
    /// Threads of both sides (PyTorch's `set_num_threads` and flex's rayon pool); default: every
    /// core. `--threads 1` gives the one-thread comparison.
    #[arg(long)]
    threads: Option<usize>,
    /// Pairs per training step on the CPU (plus one hard-negative image per pair).
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Pairs per training step on wgpu (software Vulkan is slow).
    #[arg(long, default_value_t = 4)]
    wgpu_batch_size: usize,
    /// Images per embedding call on the CPU.
    #[arg(long, default_value_t = 64)]
    index_batch: usize,
    /// Images per embedding call on wgpu.
    #[arg(long, default_value_t = 16)]
    wgpu_index_batch: usize,
    /// Rounds on the CPU; each side is measured once per round.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Rounds on wgpu.
    #[arg(long, default_value_t = 3)]
    wgpu_rounds: usize,
    /// Timed steps (and embedding calls) per side per round on the CPU.
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// The same on wgpu.
    #[arg(long, default_value_t = 1)]
    wgpu_steps: usize,
    /// Untimed steps (calls) of each side first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// The Python with torch (default: bench/.venv/bin/python when it exists, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
    /// The PyTorch side.
    #[arg(long, default_value = "bench/torch_reference.py")]
    script: PathBuf,
    /// Where the batch file shared with the PyTorch side goes.
    #[arg(long, default_value = "target/bench-train")]
    work_dir: PathBuf,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct KernelBenchArgs {
    /// Device: the fused kernels need wgpu (a GPU, or software Vulkan).
    #[arg(long, default_value = "wgpu")]
    device: DeviceChoice,
    /// Timed runs per measurement; the median is reported.
    #[arg(long, default_value_t = 7)]
    repeats: usize,
    /// Untimed warm-up runs before timing.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Loss sizes N = M, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "256,1024,4096")]
    loss_sizes: Vec<usize>,
    /// Top-k index sizes n, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    index_sizes: Vec<usize>,
    /// Queries per top-k search.
    #[arg(long, default_value_t = 32)]
    queries: usize,
    /// Embedding dimension d of the top-k index.
    #[arg(long, default_value_t = 256)]
    dim: usize,
    /// Results per query.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// The loss and its options (docs/ega.md).
#[derive(Args, Debug, Clone)]
struct LossArgs {
    /// Loss: ega, infonce, llave or hcl.
    #[arg(long, default_value = "ega")]
    loss: ega_core::loss::LossKind,
    /// Temperature τ of the logits.
    #[arg(long, default_value_t = 0.05)]
    tau: f64,
    /// EGA amplification α.
    #[arg(long, default_value_t = 1.0)]
    alpha: f64,
    /// EGA hardness temperature τ_h (default: τ).
    #[arg(long)]
    tau_h: Option<f64>,
    /// EGA rescale mode: none or sum. Training defaults to sum: from a fresh model, un-rescaled
    /// EGA adds a net push of all similarities (each gradient row sums to α·Σ P·h/(Nτ) > 0) that
    /// collapsed every run we measured to S → −1 (see README, "Training from scratch").
    #[arg(long, default_value = "sum")]
    rescale: Rescale,
    /// Also apply the loss with images as queries (Sᵀ) and average.
    #[arg(long)]
    symmetric: bool,
    /// LLaVE β.
    #[arg(long, default_value_t = 0.5)]
    llave_beta: f64,
    /// HCL β.
    #[arg(long, default_value_t = 1.0)]
    hcl_beta: f64,
    /// HCL debiasing prior τ⁺.
    #[arg(long, default_value_t = 0.0)]
    hcl_tau_plus: f64,
}

impl LossArgs {
    fn config(&self) -> LossConfig {
        LossConfig {
            kind: self.loss,
            tau: self.tau,
            alpha: self.alpha,
            tau_h: self.tau_h,
            rescale: self.rescale,
            symmetric: self.symmetric,
            llave_beta: self.llave_beta,
            hcl_beta: self.hcl_beta,
            hcl_tau_plus: self.hcl_tau_plus,
        }
        .with_kind(self.loss)
    }
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// Model preset: tiny, small or base (the from-scratch `mini` models), or tiny-smolvlm (a tiny
    /// random SmolVLM-shaped model, for trying LoRA and the recipe in seconds). With --init-lm it
    /// sizes the new vision tower (tiny: 32 px, small: 64 px, base: 128 px).
    #[arg(long, default_value = "small")]
    preset: String,
    #[command(flatten)]
    start: StartArgs,
    /// A staged recipe in one run folder (resumable across stages). pretrained-lm: stage 1
    /// "align" trains the vision tower and connector with the decoder frozen (info-NCE, no hard
    /// negatives; --align-steps, --align-lr), then stage 2 "contrastive" adds LoRA adapters to the
    /// decoder and trains them with the vision tower and connector (--loss with --hard-negatives;
    /// --steps, --lr).
    #[arg(long, value_enum)]
    recipe: Option<RecipeName>,
    /// Steps of the recipe's alignment stage.
    #[arg(long, default_value_t = 200)]
    align_steps: usize,
    /// Peak learning rate of the recipe's alignment stage.
    #[arg(long, default_value_t = 1e-3)]
    align_lr: f64,
    /// Data: shapes (built in, nothing to download), openmoji[:DIR], openclipart[:DIR], fluentui[:DIR]
    /// (after scripts/setup-extras.sh NAME), jsonl:FILE (your own pairs), or a weighted mix of those:
    /// mix:openmoji=0.5,fluentui=0.3,openclipart=0.2 (mix:a,b weighs them equally).
    #[arg(long, default_value = "shapes")]
    data: String,
    /// Skip (and count) bad JSONL lines and unreadable images instead of stopping.
    #[arg(long)]
    skip_bad: bool,
    #[command(flatten)]
    loss: LossArgs,
    /// Optimizer steps (the default run, `small` on shapes, fits in 15 minutes on 2 CPU cores).
    /// With --resume: the run's new length (its last stage is lengthened or shortened, and its
    /// learning-rate schedule recomputed over the new length).
    #[arg(long, default_value_t = 500)]
    steps: usize,
    /// Pairs per step.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Explicit hard-negative images per pair appended to the targets (when the data has them).
    #[arg(long, default_value_t = 1)]
    hard_negatives: usize,
    /// Peak learning rate (AdamW, linear warm-up then cosine).
    #[arg(long, default_value_t = 5e-4)]
    lr: f64,
    /// Learning-rate warm-up steps.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Use EGA's full α from the first step (by default α is 0 for --alpha-start steps, then
    /// ramps in over --alpha-ramp steps: from a fresh model un-rescaled EGA can collapse the
    /// embeddings before anything is learnt).
    #[arg(long)]
    no_alpha_warmup: bool,
    /// Steps of plain info-NCE before EGA's α starts to ramp (default: --warmup).
    #[arg(long)]
    alpha_start: Option<usize>,
    /// Steps over which α ramps to its value (default: --warmup).
    #[arg(long)]
    alpha_ramp: Option<usize>,
    /// Per-tensor gradient-norm clip (0 disables).
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Seed of the initialisation and the data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// GradCache: embed the batch C rows at a time (twice: without, then with autodiff), so
    /// activation memory is that of C rows while the gradients stay the whole batch's.
    #[arg(long, value_name = "C")]
    grad_cache_chunk: Option<usize>,
    /// Device: auto (hardware GPU, else CPU), wgpu, cpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Run folder (default: runs/<loss>-<preset>-seed<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this folder from its latest checkpoint (the newest intact one), with
    /// the options it was started with; only --steps, --eval-every, --eval-count,
    /// --checkpoint-every, --skip-bad and --device may be given with it. A finished run is left
    /// as it is.
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    resume: Option<PathBuf>,
    /// Evaluate on 200 held-out pairs every this many steps (0: only at the end).
    #[arg(long, default_value_t = 250)]
    eval_every: usize,
    /// Held-out pairs of the final evaluation (per split).
    #[arg(long, default_value_t = 500)]
    eval_count: usize,
    /// Write a checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = 50)]
    checkpoint_every: usize,
    /// Stop after this many steps in total (the run stays resumable).
    #[arg(long, hide = true)]
    stop_after: Option<usize>,
}

/// Where a new run's model starts, and what of it trains (train and ablate).
#[derive(Args, Debug)]
struct StartArgs {
    /// Start from a pretrained language model: a GGUF file (`bash scripts/setup-extras.sh
    /// pretrained` puts SmolLM2-135M-Instruct in data/pretrained) or a Hugging Face Llama folder.
    /// Its decoder and tokenizer are kept; the vision tower and connector are new.
    #[arg(long, value_name = "PATH", conflicts_with = "init")]
    init_lm: Option<PathBuf>,
    /// Start from a whole SmolVLM checkpoint (a Hugging Face Idefics3 / SmolVLM folder): every
    /// part loaded, its tokenizer kept.
    #[arg(long, value_name = "PATH")]
    init: Option<PathBuf>,
    /// Use the checkpoint's first K decoder layers only (with --init-lm / --init): a cost knob.
    #[arg(long, value_name = "K")]
    lm_layers: Option<usize>,
    /// Freeze model parts (comma-separated: vision, connector, lm): they take no gradient and the
    /// optimizer keeps no state for them. LoRA adapters stay trainable when lm is frozen.
    #[arg(long, value_delimiter = ',', value_name = "PARTS")]
    freeze: Vec<ega_core::model::FreezePart>,
    /// LoRA adapters of rank R on the decoder's projections (smolvlm models: --init-lm, --init,
    /// --preset tiny-smolvlm). With --recipe, the rank of stage 2's adapters (default 8).
    #[arg(long, value_name = "R")]
    lora_rank: Option<usize>,
    /// LoRA scale numerator: updates are scaled by alpha / rank (default: 2 × rank).
    #[arg(long, value_name = "ALPHA")]
    lora_alpha: Option<f64>,
    /// Decoder projections that get LoRA adapters (comma-separated: q_proj, k_proj, v_proj,
    /// o_proj, gate_proj, up_proj, down_proj).
    #[arg(long, value_delimiter = ',', default_value = "q_proj,k_proj,v_proj,o_proj")]
    lora_targets: Vec<String>,
}

impl StartArgs {
    /// The model start and the LoRA adapters these options ask for (checked).
    fn resolve(&self) -> Result<(train::ModelStart, Option<ega_core::model::LoraConfig>)> {
        let lora = match self.lora_rank {
            Some(rank) => Some(ega_core::model::LoraConfig {
                rank,
                alpha: self.lora_alpha.unwrap_or(2.0 * rank as f64),
                targets: self.lora_targets.clone(),
            }),
            None if self.lora_alpha.is_some() => anyhow::bail!("--lora-alpha needs --lora-rank"),
            None => None,
        };
        if let Some(lora) = &lora {
            lora.validate()?;
        }
        anyhow::ensure!(
            self.lm_layers.is_none() || self.init_lm.is_some() || self.init.is_some(),
            "--lm-layers needs --init-lm or --init (it cuts a pretrained decoder)"
        );
        let start = match (&self.init_lm, &self.init) {
            (Some(path), _) => train::ModelStart::Lm(path.clone()),
            (None, Some(path)) => train::ModelStart::Smolvlm(path.clone()),
            (None, None) => train::ModelStart::Preset,
        };
        Ok((start, lora))
    }

    /// `-lm` / `-init` for default folder names.
    fn suffix(&self) -> &'static str {
        match (&self.init_lm, &self.init) {
            (Some(_), _) => "-lm",
            (None, Some(_)) => "-init",
            (None, None) => "",
        }
    }
}

/// Staged training recipes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum RecipeName {
    /// Align a new vision tower to a frozen pretrained decoder, then tune with LoRA and hard
    /// negatives.
    PretrainedLm,
}

#[derive(Args, Debug)]
struct AblateArgs {
    /// Losses to compare, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "infonce,ega,llave,hcl")]
    losses: Vec<ega_core::loss::LossKind>,
    /// Seeds, comma-separated (each changes the initialisation and the data order).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    seeds: Vec<u64>,
    /// Model preset of every run.
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Data (as for train).
    #[arg(long, default_value = "shapes")]
    data: String,
    /// Skip (and count) bad data lines.
    #[arg(long)]
    skip_bad: bool,
    /// Temperature τ.
    #[arg(long, default_value_t = 0.05)]
    tau: f64,
    /// EGA amplification α (LLaVE and HCL use their own β flags' defaults).
    #[arg(long, default_value_t = 1.0)]
    alpha: f64,
    /// EGA rescale mode: none or sum (sum, as for train).
    #[arg(long, default_value = "sum")]
    rescale: Rescale,
    /// Optimizer steps per run.
    #[arg(long, default_value_t = 300)]
    steps: usize,
    /// Pairs per step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Explicit hard-negative images per pair appended to the targets.
    #[arg(long, default_value_t = 1)]
    hard_negatives: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 5e-4)]
    lr: f64,
    /// Warm-up steps (learning rate; EGA's α starts after them and ramps over as many).
    #[arg(long, default_value_t = 60)]
    warmup: usize,
    /// Pairs per split of each run's final evaluation.
    #[arg(long, default_value_t = 300)]
    eval_count: usize,
    /// Device: auto, wgpu, cpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Ablation folder (one run folder per loss and seed, plus ablation.md and ablation.json).
    #[arg(long, default_value = "runs/ablate")]
    out: PathBuf,
    #[command(flatten)]
    start: StartArgs,
}

#[derive(Args, Debug)]
struct IndexArgs {
    /// Model bundle, or a finished run folder (its bundle/).
    #[arg(long)]
    model: PathBuf,
    /// What to index: a folder of images, jsonl:FILE, shapes, openmoji[:DIR], openclipart[:DIR],
    /// fluentui[:DIR] or mix:….
    #[arg(long)]
    images: String,
    /// Split of built-in or JSONL data: train, test or unseen.
    #[arg(long, default_value = "test")]
    split: String,
    /// Images at most from built-in or JSONL data (default: all; 500 for shapes, which is unbounded).
    #[arg(long)]
    count: Option<usize>,
    /// Index folder (index.bin, index.json, thumbs/).
    #[arg(long)]
    out: PathBuf,
    /// Row storage: f32, or f16 (half the size).
    #[arg(long, default_value = "f32")]
    dtype: ega_core::store::StoredDtype,
    /// Images embedded at once.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Longest side of the thumbnails in pixels (0: no thumbnails).
    #[arg(long, default_value_t = 64)]
    thumb_size: u32,
    /// Device: auto, wgpu, cpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Skip (and count) bad JSONL lines and unreadable images instead of stopping at the first
    /// (a folder's non-images are always skipped and counted).
    #[arg(long)]
    skip_bad: bool,
}

#[derive(Args, Debug)]
struct SearchArgs {
    /// What to look for, in words.
    query: Option<String>,
    /// Model bundle (or finished run folder); must be the model that made the index.
    #[arg(long)]
    model: PathBuf,
    /// Index folder written by `native index`.
    #[arg(long)]
    index: PathBuf,
    /// Search by this image instead of text.
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,
    /// Number of results.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write an HTML contact sheet of the results' thumbnails to FILE.
    #[arg(long, value_name = "FILE")]
    open: Option<PathBuf>,
    /// Device: auto, wgpu, cpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// Model bundle, or a finished run folder (its bundle/).
    #[arg(long)]
    model: PathBuf,
    /// Gallery index made by `native index` with that model.
    #[arg(long)]
    index: PathBuf,
    /// Output folder (model/, index/, export.json).
    #[arg(long)]
    out: PathBuf,
    /// Weights: f32 or f16 (default: f16 when the held-out R@1 does not drop, else f32).
    #[arg(long)]
    weights: Option<ega_core::store::StoredDtype>,
    /// Held-out pairs of the f32-vs-f16 check.
    #[arg(long, default_value_t = 500)]
    eval_count: usize,
    /// Device: auto, wgpu, cpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Merge the model's LoRA adapters into the decoder weights they adapt (W + (alpha/rank)·B·A):
    /// the exported model has none and runs at the plain model's cost. By default they are kept.
    #[arg(long)]
    merge_lora: bool,
}

#[derive(Args, Debug)]
struct GenDataArgs {
    /// The dataset to write (only the built-in `shapes` is generated).
    #[arg(default_value = "shapes")]
    dataset: String,
    /// Number of pairs.
    #[arg(long, default_value_t = 64)]
    count: usize,
    /// Split: train, test (held out) or unseen (attribute combinations never trained on).
    #[arg(long, default_value = "train")]
    split: String,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64)]
    size: u32,
    /// Output folder (created; existing files with the same names are replaced).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// A model bundle, a run folder written by `native train`, or one of its checkpoint folders.
    #[arg(long)]
    model: PathBuf,
    /// Data to evaluate on (default: the run's own data).
    #[arg(long)]
    data: Option<String>,
    /// Pairs per split.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Device: auto, wgpu, cpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Also write the metrics as JSON to FILE (with --queries: a "freeform" entry, per query too).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also score free-form queries: FILE holds one {"query": "...", "relevant": ["id", ...]} a line
    /// (# lines are comments), ids as the data names its images (`openmoji-1F428`). A query succeeds
    /// at k when any relevant image is among the k nearest of the whole gallery; prints success@1
    /// and success@10. For OpenMoji: tests/fixtures/openmoji_freeform.jsonl.
    #[arg(long, value_name = "FILE")]
    queries: Option<PathBuf>,
    /// The split whose images are the gallery of --queries: train, test or unseen.
    #[arg(long, value_name = "SPLIT", default_value = "test", requires = "queries")]
    queries_split: String,
}

#[derive(Args, Debug)]
struct InfoArgs {
    /// Describe a checkpoint instead of the presets: a Hugging Face folder (config.json +
    /// model.safetensors or a sharded index; Idefics3 / SmolVLM or Llama), a `.gguf` file of a
    /// Llama-family decoder, or a bundle / run folder of this project.
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Which device to describe: auto (hardware GPU, else CPU), wgpu, cpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ExampleArgs {
    /// Similarity matrix rows, `;`-separated, values `,`-separated (N rows, M >= N columns).
    #[arg(long, default_value = "0.9,0.8,0.3;0.1,0.7,0.6")]
    similarities: String,
    /// Temperature τ of the logits.
    #[arg(long, default_value_t = 0.1)]
    tau: f64,
    /// Amplification α (0 = info-NCE).
    #[arg(long, default_value_t = 1.0)]
    alpha: f64,
    /// Hardness temperature τ_h (default: equal to τ).
    #[arg(long)]
    tau_h: Option<f64>,
    /// Rescale mode: none or sum.
    #[arg(long, default_value = "none")]
    rescale: Rescale,
    /// Also compute the loss on Sᵀ and average (targets as queries).
    #[arg(long)]
    symmetric: bool,
    /// Device that runs the burn reference (the float64 oracle runs on the host).
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

/// `native info --model PATH`: what a checkpoint holds, without building the model.
fn info_model(path: &std::path::Path, json: bool) -> Result<()> {
    use ega_core::pretrained::safetensors::HfModel;
    // A bundle's config.json has a format_version; a Hugging Face one does not.
    let bundle_dir = ega_core::bundle::resolve(path).ok().filter(|dir| {
        ega_core::fs::read_regular(&dir.join("config.json"), ega_core::fs::MAX_JSON)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(ega_core::fs::strip_bom(&bytes)).ok())
            .is_some_and(|value| value.get("format_version").is_some())
    });
    {
        if let Some(dir) = bundle_dir {
            let bundle = ega_core::bundle::load(&dir, &burn::tensor::Device::flex())
                .with_context(|| format!("loading the bundle {}", dir.display()))?;
            let parts = bundle.model.part_sizes();
            let total: usize = parts.iter().map(|p| p.1).sum();
            let c = &bundle.config;
            if json {
                let report = serde_json::json!({
                    "path": dir.display().to_string(), "format": "EGA bundle", "architecture": c.model.architecture_name(),
                    "model_id": c.model_id, "params": total,
                    "parts": parts.iter().map(|(n, v)| (n.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
                    "weights_dtype": c.weights_dtype, "tokenizer_tokens": bundle.tokenizer.vocab_size(), "config": c.model,
                });
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{}: EGA bundle, architecture {}, model id {}",
                    dir.display(),
                    c.model.architecture_name(),
                    c.model_id
                );
                for (name, count) in &parts {
                    println!("  {name:<14} {count:>12} parameters");
                }
                println!("  {:<14} {total:>12} parameters ({:.1} M)", "total", total as f64 / 1e6);
                println!(
                    "  weights stored as {:?}; tokenizer {} tokens; {} steps on {}",
                    c.weights_dtype,
                    bundle.tokenizer.vocab_size(),
                    c.steps,
                    c.data
                );
            }
            return Ok(());
        }
    }
    let checkpoint = ega_core::pretrained::open(path).with_context(|| format!("reading {}", path.display()))?;
    let (parts, dtypes) = checkpoint.summary();
    let total: usize = parts.iter().map(|p| p.1).sum();
    let text = checkpoint.text_config();
    let architecture = match &checkpoint.model {
        HfModel::Smolvlm { .. } => "smolvlm (Idefics3: SigLIP + connector + Llama decoder)",
        HfModel::Llama(_) => "llama decoder (the text_model of a smolvlm embedder)",
    };
    let tokenizer = checkpoint.tokenizer.as_ref().map(|t| t.get_vocab_size(true));
    if json {
        let report = serde_json::json!({
            "path": checkpoint.path, "format": checkpoint.format, "architecture": architecture, "params": total,
            "parts": parts.iter().map(|(n, v)| (n.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "stored_types": dtypes.iter().map(|(n, v)| (n.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "text_config": text, "vision_config": checkpoint.smolvlm_config().map(|c| &c.vision_config),
            "tokenizer_tokens": tokenizer,
            "details": checkpoint.details.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{}: {}", checkpoint.path, checkpoint.format);
    println!("architecture: {architecture}");
    for (key, value) in &checkpoint.details {
        println!("  {key}: {value}");
    }
    println!(
        "decoder: {} layers, width {}, FFN {}, {} query / {} key-value heads of {}, vocabulary {}, RoPE θ {}, RMSNorm ε {:e}, context {}, output head {}",
        text.num_hidden_layers,
        text.hidden_size,
        text.intermediate_size,
        text.num_attention_heads,
        text.num_key_value_heads,
        text.head_dim(),
        text.vocab_size,
        text.rope_theta,
        text.rms_norm_eps,
        text.max_position_embeddings,
        if text.tie_word_embeddings { "tied to the token embedding" } else { "separate" }
    );
    if let Some(c) = checkpoint.smolvlm_config() {
        let v = &c.vision_config;
        println!(
            "vision: SigLIP {} layers, width {}, MLP {}, {} heads, {} px images in {} px patches; pixel shuffle ×{} → {} image tokens",
            v.num_hidden_layers,
            v.hidden_size,
            v.intermediate_size,
            v.num_attention_heads,
            v.image_size,
            v.patch_size,
            c.scale_factor,
            v.num_patches() / (c.scale_factor * c.scale_factor)
        );
    }
    println!("parameters:");
    for (name, count) in &parts {
        println!("  {name:<14} {count:>12}");
    }
    println!("  {:<14} {total:>12} ({:.1} M)", "total", total as f64 / 1e6);
    let types: Vec<String> = dtypes.iter().map(|(d, n)| format!("{d} × {n}")).collect();
    println!("stored as: {}", types.join(", "));
    match tokenizer {
        Some(n) => println!("tokenizer: {n} tokens"),
        None => println!("tokenizer: none in the checkpoint"),
    }
    Ok(())
}

/// The long flags of `native train` given on the command line (not defaults).
fn given_train_flags(matches: &clap::ArgMatches) -> Vec<String> {
    let Some(train) = matches.subcommand_matches("train") else { return Vec::new() };
    let command = Cli::command();
    let Some(definition) = command.find_subcommand("train") else { return Vec::new() };
    definition
        .get_arguments()
        .filter(|arg| train.value_source(arg.get_id().as_str()) == Some(clap::parser::ValueSource::CommandLine))
        .filter_map(|arg| arg.get_long().map(str::to_string))
        .collect()
}

/// The `--device` a command was given, for the commands that compute.
fn device_of(command: &Command) -> Option<DeviceChoice> {
    match command {
        Command::Train(a) => Some(a.device),
        Command::Eval(a) => Some(a.device),
        Command::Ablate(a) => Some(a.device),
        Command::Index(a) => Some(a.device),
        Command::Search(a) => Some(a.device),
        Command::Export(a) => Some(a.device),
        Command::Example(a) => Some(a.device),
        _ => None,
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    // burn materialises some tensors on `Device::default()` (a loaded optimizer state, until the
    // next step moves it): wgpu, unless BURN_DEVICE says otherwise. With --device cpu that opened
    // a wgpu device for nothing, and its driver probe printed XDG_RUNTIME_DIR errors (issue 16).
    // Set while the process has one thread, before anything reads the environment.
    if device_of(&cli.command) == Some(DeviceChoice::Cpu) && std::env::var_os("BURN_DEVICE").is_none() {
        std::env::set_var("BURN_DEVICE", "flex");
    }
    let given = given_train_flags(&matches);
    let result = match cli.command {
        Command::Train(args) => train_command(args, &given),
        Command::Eval(args) => eval_command(args),
        Command::Ablate(args) => ablate_command(args),
        Command::Index(args) => index_command(args),
        Command::Search(args) => search::search(search::SearchRequest {
            model: args.model,
            index: args.index,
            query: args.query,
            image: args.image,
            k: args.k,
            json: args.json,
            open: args.open,
            device: args.device,
        }),
        Command::Export(args) => export::export(export::ExportRequest {
            model: args.model,
            index: args.index,
            out: args.out,
            weights: args.weights,
            eval_count: args.eval_count,
            device: args.device,
            merge_lora: args.merge_lora,
        }),
        Command::GenData(args) => gen_data(args),
        Command::Info(args) => info(args),
        Command::Example(args) => example(args),
        Command::Bench(BenchCommand::Kernels(args)) => bench_kernels(args),
        Command::Bench(BenchCommand::Train(args)) => bench_train(args),
        Command::Bench(BenchCommand::Decoder(args)) => bench_decoder(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_split(split: &str) -> Result<ega_core::data::Split> {
    parse_split_flag("--split", split)
}

fn parse_split_flag(flag: &str, split: &str) -> Result<ega_core::data::Split> {
    use ega_core::data::Split;
    match split {
        "train" => Ok(Split::Train),
        "test" => Ok(Split::Test),
        "unseen" => Ok(Split::Unseen),
        other => anyhow::bail!("{flag} must be train, test or unseen, got {other:?}"),
    }
}

fn index_command(args: IndexArgs) -> Result<()> {
    search::index(search::IndexRequest {
        model: args.model,
        images: args.images,
        split: parse_split(&args.split)?,
        count: args.count,
        out: args.out,
        dtype: args.dtype,
        batch_size: args.batch_size,
        thumb_size: args.thumb_size,
        device: args.device,
        skip_bad: args.skip_bad,
    })
}

fn gen_data(args: GenDataArgs) -> Result<()> {
    use ega_core::data::shapes::{ShapesConfig, ShapesDataset};
    use ega_core::data::{Dataset, Split};
    anyhow::ensure!(
        args.dataset == "shapes",
        "gen-data writes the built-in `shapes` data only (got {:?}); your own data is already on disk",
        args.dataset
    );
    anyhow::ensure!((8..=1024).contains(&args.size), "--size must be between 8 and 1024 pixels, got {}", args.size);
    let split = parse_split(&args.split)?;
    let data = ShapesDataset::new(ShapesConfig { image_size: args.size, ..ShapesConfig::default() });
    let available = data.len(split).unwrap_or(usize::MAX);
    anyhow::ensure!(
        args.count >= 1 && args.count <= available,
        "--count must be between 1 and {available} for the {split} split"
    );
    for folder in ["images", "negatives"] {
        std::fs::create_dir_all(args.out.join(folder))
            .with_context(|| format!("creating {}", args.out.join(folder).display()))?;
    }
    let mut pairs = String::new();
    let mut scenes = String::new();
    for index in 0..args.count {
        let sample = data.sample(split, index)?;
        let image = format!("images/{}.png", sample.id);
        sample.image.save(args.out.join(&image)).with_context(|| format!("writing {image}"))?;
        let mut negative_images = Vec::new();
        for (k, negative) in sample.negative_images.iter().enumerate() {
            let path = format!("negatives/{}-{k}.png", sample.id);
            negative.save(args.out.join(&path)).with_context(|| format!("writing {path}"))?;
            negative_images.push(path);
        }
        let line = serde_json::json!({"id": sample.id, "image": image, "text": sample.caption,
            "neg_text": sample.negative_captions, "neg_image": negative_images,
            "split": if split == Split::Train { "train" } else { "test" }});
        pairs.push_str(&format!("{line}\n"));
        let (scene, negatives) = data.scene_with_negatives(split, index)?;
        scenes.push_str(&format!("{}\n", serde_json::json!({"id": sample.id, "scene": scene, "negatives": negatives})));
    }
    ega_core::store::write_atomic(&args.out.join("data.jsonl"), pairs.as_bytes())?;
    ega_core::store::write_atomic(&args.out.join("scenes.jsonl"), scenes.as_bytes())?;
    println!(
        "wrote {} {split} pairs ({}×{} px, {} hard negatives each) to {}: data.jsonl, scenes.jsonl, images/, negatives/",
        args.count,
        args.size,
        args.size,
        ShapesConfig::default().negatives,
        args.out.display()
    );
    Ok(())
}

fn eval_command(args: EvalArgs) -> Result<()> {
    anyhow::ensure!(args.count >= 1, "--count must be at least 1");
    let queries_split = parse_split_flag("--queries-split", &args.queries_split)?;
    let queries = args.queries.as_deref().map(|file| (file, queries_split));
    train::eval(&args.model, args.data.as_deref(), args.count, args.device, args.json.as_deref(), queries)
}

fn ablate_command(args: AblateArgs) -> Result<()> {
    anyhow::ensure!(!args.losses.is_empty() && !args.seeds.is_empty(), "--losses and --seeds need at least one value");
    anyhow::ensure!(args.eval_count >= 1, "--eval-count must be at least 1");
    let loss = LossArgs {
        loss: ega_core::loss::LossKind::Ega,
        tau: args.tau,
        alpha: args.alpha,
        tau_h: None,
        rescale: args.rescale,
        symmetric: false,
        llave_beta: 0.5,
        hcl_beta: 1.0,
        hcl_tau_plus: 0.0,
    }
    .config();
    loss.validate()?;
    let train = ega_core::train::TrainConfig {
        freeze: args.start.freeze.clone(),
        ..train_config(args.steps, args.batch_size, args.hard_negatives, args.lr, args.warmup, 0)
    };
    train.validate()?;
    ModelConfig::preset(&args.preset)?;
    let (start, lora) = args.start.resolve()?;
    ablate::run(ablate::AblateRequest {
        start,
        lm_layers: args.start.lm_layers,
        lora,
        losses: args.losses,
        seeds: args.seeds,
        preset: args.preset,
        data: args.data,
        skip_bad: args.skip_bad,
        loss,
        train,
        device: args.device,
        eval_count: args.eval_count,
        out: args.out,
    })
}

/// Training options with the command line's defaults for everything not given.
fn train_config(
    steps: usize,
    batch_size: usize,
    hard_negatives: usize,
    lr: f64,
    warmup: usize,
    seed: u64,
) -> ega_core::train::TrainConfig {
    ega_core::train::TrainConfig {
        steps,
        batch_size,
        hard_negatives,
        lr,
        warmup_steps: warmup,
        min_lr_ratio: 0.1,
        weight_decay: 0.01,
        grad_clip: 1.0,
        alpha_warmup: true,
        alpha_start: warmup,
        alpha_ramp: warmup,
        seed,
        grad_cache_chunk: None,
        freeze: Vec::new(),
    }
}

/// Flags `--resume` takes: the rest are the run's own, saved in its run.json.
const RESUME_FLAGS: &[&str] =
    &["resume", "device", "steps", "eval-every", "eval-count", "checkpoint-every", "skip-bad", "stop-after"];

fn train_command(args: TrainArgs, given: &[String]) -> Result<()> {
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
    let train = ega_core::train::TrainConfig {
        weight_decay: args.weight_decay,
        grad_clip: args.grad_clip,
        alpha_warmup: !args.no_alpha_warmup,
        alpha_start: args.alpha_start.unwrap_or(args.warmup),
        alpha_ramp: args.alpha_ramp.unwrap_or(args.warmup),
        grad_cache_chunk: args.grad_cache_chunk,
        freeze: args.start.freeze.clone(),
        ..train_config(args.steps, args.batch_size, args.hard_negatives, args.lr, args.warmup, args.seed)
    };
    train.validate()?;
    ModelConfig::preset(&args.preset)?;
    let (start, lora) = args.start.resolve()?;
    // The recipe's stages; without one, the run is a single stage of the options above.
    let (stages, initial_lora) = match args.recipe {
        None => (Vec::new(), lora),
        Some(RecipeName::PretrainedLm) => {
            anyhow::ensure!(args.align_steps >= 1, "--align-steps must be at least 1");
            anyhow::ensure!(
                args.start.freeze.is_empty(),
                "--freeze is set by --recipe pretrained-lm (stage 1: lm; stage 2: lm, with LoRA)"
            );
            let align = ega_core::train::TrainConfig {
                steps: args.align_steps,
                lr: args.align_lr,
                hard_negatives: 0,
                warmup_steps: args.warmup.min(args.align_steps / 5),
                alpha_warmup: false,
                freeze: vec![ega_core::model::FreezePart::Lm],
                ..train.clone()
            };
            let lora = lora.unwrap_or(ega_core::model::LoraConfig {
                rank: 8,
                alpha: 16.0,
                targets: args.start.lora_targets.clone(),
            });
            let contrastive =
                ega_core::train::TrainConfig { freeze: vec![ega_core::model::FreezePart::Lm], ..train.clone() };
            let stages = vec![
                ega_core::train::Stage {
                    name: "align".into(),
                    train: align,
                    loss: loss.clone().with_kind(loss::LossKind::InfoNce),
                    lora: None,
                },
                ega_core::train::Stage {
                    name: "contrastive".into(),
                    train: contrastive,
                    loss: loss.clone(),
                    lora: Some(lora),
                },
            ];
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
    train::run(train::TrainRequest {
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
        lora: initial_lora,
        stages,
    })?;
    Ok(())
}

fn bench_kernels(args: KernelBenchArgs) -> Result<()> {
    anyhow::ensure!(args.repeats >= 1, "--repeats must be at least 1");
    anyhow::ensure!(args.k >= 1, "-k must be at least 1");
    anyhow::ensure!(args.queries >= 1 && args.dim >= 1, "--queries and --dim must be at least 1");
    if let Some(n) = args.loss_sizes.iter().chain(&args.index_sizes).find(|&&n| n == 0) {
        anyhow::bail!("sizes must be at least 1, got {n}");
    }
    let options = bench::KernelBenchOptions {
        device: args.device,
        repeats: args.repeats,
        warmup: args.warmup,
        loss_sizes: args.loss_sizes,
        index_sizes: args.index_sizes,
        queries: args.queries,
        dim: args.dim,
        k: args.k,
    };
    bench::run(&options, args.json.as_deref())
}

fn bench_decoder(args: DecoderBenchArgs) -> Result<()> {
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    anyhow::ensure!(threads >= 1, "--threads must be at least 1");
    // flex's rayon pool: the same number of threads as the transformers side.
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().context("setting the thread count")?;
    let venv = PathBuf::from("bench/.venv/bin/python");
    let python = (!args.no_transformers)
        .then(|| args.python.unwrap_or_else(|| if venv.is_file() { venv } else { PathBuf::from("python3") }));
    let options = bench_decoder::DecoderBenchOptions {
        model: args.model,
        batch: args.batch,
        seq: args.seq,
        rounds: args.rounds,
        threads,
        python,
        script: args.script,
    };
    let report = bench_decoder::run(&options)?;
    if let Some(path) = args.json {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn bench_train(args: TrainBenchArgs) -> Result<()> {
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
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
    let venv = PathBuf::from("bench/.venv/bin/python");
    let python = args.python.unwrap_or_else(|| if venv.is_file() { venv } else { PathBuf::from("python3") });
    let options = bench_train::TrainBenchOptions {
        devices: args.devices,
        preset: args.preset,
        torch_threads: threads,
        batch_size: args.batch_size,
        wgpu_batch_size: args.wgpu_batch_size,
        index_batch: args.index_batch,
        wgpu_index_batch: args.wgpu_index_batch,
        rounds: args.rounds,
        wgpu_rounds: args.wgpu_rounds,
        steps: args.steps,
        wgpu_steps: args.wgpu_steps,
        warmup: args.warmup,
        python,
        script: args.script,
        work_dir: args.work_dir,
    };
    bench_train::run(&options, args.json.as_deref())
}

fn info(args: InfoArgs) -> Result<()> {
    if let Some(path) = &args.model {
        return info_model(path, args.json);
    }
    let cpu = burn::tensor::Device::flex();
    let mut presets = Vec::new();
    for name in PRESETS {
        let config = ModelConfig::preset(name)?;
        let model = Embedder::new(&config, 0, &cpu)?;
        let parts = model.part_sizes();
        presets.push((config.clone(), parts[0].1, parts[1].1, parts[2].1));
    }
    let selected = device::select(args.device);
    let wgpu = device::wgpu_adapter();
    if args.json {
        let presets: Vec<_> = presets
            .iter()
            .map(|(c, v, p, l)| {
                serde_json::json!({
                    "preset": c.preset, "image_size": c.image_size(), "image_tokens": c.image_tokens(),
                    "embed_dim": c.embed_dim(), "params": v + p + l, "vision_params": v,
                    "projector_params": p, "language_params": l, "config": c,
                })
            })
            .collect();
        let report = serde_json::json!({
            "version": ega_core::VERSION,
            "presets": presets,
            "device": selected.as_ref().map(|d| d.description.clone()).map_err(|e| e.to_string()),
            "ega_loss_path": selected.as_ref().map(|d| ega_core::kernels::ega_path(&d.device).to_string()).map_err(|e| e.to_string()),
            "wgpu_adapter": wgpu.map(|a| serde_json::json!({
                "name": a.name, "backend": a.backend, "device_type": a.device_type, "software": a.software,
            })).map_err(|e| e.to_string()),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("ega-core {}\n", ega_core::VERSION);
    println!("| preset | image | image tokens | vision | projector | language | total params | embedding |");
    println!("|---|---|---|---|---|---|---|---|");
    for (c, v, p, l) in &presets {
        println!(
            "| {} | {} px | {} | {} | {} | {} | {} ({:.1} M) | {} |",
            c.preset,
            c.image_size(),
            c.image_tokens(),
            v,
            p,
            l,
            v + p + l,
            (v + p + l) as f64 / 1e6,
            c.embed_dim()
        );
    }
    println!();
    match wgpu {
        Ok(a) => println!(
            "wgpu adapter: {} ({}, {}{})",
            a.name,
            a.backend,
            a.device_type,
            if a.software { ", software rasteriser" } else { "" }
        ),
        Err(why) => println!("wgpu adapter: none ({why})"),
    }
    let choice = format!("{:?}", args.device).to_lowercase();
    match selected {
        Ok(d) => {
            println!("--device {choice}: {}", d.description);
            println!("EGA / info-NCE loss on it: {}", ega_core::kernels::ega_path(&d.device));
        }
        Err(err) => println!("--device {choice}: unavailable: {err}"),
    }
    Ok(())
}

fn parse_matrix(text: &str) -> Result<(Vec<f64>, usize, usize)> {
    let rows: Vec<Vec<f64>> = text
        .split(';')
        .enumerate()
        .map(|(r, row)| {
            row.split(',')
                .map(|v| v.trim().parse::<f64>().with_context(|| format!("row {}: {v:?} is not a number", r + 1)))
                .collect::<Result<Vec<f64>>>()
        })
        .collect::<Result<_>>()?;
    let n = rows.len();
    let m = rows[0].len();
    if let Some((r, row)) = rows.iter().enumerate().find(|(_, row)| row.len() != m) {
        anyhow::bail!("row {} has {} values, row 1 has {m}", r + 1, row.len());
    }
    if m < n {
        anyhow::bail!("{n} rows but only {m} columns: need M >= N (column i is row i's positive)");
    }
    if let Some(v) = rows.iter().flatten().find(|v| !v.is_finite()) {
        anyhow::bail!("similarity {v} is not finite");
    }
    Ok((rows.into_iter().flatten().collect(), n, m))
}

fn print_matrix(name: &str, values: &[f64], m: usize) {
    println!("{name}");
    for row in values.chunks(m) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:>10.6}")).collect();
        println!("  [{}]", cells.join(", "));
    }
}

fn example(args: ExampleArgs) -> Result<()> {
    let (s, n, m) = parse_matrix(&args.similarities).context("reading --similarities")?;
    let config = LossConfig {
        tau: args.tau,
        alpha: args.alpha,
        tau_h: args.tau_h,
        rescale: args.rescale,
        symmetric: args.symmetric,
        ..LossConfig::default()
    };
    config.validate()?;
    let one = oracle::ega_one_direction(&s, n, m, &config);
    println!(
        "S = {n}×{m}, τ = {}, τ_h = {}, α = {}, rescale = {:?}\n",
        config.tau,
        config.tau_h(),
        config.alpha,
        config.rescale
    );
    print_matrix("P = softmax(S/τ)", &one.probs, m);
    print_matrix("h (hardness, 0 on the diagonal)", &one.hardness, m);
    print_matrix("P̄ (amplified)", &one.amplified_probs, m);
    let (loss_value, grad_infonce, grad) = oracle::ega_loss_and_grads(&s, n, m, &config);
    println!("L = {loss_value:.6}{}", if config.symmetric { " (symmetric)" } else { "" });
    print_matrix("∂L/∂S info-NCE", &grad_infonce, m);
    print_matrix("∂L/∂S EGA", &grad, m);

    // The same through the burn reference on the chosen device, autodiff included.
    let selected = device::select(args.device)?;
    let device = selected.device.autodiff();
    let sims = floats(s.iter().map(|&v| v as f32).collect(), [n, m], &device).require_grad();
    let value = loss::contrastive_loss(sims.clone(), &config)?;
    let grads = value.backward();
    let burn_grad = to_f64_vec(sims.grad(&grads).context("no gradient reached S")?)?;
    let burn_value = to_f64_vec(value)?[0];
    let worst = grad.iter().zip(&burn_grad).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    println!(
        "\nburn reference on {}: L = {burn_value:.6}, largest |G_burn − G_f64| = {worst:.2e}",
        selected.description
    );
    Ok(())
}
