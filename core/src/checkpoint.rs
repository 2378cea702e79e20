//! Checkpoints of a training run, written so that nothing is lost on a crash (even `kill -9`):
//! each checkpoint is a complete folder written under a temporary name and renamed into place,
//! then `latest` (a one-line file naming it) is replaced atomically the same way. A reader only
//! ever sees whole checkpoints.
//!
//! ```text
//! <run>/checkpoints/step-000300/   model.safetensors  optimizer.bin  run.json  tokenizer.json
//! <run>/checkpoints/latest         "step-000300"
//! ```

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::loss::LossConfig;
use crate::model::{Embedder, ModelConfig};
use crate::parts::Merges;
use crate::store::{is_temp_name, write_atomic, write_synced};
use crate::tokenizer::Tokenizer;
use crate::train::TrainConfig;
use crate::weights::{model_from_bytes, model_to_bytes};
use crate::{EgaError, Result};

/// Version of the files written here; bumped when their meaning changes.
pub const FORMAT_VERSION: u32 = 1;

/// Everything about a run except tensors: what `run.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// ega-core's version of the writer.
    pub ega_core_version: String,
    /// The next step to take.
    pub step: usize,
    /// The model.
    pub model: ModelConfig,
    /// The loss.
    pub loss: LossConfig,
    /// The training options.
    pub train: TrainConfig,
    /// The data, as given on the command line (`shapes`, `jsonl:FILE`).
    pub data: String,
    /// A staged recipe's stages, in order (empty: one stage of `train` and `loss`). `step` counts
    /// on across them; `model`, `train` and `loss` are those of the stage `step` is in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<crate::train::Stage>,
    /// How the run evaluates, checkpoints and reads its data, kept for `--resume` (run.json files
    /// written before it was recorded get the command line's defaults).
    #[serde(default)]
    pub options: RunOptions,
    /// The command line that started the run (`native train …`), for model cards: how the model
    /// was made, as typed. Empty for runs started by code or before it was recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
}

/// The options of a run that are not training itself, saved so that a resumed run keeps them
/// (issue 16, `resume_opts`: they were lost on resume).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunOptions {
    /// Evaluate on held-out pairs every this many steps (0: only at the end).
    pub eval_every: usize,
    /// Held-out pairs per split of the final evaluation.
    pub eval_count: usize,
    /// Write a checkpoint every this many steps (and at the end of each stage).
    pub checkpoint_every: usize,
    /// Skip (and count) bad JSONL lines instead of stopping.
    pub skip_bad: bool,
}

impl Default for RunOptions {
    /// The defaults of `native train`.
    fn default() -> Self {
        RunOptions { eval_every: 250, eval_count: 500, checkpoint_every: 50, skip_bad: false }
    }
}

impl RunState {
    /// The state of a run of one stage at `step`, written by this build, with default options.
    pub fn new(step: usize, model: ModelConfig, loss: LossConfig, train: TrainConfig, data: &str) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            ega_core_version: crate::VERSION.to_string(),
            step,
            model,
            loss,
            train,
            data: data.to_string(),
            stages: Vec::new(),
            options: RunOptions::default(),
            command: Vec::new(),
        }
    }
}

/// Removes the temp files and folders (`*.tmp-<PID>`) that writers which died (killed, or a full
/// disk) left in a run folder, its `checkpoints/` and its `bundle/`: a full disk stays full of
/// them otherwise, and every resume fails (issue 16, `enospc`). Call it only while holding the
/// run's [`crate::lock::OutputLock`]: then no live writer owns them. Returns what was removed.
pub fn remove_stale_temps(run: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for folder in [run.to_path_buf(), run.join("checkpoints"), run.join("bundle")] {
        let Ok(entries) = std::fs::read_dir(&folder) else { continue };
        for entry in entries.flatten() {
            if !is_temp_name(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let path = entry.path();
            let gone = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            if gone.is_ok() {
                removed.push(path);
            }
        }
    }
    removed
}

/// The step of a checkpoint folder name (`step-000300` → 300).
fn step_of(name: &str) -> Option<usize> {
    name.strip_prefix("step-").filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))?.parse().ok()
}

/// The checkpoint folders under `folder`, newest (highest step) first.
fn checkpoint_names(folder: &Path) -> Vec<(usize, String)> {
    let mut names: Vec<(usize, String)> = std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    step_of(&name).map(|step| (step, name))
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort_by(|a, b| b.cmp(a));
    names
}

