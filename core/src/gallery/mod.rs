//! The gallery service: a model and the index of a gallery of images it embedded, for every
//! front end (`native index` / `search` / `export`, the page's `Searcher`).
//!
//! - [`load_model`]: a model from a bundle, a run folder (its `bundle/`, else its latest
//!   checkpoint) or a checkpoint folder; [`LoadedModel::from_bundle`] for a bundle already read.
//! - [`Gallery`]: a model with an index ([`Gallery::open`]) or with an empty one
//!   ([`Gallery::empty`]); [`Gallery::add_dataset`] embeds any [`Dataset`] into it (a folder of
//!   images is [`crate::data::folder`]: [`open_images`] opens either), [`Gallery::add_rows`] /
//!   [`Gallery::add_images`] add single images.
//! - Search with one device rule ([`Gallery::searches_on_device`]): where the WGSL top-k runs (a
//!   wgpu device, kernels not switched off) the rows are kept on the device and ranked there;
//!   everywhere else the exact host loop ([`search_host`]) ranks them. A search is started on
//!   tensors ([`Gallery::start_search`] → [`PendingSearch`]) and read back synchronously
//!   ([`PendingSearch::read`], native) or asynchronously ([`PendingSearch::read_async`], the
//!   web), then finished ([`Gallery::finish_search`]); [`Gallery::search`] does all three.
//! - Natively, [`write_index`] builds an index folder whole (staged beside it, then swapped in).

#[cfg(not(target_family = "wasm"))]
mod out;

use std::ops::Range;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;

use crate::bundle::Bundle;
use crate::data::{self, Dataset, RgbImage, Split};
use crate::index::{round_to_f16, search_host, Hit, Index, IndexEntry, IndexMeta, INDEX_FORMAT_VERSION};
use crate::kernels::topk::{self, TopK};
use crate::model::{Embedder, ModelConfig};
use crate::store::StoredDtype;
use crate::tensor_util::{floats, to_f32_vec};
use crate::tokenizer::Tokenizer;
use crate::{EgaError, Result};

#[cfg(not(target_family = "wasm"))]
pub use out::{check_index_out, lock_index_out, write_index, IndexJob};

/// Largest thumbnail side: thumbnails are previews, and every row keeps one (`thumb_size²` RGB
/// pixels a row: 100 000 asked for 30 GB, issue 16).
pub const MAX_THUMB_SIZE: u32 = 1024;
/// Rows taken from an unbounded dataset (procedural shapes) when no count is given.
pub const UNBOUNDED_COUNT: usize = 500;
/// What a dataset's bad line or unreadable image says it can do about it.
pub const SKIP_BAD_HINT: &str = "--skip-bad skips and counts bad lines and unreadable images instead";

/// A model to embed with, from a bundle, a run folder or a checkpoint folder.
pub struct LoadedModel {
    /// The weights.
    pub model: Embedder,
    /// Its config.
    pub config: ModelConfig,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// The data it was trained on.
    pub data: String,
    /// The bundle's model id (`None` for a checkpoint: a gallery needs a bundle).
    pub model_id: Option<String>,
    /// Where it came from, for messages.
    pub description: String,
    /// The path (or name) it was loaded from, as given: an index records it.
    pub path: String,
    /// What loading it passed over (damaged checkpoints, each with why), for the front end to show.
    pub notes: Vec<String>,
}

impl LoadedModel {
    /// A bundle already read (from `dir`, or bytes named `dir`).
    pub fn from_bundle(bundle: Bundle, dir: impl Into<String>) -> Self {
        let dir = dir.into();
        LoadedModel {
            description: format!("bundle {dir} (model {}, {} steps)", bundle.config.model_id, bundle.config.steps),
            model_id: Some(bundle.config.model_id),
            data: bundle.config.data,
            config: bundle.config.model,
            model: bundle.model,
            tokenizer: bundle.tokenizer,
            path: dir,
            notes: Vec::new(),
        }
    }

