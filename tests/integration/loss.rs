//! The loss references against docs/ega.md's oracles 1, 2, 3 and 5, on flex and on wgpu.

use burn::tensor::{Device, Tensor};
use ega_core::loss::{
    self, contrastive_loss, contrastive_loss_reference, ega_matrices, oracle, LossConfig, LossKind, Rescale,
};
use ega_core::tensor_util::{floats, to_f64_vec};
use ega_tests::{assert_close, devices, uniform};

const WORKED_S: [f64; 6] = [0.9, 0.8, 0.3, 0.1, 0.7, 0.6];

fn worked_config(rescale: Rescale) -> LossConfig {
    LossConfig { tau: 0.1, tau_h: Some(0.1), alpha: 1.0, rescale, ..LossConfig::default() }
}

/// The loss value and `∂L/∂S` of the burn reference through burn's autodiff.
fn value_and_grad(s: &[f64], n: usize, m: usize, config: &LossConfig, device: &Device) -> (f64, Vec<f64>) {
    value_and_grad_on_path(s, n, m, config, device, false)
}

/// The same through `contrastive_loss` (`fused`: the WGSL kernels on wgpu) or the reference.
pub fn value_and_grad_on_path(
    s: &[f64],
    n: usize,
    m: usize,
    config: &LossConfig,
    device: &Device,
    fused: bool,
) -> (f64, Vec<f64>) {
    let device = device.clone().autodiff();
    let sims: Tensor<2> = floats(s.iter().map(|&v| v as f32).collect(), [n, m], &device).require_grad();
    let value =
        if fused { contrastive_loss(sims.clone(), config) } else { contrastive_loss_reference(sims.clone(), config) }
            .expect("valid loss config");
    let grads = value.backward();
    let grad = to_f64_vec(sims.grad(&grads).expect("S has a gradient")).unwrap();
    (to_f64_vec(value).unwrap()[0], grad)
}

fn random_similarities(n: usize, m: usize, seed: u64) -> Vec<f64> {
    uniform(n * m, -1.0, 1.0, seed)
}

