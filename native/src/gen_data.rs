//! `native gen-data`: the built-in `shapes` data written out as PNG images and a JSONL file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ega_core::data::shapes::{ShapesConfig, ShapesDataset};
use ega_core::data::{Dataset, Split};

use crate::args::SplitParser;

#[derive(Args, Debug)]
pub struct GenDataArgs {
    /// The dataset to write (only the built-in `shapes` is generated).
    #[arg(default_value = "shapes")]
    pub dataset: String,
    /// Number of pairs.
    #[arg(long, default_value_t = 64)]
    pub count: usize,
    /// Split: train, test (held out) or unseen (attribute combinations never trained on).
    #[arg(long, default_value = "train", value_parser = SplitParser)]
    pub split: Split,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    /// Output folder (created; existing files with the same names are replaced).
    #[arg(long)]
    pub out: PathBuf,
}

/// `native gen-data`.
pub fn run(args: GenDataArgs) -> Result<()> {
    anyhow::ensure!(
        args.dataset == "shapes",
        "gen-data writes the built-in `shapes` data only (got {:?}); your own data is already on disk",
        args.dataset
    );
    anyhow::ensure!((8..=1024).contains(&args.size), "--size must be between 8 and 1024 pixels, got {}", args.size);
    let split = args.split;
    let data = ShapesDataset::new(ShapesConfig { image_size: args.size, ..ShapesConfig::default() });
    let available = data.len(split).unwrap_or(usize::MAX);
    anyhow::ensure!(
        args.count >= 1 && args.count <= available,
        "--count must be between 1 and {available} for the {split} split"
    );
    for folder in ["images", "negatives"] {
        std::fs::create_dir_all(args.out.join(folder))
            .with_context(|| format!("creating {}", args.out.join(folder).display()))?;
    }
    let mut pairs = String::new();
    let mut scenes = String::new();
    for index in 0..args.count {
        let sample = data.sample(split, index)?;
        let image = format!("images/{}.png", sample.id);
        sample.image.save(args.out.join(&image)).with_context(|| format!("writing {image}"))?;
        let mut negative_images = Vec::new();
        for (k, negative) in sample.negative_images.iter().enumerate() {
            let path = format!("negatives/{}-{k}.png", sample.id);
            negative.save(args.out.join(&path)).with_context(|| format!("writing {path}"))?;
            negative_images.push(path);
        }
        let line = serde_json::json!({"id": sample.id, "image": image, "text": sample.caption,
            "neg_text": sample.negative_captions, "neg_image": negative_images,
            "split": if split == Split::Train { "train" } else { "test" }});
        pairs.push_str(&format!("{line}\n"));
        let (scene, negatives) = data.scene_with_negatives(split, index)?;
        scenes.push_str(&format!("{}\n", serde_json::json!({"id": sample.id, "scene": scene, "negatives": negatives})));
    }
    ega_core::store::write_atomic(&args.out.join("data.jsonl"), pairs.as_bytes())?;
    ega_core::store::write_atomic(&args.out.join("scenes.jsonl"), scenes.as_bytes())?;
    println!(
        "wrote {} {split} pairs ({}×{} px, {} hard negatives each) to {}: data.jsonl, scenes.jsonl, images/, negatives/",
        args.count,
        args.size,
        args.size,
        ShapesConfig::default().negatives,
        args.out.display()
    );
    Ok(())
}
