use std::path::PathBuf;

use super::*;
use crate::data::shapes::{ShapesConfig, ShapesDataset};

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/shapes")
}

fn shapes_model(device: &Device) -> LoadedModel {
    load_model(&assets().join("model"), device).unwrap()
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ega-gallery-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Polls a future that is ready at once or after a few polls (flex reads back synchronously).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(value) = future.as_mut().poll(&mut context) {
            return value;
        }
    }
}

#[test]
fn a_bundle_loads_as_a_model_source_and_a_missing_one_is_named() {
    let device = Device::flex();
    let model = shapes_model(&device);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(assets().join("model/config.json")).unwrap()).unwrap();
    assert_eq!(model.bundle_id().unwrap(), config["model_id"].as_str().unwrap());
    assert_eq!(model.path, assets().join("model").display().to_string());
    assert!(model.notes.is_empty());
    let err = load_model(Path::new("/nonexistent/ega-model"), &device).err().unwrap().to_string();
    assert!(err.contains("/nonexistent/ega-model"), "{err}");
}

#[test]
fn search_through_the_gallery_equals_the_host_top_k() {
    let device = Device::flex();
    let index = Index::load(&assets().join("index")).unwrap();
    let mut gallery = Gallery::open(shapes_model(&device), index.clone(), &device).unwrap();
    assert_eq!((gallery.len(), gallery.dim()), (index.meta.count, index.meta.dim));
    assert!(!gallery.searches_on_device(), "flex has no WGSL top-k: the host loop ranks");

    let caption = index.meta.entries[3].caption.clone().unwrap();
    for k in [1, 5, index.meta.count + 7] {
        let query = gallery.embed_text(&caption).unwrap();
        let values = to_f32_vec(query.clone()).unwrap();
        let expected = search_host(&index.rows, index.meta.dim, &values, k);
        let pending = gallery.start_search(query.clone(), k).unwrap();
        assert!(!pending.on_device());
        let hits = gallery.finish_search(pending.read().unwrap());
        assert_eq!(hits, expected, "k = {k}");
        assert_eq!(hits.len(), k.min(index.meta.count));
        // The asynchronous read gives the same.
        let read = block_on(gallery.start_search(query, k).unwrap().read_async()).unwrap();
        assert_eq!(gallery.finish_search(read), expected, "k = {k}, read asynchronously");
    }
    // A row as its own query ranks itself first.
    let d = index.meta.dim;
    let row = floats(index.rows[11 * d..12 * d].to_vec(), [1, d], &device);
    let hits = gallery.search(row, 3).unwrap();
    assert_eq!(hits[0].row, 11);
    assert!((hits[0].score - 1.0).abs() < 1e-3, "{hits:?}");

    // Bad queries are errors, not panics.
    assert!(gallery.embed_text("  ").unwrap_err().to_string().contains("the query is empty"));
    let query = gallery.embed_text("a red circle").unwrap();
    assert!(matches!(gallery.start_search(query, 0), Err(EgaError::InvalidConfig { field: "k", .. })));
    let wrong = floats(vec![0.5; 2 * d], [2, d], &device);
    assert!(matches!(gallery.start_search(wrong, 3), Err(EgaError::Shape { .. })));
    assert_eq!(gallery.query_overflow("a red circle").unwrap(), None);
    let (tokens, room) = gallery.query_overflow(&"red ".repeat(2000)).unwrap().unwrap();
    assert!(tokens > room, "{tokens} vs {room}");

    // Another model's index is refused.
    let mut other = index;
    other.meta.model_id = "00000000000000aa".into();
    let err = Gallery::open(shapes_model(&device), other, &device).err().unwrap().to_string();
    assert!(err.contains("rebuild it with"), "{err}");
}

#[test]
fn adding_images_grows_the_gallery_and_they_are_searchable() {
    let device = Device::flex();
    let model = shapes_model(&device);
    let size = model.config.image_size() as u32;
    let dataset = ShapesDataset::new(ShapesConfig { image_size: size, ..ShapesConfig::default() });
    let mut gallery = Gallery::empty(model, "shapes", Some(Split::Test), StoredDtype::F32, &device).unwrap();
    assert!(gallery.is_empty());
    let folder = temp("add");
    std::fs::create_dir_all(&folder).unwrap();
    let options = AddOptions { split: Split::Test, count: Some(6), batch_size: 4, thumb_size: 16, skip_bad: false };
    let mut seen = Vec::new();
    let report =
        gallery.add_dataset(&dataset, &options, Some(&folder), &mut |done, total| seen.push((done, total))).unwrap();
    assert_eq!(report.added, 0..6);
    assert!(report.skipped.is_empty());
    assert_eq!(seen, [(4, 6), (6, 6)]);
    assert_eq!((gallery.len(), gallery.index().meta.count, gallery.index().rows.len()), (6, 6, 6 * gallery.dim()));
    for (row, entry) in gallery.index().meta.entries.iter().enumerate() {
        let sample = dataset.sample(Split::Test, row).unwrap();
        assert_eq!((&entry.id, entry.caption.as_ref()), (&sample.id, Some(&sample.caption)));
        let thumb = entry.thumbnail.as_ref().unwrap();
        assert_eq!(thumb, &format!("thumbs/{row:06}.png"));
        assert!(folder.join(thumb).is_file());
    }

    // One more image: a new row, ranked first for itself.
    let image = RgbImage::from_pixel(size, size, image::Rgb([250, 250, 250]));
    let entry = IndexEntry { id: "white.png".into(), caption: None, image: None, thumbnail: None };
    assert_eq!(gallery.add_images(&[&image], vec![entry.clone()]).unwrap(), 6..7);
    assert_eq!((gallery.len(), gallery.index().meta.count), (7, 7));
    assert_eq!(gallery.entry(6), Some(&entry));
    let query = gallery.embed_images(&[&image]).unwrap();
    assert_eq!(gallery.search(query, 1).unwrap()[0].row, 6);
    let err = gallery.add_rows(&[0.0; 3], vec![entry]).unwrap_err().to_string();
    assert!(err.contains("white.png") && err.contains("3 values"), "{err}");
    assert_eq!(gallery.len(), 7, "a refused row is not added");

    // The index saves and loads back as it is.
    gallery.index().save(&folder).unwrap();
    let back = Index::load(&folder).unwrap();
    assert_eq!((back.meta, back.rows), (gallery.index().meta.clone(), gallery.index().rows.clone()));
    let bad = AddOptions { thumb_size: MAX_THUMB_SIZE + 1, ..options };
    let err = gallery.add_dataset(&dataset, &bad, None, &mut |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("at most 1024"), "{err}");
    let _ = std::fs::remove_dir_all(&folder);
}

