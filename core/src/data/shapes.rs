//! The `shapes` dataset: procedurally drawn scenes with template captions (nothing to download).
//!
//! Each sample is generated from its own seed, mixed from the config's `seed`, the split and the
//! index, so the same `(config, split, index)` always gives the same pixels and caption. The
//! renderer blends with integers and uses no transcendental functions, so the pixels do not
//! depend on the platform's maths library.
//!
//! A scene has one of three layouts:
//! - `single`: one object, captioned with size, colour and shape ("a small red circle");
//! - `horizontal_pair` / `vertical_pair`: two different objects clearly separated along one axis,
//!   captioned with their relation ("a red circle left of a blue square", or the paraphrase
//!   "a blue square to the right of a red circle");
//! - `count`: two or three objects of one shape and colour ("there are three yellow stars").
//!
//! Backgrounds are muted grey tones (solid, two-tone gradient or light noise) so they never look
//! like an object colour. Objects are drawn with 4×4 supersampling, inside the image, never
//! overlapping.
//!
//! Hard negatives change exactly one attribute (swap two objects' colours, flip the relation by
//! swapping positions, change a shape, a colour, the size or the count) and keep the phrasing, so
//! a negative caption differs from the positive only in that attribute; each comes with the render
//! of the changed scene.
//!
//! Compositional OOD: the colour–shape pairs of [`held_out_pairs`] never occur in `Train` or
//! `Test` scenes (nor in their negatives); every `Unseen` scene contains at least one of them.

use image::Rgb;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::{Dataset, RgbImage, Sample, Split};
use crate::{EgaError, Result};

/// Object diameters as fractions of the image side.
const SMALL_DIAMETER: f32 = 0.25;
const LARGE_DIAMETER: f32 = 0.40;
const LARGE_RADIUS: f32 = LARGE_DIAMETER / 2.0;
/// Smallest distance between an object's box and the image edge (or its grid cell's edge).
const MARGIN: f32 = 0.02;
/// Smallest gap between the boxes of two related objects along the relation's axis.
const GAP: f32 = 0.06;
/// Largest offset between two related objects across the relation's axis.
const MAX_ACROSS_OFFSET: f32 = 0.12;
/// Sub-samples per pixel along each axis (4 × 4 supersampling).
const SUBSAMPLES: u32 = 4;
/// Amplitude of the `noise` background, in 8-bit levels.
const NOISE_AMPLITUDE: u64 = 10;
/// Accepted `image_size` range and largest `negatives`.
const IMAGE_SIZES: std::ops::RangeInclusive<u32> = 8..=4096;
const MAX_NEGATIVES: usize = 64;

/// Configuration of [`ShapesDataset`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShapesConfig {
    /// Seed of the whole dataset.
    pub seed: u64,
    /// Side of the rendered square images, in pixels (8 to 4096).
    pub image_size: u32,
    /// Number of `Train` samples.
    pub train_size: usize,
    /// Number of `Test` samples.
    pub test_size: usize,
    /// Number of `Unseen` samples.
    pub unseen_size: usize,
    /// Controlled hard negatives per sample, as captions and as images (at most 64). When a scene
    /// has fewer distinct one-attribute changes, the distinct ones are repeated in order.
    pub negatives: usize,
}

impl Default for ShapesConfig {
    fn default() -> Self {
        ShapesConfig { seed: 0, image_size: 64, train_size: 20_000, test_size: 1_000, unseen_size: 1_000, negatives: 3 }
    }
}

impl ShapesConfig {
    /// Checks `image_size` and `negatives`.
    pub fn validate(&self) -> Result<()> {
        if !IMAGE_SIZES.contains(&self.image_size) {
            return Err(EgaError::config("image_size", self.image_size, "between 8 and 4096 pixels"));
        }
        if self.negatives > MAX_NEGATIVES {
            return Err(EgaError::config("negatives", self.negatives, format!("at most {MAX_NEGATIVES}")));
        }
        Ok(())
    }
}

/// Shape of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// A disc.
    Circle,
    /// An axis-aligned square.
    Square,
    /// A triangle pointing up.
    Triangle,
    /// A square standing on a corner.
    Diamond,
    /// A five-pointed star.
    Star,
    /// A plus sign.
    Cross,
}

impl Shape {
    /// Every shape.
    pub const ALL: [Shape; 6] =
        [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Diamond, Shape::Star, Shape::Cross];

    /// The word in captions.
    pub fn name(self) -> &'static str {
        ["circle", "square", "triangle", "diamond", "star", "cross"][self as usize]
    }

    /// The plural in count captions.
    pub fn plural(self) -> &'static str {
        ["circles", "squares", "triangles", "diamonds", "stars", "crosses"][self as usize]
    }

    /// Whether the point `(u, v)` (object-local: centre at 0, box `[-1, 1]²`, `v` down) is inside.
    fn contains(self, u: f32, v: f32) -> bool {
        match self {
            Shape::Circle => u * u + v * v <= 1.0,
            Shape::Square => u.abs() <= 0.85 && v.abs() <= 0.85,
            Shape::Triangle => (-0.95..=0.85).contains(&v) && u.abs() <= (v + 0.95) / 1.8,
            Shape::Diamond => u.abs() + v.abs() <= 1.0,
            Shape::Star => star_contains(u, v),
            Shape::Cross => {
                let (a, b) = (u.abs(), v.abs());
                (a <= 0.32 && b <= 0.95) || (b <= 0.32 && a <= 0.95)
            }
        }
    }
}

/// The star's outline: outer points at radius 1, inner corners at radius 0.45 (literal constants,
/// so that the outline is the same on every platform).
const STAR: [(f32, f32); 10] = [
    (0.0, -1.0),
    (0.45 * 0.587_785_25, 0.45 * -0.809_017),
    (0.951_056_5, -0.309_017),
    (0.45 * 0.951_056_5, 0.45 * 0.309_017),
    (0.587_785_25, 0.809_017),
    (0.0, 0.45),
    (-0.587_785_25, 0.809_017),
    (0.45 * -0.951_056_5, 0.45 * 0.309_017),
    (-0.951_056_5, -0.309_017),
    (0.45 * -0.587_785_25, 0.45 * -0.809_017),
];

