//! Data, tokenizer and bad input: the JSONL loader's errors name the file and line, images are
//! refused before decoding when huge, the tokenizer round-trips and never emits special tokens
//! for user text.

use ega_core::data::jsonl::JsonlDataset;
use ega_core::data::shapes::{ShapesConfig, ShapesDataset};
use ega_core::data::{decode_image, image_tensor_data, Dataset, Split};
use ega_core::tokenizer::Tokenizer;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ega-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_pixel(width, height, image::Rgb([200, 30, 30]));
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    bytes
}

/// A PNG whose header claims `width × height` (the pixel data is not there): must be refused
/// from the header alone.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = png(1, 1);
    // IHDR data starts at byte 16: width and height, big-endian; fix the chunk's CRC after.
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn jsonl_reads_pairs_negatives_and_mmeb_names() {
    let dir = temp_dir("jsonl-ok");
    std::fs::create_dir_all(dir.join("img")).unwrap();
    std::fs::write(dir.join("img/a.png"), png(10, 8)).unwrap();
    std::fs::write(dir.join("img/b.png"), png(4, 4)).unwrap();
    let lines = [
        r#"{"image": "img/a.png", "text": "a red box", "neg_text": ["a blue box"], "neg_image": "img/b.png"}"#,
        "",
        r#"{"qry": "<|image_1|> a red thing", "qry_image_path": "img/b.png", "pos_text": ""}"#,
    ];
    std::fs::write(dir.join("pairs.jsonl"), lines.join("\n")).unwrap();
    let data = JsonlDataset::open(dir.join("pairs.jsonl"), false).unwrap();
    assert_eq!(data.len(Split::Train), Some(2));
    let first = data.sample(Split::Train, 0).unwrap();
    assert_eq!((first.caption.as_str(), first.image.dimensions()), ("a red box", (10, 8)));
    assert_eq!(first.negative_captions, vec!["a blue box".to_string()]);
    assert_eq!(first.negative_images.len(), 1);
    assert_eq!(data.sample(Split::Train, 1).unwrap().caption, "a red thing");
    assert!(data.sample(Split::Train, 2).unwrap_err().to_string().contains("has 2 pairs"));
}

