//! Open Clip Art, Fluent UI emoji and `mix:` data: captions cleaned from hand-written file names
//! (no data needed), family-aware splits and same-split hard negatives on small hand-made folders
//! and on the real packages when set up (SKIPPED loudly without them; failing under
//! `REQUIRE_OPENCLIPART=1` / `REQUIRE_FLUENTUI=1`), and the mix's weights, determinism and errors.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use ega_core::data::fluentui::{self, FluentUiDataset};
use ega_core::data::mix::{self, MixDataset};
use ega_core::data::openclipart::{self, OpenClipartDataset};
use ega_core::data::openmoji::OpenMojiDataset;
use ega_core::data::{Dataset, Sample, Split};

use super::data::crc32;

const SPLITS: [Split; 3] = [Split::Train, Split::Test, Split::Unseen];

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ega-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The real package folder `data/NAME`, or `None` after printing SKIPPED (a panic instead under
/// `REQUIRE_<VAR>=1`, as CI sets it).
fn real_data(name: &str, marker: &str, var: &str, script: &str, test: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data").join(name);
    if dir.join(marker).exists() {
        return Some(dir);
    }
    if std::env::var(var).is_ok_and(|v| v == "1") {
        panic!("{var}=1 but {} is missing: run {script}", dir.join(marker).display());
    }
    eprintln!("\n*** SKIPPED {test}: {} missing ({script}) ***\n", dir.join(marker).display());
    None
}

// ---- Open Clip Art ----

#[test]
fn openclipart_captions_from_file_names_and_titles() {
    let caption = |path: &str, title: Option<&str>, author: Option<&str>, collection: bool| {
        openclipart::caption(path, title, author, collection)
    };
    let ok = |text: &str| Ok(text.to_string());
    // The title is the picture's own name: the file name is made from it (cut short, with the
    // author and a number after it).
    assert_eq!(
        caption(
            "people/rich_young_man_going_aw_01.png",
            Some("Rich Young Man, Going Away Sad"),
            Some("Galion GBC"),
            false
        ),
        ok("rich young man going away sad")
    );
    assert_eq!(
        caption("animals/fish/orca_matthew_gates_r.png", Some("Orca"), Some("Matthew Gates"), false),
        ok("orca")
    );
    assert_eq!(caption("food/fruit/orange.png", Some("Orange"), Some("Someone"), false), ok("orange"));
    // Or it holds the file name's first word (Gerald G.'s files end in his handle `ganson`).
    assert_eq!(
        caption(
            "food/desserts/cone1_bw_ganson.png",
            Some("Ice Cream Cone (1 Scoop) (B and W)"),
            Some("Gerald G."),
            false
        ),
        ok("ice cream cone scoop black and white")
    );
    assert_eq!(
        caption("animals/bugs/bee.png", Some("Clipart by Nicu Buculei - bee"), Some("Nicu Buculei"), false),
        ok("bee")
    );
    // Otherwise the file name, without the author and the fragment of it the cut left.
    assert_eq!(
        caption("office/telephone/cellular_phone_shandy_br_.png", None, Some("Shandy Brown"), false),
        ok("cellular phone")
    );
    assert_eq!(caption("people/handel_ganson.png", Some("Cartoon Bust"), Some("Gerald G."), false), ok("handel"));
    assert_eq!(
        caption("transportation/vehicles/aircraft_jarno_vasamaa4.png", Some("Aircraft5"), Some("Jarno Vasamaa"), false),
        ok("aircraft")
    );
    // A collection's title is never the caption.
    assert_eq!(
        caption(
            "signs_and_symbols/map_symbols/aiga_first_aid_.png",
            Some("AIGA_Symbol_Signs"),
            Some("Jean-Victor Balin"),
            true
        ),
        ok("aiga first aid")
    );
    assert_eq!(
        caption("shapes/stars/star_93pt37step.png", Some("gramastar"), Some("codifiedivining"), true),
        ok("star")
    );
    assert_eq!(
        caption(
            "shapes/jigsaw/jigsaw_blue_14.png",
            Some("Clipart by Nicu Buculei - jigsaw_red_10"),
            Some("Nicu Buculei"),
            true
        ),
        ok("jigsaw blue")
    );
    // Playing cards are decoded.
    assert_eq!(
        caption("recreation/games/cards/simple/simple_h_q.png", Some("card"), None, true),
        ok("queen of hearts playing card")
    );
    assert_eq!(
        caption("recreation/games/cards/bordered/bordered_s_10.png", Some("card"), None, true),
        ok("10 of spades playing card")
    );
    assert_eq!(
        caption("recreation/games/cards/white/white_jk_r.png", Some("card"), None, true),
        ok("red joker playing card")
    );
    // Left out, each with its reason.
    assert_eq!(caption("computer/icons/flat-theme/applications/kspread.png", None, None, false), Err("icon theme"));
    assert_eq!(
        caption(
            "animals/birds/cigno_di_notte_nella_pa_01.png",
            Some("Cigno di notte nella palude"),
            Some("Architetto Francesco Rollandin"),
            false
        ),
        Err("Italian title")
    );
    assert_eq!(
        caption(
            "signs_and_symbols/sortie_issue_de_secours_01.png",
            Some("sortie issue de secours 1"),
            Some("Yves Guillou"),
            false
        ),
        Err("non-English title")
    );
    assert_eq!(
        caption("computer/bb_cd_.png", Some("blueberry - iconset"), Some("Marko J. Kolehmainen"), true),
        Err("no descriptive words")
    );
    assert_eq!(
        caption("computer/icons/70a029.png", Some("gold-theme"), Some("Juliane Krug"), true),
        Err("no descriptive words")
    );
}

/// A PNG of `width × height` pixels, all `rgba`, with `Title` and `Author` text chunks.
fn titled_png(width: u32, height: u32, rgba: [u8; 4], title: &str, author: &str) -> Vec<u8> {
    let image = image::RgbaImage::from_pixel(width, height, image::Rgba(rgba));
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    let chunk = |key: &str, value: &str| {
        let data = [key.as_bytes(), b"\0", value.as_bytes()].concat();
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        let typed = [b"tEXt".as_slice(), &data].concat();
        out.extend(&typed);
        out.extend(crc32(&typed).to_be_bytes());
        out
    };
    // After the signature (8 bytes) and IHDR (25 bytes).
    let mut out = bytes[..33].to_vec();
    out.extend(chunk("Title", title));
    out.extend(chunk("Author", author));
    out.extend(&bytes[33..]);
    out
}

/// For items given as (name, family, split): a family never spans two splits, and each item's
/// hard negatives (at most `max`) come from its own split, with at least one whenever the split
/// holds another family.
fn check_family_splits(items: &[(&str, &str, Split)], negatives: impl Fn(usize) -> Vec<usize>, max: usize) {
    let mut family_split: HashMap<&str, Split> = HashMap::new();
    let mut split_families: HashMap<Split, HashSet<&str>> = HashMap::new();
    for &(_, family, split) in items {
        let first = *family_split.entry(family).or_insert(split);
        assert_eq!(first, split, "family {family:?} is in {first} and {split}");
        split_families.entry(split).or_default().insert(family);
    }
    for (index, &(name, _, split)) in items.iter().enumerate() {
        let negatives = negatives(index);
        assert!(negatives.len() <= max);
        assert!(split_families[&split].len() < 2 || !negatives.is_empty(), "{name} has no hard negative");
        for &n in &negatives {
            assert_eq!(items[n].2, split, "{name} gets a negative from another split");
        }
    }
}

/// Families never span two splits, no picture of an unseen category is outside `unseen`, and
/// hard negatives come from the same split, other families, one each.
fn check_openclipart(data: &OpenClipartDataset) {
    let items: Vec<_> = data.clipart().iter().map(|c| (c.path.as_str(), c.caption.as_str(), c.split)).collect();
    check_family_splits(&items, |i| data.negatives(i), openclipart::MAX_NEGATIVES);
    for c in data.clipart() {
        if openclipart::is_unseen_category(&c.category) {
            assert_eq!(c.split, Split::Unseen, "{} is in an unseen category but in {}", c.path, c.split);
        }
    }
    for split in SPLITS {
        assert!(data.len(split).unwrap() > 0, "{split} is empty");
    }
    for (index, c) in data.clipart().iter().enumerate() {
        let negatives = data.negatives(index);
        let families: HashSet<&str> = negatives.iter().map(|&n| data.clipart()[n].caption.as_str()).collect();
        assert_eq!(families.len(), negatives.len(), "{}: two negatives of one family", c.path);
        for &n in &negatives {
            assert_ne!(data.clipart()[n].caption, c.caption, "{} gets a negative of its own family", c.path);
        }
        // Same category first, when it has another family in this split.
        let neighbour =
            data.clipart().iter().any(|o| o.category == c.category && o.split == c.split && o.caption != c.caption);
        if neighbour {
            assert_eq!(data.clipart()[negatives[0]].category, c.category, "{}: same category first", c.path);
        }
    }
}

#[test]
fn openclipart_loader_on_a_small_folder() {
    let dir = temp_dir("openclipart-mini");
    let png = dir.join("png");
    // 30 categories under 3 top folders, 4 pictures each; "apple" by two artists in two categories.
    for k in 0..30 {
        let category = png.join(format!("top{}/cat{k:02}", k % 3));
        std::fs::create_dir_all(&category).unwrap();
        for j in 0..4 {
            let title = format!(
                "Thing {} {}",
                ["red", "green", "blue", "tall"][j],
                ["cup", "box", "hat", "car", "pen", "owl"][k % 6]
            );
            let file = format!("{}_ann_art_01.png", title.to_lowercase().replace(' ', "_"));
            std::fs::write(category.join(file), titled_png(6, 3, [200, 10, 10, 255], &title, "Ann Art")).unwrap();
        }
    }
    std::fs::write(png.join("top0/cat00/apple_ann_art_01.png"), titled_png(4, 4, [0, 0, 0, 0], "Apple", "Ann Art"))
        .unwrap();
    std::fs::write(png.join("top1/cat01/apple_bo_b_01.png"), titled_png(4, 4, [0, 200, 0, 255], "apple", "Bo B"))
        .unwrap();
    // A symlinked copy (skipped) and an icon theme (dropped).
    #[cfg(unix)]
    std::os::unix::fs::symlink("../cat00/apple_ann_art_01.png", png.join("top0/cat03/apple_ann_art_01.png")).unwrap();
    std::fs::create_dir_all(png.join("computer/flat-theme")).unwrap();
    std::fs::write(png.join("computer/flat-theme/kspread.png"), titled_png(2, 2, [1, 2, 3, 255], "Flat", "X")).unwrap();

    let data = OpenClipartDataset::open(&dir, 8).unwrap();
    assert_eq!(data.clipart().len(), 30 * 4 + 2, "the symlink and the icon theme are not pictures");
    assert_eq!(data.dropped().get("icon theme"), Some(&1));
    check_openclipart(&data);
    let apples: Vec<_> = data.clipart().iter().filter(|c| c.caption == "apple").collect();
    assert_eq!(apples.len(), 2);
    // A transparent picture is white; a 6 × 3 one is fitted (aspect kept) and centred on white.
    let transparent = data.clipart().iter().position(|c| c.path == "top0/cat00/apple_ann_art_01.png").unwrap();
    assert!(data.image(transparent).unwrap().pixels().all(|p| p.0 == [255, 255, 255]));
    // A drawing small on its page is cut out before fitting.
    let mut page = image::RgbaImage::new(40, 40);
    for (x, y) in [(30, 4), (37, 4), (30, 7), (37, 7)] {
        page.put_pixel(x, y, image::Rgba([0, 0, 250, 255]));
    }
    let mut bytes = Vec::new();
    page.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    let cut = openclipart::crop_to_drawing(&ega_core::data::decode_image_on_white(&bytes, "page.png").unwrap());
    assert_eq!(cut.dimensions(), (8, 4));
    let wide = data.clipart().iter().position(|c| c.path.starts_with("top0/cat00/thing_red")).unwrap();
    let image = data.image(wide).unwrap();
    assert_eq!(image.dimensions(), (8, 8));
    assert_eq!(image.get_pixel(4, 4).0, [200, 10, 10]);
    assert_eq!(image.get_pixel(4, 0).0, [255, 255, 255], "letterboxed on white");
    let split = data.clipart()[wide].split;
    let at = (0..data.len(split).unwrap())
        .find(|&i| data.sample(split, i).unwrap().id == "openclipart-top0/cat00/thing_red_cup_ann_art_01")
        .unwrap();
    let sample = data.sample(split, at).unwrap();
    assert_eq!(sample.caption, "thing red cup");
    assert_eq!(sample.negative_images.len(), sample.negative_captions.len());
    assert!(!sample.negative_captions.is_empty());

    let err = data.sample(Split::Train, 10_000).unwrap_err().to_string();
    assert!(err.contains("asked for number 10000"), "{err}");
    let err = OpenClipartDataset::open(dir.join("nowhere"), 8).err().unwrap().to_string();
    assert!(err.contains("scripts/setup-openclipart.sh"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The real package, when `scripts/setup-openclipart.sh` has fetched it.
#[test]
fn openclipart_package_loads_with_family_splits_and_negatives() {
    let Some(dir) = real_data(
        "openclipart",
        "png",
        "REQUIRE_OPENCLIPART",
        "scripts/setup-openclipart.sh",
        "openclipart_package_loads…",
    ) else {
        return;
    };
    let data = OpenClipartDataset::open(&dir, 32).unwrap();
    let counts: Vec<String> = SPLITS.iter().map(|&s| format!("{s} {}", data.len(s).unwrap())).collect();
    let families: HashSet<&str> = data.clipart().iter().map(|c| c.caption.as_str()).collect();
    eprintln!(
        "openclipart: {} pictures, {} families ({}); left out {:?}",
        data.clipart().len(),
        families.len(),
        counts.join(", "),
        data.dropped()
    );
    let every = data.clipart().len() / 16;
    let examples: Vec<String> =
        data.clipart().iter().step_by(every.max(1)).map(|c| format!("{} ← {}", c.caption, c.path)).collect();
    eprintln!("openclipart captions, every {every}th:\n  {}", examples.join("\n  "));
    let dropped: usize = data.dropped().values().sum();
    assert_eq!(data.clipart().len() + dropped, 6900, "every regular PNG is kept or counted as dropped");
    assert!(data.clipart().len() > 3000, "only {} pictures kept", data.clipart().len());
    check_openclipart(&data);
    for split in SPLITS {
        let sample = data.sample(split, 0).unwrap();
        let colours: HashSet<_> = sample.image.pixels().map(|p| p.0).collect();
        assert!(colours.len() > 2, "{split} sample {} is flat: {} colours", sample.id, colours.len());
        assert!(!sample.negative_images.is_empty(), "{} has no hard negative", sample.id);
    }
}

// ---- Fluent UI emoji ----

#[test]
fn fluentui_captions_and_families_from_file_names() {
    let mut names: Vec<String> =
        ["airplane-arrival", "horizontal-traffic-light", "1st-place-medal", "red-circle"].map(String::from).to_vec();
    names.extend(fluentui::SKIN_TONES.iter().map(|tone| format!("man-dancing-{tone}")));
    let emoji = fluentui::emoji_from_names(&names);
    let by_name: HashMap<&str, &fluentui::FluentEmoji> = emoji.iter().map(|e| (e.name.as_str(), e)).collect();
    assert_eq!(by_name["airplane-arrival"].caption, "airplane arrival");
    assert_eq!(by_name["1st-place-medal"].caption, "1st place medal");
    // `-light` is a skin tone only when the name has a `-default` too.
    let light = by_name["horizontal-traffic-light"];
    assert_eq!((light.family.as_str(), light.tone.as_deref()), ("horizontal-traffic-light", None));
    assert_eq!(light.caption, "horizontal traffic light");
    assert_eq!(by_name["man-dancing-default"].caption, "man dancing");
    assert_eq!(by_name["man-dancing-medium-dark"].caption, "man dancing: medium-dark skin tone");
    assert_eq!(by_name["man-dancing-dark"].caption, "man dancing: dark skin tone");
    let dancers: Vec<_> = emoji.iter().filter(|e| e.family == "man-dancing").collect();
    assert_eq!(dancers.len(), 6);
    assert!(dancers.iter().all(|e| e.split == dancers[0].split), "one family, one split");
}

fn svg(colour: &str) -> String {
    format!(
        r#"<svg viewBox="0 0 32 32" xmlns="http://www.w3.org/2000/svg"><circle cx="16" cy="16" r="14" fill="{colour}"/></svg>"#
    )
}

/// Families share a split; negatives come from the same split, another tone of the same emoji first.
fn check_fluentui(data: &FluentUiDataset) {
    let items: Vec<_> = data.emoji().iter().map(|e| (e.name.as_str(), e.family.as_str(), e.split)).collect();
    check_family_splits(&items, |i| data.negatives(i), fluentui::MAX_NEGATIVES);
    assert!(data.len(Split::Train).unwrap() > 0 && data.len(Split::Test).unwrap() > 0);
    assert_eq!(data.len(Split::Unseen), Some(0), "the package has no groups to hold out");
    for (index, e) in data.emoji().iter().enumerate() {
        let negatives = data.negatives(index);
        for &n in &negatives {
            assert_ne!(data.emoji()[n].caption, e.caption);
        }
        if e.tone.is_some() {
            assert_eq!(data.emoji()[negatives[0]].family, e.family, "{}: another skin tone first", e.name);
        }
    }
}

#[test]
fn fluentui_loader_on_a_small_folder() {
    let dir = temp_dir("fluentui-mini");
    let modern = dir.join("modern");
    std::fs::create_dir_all(&modern).unwrap();
    const TONES: [&str; 6] = ["default", "light", "medium-light", "medium", "medium-dark", "dark"];
    for (k, colour) in ["#FFD700", "#FADCBC", "#E0BB95", "#BF8F68", "#9B643D", "#594539"].iter().enumerate() {
        std::fs::write(modern.join(format!("waving-hand-{}.svg", TONES[k])), svg(colour)).unwrap();
    }
    for k in 0..40 {
        let name = format!(
            "{}-{}",
            ["red", "blue", "green", "big", "small"][k % 5],
            ["circle", "square", "hand", "star"][k / 10]
        );
        std::fs::write(modern.join(format!("{name}.svg")), svg(&format!("#{:02X}3050", k * 6))).unwrap();
    }
    std::fs::write(modern.join("notes.txt"), "not an emoji").unwrap();
    let data = FluentUiDataset::open(&dir, 16).unwrap();
    assert_eq!(data.emoji().len(), 6 + 20, "duplicate names collapse: 5 colours × 4 shapes");
    check_fluentui(&data);
    let dark = data.emoji().iter().position(|e| e.name == "waving-hand-dark").unwrap();
    let split = data.emoji()[dark].split;
    let at = (0..data.len(split).unwrap())
        .find(|&i| data.sample(split, i).unwrap().id == "fluentui-waving-hand-dark")
        .unwrap();
    let sample = data.sample(split, at).unwrap();
    assert_eq!(sample.caption, "waving hand: dark skin tone");
    assert_eq!(sample.image.dimensions(), (16, 16));
    assert_eq!(sample.image.get_pixel(8, 8).0, [0x59, 0x45, 0x39]);
    assert_eq!(sample.image.get_pixel(0, 0).0, [255, 255, 255]);
    assert!(sample.negative_captions[0].starts_with("waving hand"), "{:?}", sample.negative_captions);
    // Same head word (`hand`), same tone when the other emoji has tones: here the `-hand`s have none.
    let red = data.emoji().iter().position(|e| e.name == "red-circle").unwrap();
    let kin: Vec<&str> = data.negatives(red).iter().map(|&n| data.emoji()[n].family.as_str()).collect();
    assert!(kin.iter().all(|f| f.ends_with("-circle") || f.starts_with("red-")), "{kin:?}");

    let err = FluentUiDataset::open(dir.join("nowhere"), 16).err().unwrap().to_string();
    assert!(err.contains("scripts/setup-fluentui.sh"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The real package, when `scripts/setup-fluentui.sh` has fetched it.
#[test]
fn fluentui_package_loads_with_family_splits_and_negatives() {
    let Some(dir) =
        real_data("fluentui", "modern", "REQUIRE_FLUENTUI", "scripts/setup-fluentui.sh", "fluentui_package_loads…")
    else {
        return;
    };
    let data = FluentUiDataset::open(&dir, 32).unwrap();
    let families: HashSet<&str> = data.emoji().iter().map(|e| e.family.as_str()).collect();
    let toned = data.emoji().iter().filter(|e| e.tone.is_some()).count();
    eprintln!(
        "fluentui: {} emoji, {} families, {toned} in skin-tone families; train {}, test {}, unseen {}",
        data.emoji().len(),
        families.len(),
        data.len(Split::Train).unwrap(),
        data.len(Split::Test).unwrap(),
        data.len(Split::Unseen).unwrap()
    );
    assert_eq!(data.emoji().len(), 3145);
    // 310 emoji in six tones; the package's high-contrast style has one file per family: 1 595.
    assert_eq!((families.len(), toned), (1595, 310 * 6));
    check_fluentui(&data);
    for split in [Split::Train, Split::Test] {
        let sample = data.sample(split, 0).unwrap();
        let colours: HashSet<_> = sample.image.pixels().map(|p| p.0).collect();
        assert!(colours.len() > 10, "{split} sample {} rasterised flat: {} colours", sample.id, colours.len());
        assert!(!sample.negative_images.is_empty(), "{} has no hard negative", sample.id);
    }
}

// ---- mix: ----

/// A dataset of `lens` pairs per split whose captions say where they came from.
struct Numbered {
    name: &'static str,
    lens: [usize; 3],
}

impl Dataset for Numbered {
    fn name(&self) -> String {
        self.name.to_string()
    }

    fn len(&self, split: Split) -> Option<usize> {
        Some(self.lens[SPLITS.iter().position(|&s| s == split).unwrap()])
    }

    fn sample(&self, split: Split, index: usize) -> ega_core::Result<Sample> {
        assert!(index < self.len(split).unwrap(), "{} {split}: index {index} out of range", self.name);
        Ok(Sample {
            id: format!("{split}-{index}"),
            image: image::RgbImage::new(1, 1),
            caption: format!("{} {split} {index}", self.name),
            negative_captions: vec![],
            negative_images: vec![],
        })
    }
}

fn numbered_mix(weights: [f64; 3]) -> MixDataset {
    let sources: Vec<(String, f64, Box<dyn Dataset>)> = vec![
        ("big".into(), weights[0], Box::new(Numbered { name: "big", lens: [700, 30, 5] })),
        ("mid".into(), weights[1], Box::new(Numbered { name: "mid", lens: [90, 0, 7] })),
        ("tiny".into(), weights[2], Box::new(Numbered { name: "tiny", lens: [13, 4, 0] })),
    ];
    MixDataset::new("mix:big=5,mid=3,tiny=2", sources).unwrap()
}

#[test]
fn mix_honours_weights_deterministically_and_covers_every_source() {
    let data = numbered_mix([5.0, 3.0, 2.0]);
    assert_eq!(data.weights(), [0.5, 0.3, 0.2]);
    // len(Train): whole periods until the slowest source (big: 700 pairs, 500 slots a period) is
    // covered: 2 periods.
    let len = data.len(Split::Train).unwrap();
    assert_eq!(len, 2 * mix::PERIOD);
    let mut counts = [0usize; 3];
    let mut seen: Vec<HashSet<usize>> = vec![HashSet::new(); 3];
    for index in 0..len {
        let (source, within) = data.locate(Split::Train, index).unwrap();
        counts[source] += 1;
        seen[source].insert(within);
    }
    for (k, expected) in [0.5, 0.3, 0.2].iter().enumerate() {
        let share = counts[k] as f64 / len as f64;
        assert!((share - expected).abs() < 0.005, "source {k}: share {share}, weight {expected}");
    }
    assert_eq!(seen.iter().map(HashSet::len).collect::<Vec<_>>(), vec![700, 90, 13], "every pair of every source");
    // Any window of 100 consecutive indices is close to the weights too (interleaved, not blocks).
    for start in (0..len - 100).step_by(37) {
        let big = (start..start + 100).filter(|&i| data.locate(Split::Train, i).unwrap().0 == 0).count();
        assert!((45..=55).contains(&big), "indices {start}..+100 hold {big} of the 50% source");
    }
    // The same index is always the same pair; ids are prefixed by the source.
    let a = data.sample(Split::Train, 1234).unwrap();
    let b = numbered_mix([5.0, 3.0, 2.0]).sample(Split::Train, 1234).unwrap();
    assert_eq!((&a.id, &a.caption), (&b.id, &b.caption));
    assert!(a.id.starts_with(&format!("{}/train-", a.caption.split(' ').next().unwrap())), "{}", a.id);
    assert!(data.sample(Split::Train, len).unwrap_err().to_string().contains("asked for number"));
    // Held-out splits hold every pair of the sources' own once, interleaved by size: the first
    // half holds half of each source.
    assert_eq!((data.len(Split::Test), data.len(Split::Unseen)), (Some(34), Some(12)));
    let test: Vec<String> = (0..34).map(|i| data.sample(Split::Test, i).unwrap().id).collect();
    assert_eq!(test.iter().collect::<HashSet<_>>().len(), 34, "each test pair once");
    assert_eq!((test[0].as_str(), test[4].as_str()), ("big/test-0", "tiny/test-0"));
    assert_eq!(test[..17].iter().filter(|id| id.starts_with("tiny/")).count(), 2, "{test:?}");
    let unseen: HashSet<String> = (0..12).map(|i| data.sample(Split::Unseen, i).unwrap().id).collect();
    assert_eq!(unseen.len(), 12);
    assert!(data.sample(Split::Test, 34).unwrap_err().to_string().contains("has 34 pairs"));
    // A small source with a big weight repeats rather than stretching the epoch.
    let tiny_heavy = numbered_mix([1.0, 1.0, 98.0]);
    assert_eq!(tiny_heavy.slots(), [10, 10, 980]);
    assert_eq!(tiny_heavy.len(Split::Train), Some(70 * mix::PERIOD), "big needs 70 periods of 10 slots");
}

#[test]
fn mix_specs_open_real_sources_and_name_their_errors() {
    let dir = temp_dir("mix");
    let image = image::RgbImage::from_pixel(4, 4, image::Rgb([9, 9, 9]));
    image.save(dir.join("a.png")).unwrap();
    let jsonl = dir.join("pairs.jsonl");
    std::fs::write(&jsonl, "{\"image\": \"a.png\", \"text\": \"a dark square\"}\n").unwrap();
    let spec = format!("mix:shapes=3,jsonl:{}=1", jsonl.display());
    let data = ega_core::data::open(&spec, 16, false).unwrap();
    assert_eq!(data.name(), spec);
    let ids: Vec<String> = (0..8).map(|i| data.sample(Split::Train, i).unwrap().id).collect();
    assert_eq!(ids.iter().filter(|id| id.starts_with("shapes/shapes-train-")).count(), 6, "{ids:?}");
    assert!(ids.iter().any(|id| id.starts_with(&format!("jsonl:{}/", jsonl.display()))), "{ids:?}");
    let equal = ega_core::data::open(&format!("mix:shapes,jsonl:{}", jsonl.display()), 16, false).unwrap();
    assert_eq!(equal.len(Split::Test), data.len(Split::Test));

    for (spec, expected) in [
        ("mix:", "lists no sources"),
        ("mix:shapes,,fluentui", "source 2 of the mix is empty"),
        ("mix:shapes=abc", "the weight of `shapes` is `abc`, not a number"),
        ("mix:shapes=-1", "weights must be positive"),
        ("mix:shapes=0", "weights must be positive"),
        ("mix:shapes=inf", "weights must be positive"),
        ("mix:=2", "has a weight but no name"),
        ("mix:shapes=1,openmoji", "give every source a weight, or none"),
        ("mix:shapes,shapes", "`shapes` is listed twice"),
        ("mix:mix:shapes", "cannot contain another mix"),
        ("mix:shapes,nosuch", "source `nosuch` of the mix"),
        ("mix:shapes,openclipart:/nowhere", "scripts/setup-openclipart.sh"),
    ] {
        let err = ega_core::data::open(spec, 16, false).err().unwrap_or_else(|| panic!("{spec} opened")).to_string();
        assert!(err.contains(expected), "{spec}: {err:?} lacks {expected:?}");
        assert!(err.contains(spec), "{spec}: {err:?} does not name the spec");
    }
    // A weight typo is reported before any source is opened (no set-up needed to see it).
    let err = ega_core::data::open("mix:openclipart:/nowhere=x", 16, false).err().unwrap().to_string();
    assert!(err.contains("not a number"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's mix of the three real sources, when all are set up.
#[test]
fn mix_of_the_real_sources_has_the_weights_and_every_pair() {
    let sources = [
        ("openmoji", "openmoji.csv", "REQUIRE_OPENMOJI", "scripts/setup-openmoji.sh"),
        ("fluentui", "modern", "REQUIRE_FLUENTUI", "scripts/setup-fluentui.sh"),
        ("openclipart", "png", "REQUIRE_OPENCLIPART", "scripts/setup-openclipart.sh"),
    ];
    let mut dirs = Vec::new();
    for (name, marker, var, script) in sources {
        match real_data(name, marker, var, script, "mix_of_the_real_sources…") {
            Some(dir) => dirs.push(dir),
            None => return,
        }
    }
    let spec = format!(
        "mix:openmoji:{}=0.5,fluentui:{}=0.3,openclipart:{}=0.2",
        dirs[0].display(),
        dirs[1].display(),
        dirs[2].display()
    );
    let data = MixDataset::open(&spec, 32, false).unwrap();
    let len = data.len(Split::Train).unwrap();
    eprintln!(
        "{spec}: train {len}, test {}, unseen {}",
        data.len(Split::Test).unwrap(),
        data.len(Split::Unseen).unwrap()
    );
    // openclipart's 2 842 training pictures at 200 slots a period need 15 periods.
    assert_eq!(len, 15 * mix::PERIOD);
    let mut counts = [0usize; 3];
    let mut seen: Vec<HashSet<usize>> = vec![HashSet::new(); 3];
    for index in 0..len {
        let (source, within) = data.locate(Split::Train, index).unwrap();
        counts[source] += 1;
        seen[source].insert(within);
    }
    assert_eq!(counts, [7500, 4500, 3000]);
    assert_eq!(seen.iter().map(HashSet::len).collect::<Vec<_>>(), vec![3699, 2860, 2842], "every training pair");
    let sample = data.sample(Split::Train, 1).unwrap();
    assert!(sample.id.starts_with("fluentui:") && sample.id.contains("/fluentui-"), "{}", sample.id);
}

// ---- Text pairs (the text stage) ----

/// WordNet's synsets (`scripts/setup-wordnet.sh`) become definition → words pairs, and OpenMoji's
/// keywords → annotation pairs come from its training split only: no test or unseen emoji's
/// name is a target (the free-form set and the test metrics are on those splits).
#[test]
fn text_pairs_from_wordnet_and_the_openmoji_training_split() {
    use ega_core::data::text_pairs::TextPairs;
    let test = "text_pairs_from_wordnet_and_the_openmoji_training_split";
    let Some(wordnet) = real_data("wordnet", "pairs.tsv", "REQUIRE_WORDNET", "scripts/setup-wordnet.sh", test) else {
        return;
    };
    let Some(openmoji) = ega_tests::openmoji_dir(test) else { return };
    let words = TextPairs::open(&format!("wordnet:{}", wordnet.display())).unwrap();
    assert!(words.len() > 100_000, "{} WordNet pairs", words.len());
    let koala = (0..words.len())
        .map(|i| words.pair(i).unwrap())
        .find(|(query, _)| query.starts_with("sluggish tailless Australian"))
        .expect("the koala's synset");
    assert!(koala.1.starts_with("koala, koala bear"), "{koala:?}");

    let data = OpenMojiDataset::open(&openmoji, 16).unwrap();
    let name = |e: &ega_core::data::openmoji::Emoji| {
        e.annotation.replace(['-', '_'], " ").split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let train: HashSet<String> = data.emoji().iter().filter(|e| e.split == Split::Train).map(name).collect();
    let held_out: HashSet<String> =
        data.emoji().iter().filter(|e| e.split != Split::Train).map(name).filter(|n| !train.contains(n)).collect();
    let pairs = TextPairs::open(&format!("openmoji:{}", openmoji.display())).unwrap();
    assert!(pairs.len() > 1_000, "{} OpenMoji pairs", pairs.len());
    for i in 0..pairs.len() {
        let (query, target) = pairs.pair(i).unwrap();
        assert!(train.contains(target), "pair {i}: {target:?} is not a training emoji's name");
        assert!(!held_out.contains(target), "pair {i}: {target:?} is held out");
        assert!(!query.is_empty());
    }
    let grinning = (0..pairs.len()).map(|i| pairs.pair(i).unwrap()).find(|(_, t)| *t == "grinning face");
    if train.contains("grinning face") {
        assert!(grinning.is_some_and(|(q, _)| q.contains("cheerful")), "{grinning:?}");
    }
    // The default of `--text-data` weighs the small source up.
    let both = TextPairs::open(&format!("wordnet:{},openmoji:{}*8", wordnet.display(), openmoji.display())).unwrap();
    assert_eq!(both.len(), words.len() + 8 * pairs.len());
}