/// Point-in-star test: quick accept/reject by radius, then the even–odd rule on [`STAR`].
fn star_contains(u: f32, v: f32) -> bool {
    let r2 = u * u + v * v;
    if r2 > 1.0 {
        return false;
    }
    if r2 < 0.36 * 0.36 {
        return true;
    }
    let mut inside = false;
    let mut previous = STAR[STAR.len() - 1];
    for &(x, y) in &STAR {
        let (px, py) = previous;
        if (y > v) != (py > v) && u < px + (v - py) * (x - px) / (y - py) {
            inside = !inside;
        }
        previous = (x, y);
    }
    inside
}

/// Colour of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    /// Red.
    Red,
    /// Green.
    Green,
    /// Blue.
    Blue,
    /// Yellow.
    Yellow,
    /// Purple.
    Purple,
    /// Orange.
    Orange,
    /// White.
    White,
    /// Black.
    Black,
}

impl Colour {
    /// Every colour.
    pub const ALL: [Colour; 8] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Purple,
        Colour::Orange,
        Colour::White,
        Colour::Black,
    ];

    /// The word in captions.
    pub fn name(self) -> &'static str {
        ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"][self as usize]
    }

    /// The drawn RGB value.
    pub fn rgb(self) -> [u8; 3] {
        const RGB: [[u8; 3]; 8] = [
            [215, 35, 35],
            [40, 170, 60],
            [35, 80, 220],
            [240, 215, 40],
            [145, 55, 185],
            [245, 135, 25],
            [250, 250, 250],
            [15, 15, 15],
        ];
        RGB[self as usize]
    }
}

/// Size of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    /// A quarter of the image side.
    Small,
    /// Two fifths of the image side.
    Large,
}

impl Size {
    /// The word in captions.
    pub fn name(self) -> &'static str {
        ["small", "large"][self as usize]
    }

    /// Diameter (side of the object's box) as a fraction of the image side.
    pub fn diameter(self) -> f32 {
        [SMALL_DIAMETER, LARGE_DIAMETER][self as usize]
    }
}

/// Colour–shape pairs absent from `Train` and `Test`, present in every `Unseen` scene (7 of 48).
const HELD_OUT: [(Colour, Shape); 7] = [
    (Colour::Red, Shape::Triangle),
    (Colour::Blue, Shape::Star),
    (Colour::Green, Shape::Cross),
    (Colour::Yellow, Shape::Diamond),
    (Colour::Purple, Shape::Circle),
    (Colour::Orange, Shape::Square),
    (Colour::White, Shape::Star),
];

fn is_held_out(colour: Colour, shape: Shape) -> bool {
    HELD_OUT.contains(&(colour, shape))
}

/// The held-out `(colour, shape)` pairs of the compositional OOD split, as caption words.
pub fn held_out_pairs() -> Vec<(&'static str, &'static str)> {
    HELD_OUT.iter().map(|&(colour, shape)| (colour.name(), shape.name())).collect()
}

/// Every word any caption can contain, sorted (for training the tokenizer).
pub fn caption_vocabulary() -> Vec<String> {
    let template_words =
        ["a", "an", "there", "is", "are", "one", "two", "three", "left", "right", "of", "to", "the", "above", "below"];
    let mut words: Vec<String> = template_words.iter().map(|w| w.to_string()).collect();
    words.extend([Size::Small, Size::Large].iter().map(|s| s.name().to_string()));
    words.extend(Colour::ALL.iter().map(|c| c.name().to_string()));
    words.extend(Shape::ALL.iter().flat_map(|s| [s.name().to_string(), s.plural().to_string()]));
    words.sort();
    words.dedup();
    words
}

/// One drawn object. Positions are the centre as fractions of the image side (`y` down).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SceneObject {
    /// Its shape.
    pub shape: Shape,
    /// Its colour.
    pub colour: Colour,
    /// Its size.
    pub size: Size,
    /// Centre, horizontal, in `[0, 1]`.
    pub x: f32,
    /// Centre, vertical (down), in `[0, 1]`.
    pub y: f32,
}

impl SceneObject {
    fn radius(&self) -> f32 {
        self.size.diameter() / 2.0
    }

    /// "a red circle" / "an orange star".
    fn noun_phrase(&self) -> String {
        let colour = self.colour.name();
        let article = if colour.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
        format!("{article} {colour} {}", self.shape.name())
    }
}

/// How a scene's objects are arranged (and so which caption template it gets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// One object.
    Single,
    /// Two different objects side by side (relation "left of" / "right of").
    HorizontalPair,
    /// Two different objects one over the other (relation "above" / "below").
    VerticalPair,
    /// Two or three objects of the same shape, colour and size.
    Count,
}

/// A spatial relation word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Predicate {
    /// Subject's centre has the smaller x.
    LeftOf,
    /// Subject's centre has the larger x.
    RightOf,
    /// Subject's centre has the smaller y.
    Above,
    /// Subject's centre has the larger y.
    Below,
}

/// The captioned relation of a pair scene: `objects[subject]` *predicate* `objects[object]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Relation {
    /// Index of the subject in [`Scene::objects`].
    pub subject: usize,
    /// The relation word.
    pub predicate: Predicate,
    /// Index of the other object.
    pub object: usize,
}

/// Kind of background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackgroundStyle {
    /// One tone.
    Solid,
    /// A linear blend from `from` to `to`.
    Gradient,
    /// One tone with light per-pixel luminance noise.
    Noise,
}

/// A muted, greyish background.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Background {
    /// Kind of background.
    pub style: BackgroundStyle,
    /// The tone (the gradient's start).
    pub from: [u8; 3],
    /// The gradient's end (equal to `from` otherwise).
    pub to: [u8; 3],
    /// Gradient direction: top to bottom when true, left to right otherwise.
    pub vertical: bool,
    /// Seed of the noise pattern.
    pub noise_seed: u64,
}

