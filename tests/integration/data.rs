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

/// CRC-32 of PNG chunks (also used to write test PNGs in `data_sources`).
pub(crate) fn crc32(data: &[u8]) -> u32 {
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

mod openmoji {
    use super::temp_dir;
    use ega_core::data::openmoji::OpenMojiDataset;
    use ega_core::data::{Dataset, Split};
    use std::collections::HashSet;

    const HEADER: &str = "emoji,hexcode,group,subgroups,annotation,tags,openmoji_tags,openmoji_author,openmoji_date,skintone,skintone_combination,skintone_base_emoji,skintone_base_hexcode,unicode,order";

    fn svg(colour: &str) -> String {
        format!(
            r#"<svg viewBox="0 0 72 72" xmlns="http://www.w3.org/2000/svg"><circle cx="36" cy="36" r="30" fill="{colour}"/></svg>"#
        )
    }

    /// A small folder laid out like `scripts/setup-openmoji.sh` leaves it: one emoji with five
    /// skin tones and many same-subgroup emoji, so every split has members.
    fn mini(name: &str) -> std::path::PathBuf {
        let dir = temp_dir(name);
        std::fs::create_dir_all(dir.join("svg")).unwrap();
        let mut csv = format!("{HEADER}\n");
        csv += "x,1F44B,people-body,hand-fingers-open,waving hand,\"hand, wave, waving\",,,,,,,,1,1\n";
        std::fs::write(dir.join("svg/1F44B.svg"), svg("#FCEA2B")).unwrap();
        for (tone, colour) in ["#FADCBC", "#DEB892", "#C19A65", "#A57939", "#6A462F"].iter().enumerate() {
            let hex = format!("1F44B-1F3F{:X}", tone + 0xB);
            csv += &format!("x,{hex},people-body,hand-fingers-open,waving hand: tone {},\"hand, wave, waving\",,,,{},,x,1F44B,1,1\n", tone + 1, tone + 1);
            std::fs::write(dir.join(format!("svg/{hex}.svg")), svg(colour)).unwrap();
        }
        for k in 0..120 {
            let subgroup = format!("sub-{}", k % 30);
            csv += &format!("x,E{k:03X},objects,{subgroup},thing number {k},\"object, item {k}\",,,,,,,,1,1\n");
            std::fs::write(dir.join(format!("svg/E{k:03X}.svg")), svg(&format!("#{:02X}40{:02X}", k * 2, 255 - k * 2)))
                .unwrap();
        }
        std::fs::write(dir.join("openmoji.csv"), csv).unwrap();
        dir
    }

    /// Splits never share an emoji family (test) or a subgroup (unseen) with training; negatives
    /// come from the sample's own split, skin tones first, never with the sample's own caption.
    fn check_splits_and_negatives(data: &OpenMojiDataset) {
        let of = |split: Split| data.emoji().iter().filter(move |e| e.split == split);
        let train_bases: HashSet<_> = of(Split::Train).map(|e| e.base.clone()).collect();
        let train_subgroups: HashSet<_> = of(Split::Train).map(|e| e.subgroup.clone()).collect();
        assert!(of(Split::Test).all(|e| !train_bases.contains(&e.base)), "a test emoji's family is in train");
        assert!(of(Split::Unseen).all(|e| !train_subgroups.contains(&e.subgroup)), "an unseen subgroup is in train");
        for split in [Split::Train, Split::Test, Split::Unseen] {
            assert!(data.len(split).unwrap() > 0, "{split} is empty");
        }
        for (index, e) in data.emoji().iter().enumerate() {
            let negatives = data.negatives(index);
            assert!(negatives.len() <= ega_core::data::openmoji::MAX_NEGATIVES);
            for &n in &negatives {
                let other = &data.emoji()[n];
                assert_eq!(other.split, e.split, "{} gets a negative from another split", e.hexcode);
                assert_ne!(other.caption, e.caption);
            }
            let variants = data.emoji().iter().filter(|o| o.base == e.base && o.split == e.split).count();
            if variants > 1 {
                assert_eq!(data.emoji()[negatives[0]].base, e.base, "{}: skin tone first", e.hexcode);
            }
        }
    }

    #[test]
    fn openmoji_loader_on_a_small_folder() {
        let dir = mini("openmoji-mini");
        let data = OpenMojiDataset::open(&dir, 32).unwrap();
        assert_eq!(data.emoji().len(), 126);
        check_splits_and_negatives(&data);
        let wave = data.emoji().iter().position(|e| e.hexcode == "1F44B-1F3FF").unwrap();
        let split = data.emoji()[wave].split;
        let at = (0..data.len(split).unwrap())
            .find(|&i| data.sample(split, i).unwrap().id == "openmoji-1F44B-1F3FF")
            .unwrap();
        let sample = data.sample(split, at).unwrap();
        assert_eq!(sample.caption, "waving hand: tone 5 (wave)");
        assert_eq!(sample.image.dimensions(), (32, 32));
        assert_eq!(sample.image.get_pixel(16, 16).0, [0x6A, 0x46, 0x2F], "the SVG's fill at the centre");
        assert_eq!(sample.image.get_pixel(0, 0).0, [255, 255, 255], "white background");
        assert!(sample.negative_captions[0].starts_with("waving hand"), "{:?}", sample.negative_captions);
        assert_eq!(sample.negative_images.len(), sample.negative_captions.len());

        // Bad input: out of range, a missing SVG, a damaged CSV, no folder at all.
        let err = data.sample(Split::Train, 10_000).unwrap_err().to_string();
        assert!(err.contains("asked for number 10000"), "{err}");
        std::fs::remove_file(dir.join("svg/1F44B-1F3FF.svg")).unwrap();
        let fresh = OpenMojiDataset::open(&dir, 32).unwrap();
        let err = fresh.sample(split, at).unwrap_err().to_string();
        assert!(err.contains("1F44B-1F3FF.svg"), "{err}");
        std::fs::write(dir.join("openmoji.csv"), format!("{HEADER}\nx,1F600,smileys\n")).unwrap();
        let err = OpenMojiDataset::open(&dir, 32).err().unwrap().to_string();
        assert!(err.contains("openmoji.csv:2"), "{err}");
        let err = OpenMojiDataset::open(dir.join("nowhere"), 32).err().unwrap().to_string();
        assert!(err.contains("scripts/setup-openmoji.sh"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The real package, when `scripts/setup-openmoji.sh` has fetched it (CI does, and sets
    /// `REQUIRE_OPENMOJI=1` so this cannot skip there).
    #[test]
    fn openmoji_package_loads_with_its_splits_and_negatives() {
        let Some(dir) = ega_tests::openmoji_dir("openmoji_package_loads_with_its_splits_and_negatives") else {
            return;
        };
        let data = OpenMojiDataset::open(&dir, 32).unwrap();
        assert_eq!(data.emoji().len(), 4495);
        check_splits_and_negatives(&data);
        for split in [Split::Train, Split::Test, Split::Unseen] {
            let sample = data.sample(split, 0).unwrap();
            let colours: HashSet<_> = sample.image.pixels().map(|p| p.0).collect();
            assert!(colours.len() > 10, "{split} sample {} rasterised flat: {} colours", sample.id, colours.len());
            assert!(!sample.negative_images.is_empty(), "{} has no hard negative", sample.id);
        }
    }
}

/// Captions that exercise the tokenizer: the shapes vocabulary, case and width folding (NFKC +
/// lowercase), accents, emoji, CJK, digits, punctuation, whitespace runs and a would-be special token.
const TOKENIZATION_CAPTIONS: &[&str] = &[
    "a red circle left of a blue square",
    "Two GREEN triangles above a small yellow star",
    "ｆｕｌｌ-width ＡＢＣ and ligature ﬁne",
    "café naïve façade — déjà vu",
    "waving hand: dark skin tone 👋🏿 and 🐳",
    "東京の赤い丸",
    "   spaces\tand\nnewlines   ",
    "<image> is text when a user types it",
    "3 purple hexagons, 12 px; (x+y)/2 = 0.5!",
    "",
];

/// The tokenizer of `tests/fixtures/tokenization.json` gives natively the ids stored beside it;
/// `web/tests/tokenize.mjs` checks the wasm build gives the same ids (README's test command runs
/// both). `UPDATE_FIXTURES=1` rewrites the fixture (after a deliberate tokenizer change).
#[test]
fn tokenization_matches_the_fixture_shared_with_wasm() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tokenization.json");
    if std::env::var("UPDATE_FIXTURES").is_ok_and(|v| v == "1") {
        let mut corpus = ega_core::data::shapes::caption_vocabulary();
        corpus.extend(TOKENIZATION_CAPTIONS.iter().map(|s| s.to_string()));
        let tokenizer = Tokenizer::train(corpus.iter(), 400).unwrap();
        let ids: Vec<Vec<u32>> = TOKENIZATION_CAPTIONS.iter().map(|c| tokenizer.encode(c).unwrap()).collect();
        let fixture = serde_json::json!({"tokenizer": tokenizer.to_json().unwrap(), "captions": TOKENIZATION_CAPTIONS, "ids": ids});
        std::fs::write(&path, serde_json::to_string_pretty(&fixture).unwrap()).unwrap();
    }
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("{}: {err} (UPDATE_FIXTURES=1 writes it)", path.display())),
    )
    .unwrap();
    let captions: Vec<String> = serde_json::from_value(fixture["captions"].clone()).unwrap();
    assert_eq!(captions, TOKENIZATION_CAPTIONS, "the fixture's captions are stale: UPDATE_FIXTURES=1");
    let tokenizer = Tokenizer::from_json(fixture["tokenizer"].as_str().unwrap()).unwrap();
    let expected: Vec<Vec<u32>> = serde_json::from_value(fixture["ids"].clone()).unwrap();
    for (caption, ids) in captions.iter().zip(&expected) {
        assert_eq!(&tokenizer.encode(caption).unwrap(), ids, "{caption:?}");
    }
    assert!(expected.iter().filter(|ids| !ids.is_empty()).count() >= 9);
    assert!(expected[0].len() < "a red circle left of a blue square".len(), "BPE merged nothing");
}
