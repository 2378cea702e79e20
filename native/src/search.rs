//! `native index` and `native search`: embedding a gallery of images into an index folder, and
//! ranking it for a text (or image) query.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use ega_core::data::{self, decode_image, RgbImage, Split};
use ega_core::device::{self, DeviceChoice};
use ega_core::embed::{embed_captions, embed_images};
use ega_core::index::{search_host, Hit, Index, IndexEntry, IndexMeta, INDEX_FORMAT_VERSION};
use ega_core::store::StoredDtype;
use ega_core::tensor_util::{floats, to_f32_vec};
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{SplitParser, DEVICE_HELP};
use crate::train::{load_model, LoadedModel};

/// File extensions read as images from a folder.
const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "bmp", "gif"];

/// `native index`'s flags (export builds one too, for the gallery it re-embeds).
#[derive(Args, Debug)]
pub struct IndexArgs {
    /// Model bundle, or a finished run folder (its bundle/).
    #[arg(long)]
    pub model: PathBuf,
    /// What to index: a folder of images, jsonl:FILE, shapes, openmoji[:DIR], openclipart[:DIR],
    /// fluentui[:DIR] or mix:….
    #[arg(long)]
    pub images: String,
    /// Split of built-in or JSONL data: train, test or unseen.
    #[arg(long, default_value = "test", value_parser = SplitParser)]
    pub split: Split,
    /// Images at most from built-in or JSONL data (default: all; 500 for shapes, which is unbounded).
    #[arg(long)]
    pub count: Option<usize>,
    /// Index folder (index.bin, index.json, thumbs/).
    #[arg(long)]
    pub out: PathBuf,
    /// Row storage: f32, or f16 (half the size).
    #[arg(long, default_value = "f32")]
    pub dtype: StoredDtype,
    /// Images embedded at once.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Longest side of the thumbnails in pixels (0: no thumbnails).
    #[arg(long, default_value_t = 64)]
    pub thumb_size: u32,
    #[arg(long, default_value = "auto", help = DEVICE_HELP)]
    pub device: DeviceChoice,
    /// Skip (and count) bad JSONL lines and unreadable images instead of stopping at the first
    /// (a folder's non-images are always skipped and counted).
    #[arg(long)]
    pub skip_bad: bool,
}

/// One item to index: an image with what is known about it.
struct Item {
    entry: IndexEntry,
    image: RgbImage,
}

/// Lists the image files under `dir` (recursively, sorted); other files are counted as skipped.
/// Each folder is read once, however many links lead to it (`ln -s . loop` does not repeat it).
fn image_files(dir: &Path, skipped: &mut Vec<String>) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    let mut seen = std::collections::HashSet::new();
    while let Some(folder) = pending.pop() {
        let real = std::fs::canonicalize(&folder).with_context(|| format!("reading {}", folder.display()))?;
        if !seen.insert(real) {
            skipped.push(format!("{}: a link to a folder already read", folder.display()));
            continue;
        }
        if folder != dir && is_index_folder(&folder) {
            // An index kept inside the gallery: its thumbnails are not gallery images.
            skipped.push(format!("{}: an index folder, not images", folder.display()));
            continue;
        }
        let entries = std::fs::read_dir(&folder).with_context(|| format!("reading {}", folder.display()))?;
        for entry in entries {
            let path = entry.with_context(|| format!("reading {}", folder.display()))?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
                if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
                    files.push(path);
                } else {
                    skipped.push(format!("{}: not an image file (by its extension)", path.display()));
                }
            }
        }
    }
    files.sort();
    Ok(files)
}

const SKIP_BAD_HINT: &str = "--skip-bad skips and counts bad lines and unreadable images instead";

/// Files an index folder holds; `native index` replaces such a folder whole.
const INDEX_FOLDER_FILES: &[&str] = &["index.bin", "index.json", "thumbs"];

fn is_index_folder(folder: &Path) -> bool {
    folder.join("index.bin").is_file() && folder.join("index.json").is_file()
}