/// A generated scene: what is drawn and how it is captioned (written as JSONL metadata).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scene {
    /// Arrangement and caption template family.
    pub layout: Layout,
    /// Which paraphrase of the template family the caption uses.
    pub phrasing: u8,
    /// The objects (1 to 3).
    pub objects: Vec<SceneObject>,
    /// The captioned relation (pair layouts), derived from the geometry.
    pub relation: Option<Relation>,
    /// The captioned number of objects (count layout).
    pub count: Option<usize>,
    /// The background.
    pub background: Background,
}

impl Scene {
    /// Builds a scene and derives its relation and count from the objects.
    fn assemble(layout: Layout, phrasing: u8, objects: Vec<SceneObject>, background: Background) -> Scene {
        let relation = derive_relation(layout, phrasing, &objects);
        let count = (layout == Layout::Count).then_some(objects.len());
        Scene { layout, phrasing, objects, relation, count, background }
    }

    /// The same scene with other objects (for negatives).
    fn with_objects(&self, objects: Vec<SceneObject>) -> Scene {
        Scene::assemble(self.layout, self.phrasing, objects, self.background.clone())
    }

    /// Whether any object has a held-out colour–shape pair.
    pub fn has_held_out_pair(&self) -> bool {
        self.objects.iter().any(|o| is_held_out(o.colour, o.shape))
    }

    /// The caption: true for this scene, fully determined by it.
    pub fn describe(&self) -> String {
        let Some(first) = self.objects.first() else { return String::new() };
        match (self.layout, self.relation) {
            (Layout::Single, _) => {
                let object = format!("{} {} {}", first.size.name(), first.colour.name(), first.shape.name());
                match self.phrasing % 3 {
                    0 => format!("a {object}"),
                    1 => format!("there is a {object}"),
                    _ => format!("one {object}"),
                }
            }
            (Layout::Count, _) => {
                let group =
                    format!("{} {} {}", number_word(self.objects.len()), first.colour.name(), first.shape.plural());
                if self.phrasing.is_multiple_of(2) {
                    group
                } else {
                    format!("there are {group}")
                }
            }
            (_, Some(relation)) => {
                let subject = self.objects.get(relation.subject).map(SceneObject::noun_phrase).unwrap_or_default();
                let object = self.objects.get(relation.object).map(SceneObject::noun_phrase).unwrap_or_default();
                format!("{subject} {} {object}", predicate_words(relation.predicate, self.phrasing))
            }
            (_, None) => first.noun_phrase(),
        }
    }

    /// Draws the scene as an `image_size × image_size` image.
    pub fn render(&self, image_size: u32) -> RgbImage {
        let mut image = self.background.render(image_size);
        for object in &self.objects {
            draw_object(&mut image, object);
        }
        image
    }
}

/// The relation a pair caption states: phrasing bit 0 picks the first (left/top) object or the
/// second as the subject, so "A left of B" and "B right of A" are paraphrases.
fn derive_relation(layout: Layout, phrasing: u8, objects: &[SceneObject]) -> Option<Relation> {
    let [a, b] = objects else { return None };
    let (a_first, forward, backward) = match layout {
        Layout::HorizontalPair => (a.x <= b.x, Predicate::LeftOf, Predicate::RightOf),
        Layout::VerticalPair => (a.y <= b.y, Predicate::Above, Predicate::Below),
        Layout::Single | Layout::Count => return None,
    };
    let (first, second) = if a_first { (0, 1) } else { (1, 0) };
    Some(if phrasing.is_multiple_of(2) {
        Relation { subject: first, predicate: forward, object: second }
    } else {
        Relation { subject: second, predicate: backward, object: first }
    })
}

/// Relation words; phrasing bit 1 picks the wording.
fn predicate_words(predicate: Predicate, phrasing: u8) -> &'static str {
    const WORDS: [[&str; 2]; 4] =
        [["left of", "to the left of"], ["right of", "to the right of"], ["above", "is above"], ["below", "is below"]];
    WORDS[predicate as usize][((phrasing >> 1) % 2) as usize]
}

fn number_word(n: usize) -> String {
    ["one", "two", "three"].get(n.wrapping_sub(1)).map_or_else(|| n.to_string(), |word| word.to_string())
}

impl Background {
    fn render(&self, size: u32) -> RgbImage {
        RgbImage::from_fn(size, size, |x, y| Rgb(self.colour_at(x, y, size)))
    }

    fn colour_at(&self, x: u32, y: u32, size: u32) -> [u8; 3] {
        let along = if self.vertical { y } else { x };
        let t = along as f32 / size.saturating_sub(1).max(1) as f32;
        let base: [u8; 3] = match self.style {
            BackgroundStyle::Gradient => std::array::from_fn(|c| {
                (self.from[c] as f32 + (self.to[c] as f32 - self.from[c] as f32) * t).round() as u8
            }),
            BackgroundStyle::Solid | BackgroundStyle::Noise => self.from,
        };
        if self.style != BackgroundStyle::Noise {
            return base;
        }
        let hash = splitmix64(self.noise_seed ^ ((y as u64) << 32 | x as u64));
        let offset = (hash % (2 * NOISE_AMPLITUDE + 1)) as i32 - NOISE_AMPLITUDE as i32;
        base.map(|channel| (channel as i32 + offset).clamp(0, 255) as u8)
    }
}

/// Blends one object over the image, pixel by pixel inside its box, with 4×4 supersampling.
fn draw_object(image: &mut RgbImage, object: &SceneObject) {
    let side = image.width() as f32;
    let (cx, cy, radius) = (object.x * side, object.y * side, object.radius() * side);
    if radius <= 0.0 {
        return;
    }
    let x_range = (cx - radius).floor().max(0.0) as u32..((cx + radius).ceil() as u32).min(image.width());
    let y_range = (cy - radius).floor().max(0.0) as u32..((cy + radius).ceil() as u32).min(image.height());
    let colour = object.colour.rgb();
    for py in y_range {
        for px in x_range.clone() {
            let hits = coverage(object.shape, (cx, cy, radius), px, py);
            if hits > 0 {
                let pixel = image.get_pixel_mut(px, py);
                pixel.0 = blend(pixel.0, colour, hits);
            }
        }
    }
}

