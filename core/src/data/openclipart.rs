//! Open Clip Art: Debian's `openclipart-png` (6 900 PNG drawings in 159 category folders), captioned
//! from each picture's title and file name. The artists dedicated the images to the public domain.
//!
//! `scripts/setup-openclipart.sh` fetches the .deb with `apt-get download` and unpacks its
//! `/usr/share/openclipart/png` as `DIR/png/<category>/…/<name>.png` (default `DIR`:
//! `data/openclipart`; a system-wide install works too: `openclipart:/usr/share/openclipart`).
//! Symlinks are skipped: they are Debian's de-duplicated second copies of a picture in another
//! category, and each picture is used once.
//!
//! - **Captions.** Debian's file names are `<title>_<author>` cut to about 24 characters, then a
//!   number (`rich_young_man_going_aw_01.png`); Inkscape also wrote the full `Title` and `Author`
//!   into each PNG. So the caption is the PNG's title when it is the picture's own name (the file
//!   name starts with it or it starts with the file name, or it contains the file name's first
//!   word), and otherwise the file name's words without the author's name and the trailing
//!   fragment of it that the cut left (`cellular_phone_shandy_br_` → "cellular phone"). A title
//!   shared by [`COLLECTION_TITLE_FILES`] or more files is a collection's name ("AIGA_Symbol_Signs",
//!   "gramastar"), never a caption. Playing cards (`simple_h_q.png`) are decoded: "queen of hearts
//!   playing card". Words are lower-cased, numbers dropped (`star_93pt37step` → "star"), "b and w"
//!   and "bw" spelled "black and white". See [`caption`] for what is dropped and why.
//! - **Families** are pictures with the same caption (several artists' "apple", the four decks'
//!   "queen of hearts playing card"); a family keeps at most [`MAX_FAMILY`] pictures (the first in
//!   path order; 1 377 generated star polygons are all "star").
//! - **Splits by family**: whole category folders (one in twelve, by a hash of the folder path,
//!   e.g. `animals/birds`) are `unseen`, and so is every family with a picture there, so no picture
//!   of an unseen category is trained on; one other family in ten (by a hash of its caption) is
//!   `test`; a family never spans two splits.
//! - **Hard negatives** (up to [`MAX_NEGATIVES`]): pictures of other families from the same
//!   category folder, then from the same top-level folder (`animals`), then (a small category
//!   alone in its split) the following pictures of the split; one per family, always from the
//!   same split.
//! - **Images** are decoded, composited on white, cut to the drawing (many were exported with their
//!   whole page), scaled to fit the model's input (aspect kept, centred on white), and cached.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{fnv1a, Dataset, RgbImage, Sample, Split};
use crate::{EgaError, Result};

/// Where `scripts/setup-openclipart.sh` puts the data by default (relative to the working directory).
pub const DEFAULT_DIR: &str = "data/openclipart";
/// Hard negatives per sample at most.
pub const MAX_NEGATIVES: usize = 3;
/// Pictures kept per family at most, so that a few huge families (generated stars, arrows) do not
/// fill the data with one caption.
pub const MAX_FAMILY: usize = 8;
/// A PNG title found on this many files or more names a collection, not a picture.
pub const COLLECTION_TITLE_FILES: usize = 5;
/// One family in `TEST_EVERY` goes to the `test` split.
const TEST_EVERY: u64 = 10;
/// One category folder in `UNSEEN_EVERY` goes to the `unseen` split.
const UNSEEN_EVERY: u64 = 12;
/// Folder depth below `png/` at most (the package's deepest is 6).
const MAX_DEPTH: usize = 16;

