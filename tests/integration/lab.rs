//! The browser lab's engine (`ega_core::lab`), run natively on the CPU backend: both copies start
//! identical, take the same batches, and only their gradients differ; the views are docs/ega.md's
//! matrices of the copies' own similarities; the PCA finds a known plane.

use burn::tensor::Device;
use ega_core::lab::{pca_2d, Lab, LabConfig};
use ega_core::loss::Rescale;
use ega_core::tensor_util::{scalar, to_f32_vec};

fn small_lab() -> Lab {
    let config =
        LabConfig { batch_size: 4, hard_negatives: 1, heldout: 8, rescale: Rescale::None, ..LabConfig::default() };
    Lab::new(config, &Device::flex().autodiff()).expect("the lab starts")
}

fn view_values(lab: &Lab, which: usize) -> Vec<f32> {
    to_f32_vec(lab.view_embeddings(which)).unwrap()
}

#[test]
fn lab_copies_start_identical_and_diverge_only_through_their_loss() {
    let mut lab = small_lab();
    let (n, m) = lab.view_shape();
    assert_eq!((n, m), (4, 8), "4 pairs + 4 hard-negative images");
    let side = lab.model_config.image_size();
    assert_eq!(lab.view_captions().len(), n);
    let targets = lab.view_targets();
    assert_eq!(targets.len(), m);
    assert!(targets.iter().all(|(_, image)| image.as_raw().len() == side * side * 3));
    let owners: Vec<usize> = targets.iter().map(|(owner, _)| *owner).collect();
    assert_eq!(owners, [0, 1, 2, 3, 0, 1, 2, 3], "positives, then each pair's hard negative");

    let before = [lab.view(0, &view_values(&lab, 0)).unwrap(), lab.view(1, &view_values(&lab, 1)).unwrap()];
    assert_eq!(before[0].s, before[1].s, "both copies start from the same weights");
    assert_eq!(before[0].value, before[1].value, "info-NCE and EGA have the same loss value");
    let tau = lab.config.tau;
    for k in 0..n * m {
        let identity = if k / m == k % m { 1.0 } else { 0.0 };
        let expected = (before[0].probs[k] - identity) / (n as f64 * tau);
        assert!((before[0].grad[k] - expected).abs() < 1e-9, "info-NCE's G = (P − I)/(Nτ) at {k}");
        assert_eq!(before[0].amplified[k], before[0].probs[k], "info-NCE does not amplify");
        if k / m != k % m {
            assert!(before[1].amplified[k] > before[1].probs[k], "EGA amplifies every negative (α = 1) at {k}");
        }
    }
    assert_eq!(before[0].pca.len(), n + m);

    // From scratch EGA's α ramps from step ALPHA_START, so 12 steps separate the copies; both losses stay finite.
    for _ in 0..12 {
        let batch = lab.next_batch().unwrap();
        for which in 0..2 {
            let pending = lab.forward(which, &batch).unwrap();
            let value = scalar(pending.loss.clone()).unwrap();
            let stats = lab.apply(which, pending, value).unwrap();
            assert!(stats.loss.is_finite());
        }
    }
    assert_eq!(lab.step(), 12);
    let after = [lab.view(0, &view_values(&lab, 0)).unwrap(), lab.view(1, &view_values(&lab, 1)).unwrap()];
    assert_ne!(after[0].s, before[0].s, "training moved the embeddings");
    assert_ne!(after[0].s, after[1].s, "EGA's amplified gradient trained its copy differently");

    let metrics = lab.metrics(&to_f32_vec(lab.heldout_embeddings(1)).unwrap()).unwrap();
    assert!((0.0..=1.0).contains(&metrics.r1) && (0.0..=1.0).contains(&metrics.hard_negative_acc));

    // A pending step cannot be applied twice, and bad options are refused by name.
    let batch = lab.next_batch().unwrap();
    let stale = lab.forward(0, &batch).unwrap();
    let fresh = lab.forward(0, &batch).unwrap();
    lab.apply(0, fresh, 1.0).unwrap();
    assert!(lab.apply(0, stale, 1.0).is_err());
    let err = lab.set_loss(0.0, 1.0, 0.05, Rescale::Sum).unwrap_err().to_string();
    assert!(err.contains("tau"), "{err}");
    lab.set_loss(0.1, 2.0, 0.1, Rescale::Sum).unwrap();
    assert_eq!(lab.config.alpha, 2.0);
}

#[test]
fn lab_refuses_out_of_range_settings() {
    for config in [
        LabConfig { batch_size: 1, ..LabConfig::default() },
        LabConfig { hard_negatives: 4, ..LabConfig::default() },
        LabConfig { heldout: 1000, ..LabConfig::default() },
        LabConfig { alpha: -1.0, ..LabConfig::default() },
    ] {
        assert!(Lab::new(config.clone(), &Device::flex().autodiff()).is_err(), "{config:?} accepted");
    }
}

#[test]
fn pca_recovers_a_plane_in_higher_dimensions() {
    // Points a·u + b·v (u, v orthonormal in 5-D) with a spread wider than b: PCA's first
    // coordinate is ±a and its second ±b.
    let u = [0.6f32, 0.8, 0.0, 0.0, 0.0];
    let v = [0.0f32, 0.0, 0.0, 1.0, 0.0];
    // A grid: a and b uncorrelated, both of mean 0.
    let coeffs: Vec<(f32, f32)> =
        [-8.0f32, -4.0, 0.0, 4.0, 8.0].iter().flat_map(|&a| [-1.0f32, 1.0].map(|b| (a, b))).collect();
    let points: Vec<f32> = coeffs.iter().flat_map(|(a, b)| (0..5).map(move |c| a * u[c] + b * v[c])).collect();
    let projected = pca_2d(&points, coeffs.len(), 5);
    for ((a, b), [x, y]) in coeffs.iter().zip(&projected) {
        assert!((x.abs() - a.abs()).abs() < 1e-4, "first coordinate {x} for a = {a}");
        assert!((y.abs() - b.abs()).abs() < 1e-4, "second coordinate {y} for b = {b}");
    }
}

#[test]
fn lab_fine_tunes_the_committed_starting_model() {
    let device = Device::flex().autodiff();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/lab/model");
    let bundle = ega_core::bundle::load(&dir, &device).expect("assets/lab/model loads");
    let config = LabConfig { preset: "ignored".into(), batch_size: 4, heldout: 16, ..LabConfig::default() };
    let mut lab = Lab::from_bundle(config, bundle, &device).unwrap();
    assert_eq!(lab.config.preset, "tiny", "the bundle's shape wins");
    assert_eq!(lab.model_config.image_size(), 32);
    assert_eq!(lab.view_targets()[0].1.width(), 32);
    // The trained model already ranks most held-out captions' images first (a fresh one: ~1/16).
    let before = lab.metrics(&to_f32_vec(lab.heldout_embeddings(1)).unwrap()).unwrap();
    assert!(before.r1 >= 0.25, "held-out R@1 of the starting model: {}", before.r1);
    let batch = lab.next_batch().unwrap();
    for which in 0..2 {
        let pending = lab.forward(which, &batch).unwrap();
        let value = scalar(pending.loss.clone()).unwrap();
        assert!(value < 2.0, "a trained model's loss is well below ln M = ln 8: {value}");
        lab.apply(which, pending, value).unwrap();
    }
    assert_eq!(lab.step(), 1);
}