/// How many of the pixel's 16 sub-samples fall inside the shape centred at `(cx, cy)`.
fn coverage(shape: Shape, (cx, cy, radius): (f32, f32, f32), px: u32, py: u32) -> u32 {
    let scale = 1.0 / radius;
    let step = 1.0 / SUBSAMPLES as f32;
    let mut hits = 0;
    for sy in 0..SUBSAMPLES {
        let v = (py as f32 + (sy as f32 + 0.5) * step - cy) * scale;
        for sx in 0..SUBSAMPLES {
            let u = (px as f32 + (sx as f32 + 0.5) * step - cx) * scale;
            hits += shape.contains(u, v) as u32;
        }
    }
    hits
}

/// `under` covered by `over` on `hits` of the 16 sub-samples (integer, rounded).
fn blend(under: [u8; 3], over: [u8; 3], hits: u32) -> [u8; 3] {
    let total = SUBSAMPLES * SUBSAMPLES;
    std::array::from_fn(|c| ((under[c] as u32 * (total - hits) + over[c] as u32 * hits + total / 2) / total) as u8)
}

/// The one attribute a hard negative changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// The two objects of a pair exchange colours.
    SwapColours,
    /// The two objects of a pair exchange positions (left↔right, above↔below).
    FlipRelation,
    /// One object (every object of a count scene) gets another shape.
    Shape,
    /// One object (every object of a count scene) gets another colour.
    Colour,
    /// The single object gets the other size.
    Size,
    /// A count scene gets one object more (two → three) or fewer (three → two).
    Count,
}

/// A controlled hard negative: the changed scene and what was changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Negative {
    /// The changed attribute.
    pub change: Change,
    /// The scene after the change.
    pub scene: Scene,
}

/// The procedural image–caption dataset (see the module documentation).
#[derive(Debug, Clone)]
pub struct ShapesDataset {
    config: ShapesConfig,
}

impl ShapesDataset {
    /// A dataset with this configuration (checked by [`Dataset::sample`]).
    pub fn new(config: ShapesConfig) -> Self {
        ShapesDataset { config }
    }

    /// The configuration.
    pub fn config(&self) -> &ShapesConfig {
        &self.config
    }

    /// The scene of sample `index` of `split`.
    pub fn scene(&self, split: Split, index: usize) -> Result<Scene> {
        self.check_index(split, index)?;
        Ok(generate_scene(split, &mut self.rng(split, index)))
    }

    /// The scene of sample `index` of `split` and its hard negatives.
    pub fn scene_with_negatives(&self, split: Split, index: usize) -> Result<(Scene, Vec<Negative>)> {
        self.check_index(split, index)?;
        let mut rng = self.rng(split, index);
        let scene = generate_scene(split, &mut rng);
        let negatives = choose_negatives(split, &scene, self.config.negatives.min(MAX_NEGATIVES), &mut rng);
        Ok((scene, negatives))
    }

    fn split_len(&self, split: Split) -> usize {
        match split {
            Split::Train => self.config.train_size,
            Split::Test => self.config.test_size,
            Split::Unseen => self.config.unseen_size,
        }
    }

    fn check_index(&self, split: Split, index: usize) -> Result<()> {
        let len = self.split_len(split);
        if index >= len {
            return Err(EgaError::Data(format!(
                "shapes: index {index} is out of range: split {split} has {len} samples"
            )));
        }
        Ok(())
    }

    /// The sample's own random stream, from the dataset seed, the split and the index.
    fn rng(&self, split: Split, index: usize) -> StdRng {
        let split_tag = match split {
            Split::Train => 0x7472_6169_6e00_0001,
            Split::Test => 0x7465_7374_0000_0002,
            Split::Unseen => 0x756e_7365_656e_0003,
        };
        StdRng::seed_from_u64(splitmix64(splitmix64(splitmix64(self.config.seed) ^ split_tag) ^ index as u64))
    }
}

impl Dataset for ShapesDataset {
    fn name(&self) -> String {
        "shapes".into()
    }

    fn len(&self, split: Split) -> Option<usize> {
        Some(self.split_len(split))
    }

    fn sample(&self, split: Split, index: usize) -> Result<Sample> {
        self.config.validate()?;
        let (scene, negatives) = self.scene_with_negatives(split, index)?;
        let size = self.config.image_size;
        Ok(Sample {
            id: format!("shapes-{split}-{index}"),
            image: scene.render(size),
            caption: scene.describe(),
            negative_captions: negatives.iter().map(|n| n.scene.describe()).collect(),
            negative_images: negatives.iter().map(|n| n.scene.render(size)).collect(),
        })
    }
}

/// SplitMix64's finaliser: a strong 64-bit mixing function.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn uniform(rng: &mut StdRng, low: f32, high: f32) -> f32 {
    low + (high - low) * rng.random::<f32>()
}

fn random_size(rng: &mut StdRng) -> Size {
    if rng.random::<bool>() {
        Size::Large
    } else {
        Size::Small
    }
}

/// A random colour–shape pair among those `accept` lets through (none: red circle).
fn random_pair(rng: &mut StdRng, accept: impl Fn((Colour, Shape)) -> bool) -> (Colour, Shape) {
    let pairs: Vec<(Colour, Shape)> = Colour::ALL
        .iter()
        .flat_map(|&c| Shape::ALL.iter().map(move |&s| (c, s)))
        .filter(|&pair| accept(pair))
        .collect();
    match pairs.len() {
        0 => (Colour::Red, Shape::Circle),
        n => pairs[rng.random_range(0..n)],
    }
}