/// Artists whose titles are Italian (440 pictures: "Cigno di notte nella palude").
pub const ITALIAN_AUTHORS: [&str; 1] = ["Architetto Francesco Rollandin"];
/// Artists' short names that file names carry instead of their `Author` text.
pub const AUTHOR_HANDLES: [(&str, &str); 1] = [("Gerald G.", "ganson")];
/// Function words of French, Italian, Spanish and German that English titles do not contain:
/// a caption with one of them is not English ("sortie issue de secours", "carte de france").
pub const FOREIGN_WORDS: [&str; 26] = [
    "alla", "che", "con", "das", "de", "degli", "della", "delle", "dello", "der", "des", "di", "die", "du", "gli",
    "il", "les", "mit", "nel", "nella", "per", "sul", "sulla", "und", "une", "von",
];
/// Words of one or two letters that a caption keeps (others are initials or cut-off fragments).
pub const SHORT_WORDS: [&str; 22] = [
    "a", "an", "at", "by", "cd", "dj", "eu", "go", "id", "in", "my", "no", "of", "ok", "on", "or", "pc", "to", "tv",
    "uk", "up", "us",
];

/// One picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clipart {
    /// Path below `png/`, `/`-separated: `food/fruit/orange.png`.
    pub path: String,
    /// Its folder below `png/`: `food/fruit`.
    pub category: String,
    /// The cleaned caption, which is also the family.
    pub caption: String,
    /// Its split (the family's).
    pub split: Split,
}

/// The `Title` and `Author` text chunks of a PNG.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PngText {
    /// `Title`, trimmed.
    pub title: Option<String>,
    /// `Author`, trimmed.
    pub author: Option<String>,
}

/// Reads the `tEXt` chunks before the image data: only chunk headers and text are read, the rest
/// is skipped with seeks, so this costs about a kilobyte per file. Text is UTF-8 when it decodes
/// as such (Inkscape writes UTF-8), else Latin-1 (what the PNG standard says).
pub fn png_text(reader: &mut (impl Read + Seek)) -> std::io::Result<PngText> {
    let mut signature = [0u8; 8];
    reader.read_exact(&mut signature)?;
    if signature != *b"\x89PNG\r\n\x1a\n" {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a PNG"));
    }
    let mut text = PngText::default();
    // A few chunks come before the pixels; the cap guards against a file of empty chunks.
    for _ in 0..256 {
        let mut header = [0u8; 8];
        if reader.read_exact(&mut header).is_err() {
            break;
        }
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as u64;
        let kind = &header[4..8];
        if kind == b"IDAT" || kind == b"IEND" {
            break;
        }
        if kind == b"tEXt" && length <= 64 << 10 {
            let mut data = vec![0u8; length as usize];
            reader.read_exact(&mut data)?;
            reader.seek(SeekFrom::Current(4))?; // CRC
            let Some(nul) = data.iter().position(|&b| b == 0) else { continue };
            let value = match std::str::from_utf8(&data[nul + 1..]) {
                Ok(utf8) => utf8.to_string(),
                Err(_) => data[nul + 1..].iter().map(|&b| b as char).collect(),
            };
            let value = value.trim().to_string();
            match &data[..nul] {
                b"Title" if !value.is_empty() => text.title = Some(value),
                b"Author" if !value.is_empty() => text.author = Some(value),
                _ => {}
            }
        } else {
            reader.seek(SeekFrom::Current(length as i64 + 4))?;
        }
    }
    Ok(text)
}

/// Lower-cased words of `text`, split at anything not a letter or digit; trailing digits are cut
/// (`aircraft2` → `aircraft`) and words still holding digits dropped (`93pt37step`); `bw` and
/// `b and w` become `black and white`.
fn words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        let word = word.to_lowercase();
        let word = word.trim_end_matches(|c: char| c.is_ascii_digit());
        if word.is_empty() || word.chars().any(|c| c.is_ascii_digit()) {
            continue;
        }
        if word == "bw" {
            out.extend(["black", "and", "white"].map(String::from));
        } else {
            out.push(word.to_string());
        }
    }
    for at in (0..out.len().saturating_sub(2)).rev() {
        if out[at] == "b" && out[at + 1] == "and" && out[at + 2] == "w" {
            out.splice(at..at + 3, ["black", "and", "white"].map(String::from));
        }
    }
    out
}