/// Regression guard (issue 4): each kind of bad input is an error naming the file and line.
#[test]
fn jsonl_bad_input_is_a_clear_error() {
    let dir = temp_dir("jsonl-bad");
    std::fs::write(dir.join("ok.png"), png(3, 3)).unwrap();
    std::fs::write(dir.join("empty.png"), b"").unwrap();
    std::fs::write(dir.join("zero.png"), png_header_only(0, 5)).unwrap();
    std::fs::write(dir.join("huge.png"), png_header_only(50_000, 50_000)).unwrap();
    std::fs::write(dir.join("text.png"), b"this is not an image").unwrap();
    let cases: [(&str, &str); 8] = [
        (r#"{"image": "missing.png", "text": "x"}"#, "missing.png does not exist"),
        (r#"{"image": "ok.png", "text": "x""#, ":1: not valid JSON"),
        (r#"{"imgae": "ok.png", "text": "x"}"#, "unknown field \"imgae\""),
        (r#"{"image": 5, "text": "x"}"#, "\"image\" must be a string"),
        (r#"["ok.png", "x"]"#, "expected a JSON object"),
        (r#"{"image": "ok.png"}"#, "no text"),
        (r#"{"image": "ok.png", "text": "x", "split": "dev"}"#, "\"split\" must be"),
        ("", "no usable image–text pairs"),
    ];
    for (line, expected) in cases {
        let path = dir.join("bad.jsonl");
        std::fs::write(&path, format!("{line}\n")).unwrap();
        let err = JsonlDataset::open(&path, false).unwrap_err().to_string();
        assert!(err.contains(expected), "line {line:?}: error {err:?} lacks {expected:?}");
        if !line.is_empty() {
            assert!(err.contains("bad.jsonl:1"), "line {line:?}: error {err:?} does not name the file and line");
        }
    }
    // Images that exist but cannot be used fail when the sample is read, naming file, line and image.
    for (file, expected) in
        [("empty.png", "empty"), ("zero.png", "dimensions"), ("huge.png", "50000×50000"), ("text.png", "not an image")]
    {
        let path = dir.join("images.jsonl");
        std::fs::write(
            &path,
            format!("{{\"image\": \"ok.png\", \"text\": \"fine\"}}\n{{\"image\": \"{file}\", \"text\": \"x\"}}\n"),
        )
        .unwrap();
        let data = JsonlDataset::open(&path, false).unwrap();
        let err = data.sample(Split::Train, 1).unwrap_err().to_string();
        assert!(err.contains(expected) && err.contains("images.jsonl:2") && err.contains(file), "{file}: {err}");
    }
    // A caption that is not UTF-8 names its line (the other lines are fine).
    let path = dir.join("latin1.jsonl");
    let mut bytes = b"{\"image\": \"ok.png\", \"text\": \"fine\"}\n{\"image\": \"ok.png\", \"text\": \"caf".to_vec();
    bytes.extend([0xE9, b'"', b'}', b'\n']);
    std::fs::write(&path, bytes).unwrap();
    let err = JsonlDataset::open(&path, false).unwrap_err().to_string();
    assert!(err.contains("latin1.jsonl:2") && err.contains("UTF-8"), "{err}");
    assert_eq!(JsonlDataset::open(&path, true).unwrap().len(Split::Train), Some(1));
    // skip_bad counts instead of failing.
    let path = dir.join("mixed.jsonl");
    std::fs::write(
        &path,
        "{\"image\": \"ok.png\", \"text\": \"fine\"}\nnot json\n{\"image\": \"gone.png\", \"text\": \"x\"}\n",
    )
    .unwrap();
    assert!(JsonlDataset::open(&path, false).is_err());
    let data = JsonlDataset::open(&path, true).unwrap();
    assert_eq!((data.len(Split::Train), data.skipped.len()), (Some(1), 2));
    assert!(JsonlDataset::open(dir.join("nope.jsonl"), false).unwrap_err().to_string().contains("nope.jsonl"));
}

#[test]
fn huge_images_are_refused_before_decoding() {
    // 50 000 × 50 000 RGB would need 7.5 GB: the header alone must be enough to refuse it.
    let err = decode_image(&png_header_only(50_000, 50_000), "big.png").unwrap_err().to_string();
    assert!(err.contains("50000×50000") && err.contains("limit"), "{err}");
    let zero = decode_image(&png_header_only(0, 0), "zero.png").unwrap_err().to_string();
    assert!(zero.contains("zero.png") && (zero.contains("0×0") || zero.contains("dimensions")), "{zero}");
    let ok = decode_image(&png(7, 5), "ok.png").unwrap();
    assert_eq!(ok.dimensions(), (7, 5));
    let pixels = image_tensor_data(&ok, 4);
    assert_eq!(pixels.len(), 3 * 16);
    assert!((pixels[0] - 200.0 / 255.0).abs() < 0.02 && pixels[16] < 0.2, "channel-major layout, values in [0, 1]");
}

#[test]
fn tokenizer_round_trips_and_keeps_special_tokens_out_of_text() {
    let data = ShapesDataset::new(ShapesConfig { image_size: 32, ..ShapesConfig::default() });
    let corpus = ega_core::data::tokenizer_corpus(&data, 300).unwrap();
    let tokenizer = Tokenizer::train(corpus.iter(), 512).unwrap();
    assert!(tokenizer.vocab_size() <= 512 && tokenizer.vocab_size() > 260);
    let caption = data.sample(Split::Test, 3).unwrap().caption;
    let ids = tokenizer.encode(&caption).unwrap();
    assert!(!ids.is_empty() && ids.iter().all(|&id| id >= 4), "{ids:?}");
    assert_eq!(tokenizer.decode(&ids).unwrap().trim(), caption.to_lowercase());
    // Training on captions gives words their own tokens: a caption is a handful of ids.
    assert!(ids.len() <= caption.split_whitespace().count() + 2, "{caption:?} → {ids:?}");
    // A user typing a special token gets text, never the image placeholder.
    let sneaky = tokenizer.encode("a <image> and <eos> here").unwrap();
    assert!(sneaky.iter().all(|&id| id >= 4), "{sneaky:?}");
    // Anything encodes (byte level): emoji, other scripts.
    assert!(!tokenizer.encode("ein rotes Quadrat 🟥 赤い四角").unwrap().is_empty());
    // Save / load gives the same ids.
    let reloaded = Tokenizer::from_json(&tokenizer.to_json().unwrap()).unwrap();
    for text in &corpus[..50] {
        assert_eq!(reloaded.encode(text).unwrap(), tokenizer.encode(text).unwrap());
    }
    assert!(Tokenizer::from_json("{\"not\": \"a tokenizer\"}").is_err());
    assert!(Tokenizer::train(corpus.iter(), 100).unwrap_err().to_string().contains("vocab_size"));
}

#[test]
fn shapes_data_is_deterministic_with_controlled_negatives() {
    let data = ShapesDataset::new(ShapesConfig::default());
    let a = data.sample(Split::Train, 17).unwrap();
    let b = data.sample(Split::Train, 17).unwrap();
    assert_eq!((a.caption.clone(), a.image.as_raw().clone()), (b.caption, b.image.into_raw()));
    assert_eq!(a.negative_images.len(), 3);
    assert_eq!(a.negative_captions.len(), 3);
    assert!(a.negative_captions.iter().all(|c| c != &a.caption));
    assert_eq!(data.len(Split::Unseen), Some(1000));
    assert!(data.sample(Split::Test, 1_000).is_err());
}
