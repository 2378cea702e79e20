//! `native export`: a model bundle and its gallery index, in the form the web page loads.
//!
//! ```text
//! <out>/model/   config.json model.safetensors tokenizer.json metrics.json   (a bundle; f16 weights when harmless)
//! <out>/index/   index.bin (f16 rows when harmless) index.json thumbs/
//! <out>/export.json   what was measured and chosen, and every file's size
//! <out>/README.md     the model card: how it was made, its evaluation, the export check, credits
//! ```
//!
//! f16 halves the download. It is used only where it loses no retrieval quality: the export
//! evaluates the f32 and the f16 model on the held-out split (R@1 both ways, same pairs), and
//! compares the f32 and f16 index rows' top-10 for every gallery image used as a query. The log
//! prints both. The index is re-embedded with the exported weights, so the page computes queries
//! with exactly the model that made the index.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use ega_core::bundle;
use ega_core::data::{self, Split};
use ega_core::device::{self, DeviceChoice};
use ega_core::eval::{evaluate, RetrievalMetrics};
use ega_core::gallery::{self, LoadedModel};
use ega_core::index::Index;
use ega_core::store::StoredDtype;

use crate::args::DEVICE_HELP;
use crate::search::{write_index, IndexArgs};

/// Largest buffer a page may bind by default in WebGPU (`maxStorageBufferBindingSize`, 128 MiB).
pub const WEBGPU_DEFAULT_BINDING_LIMIT: u64 = 128 << 20;
/// Retrieval may drop by at most this much (absolute R@1) for f16 weights to be chosen: one pair
/// in 500 changing rank is rounding noise, not lost quality.
const R1_TOLERANCE: f64 = 0.002;

/// `native export`'s flags.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Model bundle, or a finished run folder (its bundle/).
    #[arg(long)]
    pub model: PathBuf,
    /// Gallery index made by `native index` with that model.
    #[arg(long)]
    pub index: PathBuf,
    /// Output folder (model/, index/, export.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Weights: f32 or f16 (default: f16 when the held-out R@1 does not drop, else f32).
    #[arg(long)]
    pub weights: Option<StoredDtype>,
    /// Held-out pairs of the f32-vs-f16 check.
    #[arg(long, default_value_t = 500)]
    pub eval_count: usize,
    #[arg(long, default_value = "auto", help = DEVICE_HELP)]
    pub device: DeviceChoice,
    /// Merge the model's LoRA adapters into the decoder weights they adapt (W + (alpha/rank)·B·A):
    /// the exported model has none and runs at the plain model's cost. By default they are kept.
    #[arg(long)]
    pub merge_lora: bool,
    /// Also write the model as parts (<out>/parts/: the tensors PATH does not give back, a few MB)
    /// for a model trained from --init-lm PATH (the SmolLM2 GGUF): git can keep the parts and
    /// leave out model/model.safetensors and model/tokenizer.json, which `native assemble <out>`
    /// rebuilds from PATH byte for byte (checked here before anything is kept).
    #[arg(long, value_name = "PATH")]
    pub parts_base: Option<PathBuf>,
}

/// `native assemble`'s flags.
#[derive(Args, Debug)]
pub struct AssembleArgs {
    /// An export folder with parts/ (written by `native export --parts-base`), e.g.
    /// assets/openmoji-lm: its model/model.safetensors and model/tokenizer.json are rebuilt.
    pub dir: PathBuf,
    /// The checkpoint the parts were split from (default: data/pretrained/<its file name>, where
    /// scripts/setup-pretrained.sh puts it).
    #[arg(long)]
    pub base: Option<PathBuf>,
}

fn r1(metrics: &RetrievalMetrics) -> (f64, f64) {
    (metrics.t2i_r1, metrics.i2t_r1)
}

fn file_sizes(dir: &Path, prefix: &str, out: &mut Vec<(String, u64)>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.path().is_dir() {
            file_sizes(&entry.path(), &format!("{name}/"), out)?;
        } else {
            out.push((name, entry.metadata()?.len()));
        }
    }
    Ok(())
}

/// `path` absolute, with links resolved, also when its last parts do not exist yet.
fn real_path(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.clone();
    let mut missing = Vec::new();
    loop {
        if let Ok(mut real) = std::fs::canonicalize(&existing) {
            real.extend(missing.iter().rev());
            return real;
        }
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                missing.push(name);
                existing = parent.to_path_buf();
            }
            _ => return absolute,
        }
    }
}

