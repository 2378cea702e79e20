//! `native index` and `native search`: thin callers of `ega_core::gallery` (which embeds a gallery
//! of images into an index folder, and ranks it for a query), with the command line's progress
//! bar, tables and contact sheet.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::Tensor;
use clap::Args;
use ega_core::data::{decode_image, Split};
use ega_core::device::{self, DeviceChoice};
use ega_core::gallery::{self, AddOptions, Gallery, IndexJob, LoadedModel};
use ega_core::index::{Hit, Index};
use ega_core::store::StoredDtype;
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{SplitParser, DEVICE_HELP};

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

/// Takes the lock of an index folder ([`gallery::lock_index_out`]), printing the note of a dead
/// writer's lock taken over.
pub fn lock_index_out(out: &Path) -> Result<ega_core::lock::OutputLock> {
    let (lock, note) = gallery::lock_index_out(out)?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    Ok(lock)
}

/// `path` loaded as a model ([`gallery::load_model`]), with what loading it passed over printed
/// (search, index and eval load through it).
pub fn load_model(path: &Path, device: &burn::tensor::Device) -> Result<LoadedModel> {
    let loaded = gallery::load_model(path, device)?;
    for note in &loaded.notes {
        eprintln!("note: {note}");
    }
    Ok(loaded)
}

fn progress_bar(total: usize, what: &str) -> ProgressBar {
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

/// `native index`.
pub fn index(request: IndexArgs) -> Result<()> {
    // Bad options are refused before anything is read or written.
    request.options().validate()?;
    gallery::check_index_out(&request.out)?;
    let _lock = lock_index_out(&request.out)?;
    let selected = device::select(request.device)?;
    let device = selected.device.clone();
    let loaded = load_model(&request.model, &device)?;
    loaded.bundle_id()?;
    eprintln!("indexing {} with {} on {}", request.images, loaded.description, selected.description);
    write_index(loaded, &request, &device)?;
    Ok(())
}

impl IndexArgs {
    fn options(&self) -> AddOptions {
        AddOptions {
            split: self.split,
            count: self.count,
            batch_size: self.batch_size,
            thumb_size: self.thumb_size,
            skip_bad: self.skip_bad,
        }
    }
}

/// Embeds `request.images` with `loaded` into `request.out` ([`gallery::write_index`]: a failed
/// run leaves an existing index exactly as it was) with a progress bar, and reports it; returns
/// the gallery made. The caller holds `out`'s lock ([`lock_index_out`]).
pub fn write_index(loaded: LoadedModel, request: &IndexArgs, device: &burn::tensor::Device) -> Result<Gallery> {
    let job = IndexJob { images: &request.images, options: request.options(), dtype: request.dtype };
    let started = Instant::now();
    let mut bar: Option<ProgressBar> = None;
    let written = gallery::write_index(loaded, &job, &request.out, device, &mut |done, total| {
        bar.get_or_insert_with(|| progress_bar(total, "embedding")).set_position(done as u64);
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let (gallery, report) = written?;
    let skipped = &report.skipped;
    if !skipped.is_empty() {
        eprintln!("skipped {}:", skipped.len());
        for reason in skipped.iter().take(20) {
            eprintln!("  {reason}");
        }
        if skipped.len() > 20 {
            eprintln!("  … and {} more", skipped.len() - 20);
        }
    }
    println!(
        "indexed {} images ({}-d, {:?}) in {:.1} s into {}{}",
        gallery.len(),
        gallery.dim(),
        request.dtype,
        started.elapsed().as_secs_f64(),
        request.out.display(),
        if skipped.is_empty() { String::new() } else { format!("; skipped {}", skipped.len()) }
    );
    Ok(gallery)
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

/// Embeds the query of `request` (a text, or an image file): `[1, d]` on the gallery's device.
fn embed_query(gallery: &Gallery, request: &SearchArgs) -> Result<Tensor<2>> {
    match (&request.query, &request.image) {
        (Some(text), None) => {
            if let Some((tokens, room)) = gallery.query_overflow(text)? {
                eprintln!(
                    "warning: the query is {} characters ({tokens} tokens); the model reads at most {room} of them, so it was cut",
                    text.chars().count()
                );
            }
            Ok(gallery.embed_text(text)?)
        }
        (None, Some(path)) => {
            let bytes = ega_core::fs::read_regular(path, ega_core::fs::MAX_IMAGE)?;
            let image = decode_image(&bytes, &path.display().to_string())?;
            Ok(gallery.embed_images(&[&image])?)
        }
        (Some(_), Some(_)) => bail!("give a text query or --image, not both"),
        (None, None) => bail!("give a text query (e.g. \"a red circle\") or --image FILE"),
    }
}

/// `native search`.
pub fn search(request: SearchArgs) -> Result<()> {
    anyhow::ensure!(request.k >= 1, "-k must be at least 1 (got 0)");
    let index = Index::load(&request.index)?;
    let selected = device::select(request.device)?;
    let device = selected.device.clone();
    let mut gallery = Gallery::open(load_model(&request.model, &device)?, index, &device)?;
    let started = Instant::now();
    let query = embed_query(&gallery, &request)?;
    // Read once, so that the embedding is timed apart from the search (devices run lazily).
    ega_core::tensor_util::to_f32_vec(query.clone())?;
    let embedded = started.elapsed();
    let hits = gallery.search(query, request.k)?;
    let searched = started.elapsed() - embedded;
    let index = gallery.index();
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
        std::fs::write(path, contact_sheet(&request, index, &hits))
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
