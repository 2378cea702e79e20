//! `native eval`: the flags; the evaluation itself is `train::eval` (beside the run folders it
//! reads).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use ega_core::data::Split;
use ega_core::device::DeviceChoice;
use ega_core::eval::freeform::Against;

use crate::args::{SplitParser, DEVICE_HELP};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A model bundle, a run folder written by `native train`, or one of its checkpoint folders.
    #[arg(long)]
    pub model: PathBuf,
    /// Data to evaluate on (default: the run's own data).
    #[arg(long)]
    pub data: Option<String>,
    /// Pairs per split.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    #[arg(long, default_value = "auto", help = DEVICE_HELP)]
    pub device: DeviceChoice,
    /// Also write the metrics as JSON to FILE (with --queries: a "freeform" entry, per query too).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also score free-form queries: FILE holds one {"query": "...", "relevant": ["id", ...]} a line
    /// (# lines are comments), ids as the data names its images (`openmoji-1F428`). A query succeeds
    /// at k when any relevant image is among the k nearest of the whole gallery; prints success@1
    /// and success@10. For OpenMoji: tests/fixtures/openmoji_freeform.jsonl.
    #[arg(long, value_name = "FILE")]
    pub queries: Option<PathBuf>,
    /// The split whose images are the gallery of --queries: train, test or unseen.
    #[arg(long, value_name = "SPLIT", default_value = "test", value_parser = SplitParser, requires = "queries")]
    pub queries_split: Split,
    /// What --queries rank: images (the gallery's images: text to image), or captions (the
    /// gallery's captions, embedded as queries are: text to text, what the text side alone
    /// understands of the queries).
    #[arg(long, value_name = "SIDE", default_value = "images", requires = "queries")]
    pub queries_against: Against,
}

/// `native eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    anyhow::ensure!(args.count >= 1, "--count must be at least 1");
    let queries = args.queries.as_deref().map(|file| (file, args.queries_split, args.queries_against));
    crate::train::eval(&args.model, args.data.as_deref(), args.count, args.device, args.json.as_deref(), queries)
}
