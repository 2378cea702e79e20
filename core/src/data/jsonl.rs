//! The user's own image–text pairs: a JSONL file, one JSON object a line.
//!
//! ```text
//! {"image": "photos/cat.jpg", "text": "a cat on a sofa"}
//! {"image": "dog.png", "text": "a dog", "neg_text": ["a cat"], "neg_image": ["wolf.png"]}
//! ```
//!
//! MMEB-train field names are accepted too: the image is the first non-empty of `image`,
//! `qry_image_path`, `pos_image_path`; the text the first non-empty of `text`, `pos_text`, `qry`
//! (with `<|image_1|>` markers removed); negatives `neg_text` / `neg_image` / `neg_image_path`
//! (a string or a list of strings). Relative image paths resolve against the JSONL file's folder.
//! Any other key is an error (a misspelt `"imgae"` must not silently drop every image).
//!
//! The file is read and checked when the dataset is opened (every line parsed, every image file
//! present); images are decoded when a sample is asked for. Bad lines are errors that name the
//! file and line, or, with `skip_bad`, are counted and reported instead.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{decode_image, Dataset, Sample, Split};
use crate::{EgaError, Result};

const KNOWN_KEYS: [&str; 11] = [
    "image",
    "text",
    "neg_text",
    "neg_image",
    "qry",
    "qry_image_path",
    "pos_text",
    "pos_image_path",
    "neg_image_path",
    "id",
    "split",
];

/// One checked line.
#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    id: String,
    image: PathBuf,
    text: String,
    negative_texts: Vec<String>,
    negative_images: Vec<PathBuf>,
    split: Option<Split>,
}

/// A JSONL dataset.
#[derive(Debug, Clone)]
pub struct JsonlDataset {
    path: PathBuf,
    train: Vec<Entry>,
    test: Vec<Entry>,
    /// Lines skipped with `skip_bad`, each with its reason.
    pub skipped: Vec<String>,
}

fn strings(value: &Value, key: &str, line: usize, file: &str) -> Result<Vec<String>> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(EgaError::format(
                    format_args!("{file}:{line}"),
                    format!("\"{key}\" must hold strings, found {other}"),
                )),
            })
            .collect(),
        other => Err(EgaError::format(
            format_args!("{file}:{line}"),
            format!("\"{key}\" must be a string or a list of strings, found {other}"),
        )),
    }
}

fn first_non_empty(
    object: &serde_json::Map<String, Value>,
    keys: &[&str],
    line: usize,
    file: &str,
) -> Result<Option<String>> {
    for key in keys {
        if let Some(value) = object.get(*key) {
            let found = strings(value, key, line, file)?;
            if found.len() > 1 {
                return Err(EgaError::format(
                    format_args!("{file}:{line}"),
                    format!("\"{key}\" must be one string, found a list of {}", found.len()),
                ));
            }
            if let Some(text) = found.into_iter().next().filter(|s| !s.trim().is_empty()) {
                return Ok(Some(text));
            }
        }
    }
    Ok(None)
}

fn parse_line(text: &str, line: usize, file: &str, folder: &Path, is_file: &dyn Fn(&Path) -> bool) -> Result<Entry> {
    let value: Value = serde_json::from_str(text)
        .map_err(|err| EgaError::format(format_args!("{file}:{line}"), format!("not valid JSON: {err}")))?;
    let Value::Object(object) = value else {
        return Err(EgaError::format(
            format_args!("{file}:{line}"),
            "expected a JSON object like {\"image\": \"a.png\", \"text\": \"a caption\"}",
        ));
    };
    if let Some(key) = object.keys().find(|k| !KNOWN_KEYS.contains(&k.as_str())) {
        return Err(EgaError::format(
            format_args!("{file}:{line}"),
            format!("unknown field \"{key}\" (accepted: {})", KNOWN_KEYS.join(", ")),
        ));
    }
    let image = first_non_empty(&object, &["image", "qry_image_path", "pos_image_path"], line, file)?
        .ok_or_else(|| EgaError::format(format_args!("{file}:{line}"), "no image (give \"image\": \"path\")"))?;
    let text = first_non_empty(&object, &["text", "pos_text", "qry"], line, file)?
        .map(|t| t.replace("<|image_1|>", "").trim().to_string())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| EgaError::format(format_args!("{file}:{line}"), "no text (give \"text\": \"a caption\")"))?;
    let resolve = |p: &str| -> Result<PathBuf> {
        let path = folder.join(p);
        if !is_file(&path) {
            return Err(EgaError::Data(format!(
                "{file}:{line}: image {} does not exist or is not a file",
                path.display()
            )));
        }
        Ok(path)
    };
    let mut negative_images = Vec::new();
    for key in ["neg_image", "neg_image_path"] {
        if let Some(value) = object.get(key) {
            for p in strings(value, key, line, file)?.iter().filter(|p| !p.trim().is_empty()) {
                negative_images.push(resolve(p)?);
            }
        }
    }
    let negative_texts = match object.get("neg_text") {
        Some(value) => strings(value, "neg_text", line, file)?.into_iter().filter(|t| !t.trim().is_empty()).collect(),
        None => Vec::new(),
    };
    let split = match object.get("split") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "train" => Some(Split::Train),
        Some(Value::String(s)) if s == "test" => Some(Split::Test),
        Some(other) => {
            return Err(EgaError::format(
                format_args!("{file}:{line}"),
                format!("\"split\" must be \"train\" or \"test\", found {other}"),
            ))
        }
    };
    let id = match object.get("id") {
        None | Some(Value::Null) => format!("line-{line}"),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(EgaError::format(
                format_args!("{file}:{line}"),
                format!("\"id\" must be a string or a number, found {other}"),
            ))
        }
    };
    Ok(Entry { line, id, image: resolve(&image)?, text, negative_texts, negative_images, split })
}