/// The checkpoint `run/checkpoints/latest` names, if it names one.
fn latest_name(folder: &Path) -> Option<String> {
    let text = crate::fs::read_text(&folder.join("latest"), 4096).ok()?;
    step_of(text.trim()).map(|_| text.trim().to_string())
}

/// Points `run/checkpoints/latest` at `checkpoint` (a folder of it), e.g. at the intact
/// checkpoint a resume fell back to, so that it is the one kept beside the next.
pub fn mark_latest(run: &Path, checkpoint: &Path) -> Result<()> {
    let name = checkpoint.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if step_of(&name).is_none() {
        return Err(EgaError::Data(format!("{}: not a checkpoint folder", checkpoint.display())));
    }
    write_atomic(&run.join("checkpoints").join("latest"), name.as_bytes())
}

/// Writes a checkpoint of `state.step` under `run/checkpoints/`, points `latest` at it, and
/// removes the other checkpoints except the one `latest` named before (the fallback when the new
/// one turns out damaged). Returns the checkpoint folder. A failed write removes its partial
/// folder.
pub fn save(
    run: &Path,
    state: &RunState,
    model: &Embedder,
    optimizer: &[u8],
    tokenizer: &Tokenizer,
) -> Result<PathBuf> {
    save_with_merges(run, state, model, optimizer, tokenizer, &Merges::default())
}

/// [`save`] with the LoRA merges the model's weights went through ([`crate::parts`]), kept in
/// the checkpoint folder so that a split bundle can later be made from any of its descendants.
pub fn save_with_merges(
    run: &Path,
    state: &RunState,
    model: &Embedder,
    optimizer: &[u8],
    tokenizer: &Tokenizer,
    merges: &Merges,
) -> Result<PathBuf> {
    let folder = run.join("checkpoints");
    std::fs::create_dir_all(&folder).map_err(|err| EgaError::io(&folder, err))?;
    let name = format!("step-{:06}", state.step);
    let target = folder.join(&name);
    let tmp = folder.join(format!("{name}.tmp-{}", std::process::id()));
    // The one to keep beside the new one: what `latest` names now (else the newest older one).
    let current = latest_name(&folder);
    let previous = current
        .clone()
        .filter(|p| step_of(p).is_some_and(|s| s < state.step))
        .or_else(|| checkpoint_names(&folder).into_iter().find(|(s, _)| *s < state.step).map(|(_, n)| n));
    // Keep `keep`, remove every other checkpoint folder.
    let keep_only = |keep: &[Option<&String>]| {
        for (_, other) in checkpoint_names(&folder) {
            if !keep.contains(&Some(&other)) {
                let _ = std::fs::remove_dir_all(folder.join(other));
            }
        }
    };
    // Before writing: only the previous one stays (and `latest`'s, whatever it is), so at most
    // two checkpoints are on the disk at a time, as many as when each save removed the one before.
    keep_only(&[previous.as_ref(), current.as_ref()]);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|err| EgaError::io(&tmp, err))?;
    }
    let write = || -> Result<()> {
        std::fs::create_dir_all(&tmp).map_err(|err| EgaError::io(&tmp, err))?;
        write_synced(&tmp.join("model.safetensors"), &model_to_bytes(model)?)?;
        write_synced(&tmp.join("optimizer.bin"), optimizer)?;
        write_synced(&tmp.join("tokenizer.json"), tokenizer.to_json()?.as_bytes())?;
        merges.write(&tmp)?;
        let json = serde_json::to_string_pretty(state)?;
        write_synced(&tmp.join("run.json"), json.as_bytes())
    };
    if let Err(err) = write() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(err);
    }
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(|err| EgaError::io(&target, err))?;
    }
    std::fs::rename(&tmp, &target).map_err(|err| EgaError::io(&target, err))?;
    write_atomic(&folder.join("latest"), name.as_bytes())?;
    // Once `latest` names the new one: the new one and the previous one stay.
    keep_only(&[Some(&name), previous.as_ref()]);
    Ok(target)
}