    /// The bundle's model id, or why this model cannot make or search an index (a checkpoint).
    pub fn bundle_id(&self) -> Result<&str> {
        self.model_id.as_deref().ok_or_else(|| {
            EgaError::Data(format!(
                "{}: indexing and searching need a model bundle, not a checkpoint (a finished run has bundle/)",
                self.path
            ))
        })
    }
}

/// Loads `path` as a bundle, a run folder (its `bundle/`, else its latest intact checkpoint) or a
/// checkpoint folder.
pub fn load_model(path: &Path, device: &Device) -> Result<LoadedModel> {
    let checkpoint = if path.join("run.json").exists() {
        Some(crate::checkpoint::load(path, device)?)
    } else {
        match crate::bundle::resolve(path) {
            Ok(_) => None,
            // A run that has no bundle yet: its latest checkpoint.
            Err(_) if path.join("checkpoints").is_dir() => Some(crate::checkpoint::load_latest(path, device)?),
            Err(err) => return Err(err),
        }
    };
    if let Some(checkpoint) = checkpoint {
        return Ok(LoadedModel {
            description: format!("{} (step {})", checkpoint.folder.display(), checkpoint.state.step),
            model_id: None,
            data: checkpoint.state.data,
            config: checkpoint.state.model,
            model: checkpoint.model,
            tokenizer: checkpoint.tokenizer,
            path: path.display().to_string(),
            notes: checkpoint
                .passed_over
                .iter()
                .map(|reason| format!("passed over a damaged checkpoint: {reason}"))
                .collect(),
        });
    }
    let dir = crate::bundle::resolve(path)?;
    let bundle = crate::bundle::load(&dir, device)?;
    Ok(LoadedModel { path: path.display().to_string(), ..LoadedModel::from_bundle(bundle, dir.display().to_string()) })
}

/// Opens what an index is made from: a folder of images ([`data::folder::FolderDataset`]) or any
/// dataset [`data::open`] names. A bad line of a dataset (`FILE:LINE: …`) says that `skip_bad`
/// would skip it.
pub fn open_images(spec: &str, image_size: usize, skip_bad: bool) -> Result<Box<dyn Dataset>> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(Box::new(data::folder::FolderDataset::open(path)?));
    }
    data::open(spec, image_size, skip_bad).map_err(|err| {
        let line = err.to_string().split(':').nth(1).is_some_and(|n| n.parse::<usize>().is_ok());
        if line && !skip_bad {
            with_skip_bad_hint(err)
        } else {
            err
        }
    })
}

/// `err` with [`SKIP_BAD_HINT`] (a format error stays one).
fn with_skip_bad_hint(err: EgaError) -> EgaError {
    match err {
        EgaError::Format { file, problem } => {
            EgaError::Format { file, problem: format!("{problem} ({SKIP_BAD_HINT})") }
        }
        other => EgaError::Data(format!("{other} ({SKIP_BAD_HINT})")),
    }
}

/// How [`Gallery::add_dataset`] takes a dataset's images.
#[derive(Debug, Clone, PartialEq)]
pub struct AddOptions {
    /// The split of a dataset of pairs (a folder has none: every split is all of it).
    pub split: Split,
    /// Images at most (default: all; [`UNBOUNDED_COUNT`] of an unbounded dataset).
    pub count: Option<usize>,
    /// Images embedded at once (at least 1).
    pub batch_size: usize,
    /// Longest side of the thumbnails (0: none; at most [`MAX_THUMB_SIZE`]).
    pub thumb_size: u32,
    /// Skip (and count) samples that cannot be read instead of stopping at the first (a
    /// folder's unreadable files are always skipped).
    pub skip_bad: bool,
}

impl AddOptions {
    /// Refuses a batch size of 0 and thumbnails over [`MAX_THUMB_SIZE`].
    pub fn validate(&self) -> Result<()> {
        if self.thumb_size > MAX_THUMB_SIZE {
            return Err(EgaError::Data(format!(
                "--thumb-size {}: must be at most {MAX_THUMB_SIZE} pixels (0: no thumbnails)",
                self.thumb_size
            )));
        }
        if self.batch_size == 0 {
            return Err(EgaError::Data("--batch-size must be at least 1".into()));
        }
        Ok(())
    }
}

