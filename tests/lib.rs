//! Shared helpers of the integration tests: the devices every test runs on, and tolerant
//! comparisons that say where and by how much they fail.

use burn::tensor::Device;

/// The devices a backend-generic test runs on: always `flex`; also the wgpu adapter when there is
/// one. Without an adapter the test prints SKIPPED loudly for the GPU half, and panics when
/// `REQUIRE_GPU=1` (CI sets it: CI has lavapipe).
pub fn devices(test: &str) -> Vec<(&'static str, Device)> {
    let mut devices = vec![("flex", Device::flex())];
    if let Some(gpu) = gpu(test) {
        devices.push(("wgpu", gpu));
    }
    devices
}

/// The wgpu device, or `None` after printing SKIPPED (panics instead under `REQUIRE_GPU=1`).
pub fn gpu(test: &str) -> Option<Device> {
    match ega_core::device::wgpu_adapter() {
        Ok(adapter) => Some(adapter.device.clone()),
        Err(why) => {
            if std::env::var("REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("{test}: REQUIRE_GPU=1 but no wgpu adapter: {why}");
            }
            eprintln!("\n*** SKIPPED (wgpu half of {test}): no wgpu adapter: {why} ***\n");
            None
        }
    }
}

/// Asserts `|actual − expected| <= atol + rtol·|expected|` elementwise, reporting the first bad
/// index and the largest difference.
#[track_caller]
pub fn assert_close(what: &str, actual: &[f64], expected: &[f64], atol: f64, rtol: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    let mut first_bad = None;
    let mut largest = (0.0f64, 0usize);
    for (k, (a, e)) in actual.iter().zip(expected).enumerate() {
        let diff = (a - e).abs();
        if diff > largest.0 || diff.is_nan() {
            largest = (diff, k);
        }
        if (diff > atol + rtol * e.abs() || !a.is_finite()) && first_bad.is_none() {
            first_bad = Some(k);
        }
    }
    if let Some(k) = first_bad {
        panic!(
            "{what}: first bad index {k}: got {}, expected {}; largest difference {:.3e} at index {} (atol {atol:e}, rtol {rtol:e})",
            actual[k], expected[k], largest.0, largest.1
        );
    }
}

/// Deterministic pseudo-random values in `[lo, hi)` (a small LCG: tests need no RNG crate state).
pub fn uniform(count: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..count)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let unit = (state >> 11) as f64 / (1u64 << 53) as f64;
            lo + (hi - lo) * unit
        })
        .collect()
}

/// A whitespace word tokenizer for tests (the real BPE tokenizer is ega-core's business): each
/// new lower-cased word gets the next id after the four special tokens.
#[derive(Default)]
pub struct WordTokenizer {
    words: std::collections::HashMap<String, u32>,
}

impl WordTokenizer {
    /// Ids of the words of `text`, adding unseen words to the vocabulary.
    pub fn encode(&mut self, text: &str) -> Vec<u32> {
        text.split_whitespace()
            .map(|word| {
                let next = 4 + self.words.len() as u32;
                *self.words.entry(word.to_lowercase()).or_insert(next)
            })
            .collect()
    }
}

/// A `[3, size, size]` image (channel-major, values in [0, 1]): a filled square or disc of
/// colour `rgb` on a grey background, centred at (`cx`, `cy`) (fractions of the side).
pub fn draw_shape(size: usize, rgb: [f32; 3], disc: bool, cx: f32, cy: f32, radius: f32) -> Vec<f32> {
    let mut pixels = vec![0.5f32; 3 * size * size];
    for y in 0..size {
        for x in 0..size {
            let dx = (x as f32 + 0.5) / size as f32 - cx;
            let dy = (y as f32 + 0.5) / size as f32 - cy;
            let inside =
                if disc { dx * dx + dy * dy <= radius * radius } else { dx.abs() <= radius && dy.abs() <= radius };
            if inside {
                for c in 0..3 {
                    pixels[c * size * size + y * size + x] = rgb[c];
                }
            }
        }
    }
    pixels
}

/// A Python that imports `modules` (`$PYTHON`, else `bench/.venv/bin/python` from
/// `bash bench/setup.sh`, else `python3`); `None` after printing SKIPPED loudly, or a panic when
/// `REQUIRE_TORCH=1` (CI sets it).
pub fn python_with(modules: &str, test: &str) -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/.venv/bin/python");
    let candidates: Vec<PathBuf> = match std::env::var_os("PYTHON") {
        Some(python) => vec![PathBuf::from(python)],
        None => vec![venv, PathBuf::from("python3")],
    };
    let mut tried = Vec::new();
    for python in candidates {
        let probe = std::process::Command::new(&python).args(["-c", &format!("import {modules}")]).output();
        match probe {
            Ok(out) if out.status.success() => return Some(python),
            Ok(out) => tried.push(format!(
                "{}: {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("failed")
            )),
            Err(err) => tried.push(format!("{}: {err}", python.display())),
        }
    }
    let why = format!("no Python with {modules} ({}); run `bash bench/setup.sh`", tried.join("; "));
    if std::env::var("REQUIRE_TORCH").is_ok_and(|v| v == "1") {
        panic!("{test}: REQUIRE_TORCH=1 but {why}");
    }
    eprintln!("\n*** SKIPPED {test}: {why} ***\n");
    None
}

/// The real SmolLM2-135M GGUF from `bash scripts/setup-pretrained.sh`; `None` after printing
/// SKIPPED loudly, or a panic when `REQUIRE_PRETRAINED=1` (CI sets it).
pub fn pretrained_gguf(test: &str) -> Option<std::path::PathBuf> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/pretrained/SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.is_file() {
        return Some(path);
    }
    let why = format!("{} is missing; run `bash scripts/setup-pretrained.sh`", path.display());
    if std::env::var("REQUIRE_PRETRAINED").is_ok_and(|v| v == "1") {
        panic!("{test}: REQUIRE_PRETRAINED=1 but {why}");
    }
    eprintln!("\n*** SKIPPED {test}: {why} ***\n");
    None
}

/// The OpenMoji package from `bash scripts/setup-extras.sh openmoji` (`data/openmoji`); `None`
/// after printing SKIPPED loudly, or a panic when `REQUIRE_OPENMOJI=1` (CI sets it).
pub fn openmoji_dir(test: &str) -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/openmoji");
    if dir.join("openmoji.csv").is_file() {
        return Some(dir);
    }
    let why = format!("{} is missing: run `bash scripts/setup-openmoji.sh`", dir.join("openmoji.csv").display());
    if std::env::var("REQUIRE_OPENMOJI").is_ok_and(|v| v == "1") {
        panic!("{test}: REQUIRE_OPENMOJI=1 but {why}");
    }
    eprintln!("\n*** SKIPPED {test}: {why} ***\n");
    None
}