/// Letters and digits of `text`, lower-cased: what is left of a title in a file name.
fn letters(text: &str) -> String {
    text.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// `simple_h_q` → "queen of hearts playing card", `white_jk_r` → "red joker playing card".
fn playing_card(stem: &str) -> Option<String> {
    let mut parts = stem.rsplit('_');
    let (rank, suit) = (parts.next()?, parts.next()?);
    if suit == "jk" {
        let colour = match rank {
            "b" => "black",
            "r" => "red",
            _ => return None,
        };
        return Some(format!("{colour} joker playing card"));
    }
    let suit = match suit {
        "c" => "clubs",
        "d" => "diamonds",
        "h" => "hearts",
        "s" => "spades",
        _ => return None,
    };
    let rank = match rank {
        "a" => "ace",
        "j" => "jack",
        "q" => "queen",
        "k" => "king",
        "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "10" => rank,
        _ => return None,
    };
    Some(format!("{rank} of {suit} playing card"))
}

/// `name` without Debian's numbering and the underscores around it: `bee3_mimooh_01` →
/// `bee3_mimooh`, `aiga_exit_` → `aiga_exit`, `stylized_yoga_person_ger_04` → `…_ger`.
fn without_number(name: &str) -> &str {
    let mut rest = name;
    loop {
        let trimmed = rest.trim_end_matches('_');
        // `_NN` or `_NNr` at the end.
        let no_letter = trimmed.strip_suffix(|c: char| c.is_ascii_lowercase()).unwrap_or(trimmed);
        let no_digits = no_letter.trim_end_matches(|c: char| c.is_ascii_digit());
        let shorter = if no_digits.len() < no_letter.len() { no_digits.strip_suffix('_') } else { None };
        match shorter {
            Some(shorter) if !shorter.trim_end_matches('_').is_empty() => rest = shorter,
            _ => return if trimmed.is_empty() { rest } else { trimmed },
        }
    }
}

/// Why a picture has no caption (the counts are [`OpenClipartDataset::dropped`]).
pub type DropReason = &'static str;

/// The caption of the picture at `path` (below `png/`, `/`-separated) with the PNG's `title` and
/// `author`; `collection_title` says the title is on [`COLLECTION_TITLE_FILES`] files or more.
/// `Err` says why the picture is left out:
///
/// - `"icon theme"`: `computer/icons/*-theme/` (1 316 desktop icons whose file names are program
///   and action ids: `kspread`, `irkickflash`, `math_lsup`);
/// - `"Italian title"`: the artists of [`ITALIAN_AUTHORS`];
/// - `"non-English title"`: a caption with one of [`FOREIGN_WORDS`];
/// - `"no descriptive words"`: nothing of three letters or more left (`bb_cd_`, `70a029`).
pub fn caption(
    path: &str,
    title: Option<&str>,
    author: Option<&str>,
    collection_title: bool,
) -> std::result::Result<String, DropReason> {
    if path.split('/').any(|folder| folder.ends_with("-theme")) {
        return Err("icon theme");
    }
    if author.is_some_and(|author| ITALIAN_AUTHORS.contains(&author)) {
        return Err("Italian title");
    }
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.strip_suffix(".png").or_else(|| file.strip_suffix(".PNG")).unwrap_or(file);
    if path.contains("/cards/") {
        if let Some(card) = playing_card(stem) {
            return Ok(card);
        }
    }
    let name = without_number(stem);
    let name_words = words(name);
    // "Clipart by Nicu Buculei - bee": the part after the dash is the title.
    let own_title = title.filter(|_| !collection_title).map(|title| {
        if title.to_lowercase().starts_with("clipart by ") {
            title.split_once(" - ").map_or(title, |(_, rest)| rest)
        } else {
            title
        }
    });
    let named_after = |title: &str| {
        let (from_name, from_title) = (letters(name), letters(title));
        from_title.len() >= 3
            && ((from_name.len() >= 3 && (from_name.starts_with(&from_title) || from_title.starts_with(&from_name)))
                || name_words.first().is_some_and(|first| words(title).contains(first)))
    };
    let mut chosen = match own_title.filter(|title| named_after(title)) {
        Some(title) => words(title),
        None => {
            let mut author_words = author.map(words).unwrap_or_default();
            for (artist, handle) in AUTHOR_HANDLES {
                if author == Some(artist) {
                    author_words.push(handle.to_string());
                }
            }
            let mut kept: Vec<String> = name_words.into_iter().filter(|w| !author_words.contains(w)).collect();
            // The cut left the start of the author's name: `shandy_br` of "Shandy Brown".
            while kept.len() > 1 && kept.last().is_some_and(|last| author_words.iter().any(|a| a.starts_with(last))) {
                kept.pop();
            }
            kept
        }
    };
    if chosen.iter().any(|w| FOREIGN_WORDS.contains(&w.as_str())) {
        return Err("non-English title");
    }
    chosen.retain(|w| w.chars().count() > 2 || SHORT_WORDS.contains(&w.as_str()));
    if !chosen.iter().any(|w| w.chars().count() > 2) {
        return Err("no descriptive words");
    }
    Ok(chosen.join(" "))
}

/// The Open Clip Art pictures read from a set-up folder.
pub struct OpenClipartDataset {
    dir: PathBuf,
    image_size: u32,
    clipart: Vec<Clipart>,
    /// Indices into `clipart`, per split.
    splits: HashMap<Split, Vec<usize>>,
    /// Indices into `clipart` per category folder, in path order.
    categories: HashMap<String, Vec<usize>>,
    /// Indices into `clipart` per top-level folder, in path order.
    tops: HashMap<String, Vec<usize>>,
    dropped: BTreeMap<DropReason, usize>,
    cache: Mutex<HashMap<usize, RgbImage>>,
}

/// Top-level folder of a category: `animals` of `animals/birds`.
fn top(category: &str) -> &str {
    category.split('/').next().unwrap_or(category)
}

/// Collects the PNG files below `dir` (regular files only: symlinks are skipped), as
/// `/`-separated paths relative to `root`, in sorted order.
fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<String>) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(EgaError::Data(format!("{}: folders nested more than {MAX_DEPTH} deep", dir.display())));
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|err| EgaError::io(dir, err))?
        .collect::<std::io::Result<_>>()
        .map_err(|err| EgaError::io(dir, err))?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let kind = entry.file_type().map_err(|err| EgaError::io(entry.path(), err))?;
        let path = entry.path();
        if kind.is_dir() {
            walk(root, &path, depth + 1, out)?;
        } else if kind.is_file() && path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("png")) {
            let Ok(relative) = path.strip_prefix(root) else { continue };
            let parts: Option<Vec<&str>> = relative.iter().map(|part| part.to_str()).collect();
            if let Some(parts) = parts {
                out.push(parts.join("/"));
            }
        }
    }
    Ok(())
}

