//! Flag groups that several commands share (the loss, where a model starts), the split parser, and
//! the defaults they show. Every default shown by `--help` comes from the config struct that owns
//! it (`LossConfig`, `TrainConfig`, `RunOptions`, `LoraConfig`): the number is written once, in
//! ega-core.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use ega_core::data::Split;
use ega_core::loss::{LossConfig, LossKind, Rescale};
use ega_core::model::{FreezePart, LoraConfig};
use ega_core::prompt::{Pooling, IMAGE_SLOT, TEXT_SLOT};

use crate::train::{ModelStart, PromptOverride};

/// The help of `--device` for the commands that compute on the chosen device.
pub const DEVICE_HELP: &str = "Device: auto (hardware GPU, else CPU), wgpu, cpu";

/// The loss options a training run (train, ablate) starts from: `LossConfig`'s defaults, except
/// that EGA rescales (`sum`; see `LossArgs::rescale`).
pub fn training_loss() -> LossConfig {
    LossConfig { rescale: Rescale::Sum, ..LossConfig::default() }
}

/// The loss and its options (docs/ega.md).
#[derive(Args, Debug, Clone)]
pub struct LossArgs {
    /// Loss: ega, infonce, llave or hcl.
    #[arg(long, default_value_t = training_loss().kind)]
    pub loss: LossKind,
    /// Temperature τ of the logits.
    #[arg(long, default_value_t = training_loss().tau)]
    pub tau: f64,
    /// EGA amplification α.
    #[arg(long, default_value_t = training_loss().alpha)]
    pub alpha: f64,
    /// EGA hardness temperature τ_h (default: τ).
    #[arg(long)]
    pub tau_h: Option<f64>,
    /// EGA rescale mode: none or sum. Training defaults to sum: from a fresh model, un-rescaled
    /// EGA adds a net push of all similarities (each gradient row sums to α·Σ P·h/(Nτ) > 0) that
    /// collapsed every run we measured to S → −1 (see README, "Training from scratch").
    #[arg(long, default_value_t = training_loss().rescale)]
    pub rescale: Rescale,
    /// Also apply the loss with images as queries (Sᵀ) and average.
    #[arg(long)]
    pub symmetric: bool,
    /// LLaVE β.
    #[arg(long, default_value_t = training_loss().llave_beta)]
    pub llave_beta: f64,
    /// HCL β.
    #[arg(long, default_value_t = training_loss().hcl_beta)]
    pub hcl_beta: f64,
    /// HCL debiasing prior τ⁺.
    #[arg(long, default_value_t = training_loss().hcl_tau_plus)]
    pub hcl_tau_plus: f64,
}

impl LossArgs {
    /// The loss these flags ask for (info-NCE's α is 0: `LossConfig::with_kind`).
    pub fn config(&self) -> LossConfig {
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

/// Where a new run's model starts, and what of it trains (train and ablate).
#[derive(Args, Debug)]
pub struct StartArgs {
    /// Start from a pretrained language model: a GGUF file (`bash scripts/setup-extras.sh
    /// pretrained` puts SmolLM2-135M-Instruct in data/pretrained) or a Hugging Face Llama folder.
    /// Its decoder and tokenizer are kept; the vision tower and connector are new.
    #[arg(long, value_name = "PATH", conflicts_with = "init")]
    pub init_lm: Option<PathBuf>,
    /// Start from a whole SmolVLM checkpoint (a Hugging Face Idefics3 / SmolVLM folder): every
    /// part loaded, its tokenizer kept.
    #[arg(long, value_name = "PATH")]
    pub init: Option<PathBuf>,
    /// Start the vision tower from a pretrained MobileNetV2 (its ImageNet layers through block_10,
    /// frozen) read from DIR (`bash scripts/setup-mobilenet.sh` writes data/mobilenet), for a
    /// smolvlm model (--init-lm, --init, --preset tiny-smolvlm): the tower's transformer layers
    /// and the connector start fresh on its features, the decoder is kept. Images become 16 × the tower's patch grid (128 px for the
    /// small tower).
    #[arg(long, value_name = "DIR")]
    pub vision_stem: Option<PathBuf>,
    /// Use the checkpoint's first K decoder layers only (with --init-lm / --init): a cost knob.
    #[arg(long, value_name = "K")]
    pub lm_layers: Option<usize>,
    /// Freeze model parts (comma-separated: vision, connector, lm): they take no gradient and the
    /// optimizer keeps no state for them. LoRA adapters stay trainable when lm is frozen.
    #[arg(long, value_delimiter = ',', value_name = "PARTS")]
    pub freeze: Vec<FreezePart>,
    /// LoRA adapters of rank R on the decoder's projections (smolvlm models: --init-lm, --init,
    /// --preset tiny-smolvlm). With --recipe, the rank of stage 2's adapters (default 8).
    #[arg(long, value_name = "R")]
    pub lora_rank: Option<usize>,
    /// LoRA scale numerator: updates are scaled by alpha / rank (default: 2 × rank).
    #[arg(long, value_name = "ALPHA")]
    pub lora_alpha: Option<f64>,
    /// Decoder projections that get LoRA adapters (comma-separated: q_proj, k_proj, v_proj,
    /// o_proj, gate_proj, up_proj, down_proj).
    #[arg(long, value_delimiter = ',', default_value = default_lora_targets())]
    pub lora_targets: Vec<String>,
    /// The instruction a caption is embedded with, {text} marking the caption (saved with the
    /// model). Default: "Find an image that matches the caption: {text}"; for a pretrained
    /// decoder the same as a chat turn, "user\nFind an image …" (the tokenizer's turn opener comes
    /// before it and the embedding is read at the turn closer after it).
    #[arg(long, value_name = "TEMPLATE")]
    pub query_prompt: Option<String>,
    /// The instruction an image is embedded with, <image> marking the image (saved with the
    /// model). Default: "<image> Summarize the image in one word:" ("user\n<image> …" for a
    /// pretrained decoder).
    #[arg(long, value_name = "TEMPLATE")]
    pub target_prompt: Option<String>,
    /// How the embedding is read from a prompt's hidden states (saved with the model): last (the
    /// closing token's) or mean (the mean over every token: much the better sentence embedding of
    /// a frozen pretrained decoder, README "What the text side knows"). Default: mean with
    /// --init-lm, else last (--init keeps the model's own).
    #[arg(long, value_name = "POOLING")]
    pub pooling: Option<Pooling>,
}

/// `LoraConfig::default_targets()` as `--lora-targets` takes them (comma-separated).
fn default_lora_targets() -> &'static str {
    static TARGETS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TARGETS.get_or_init(|| LoraConfig::default_targets().join(","))
}

impl StartArgs {
    /// The LoRA adapters of rank `rank` these options describe (alpha: --lora-alpha, else 2 × rank).
    pub fn lora(&self, rank: usize) -> LoraConfig {
        LoraConfig { rank, alpha: self.lora_alpha.unwrap_or(2.0 * rank as f64), targets: self.lora_targets.clone() }
    }

