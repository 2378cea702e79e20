//! Free-form retrieval: hand-written queries, the way people type into an image search, against
//! the whole gallery of one split. A query can have several right answers (skin-tone variants,
//! "cat face" and "cat"); it succeeds at k when any of them is among the k images nearest to it.
//!
//! A query set is a text file, one JSON object a line:
//!
//! ```text
//! # comment lines start with #; blank lines are skipped
//! {"query": "cuddly australian tree animal", "relevant": ["openmoji-1F428"]}
//! {"query": "like, approve", "relevant": ["openmoji-1F44D", "openmoji-1F44D-1F3FB"]}
//! ```
//!
//! `relevant` holds gallery ids as [`Sample::id`](crate::data::Sample) spells them
//! (`openmoji-<HEXCODE>` for OpenMoji; a JSONL line's `"id"`, else `line-N`). Every id must be in
//! the evaluated split; a bad line is an error naming the file and line.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::{dot, row};
use crate::data::{Dataset, Split};
use crate::embed::{embed_captions, embed_images};
use crate::model::{Embedder, ModelConfig};
use crate::tensor_util::to_f32_vec;
use crate::tokenizer::Tokenizer;
use crate::{EgaError, Result};

/// One line of a query set, as written in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreeformQuery {
    /// What the user types.
    pub query: String,
    /// Gallery ids that count as a right answer (at least one).
    pub relevant: Vec<String>,
}

/// A query set read from a file, with where each query came from (for messages).
#[derive(Debug, Clone)]
pub struct QuerySet {
    /// The file, for messages.
    pub source: String,
    /// The queries in file order.
    pub queries: Vec<FreeformQuery>,
    /// The 1-based line of each query.
    pub lines: Vec<usize>,
}

impl QuerySet {
    /// Parses a query set; `source` names it in messages. Lines starting with `#` and blank lines
    /// are skipped; every other line must be `{"query": "...", "relevant": ["id", ...]}` with a
    /// non-empty query and at least one id.
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let mut queries = Vec::new();
        let mut lines = Vec::new();
        for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut query: FreeformQuery = serde_json::from_str(line).map_err(|err| {
                EgaError::format(
                    format_args!("{source}:{number}"),
                    format!("not a query line ({err}); expected {{\"query\": \"...\", \"relevant\": [\"id\", ...]}}"),
                )
            })?;
            if query.query.trim().is_empty() {
                return Err(EgaError::format(format_args!("{source}:{number}"), "the query is empty"));
            }
            if query.relevant.is_empty() {
                return Err(EgaError::format(
                    format_args!("{source}:{number}"),
                    format!("\"relevant\" is empty; list at least one gallery id that answers {:?}", query.query),
                ));
            }
            if let Some(blank) = query.relevant.iter().position(|id| id.trim().is_empty()) {
                return Err(EgaError::format(
                    format_args!("{source}:{number}"),
                    format!("relevant id {} is empty", blank + 1),
                ));
            }
            // A repeated id is harmless to the metric; keep the first of each.
            let mut seen = std::collections::HashSet::new();
            query.relevant.retain(|id| seen.insert(id.clone()));
            queries.push(query);
            lines.push(number);
        }
        if queries.is_empty() {
            return Err(EgaError::format(&source, "no queries (only blank or # lines)"));
        }
        Ok(Self { source: source.to_string(), queries, lines })
    }

    /// Reads and parses a query set file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::fs::read_text(path, crate::fs::MAX_JSON)?;
        Self::parse(&text, &path.display().to_string())
    }

    /// For each query, the gallery rows of its relevant ids; an id not in `gallery_ids` is an error
    /// naming the file, line and split (`what`, e.g. `"the test split of openmoji"`).
    pub fn resolve(&self, gallery_ids: &[String], what: &str) -> Result<Vec<Vec<usize>>> {
        let mut rows_of: HashMap<&str, Vec<usize>> = HashMap::new();
        for (row, id) in gallery_ids.iter().enumerate() {
            rows_of.entry(id.as_str()).or_default().push(row);
        }
        self.queries
            .iter()
            .zip(&self.lines)
            .map(|(query, &line)| {
                let mut rows = Vec::new();
                for id in &query.relevant {
                    let found = rows_of.get(id.as_str()).ok_or_else(|| {
                        // A bare code for a prefixed id (`1F428` for `openmoji-1F428`) is the likely slip.
                        let suffix = format!("-{id}");
                        let hint = gallery_ids
                            .iter()
                            .find(|g| g.ends_with(&suffix))
                            .map(|g| format!(" (did you mean {g:?}?)"))
                            .unwrap_or_default();
                        EgaError::Data(format!(
                            "{}:{line}: relevant id {id:?} is not in {what} ({} images){hint}",
                            self.source,
                            gallery_ids.len()
                        ))
                    })?;
                    rows.extend(found);
                }
                Ok(rows)
            })
            .collect()
    }
}