/// Refuses an `--out` that is the bundle or the index being exported, or a folder holding one
/// of them: export replaces `<out>/model` and `<out>/index`, and would overwrite its own inputs
/// (issue 16, `export_onto_inputs`: the f32 inputs were replaced without a word).
fn refuse_out_onto_inputs(out: &Path, bundle: &Path, index: &Path) -> Result<()> {
    let real_out = real_path(out);
    for (what, input) in [("the model bundle", bundle), ("the index", index)] {
        if real_path(input).starts_with(&real_out) {
            anyhow::bail!(
                "--out {} is {what} being exported ({}) or a folder holding it: export writes model/, index/, export.json and README.md there and would replace its own input; choose another --out",
                out.display(),
                input.display()
            );
        }
    }
    Ok(())
}

/// Refuses to export when data it reads back (the index's images, the evaluation data) lies in a
/// folder the export replaces.
fn refuse_out_onto_data(out: &Path, sources: &[&str]) -> Result<()> {
    let replaced = ["model", "model.partial", "index"].map(|name| real_path(&out.join(name)));
    for source in sources {
        let path = source.strip_prefix("jsonl:").or_else(|| source.strip_prefix("openmoji:")).unwrap_or(source);
        if !Path::new(path).exists() {
            continue;
        }
        let real = real_path(Path::new(path));
        if let Some(folder) = replaced.iter().find(|folder| real.starts_with(folder)) {
            anyhow::bail!(
                "{source} (read to re-embed the index or to evaluate) lies in {}, which the export replaces; choose another --out",
                folder.display()
            );
        }
    }
    Ok(())
}

