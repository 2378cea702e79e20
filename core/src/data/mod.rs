//! Data: image–text pairs behind one [`Dataset`] interface.
//!
//! - [`shapes`]: the embedded default, procedurally drawn scenes with template captions,
//!   controlled hard negatives and a held-out split of unseen attribute combinations.
//! - [`openmoji`]: the OpenMoji emoji (set up by `scripts/setup-openmoji.sh`), captions from
//!   annotations and tags, skin-tone and same-subgroup hard negatives.
//! - [`openclipart`]: Debian's `openclipart-png` (set up by `scripts/setup-openclipart.sh`),
//!   captions from the PNGs' titles and file names, same-category hard negatives.
//! - [`fluentui`]: Microsoft's Fluent UI emoji (set up by `scripts/setup-fluentui.sh`), captions
//!   from file names, skin-tone and shared-word hard negatives.
//! - [`jsonl`]: the user's own pairs, one JSON object a line.
//! - [`mix`]: several of the above in one dataset, training pairs drawn by weight.
//! - [`folder`]: a folder of image files (no captions, no splits): a gallery to index.
//! - [`text_pairs`]: text–text pairs (WordNet, OpenMoji keywords, your own TSV) for a text-only
//!   contrastive stage.
//!
//! Images are kept as 8-bit RGB at their own size; [`image_tensor_data`] resizes them to the
//! model's input and lays them out channel-major in `[0, 1]`.

pub mod fluentui;
pub mod folder;
pub mod jsonl;
pub mod mix;
pub mod openclipart;
pub mod openmoji;
pub mod shapes;
pub mod text_pairs;

use serde::{Deserialize, Serialize};

use crate::{EgaError, Result};

/// An 8-bit RGB image, row-major, 3 bytes a pixel.
pub type RgbImage = image::RgbImage;

/// Which part of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training pairs.
    Train,
    /// Held-out pairs from the training distribution (never trained on).
    Test,
    /// Compositional out-of-distribution pairs: attribute combinations absent from `Train`
    /// (datasets without such a notion have none).
    Unseen,
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::Unseen => "unseen",
        })
    }
}

/// One image–text pair with optional explicit hard negatives.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Stable identifier (`openmoji-<HEXCODE>`, a JSONL line's `"id"` or `line-N`, `shapes-<split>-<index>`).
    pub id: String,
    /// The image.
    pub image: RgbImage,
    /// Its caption.
    pub caption: String,
    /// Captions that differ from `caption` in one controlled way (wrong for this image).
    pub negative_captions: Vec<String>,
    /// Images that differ from `image` in one controlled way (wrong for this caption).
    pub negative_images: Vec<RgbImage>,
}

/// The sample of a collection whose splits are lists of item numbers (`indices`): item
/// `indices[index]` with its id, caption and image, and the captions and images of its hard
/// negatives (items too). `name` and `noun` ("emoji", "pictures") name an index past the end.
#[allow(clippy::too_many_arguments)]
pub(crate) fn collection_sample(
    (name, noun): (&str, &str),
    split: Split,
    index: usize,
    indices: &[usize],
    negatives: impl Fn(usize) -> Vec<usize>,
    id: impl Fn(usize) -> String,
    caption: impl Fn(usize) -> String,
    image: impl Fn(usize) -> Result<RgbImage>,
) -> Result<Sample> {
    let &item = indices.get(index).ok_or_else(|| {
        EgaError::Data(format!("{name}: the {split} split has {} {noun}, asked for number {index}", indices.len()))
    })?;
    let negatives = negatives(item);
    Ok(Sample {
        id: id(item),
        image: image(item)?,
        caption: caption(item),
        negative_captions: negatives.iter().map(|&n| caption(n)).collect(),
        negative_images: negatives.iter().map(|&n| image(n)).collect::<Result<_>>()?,
    })
}