/// What [`Gallery::add_dataset`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct AddReport {
    /// The rows added.
    pub added: Range<usize>,
    /// Inputs left out (the dataset's own, unreadable samples), each with why.
    pub skipped: Vec<String>,
}

/// A gallery entry whose own caption ranks it first, clearly (a query to test a bundle with).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KnownQuery {
    /// The caption.
    pub query: String,
    /// The entry's id.
    pub id: String,
    /// Its row.
    pub row: usize,
    /// Its score for the caption.
    pub score: f32,
}

/// A model and its gallery index (rows, entries); the rows also on the device where search runs
/// there.
pub struct Gallery {
    model: LoadedModel,
    index: Index,
    device: Device,
    /// The rows on the device (where [`Gallery::searches_on_device`]); dropped when rows are added.
    on_device: Option<Tensor<2>>,
}

/// A search started on the device, not read back yet.
pub struct PendingSearch(Pending);

enum Pending {
    /// The WGSL top-k's answer, on the device.
    Device(Box<TopK>),
    /// The query embedding, for the host loop.
    Host { query: Box<Tensor<2>>, k: usize },
}

/// A search read back, to finish with [`Gallery::finish_search`].
pub struct ReadSearch(Read);

enum Read {
    Hits(Vec<Hit>),
    Query { values: Vec<f32>, k: usize },
}

fn readback(err: impl std::fmt::Debug) -> EgaError {
    EgaError::Readback(format!("{err:?}"))
}

fn device_hits(indices: TensorData, scores: TensorData) -> ReadSearch {
    let hits =
        indices.iter::<i64>().zip(scores.iter::<f32>()).map(|(row, score)| Hit { row: row as usize, score }).collect();
    ReadSearch(Read::Hits(hits))
}

impl PendingSearch {
    /// True when the top-k ran on the device (the WGSL kernels).
    pub fn on_device(&self) -> bool {
        matches!(self.0, Pending::Device(_))
    }

    /// Reads the search back, blocking (native only: WebGPU cannot block).
    pub fn read(self) -> Result<ReadSearch> {
        match self.0 {
            Pending::Device(top) => Ok(device_hits(
                top.indices.try_into_data().map_err(readback)?,
                top.scores.try_into_data().map_err(readback)?,
            )),
            Pending::Host { query, k } => Ok(ReadSearch(Read::Query { values: to_f32_vec(*query)?, k })),
        }
    }

    /// Reads the search back without blocking (the web).
    pub async fn read_async(self) -> Result<ReadSearch> {
        match self.0 {
            Pending::Device(top) => {
                let indices = top.indices.into_data_async().await.map_err(readback)?;
                let scores = top.scores.into_data_async().await.map_err(readback)?;
                Ok(device_hits(indices, scores))
            }
            Pending::Host { query, k } => {
                let values = (*query).into_data_async().await.map_err(readback)?.iter::<f32>().collect();
                Ok(ReadSearch(Read::Query { values, k }))
            }
        }
    }
}

impl Gallery {
    /// `model` with `index`, on `device`; refuses an index made by another model (or of another
    /// dimension) and a model that is not a bundle.
    pub fn open(model: LoadedModel, index: Index, device: &Device) -> Result<Self> {
        let id = model.bundle_id()?;
        index.check_model(id, model.config.embed_dim(), &model.path)?;
        Ok(Gallery { model, index, device: device.clone(), on_device: None })
    }

    /// `model` with an empty index of `dtype` rows that records `source` (and its `split`: `None`
    /// for a folder).
    pub fn empty(
        model: LoadedModel,
        source: &str,
        split: Option<Split>,
        dtype: StoredDtype,
        device: &Device,
    ) -> Result<Self> {
        let meta = IndexMeta {
            format_version: INDEX_FORMAT_VERSION,
            model_id: model.bundle_id()?.to_string(),
            model: model.path.clone(),
            source: source.to_string(),
            split,
            count: 0,
            dim: model.config.embed_dim(),
            dtype,
            entries: Vec::new(),
        };
        Ok(Gallery { model, index: Index { meta, rows: Vec::new() }, device: device.clone(), on_device: None })
    }