/// The pairs a split's scenes draw from: held-out ones for `Unseen`, the others for `Train` / `Test`.
fn split_pair(rng: &mut StdRng, unseen: bool) -> (Colour, Shape) {
    random_pair(rng, |(c, s)| is_held_out(c, s) == unseen)
}

fn muted_tone(rng: &mut StdRng) -> [u8; 3] {
    let grey: i32 = rng.random_range(95..=160);
    std::array::from_fn(|_| (grey + rng.random_range(-10..=10)) as u8)
}

fn random_background(rng: &mut StdRng) -> Background {
    let style = [BackgroundStyle::Solid, BackgroundStyle::Gradient, BackgroundStyle::Noise][rng.random_range(0..3)];
    let from = muted_tone(rng);
    let to = if style == BackgroundStyle::Gradient { muted_tone(rng) } else { from };
    Background { style, from, to, vertical: rng.random(), noise_seed: rng.random() }
}

/// Draws a scene of `split`: 30 % single objects, 40 % pairs, 30 % counts.
fn generate_scene(split: Split, rng: &mut StdRng) -> Scene {
    let unseen = split == Split::Unseen;
    let background = random_background(rng);
    match rng.random_range(0..10) {
        0..=2 => single_scene(rng, unseen, background),
        3..=6 => pair_scene(rng, unseen, background),
        _ => count_scene(rng, unseen, background),
    }
}

fn single_scene(rng: &mut StdRng, unseen: bool, background: Background) -> Scene {
    let (colour, shape) = split_pair(rng, unseen);
    // Room for a large object anywhere, so that a size negative still fits.
    let (low, high) = (LARGE_RADIUS + MARGIN, 1.0 - LARGE_RADIUS - MARGIN);
    let object =
        SceneObject { shape, colour, size: random_size(rng), x: uniform(rng, low, high), y: uniform(rng, low, high) };
    let phrasing = rng.random_range(0..3);
    Scene::assemble(Layout::Single, phrasing, vec![object], background)
}

/// Two different objects; in `Unseen` at least one has a held-out pair.
fn pair_scene(rng: &mut StdRng, unseen: bool, background: Background) -> Scene {
    let first = split_pair(rng, unseen);
    let second = random_pair(rng, |(c, s)| !is_held_out(c, s) && (c, s) != first);
    let mut pairs = [first, second];
    pairs.shuffle(rng);
    let layout = if rng.random::<bool>() { Layout::HorizontalPair } else { Layout::VerticalPair };
    let sizes = [random_size(rng), random_size(rng)];
    let reach = sizes.iter().map(|s| s.diameter() / 2.0).fold(0.0, f32::max);
    let positions = pair_positions(rng, reach, layout == Layout::VerticalPair);
    let objects = (0..2)
        .map(|i| SceneObject {
            colour: pairs[i].0,
            shape: pairs[i].1,
            size: sizes[i],
            x: positions[i].0,
            y: positions[i].1,
        })
        .collect();
    Scene::assemble(layout, rng.random_range(0..4), objects, background)
}

/// Centres of two objects of radius up to `reach`, separated by at least [`GAP`] along the axis
/// (x, or y when `vertical`) and offset by at most [`MAX_ACROSS_OFFSET`] across it. Both centres
/// leave room for `reach`, so the objects can swap places (the flip negative).
fn pair_positions(rng: &mut StdRng, reach: f32, vertical: bool) -> [(f32, f32); 2] {
    let (low, high) = (reach + MARGIN, 1.0 - reach - MARGIN);
    let min_distance = 2.0 * reach + GAP;
    let first = uniform(rng, low, high - min_distance);
    let second = uniform(rng, first + min_distance, high);
    let across_first = uniform(rng, low, high);
    let across_second = (across_first + uniform(rng, -MAX_ACROSS_OFFSET, MAX_ACROSS_OFFSET)).clamp(low, high);
    if vertical {
        [(across_first, first), (across_second, second)]
    } else {
        [(first, across_first), (second, across_second)]
    }
}

/// Two or three equal objects, each in its own quadrant.
fn count_scene(rng: &mut StdRng, unseen: bool, background: Background) -> Scene {
    let (colour, shape) = split_pair(rng, unseen);
    let size = random_size(rng);
    let count = rng.random_range(2..=3);
    let mut cells = [(0, 0), (1, 0), (0, 1), (1, 1)];
    cells.shuffle(rng);
    let objects = cells[..count]
        .iter()
        .map(|&cell| {
            let (x, y) = position_in_cell(rng, cell, size.diameter() / 2.0);
            SceneObject { shape, colour, size, x, y }
        })
        .collect();
    Scene::assemble(Layout::Count, rng.random_range(0..2), objects, background)
}

/// A centre inside quadrant `cell` (column, row) leaving [`MARGIN`] around the object's box.
fn position_in_cell(rng: &mut StdRng, (column, row): (u8, u8), radius: f32) -> (f32, f32) {
    let (low, high) = (radius + MARGIN, 0.5 - radius - MARGIN);
    (0.5 * column as f32 + uniform(rng, low, high), 0.5 * row as f32 + uniform(rng, low, high))
}

fn quadrant(object: &SceneObject) -> (u8, u8) {
    ((object.x >= 0.5) as u8, (object.y >= 0.5) as u8)
}