/// A source of image–text pairs, deterministic: the same `(split, index)` always gives the same
/// sample.
pub trait Dataset: Send + Sync {
    /// Short name (`shapes`, `jsonl:<file>`).
    fn name(&self) -> String;
    /// Number of samples in `split`; `None` when the split is unbounded (procedural data).
    fn len(&self, split: Split) -> Option<usize>;
    /// The sample at `index` of `split`.
    fn sample(&self, split: Split, index: usize) -> Result<Sample>;
    /// Bad entries left out when the dataset was opened (`skip_bad`), each with why.
    fn skipped(&self) -> &[String] {
        &[]
    }
    /// The folder of image files this dataset is, when it is one: its samples have no captions
    /// and it has no splits, so an index records neither, names each row by its file, and skips
    /// unreadable files. `None` for the datasets of pairs.
    fn image_folder(&self) -> Option<&folder::FolderDataset> {
        None
    }
}

/// What [`open`] accepts, for messages.
pub const SPECS: &str = "shapes, openclipart[:DIR], fluentui[:DIR], openmoji[:DIR], jsonl:FILE, a path ending \
                         in .jsonl, or mix:SOURCE=WEIGHT,… of those";

/// Opens a dataset from its command-line name: `shapes` (the procedural default, rendered at
/// `image_size`), `openmoji` / `openmoji:DIR`, `openclipart` / `openclipart:DIR`, `fluentui` /
/// `fluentui:DIR` (images at `image_size`; default folders under `data/`), `jsonl:FILE` (with
/// `skip_bad`, bad lines are skipped and counted) or `mix:SOURCE=WEIGHT,…` of those
/// ([`mix::MixDataset`]).
pub fn open(spec: &str, image_size: usize, skip_bad: bool) -> Result<Box<dyn Dataset>> {
    if spec.starts_with("mix:") {
        return Ok(Box::new(mix::MixDataset::open(spec, image_size, skip_bad)?));
    }
    let size = image_size as u32;
    match spec.split_once(':').unwrap_or((spec, "")) {
        ("shapes", "") if spec == "shapes" => {
            let config = shapes::ShapesConfig { image_size: size, ..shapes::ShapesConfig::default() };
            Ok(Box::new(shapes::ShapesDataset::new(config)))
        }
        ("openmoji", dir) => {
            Ok(Box::new(openmoji::OpenMojiDataset::open(or_default(dir, openmoji::DEFAULT_DIR), size)?))
        }
        ("openclipart", dir) => {
            Ok(Box::new(openclipart::OpenClipartDataset::open(or_default(dir, openclipart::DEFAULT_DIR), size)?))
        }
        ("fluentui", dir) => {
            Ok(Box::new(fluentui::FluentUiDataset::open(or_default(dir, fluentui::DEFAULT_DIR), size)?))
        }
        ("jsonl", path) if !path.is_empty() => Ok(Box::new(jsonl::JsonlDataset::open(path, skip_bad)?)),
        _ if spec.ends_with(".jsonl") => Ok(Box::new(jsonl::JsonlDataset::open(spec, skip_bad)?)),
        _ => Err(EgaError::config("data", spec, format!("expected {SPECS}"))),
    }
}

/// `dir` of a `NAME:DIR` spec, or the default folder for a bare `NAME` (or `NAME:`).
fn or_default<'a>(dir: &'a str, default: &'a str) -> &'a str {
    if dir.is_empty() {
        default
    } else {
        dir
    }
}

/// [`crate::store::fnv1a`] of a text: the stable hash that assigns items to splits.
pub(crate) fn fnv1a(text: &str) -> u64 {
    crate::store::fnv1a(&[text.as_bytes()])
}

/// Texts to train the tokenizer on: the captions and negative captions of up to `max_samples`
/// training pairs.
pub fn tokenizer_corpus(dataset: &dyn Dataset, max_samples: usize) -> Result<Vec<String>> {
    let count = dataset.len(Split::Train).unwrap_or(max_samples).min(max_samples);
    let mut texts = Vec::with_capacity(count * 2);
    for index in 0..count {
        let sample = dataset.sample(Split::Train, index)?;
        texts.push(sample.caption);
        texts.extend(sample.negative_captions);
    }
    Ok(texts)
}

