//! Fluent UI emoji: Microsoft's 3 145 colour emoji (the `modern` style, SVG), named only by their
//! file names. Fluent Emoji © Microsoft Corporation, MIT licence; npm package `fluentui-emoji`
//! by Mohammad Abu Mattar, MIT licence.
//!
//! `scripts/setup-fluentui.sh` fetches `fluentui-emoji@1.3.0` from npm and lays it out as
//! `DIR/modern/<name>.svg` (default `DIR`: `data/fluentui`). Nothing is downloaded at run time.
//!
//! - **Captions** from file names: `airplane-arrival` → "airplane arrival". An emoji drawn in the
//!   six skin tones comes as `<name>-default`, `-light`, `-medium-light`, `-medium`,
//!   `-medium-dark` and `-dark` (310 such emoji); `-default` (the yellow one) is captioned by the
//!   name alone, the others as Unicode names them: "man dancing: medium-dark skin tone".
//! - **Families**: an emoji and its skin tones are one family and share a split. One family in
//!   ten (by a hash of its name) is `test`. The package has no groups or categories, so there is
//!   no `unseen` split (it has no pairs).
//! - **Hard negatives** (up to [`MAX_NEGATIVES`]): another skin tone of the same emoji first, then
//!   emoji of other families that share a word of the name, the last word first (`red-circle` →
//!   `blue-circle`; `man-dancing` → `woman-dancing`), in the same skin tone when they have it,
//!   then (a name that shares no word) the following emoji in name order; one per family, always
//!   from the same split.
//! - **Images** are rasterised with `resvg` on white at the model's input size, and cached.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::openmoji::rasterise_svg;
use super::{fnv1a, Dataset, RgbImage, Sample, Split};
use crate::{EgaError, Result};

/// Where `scripts/setup-fluentui.sh` puts the data by default (relative to the working directory).
pub const DEFAULT_DIR: &str = "data/fluentui";
/// The style folder the set-up keeps (the package also has `flat` and `high-contrast`).
pub const STYLE: &str = "modern";
/// Hard negatives per sample at most.
pub const MAX_NEGATIVES: usize = 3;
/// One family in `TEST_EVERY` goes to the `test` split.
const TEST_EVERY: u64 = 10;
/// The package's skin-tone suffixes, longest first so `-medium-dark` is not read as `-dark`.
pub const SKIN_TONES: [&str; 6] = ["medium-light", "medium-dark", "default", "medium", "light", "dark"];
/// Words that say nothing about what an emoji shows, never used to pick hard negatives.
const FILLER_WORDS: [&str; 8] = ["a", "an", "and", "in", "of", "on", "the", "with"];

/// One emoji: one SVG file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FluentEmoji {
    /// File stem, e.g. `man-dancing-medium-dark`.
    pub name: String,
    /// The name without its skin tone (`man-dancing`); the name itself for emoji without tones.
    pub family: String,
    /// The skin tone (`default`, `light`, …, `dark`) of an emoji drawn in several.
    pub tone: Option<String>,
    /// "man dancing: medium-dark skin tone".
    pub caption: String,
    /// Its split (the family's).
    pub split: Split,
}

/// The emoji a folder's file stems describe, in the order given: families and tones recognised
/// (a `-light` or `-dark` suffix is a skin tone only when the same name with `-default` is there
/// too: `horizontal-traffic-light` is not a tone of `horizontal-traffic`), captions and splits.
pub fn emoji_from_names(names: &[String]) -> Vec<FluentEmoji> {
    let known: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    names
        .iter()
        .map(|name| {
            let toned = SKIN_TONES.iter().find_map(|&tone| {
                let family = name.strip_suffix(tone)?.strip_suffix('-')?;
                known.contains(format!("{family}-default").as_str()).then(|| (family.to_string(), tone))
            });
            let (family, tone) = match toned {
                Some((family, tone)) => (family, Some(tone)),
                None => (name.clone(), None),
            };
            let words = family.split('-').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
            let caption = match tone {
                Some(tone) if tone != "default" => format!("{words}: {tone} skin tone"),
                _ => words,
            };
            let split = if fnv1a(&family).is_multiple_of(TEST_EVERY) { Split::Test } else { Split::Train };
            FluentEmoji { name: name.clone(), family, tone: tone.map(str::to_string), caption, split }
        })
        .collect()
}

/// The words of a family name that pick hard negatives, in the order they are tried: the last
/// (usually the head noun: `circle`, `face`), the first, then the others; fillers left out.
fn key_words(family: &str) -> Vec<&str> {
    let words: Vec<&str> = family.split('-').filter(|w| !w.is_empty() && !FILLER_WORDS.contains(w)).collect();
    let mut ordered: Vec<&str> = Vec::new();
    let middle = words.iter().skip(1).take(words.len().saturating_sub(2));
    for &word in words.last().into_iter().chain(words.first()).chain(middle) {
        if !ordered.contains(&word) {
            ordered.push(word);
        }
    }
    ordered
}

/// The Fluent UI emoji read from a set-up folder.
pub struct FluentUiDataset {
    dir: PathBuf,
    image_size: u32,
    emoji: Vec<FluentEmoji>,
    /// Indices into `emoji`, per split.
    splits: HashMap<Split, Vec<usize>>,
    /// Indices into `emoji` per family, in name order.
    families: HashMap<String, Vec<usize>>,
    /// Family names per key word, in name order.
    by_word: HashMap<String, Vec<String>>,
    cache: Mutex<HashMap<usize, RgbImage>>,
}