/// How one query fared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryOutcome {
    /// The query text.
    pub query: String,
    /// 0-based rank of its best relevant image (0: a right answer came first).
    pub rank: usize,
    /// Id of the image ranked first.
    pub top: String,
}

/// Free-form retrieval quality of a query set on one split's gallery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FreeformMetrics {
    /// Queries evaluated.
    pub queries: usize,
    /// Gallery images each query ranks (the whole split).
    pub gallery: usize,
    /// Fraction of queries with a relevant image ranked first.
    pub success_at_1: f64,
    /// Fraction of queries with a relevant image among the first 10.
    pub success_at_10: f64,
    /// Each query in file order.
    pub outcomes: Vec<QueryOutcome>,
}

/// 0-based rank of the best-scoring `relevant` entry of `scores`: how many other entries score at
/// least as high (ties count against the model, as in the recall metrics; ties among relevant
/// entries do not). `relevant` holds indices into `scores`. A query succeeds at k when this is
/// below k. With no relevant entry, or only NaN scores among them, it is `scores.len()`: never a
/// success.
pub fn best_relevant_rank(scores: &[f32], relevant: &[usize]) -> usize {
    let Some(best) = relevant.iter().map(|&r| scores[r]).filter(|s| !s.is_nan()).reduce(f32::max) else {
        return scores.len();
    };
    scores.iter().enumerate().filter(|&(j, &s)| !relevant.contains(&j) && s >= best).count()
}

/// Fraction of `ranks` below `k` (success@k from [`best_relevant_rank`]s).
pub fn success_at(ranks: &[usize], k: usize) -> f64 {
    if ranks.is_empty() {
        return 0.0;
    }
    ranks.iter().filter(|&&r| r < k).count() as f64 / ranks.len() as f64
}

/// What the queries of a free-form evaluation rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Against {
    /// The gallery's images (text to image: the retrieval the model is for).
    #[default]
    Images,
    /// The gallery's captions, embedded as queries are (text to text): what the text side alone
    /// knows of the queries, the ceiling an image side trained to sit on its caption's
    /// embedding could reach.
    Captions,
}

impl std::str::FromStr for Against {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "images" => Ok(Against::Images),
            "captions" => Ok(Against::Captions),
            other => Err(format!("{other:?} is not a gallery side: images or captions")),
        }
    }
}

impl std::fmt::Display for Against {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Against::Images => "images",
            Against::Captions => "captions",
        })
    }
}

/// Embeds every image of `split` (its whole gallery, `batch_size` at a time) and every query of
/// `queries` (with the model's query prompt, like the captions of [`super::evaluate`]), ranks the
/// gallery by cosine for each query and reports success@1 and success@10. Ids of `queries` that
/// are not in the split are an error naming the file and line. The split must have a length
/// ([`Dataset::len`] is not `None`).
pub fn evaluate_freeform(
    model: &Embedder,
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    dataset: &dyn Dataset,
    split: Split,
    queries: &QuerySet,
    batch_size: usize,
    device: &Device,
) -> Result<FreeformMetrics> {
    evaluate_freeform_against(model, config, tokenizer, dataset, split, queries, Against::Images, batch_size, device)
}