    /// The model.
    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    /// The model's id (the index's).
    pub fn model_id(&self) -> &str {
        &self.index.meta.model_id
    }

    /// The index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The model and the index, taken apart.
    pub fn into_parts(self) -> (LoadedModel, Index) {
        (self.model, self.index)
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.index.meta.entries.len()
    }

    /// True without rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.index.meta.dim
    }

    /// What row `row` is.
    pub fn entry(&self, row: usize) -> Option<&IndexEntry> {
        self.index.meta.entries.get(row)
    }

    /// `Some((tokens, room))` when the text query `text` is longer than the model reads (it is cut
    /// to `room` tokens).
    pub fn query_overflow(&self, text: &str) -> Result<Option<(usize, usize)>> {
        let tokens = self.model.tokenizer.encode(text)?.len();
        let room = crate::embed::query_token_budget(&self.model.config, &self.model.tokenizer)?;
        Ok((tokens > room).then_some((tokens, room)))
    }

    /// The unit-norm query embedding `[1, d]` of `text` (refused when empty), on the device.
    pub fn embed_text(&self, text: &str) -> Result<Tensor<2>> {
        if text.trim().is_empty() {
            return Err(EgaError::Data("the query is empty: give some words to search for".into()));
        }
        crate::embed::embed_captions(
            &self.model.model,
            &self.model.config,
            &self.model.tokenizer,
            &[text],
            1,
            &self.device,
        )
    }

    /// The unit-norm embeddings `[n, d]` of `images` (as gallery images, or image queries).
    pub fn embed_images(&self, images: &[&RgbImage]) -> Result<Tensor<2>> {
        if images.is_empty() {
            return Err(EgaError::Data("no images to embed".into()));
        }
        crate::embed::embed_images(
            &self.model.model,
            &self.model.config,
            &self.model.tokenizer,
            images,
            images.len(),
            &self.device,
        )
    }

    /// The one device rule of search: true where the WGSL top-k runs
    /// ([`topk::runs_on_kernels`]: a wgpu device, the kernels not switched off), and there the
    /// rows are kept on the device and ranked by the kernels; false elsewhere, where the exact
    /// host loop ranks them. Both order by score, then the lower row.
    pub fn searches_on_device(&self) -> bool {
        topk::runs_on_kernels(&self.device)
    }

    /// Starts the top-`k` search of `query` (`[1, d]`, unit-norm, on the gallery's device) by the
    /// device rule; read it back, then [`Gallery::finish_search`].
    pub fn start_search(&mut self, query: Tensor<2>, k: usize) -> Result<PendingSearch> {
        if k == 0 {
            return Err(EgaError::config("k", k, "must be at least 1"));
        }
        let [q, d] = query.dims();
        if q != 1 || d != self.dim() {
            return Err(EgaError::Shape {
                context: "gallery search",
                message: format!(
                    "the query is [{q}, {d}]; one query of the index's dimension {} was expected",
                    self.dim()
                ),
            });
        }
        if self.is_empty() || !self.searches_on_device() {
            return Ok(PendingSearch(Pending::Host { query: Box::new(query), k }));
        }
        let (n, index, device) = (self.len(), &self.index, &self.device);
        let rows = self.on_device.get_or_insert_with(|| floats(index.rows.clone(), [n, d], device)).clone();
        Ok(PendingSearch(Pending::Device(Box::new(topk::topk_cosine(query, rows, k)?))))
    }

    /// The hits of a search read back: best first, rows of this gallery only.
    pub fn finish_search(&self, read: ReadSearch) -> Vec<Hit> {
        let mut hits = match read.0 {
            Read::Hits(hits) => hits,
            Read::Query { values, k } => search_host(&self.index.rows, self.dim(), &values, k),
        };
        hits.retain(|hit| hit.row < self.len());
        hits
    }

    /// The top-`k` rows for `query`, read back blocking (native).
    pub fn search(&mut self, query: Tensor<2>, k: usize) -> Result<Vec<Hit>> {
        let read = self.start_search(query, k)?.read()?;
        Ok(self.finish_search(read))
    }

    /// Adds rows: `values` (`entries.len() × d`, unit-norm embeddings read back) with what they
    /// are. Returns the new rows.
    pub fn add_rows(&mut self, values: &[f32], entries: Vec<IndexEntry>) -> Result<Range<usize>> {
        let expected = entries.len() * self.dim();
        if values.len() != expected {
            let id = entries.first().map(|e| e.id.as_str()).unwrap_or("no entry");
            return Err(EgaError::Data(format!("{id}: the embedding has {} values, not {expected}", values.len())));
        }
        let start = self.len();
        self.index.rows.extend_from_slice(values);
        self.index.meta.entries.extend(entries);
        self.index.meta.count = self.index.meta.entries.len();
        self.on_device = None;
        Ok(start..self.len())
    }

    /// Embeds `images` and adds them as `entries` (blocking read-back: native).
    pub fn add_images(&mut self, images: &[&RgbImage], entries: Vec<IndexEntry>) -> Result<Range<usize>> {
        if images.len() != entries.len() {
            return Err(EgaError::Data(format!("{} images for {} entries", images.len(), entries.len())));
        }
        let values = to_f32_vec(self.embed_images(images)?)?;
        self.add_rows(&values, entries)
    }

    /// Embeds the images of `dataset` (its `options.split`, at most `options.count`) and adds
    /// them, `options.batch_size` at a time; `progress(done, total)` after each batch. With
    /// `folder` and a thumbnail size, each row's thumbnail is written to
    /// `folder/thumbs/NNNNNN.png` (by row). A folder's rows are named by their files, without
    /// caption; a dataset's keep their id and caption. Unreadable samples stop it, unless
    /// `options.skip_bad` (or the dataset is a folder): then they are skipped and reported.
    pub fn add_dataset(
        &mut self,
        dataset: &dyn Dataset,
        options: &AddOptions,
        folder: Option<&Path>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<AddReport> {
        options.validate()?;
        let source = self.index.meta.source.clone();
        let image_folder = dataset.image_folder();
        let mut skipped = dataset.skipped().to_vec();
        let available = dataset.len(options.split).unwrap_or(usize::MAX);
        let wanted = options.count.unwrap_or(if available == usize::MAX { UNBOUNDED_COUNT } else { available });
        let total = wanted.min(available);
        if total == 0 {
            return Err(EgaError::Data(match image_folder {
                Some(_) if options.count != Some(0) => {
                    format!("{source}: nothing to index ({} files, none an image)", skipped.len())
                }
                _ => empty_split_message(&source, dataset, options.split, options.count),
            }));
        }
        let thumbs = match folder {
            Some(folder) if options.thumb_size > 0 => {
                let dir = folder.join("thumbs");
                std::fs::create_dir_all(&dir).map_err(|err| EgaError::io(&dir, err))?;
                Some(folder)
            }
            _ => None,
        };
        let skip = options.skip_bad || image_folder.is_some();
        let start = self.len();
        let mut next = 0;
        while next < total {
            let end = (next + options.batch_size).min(total);
            let mut images = Vec::new();
            let mut entries = Vec::new();
            for position in next..end {
                match dataset.sample(options.split, position) {
                    Ok(sample) => {
                        let (caption, image) = match image_folder {
                            Some(folder) => (None, folder.file(position).map(|path| path.display().to_string())),
                            None => (Some(sample.caption), None),
                        };
                        entries.push(IndexEntry { id: sample.id, caption, image, thumbnail: None });
                        images.push(sample.image);
                    }
                    Err(err) if skip => skipped.push(err.to_string()),
                    Err(err) => return Err(with_skip_bad_hint(err)),
                }
            }
            if !images.is_empty() {
                let refs: Vec<&RgbImage> = images.iter().collect();
                let values = to_f32_vec(self.embed_images(&refs)?)?;
                if let Some(folder) = thumbs {
                    for (k, (entry, image)) in entries.iter_mut().zip(&images).enumerate() {
                        let name = format!("thumbs/{:06}.png", self.len() + k);
                        let thumb = image::imageops::thumbnail(image, options.thumb_size, options.thumb_size);
                        let path = folder.join(&name);
                        thumb.save(&path).map_err(|err| EgaError::io(&path, std::io::Error::other(err)))?;
                        entry.thumbnail = Some(name);
                    }
                }
                self.add_rows(&values, entries)?;
            }
            progress(end, total);
            next = end;
        }
        if self.len() == start {
            return Err(EgaError::Data(format!(
                "{source}: no readable image ({} skipped: {})",
                skipped.len(),
                skipped.join("; ")
            )));
        }
        Ok(AddReport { added: start..self.len(), skipped })
    }

    /// The first entry (in row order, among the first 500 with a caption) whose own caption
    /// ranks it first, by a clear margin (not a tie broken by row order), by the exact host
    /// search: the query the committed demo bundles are tested with. `None` without captions.
    pub fn known_query(&self) -> Result<Option<KnownQuery>> {
        let entries = &self.index.meta.entries;
        let captioned: Vec<(usize, &str)> = entries
            .iter()
            .enumerate()
            .filter_map(|(row, e)| e.caption.as_deref().map(|c| (row, c)))
            .take(500)
            .collect();
        let dim = self.dim();
        for chunk in captioned.chunks(64) {
            let captions: Vec<&str> = chunk.iter().map(|(_, c)| *c).collect();
            let embeddings = to_f32_vec(crate::embed::embed_captions(
                &self.model.model,
                &self.model.config,
                &self.model.tokenizer,
                &captions,
                64,
                &self.device,
            )?)?;
            for ((row, caption), query) in chunk.iter().zip(embeddings.chunks_exact(dim)) {
                let hits = search_host(&self.index.rows, dim, query, 2);
                if hits[0].row == *row && hits.get(1).is_none_or(|h| h.score < hits[0].score - 1e-4) {
                    return Ok(Some(KnownQuery {
                        query: caption.to_string(),
                        id: entries[*row].id.clone(),
                        row: *row,
                        score: hits[0].score,
                    }));
                }
            }
        }
        Ok(None)
    }
}

