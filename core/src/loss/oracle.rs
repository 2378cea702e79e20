//! An independent float64 host implementation of info-NCE and EGA (docs/ega.md), written with plain
//! loops. It is the oracle that the burn reference and the WGSL kernels are tested against, and
//! it computes the lab's worked example exactly.

use super::{LossConfig, Rescale};

/// Everything EGA computes for a similarity matrix, in float64, row-major `[N, M]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EgaOracle {
    /// Number of queries.
    pub n: usize,
    /// Number of targets.
    pub m: usize,
    /// The loss value (identical for info-NCE and EGA).
    pub loss: f64,
    /// `P = softmax(S/τ)`.
    pub probs: Vec<f64>,
    /// `h` (0 on the diagonal).
    pub hardness: Vec<f64>,
    /// `P̄`.
    pub amplified_probs: Vec<f64>,
    /// info-NCE's gradient `(P − I)/(Nτ)`.
    pub grad_infonce: Vec<f64>,
    /// EGA's gradient `(P̄ − I)/(Nτ)`.
    pub grad: Vec<f64>,
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// info-NCE loss value of `s` (`[n, m]` row-major) at temperature `tau`, in float64.
pub fn infonce_loss(s: &[f64], n: usize, m: usize, tau: f64) -> f64 {
    assert_eq!(s.len(), n * m, "s must hold n*m values");
    let mut total = 0.0;
    for i in 0..n {
        let row = &s[i * m..(i + 1) * m];
        let max = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b / tau));
        let lse = max + row.iter().map(|&x| (x / tau - max).exp()).sum::<f64>().ln();
        total += lse - row[i] / tau;
    }
    total / n as f64
}

/// EGA in one direction (no symmetry) of `s` `[n, m]`.
pub fn ega_one_direction(s: &[f64], n: usize, m: usize, config: &LossConfig) -> EgaOracle {
    assert_eq!(s.len(), n * m, "s must hold n*m values");
    assert!(n >= 1 && m >= n, "need 1 <= n <= m");
    let (tau, tau_h, alpha) = (config.tau, config.tau_h(), config.alpha);
    let mut probs = vec![0.0; n * m];
    let mut hardness = vec![0.0; n * m];
    let mut amplified = vec![0.0; n * m];
    for i in 0..n {
        let row = &s[i * m..(i + 1) * m];
        let max = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b / tau));
        let denom: f64 = row.iter().map(|&x| (x / tau - max).exp()).sum();
        for j in 0..m {
            probs[i * m + j] = (row[j] / tau - max).exp() / denom;
        }
        let mut off_probs = 0.0;
        let mut off_amplified = 0.0;
        for j in 0..m {
            let k = i * m + j;
            if j == i {
                amplified[k] = probs[k];
            } else {
                hardness[k] = sigmoid((row[j] - row[i]) / tau_h);
                amplified[k] = probs[k] * (1.0 + alpha * hardness[k]);
                off_probs += probs[k];
                off_amplified += amplified[k];
            }
        }
        if config.rescale == Rescale::Sum && off_amplified > 0.0 {
            for j in (0..m).filter(|&j| j != i) {
                amplified[i * m + j] *= off_probs / off_amplified;
            }
        }
    }
    let scale = 1.0 / (n as f64 * tau);
    let minus_identity = |v: &[f64]| -> Vec<f64> {
        (0..n * m).map(|k| (v[k] - if k / m == k % m { 1.0 } else { 0.0 }) * scale).collect()
    };
    EgaOracle {
        n,
        m,
        loss: infonce_loss(s, n, m, tau),
        grad_infonce: minus_identity(&probs),
        grad: minus_identity(&amplified),
        probs,
        hardness,
        amplified_probs: amplified,
    }
}

/// The loss value and EGA gradient with respect to `s` `[n, m]`, honouring `symmetric` (the
/// transposed term uses the square block `s[:, :n]ᵀ`). Returns `(loss, grad_infonce, grad)`.
pub fn ega_loss_and_grads(s: &[f64], n: usize, m: usize, config: &LossConfig) -> (f64, Vec<f64>, Vec<f64>) {
    let forward = ega_one_direction(s, n, m, config);
    if !config.symmetric {
        return (forward.loss, forward.grad_infonce, forward.grad);
    }
    // transposed[a][b] = s[b][a] for a, b < n
    let transposed: Vec<f64> = (0..n * n).map(|k| s[(k % n) * m + k / n]).collect();
    let backward = ega_one_direction(&transposed, n, n, config);
    let mut grad_infonce: Vec<f64> = forward.grad_infonce.iter().map(|g| g / 2.0).collect();
    let mut grad: Vec<f64> = forward.grad.iter().map(|g| g / 2.0).collect();
    for a in 0..n {
        for b in 0..n {
            // d/ds[b][a] of the transposed term is its gradient at [a][b]
            grad_infonce[b * m + a] += backward.grad_infonce[a * n + b] / 2.0;
            grad[b * m + a] += backward.grad[a * n + b] / 2.0;
        }
    }
    ((forward.loss + backward.loss) / 2.0, grad_infonce, grad)
}