impl JsonlDataset {
    /// Reads and checks `path`. Lines without a `"split"` go to `train`, except every 20th
    /// (when the file has at least 40 lines), which is held out for `test`. With `skip_bad`, bad
    /// lines are skipped and listed in [`Self::skipped`] instead of failing.
    pub fn open(path: impl AsRef<Path>, skip_bad: bool) -> Result<Self> {
        let path = path.as_ref();
        let content = crate::fs::read_regular(path, crate::fs::MAX_DATASET)?;
        Self::from_bytes(&content, path, skip_bad, &|image: &Path| image.is_file())
    }

    /// [`Self::open`] on a file's contents: `path` names the file (relative image paths resolve
    /// against its folder) and `is_file` says whether an image file exists (`Path::is_file` for
    /// [`Self::open`]; the fuzz targets pass a stand-in, see [`crate::fuzzing`]).
    pub fn from_bytes(content: &[u8], path: &Path, skip_bad: bool, is_file: &dyn Fn(&Path) -> bool) -> Result<Self> {
        let file = path.display().to_string();
        let folder = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut entries = Vec::new();
        let mut skipped = Vec::new();
        // A byte-order mark before the first line (an editor on Windows) is not part of it.
        for (number, bytes) in crate::fs::strip_bom(content).split(|&b| b == b'\n').enumerate() {
            // Each line is checked on its own, so a stray non-UTF-8 caption names its line.
            let parsed = std::str::from_utf8(bytes)
                .map_err(|err| {
                    EgaError::format(
                        format_args!("{file}:{}", number + 1),
                        format!("not valid UTF-8 (byte {} of the line)", err.valid_up_to()),
                    )
                })
                .and_then(|text| {
                    let text = text.trim_end_matches('\r');
                    if text.trim().is_empty() {
                        Ok(None)
                    } else {
                        parse_line(text, number + 1, &file, &folder, is_file).map(Some)
                    }
                });
            match parsed {
                Ok(None) => {}
                Ok(Some(entry)) => entries.push(entry),
                Err(err) if skip_bad => skipped.push(err.to_string()),
                Err(err) => return Err(err),
            }
        }
        if entries.is_empty() {
            return Err(EgaError::Data(format!(
                "{file}: no usable image–text pairs{}",
                if skipped.is_empty() {
                    String::new()
                } else {
                    format!(" ({} bad lines skipped; first: {})", skipped.len(), skipped[0])
                }
            )));
        }
        let hold_out = entries.len() >= 40;
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for (k, entry) in entries.into_iter().enumerate() {
            match entry.split {
                Some(Split::Test) => test.push(entry),
                Some(_) => train.push(entry),
                None if hold_out && k % 20 == 19 => test.push(entry),
                None => train.push(entry),
            }
        }
        Ok(Self { path: path.to_path_buf(), train, test, skipped })
    }

    fn entries(&self, split: Split) -> &[Entry] {
        match split {
            Split::Train => &self.train,
            Split::Test => &self.test,
            Split::Unseen => &[],
        }
    }

    /// All texts of a split (for training the tokenizer).
    pub fn texts(&self, split: Split) -> Vec<String> {
        self.entries(split)
            .iter()
            .flat_map(|e| std::iter::once(e.text.clone()).chain(e.negative_texts.iter().cloned()))
            .collect()
    }
}

fn read_image(path: &Path, context: &str) -> Result<super::RgbImage> {
    let bytes = crate::fs::read_regular(path, crate::fs::MAX_IMAGE)
        .map_err(|err| EgaError::Data(format!("{context}: image {err}")))?;
    decode_image(&bytes, &format!("{context}: image {}", path.display()))
}

impl Dataset for JsonlDataset {
    fn name(&self) -> String {
        format!("jsonl:{}", self.path.display())
    }

    fn len(&self, split: Split) -> Option<usize> {
        Some(self.entries(split).len())
    }

    fn sample(&self, split: Split, index: usize) -> Result<Sample> {
        let entries = self.entries(split);
        let entry = entries.get(index).ok_or_else(|| {
            EgaError::Data(format!(
                "{}: the {split} split has {} pairs, asked for number {index}",
                self.path.display(),
                entries.len()
            ))
        })?;
        let context = format!("{}:{}", self.path.display(), entry.line);
        Ok(Sample {
            id: entry.id.clone(),
            image: read_image(&entry.image, &context)?,
            caption: entry.text.clone(),
            negative_captions: entry.negative_texts.clone(),
            negative_images: entry.negative_images.iter().map(|p| read_image(p, &context)).collect::<Result<_>>()?,
        })
    }

    fn skipped(&self) -> &[String] {
        &self.skipped
    }
}