impl OpenClipartDataset {
    /// Reads the titles of `dir/png/**.png`; images are scaled to `image_size`.
    pub fn open(dir: impl AsRef<Path>, image_size: u32) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let png_dir = dir.join("png");
        if !png_dir.is_dir() {
            return Err(EgaError::Data(format!(
                "Open Clip Art is not set up in {}: {} is not a folder. Run `bash scripts/setup-openclipart.sh {}` \
                 first (it fetches Debian's openclipart-png 1:0.18+dfsg-19)",
                dir.display(),
                png_dir.display(),
                dir.display()
            )));
        }
        if image_size == 0 {
            return Err(EgaError::config("image_size", 0, "must be at least 1"));
        }
        let mut paths = Vec::new();
        walk(&png_dir, &png_dir, 0, &mut paths)?;
        let mut texts = Vec::with_capacity(paths.len());
        for path in &paths {
            let full = png_dir.join(path);
            let mut file = std::fs::File::open(&full).map_err(|err| EgaError::io(&full, err))?;
            // An unreadable header only loses the title; the file name still captions it.
            texts.push(png_text(&mut file).unwrap_or_default());
        }
        let mut title_files: HashMap<&str, usize> = HashMap::new();
        for title in texts.iter().filter_map(|t| t.title.as_deref()) {
            *title_files.entry(title).or_default() += 1;
        }
        let mut dropped: BTreeMap<DropReason, usize> = BTreeMap::new();
        let mut family_size: HashMap<String, usize> = HashMap::new();
        let mut clipart = Vec::new();
        for (path, text) in paths.iter().zip(&texts) {
            let title = text.title.as_deref();
            let collection = title.is_some_and(|t| title_files[t] >= COLLECTION_TITLE_FILES);
            match caption(path, title, text.author.as_deref(), collection) {
                Ok(caption) => {
                    let size = family_size.entry(caption.clone()).or_default();
                    *size += 1;
                    if *size > MAX_FAMILY {
                        *dropped.entry("family full").or_default() += 1;
                        continue;
                    }
                    let category = path.rsplit_once('/').map_or("", |(folder, _)| folder).to_string();
                    clipart.push(Clipart { path: path.clone(), category, caption, split: Split::Train });
                }
                Err(reason) => *dropped.entry(reason).or_default() += 1,
            }
        }
        if clipart.is_empty() {
            return Err(EgaError::Data(format!("{}: no usable PNGs", png_dir.display())));
        }
        assign_splits(&mut clipart);
        Ok(Self::from_clipart(dir, image_size, clipart, dropped))
    }

    fn from_clipart(
        dir: PathBuf,
        image_size: u32,
        clipart: Vec<Clipart>,
        dropped: BTreeMap<DropReason, usize>,
    ) -> Self {
        let mut splits: HashMap<Split, Vec<usize>> = HashMap::new();
        let mut categories: HashMap<String, Vec<usize>> = HashMap::new();
        let mut tops: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, c) in clipart.iter().enumerate() {
            splits.entry(c.split).or_default().push(index);
            categories.entry(c.category.clone()).or_default().push(index);
            tops.entry(top(&c.category).to_string()).or_default().push(index);
        }
        Self { dir, image_size, clipart, splits, categories, tops, dropped, cache: Mutex::new(HashMap::new()) }
    }

    /// Every picture kept, in path order.
    pub fn clipart(&self) -> &[Clipart] {
        &self.clipart
    }

    /// Pictures left out, by reason (those of [`caption`], and `"family full"` past [`MAX_FAMILY`]).
    pub fn dropped(&self) -> &BTreeMap<DropReason, usize> {
        &self.dropped
    }

    fn indices(&self, split: Split) -> &[usize] {
        self.splits.get(&split).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The pictures (indices into [`Self::clipart`]) used as hard negatives of picture `index`:
    /// the following pictures of its category folder (cyclically), then of its top-level folder,
    /// then of the whole split, one per family other than its own, all from the same split.
    pub fn negatives(&self, index: usize) -> Vec<usize> {
        let me = &self.clipart[index];
        let mut out: Vec<usize> = Vec::new();
        let pools = [&self.categories[&me.category], &self.tops[top(&me.category)], &self.splits[&me.split]];
        for pool in pools {
            let at = pool.iter().position(|&i| i == index).unwrap_or(0);
            for &other in pool.iter().cycle().skip(at + 1).take(pool.len()) {
                if out.len() >= MAX_NEGATIVES {
                    return out;
                }
                let c = &self.clipart[other];
                if c.split == me.split
                    && c.caption != me.caption
                    && !out.iter().any(|&o| self.clipart[o].caption == c.caption)
                {
                    out.push(other);
                }
            }
        }
        out
    }

    /// The picture at `index` on white, fitted to the dataset's image size (cached).
    pub fn image(&self, index: usize) -> Result<RgbImage> {
        if let Some(image) = self.cache.lock().map_err(|_| EgaError::Data("image cache poisoned".into()))?.get(&index) {
            return Ok(image.clone());
        }
        let path = self.dir.join("png").join(&self.clipart[index].path);
        let bytes = crate::fs::read_regular(&path, crate::fs::MAX_IMAGE)?;
        let image = super::decode_image_on_white(&bytes, &path.display().to_string())?;
        let image = super::fit_on_white(&crop_to_drawing(&image), self.image_size);
        self.cache.lock().map_err(|_| EgaError::Data("image cache poisoned".into()))?.insert(index, image.clone());
        Ok(image)
    }
}

