//! Free-form queries (`ega_core::eval::freeform`): success@k on similarities whose answers are
//! worked out by hand, the evaluation wired end to end on a small gallery, and the committed
//! OpenMoji query set: it parses, is large enough, and every relevant id is in the test split.

use std::collections::HashSet;
use std::path::Path;

use burn::tensor::Device;
use ega_core::data::openmoji::OpenMojiDataset;
use ega_core::data::{Dataset, RgbImage, Sample, Split};
use ega_core::embed::{embed_captions, embed_images};
use ega_core::eval::freeform::{
    best_relevant_rank, evaluate_freeform, evaluate_freeform_against, success_at, Against, QuerySet,
};
use ega_core::model::{Embedder, ModelConfig};
use ega_core::tensor_util::to_f32_vec;
use ega_core::tokenizer::Tokenizer;

/// Five queries over a gallery of five, with their ranks worked out by hand:
///
/// | query | scores                      | relevant | best relevant | rank | why                           |
/// |-------|-----------------------------|----------|---------------|-----:|-------------------------------|
/// | 0     | 0.9 0.1 0.5 0.3 0.2         | {0}      | 0.9           | 0    | highest                       |
/// | 1     | 0.8 0.7 0.6 0.95 0.1        | {2, 3}   | 0.95 (item 3) | 0    | the better of two counts      |
/// | 2     | 0.5 0.9 0.8 0.1 0.7         | {3}      | 0.1           | 4    | last                          |
/// | 3     | 0.5 0.5 0.2 0.0 0.0         | {1}      | 0.5           | 1    | a tie with item 0 counts against |
/// | 4     | 0.7 0.7 0.1 0.9 0.0         | {0, 1}   | 0.7           | 1    | item 3 beats both; their own tie does not count |
///
/// success@1 = 2/5 (queries 0, 1); success@2 = 4/5; success@5 = 5/5.
#[test]
fn success_at_k_on_a_similarity_matrix_worked_out_by_hand() {
    let scores: [[f32; 5]; 5] = [
        [0.9, 0.1, 0.5, 0.3, 0.2],
        [0.8, 0.7, 0.6, 0.95, 0.1],
        [0.5, 0.9, 0.8, 0.1, 0.7],
        [0.5, 0.5, 0.2, 0.0, 0.0],
        [0.7, 0.7, 0.1, 0.9, 0.0],
    ];
    let relevant: [&[usize]; 5] = [&[0], &[2, 3], &[3], &[1], &[0, 1]];
    let ranks: Vec<usize> = scores.iter().zip(relevant).map(|(s, r)| best_relevant_rank(s, r)).collect();
    assert_eq!(ranks, vec![0, 0, 4, 1, 1]);
    assert_eq!(success_at(&ranks, 1), 0.4);
    assert_eq!(success_at(&ranks, 2), 0.8);
    assert_eq!(success_at(&ranks, 4), 0.8);
    assert_eq!(success_at(&ranks, 5), 1.0);
    assert_eq!(success_at(&ranks, 10), 1.0);
    // No relevant entry, or only NaN scores among them: never a success.
    assert_eq!(best_relevant_rank(&scores[0], &[]), 5);
    assert_eq!(best_relevant_rank(&[0.1, f32::NAN, 0.3], &[1]), 3);
    assert_eq!(best_relevant_rank(&[0.1, f32::NAN, 0.3], &[1, 0]), 1, "a NaN relevant score is ignored");
}

/// A fixed gallery of coloured squares in the test split, ids `sq-0` … (a JSONL file would need
/// image files).
struct Squares(Vec<RgbImage>);

impl Squares {
    fn new(count: usize) -> Self {
        Squares(
            (0..count)
                .map(|k| {
                    let colour = [(k * 53 % 256) as u8, (k * 97 % 256) as u8, (255 - k * 31 % 256) as u8];
                    RgbImage::from_fn(32, 32, |x, y| {
                        let inside = (4 + k as u32..28).contains(&x) && (8..24).contains(&y);
                        image::Rgb(if inside { colour } else { [255, 255, 255] })
                    })
                })
                .collect(),
        )
    }
}

/// The squares' captions, in the words of the test tokenizer's corpus.
const CAPTIONS: [&str; 7] = [
    "a red square",
    "a blue box",
    "something green",
    "any square at all",
    "a red box",
    "a blue square",
    "green square",
];

impl Dataset for Squares {
    fn name(&self) -> String {
        "squares".into()
    }
    fn len(&self, split: Split) -> Option<usize> {
        Some(if split == Split::Test { self.0.len() } else { 0 })
    }
    fn sample(&self, _split: Split, index: usize) -> ega_core::Result<Sample> {
        Ok(Sample {
            id: format!("sq-{index}"),
            image: self.0[index].clone(),
            caption: CAPTIONS[index % CAPTIONS.len()].to_string(),
            negative_captions: Vec::new(),
            negative_images: Vec::new(),
        })
    }
}