/// Refuses an `--out` that exists and holds anything but an index (a photo folder, a run, a
/// bundle): the finished index replaces the folder whole, which would delete it.
pub fn check_index_out(out: &Path) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    anyhow::ensure!(out.is_dir(), "--out {}: exists and is not a folder", out.display());
    let mut others: Vec<String> = std::fs::read_dir(out)
        .with_context(|| format!("reading {}", out.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|name| !INDEX_FOLDER_FILES.contains(&name.as_str()))
        .collect();
    if !others.is_empty() {
        others.sort();
        let shown = others.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        bail!(
            "--out {} exists and is not an index folder (it holds {shown}{}); an index replaces its --out folder whole, so choose a new folder or an existing index",
            out.display(),
            if others.len() > 5 { format!(" and {} more", others.len() - 5) } else { String::new() }
        );
    }
    Ok(())
}

/// `<parent>/.<name>.<what>-<PID>`: where an index is built before it replaces `out`.
fn sibling(out: &Path, what: &str) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "index".into());
    out.with_file_name(format!(".{name}.{what}-{}", std::process::id()))
}

/// Removes the staging folders that index writers which died left beside `out` (only call it
/// while holding `out`'s lock: then none is a live writer's).
fn remove_dead_staging(out: &Path) {
    let (Some(parent), Some(name)) = (out.parent(), out.file_name()) else { return };
    let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    let prefixes = [".staging-", ".old-"].map(|what| format!(".{}{what}", name.to_string_lossy()));
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().to_string();
        if prefixes.iter().any(|p| file_name.starts_with(p.as_str())) && entry.path().is_dir() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Puts the finished `staging` folder in the place of `out` (two renames; if the second fails,
/// the old `out` is put back).
fn replace_folder(staging: &Path, out: &Path) -> Result<()> {
    if !out.exists() {
        return std::fs::rename(staging, out).with_context(|| format!("moving the new index into {}", out.display()));
    }
    let old = sibling(out, "old");
    let _ = std::fs::remove_dir_all(&old);
    std::fs::rename(out, &old).with_context(|| format!("moving the old {} aside", out.display()))?;
    if let Err(err) = std::fs::rename(staging, out) {
        let _ = std::fs::rename(&old, out);
        return Err(err).with_context(|| format!("moving the new index into {}", out.display()));
    }
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Takes the lock of an index folder (beside it: the folder itself is replaced whole) and
/// removes what dead writers left beside it.
pub fn lock_index_out(out: &Path) -> Result<ega_core::lock::OutputLock> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let (lock, note) = ega_core::lock::OutputLock::acquire(&ega_core::lock::beside(out), out)?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    remove_dead_staging(out);
    Ok(lock)
}

fn progress(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} {{pos}}/{{len}} [{{bar:30}}] {{per_sec}} ETA {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// A model from a bundle (not a bare checkpoint: indexes record the bundle's model id), with its id.
fn bundle_model(path: &Path, device: &burn::tensor::Device, command: &str) -> Result<(LoadedModel, String)> {
    let loaded = load_model(path, device)?;
    let id = loaded
        .model_id
        .clone()
        .with_context(|| format!("{}: {command} needs a model bundle (a finished run has bundle/)", path.display()))?;
    Ok((loaded, id))
}

/// Largest `--thumb-size`: thumbnails are previews, and every row keeps one.
pub const MAX_THUMB_SIZE: u32 = 1024;

/// `native index`.
pub fn index(request: IndexArgs) -> Result<()> {
    // A thumbnail is thumb_size² RGB pixels per row: 100 000 asked for 30 GB (issue 16).
    if request.thumb_size > MAX_THUMB_SIZE {
        bail!("--thumb-size {}: must be at most {MAX_THUMB_SIZE} pixels (0: no thumbnails)", request.thumb_size);
    }
    anyhow::ensure!(request.batch_size >= 1, "--batch-size must be at least 1");
    check_index_out(&request.out)?;
    let _lock = lock_index_out(&request.out)?;
    let selected = device::select(request.device)?;
    let device = selected.device.clone();
    let (loaded, model_id) = bundle_model(&request.model, &device, "index")?;
    eprintln!("indexing {} with {} on {}", request.images, loaded.description, selected.description);
    write_index(&loaded, &model_id, &request, &device)?;
    Ok(())
}

/// Embeds `request.images` with `loaded` into `request.out`; returns the number of rows. The
/// index is built in a staging folder beside `out` and then replaces it, so a failed run leaves
/// an existing index exactly as it was (issue 16, `index_clobber`). The caller holds `out`'s lock
/// ([`lock_index_out`]).
pub fn write_index(
    loaded: &LoadedModel,
    model_id: &str,
    request: &IndexArgs,
    device: &burn::tensor::Device,
) -> Result<usize> {
    check_index_out(&request.out)?;
    let staging = sibling(&request.out, "staging");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let built = build_index(loaded, model_id, request, &staging, device)
        .and_then(|report| replace_folder(&staging, &request.out).map(|_| report));
    let (count, dim, seconds, skipped) = match built {
        Ok(report) => report,
        Err(err) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(err);
        }
    };
    println!(
        "indexed {count} images ({dim}-d, {:?}) in {seconds:.1} s into {}{}",
        request.dtype,
        request.out.display(),
        if skipped == 0 { String::new() } else { format!("; skipped {skipped}") }
    );
    Ok(count)
}

/// The index of `request` written into `folder`: (rows, dimension, seconds, skipped inputs).
fn build_index(
    loaded: &LoadedModel,
    model_id: &str,
    request: &IndexArgs,
    folder: &Path,
    device: &burn::tensor::Device,
) -> Result<(usize, usize, f64, usize)> {
    let size = loaded.config.image_size();

    // The sources: a folder of files, or a dataset (built-in or JSONL).
    let mut skipped: Vec<String> = Vec::new();
    let source = Path::new(&request.images);
    let is_folder = source.is_dir();
    let (files, dataset) = if is_folder {
        (image_files(source, &mut skipped)?, None)
    } else {
        let dataset = data::open(&request.images, size, request.skip_bad).map_err(|err| {
            // A bad line (`FILE:LINE: …`) can be skipped; say how.
            let line = err.to_string().split(':').nth(1).is_some_and(|n| n.parse::<usize>().is_ok());
            if line && !request.skip_bad {
                anyhow::anyhow!("{err} ({SKIP_BAD_HINT})")
            } else {
                anyhow::Error::new(err)
            }
        })?;
        skipped.extend(dataset.skipped().iter().cloned());
        (Vec::new(), Some(dataset))
    };
    let total = match &dataset {
        None => files.len(),
        Some(dataset) => {
            let available = dataset.len(request.split).unwrap_or(usize::MAX);
            let wanted = request.count.unwrap_or(if available == usize::MAX { 500 } else { available });
            wanted.min(available)
        }
    };
    if total == 0 {
        if let Some(dataset) = &dataset {
            bail!("{}", empty_split_message(&request.images, dataset.as_ref(), request.split, request.count));
        }
        bail!("{}: nothing to index ({} files, none an image)", request.images, skipped.len());
    }
    let thumbs = folder.join("thumbs");
    if request.thumb_size > 0 {
        std::fs::create_dir_all(&thumbs).with_context(|| format!("creating {}", thumbs.display()))?;
    }

    let bar = progress(total, "embedding");
    let started = Instant::now();
    let mut rows: Vec<f32> = Vec::new();
    let mut entries: Vec<IndexEntry> = Vec::new();
    let mut next = 0;
    while next < total {
        let end = (next + request.batch_size).min(total);
        let mut batch: Vec<Item> = Vec::new();
        for position in next..end {
            let item = match &dataset {
                None => {
                    let path = &files[position];
                    let read = ega_core::fs::read_regular(path, ega_core::fs::MAX_IMAGE)
                        .and_then(|bytes| decode_image(&bytes, &path.display().to_string()));
                    match read {
                        Ok(image) => Item {
                            entry: IndexEntry {
                                id: path.strip_prefix(source).unwrap_or(path).display().to_string(),
                                caption: None,
                                image: Some(path.display().to_string()),
                                thumbnail: None,
                            },
                            image,
                        },
                        Err(err) => {
                            skipped.push(err.to_string());
                            continue;
                        }
                    }
                }
                Some(dataset) => {
                    let sample = match dataset.sample(request.split, position) {
                        Ok(sample) => sample,
                        Err(err) if request.skip_bad => {
                            skipped.push(err.to_string());
                            continue;
                        }
                        Err(err) => bail!("{err} ({SKIP_BAD_HINT})"),
                    };
                    Item {
                        entry: IndexEntry {
                            id: sample.id,
                            caption: Some(sample.caption),
                            image: None,
                            thumbnail: None,
                        },
                        image: sample.image,
                    }
                }
            };
            batch.push(item);
        }
        if !batch.is_empty() {
            let images: Vec<&RgbImage> = batch.iter().map(|item| &item.image).collect();
            let embeddings =
                embed_images(&loaded.model, &loaded.config, &loaded.tokenizer, &images, images.len(), &device)?;
            rows.extend(to_f32_vec(embeddings)?);
            for item in batch {
                let mut entry = item.entry;
                if request.thumb_size > 0 {
                    let name = format!("thumbs/{:06}.png", entries.len());
                    let thumb = image::imageops::thumbnail(&item.image, request.thumb_size, request.thumb_size);
                    let path = folder.join(&name);
                    thumb.save(&path).with_context(|| format!("writing {}", path.display()))?;
                    entry.thumbnail = Some(name);
                }
                entries.push(entry);
            }
        }
        bar.set_position(end as u64);
        next = end;
    }
    bar.finish_and_clear();
    if entries.is_empty() {
        bail!("{}: no readable image ({} skipped: {})", request.images, skipped.len(), skipped.join("; "));
    }
    let dim = rows.len() / entries.len();
    let meta = IndexMeta {
        format_version: INDEX_FORMAT_VERSION,
        model_id: model_id.to_string(),
        model: request.model.display().to_string(),
        source: request.images.clone(),
        split: dataset.as_ref().map(|_| request.split),
        count: entries.len(),
        dim,
        dtype: request.dtype,
        entries,
    };
    let count = meta.count;
    Index { meta, rows }.save(folder)?;
    if !skipped.is_empty() {
        eprintln!("skipped {}:", skipped.len());
        for reason in skipped.iter().take(20) {
            eprintln!("  {reason}");
        }
        if skipped.len() > 20 {
            eprintln!("  … and {} more", skipped.len() - 20);
        }
    }
    Ok((count, dim, started.elapsed().as_secs_f64(), skipped.len()))
}

/// Why a dataset source gave nothing to index: the split's size next to the others', and which
/// `--split` has pairs (a JSONL file's lines go to train unless they say otherwise).
fn empty_split_message(images: &str, dataset: &dyn data::Dataset, split: Split, count: Option<usize>) -> String {
    if count == Some(0) {
        return format!("{images}: nothing to index (--count 0)");
    }
    let sizes: Vec<(Split, usize)> =
        [Split::Train, Split::Test, Split::Unseen].into_iter().filter_map(|s| dataset.len(s).map(|n| (s, n))).collect();
    let listed = sizes.iter().map(|(s, n)| format!("{s}: {n}")).collect::<Vec<_>>().join(", ");
    let other = sizes.iter().find(|(s, n)| *s != split && *n > 0).map(|(s, _)| *s);
    let jsonl = if images.starts_with("jsonl:") || images.ends_with(".jsonl") {
        " (lines without \"split\" are train pairs, except every 20th of a file with 40 or more lines)"
    } else {
        ""
    };
    match other {
        Some(other) => format!(
            "{images}: nothing to index: the {split} split is empty ({listed}){jsonl}; index another with --split {other}"
        ),
        None => format!("{images}: nothing to index: the {split} split is empty ({listed})"),
    }
}

/// `native search`'s flags.
#[derive(Args, Debug)]
pub struct SearchArgs {
    /// What to look for, in words.
    pub query: Option<String>,
    /// Model bundle (or finished run folder); must be the model that made the index.
    #[arg(long)]
    pub model: PathBuf,
    /// Index folder written by `native index`.
    #[arg(long)]
    pub index: PathBuf,
    /// Search by this image instead of text.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// Number of results.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write an HTML contact sheet of the results' thumbnails to FILE.
    #[arg(long, value_name = "FILE")]
    pub open: Option<PathBuf>,
    #[arg(long, default_value = "auto", help = DEVICE_HELP)]
    pub device: DeviceChoice,
}

/// Embeds the query with `loaded` and returns its unit-norm embedding.
fn embed_query(loaded: &LoadedModel, request: &SearchArgs, device: &burn::tensor::Device) -> Result<Vec<f32>> {
    let embedding = match (&request.query, &request.image) {
        (Some(text), None) => {
            if text.trim().is_empty() {
                bail!("the query is empty: give some words to search for (or --image FILE)");
            }
            let tokens = loaded.tokenizer.encode(text)?.len();
            let room = ega_core::embed::query_token_budget(&loaded.config, &loaded.tokenizer)?;
            if tokens > room {
                eprintln!(
                    "warning: the query is {} characters ({tokens} tokens); the model reads at most {room} of them, so it was cut",
                    text.chars().count()
                );
            }
            embed_captions(&loaded.model, &loaded.config, &loaded.tokenizer, &[text.as_str()], 1, device)?
        }
        (None, Some(path)) => {
            let bytes = ega_core::fs::read_regular(path, ega_core::fs::MAX_IMAGE)?;
            let image = decode_image(&bytes, &path.display().to_string())?;
            embed_images(&loaded.model, &loaded.config, &loaded.tokenizer, &[&image], 1, device)?
        }
        (Some(_), Some(_)) => bail!("give a text query or --image, not both"),
        (None, None) => bail!("give a text query (e.g. \"a red circle\") or --image FILE"),
    };
    Ok(to_f32_vec(embedding)?)
}

/// Top-`k` rows of `index` for `query`: the WGSL top-k kernel on a wgpu device, the exact host
/// loop elsewhere (both break ties by the lower row).
pub fn top_k(index: &Index, query: &[f32], k: usize, device: &burn::tensor::Device) -> Result<Vec<Hit>> {
    if !ega_core::kernels::is_wgpu(device) {
        return Ok(search_host(&index.rows, index.meta.dim, query, k));
    }
    let (n, d) = (index.meta.count, index.meta.dim);
    let queries = floats(query.to_vec(), [1, d], device);
    let rows = floats(index.rows.clone(), [n, d], device);
    let top = ega_core::kernels::topk::topk_cosine(queries, rows, k)?;
    let indices: Vec<i64> = top
        .indices
        .try_into_data()
        .map_err(|err| anyhow::anyhow!("reading the top-k indices back: {err:?}"))?
        .iter::<i64>()
        .collect();
    let scores = to_f32_vec(top.scores)?;
    Ok(indices.into_iter().zip(scores).map(|(row, score)| Hit { row: row as usize, score }).collect())
}

/// `native search`.
pub fn search(request: SearchArgs) -> Result<()> {
    anyhow::ensure!(request.k >= 1, "-k must be at least 1 (got 0)");
    let index = Index::load(&request.index)?;
    let selected = device::select(request.device)?;
    let device = selected.device.clone();
    let (loaded, model_id) = bundle_model(&request.model, &device, "search")?;
    index.check_model(&model_id, loaded.config.embed_dim(), &request.model.display().to_string())?;
    let started = Instant::now();
    let query = embed_query(&loaded, &request, &device)?;
    let embedded = started.elapsed();
    let hits = top_k(&index, &query, request.k, &device)?;
    let searched = started.elapsed() - embedded;
    let results: Vec<serde_json::Value> = hits
        .iter()
        .enumerate()
        .map(|(rank, hit)| {
            let entry = &index.meta.entries[hit.row];
            serde_json::json!({"rank": rank + 1, "score": hit.score, "row": hit.row, "id": entry.id,
                "caption": entry.caption, "image": entry.image, "thumbnail": entry.thumbnail})
        })
        .collect();
    if request.json {
        let json = serde_json::json!({"query": request.query, "image": request.image, "k": request.k,
            "embed_ms": embedded.as_secs_f64() * 1e3, "search_ms": searched.as_secs_f64() * 1e3, "results": results});
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!("| rank | score | id | caption |\n|---:|---:|---|---|");
        for (rank, hit) in hits.iter().enumerate() {
            let entry = &index.meta.entries[hit.row];
            let caption = table_cell(entry.caption.as_deref().unwrap_or(""));
            println!("| {} | {:.4} | {} | {caption} |", rank + 1, hit.score, table_cell(&entry.id));
        }
        eprintln!(
            "{} of {} images; embedding the query {:.1} ms, search {:.1} ms ({})",
            hits.len(),
            index.meta.count,
            embedded.as_secs_f64() * 1e3,
            searched.as_secs_f64() * 1e3,
            selected.description
        );
    }
    if let Some(path) = &request.open {
        std::fs::write(path, contact_sheet(&request, &index, &hits))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("contact sheet: {}", path.display());
    }
    Ok(())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// An HTML page with the results' thumbnails and scores (images by absolute file URL).
fn contact_sheet(request: &SearchArgs, index: &Index, hits: &[Hit]) -> String {
    let base = std::fs::canonicalize(&request.index).unwrap_or_else(|_| request.index.clone());
    let query = match (&request.query, &request.image) {
        (Some(text), _) => escape(text),
        (_, Some(path)) => format!("image {}", escape(&path.display().to_string())),
        _ => String::new(),
    };
    let mut cells = String::new();
    for (rank, hit) in hits.iter().enumerate() {
        let entry = &index.meta.entries[hit.row];
        // A thumbnail is a file inside the index folder: a path in index.json that leaves it
        // (absolute, or with `..`) is not followed (issue 16).
        let inside =
            |t: &&String| Path::new(t.as_str()).components().all(|c| matches!(c, std::path::Component::Normal(_)));
        let src = entry
            .thumbnail
            .as_ref()
            .filter(inside)
            .map(|t| format!("file://{}", base.join(t).display()))
            .or_else(|| {
                entry
                    .image
                    .clone()
                    .map(|i| format!("file://{}", std::fs::canonicalize(&i).unwrap_or(i.into()).display()))
            })
            .unwrap_or_default();
        cells.push_str(&format!(
            "<figure><img src=\"{}\" alt=\"{}\"><figcaption>#{} · {:.3}<br>{}</figcaption></figure>\n",
            escape(&src),
            escape(&entry.id),
            rank + 1,
            hit.score,
            escape(entry.caption.as_deref().unwrap_or(&entry.id))
        ));
    }
    format!(
        "<!doctype html><meta charset=\"utf-8\"><title>EGA search: {query}</title>\n<style>body{{font:14px system-ui;margin:2em}}main{{display:flex;flex-wrap:wrap;gap:12px}}figure{{margin:0;width:140px}}img{{width:128px;height:128px;object-fit:contain;image-rendering:pixelated;border:1px solid #ccc}}figcaption{{font-size:12px}}</style>\n<h1>{query}</h1><p>{} results of {} images, model {}</p><main>\n{cells}</main>\n",
        hits.len(),
        index.meta.count,
        escape(&index.meta.model_id)
    )
}

/// `text` safe for one cell of a terminal table: control characters (newlines, escape codes that
/// would recolour or move the cursor) are written as Rust escapes, `|` as `\|` (issue 16).
fn table_cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' => out.push_str("\\|"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}