#[test]
fn a_folder_of_images_is_indexed_by_file_and_its_bad_files_are_skipped() {
    let device = Device::flex();
    let root = temp("folder");
    let (photos, out) = (root.join("photos"), root.join("index"));
    std::fs::create_dir_all(photos.join("nested")).unwrap();
    for (name, rgb) in [("b.png", [200, 30, 30]), ("a.png", [30, 200, 30]), ("nested/c.png", [30, 30, 200])] {
        RgbImage::from_pixel(20, 20, image::Rgb(rgb)).save(photos.join(name)).unwrap();
    }
    std::fs::write(photos.join("broken.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
    std::fs::write(photos.join("notes.txt"), "words").unwrap();
    let job = IndexJob {
        images: photos.to_str().unwrap(),
        options: AddOptions { split: Split::Test, count: None, batch_size: 2, thumb_size: 8, skip_bad: false },
        dtype: StoredDtype::F16,
    };
    let (gallery, report) = write_index(shapes_model(&device), &job, &out, &device, &mut |_, _| {}).unwrap();
    assert_eq!(report.added, 0..3);
    let skipped = report.skipped.join("\n");
    assert!(skipped.contains("broken.png") && skipped.contains("notes.txt"), "{skipped}");
    let index = Index::load(&out).unwrap();
    let ids: Vec<&str> = index.meta.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["a.png", "b.png", "nested/c.png"]);
    assert_eq!(index.meta.entries[2].image.as_deref(), Some(photos.join("nested/c.png").to_str().unwrap()));
    assert!(index.meta.entries.iter().all(|e| e.caption.is_none()));
    assert_eq!((index.meta.split, index.meta.dtype, index.meta.source.as_str()), (None, StoredDtype::F16, job.images));
    assert_eq!(std::fs::read_dir(out.join("thumbs")).unwrap().count(), 3);
    assert_eq!(index.meta.model_id, gallery.model_id());

    // A failed build (nothing readable) leaves the index folder as it was, and no staging.
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("x.png"), b"not a png").unwrap();
    let before = std::fs::read(out.join("index.json")).unwrap();
    let job = IndexJob { images: empty.to_str().unwrap(), ..job };
    let err = write_index(shapes_model(&device), &job, &out, &device, &mut |_, _| {}).err().unwrap().to_string();
    assert!(err.contains("no readable image") && err.contains("x.png"), "{err}");
    assert_eq!(std::fs::read(out.join("index.json")).unwrap(), before);
    let names: Vec<String> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    assert!(names.iter().all(|n| !n.starts_with(".index")), "{names:?}");
    // An --out holding something else is refused.
    assert!(check_index_out(&photos).unwrap_err().to_string().contains("is not an index folder"));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_dataset_s_bad_line_stops_the_index_with_a_hint_unless_skipped() {
    let root = temp("jsonl");
    std::fs::create_dir_all(&root).unwrap();
    RgbImage::from_pixel(8, 8, image::Rgb([220, 30, 30])).save(root.join("red.png")).unwrap();
    let pairs = root.join("pairs.jsonl");
    std::fs::write(&pairs, "{\"image\": \"red.png\", \"text\": \"red\"}\n{not json\n").unwrap();
    let spec = format!("jsonl:{}", pairs.display());
    let err = open_images(&spec, 32, false).err().unwrap();
    assert!(matches!(err, EgaError::Format { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("pairs.jsonl:2") && message.contains("--skip-bad"), "{message}");
    let dataset = open_images(&spec, 32, true).unwrap();
    assert_eq!(dataset.skipped().len(), 1);
    assert!(dataset.image_folder().is_none());
    assert!(open_images(root.to_str().unwrap(), 32, false).unwrap().image_folder().is_some());
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn f16_rows_keep_the_top_k_of_well_separated_rows() {
    let meta = IndexMeta {
        format_version: INDEX_FORMAT_VERSION,
        model_id: "00000000000000aa".into(),
        model: "m".into(),
        source: "s".into(),
        split: None,
        count: 3,
        dim: 2,
        dtype: StoredDtype::F32,
        entries: (0..3)
            .map(|i| IndexEntry { id: i.to_string(), caption: None, image: None, thumbnail: None })
            .collect(),
    };
    let index = Index { meta: meta.clone(), rows: vec![1.0, 0.0, 0.0, 1.0, 0.6, 0.8] };
    assert_eq!(f16_keeps_top_k(&index, 10), 3);
    // Two rows that differ below f16's precision: rounding ties them, and the order flips.
    let close = Index { meta, rows: vec![0.5, 0.0, 0.500_01, 0.0, 0.0, 1.0] };
    assert!(f16_keeps_top_k(&close, 1) < 3);
}