/// `native export`.
pub fn export(request: ExportArgs) -> Result<()> {
    let dir = bundle::resolve(&request.model)?;
    refuse_out_onto_inputs(&request.out, &dir, &request.index)?;
    std::fs::create_dir_all(&request.out).with_context(|| format!("creating {}", request.out.display()))?;
    let (_lock, note) = ega_core::lock::OutputLock::acquire(&request.out.join(".lock"), &request.out)?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    let index_out = request.out.join("index");
    gallery::check_index_out(&index_out)?;
    let _index_lock = crate::search::lock_index_out(&index_out)?;
    let selected = device::select(request.device)?;
    let device = selected.device.clone();
    let mut source = bundle::load(&dir, &device)?;
    let index = Index::load(&request.index)?;
    refuse_out_onto_data(&request.out, &[&index.meta.source, &source.config.data])?;
    index.check_model(&source.config.model_id, source.config.model.embed_dim(), &dir.display().to_string())?;
    // The merges the source's weights went through, and the one --merge-lora adds (for --parts-base).
    let mut merges = ega_core::parts::Merges::read(&dir)?;
    if request.merge_lora {
        match merges.merge_into_weights("export", &source.model, &source.config.model, &device)? {
            Some((config, model)) => {
                eprintln!("LoRA adapters merged into the decoder's weights (the exported model has none)");
                source.model = model;
                source.config.model = config;
            }
            None => eprintln!("note: {} has no LoRA adapters; --merge-lora changes nothing", dir.display()),
        }
    }
    eprintln!("exporting {} (model {}) with {}", dir.display(), source.config.model_id, selected.description);

    // The f16 candidate: write it, load it back as the page would.
    let staging = request.out.join("model.partial");
    let _ = std::fs::remove_dir_all(&staging);
    let save = |dir: &Path, dtype: StoredDtype| {
        bundle::save(
            dir,
            &source.model,
            &source.config.model,
            &source.tokenizer,
            &source.config.loss,
            &source.config.data,
            source.config.steps,
            &source.metrics,
            dtype,
        )
    };
    save(&staging, StoredDtype::F16)?;
    let halved = bundle::load(&staging, &device)?;

    // Retrieval of both on the same held-out pairs.
    let dataset = data::open(&source.config.data, source.config.model.image_size(), true)?;
    let split = if dataset.len(Split::Test).unwrap_or(1) > 0 { Split::Test } else { Split::Train };
    let eval = |model: &ega_core::model::Embedder| {
        evaluate(
            model,
            &source.config.model,
            &source.tokenizer,
            dataset.as_ref(),
            split,
            request.eval_count,
            64,
            &device,
        )
    };
    let full_metrics = eval(&source.model)?;
    let half_metrics = eval(&halved.model)?;
    let (full_r1, half_r1) = (r1(&full_metrics), r1(&half_metrics));
    let harmless = half_r1.0 >= full_r1.0 - R1_TOLERANCE && half_r1.1 >= full_r1.1 - R1_TOLERANCE;
    // f32 weights take twice f16's bytes: past the page's limit, f16 it is (the page could not
    // load the other), and the log says what it costs.
    let f16_bytes = std::fs::metadata(staging.join("model.safetensors")).map(|m| m.len()).unwrap_or(0);
    let f32_too_big = f16_bytes.saturating_mul(2) > WEBGPU_DEFAULT_BINDING_LIMIT;
    let weights = request.weights.unwrap_or(if harmless || f32_too_big { StoredDtype::F16 } else { StoredDtype::F32 });
    eprintln!(
        "{split} split, {} pairs: R@1 t2i / i2t with f32 weights {:.1}% / {:.1}%, with f16 weights {:.1}% / {:.1}% → {} weights{}",
        full_metrics.count,
        100.0 * full_r1.0,
        100.0 * full_r1.1,
        100.0 * half_r1.0,
        100.0 * half_r1.1,
        if weights == StoredDtype::F16 { "f16" } else { "f32" },
        if request.weights.is_some() {
            " (as asked)"
        } else if harmless {
            " (no loss)"
        } else if f32_too_big {
            " (f16 loses a little, but f32 weights would be over WebGPU's 128 MiB binding limit)"
        } else {
            " (f16 loses quality)"
        }
    );
    let model_out = request.out.join("model");
    let _ = std::fs::remove_dir_all(&model_out);
    let exported_config = if weights == StoredDtype::F16 {
        std::fs::rename(&staging, &model_out).with_context(|| format!("moving into {}", model_out.display()))?;
        halved.config.clone()
    } else {
        let _ = std::fs::remove_dir_all(&staging);
        save(&model_out, StoredDtype::F32)?
    };
    let exported = if weights == StoredDtype::F16 { halved } else { bundle::load(&model_out, &device)? };

    // The gallery, re-embedded with the exported weights; rows in f32 first to compare.
    let loaded = LoadedModel::from_bundle(exported, model_out.display().to_string());
    let source_is_folder = Path::new(&index.meta.source).is_dir();
    let index_request = IndexArgs {
        model: model_out.clone(),
        images: index.meta.source.clone(),
        split: index.meta.split.unwrap_or(Split::Test),
        count: if source_is_folder { None } else { Some(index.meta.count) },
        out: index_out.clone(),
        dtype: StoredDtype::F32,
        batch_size: 64,
        thumb_size: 64,
        device: request.device,
        // The rows the index was made with: an index made with --skip-bad skipped lines (they
        // are listed again here, not dropped silently).
        skip_bad: true,
    };
    let written = write_index(loaded, &index_request, &device)?;
    let mut rows = Index::load(&index_out)?;
    // f16 rows: do the top-10 lists of every gallery image as a query stay the same?
    let same = gallery::f16_keeps_top_k(&rows, 10);
    let rows_f16 = same == rows.meta.count;
    eprintln!(
        "index rows: top-10 identical with f16 rows for {same} of {} gallery queries → {} rows",
        rows.meta.count,
        if rows_f16 { "f16" } else { "f32" }
    );
    if rows_f16 {
        rows.meta.dtype = StoredDtype::F16;
        rows.save(&index_out)?;
    }

    let mut files = Vec::new();
    file_sizes(&request.out, "", &mut files)?;
    files.retain(|(name, _)| name.starts_with("model/") || name.starts_with("index/"));
    files.sort();
    let largest = files.iter().max_by_key(|f| f.1).cloned().unwrap_or_default();
    anyhow::ensure!(
        largest.1 <= WEBGPU_DEFAULT_BINDING_LIMIT,
        "{} is {} bytes, over WebGPU's default 128 MiB binding limit{}",
        largest.0,
        largest.1,
        if weights == StoredDtype::F32 && largest.0.starts_with("model/") {
            " (export with --weights f16)"
        } else {
            ""
        }
    );
    let total: u64 = files.iter().map(|f| f.1).sum();
    let known = written
        .known_query()?
        .map(|known| serde_json::json!({"query": known.query, "id": known.id, "row": known.row, "score": known.score}));
    if let Some(known) = &known {
        eprintln!("known query: {} ranks {} first", known["query"], known["id"]);
    }
    let report = serde_json::json!({
        "known_query": known,
        "index_source": rows.meta.source, "index_split": rows.meta.split,
        "model_id": exported_config.model_id,
        "source_model_id": source.config.model_id,
        "weights": weights, "index_rows": rows.meta.dtype, "index_count": rows.meta.count,
        "eval": {"split": split.to_string(), "pairs": full_metrics.count,
            "f32": {"t2i_r1": full_r1.0, "i2t_r1": full_r1.1}, "f16": {"t2i_r1": half_r1.0, "i2t_r1": half_r1.1}},
        "index_top10_identical_with_f16_rows": format!("{same}/{}", rows.meta.count),
        "files": files.iter().map(|(n, s)| serde_json::json!({"path": n, "bytes": s})).collect::<Vec<_>>(),
        "total_bytes": total, "largest_file": largest.0, "largest_bytes": largest.1,
        "webgpu_default_binding_limit": WEBGPU_DEFAULT_BINDING_LIMIT,
    });
    let mut report = report;
    if let Some(base) = &request.parts_base {
        let parts = write_parts(&request.out, &merges, base, &exported_config, &device)?;
        report["parts"] = parts;
    }
    ega_core::store::write_atomic(&request.out.join("export.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    let card = model_card(&exported_config, &source.metrics, &report);
    ega_core::store::write_atomic(&request.out.join("README.md"), card.as_bytes())?;
    println!(
        "exported to {}: model/ ({:?} weights), index/ ({} rows, {:?}), {:.1} MB in {} files; largest {} ({:.1} MB, under WebGPU's 128 MiB default)",
        request.out.display(),
        weights,
        rows.meta.count,
        rows.meta.dtype,
        total as f64 / 1e6,
        files.len(),
        largest.0,
        largest.1 as f64 / 1e6
    );
    Ok(())
}

/// The model card (`README.md` beside model/ and index/): what it is, how it was made, how good
/// it is, what the export measured, and credits.
fn model_card(config: &bundle::BundleConfig, metrics: &serde_json::Value, report: &serde_json::Value) -> String {
    let train = &metrics["train"];
    let loss = &config.loss;
    // The command that started the run when it recorded one; otherwise the flags it implies (a
    // model trained from scratch in one stage).
    let recorded: Vec<String> = metrics["command"]
        .as_array()
        .map(|args| args.iter().filter_map(|a| a.as_str().map(shell_word)).collect())
        .unwrap_or_default();
    let command = if !recorded.is_empty() {
        format!("cargo run -p native -- {}", recorded.join(" "))
    } else if config.model.smolvlm().is_some() {
        "# the run recorded no command line (runs started before 7 December 2026); its stages are above".to_string()
    } else {
        format!(
        "cargo run -p native -- train --preset {} --data {} --loss {} --tau {} --alpha {} --rescale {} --steps {} --batch-size {} --hard-negatives {} --lr {} --warmup {} --seed {} --device cpu",
        config.model.preset,
        config.data,
        loss.kind,
        loss.tau,
        loss.alpha,
        serde_json::to_value(loss.rescale).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        config.steps,
        train["batch_size"],
        train["hard_negatives"],
        train["lr"],
        train["warmup_steps"],
        train["seed"],
        )
    };
    let what = describe_model(config, metrics);
    let mut results = Vec::new();
    if let Some(eval) = metrics["eval"].as_object() {
        for (split, value) in eval {
            let split = match split.as_str() {
                "train" => Split::Train,
                "unseen" => Split::Unseen,
                _ => Split::Test,
            };
            if let Ok(m) = serde_json::from_value::<RetrievalMetrics>(value.clone()) {
                results.push((split, m));
            }
        }
    }
    let credit = if config.data.starts_with("openmoji") {
        "\n## Credit\n\nEmoji artwork: [OpenMoji](https://openmoji.org) – the open-source emoji and icon project, \
         licensed [CC BY-SA 4.0](https://creativecommons.org/licenses/by-sa/4.0/). The thumbnails in `index/thumbs/` \
         are rasterised OpenMoji images and are under the same licence.\n"
    } else {
        ""
    };
    let known = match report["known_query"].as_object() {
        Some(k) => format!(
            "Known query (the committed-bundle test checks it): {} → `{}` first.\n",
            k["query"],
            k["id"].as_str().unwrap_or("")
        ),
        None => String::new(),
    };
    format!(
        "# EGA demo bundle: `{preset}` on `{data}`\n\n\
         {what} Model id `{id}`; weights stored as {weights}.\n\n\
         ## How it was made\n\n```sh\n{command}\ncargo run -p native -- index --model RUN --images {source} --split {index_split} --count {rows} --out INDEX\n\
         cargo run -p native -- export --model RUN --index INDEX --out DIR\n```\n\n\
         {steps} steps; the run's last process (a resumed run counts from its resume) took {wall:.0} s on {device}; machine: {cores}.\n\n\
         ## Evaluation (held-out pairs, at the end of training)\n\n{table}\n\
         ## Export\n\nR@1 (t2i / i2t) on {pairs} {split} pairs: f32 weights {f32t:.1}% / {f32i:.1}%, f16 weights {f16t:.1}% / {f16i:.1}%. \
         Index: {rows} gallery images ({split_note}), rows stored as {row_dtype}. Largest file {largest} ({largest_mb:.1} MB).\n\n{known}{credit}",
        preset = config.model.preset,
        data = config.data,
        id = config.model_id,
        weights = report["weights"].as_str().unwrap_or("f32"),
        source = report["index_source"].as_str().unwrap_or(""),
        index_split = report["index_split"].as_str().unwrap_or("test"),
        steps = config.steps,
        wall = metrics["wall_time_s"].as_f64().unwrap_or(0.0),
        device = metrics["device"].as_str().unwrap_or("?"),
        cores = machine(),
        table = crate::train::metrics_table(&results),
        pairs = report["eval"]["pairs"],
        split = report["eval"]["split"].as_str().unwrap_or(""),
        f32t = 100.0 * report["eval"]["f32"]["t2i_r1"].as_f64().unwrap_or(0.0),
        f32i = 100.0 * report["eval"]["f32"]["i2t_r1"].as_f64().unwrap_or(0.0),
        f16t = 100.0 * report["eval"]["f16"]["t2i_r1"].as_f64().unwrap_or(0.0),
        f16i = 100.0 * report["eval"]["f16"]["i2t_r1"].as_f64().unwrap_or(0.0),
        rows = report["index_count"],
        split_note = match report["index_split"].as_str() {
            Some(split) => format!("{} split of {}", split, report["index_source"].as_str().unwrap_or("")),
            None => format!("from {}", report["index_source"].as_str().unwrap_or("")),
        },
        row_dtype = report["index_rows"].as_str().unwrap_or("f32"),
        largest = report["largest_file"].as_str().unwrap_or(""),
        largest_mb = report["largest_bytes"].as_f64().unwrap_or(0.0) / 1e6,
    )
}

/// One sentence on what the model is: its architecture, pooling and where its weights started.
fn describe_model(config: &bundle::BundleConfig, metrics: &serde_json::Value) -> String {
    let model = &config.model;
    let pooling = match model.prompts.pooling {
        ega_core::prompt::Pooling::Last => "last-token pooling",
        ega_core::prompt::Pooling::Mean => "mean pooling",
    };
    let stages: Vec<String> = metrics["stages"]
        .as_array()
        .map(|stages| {
            stages
                .iter()
                .map(|s| {
                    let lora = s["lora"]["rank"].as_u64().map(|r| format!(", LoRA rank {r}")).unwrap_or_default();
                    let frozen = s["freeze"].as_array().filter(|f| !f.is_empty()).map(|f| {
                        format!(", frozen: {}", f.iter().filter_map(|p| p.as_str()).collect::<Vec<_>>().join(", "))
                    });
                    format!(
                        "{} ({} steps, {}{lora}{})",
                        s["name"].as_str().unwrap_or("?"),
                        s["steps"],
                        s["loss"].as_str().unwrap_or("?"),
                        frozen.unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let trained = if stages.is_empty() {
        format!("with the {} loss", config.loss.kind)
    } else {
        format!("in stages: {}", stages.join("; "))
    };
    match &model.architecture {
        ega_core::model::Architecture::Mini(_) => format!(
            "A multimodal-LLM embedder (ViT → projector → decoder LM, {pooling}) trained from scratch {trained}."
        ),
        ega_core::model::Architecture::Smolvlm(s) => {
            let v = &s.vision_config;
            let tower = match v.stem {
                Some(_) => format!(
                    "a SigLIP-shaped vision tower ({} px, width {}, {} layers) on a frozen pretrained MobileNetV2 stem",
                    v.image_size, v.hidden_size, v.num_hidden_layers
                ),
                None => format!(
                    "a SigLIP-shaped vision tower ({} px, width {}, {} layers)",
                    v.image_size, v.hidden_size, v.num_hidden_layers
                ),
            };
            format!(
                "A `smolvlm` embedder: {tower} → pixel-shuffle connector → the Llama-family decoder of `{}` \
                 ({} layers, width {}), {pooling}; trained {trained}.",
                model.preset, s.text_config.num_hidden_layers, s.text_config.hidden_size
            )
        }
    }
}

/// `word` as a shell would need it (quoted when it holds anything but plain characters).
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The machine in words: CPU model (Linux) and core count.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|text| {
        text.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|m| m.trim().to_string())
    });
    match model {
        Some(model) => format!("{model}, {cores} cores available"),
        None => format!("{cores} CPU cores available"),
    }
}

/// The base checkpoint's tensors as a model built from it holds them (decoder cut to `layers`;
/// its vision tower is fresh and never matches), its tokenizer's JSON and the file's hash.
fn base_tensors(
    base: &Path,
    layers: usize,
    device: &burn::tensor::Device,
) -> Result<(ega_core::parts::Tensors, String, String)> {
    let bytes = ega_core::fs::read_regular(base, ega_core::fs::MAX_WEIGHTS)?;
    let file_hash = ega_core::store::fnv_hex(&[&bytes]);
    drop(bytes);
    let start = ega_core::init::from_lm(base, "tiny", Some(layers), None, 0, device)
        .with_context(|| format!("reading the base checkpoint {}", base.display()))?;
    let model = start.model.as_smolvlm().context("the base checkpoint did not build a smolvlm model")?;
    Ok((model.export()?, start.tokenizer.to_json()?, file_hash))
}

/// Writes `<out>/parts/` for the exported model in `<out>/model` (trained from `base`; its weights
/// went through `merges`), then assembles it back from `base` and checks the bytes. Returns what
/// export.json records about it.
fn write_parts(
    out: &Path,
    merges: &ega_core::parts::Merges,
    base: &Path,
    config: &bundle::BundleConfig,
    device: &burn::tensor::Device,
) -> Result<serde_json::Value> {
    use ega_core::parts::{split, Base, Parts, OWN_FILE, PARTS_FORMAT_VERSION, PARTS_JSON};
    let model_dir = out.join("model");
    let smolvlm =
        config.model.smolvlm().context("--parts-base: the model is not a smolvlm model (trained with --init-lm)")?;
    let layers = smolvlm.text_config.num_hidden_layers;
    let (checkpoint, tokenizer_json, file_hash) = base_tensors(base, layers, device)?;
    let tokenizer_hash = ega_core::store::fnv_hex(&[tokenizer_json.as_bytes()]);
    anyhow::ensure!(
        Some(&tokenizer_hash) == config.tokenizer_hash.as_ref(),
        "--parts-base {}: its tokenizer is not the model's (the model was not trained from this checkpoint)",
        base.display()
    );
    let reconstructed = merges.apply(checkpoint.clone())?;
    let exported = bundle::load(&model_dir, device)?;
    let tensors = exported.model.as_smolvlm().context("the exported model is not a smolvlm model")?.export()?;
    let (own, order) = split(&tensors, &reconstructed, config.weights_dtype);
    let from_base = order.iter().filter(|(name, own)| !own && name.starts_with("text_model.")).count();
    anyhow::ensure!(
        from_base > 0,
        "--parts-base {}: none of the decoder's tensors comes from this checkpoint (was the model trained from it, with --init-lm?)",
        base.display()
    );
    let parts_dir = out.join("parts");
    let _ = std::fs::remove_dir_all(&parts_dir);
    std::fs::create_dir_all(&parts_dir).with_context(|| format!("creating {}", parts_dir.display()))?;
    let mut own_bytes = ega_core::store::safetensors::to_bytes(&own)?;
    if config.weights_dtype == ega_core::store::StoredDtype::F16 {
        own_bytes = ega_core::store::safetensors::convert(&own_bytes, ega_core::store::StoredDtype::F16, OWN_FILE)?;
    }
    ega_core::store::write_atomic(&parts_dir.join(OWN_FILE), &own_bytes)?;
    merges.write(&parts_dir)?;
    let parts = Parts {
        format_version: PARTS_FORMAT_VERSION,
        base: Base {
            file_name: base.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            file_hash,
            lm_layers: layers,
        },
        dtype: config.weights_dtype,
        tensors: order,
        weights_hash: config.weights_hash.clone().context("the exported bundle records no weights hash")?,
        tokenizer_hash,
    };
    ega_core::store::write_atomic(&parts_dir.join(PARTS_JSON), serde_json::to_string_pretty(&parts)?.as_bytes())?;
    // The proof: the parts (read back from disk) and the checkpoint give back the very file.
    let bytes = parts.assemble(&parts_dir, checkpoint)?;
    let written = ega_core::fs::read_regular(&model_dir.join("model.safetensors"), ega_core::fs::MAX_WEIGHTS)?;
    anyhow::ensure!(bytes == written, "the parts do not give back model/model.safetensors byte for byte");
    let mut sizes = Vec::new();
    file_sizes(&parts_dir, "parts/", &mut sizes)?;
    let parts_bytes: u64 = sizes.iter().map(|f| f.1).sum();
    eprintln!(
        "parts: {} of {} tensors kept ({:.1} MB in parts/), the rest from {} after {} merge(s); assembled back byte for byte",
        own.len(),
        tensors.len(),
        parts_bytes as f64 / 1e6,
        base.display(),
        merges.names().len()
    );
    Ok(serde_json::json!({
        "base": parts.base, "own_tensors": own.len(), "tensors": tensors.len(), "merges": merges.names(),
        "files": sizes.iter().map(|(n, b)| serde_json::json!({"path": n, "bytes": b})).collect::<Vec<_>>(),
        "bytes": parts_bytes,
        "assemble": format!("cargo run -p native -- assemble {}", out.display()),
    }))
}

/// `native assemble DIR`: rebuilds DIR/model/model.safetensors and DIR/model/tokenizer.json from
/// DIR/parts/ and the base checkpoint, checking both against the hashes the parts record.
pub fn assemble(args: AssembleArgs) -> Result<()> {
    use ega_core::parts::Parts;
    let parts_dir = args.dir.join("parts");
    let parts = Parts::read(&parts_dir).with_context(|| {
        format!("{} holds no parts (export one with `native export --parts-base`)", args.dir.display())
    })?;
    let base = args.base.clone().unwrap_or_else(|| Path::new("data/pretrained").join(&parts.base.file_name));
    anyhow::ensure!(
        base.is_file(),
        "{}: the base checkpoint is missing; run `bash scripts/setup-extras.sh pretrained` (or give --base PATH)",
        base.display()
    );
    let model_dir = args.dir.join("model");
    let config_bytes = ega_core::fs::read_regular(&model_dir.join("config.json"), ega_core::fs::MAX_JSON)?;
    let config = bundle::parse_config(&config_bytes, &model_dir.join("config.json").display().to_string())?;
    anyhow::ensure!(
        config.weights_hash.as_ref() == Some(&parts.weights_hash),
        "{}: config.json and parts/ belong to different models",
        args.dir.display()
    );
    let started = std::time::Instant::now();
    let device = burn::tensor::Device::flex();
    let (tensors, tokenizer_json, file_hash) = base_tensors(&base, parts.base.lm_layers, &device)?;
    anyhow::ensure!(
        file_hash == parts.base.file_hash,
        "{}: not the checkpoint the parts were split from (hash {file_hash}, expected {} of {})",
        base.display(),
        parts.base.file_hash,
        parts.base.file_name
    );
    anyhow::ensure!(
        ega_core::store::fnv_hex(&[tokenizer_json.as_bytes()]) == parts.tokenizer_hash,
        "{}: its tokenizer is not the one the parts expect",
        base.display()
    );
    let bytes = parts.assemble(&parts_dir, tensors)?;
    ega_core::store::write_atomic(&model_dir.join("model.safetensors"), &bytes)?;
    ega_core::store::write_atomic(&model_dir.join("tokenizer.json"), tokenizer_json.as_bytes())?;
    // What the page and `native search` load: it must open as the bundle it was exported as.
    let loaded = bundle::load(&model_dir, &device)?;
    anyhow::ensure!(loaded.config.model_id == config.model_id, "the assembled bundle's model id differs");
    println!(
        "assembled {} ({:.1} MB) from {} and {} in {:.1} s; model {}",
        model_dir.join("model.safetensors").display(),
        bytes.len() as f64 / 1e6,
        base.display(),
        parts_dir.display(),
        started.elapsed().as_secs_f64(),
        config.model_id
    );
    Ok(())
}