/// Whether the pictures of category folder `category` (`animals/birds`) are all held out as
/// `unseen` (one folder in twelve, by a hash of its path).
pub fn is_unseen_category(category: &str) -> bool {
    fnv1a(category).is_multiple_of(UNSEEN_EVERY)
}

/// `image` cut to the box around its drawing (pixels not near white): many pictures were exported
/// with their whole page (794 × 1123 for A4), the drawing small in one corner. Blank images stay whole.
pub fn crop_to_drawing(image: &RgbImage) -> RgbImage {
    let (mut left, mut top, mut right, mut bottom) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, pixel) in image.enumerate_pixels() {
        if pixel.0.iter().any(|&c| c < 248) {
            (left, top, right, bottom) = (left.min(x), top.min(y), right.max(x), bottom.max(y));
        }
    }
    if left > right {
        return image.clone();
    }
    image::imageops::crop_imm(image, left, top, right - left + 1, bottom - top + 1).to_image()
}

/// Splits by family: `unseen` for every family with a picture in an unseen category folder,
/// `test` for one other family in ten, `train` for the rest.
pub fn assign_splits(clipart: &mut [Clipart]) {
    let mut unseen_families: std::collections::HashSet<String> = std::collections::HashSet::new();
    for c in clipart.iter() {
        if is_unseen_category(&c.category) {
            unseen_families.insert(c.caption.clone());
        }
    }
    for c in clipart.iter_mut() {
        c.split = if unseen_families.contains(&c.caption) {
            Split::Unseen
        } else if fnv1a(&c.caption).is_multiple_of(TEST_EVERY) {
            Split::Test
        } else {
            Split::Train
        };
    }
}

