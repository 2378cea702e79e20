//! OpenMoji: 4 495 colour emoji (SVG) with Unicode annotations and tags, real image–text pairs with
//! natural hard negatives. The artwork is © OpenMoji, licensed CC BY-SA 4.0: credit OpenMoji
//! wherever its images are shown.
//!
//! `scripts/setup-openmoji.sh` fetches the npm package `openmoji@17.0.0` and lays it out as
//! `DIR/openmoji.csv` + `DIR/svg/<HEXCODE>.svg` (default `DIR`: `data/openmoji`). Nothing is
//! downloaded at run time.
//!
//! - **Captions**: the annotation (`"waving hand: dark skin tone"`) followed by up to
//!   [`CAPTION_TAGS`] tags that add words the annotation lacks (`"… (greeting, hello)"`).
//! - **Splits by emoji**: an emoji and all its skin-tone variants share a split. One base emoji in
//!   ten (by a hash of its code) is `test`; whole subgroups (one in twelve, by hash) are `unseen`,
//!   so that split holds kinds of emoji the model never trained on.
//! - **Hard negatives** (up to [`MAX_NEGATIVES`]): another skin tone of the same emoji first, then
//!   the nearest emoji of the same subgroup (`face-smiling`, `animal-bird`, …), always from the same
//!   split so no test image leaks into training.
//! - **Images** are rasterised with `resvg` on white at the model's input size, and cached.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{fnv1a, Dataset, RgbImage, Sample, Split};
use crate::{EgaError, Result};

/// Where `scripts/setup-openmoji.sh` puts the data by default (relative to the working directory).
pub const DEFAULT_DIR: &str = "data/openmoji";
/// Tags appended to a caption at most.
pub const CAPTION_TAGS: usize = 2;
/// Hard negatives per sample at most.
pub const MAX_NEGATIVES: usize = 3;
/// One base emoji in `TEST_EVERY` goes to the `test` split.
const TEST_EVERY: u64 = 10;
/// One subgroup in `UNSEEN_EVERY` goes to the `unseen` split.
const UNSEEN_EVERY: u64 = 12;

/// One emoji from `openmoji.csv`.
#[derive(Debug, Clone)]
pub struct Emoji {
    /// Unicode code points, e.g. `1F44B-1F3FF` (also the SVG's file stem).
    pub hexcode: String,
    /// The base emoji's hexcode for skin-tone variants, else `hexcode`.
    pub base: String,
    /// e.g. `people-body`.
    pub group: String,
    /// e.g. `hand-fingers-open`.
    pub subgroup: String,
    /// The caption built from annotation and tags.
    pub caption: String,
    /// Unicode's annotation (its short name), as listed.
    pub annotation: String,
    /// Unicode's keywords for it, comma-separated, as listed (may be empty).
    pub tags: String,
    /// Its split.
    pub split: Split,
}

/// The OpenMoji dataset read from a set-up folder.
pub struct OpenMojiDataset {
    dir: PathBuf,
    image_size: u32,
    emoji: Vec<Emoji>,
    /// Indices into `emoji`, per split.
    splits: HashMap<Split, Vec<usize>>,
    /// Indices into `emoji` per subgroup, in file order.
    subgroups: HashMap<String, Vec<usize>>,
    /// Indices into `emoji` per base emoji, in file order.
    variants: HashMap<String, Vec<usize>>,
    cache: Mutex<HashMap<usize, RgbImage>>,
}

/// Splits one CSV record (RFC 4180 quoting; `openmoji.csv` has no line breaks inside fields).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// The caption of an emoji: its annotation, then up to [`CAPTION_TAGS`] tags that bring new words.
pub fn caption(annotation: &str, tags: &str) -> String {
    let annotation = annotation.replace(['-', '_'], " ");
    let known: Vec<String> = annotation.split(|c: char| !c.is_alphanumeric()).map(str::to_lowercase).collect();
    let extra: Vec<&str> = tags
        .split(',')
        .map(str::trim)
        .filter(|tag| !tag.is_empty() && !tag.split_whitespace().all(|word| known.iter().any(|k| k == word)))
        .take(CAPTION_TAGS)
        .collect();
    if extra.is_empty() {
        annotation
    } else {
        format!("{annotation} ({})", extra.join(", "))
    }
}