/// docs/ega.md oracle 3: the worked example, to 1e-5, for the host oracle and on every device.
#[test]
fn worked_example_matches_ega_md() {
    let probs = [0.729736, 0.268455, 0.001809, 0.001809, 0.729736, 0.268455];
    let hardness = [0.0, 0.268941, 0.002473, 0.002473, 0.0, 0.268941];
    let amplified = [0.729736, 0.340654, 0.001813, 0.001813, 0.729736, 0.340654];
    let grad_infonce = [-1.351319, 1.342275, 0.009044, 0.009044, -1.351319, 1.342275];
    let grad_ega = [-1.351319, 1.703268, 0.009067, 0.009067, -1.351319, 1.703268];
    let grad_ega_sum = [-1.351319, 1.344164, 0.007155, 0.007155, -1.351319, 1.344164];
    let loss_value = 0.315072;
    // docs/ega.md prints 6 decimals; 1e-5 leaves room for the last digit's rounding.
    let tol = 1e-5;

    let host = oracle::ega_one_direction(&WORKED_S, 2, 3, &worked_config(Rescale::None));
    assert_close("oracle P", &host.probs, &probs, tol, 0.0);
    assert_close("oracle h", &host.hardness, &hardness, tol, 0.0);
    assert_close("oracle P̄", &host.amplified_probs, &amplified, tol, 0.0);
    assert_close("oracle G info-NCE", &host.grad_infonce, &grad_infonce, tol, 0.0);
    assert_close("oracle G EGA", &host.grad, &grad_ega, tol, 0.0);
    assert_close("oracle L", &[host.loss], &[loss_value], tol, 0.0);
    let host_sum = oracle::ega_one_direction(&WORKED_S, 2, 3, &worked_config(Rescale::Sum));
    assert_close("oracle G EGA sum", &host_sum.grad, &grad_ega_sum, tol, 0.0);

    for (name, device) in devices("worked_example_matches_ega_md") {
        let sims = floats(WORKED_S.iter().map(|&v| v as f32).collect(), [2, 3], &device);
        let m = ega_matrices(sims, &worked_config(Rescale::None));
        assert_close(&format!("{name} P"), &to_f64_vec(m.probs).unwrap(), &probs, tol, 0.0);
        assert_close(&format!("{name} h"), &to_f64_vec(m.hardness).unwrap(), &hardness, tol, 0.0);
        assert_close(&format!("{name} P̄"), &to_f64_vec(m.amplified_probs).unwrap(), &amplified, tol, 0.0);
        assert_close(&format!("{name} G (matrices)"), &to_f64_vec(m.grad).unwrap(), &grad_ega, tol, 0.0);

        let (value, grad) = value_and_grad(&WORKED_S, 2, 3, &worked_config(Rescale::None), &device);
        assert_close(&format!("{name} EGA L"), &[value], &[loss_value], tol, 0.0);
        assert_close(&format!("{name} EGA autodiff G"), &grad, &grad_ega, tol, 0.0);
        let (value, grad) = value_and_grad(&WORKED_S, 2, 3, &worked_config(Rescale::Sum), &device);
        assert_close(&format!("{name} EGA sum L"), &[value], &[loss_value], tol, 0.0);
        assert_close(&format!("{name} EGA sum autodiff G"), &grad, &grad_ega_sum, tol, 0.0);
        let (value, grad) = value_and_grad(&WORKED_S, 2, 3, &LossConfig::infonce(0.1), &device);
        assert_close(&format!("{name} info-NCE L"), &[value], &[loss_value], tol, 0.0);
        assert_close(&format!("{name} info-NCE autodiff G"), &grad, &grad_infonce, tol, 0.0);
    }
}

/// docs/ega.md oracle 1: alpha = 0 gives exactly the autodiff gradient of info-NCE.
#[test]
fn ega_with_alpha_zero_equals_infonce_autodiff() {
    let shapes = [(1, 1), (2, 3), (7, 7), (7, 20), (33, 33), (16, 29)];
    for (name, device) in devices("ega_with_alpha_zero_equals_infonce_autodiff") {
        for (case, &(n, m)) in shapes.iter().enumerate() {
            for symmetric in [false, true] {
                for tau in [0.01, 0.05, 1.0] {
                    let s = random_similarities(n, m, 100 + case as u64);
                    let mut ega = LossConfig::ega(tau, 0.0);
                    ega.symmetric = symmetric;
                    let mut infonce = LossConfig::infonce(tau);
                    infonce.symmetric = symmetric;
                    let (ega_value, ega_grad) = value_and_grad(&s, n, m, &ega, &device);
                    let (info_value, info_grad) = value_and_grad(&s, n, m, &infonce, &device);
                    let what = format!("{name} [{n},{m}] tau {tau} symmetric {symmetric}");
                    assert_close(&format!("{what} value"), &[ega_value], &[info_value], 1e-5, 1e-6);
                    assert_close(&format!("{what} grad"), &ega_grad, &info_grad, 1e-5, 0.0);
                }
            }
        }
    }
}