impl Dataset for OpenClipartDataset {
    fn name(&self) -> String {
        format!("openclipart:{}", self.dir.display())
    }

    fn len(&self, split: Split) -> Option<usize> {
        Some(self.indices(split).len())
    }

    fn sample(&self, split: Split, index: usize) -> Result<Sample> {
        super::collection_sample(
            (&self.name(), "pictures"),
            split,
            index,
            self.indices(split),
            |p| self.negatives(p),
            |p| {
                let path = &self.clipart[p].path;
                format!("openclipart-{}", path.strip_suffix(".png").unwrap_or(path))
            },
            |p| self.clipart[p].caption.clone(),
            |p| self.image(p),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_come_off_file_names() {
        assert_eq!(without_number("bee3_mimooh_01"), "bee3_mimooh");
        assert_eq!(without_number("aiga_exit_"), "aiga_exit");
        assert_eq!(without_number("elder_sign_nurbldoff_06r"), "elder_sign_nurbldoff");
        assert_eq!(without_number("people_juliane_krug_05a"), "people_juliane_krug");
        assert_eq!(without_number("simple_cross_01_01"), "simple_cross");
        assert_eq!(without_number("orange"), "orange");
        assert_eq!(without_number("_01"), "_01");
    }

    #[test]
    fn words_drop_numbers_and_spell_black_and_white() {
        assert_eq!(words("star_93pt37step"), vec!["star"]);
        assert_eq!(words("Aircraft2"), vec!["aircraft"]);
        assert_eq!(words("Violin (B and W)"), vec!["violin", "black", "and", "white"]);
        assert_eq!(words("bacon_bw"), vec!["bacon", "black", "and", "white"]);
        assert_eq!(words("Castilla y León"), vec!["castilla", "y", "león"]);
    }

    #[test]
    fn png_text_reads_title_and_author_before_the_pixels() {
        let chunk = |kind: &[u8], data: &[u8]| {
            let mut out = (data.len() as u32).to_be_bytes().to_vec();
            out.extend(kind);
            out.extend(data);
            out.extend([0u8; 4]); // CRC: not checked here
            out
        };
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(chunk(b"IHDR", &[0; 13]));
        png.extend(chunk(b"tEXt", b"Title\0Caf\xc3\xa9 Table"));
        png.extend(chunk(b"tEXt", b"Author\0Ren\xe9")); // Latin-1
        png.extend(chunk(b"IDAT", &[0; 10]));
        png.extend(chunk(b"tEXt", b"Title\0after the pixels"));
        let text = png_text(&mut std::io::Cursor::new(png)).unwrap();
        assert_eq!(text.title.as_deref(), Some("Café Table"));
        assert_eq!(text.author.as_deref(), Some("René"));
        assert!(png_text(&mut std::io::Cursor::new(b"GIF89a..".to_vec())).is_err());
    }
}