/// Every one-attribute change of `scene` (before filtering).
fn candidate_negatives(scene: &Scene, rng: &mut StdRng) -> Vec<Negative> {
    let mut out = Vec::new();
    let mut push = |change, objects| out.push(Negative { change, scene: scene.with_objects(objects) });
    let objects = &scene.objects;
    // In a count scene the group's attribute changes (every object), otherwise one object's.
    let targets: Vec<Vec<usize>> = if scene.layout == Layout::Count {
        vec![(0..objects.len()).collect()]
    } else {
        (0..objects.len()).map(|i| vec![i]).collect()
    };
    for target in &targets {
        let Some(&lead) = target.first().and_then(|&i| objects.get(i)) else { continue };
        for shape in Shape::ALL.into_iter().filter(|&s| s != lead.shape) {
            let mut changed = objects.clone();
            target.iter().for_each(|&i| changed[i].shape = shape);
            push(Change::Shape, changed);
        }
        for colour in Colour::ALL.into_iter().filter(|&c| c != lead.colour) {
            let mut changed = objects.clone();
            target.iter().for_each(|&i| changed[i].colour = colour);
            push(Change::Colour, changed);
        }
    }
    match (scene.layout, objects.as_slice()) {
        (Layout::Single, [only]) => {
            let size = if only.size == Size::Small { Size::Large } else { Size::Small };
            push(Change::Size, vec![SceneObject { size, ..*only }]);
        }
        (Layout::HorizontalPair | Layout::VerticalPair, [a, b]) => {
            push(
                Change::SwapColours,
                vec![SceneObject { colour: b.colour, ..*a }, SceneObject { colour: a.colour, ..*b }],
            );
            push(
                Change::FlipRelation,
                vec![SceneObject { x: b.x, y: b.y, ..*a }, SceneObject { x: a.x, y: a.y, ..*b }],
            );
        }
        (Layout::Count, [rest @ .., _]) if objects.len() >= 3 => push(Change::Count, rest.to_vec()),
        (Layout::Count, [.., last]) => {
            let mut free: Vec<(u8, u8)> = [(0, 0), (1, 0), (0, 1), (1, 1)]
                .into_iter()
                .filter(|cell| objects.iter().all(|o| quadrant(o) != *cell))
                .collect();
            free.shuffle(rng);
            if let Some(&cell) = free.first() {
                let (x, y) = position_in_cell(rng, cell, last.radius());
                let mut changed = objects.clone();
                changed.push(SceneObject { x, y, ..*last });
                push(Change::Count, changed);
            }
        }
        _ => {}
    }
    out
}

/// Whether a negative is usable: allowed in the split and (for pairs) still two distinguishable
/// objects. Captions equal to the positive's are dropped by [`choose_negatives`].
fn is_usable(split: Split, negative: &Scene) -> bool {
    let allowed = split == Split::Unseen || !negative.has_held_out_pair();
    let distinguishable = match negative.objects.as_slice() {
        [a, b] if negative.layout != Layout::Count => (a.colour, a.shape) != (b.colour, b.shape),
        _ => true,
    };
    allowed && distinguishable
}