/// docs/ega.md oracle 2: the info-NCE reference gradient equals central finite differences in f64.
#[test]
fn infonce_gradient_matches_finite_differences() {
    let (n, m) = (5, 9);
    let tau = 0.2;
    let s = random_similarities(n, m, 7);
    // Float64 central differences of the float64 loss.
    let h = 1e-6;
    let finite_differences: Vec<f64> = (0..n * m)
        .map(|k| {
            let (mut plus, mut minus) = (s.clone(), s.clone());
            plus[k] += h;
            minus[k] -= h;
            (oracle::infonce_loss(&plus, n, m, tau) - oracle::infonce_loss(&minus, n, m, tau)) / (2.0 * h)
        })
        .collect();
    // The f64 oracle's analytic gradient (P − I)/(Nτ) agrees to rel 1e-4 ...
    let host = oracle::ega_one_direction(&s, n, m, &LossConfig::infonce(tau));
    assert_close("oracle (P − I)/(Nτ) vs finite differences", &host.grad_infonce, &finite_differences, 1e-8, 1e-4);
    // ... and so does burn's autodiff of the reference, on every device (f32: atol 1e-5 as in docs/ega.md).
    for (name, device) in devices("infonce_gradient_matches_finite_differences") {
        let (_, grad) = value_and_grad(&s, n, m, &LossConfig::infonce(tau), &device);
        assert_close(&format!("{name} autodiff vs finite differences"), &grad, &finite_differences, 1e-5, 1e-4);
    }
    // In f64 on flex, the burn reference itself against finite differences of itself.
    let device = Device::flex().autodiff();
    let data = burn::tensor::TensorData::new(s.clone(), [n, m]);
    let sims: Tensor<2> = Tensor::from_data(data, (&device, burn::tensor::DType::F64)).require_grad();
    let value = loss::infonce(sims.clone(), tau);
    let grad = to_f64_vec(sims.grad(&value.backward()).unwrap()).unwrap();
    let burn_loss = |values: &[f64]| -> f64 {
        let data = burn::tensor::TensorData::new(values.to_vec(), [n, m]);
        let t: Tensor<2> = Tensor::from_data(data, (&Device::flex(), burn::tensor::DType::F64));
        to_f64_vec(loss::infonce(t, tau)).unwrap()[0]
    };
    let burn_fd: Vec<f64> = (0..n * m)
        .map(|k| {
            let (mut plus, mut minus) = (s.clone(), s.clone());
            plus[k] += h;
            minus[k] -= h;
            (burn_loss(&plus) - burn_loss(&minus)) / (2.0 * h)
        })
        .collect();
    assert_close("flex f64 autodiff vs its own finite differences", &grad, &burn_fd, 1e-8, 1e-4);
}

/// The burn EGA reference equals the independent f64 oracle for every option.
#[test]
fn ega_reference_matches_f64_oracle_for_every_option() {
    let shapes = [(1, 1), (1, 5), (2, 3), (7, 7), (7, 20), (64, 64), (31, 44)];
    for (name, device) in devices("ega_reference_matches_f64_oracle_for_every_option") {
        for (case, &(n, m)) in shapes.iter().enumerate() {
            for (tau, tau_h, alpha) in
                [(0.05, None, 1.0), (0.1, Some(0.2), 2.5), (1.0, Some(0.05), 0.5), (0.01, None, 1.0)]
            {
                for rescale in [Rescale::None, Rescale::Sum] {
                    for symmetric in [false, true] {
                        let config = LossConfig { tau, tau_h, alpha, rescale, symmetric, ..LossConfig::default() };
                        let s = random_similarities(n, m, 1000 + case as u64);
                        let (want_value, _, want_grad) = oracle::ega_loss_and_grads(&s, n, m, &config);
                        // The reference, and the default path (the fused kernels on wgpu).
                        for fused in [false, true] {
                            let (value, grad) = value_and_grad_on_path(&s, n, m, &config, &device, fused);
                            let what = format!("{name} fused={fused} [{n},{m}] {config:?}");
                            assert_close(&format!("{what} value"), &[value], &[want_value], 1e-5, 1e-4);
                            assert_close(&format!("{what} grad"), &grad, &want_grad, 1e-5, 1e-4);
                        }
                    }
                }
            }
        }
    }
}