/// [`evaluate_freeform`] with the gallery's images or (`Against::Captions`) its captions ranked.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_freeform_against(
    model: &Embedder,
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    dataset: &dyn Dataset,
    split: Split,
    queries: &QuerySet,
    against: Against,
    batch_size: usize,
    device: &Device,
) -> Result<FreeformMetrics> {
    let what = format!("the {split} split of {}", dataset.name());
    let gallery = dataset.len(split).ok_or_else(|| {
        EgaError::Data(format!("{what} has no fixed size; free-form queries need a gallery of known images"))
    })?;
    if gallery == 0 {
        return Err(EgaError::Data(format!("{what} is empty: no gallery to search")));
    }
    // Images are loaded a batch at a time and only their ids and embeddings are kept.
    let batch_size = batch_size.max(1);
    let mut ids = Vec::with_capacity(gallery);
    let mut image = Vec::new(); // [gallery, d] row-major (image or caption rows)
    for start in (0..gallery).step_by(batch_size) {
        let samples =
            (start..(start + batch_size).min(gallery)).map(|i| dataset.sample(split, i)).collect::<Result<Vec<_>>>()?;
        let rows = match against {
            Against::Images => {
                let images: Vec<_> = samples.iter().map(|s| &s.image).collect();
                embed_images(model, config, tokenizer, &images, batch_size, device)?
            }
            Against::Captions => {
                let captions: Vec<&str> = samples.iter().map(|s| s.caption.as_str()).collect();
                embed_captions(model, config, tokenizer, &captions, batch_size, device)?
            }
        };
        image.extend(to_f32_vec(rows)?);
        ids.extend(samples.into_iter().map(|s| s.id));
    }
    let relevant = queries.resolve(&ids, &what)?;
    let texts: Vec<&str> = queries.queries.iter().map(|q| q.query.as_str()).collect();
    let text = to_f32_vec(embed_captions(model, config, tokenizer, &texts, batch_size, device)?)?; // [queries, d]
    let d = config.embed_dim();
    let outcomes: Vec<QueryOutcome> = queries
        .queries
        .iter()
        .enumerate()
        .map(|(q, query)| {
            // Embeddings are unit-norm: the dot product is the cosine.
            let scores: Vec<f32> = (0..gallery).map(|j| dot(row(&text, d, q), row(&image, d, j))).collect();
            let top = (0..gallery).fold(0, |best, j| if scores[j] > scores[best] { j } else { best });
            QueryOutcome {
                query: query.query.clone(),
                rank: best_relevant_rank(&scores, &relevant[q]),
                top: ids[top].clone(),
            }
        })
        .collect();
    let ranks: Vec<usize> = outcomes.iter().map(|o| o.rank).collect();
    Ok(FreeformMetrics {
        queries: outcomes.len(),
        gallery,
        success_at_1: success_at(&ranks, 1),
        success_at_10: success_at(&ranks, 10),
        outcomes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_skips_comments_and_names_bad_lines() {
        let text = "# header\n\n{\"query\": \"a koala\", \"relevant\": [\"k\", \"k\"]}\n";
        let set = QuerySet::parse(text, "q.jsonl").unwrap();
        assert_eq!((set.queries.len(), set.lines[0]), (1, 3));
        assert_eq!(set.queries[0].relevant, vec!["k"], "a repeated id is kept once");
        for (text, expected) in [
            ("{\"query\": \"x\"", "q.jsonl:1: not a query line"),
            ("# c\n{\"query\": \"x\", \"relevant\": []}", "q.jsonl:2: \"relevant\" is empty"),
            ("{\"query\": \" \", \"relevant\": [\"a\"]}", "q.jsonl:1: the query is empty"),
            ("{\"query\": \"x\", \"relevant\": [\"a\"], \"relevnt\": 1}", "unknown field"),
            ("{\"query\": \"x\", \"relevant\": \"a\"}", "q.jsonl:1: not a query line"),
            ("# only a comment\n", "q.jsonl: no queries"),
        ] {
            let err = QuerySet::parse(text, "q.jsonl").unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn resolve_names_the_line_of_an_unknown_id_and_hints_at_the_prefix() {
        let set = QuerySet::parse(
            "{\"query\": \"a\", \"relevant\": [\"openmoji-1\"]}\n\n{\"query\": \"b\", \"relevant\": [\"2\"]}",
            "q",
        )
        .unwrap();
        let gallery = vec!["openmoji-1".to_string(), "openmoji-2".to_string()];
        let err = set.resolve(&gallery, "the test split").unwrap_err().to_string();
        assert!(err.contains("q:3: relevant id \"2\" is not in the test split (2 images)"), "{err}");
        assert!(err.contains("did you mean \"openmoji-2\""), "{err}");
        let set = QuerySet::parse("{\"query\": \"a\", \"relevant\": [\"openmoji-2\", \"openmoji-1\"]}", "q").unwrap();
        assert_eq!(set.resolve(&gallery, "x").unwrap(), vec![vec![1, 0]]);
    }
}
