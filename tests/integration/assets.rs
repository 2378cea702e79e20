//! The committed demo bundles (`assets/<name>/`, written by `native export`) load, their index
//! belongs to their model, and the query recorded at export ranks its image first again.

use std::path::Path;

use ega_core::embed::embed_captions;
use ega_core::index::{search_host, Index};
use ega_core::tensor_util::to_f32_vec;

#[test]
fn committed_demo_bundles_answer_their_known_query() {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets");
    let device = burn::tensor::Device::flex();
    for name in ["shapes", "openmoji"] {
        let dir = assets.join(name);
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("export.json")).unwrap_or_else(|err| panic!("{name}/export.json: {err}")),
        )
        .unwrap();
        let bundle = ega_core::bundle::load(&dir.join("model"), &device).unwrap();
        let index = Index::load(&dir.join("index")).unwrap();
        index.check_model(&bundle.config.model_id, bundle.config.model.embed_dim(), name).unwrap();
        let known = &report["known_query"];
        let query = known["query"].as_str().unwrap_or_else(|| panic!("{name}: no known query in export.json"));
        let embedding = to_f32_vec(
            embed_captions(&bundle.model, &bundle.config.model, &bundle.tokenizer, &[query], 1, &device).unwrap(),
        )
        .unwrap();
        let hits = search_host(&index.rows, index.meta.dim, &embedding, 3);
        assert_eq!(index.meta.entries[hits[0].row].id, known["id"].as_str().unwrap(), "{name}: {query:?} → {hits:?}");
        let card = std::fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(card.contains("## How it was made") && card.contains(&bundle.config.model_id), "{name}: model card");
        if name == "openmoji" {
            assert!(
                card.contains("OpenMoji") && card.contains("CC BY-SA 4.0"),
                "the OpenMoji card must credit OpenMoji"
            );
        }
        let size: u64 = walk(&dir);
        assert!(size < 12_000_000, "{name} is {size} bytes: keep assets/ small");
    }
}

fn walk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| if e.path().is_dir() { walk(&e.path()) } else { e.metadata().map(|m| m.len()).unwrap_or(0) })
        .sum()
}