/// LLaVE with β = 0 and HCL with β = 0, τ⁺ = 0 are info-NCE; with β > 0 they match a host formula.
#[test]
fn llave_and_hcl_reduce_to_infonce_and_match_host_formulas() {
    let (n, m) = (6, 10);
    let tau = 0.1;
    let s = random_similarities(n, m, 42);
    let host_llave = |beta: f64| -> f64 {
        let shifted: Vec<f64> =
            (0..n * m).map(|k| s[k] + if k / m != k % m { beta * s[k] * tau } else { 0.0 }).collect();
        oracle::infonce_loss(&shifted, n, m, tau)
    };
    let host_hcl = |beta: f64, tau_plus: f64| -> f64 {
        let mut total = 0.0;
        for i in 0..n {
            let z: Vec<f64> = (0..m).map(|j| s[i * m + j] / tau).collect();
            let negatives: Vec<f64> = (0..m).filter(|&j| j != i).map(|j| z[j]).collect();
            let count = negatives.len() as f64;
            let mean_weight = negatives.iter().map(|&v| (beta * v).exp()).sum::<f64>() / count;
            let weighted: f64 = negatives.iter().map(|&v| (beta * v).exp() / mean_weight * v.exp()).sum();
            let ng = ((weighted - count * tau_plus * z[i].exp()) / (1.0 - tau_plus)).max(count * (-1.0 / tau).exp());
            total += -(z[i].exp() / (z[i].exp() + ng)).ln();
        }
        total / n as f64
    };
    for (name, device) in devices("llave_and_hcl_reduce_to_infonce_and_match_host_formulas") {
        let (info_value, info_grad) = value_and_grad(&s, n, m, &LossConfig::infonce(tau), &device);
        let llave = |beta| LossConfig { kind: LossKind::Llave, tau, llave_beta: beta, ..LossConfig::default() };
        let hcl = |beta, tau_plus| LossConfig {
            kind: LossKind::Hcl,
            tau,
            hcl_beta: beta,
            hcl_tau_plus: tau_plus,
            ..LossConfig::default()
        };

        let (value, grad) = value_and_grad(&s, n, m, &llave(0.0), &device);
        assert_close(&format!("{name} LLaVE β=0 value"), &[value], &[info_value], 1e-5, 1e-5);
        assert_close(&format!("{name} LLaVE β=0 grad"), &grad, &info_grad, 1e-5, 1e-4);
        let (value, grad) = value_and_grad(&s, n, m, &hcl(0.0, 0.0), &device);
        assert_close(&format!("{name} HCL β=0 value"), &[value], &[info_value], 1e-5, 1e-5);
        assert_close(&format!("{name} HCL β=0 grad"), &grad, &info_grad, 1e-5, 1e-4);

        for beta in [0.5, 9.0] {
            let (value, _) = value_and_grad(&s, n, m, &llave(beta), &device);
            assert_close(&format!("{name} LLaVE β={beta}"), &[value], &[host_llave(beta)], 1e-5, 1e-5);
        }
        for (beta, tau_plus) in [(1.0, 0.0), (0.5, 0.1), (2.0, 0.05)] {
            let (value, grad) = value_and_grad(&s, n, m, &hcl(beta, tau_plus), &device);
            assert_close(
                &format!("{name} HCL β={beta} τ⁺={tau_plus}"),
                &[value],
                &[host_hcl(beta, tau_plus)],
                1e-5,
                1e-4,
            );
            assert!(grad.iter().all(|g| g.is_finite()), "{name} HCL gradient not finite");
            assert!(grad.iter().any(|g| g.abs() > 1e-6), "{name} HCL gradient is all zero");
        }
    }
}