/// A dataset whose splits have no length (the trait allows it; free-form queries cannot use it).
struct Endless;

impl Dataset for Endless {
    fn name(&self) -> String {
        "endless".into()
    }
    fn len(&self, _split: Split) -> Option<usize> {
        None
    }
    fn sample(&self, _split: Split, _index: usize) -> ega_core::Result<Sample> {
        Err(ega_core::EgaError::Data("endless: no samples in this test".into()))
    }
}

/// The whole gallery is embedded whatever the batch size, each query with the query prompt, and
/// its rank is that of its best relevant image by cosine; an id outside the split is an error
/// naming the line; a gallery of unknown size is refused.
#[test]
fn freeform_evaluation_ranks_the_whole_gallery() {
    let device = Device::flex();
    let mut config = ModelConfig::tiny();
    let corpus: Vec<String> =
        ["a red square", "a blue box", "something green", "any square at all"].map(String::from).into();
    let tokenizer = Tokenizer::train(corpus.iter(), config.vocab_size()).unwrap();
    config.set_vocab_size(tokenizer.vocab_size());
    let model = Embedder::new(&config, 5, &device).unwrap();
    let gallery = Squares::new(7);
    let all: Vec<String> = (0..7).map(|k| format!("\"sq-{k}\"")).collect();
    let text = format!(
        "# three queries\n{{\"query\": \"a red square\", \"relevant\": [\"sq-2\"]}}\n\
         {{\"query\": \"any square at all\", \"relevant\": [{}]}}\n\
         {{\"query\": \"a blue box\", \"relevant\": [\"sq-6\", \"sq-1\"]}}\n",
        all.join(", ")
    );
    let set = QuerySet::parse(&text, "squares.jsonl").unwrap();
    let metrics = evaluate_freeform(&model, &config, &tokenizer, &gallery, Split::Test, &set, 64, &device).unwrap();
    assert_eq!((metrics.queries, metrics.gallery), (3, 7));
    assert_eq!(metrics.outcomes[1].rank, 0, "every image is relevant: always first");

    // The same ranks from embeddings computed here, in one batch as above.
    let images: Vec<_> = gallery.0.iter().collect();
    let image = to_f32_vec(embed_images(&model, &config, &tokenizer, &images, 64, &device).unwrap()).unwrap();
    let queries = ["a red square", "any square at all", "a blue box"];
    let query = to_f32_vec(embed_captions(&model, &config, &tokenizer, &queries, 64, &device).unwrap()).unwrap();
    let d = config.embed_dim();
    let relevant: [&[usize]; 3] = [&[2], &[0, 1, 2, 3, 4, 5, 6], &[6, 1]];
    for (q, outcome) in metrics.outcomes.iter().enumerate() {
        let scores: Vec<f32> = (0..7).map(|j| (0..d).map(|c| query[q * d + c] * image[j * d + c]).sum()).collect();
        assert!(scores.iter().all(|s| s.abs() <= 1.0 + 1e-4), "unit-norm embeddings give cosines: {scores:?}");
        let best = relevant[q].iter().map(|&r| scores[r]).fold(f32::MIN, f32::max);
        let expected = (0..7).filter(|j| !relevant[q].contains(j) && scores[*j] >= best).count();
        assert_eq!(outcome.rank, expected, "query {q}: {scores:?}");
        let top = (0..7).fold(0, |b, j| if scores[j] > scores[b] { j } else { b });
        assert_eq!(outcome.top, format!("sq-{top}"), "query {q}");
    }
    let ranks: Vec<usize> = metrics.outcomes.iter().map(|o| o.rank).collect();
    assert_eq!(metrics.success_at_1, success_at(&ranks, 1));
    assert_eq!(metrics.success_at_10, 1.0, "7 images: every query succeeds at 10");
    // Batches of 3: the gallery is loaded and embedded in three parts.
    let in_parts = evaluate_freeform(&model, &config, &tokenizer, &gallery, Split::Test, &set, 3, &device).unwrap();
    assert_eq!(in_parts.outcomes.iter().map(|o| o.rank).collect::<Vec<_>>(), ranks, "batch size changes nothing");

    let bad = QuerySet::parse("\n{\"query\": \"x\", \"relevant\": [\"sq-1\", \"sq-9\"]}", "bad.jsonl").unwrap();
    let err = evaluate_freeform(&model, &config, &tokenizer, &gallery, Split::Test, &bad, 4, &device).unwrap_err();
    assert!(
        err.to_string().contains("bad.jsonl:2: relevant id \"sq-9\" is not in the test split of squares (7 images)"),
        "{err}"
    );
    let err = evaluate_freeform(&model, &config, &tokenizer, &gallery, Split::Train, &set, 4, &device).unwrap_err();
    assert!(err.to_string().contains("the train split of squares is empty"), "{err}");
    let err = evaluate_freeform(&model, &config, &tokenizer, &Endless, Split::Test, &set, 4, &device).unwrap_err();
    assert!(err.to_string().contains("no fixed size"), "{err}");
}