/// How many of `index`'s rows, each used as a query, get the same top-`k` rows (exact host
/// search) when the rows are stored as f16: all of them means f16 rows change no ranking.
pub fn f16_keeps_top_k(index: &Index, k: usize) -> usize {
    let rounded = round_to_f16(&index.rows);
    let dim = index.meta.dim;
    index
        .rows
        .chunks_exact(dim.max(1))
        .filter(|query| {
            let rows = |rows: &[f32]| search_host(rows, dim, query, k).iter().map(|h| h.row).collect::<Vec<_>>();
            rows(&index.rows) == rows(&rounded)
        })
        .count()
}

/// Why a dataset gave nothing to index: the split's size next to the others', and which split
/// has pairs (a JSONL file's lines go to train unless they say otherwise).
fn empty_split_message(source: &str, dataset: &dyn Dataset, split: Split, count: Option<usize>) -> String {
    if count == Some(0) {
        return format!("{source}: nothing to index (--count 0)");
    }
    let sizes: Vec<(Split, usize)> =
        [Split::Train, Split::Test, Split::Unseen].into_iter().filter_map(|s| dataset.len(s).map(|n| (s, n))).collect();
    let listed = sizes.iter().map(|(s, n)| format!("{s}: {n}")).collect::<Vec<_>>().join(", ");
    let other = sizes.iter().find(|(s, n)| *s != split && *n > 0).map(|(s, _)| *s);
    let jsonl = if source.starts_with("jsonl:") || source.ends_with(".jsonl") {
        " (lines without \"split\" are train pairs, except every 20th of a file with 40 or more lines)"
    } else {
        ""
    };
    match other {
        Some(other) => format!(
            "{source}: nothing to index: the {split} split is empty ({listed}){jsonl}; index another with --split {other}"
        ),
        None => format!("{source}: nothing to index: the {split} split is empty ({listed})"),
    }
}

#[cfg(test)]
mod tests;