/// Picks `wanted` negatives with distinct captions, taking the kinds of change in turns (in a
/// random order) so that they are varied; repeats them in order when too few exist.
fn choose_negatives(split: Split, scene: &Scene, wanted: usize, rng: &mut StdRng) -> Vec<Negative> {
    if wanted == 0 {
        return Vec::new();
    }
    let mut groups: Vec<Vec<Negative>> = Vec::new();
    for negative in candidate_negatives(scene, rng).into_iter().filter(|n| is_usable(split, &n.scene)) {
        match groups.iter_mut().find(|g| g.first().is_some_and(|n| n.change == negative.change)) {
            Some(group) => group.push(negative),
            None => groups.push(vec![negative]),
        }
    }
    groups.shuffle(rng);
    groups.iter_mut().for_each(|group| group.shuffle(rng));
    let mut chosen: Vec<Negative> = Vec::new();
    let mut captions = vec![scene.describe()];
    while chosen.len() < wanted && groups.iter().any(|g| !g.is_empty()) {
        for group in groups.iter_mut() {
            let Some(negative) = group.pop() else { continue };
            let negative_caption = negative.scene.describe();
            if chosen.len() < wanted && !captions.contains(&negative_caption) {
                captions.push(negative_caption);
                chosen.push(negative);
            }
        }
    }
    let repeats: Vec<Negative> = chosen.iter().cycle().take(wanted - chosen.len()).cloned().collect();
    chosen.extend(repeats);
    chosen
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const SPLITS: [Split; 3] = [Split::Train, Split::Test, Split::Unseen];

    fn dataset() -> ShapesDataset {
        ShapesDataset::new(ShapesConfig {
            train_size: 1000,
            test_size: 1000,
            unseen_size: 1000,
            ..ShapesConfig::default()
        })
    }

    /// The scenes of the first `count` indices of `split`, each with its negatives.
    fn scenes(data: &ShapesDataset, split: Split, count: usize) -> Vec<(Scene, Vec<Negative>)> {
        (0..count).map(|index| data.scene_with_negatives(split, index).unwrap()).collect()
    }

    /// Every scene of the first `count` indices of `split`, negatives included.
    fn all_scenes(data: &ShapesDataset, split: Split, count: usize) -> Vec<Scene> {
        scenes(data, split, count)
            .into_iter()
            .flat_map(|(scene, negatives)| std::iter::once(scene).chain(negatives.into_iter().map(|n| n.scene)))
            .collect()
    }

    /// Held-out check through the public word pairs (independent of `has_held_out_pair`).
    fn shows_held_out_pair(scene: &Scene) -> bool {
        let held_out = held_out_pairs();
        scene.objects.iter().any(|o| held_out.contains(&(o.colour.name(), o.shape.name())))
    }

    #[test]
    fn the_same_index_gives_the_same_sample() {
        let (a, b) = (dataset(), dataset());
        for split in SPLITS {
            for index in [0, 1, 17, 999] {
                let (x, y) = (a.sample(split, index).unwrap(), b.sample(split, index).unwrap());
                assert_eq!((&x.id, &x.caption, &x.negative_captions), (&y.id, &y.caption, &y.negative_captions));
                assert_eq!(x.image.as_raw(), y.image.as_raw(), "{split} {index}");
                assert!(x.negative_images.iter().zip(&y.negative_images).all(|(p, q)| p.as_raw() == q.as_raw()));
            }
        }
    }

    #[test]
    fn different_indices_splits_and_seeds_give_different_samples() {
        let data = dataset();
        let samples: Vec<Sample> = (0..50).map(|index| data.sample(Split::Train, index).unwrap()).collect();
        for i in 0..samples.len() {
            for j in i + 1..samples.len() {
                assert_ne!(samples[i].image.as_raw(), samples[j].image.as_raw(), "train {i} and {j}");
            }
        }
        let captions: HashSet<&str> = samples.iter().map(|s| s.caption.as_str()).collect();
        assert!(captions.len() >= 40, "only {} distinct captions in 50", captions.len());
        assert_ne!(samples[0].image.as_raw(), data.sample(Split::Test, 0).unwrap().image.as_raw());
        let reseeded = ShapesDataset::new(ShapesConfig { seed: 1, ..data.config().clone() });
        assert_ne!(samples[0].image.as_raw(), reseeded.sample(Split::Train, 0).unwrap().image.as_raw());
    }

    #[test]
    fn indices_beyond_a_split_and_bad_configs_are_errors() {
        let data =
            ShapesDataset::new(ShapesConfig { train_size: 3, test_size: 5, unseen_size: 0, ..ShapesConfig::default() });
        assert_eq!(
            (data.len(Split::Train), data.len(Split::Test), data.len(Split::Unseen)),
            (Some(3), Some(5), Some(0))
        );
        let message = data.sample(Split::Test, 5).unwrap_err().to_string();
        assert!(message.contains("test") && message.contains("5 samples"), "{message}");
        assert!(data.sample(Split::Unseen, 0).is_err());
        assert!(data.scene(Split::Train, usize::MAX).is_err());
        assert!(data.sample(Split::Train, 2).is_ok());
        for config in [
            ShapesConfig { image_size: 0, ..ShapesConfig::default() },
            ShapesConfig { negatives: 1000, ..ShapesConfig::default() },
        ] {
            assert!(ShapesDataset::new(config).sample(Split::Train, 0).is_err());
        }
    }

    #[test]
    fn held_out_pairs_are_about_15_percent_and_leave_every_word_seen() {
        let held_out = held_out_pairs();
        let fraction = held_out.len() as f32 / (Colour::ALL.len() * Shape::ALL.len()) as f32;
        assert!((0.1..=0.2).contains(&fraction), "{fraction}");
        assert!(Colour::ALL.iter().all(|c| Shape::ALL.iter().any(|s| !held_out.contains(&(c.name(), s.name())))));
        assert!(Shape::ALL.iter().all(|s| Colour::ALL.iter().any(|c| !held_out.contains(&(c.name(), s.name())))));
    }

    #[test]
    fn held_out_pairs_never_appear_in_train_or_test() {
        let data = dataset();
        for split in [Split::Train, Split::Test] {
            for scene in all_scenes(&data, split, 1000) {
                assert!(!shows_held_out_pair(&scene), "{split}: {}", scene.describe());
            }
        }
    }

    #[test]
    fn every_unseen_scene_contains_a_held_out_pair() {
        for (scene, _) in scenes(&dataset(), Split::Unseen, 1000) {
            assert!(shows_held_out_pair(&scene), "{}", scene.describe());
        }
    }

    /// Whether `after` is `before` with exactly the attribute `change` changed.
    fn changes_exactly(change: Change, before: &Scene, after: &Scene) -> bool {
        let (a, b) = (&before.objects, &after.objects);
        let same_setting =
            (before.layout, before.phrasing, &before.background) == (after.layout, after.phrasing, &after.background);
        // Objects that differ only in the field `restore` copies back, for one object or a whole count group.
        let one_field = |restore: fn(SceneObject, &SceneObject) -> SceneObject| {
            let changed: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
            let expected = if before.layout == Layout::Count { a.len() } else { 1 };
            changed.len() == expected
                && changed.iter().all(|&i| restore(b[i], &a[i]) == a[i])
                && b.iter().all(|o| restore(*o, &b[changed[0]]) == *o || before.layout != Layout::Count)
        };
        same_setting
            && match change {
                Change::Count => {
                    a.len().abs_diff(b.len()) == 1
                        && a.iter().zip(b).all(|(x, y)| x == y)
                        && b.iter()
                            .chain(a)
                            .all(|o| (o.shape, o.colour, o.size) == (a[0].shape, a[0].colour, a[0].size))
                }
                _ if a.len() != b.len() => false,
                Change::SwapColours => {
                    a.len() == 2
                        && b[0] == SceneObject { colour: a[1].colour, ..a[0] }
                        && b[1] == SceneObject { colour: a[0].colour, ..a[1] }
                }
                Change::FlipRelation => {
                    a.len() == 2
                        && b[0] == SceneObject { x: a[1].x, y: a[1].y, ..a[0] }
                        && b[1] == SceneObject { x: a[0].x, y: a[0].y, ..a[1] }
                }
                Change::Shape => one_field(|o, from| SceneObject { shape: from.shape, ..o }),
                Change::Colour => one_field(|o, from| SceneObject { colour: from.colour, ..o }),
                Change::Size => a.len() == 1 && one_field(|o, from| SceneObject { size: from.size, ..o }),
            }
    }

    #[test]
    fn negatives_change_exactly_one_attribute_and_their_caption() {
        let data = dataset();
        for split in SPLITS {
            for (index, (scene, negatives)) in scenes(&data, split, 500).iter().enumerate() {
                assert_eq!(negatives.len(), 3, "{split} {index}");
                let mut captions = HashSet::from([scene.describe()]);
                for negative in negatives {
                    let caption = negative.scene.describe();
                    assert!(captions.insert(caption.clone()), "{split} {index}: {caption} repeats");
                    assert!(
                        changes_exactly(negative.change, scene, &negative.scene),
                        "{split} {index}: {:?} turned {} into {caption}",
                        negative.change,
                        scene.describe()
                    );
                }
            }
        }
    }

    #[test]
    fn images_have_the_configured_size_and_count() {
        for (size, negatives) in [(8, 5), (32, 40), (64, 0), (97, 5)] {
            let data = ShapesDataset::new(ShapesConfig { image_size: size, negatives, ..ShapesConfig::default() });
            for index in 0..20 {
                let sample = data.sample(Split::Train, index).unwrap();
                assert_eq!((sample.negative_images.len(), sample.negative_captions.len()), (negatives, negatives));
                for image in std::iter::once(&sample.image).chain(&sample.negative_images) {
                    assert_eq!(image.dimensions(), (size, size));
                }
            }
        }
    }

    #[test]
    fn objects_fit_inside_the_image_and_never_overlap() {
        let data = dataset();
        for split in SPLITS {
            for scene in all_scenes(&data, split, 300) {
                let boxes: Vec<[f32; 4]> = scene
                    .objects
                    .iter()
                    .map(|o| [o.x - o.radius(), o.y - o.radius(), o.x + o.radius(), o.y + o.radius()])
                    .collect();
                for (i, b) in boxes.iter().enumerate() {
                    assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 1.0 && b[3] <= 1.0, "{}: {b:?}", scene.describe());
                    for c in &boxes[i + 1..] {
                        assert!(
                            b[2] <= c[0] || c[2] <= b[0] || b[3] <= c[1] || c[3] <= b[1],
                            "{}: {b:?} {c:?}",
                            scene.describe()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn object_colours_fill_their_masks_and_backgrounds_stay_muted() {
        let side = 64u32;
        let full = SUBSAMPLES * SUBSAMPLES;
        for scene in all_scenes(&dataset(), Split::Train, 60) {
            let image = scene.render(side);
            let mut covered = vec![false; (side * side) as usize];
            for object in &scene.objects {
                let geometry = (object.x * side as f32, object.y * side as f32, object.radius() * side as f32);
                let (mut sum, mut inside) = ([0u64; 3], 0u64);
                for (px, py, pixel) in image.enumerate_pixels() {
                    let hits = coverage(object.shape, geometry, px, py);
                    covered[(py * side + px) as usize] |= hits > 0;
                    if hits == full {
                        (0..3).for_each(|c| sum[c] += pixel[c] as u64);
                        inside += 1;
                    }
                }
                assert!(inside >= 30, "{}: {inside} pixels inside a {:?}", scene.describe(), object.shape);
                let mean = sum.map(|s| s as f32 / inside as f32);
                let rgb = object.colour.rgb();
                assert!((0..3).all(|c| (mean[c] - rgb[c] as f32).abs() < 1.0), "{}: mean {mean:?}", scene.describe());
            }
            for (px, py, pixel) in image.enumerate_pixels().filter(|(x, y, _)| !covered[(y * side + x) as usize]) {
                for colour in Colour::ALL {
                    let distance =
                        (0..3).map(|c| (pixel[c] as f32 - colour.rgb()[c] as f32).powi(2)).sum::<f32>().sqrt();
                    assert!(distance >= 50.0, "background {pixel:?} at ({px}, {py}) looks {}", colour.name());
                }
            }
        }
    }

    #[test]
    fn relation_captions_match_the_geometry() {
        let data = dataset();
        for scene in all_scenes(&data, Split::Train, 300).into_iter().chain(all_scenes(&data, Split::Unseen, 100)) {
            let caption = scene.describe();
            let Some(keyword) = ["left of", "right of", "above", "below"].into_iter().find(|k| caption.contains(k))
            else {
                continue;
            };
            let (before, after) = caption.split_once(keyword).unwrap();
            let before = before.trim_end().trim_end_matches(" to the").trim_end_matches(" is");
            let find = |phrase: &str| {
                scene.objects.iter().find(|o| phrase.ends_with(&format!("{} {}", o.colour.name(), o.shape.name())))
            };
            let (Some(s), Some(o)) = (find(before), find(after.trim())) else { panic!("{caption}: objects not found") };
            assert_ne!(s, o, "{caption}");
            // Along the axis: the boxes are apart by GAP; across it: the centres differ by little.
            let (along, across, reaches) = match keyword {
                "left of" => (o.x - s.x, o.y - s.y, o.radius() + s.radius()),
                "right of" => (s.x - o.x, o.y - s.y, o.radius() + s.radius()),
                "above" => (o.y - s.y, o.x - s.x, o.radius() + s.radius()),
                _ => (s.y - o.y, o.x - s.x, o.radius() + s.radius()),
            };
            assert!(
                along >= reaches + GAP - 1e-4 && across.abs() <= MAX_ACROSS_OFFSET + 1e-4,
                "{caption}: {along} {across}"
            );
        }
    }

    #[test]
    fn count_captions_match_the_number_of_objects() {
        for scene in all_scenes(&dataset(), Split::Train, 500) {
            let caption = scene.describe();
            let words: Vec<&str> = caption.split(' ').collect();
            let number = ["one", "two", "three"].iter().position(|n| words.contains(n)).map(|p| p + 1);
            let first = scene.objects[0];
            if scene.layout == Layout::Count {
                assert_eq!(number, Some(scene.objects.len()), "{caption}");
                assert!(words.contains(&first.shape.plural()) && words.contains(&first.colour.name()), "{caption}");
                assert!(scene
                    .objects
                    .iter()
                    .all(|o| (o.shape, o.colour, o.size) == (first.shape, first.colour, first.size)));
            } else {
                assert!(number.is_none() || number == Some(1) && scene.objects.len() == 1, "{caption}");
            }
        }
    }

    #[test]
    fn captions_use_the_vocabulary_and_every_paraphrase() {
        let vocabulary: HashSet<String> = caption_vocabulary().into_iter().collect();
        let captions: Vec<String> = all_scenes(&dataset(), Split::Train, 500).iter().map(Scene::describe).collect();
        for caption in &captions {
            assert!(caption.split(' ').all(|w| vocabulary.contains(w)), "{caption}");
        }
        for phrase in [
            "a small",
            "there is a",
            "one large",
            " left of",
            "to the left of",
            "right of",
            "is above",
            "below",
            "there are",
            "an orange",
        ] {
            assert!(captions.iter().any(|c| c.contains(phrase)), "no caption has {phrase:?}");
        }
        assert!(captions.iter().any(|c| c.starts_with("two ")) && captions.iter().any(|c| c.starts_with("three ")));
    }
}