/// A loaded checkpoint.
pub struct Checkpoint {
    /// Where it was read from.
    pub folder: PathBuf,
    /// `run.json`.
    pub state: RunState,
    /// The weights, loaded into a model on the requested device.
    pub model: Embedder,
    /// The optimizer state bytes (checked to be a readable optimizer record).
    pub optimizer: Vec<u8>,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// The LoRA merges its weights went through (none for most runs).
    pub merges: Merges,
    /// Newer checkpoints [`load_latest`] passed over because they are damaged, each with why
    /// (empty when the one `latest` names loaded).
    pub passed_over: Vec<String>,
}

/// Loads the checkpoint `run/checkpoints/latest` names; when it is damaged (or `latest` is), the
/// newest intact checkpoint instead, with the damaged ones and why in [`Checkpoint::passed_over`].
pub fn load_latest(run: &Path, device: &Device) -> Result<Checkpoint> {
    let folder = run.join("checkpoints");
    let latest = folder.join("latest");
    if !folder.is_dir() {
        return Err(EgaError::Data(format!(
            "{}: no checkpoint to resume from (no checkpoints/ folder); is this a run folder written by `native train`?",
            run.display()
        )));
    }
    let mut passed_over = Vec::new();
    let named = match crate::fs::read_text(&latest, 4096) {
        Ok(text) => match step_of(text.trim()) {
            Some(_) => Some(text.trim().to_string()),
            None => {
                passed_over.push(format!("{}: names {:?}, not a checkpoint folder", latest.display(), text.trim()));
                None
            }
        },
        Err(err) => {
            passed_over.push(err.to_string());
            None
        }
    };
    let mut candidates: Vec<String> = named.iter().cloned().collect();
    candidates
        .extend(checkpoint_names(&folder).into_iter().map(|(_, name)| name).filter(|n| Some(n) != named.as_ref()));
    for name in candidates {
        match load(&folder.join(&name), device) {
            Ok(mut checkpoint) => {
                checkpoint.passed_over = passed_over;
                return Ok(checkpoint);
            }
            Err(err) => passed_over.push(err.to_string()),
        }
    }
    Err(EgaError::Data(format!(
        "{}: no checkpoint to resume from{}",
        run.display(),
        if passed_over.is_empty() {
            " (checkpoints/ is empty)".to_string()
        } else {
            format!(": every one is damaged or unreadable ({})", passed_over.join("; "))
        }
    )))
}

/// Loads one checkpoint folder.
pub fn load(folder: &Path, device: &Device) -> Result<Checkpoint> {
    let read = |file: &str| {
        let cap = if file.ends_with(".json") { crate::fs::MAX_JSON } else { crate::fs::MAX_WEIGHTS };
        crate::fs::read_regular(&folder.join(file), cap)
    };
    let state: RunState = serde_json::from_slice(crate::fs::strip_bom(&read("run.json")?))
        .map_err(|err| EgaError::format(folder.join("run.json").display(), format!("unreadable run.json: {err}")))?;
    if state.format_version != FORMAT_VERSION {
        return Err(EgaError::format(
            folder.display(),
            format!(
                "format version {} (this build reads {FORMAT_VERSION}; written by ega-core {})",
                state.format_version, state.ega_core_version
            ),
        ));
    }
    let tokenizer_json = String::from_utf8(read("tokenizer.json")?)
        .map_err(|_| EgaError::format(folder.display(), "tokenizer.json is not UTF-8"))?;
    let tokenizer = Tokenizer::from_json_with(&tokenizer_json, state.model.special)
        .map_err(|err| EgaError::format(folder.join("tokenizer.json").display(), err.to_string()))?;
    tokenizer.check_fits(state.model.vocab_size(), &folder.join("tokenizer.json").display().to_string())?;
    let model = model_from_bytes(
        &state.model,
        read("model.safetensors")?,
        device,
        &folder.join("model.safetensors").display().to_string(),
    )?;
    let optimizer = read("optimizer.bin")?;
    // Parsed here (it is parsed again when a trainer loads it) so that a damaged optimizer state
    // is named by its file and makes the checkpoint one to fall back from.
    burn::optim::OptimizerRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(optimizer.clone())).map_err(
        |err| {
            EgaError::format(folder.join("optimizer.bin").display(), format!("not a readable optimizer state: {err:?}"))
        },
    )?;
    let merges = Merges::read(folder)?;
    Ok(Checkpoint { folder: folder.to_path_buf(), optimizer, state, model, tokenizer, merges, passed_over: Vec::new() })
}