impl FluentUiDataset {
    /// Lists `dir/modern/*.svg`; images are rasterised at `image_size`.
    pub fn open(dir: impl AsRef<Path>, image_size: u32) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let svg_dir = dir.join(STYLE);
        let entries = std::fs::read_dir(&svg_dir).map_err(|err| {
            EgaError::Data(format!(
                "Fluent UI emoji are not set up in {}: {}: {err}. Run `bash scripts/setup-fluentui.sh {}` first \
                 (it fetches the npm package fluentui-emoji@1.3.0)",
                dir.display(),
                svg_dir.display(),
                dir.display()
            ))
        })?;
        if image_size == 0 {
            return Err(EgaError::config("image_size", 0, "must be at least 1"));
        }
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|err| EgaError::io(&svg_dir, err))?;
            let file_name = entry.file_name();
            let Some(stem) = file_name.to_str().and_then(|name| name.strip_suffix(".svg")) else { continue };
            if entry.file_type().map_err(|err| EgaError::io(entry.path(), err))?.is_file() {
                names.push(stem.to_string());
            }
        }
        names.sort();
        if names.is_empty() {
            return Err(EgaError::Data(format!(
                "{}: no .svg files; run `bash scripts/setup-fluentui.sh {}`",
                svg_dir.display(),
                dir.display()
            )));
        }
        Ok(Self::from_emoji(dir, image_size, emoji_from_names(&names)))
    }

    fn from_emoji(dir: PathBuf, image_size: u32, emoji: Vec<FluentEmoji>) -> Self {
        let mut splits: HashMap<Split, Vec<usize>> = HashMap::new();
        let mut families: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_word: HashMap<String, Vec<String>> = HashMap::new();
        for (index, e) in emoji.iter().enumerate() {
            splits.entry(e.split).or_default().push(index);
            let members = families.entry(e.family.clone()).or_default();
            if members.is_empty() {
                for word in key_words(&e.family) {
                    by_word.entry(word.to_string()).or_default().push(e.family.clone());
                }
            }
            members.push(index);
        }
        Self { dir, image_size, emoji, splits, families, by_word, cache: Mutex::new(HashMap::new()) }
    }

    /// Every emoji in name order.
    pub fn emoji(&self) -> &[FluentEmoji] {
        &self.emoji
    }

    fn indices(&self, split: Split) -> &[usize] {
        self.splits.get(&split).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The emoji (indices into [`Self::emoji`]) used as hard negatives of emoji `index`: the next
    /// skin tone of the same emoji, then one emoji from each following family (cyclically, in name
    /// order) that shares a key word, in this emoji's tone when it has it, then the following
    /// emoji of the split; one per family, all from the same split.
    pub fn negatives(&self, index: usize) -> Vec<usize> {
        let me = &self.emoji[index];
        let usable = |other: usize| {
            other != index && self.emoji[other].split == me.split && self.emoji[other].caption != me.caption
        };
        let mut out: Vec<usize> = Vec::new();
        let family = &self.families[&me.family];
        if family.len() > 1 {
            let at = family.iter().position(|&i| i == index).unwrap_or(0);
            if let Some(&other) = family.iter().cycle().skip(at + 1).take(family.len()).find(|&&i| usable(i)) {
                out.push(other);
            }
        }
        for word in key_words(&me.family) {
            let kin = &self.by_word[word];
            let at = kin.iter().position(|f| f == &me.family).unwrap_or(0);
            for other_family in kin.iter().cycle().skip(at + 1).take(kin.len()) {
                if out.len() >= MAX_NEGATIVES {
                    return out;
                }
                if other_family == &me.family || out.iter().any(|&o| &self.emoji[o].family == other_family) {
                    continue;
                }
                let members = &self.families[other_family];
                let same_tone = members.iter().copied().find(|&m| self.emoji[m].tone == me.tone);
                let candidate = same_tone.unwrap_or(members[0]);
                if usable(candidate) {
                    out.push(candidate);
                }
            }
        }
        // A name no other family shares a word with: the following emoji of the split.
        let split = self.indices(me.split);
        let at = split.iter().position(|&i| i == index).unwrap_or(0);
        for &other in split.iter().cycle().skip(at + 1).take(split.len()) {
            if out.len() >= MAX_NEGATIVES {
                break;
            }
            let family = &self.emoji[other].family;
            if family != &me.family && usable(other) && !out.iter().any(|&o| &self.emoji[o].family == family) {
                out.push(other);
            }
        }
        out
    }

    /// The emoji at `index` rasterised on white at the dataset's image size (cached).
    pub fn image(&self, index: usize) -> Result<RgbImage> {
        if let Some(image) = self.cache.lock().map_err(|_| EgaError::Data("image cache poisoned".into()))?.get(&index) {
            return Ok(image.clone());
        }
        let path = self.dir.join(STYLE).join(format!("{}.svg", self.emoji[index].name));
        let bytes = crate::fs::read_regular(&path, crate::fs::MAX_IMAGE)?;
        let image = rasterise_svg(&bytes, self.image_size, &path.display().to_string())?;
        self.cache.lock().map_err(|_| EgaError::Data("image cache poisoned".into()))?.insert(index, image.clone());
        Ok(image)
    }
}

impl Dataset for FluentUiDataset {
    fn name(&self) -> String {
        format!("fluentui:{}", self.dir.display())
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
            |e| format!("fluentui-{}", self.emoji[e].name),
            |e| self.emoji[e].caption.clone(),
            |e| self.image(e),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_words_try_the_head_noun_first() {
        assert_eq!(key_words("red-circle"), vec!["circle", "red"]);
        assert_eq!(key_words("face-with-hand-over-mouth"), vec!["mouth", "face", "hand", "over"]);
        assert_eq!(key_words("abacus"), vec!["abacus"]);
    }
}