/// Against captions, the queries rank the gallery's captions embedded with the query prompt (text
/// to text): a query that is an item's caption finds that item first, and every rank is the one
/// the caption embeddings computed here give.
#[test]
fn freeform_queries_can_rank_the_captions() {
    let device = Device::flex();
    let mut config = ModelConfig::tiny();
    let tokenizer = Tokenizer::train(CAPTIONS.iter(), config.vocab_size()).unwrap();
    config.set_vocab_size(tokenizer.vocab_size());
    let model = Embedder::new(&config, 9, &device).unwrap();
    let gallery = Squares::new(7);
    let mut text = String::new();
    for (k, caption) in CAPTIONS.iter().enumerate() {
        text.push_str(&format!("{{\"query\": \"{caption}\", \"relevant\": [\"sq-{k}\"]}}\n"));
    }
    text.push_str("{\"query\": \"a green box\", \"relevant\": [\"sq-2\", \"sq-6\"]}\n");
    let set = QuerySet::parse(&text, "captions.jsonl").unwrap();
    let metrics = evaluate_freeform_against(
        &model,
        &config,
        &tokenizer,
        &gallery,
        Split::Test,
        &set,
        Against::Captions,
        3,
        &device,
    )
    .unwrap();
    assert_eq!((metrics.queries, metrics.gallery), (8, 7));
    for (k, outcome) in metrics.outcomes.iter().take(7).enumerate() {
        assert_eq!((outcome.rank, outcome.top.as_str()), (0, format!("sq-{k}").as_str()), "{:?}", outcome.query);
    }
    let captions = to_f32_vec(embed_captions(&model, &config, &tokenizer, &CAPTIONS, 64, &device).unwrap()).unwrap();
    let query =
        to_f32_vec(embed_captions(&model, &config, &tokenizer, &["a green box"], 64, &device).unwrap()).unwrap();
    let d = config.embed_dim();
    let scores: Vec<f32> = (0..7).map(|j| (0..d).map(|c| query[c] * captions[j * d + c]).sum()).collect();
    let best = scores[2].max(scores[6]);
    let expected = (0..7).filter(|j| ![2, 6].contains(j) && scores[*j] >= best).count();
    assert_eq!(metrics.outcomes[7].rank, expected, "{scores:?}");
    // Against images the same queries rank the images: other scores (the image side is untrained).
    let images = evaluate_freeform(&model, &config, &tokenizer, &gallery, Split::Test, &set, 64, &device).unwrap();
    assert!(images.success_at_1 < 1.0, "a random model does not find every image first");
}

/// The committed query set (`tests/fixtures/openmoji_freeform.jsonl`): at least 60 hand-written
/// queries, none repeated; with the OpenMoji package present, every relevant id is an emoji of the
/// test split (the gallery `native eval --queries` searches) and the queries span many subgroups.
#[test]
fn openmoji_freeform_fixture_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/openmoji_freeform.jsonl");
    let set = QuerySet::load(&path).unwrap();
    assert!(set.queries.len() >= 60, "{} queries; the set promises at least 60", set.queries.len());
    let mut seen = HashSet::new();
    for (query, line) in set.queries.iter().zip(&set.lines) {
        assert!(seen.insert(query.query.to_lowercase()), "line {line}: {:?} is there twice", query.query);
    }
    let Some(dir) = ega_tests::openmoji_dir("openmoji_freeform_fixture_is_valid (relevant ids)") else {
        return;
    };
    let data = OpenMojiDataset::open(&dir, 32).unwrap();
    let test: Vec<_> = data.emoji().iter().filter(|e| e.split == Split::Test).collect();
    // Gallery ids as `Sample::id` spells them, in split order.
    let ids: Vec<String> = test.iter().map(|e| format!("openmoji-{}", e.hexcode)).collect();
    assert_eq!(data.sample(Split::Test, 0).unwrap().id, ids[0], "Sample::id is openmoji-<hexcode>");
    assert_eq!(ids.len(), data.len(Split::Test).unwrap());
    let rows = set.resolve(&ids, "the OpenMoji test split").unwrap();
    let subgroups: HashSet<&str> = rows.iter().flatten().map(|&r| test[r].subgroup.as_str()).collect();
    assert!(subgroups.len() >= 40, "the queries reach only {} subgroups", subgroups.len());
    let flags = rows.iter().filter(|r| r.iter().all(|&i| test[i].subgroup.contains("flag"))).count();
    assert!(flags * 20 <= set.queries.len(), "{flags} flag queries: keep flags sparing (at most 1 in 20)");
}