/// Resizes `image` to `size × size` (bilinear; non-square images are stretched) and returns its
/// pixels channel-major in `[0, 1]`: `[3, size, size]` row-major, ready for a `[B, 3, H, W]` tensor.
pub fn image_tensor_data(image: &RgbImage, size: usize) -> Vec<f32> {
    let resized;
    let source = if image.width() as usize == size && image.height() as usize == size {
        image
    } else {
        resized = image::imageops::resize(image, size as u32, size as u32, image::imageops::FilterType::Triangle);
        &resized
    };
    let plane = size * size;
    let mut out = vec![0.0f32; 3 * plane];
    for (k, pixel) in source.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + k] = pixel[c] as f32 / 255.0;
        }
    }
    out
}

/// Largest image side accepted from files (checked from the header, before decoding).
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// Largest pixel count accepted from files (checked from the header, before decoding).
pub const MAX_IMAGE_PIXELS: u64 = 64_000_000;

/// Decodes an image file's bytes to RGB, refusing empty, zero-sized and huge images *before*
/// decoding (a 50 000 × 50 000 PNG header must not allocate 7.5 GB). `name` is for messages.
/// Transparency is dropped as it is (see [`decode_image_on_white`] for clip art).
pub fn decode_image(bytes: &[u8], name: &str) -> Result<RgbImage> {
    Ok(decode_checked(bytes, name)?.to_rgb8())
}

/// [`decode_image`], with transparent pixels composited on white (clip art is drawn on a
/// transparent background whose hidden colour is often black).
pub fn decode_image_on_white(bytes: &[u8], name: &str) -> Result<RgbImage> {
    let rgba = decode_checked(bytes, name)?.to_rgba8();
    let (width, height) = rgba.dimensions();
    let rgb = rgba
        .pixels()
        .flat_map(|p| {
            let alpha = p[3] as u32;
            // Straight (not premultiplied) alpha over white, rounded.
            [0, 1, 2].map(|c| ((p[c] as u32 * alpha + 255 * (255 - alpha) + 127) / 255) as u8)
        })
        .collect();
    RgbImage::from_raw(width, height, rgb).ok_or_else(|| EgaError::Data(format!("{name}: bad image size")))
}

/// `image` scaled to fit `size × size` (aspect kept, bilinear) and centred on white, as the SVG
/// sources are rasterised.
pub fn fit_on_white(image: &RgbImage, size: u32) -> RgbImage {
    let (width, height) = image.dimensions();
    if width == size && height == size {
        return image.clone();
    }
    let scale = (size as f64 / width as f64).min(size as f64 / height as f64);
    let fitted_width = ((width as f64 * scale).round() as u32).clamp(1, size);
    let fitted_height = ((height as f64 * scale).round() as u32).clamp(1, size);
    let resized = image::imageops::resize(image, fitted_width, fitted_height, image::imageops::FilterType::Triangle);
    let mut canvas = RgbImage::from_pixel(size, size, image::Rgb([255, 255, 255]));
    image::imageops::replace(
        &mut canvas,
        &resized,
        ((size - fitted_width) / 2) as i64,
        ((size - fitted_height) / 2) as i64,
    );
    canvas
}

/// The header checks and limits of [`decode_image`], then the decode.
fn decode_checked(bytes: &[u8], name: &str) -> Result<image::DynamicImage> {
    if bytes.is_empty() {
        return Err(EgaError::format(&name, "the file is empty"));
    }
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|err| EgaError::format(&name, format!("cannot read: {err}")))?;
    if reader.format().is_none() {
        return Err(EgaError::format(&name, "not an image in a format this build reads (PNG, JPEG, WebP, BMP, GIF)"));
    }
    let (width, height) =
        reader.into_dimensions().map_err(|err| EgaError::format(&name, format!("unreadable image header: {err}")))?;
    if width == 0 || height == 0 {
        return Err(EgaError::format(&name, format!("the image is {width}×{height} pixels")));
    }
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE || width as u64 * height as u64 > MAX_IMAGE_PIXELS {
        return Err(EgaError::Data(format!(
            "{name}: the image is {width}×{height} pixels; the limit is {MAX_IMAGE_SIDE} pixels a side and {} megapixels",
            MAX_IMAGE_PIXELS / 1_000_000
        )));
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|err| EgaError::format(&name, format!("cannot read: {err}")))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 4 + (64 << 20));
    reader.limits(limits);
    reader.decode().map_err(|err| EgaError::format(&name, format!("cannot decode: {err}")))
}