impl OpenMojiDataset {
    /// Reads `dir/openmoji.csv` and checks `dir/svg/`; images are rasterised at `image_size`.
    pub fn open(dir: impl AsRef<Path>, image_size: u32) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let csv_path = dir.join("openmoji.csv");
        let text = crate::fs::read_text(&csv_path, crate::fs::MAX_JSON).map_err(|err| {
            EgaError::Data(format!(
                "OpenMoji is not set up in {}: {}: {err}. Run `bash scripts/setup-openmoji.sh {}` first \
                 (it fetches the npm package openmoji@17.0.0)",
                dir.display(),
                csv_path.display(),
                dir.display()
            ))
        })?;
        if !dir.join("svg").is_dir() {
            return Err(EgaError::Data(format!(
                "{}: the svg/ folder is missing; run `bash scripts/setup-openmoji.sh {}`",
                dir.display(),
                dir.display()
            )));
        }
        if image_size == 0 {
            return Err(EgaError::config("image_size", 0, "must be at least 1"));
        }
        let mut lines = text.lines();
        let header = csv_fields(lines.next().unwrap_or(""));
        let column = |name: &str| {
            header
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| EgaError::format(csv_path.display(), format!("no `{name}` column in the header")))
        };
        let (hex_col, group_col, subgroup_col, annotation_col, tags_col, base_col) = (
            column("hexcode")?,
            column("group")?,
            column("subgroups")?,
            column("annotation")?,
            column("tags")?,
            column("skintone_base_hexcode")?,
        );
        let mut emoji = Vec::new();
        for (number, line) in lines.enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let fields = csv_fields(line);
            if fields.len() < header.len() {
                return Err(EgaError::format(
                    format_args!("{}:{}", csv_path.display(), number + 2),
                    format!("{} fields, the header has {}", fields.len(), header.len()),
                ));
            }
            let hexcode = fields[hex_col].clone();
            let base = if fields[base_col].is_empty() { hexcode.clone() } else { fields[base_col].clone() };
            let subgroup = fields[subgroup_col].clone();
            let split = if fnv1a(&subgroup) % UNSEEN_EVERY == 0 {
                Split::Unseen
            } else if fnv1a(&base) % TEST_EVERY == 0 {
                Split::Test
            } else {
                Split::Train
            };
            emoji.push(Emoji {
                caption: caption(&fields[annotation_col], &fields[tags_col]),
                annotation: fields[annotation_col].clone(),
                tags: fields[tags_col].clone(),
                hexcode,
                base,
                group: fields[group_col].clone(),
                subgroup,
                split,
            });
        }
        if emoji.is_empty() {
            return Err(EgaError::format(csv_path.display(), "no emoji listed"));
        }
        let mut splits: HashMap<Split, Vec<usize>> = HashMap::new();
        let mut subgroups: HashMap<String, Vec<usize>> = HashMap::new();
        let mut variants: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, e) in emoji.iter().enumerate() {
            splits.entry(e.split).or_default().push(index);
            subgroups.entry(e.subgroup.clone()).or_default().push(index);
            variants.entry(e.base.clone()).or_default().push(index);
        }
        Ok(Self { dir, image_size, emoji, splits, subgroups, variants, cache: Mutex::new(HashMap::new()) })
    }

    /// Every emoji in file order.
    pub fn emoji(&self) -> &[Emoji] {
        &self.emoji
    }

    fn indices(&self, split: Split) -> &[usize] {
        self.splits.get(&split).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The emoji (indices into [`Self::emoji`]) used as hard negatives of emoji `index`: other skin
    /// tones of the same emoji first, then the following emoji of the same subgroup (cyclically),
    /// all from the same split and with a different caption.
    pub fn negatives(&self, index: usize) -> Vec<usize> {
        let me = &self.emoji[index];
        let usable = |&&other: &&usize| {
            other != index && self.emoji[other].split == me.split && self.emoji[other].caption != me.caption
        };
        let mut out: Vec<usize> = Vec::new();
        // Skin tones: the variant right after this one, so different variants get different ones.
        let family = &self.variants[&me.base];
        if family.len() > 1 {
            let at = family.iter().position(|&i| i == index).unwrap_or(0);
            if let Some(&other) = family.iter().cycle().skip(at + 1).take(family.len()).find(|i| usable(i)) {
                out.push(other);
            }
        }
        // Same subgroup, other base emoji (one representative each).
        let group = &self.subgroups[&me.subgroup];
        let at = group.iter().position(|&i| i == index).unwrap_or(0);
        for other in group.iter().cycle().skip(at + 1).take(group.len()) {
            if out.len() >= MAX_NEGATIVES {
                break;
            }
            let e = &self.emoji[*other];
            if usable(&other) && e.base != me.base && !out.iter().any(|&o| self.emoji[o].base == e.base) {
                out.push(*other);
            }
        }
        out
    }

    /// The emoji at `index` rasterised on white at the dataset's image size (cached).
    pub fn image(&self, index: usize) -> Result<RgbImage> {
        if let Some(image) = self.cache.lock().map_err(|_| EgaError::Data("image cache poisoned".into()))?.get(&index) {
            return Ok(image.clone());
        }
        let path = self.dir.join("svg").join(format!("{}.svg", self.emoji[index].hexcode));
        let bytes = crate::fs::read_regular(&path, crate::fs::MAX_IMAGE)?;
        let image = rasterise_svg(&bytes, self.image_size, &path.display().to_string())?;
        self.cache.lock().map_err(|_| EgaError::Data("image cache poisoned".into()))?.insert(index, image.clone());
        Ok(image)
    }
}

