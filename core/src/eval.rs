//! Retrieval metrics: text→image and image→text recall@1/5/10 and MRR over a split, and
//! hard-negative accuracy: how often the positive outranks each of its controlled hard negatives.
//! [`freeform`]: success@1/@10 of hand-written queries against a split's whole gallery.

pub mod freeform;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Split};
use crate::embed::{embed_captions, embed_images};
use crate::model::{Embedder, ModelConfig};
use crate::tensor_util::to_f32_vec;
use crate::tokenizer::Tokenizer;
use crate::{EgaError, Result};

/// Retrieval quality on `count` pairs of one split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetrievalMetrics {
    /// Pairs evaluated (each caption ranks all `count` images and vice versa).
    pub count: usize,
    /// Text→image recall@1.
    pub t2i_r1: f64,
    /// Text→image recall@5.
    pub t2i_r5: f64,
    /// Text→image recall@10.
    pub t2i_r10: f64,
    /// Text→image mean reciprocal rank.
    pub t2i_mrr: f64,
    /// Image→text recall@1.
    pub i2t_r1: f64,
    /// Image→text recall@5.
    pub i2t_r5: f64,
    /// Image→text recall@10.
    pub i2t_r10: f64,
    /// Image→text mean reciprocal rank.
    pub i2t_mrr: f64,
    /// Fraction of (caption, negative image) pairs where the caption scores its own image higher.
    /// `None` when the data has no negative images.
    pub hard_negative_image_acc: Option<f64>,
    /// Fraction of (image, negative caption) pairs where the image scores its own caption higher.
    pub hard_negative_caption_acc: Option<f64>,
}

/// Rank (0-based) of `positive` in `scores`: how many entries score strictly higher, plus the
/// ties that come before it (ties count against the model).
fn rank_of(scores: &[f32], positive: usize) -> usize {
    let target = scores[positive];
    scores.iter().enumerate().filter(|&(j, &s)| j != positive && s >= target).count()
}

/// Recall@{1,5,10} and MRR from the ranks.
fn summarise(ranks: &[usize]) -> (f64, f64, f64, f64) {
    let n = ranks.len() as f64;
    let recall = |k: usize| ranks.iter().filter(|&&r| r < k).count() as f64 / n;
    let mrr = ranks.iter().map(|&r| 1.0 / (r + 1) as f64).sum::<f64>() / n;
    (recall(1), recall(5), recall(10), mrr)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Row `i` of a row-major `[_, d]` matrix.
fn row(matrix: &[f32], d: usize, i: usize) -> &[f32] {
    &matrix[i * d..(i + 1) * d]
}

/// Fraction of negatives `k` whose pair's positive score beats `anchor[owner[k]] · negative[k]`
/// (the anchor is the other side of the pair: its caption for a negative image, and vice versa).
fn positive_wins(positives: &[f32], anchors: &[f32], negatives: &[f32], owners: &[usize], d: usize) -> f64 {
    let wins = owners
        .iter()
        .enumerate()
        .filter(|&(k, &i)| positives[i] > dot(row(anchors, d, i), row(negatives, d, k)))
        .count();
    wins as f64 / owners.len() as f64
}

/// Text→image recall@1 and hard-negative image accuracy of `count` pairs from host embeddings
/// (`[count, d]` each, row-major): caption `i`'s positive is image `i`, its hard negative is
/// `negative` row `i`. (The browser lab's small held-out evaluation.)
pub fn recall1_and_hard_negative_acc(
    text: &[f32],
    image: &[f32],
    negative: &[f32],
    count: usize,
    d: usize,
) -> (f64, f64) {
    let t2i: Vec<usize> = (0..count)
        .map(|i| {
            let scores: Vec<f32> = (0..count).map(|j| dot(row(text, d, i), row(image, d, j))).collect();
            rank_of(&scores, i)
        })
        .collect();
    let positives: Vec<f32> = (0..count).map(|i| dot(row(text, d, i), row(image, d, i))).collect();
    let owners: Vec<usize> = (0..count).collect();
    (summarise(&t2i).0, positive_wins(&positives, text, negative, &owners, d))
}

/// Evaluates the first `count` pairs of `split` (all of them if the split is shorter).
pub fn evaluate(
    model: &Embedder,
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    dataset: &dyn Dataset,
    split: Split,
    count: usize,
    batch_size: usize,
    device: &Device,
) -> Result<RetrievalMetrics> {
    let available = dataset.len(split).unwrap_or(count);
    let count = count.min(available);
    if count == 0 {
        return Err(EgaError::Data(format!("{}: the {split} split is empty", dataset.name())));
    }
    let samples = (0..count).map(|i| dataset.sample(split, i)).collect::<Result<Vec<_>>>()?;
    let captions: Vec<&str> = samples.iter().map(|s| s.caption.as_str()).collect();
    let images: Vec<_> = samples.iter().map(|s| &s.image).collect();
    let d = config.embed_dim();
    let text = to_f32_vec(embed_captions(model, config, tokenizer, &captions, batch_size, device)?)?;
    let image = to_f32_vec(embed_images(model, config, tokenizer, &images, batch_size, device)?)?;
    // S[i][j] = caption i · image j
    let s: Vec<Vec<f32>> =
        (0..count).map(|i| (0..count).map(|j| dot(row(&text, d, i), row(&image, d, j))).collect()).collect();
    let t2i: Vec<usize> = (0..count).map(|i| rank_of(&s[i], i)).collect();
    let i2t: Vec<usize> = (0..count).map(|j| rank_of(&(0..count).map(|i| s[i][j]).collect::<Vec<_>>(), j)).collect();
    let (t2i_r1, t2i_r5, t2i_r10, t2i_mrr) = summarise(&t2i);
    let (i2t_r1, i2t_r5, i2t_r10, i2t_mrr) = summarise(&i2t);
    let positives: Vec<f32> = (0..count).map(|i| s[i][i]).collect();

    // Hard negatives: each negative image against its caption, each negative caption against its image.
    let (negative_images, image_owners): (Vec<_>, Vec<usize>) =
        samples.iter().enumerate().flat_map(|(i, s)| s.negative_images.iter().map(move |n| (n, i))).unzip();
    let hard_negative_image_acc = if negative_images.is_empty() {
        None
    } else {
        let embedded = to_f32_vec(embed_images(model, config, tokenizer, &negative_images, batch_size, device)?)?;
        Some(positive_wins(&positives, &text, &embedded, &image_owners, d))
    };
    let (negative_captions, caption_owners): (Vec<&str>, Vec<usize>) =
        samples.iter().enumerate().flat_map(|(i, s)| s.negative_captions.iter().map(move |n| (n.as_str(), i))).unzip();
    let hard_negative_caption_acc = if negative_captions.is_empty() {
        None
    } else {
        let embedded = to_f32_vec(embed_captions(model, config, tokenizer, &negative_captions, batch_size, device)?)?;
        Some(positive_wins(&positives, &image, &embedded, &caption_owners, d))
    };
    Ok(RetrievalMetrics {
        count,
        t2i_r1,
        t2i_r5,
        t2i_r10,
        t2i_mrr,
        i2t_r1,
        i2t_r5,
        i2t_r10,
        i2t_mrr,
        hard_negative_image_acc,
        hard_negative_caption_acc,
    })
}