/// docs/ega.md oracle 5: no NaN or Inf for finite input, including equal rows and τ = 0.01 with
/// similarities near ±1, for every loss and option.
#[test]
fn no_nan_or_inf_on_extreme_inputs() {
    let mut inputs: Vec<(&str, usize, usize, Vec<f64>)> = vec![
        ("all equal", 4, 4, vec![0.5; 16]),
        ("all equal to 1", 3, 7, vec![1.0; 21]),
        ("all equal to -1", 3, 3, vec![-1.0; 9]),
        ("one by one", 1, 1, vec![0.3]),
    ];
    // Similarities near ±1: positives at -1, negatives at +1 (the worst case for the logits).
    let (n, m) = (8, 13);
    inputs.push((
        "positives -1, negatives +1",
        n,
        m,
        (0..n * m).map(|k| if k / m == k % m { -1.0 } else { 1.0 }).collect(),
    ));
    inputs.push((
        "positives +1, negatives -1",
        n,
        m,
        (0..n * m).map(|k| if k / m == k % m { 1.0 } else { -1.0 }).collect(),
    ));
    inputs.push((
        "near ±1",
        n,
        m,
        uniform(n * m, -1.0, 1.0, 5).iter().map(|v| v.signum() * (1.0 - v.abs() * 1e-3)).collect(),
    ));
    for (name, device) in devices("no_nan_or_inf_on_extreme_inputs") {
        for (what, n, m, s) in &inputs {
            for kind in [LossKind::InfoNce, LossKind::Ega, LossKind::Llave, LossKind::Hcl] {
                if kind == LossKind::Hcl && *m < 2 {
                    continue;
                }
                for tau in [0.01, 0.05] {
                    for rescale in [Rescale::None, Rescale::Sum] {
                        for (symmetric, tau_plus) in [(false, 0.0), (true, 0.1)] {
                            let config = LossConfig {
                                kind,
                                tau,
                                rescale,
                                symmetric,
                                hcl_tau_plus: tau_plus,
                                llave_beta: 9.0,
                                ..LossConfig::default()
                            };
                            for fused in [false, true] {
                                let (value, grad) = value_and_grad_on_path(s, *n, *m, &config, &device, fused);
                                assert!(value.is_finite(), "{name} fused={fused} {what} {config:?}: loss {value}");
                                if let Some((k, g)) = grad.iter().enumerate().find(|(_, g)| !g.is_finite()) {
                                    panic!("{name} fused={fused} {what} {config:?}: gradient[{k}] = {g}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Bad configurations and shapes are errors that name the field, not panics.
#[test]
fn bad_loss_configs_are_clear_errors() {
    let device = Device::flex();
    let sims = floats(vec![0.1; 6], [2, 3], &device);
    let bad = [
        (LossConfig { tau: 0.0, ..LossConfig::default() }, "tau"),
        (LossConfig { tau: f64::NAN, ..LossConfig::default() }, "tau"),
        (LossConfig { tau_h: Some(-1.0), ..LossConfig::default() }, "tau_h"),
        (LossConfig { alpha: -1.0, ..LossConfig::default() }, "alpha"),
        (LossConfig { hcl_tau_plus: 1.0, ..LossConfig::default() }, "hcl_tau_plus"),
    ];
    for (config, field) in bad {
        let err = contrastive_loss(sims.clone(), &config).expect_err("must be rejected").to_string();
        assert!(err.contains(field), "error {err:?} does not name {field}");
    }
    let tall = floats(vec![0.1; 6], [3, 2], &device);
    let err = contrastive_loss(tall, &LossConfig::default()).expect_err("M < N must be rejected").to_string();
    assert!(err.contains("[3, 2]"), "{err}");
    let single = floats(vec![0.1], [1, 1], &device);
    let hcl = LossConfig { kind: LossKind::Hcl, ..LossConfig::default() };
    assert!(contrastive_loss(single, &hcl).is_err(), "HCL without negatives must be rejected");
    assert!("ega".parse::<LossKind>().is_ok() && "nce".parse::<LossKind>().is_err());
    let json = serde_json::to_string(&LossConfig::default()).unwrap();
    assert_eq!(serde_json::from_str::<LossConfig>(&json).unwrap(), LossConfig::default());
    assert!(serde_json::from_str::<LossConfig>(r#"{"tua": 0.1}"#).is_err(), "unknown fields are rejected");
}
