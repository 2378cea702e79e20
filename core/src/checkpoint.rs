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

use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::loss::LossConfig;
use crate::model::smolvlm::{Part, SmolVlm};
use crate::model::{Architecture, Embedder, MiniEmbedder, ModelConfig};
use crate::pretrained::safetensors::{Rename, SafetensorsSource};
use crate::tokenizer::Tokenizer;
use crate::train::TrainConfig;
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
        }
    }
}

/// The model's weights as safetensors bytes: a `mini` model's burn tensor names, a `smolvlm`
/// model's Hugging Face names and layout (blocking read-back: native only).
pub fn model_to_bytes(model: &Embedder) -> Result<Vec<u8>> {
    match model {
        Embedder::Mini(mini) => {
            // burn-store's default metadata is a HashMap, written in a random key order: without
            // it the same weights always give the same bytes, so the same model id (issue 16).
            let mut store = SafetensorsStore::from_bytes(None).clear_metadata();
            mini.save_into(&mut store).map_err(|err| EgaError::Data(format!("serialising the weights: {err}")))?;
            store.get_bytes().map_err(|err| EgaError::Data(format!("serialising the weights: {err}")))
        }
        Embedder::Smolvlm(smolvlm) => crate::pretrained::safetensors::to_bytes(&smolvlm.export()?),
    }
}

/// A model of `config` with the weights of `bytes`; every tensor must be present with its shape.
pub fn model_from_bytes(config: &ModelConfig, bytes: Vec<u8>, device: &Device, what: &str) -> Result<Embedder> {
    match &config.architecture {
        Architecture::Mini(_) => {
            check_f32_finite(&bytes, what)?;
            let mut model = MiniEmbedder::new(config, 0, device)?;
            let mut store = SafetensorsStore::from_bytes(Some(bytes));
            let result = model.load_from(&mut store).map_err(|err| {
                EgaError::Data(format!("{what}: not a usable safetensors file for this model: {err}"))
            })?;
            if !result.is_success() || !result.missing.is_empty() {
                return Err(EgaError::Data(format!("{what}: the weights do not match the model config: {result}")));
            }
            Ok(Embedder::Mini(model))
        }
        Architecture::Smolvlm(smolvlm) => {
            let mut source = SafetensorsSource::from_files(what, vec![(what.to_string(), bytes)], Rename::Smolvlm)?;
            let (model, _) = SmolVlm::build(smolvlm, Some(&mut source), &Part::ALL, 0, device)?;
            Ok(Embedder::Smolvlm(model))
        }
    }
}

/// Refuses a mini model's safetensors file unless every tensor is F32 and finite, naming the first
/// tensor that is not: another dtype would reach a matmul as a dtype mismatch (a panic), and NaN
/// or ±Inf weights make every embedding NaN, which ranks and scores as nonsense (issue 16).
pub fn check_f32_finite(bytes: &[u8], what: &str) -> Result<()> {
    let bad = |why: String| EgaError::Data(format!("{what}: {why}"));
    let header_len = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| bad("not a safetensors file: shorter than 8 bytes".into()))?;
    let data_start =
        8u64.checked_add(header_len).filter(|end| *end <= bytes.len() as u64).ok_or_else(|| {
            bad(format!("not a safetensors file: a {header_len}-byte header in {} bytes", bytes.len()))
        })? as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..data_start])
        .map_err(|err| bad(format!("not a safetensors file: header is not JSON: {err}")))?;
    let data = &bytes[data_start..];
    let mut names: Vec<&String> = header.keys().filter(|k| *k != "__metadata__").collect();
    names.sort();
    for name in names {
        let info = &header[name];
        let dtype = info.get("dtype").and_then(|d| d.as_str()).unwrap_or("?");
        if dtype != "F32" {
            return Err(bad(format!("tensor {name} is stored as {dtype}; this model's weights must be F32 (or F16 with weights_dtype \"f16\")")));
        }
        let offsets = info.get("data_offsets").and_then(|o| o.as_array());
        let range = match offsets.map(|o| o.iter().map(|v| v.as_u64()).collect::<Vec<_>>()).as_deref() {
            Some([Some(start), Some(end)]) if start <= end && *end <= data.len() as u64 => {
                *start as usize..*end as usize
            }
            _ => return Err(bad(format!("tensor {name}: data_offsets missing or outside the file"))),
        };
        let values = data[range].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        if let Some((at, value)) = values.enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(bad(format!(
                "tensor {name} holds a non-finite value ({value} at element {at}); weights must be finite"
            )));
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` and flushes them to the disk before returning: a checkpoint renamed
/// into place must not hold empty files after a power loss.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path).map_err(|err| EgaError::io(path, err))?;
    file.write_all(bytes).and_then(|_| file.sync_all()).map_err(|err| EgaError::io(path, err))
}

/// The name of a temporary file or folder of [`write_atomic`] and [`save`] (`*.tmp-<PID>`).
pub fn is_temp_name(name: &str) -> bool {
    name.rsplit_once(".tmp-").is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Replaces `path` atomically with `bytes` (temp file in the same folder + rename). A failed
/// write (a full disk) removes its temp file, so nothing is left taking the space.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let written =
        write_file(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path).map_err(|err| EgaError::io(path, err)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
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
        write_file(&tmp.join("model.safetensors"), &model_to_bytes(model)?)?;
        write_file(&tmp.join("optimizer.bin"), optimizer)?;
        write_file(&tmp.join("tokenizer.json"), tokenizer.to_json()?.as_bytes())?;
        let json = serde_json::to_string_pretty(state).map_err(|err| EgaError::Data(err.to_string()))?;
        write_file(&tmp.join("run.json"), json.as_bytes())
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
        .map_err(|err| EgaError::Data(format!("{}: unreadable run.json: {err}", folder.join("run.json").display())))?;
    if state.format_version != FORMAT_VERSION {
        return Err(EgaError::Data(format!(
            "{}: format version {} (this build reads {FORMAT_VERSION}; written by ega-core {})",
            folder.display(),
            state.format_version,
            state.ega_core_version
        )));
    }
    let tokenizer_json = String::from_utf8(read("tokenizer.json")?)
        .map_err(|_| EgaError::Data(format!("{}: tokenizer.json is not UTF-8", folder.display())))?;
    let tokenizer = Tokenizer::from_json_with(&tokenizer_json, state.model.special)
        .map_err(|err| EgaError::Data(format!("{}: {err}", folder.join("tokenizer.json").display())))?;
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
            EgaError::Data(format!(
                "{}: not a readable optimizer state: {err:?}",
                folder.join("optimizer.bin").display()
            ))
        },
    )?;
    Ok(Checkpoint { folder: folder.to_path_buf(), optimizer, state, model, tokenizer, passed_over: Vec::new() })
}