/// Rasterises an SVG document to `size × size` RGB on a white background (aspect kept, centred).
pub fn rasterise_svg(bytes: &[u8], size: u32, name: &str) -> Result<RgbImage> {
    use resvg::{tiny_skia, usvg};
    let tree = usvg::Tree::from_data(bytes, &usvg::Options::default())
        .map_err(|err| EgaError::format(&name, format!("not a readable SVG: {err}")))?;
    let mut pixmap = tiny_skia::Pixmap::new(size, size)
        .ok_or_else(|| EgaError::Data(format!("{name}: cannot make a {size}×{size} canvas")))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    let svg = tree.size();
    let scale = (size as f32 / svg.width()).min(size as f32 / svg.height());
    let dx = (size as f32 - svg.width() * scale) / 2.0;
    let dy = (size as f32 - svg.height() * scale) / 2.0;
    resvg::render(&tree, tiny_skia::Transform::from_row(scale, 0.0, 0.0, scale, dx, dy), &mut pixmap.as_mut());
    // Opaque background, so premultiplied RGBA is plain RGBA.
    let rgb: Vec<u8> = pixmap.data().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    RgbImage::from_raw(size, size, rgb).ok_or_else(|| EgaError::Data(format!("{name}: bad raster size")))
}

impl Dataset for OpenMojiDataset {
    fn name(&self) -> String {
        format!("openmoji:{}", self.dir.display())
    }

    fn len(&self, split: Split) -> Option<usize> {
        Some(self.indices(split).len())
    }

    fn sample(&self, split: Split, index: usize) -> Result<Sample> {
        super::collection_sample(
            (&self.name(), "emoji"),
            split,
            index,
            self.indices(split),
            |e| self.negatives(e),
            |e| format!("openmoji-{}", self.emoji[e].hexcode),
            |e| self.emoji[e].caption.clone(),
            |e| self.image(e),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_handle_quotes_and_commas() {
        assert_eq!(csv_fields(r#"a,"b, c",,"say ""hi""""#), vec!["a", "b, c", "", r#"say "hi""#]);
    }

    #[test]
    fn captions_add_only_new_words() {
        assert_eq!(
            caption("grinning face", "cheerful, cheery, face, grin, grinning"),
            "grinning face (cheerful, cheery)"
        );
        assert_eq!(caption("spouting-orca", "orca, spouting"), "spouting orca");
        assert_eq!(caption("waving hand: dark skin tone", ""), "waving hand: dark skin tone");
    }

    #[test]
    fn svg_rasterises_with_its_colours_on_white() {
        let svg = br##"<svg viewBox="0 0 72 72" xmlns="http://www.w3.org/2000/svg">
            <rect x="0" y="0" width="36" height="72" fill="#FF0000"/></svg>"##;
        let image = rasterise_svg(svg, 16, "test.svg").unwrap();
        assert_eq!(image.dimensions(), (16, 16));
        assert_eq!(image.get_pixel(2, 8).0, [255, 0, 0]);
        assert_eq!(image.get_pixel(13, 8).0, [255, 255, 255]);
        assert!(rasterise_svg(b"<not svg", 16, "bad.svg").unwrap_err().to_string().contains("bad.svg"));
    }
}