    /// The model start and the LoRA adapters these options ask for (checked).
    pub fn resolve(&self) -> Result<(ModelStart, Option<LoraConfig>)> {
        let lora = match self.lora_rank {
            Some(rank) => Some(self.lora(rank)),
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
            (Some(path), _) => ModelStart::Lm(path.clone()),
            (None, Some(path)) => ModelStart::Smolvlm(path.clone()),
            (None, None) => ModelStart::Preset,
        };
        Ok((start, lora))
    }

    /// The prompt templates and pooling given (checked: the query's `{text}` and the target's
    /// `<image>` once, before anything is loaded).
    pub fn prompts(&self) -> Result<PromptOverride> {
        // The flag, its template, the slot it must hold once (and what goes there), the other slot.
        let check = |flag: &str, template: Option<&str>, slot: &str, what: &str, other: &str| -> Result<()> {
            if let Some(template) = template {
                anyhow::ensure!(
                    template.matches(slot).count() == 1,
                    "--{flag} {template:?} must hold {slot} exactly once (where the {what} goes)"
                );
                anyhow::ensure!(!template.contains(other), "--{flag} {template:?} must not hold {other}");
            }
            Ok(())
        };
        check("query-prompt", self.query_prompt.as_deref(), TEXT_SLOT, "caption", IMAGE_SLOT)?;
        check("target-prompt", self.target_prompt.as_deref(), IMAGE_SLOT, "image", TEXT_SLOT)?;
        // A pretrained decoder's mean-pooled states are the better sentence embedding (3× the
        // test R@1 of last-token pooling at the same budget, README): its default.
        let pooling = self.pooling.or(self.init_lm.as_ref().map(|_| Pooling::Mean));
        Ok(PromptOverride { query: self.query_prompt.clone(), target: self.target_prompt.clone(), pooling })
    }

    /// `-lm` / `-init` for default folder names.
    pub fn suffix(&self) -> &'static str {
        match (&self.init_lm, &self.init) {
            (Some(_), _) => "-lm",
            (None, Some(_)) => "-init",
            (None, None) => "",
        }
    }
}

/// Parses a split flag (`--split`, `--queries-split`): train, test or unseen. The one place a
/// split name is read; the error names the flag.
#[derive(Clone, Copy, Debug)]
pub struct SplitParser;

impl clap::builder::TypedValueParser for SplitParser {
    type Value = Split;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> std::result::Result<Split, clap::Error> {
        match value.to_str() {
            Some("train") => Ok(Split::Train),
            Some("test") => Ok(Split::Test),
            Some("unseen") => Ok(Split::Unseen),
            _ => {
                let flag = arg.and_then(clap::Arg::get_long).unwrap_or("split");
                let message = format!("--{flag} must be train, test or unseen, got {value:?}\n");
                Err(clap::Error::raw(clap::error::ErrorKind::InvalidValue, message).with_cmd(cmd))
            }
        }
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(["train", "test", "unseen"].into_iter().map(clap::builder::PossibleValue::new)))
    }
}

/// Threads of a benchmark: `threads`, or every core.
pub fn threads_or_all(threads: Option<usize>) -> usize {
    threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The Python of a benchmark's reference side: `python`, else bench/.venv's when it exists, else
/// `python3`.
pub fn bench_python(python: Option<PathBuf>) -> PathBuf {
    let venv = PathBuf::from("bench/.venv/bin/python");
    python.unwrap_or_else(|| if venv.is_file() { venv } else { PathBuf::from("python3") })
}
