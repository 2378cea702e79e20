//! The Explicit Gradient Amplifier (docs/ega.md): info-NCE's value, with a backward pass that pushes
//! hard negatives harder.
//!
//! ```text
//! P      = softmax(S/τ)                                   [N, M]
//! h[i,j] = σ((S[i,j] − S[i,i]) / τ_h)          (j ≠ i)    relative-similarity hardness
//! P̄[i,j] = P[i,j]·(1 + α·h[i,j])               (j ≠ i),   P̄[i,i] = P[i,i]
//! G      = ∂L/∂S = (P̄ − I) / (N·τ)                        (P̄ is a constant: no gradient through it)
//! ```
//!
//! The reference uses the stop-gradient identity `value = sg(L) + Σ G⊙S − sg(Σ G⊙S)` with
//! `G = G(sg(S))`: its value is exactly `L` (the last two terms are the same float) and its
//! gradient with respect to `S` is exactly `G`. This works on every burn device and under
//! every autodiff graph; the fused WGSL kernel is held to it by tests.

use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::Tensor;

use super::infonce::infonce;
use super::{LossConfig, Rescale};
use crate::tensor_util::{diagonal_index, eye};

/// Hardness arguments beyond ±80 saturate σ to 0 or 1 in f32 anyway; clamping keeps `exp` finite.
const HARDNESS_CLAMP: f64 = 80.0;
/// Guards the `sum` rescale's division when a row has no off-diagonal mass at all.
const TINY: f64 = 1.0e-30;

/// Every intermediate of EGA's backward for one similarity matrix (what the lab draws).
#[derive(Debug, Clone)]
pub struct EgaMatrices {
    /// `P = softmax(S/τ)`, `[N, M]`.
    pub probs: Tensor<2>,
    /// `h`, `[N, M]`, zero on the diagonal.
    pub hardness: Tensor<2>,
    /// `P̄`, `[N, M]` (after the rescale mode).
    pub amplified_probs: Tensor<2>,
    /// `G = (P̄ − I)/(Nτ)`, `[N, M]`: EGA's gradient of the loss with respect to `S`.
    pub grad: Tensor<2>,
}

/// `P`, `h`, `P̄` and `G` of similarities `[N, M]` (computed without gradient).
///
/// # Shapes
/// - similarities: `[N, M]`
pub fn ega_matrices(similarities: Tensor<2>, config: &LossConfig) -> EgaMatrices {
    let s = similarities.detach();
    let [n, m] = s.dims();
    let device = s.device();
    let identity = eye(n, m, &device); // [N, M]
    let off_diagonal = identity.clone().neg().add_scalar(1.0); // [N, M]

    let probs = softmax(s.clone().div_scalar(config.tau), 1); // [N, M]
    let positive = s.clone().gather(1, diagonal_index(n, &device)); // [N, 1]
    let hardness = sigmoid((s - positive).div_scalar(config.tau_h()).clamp(-HARDNESS_CLAMP, HARDNESS_CLAMP))
        * off_diagonal.clone(); // [N, M]

    let amplified = probs.clone() * hardness.clone().mul_scalar(config.alpha).add_scalar(1.0);
    let amplified_probs = match config.rescale {
        Rescale::None => amplified,
        Rescale::Sum => {
            // 1 − P[i][i] is taken as Σ_{j≠i} P[i][j]: no cancellation when P[i][i] ≈ 1.
            let off_amplified = amplified * off_diagonal.clone();
            let target_mass = (probs.clone() * off_diagonal).sum_dim(1); // [N, 1]
            let scale = target_mass / off_amplified.clone().sum_dim(1).clamp_min(TINY); // [N, 1]
            probs.clone() * identity.clone() + off_amplified * scale
        }
    };
    let grad = (amplified_probs.clone() - identity).div_scalar(n as f64 * config.tau);
    EgaMatrices { probs, hardness, amplified_probs, grad }
}

/// EGA loss of similarities `[N, M]`: the value of info-NCE, the gradient `G` of [`ega_matrices`].
///
/// # Shapes
/// - similarities: `[N, M]` → `[1]`
pub fn ega(similarities: Tensor<2>, config: &LossConfig) -> Tensor<1> {
    let value = infonce(similarities.clone().detach(), config.tau);
    let grad = ega_matrices(similarities.clone(), config).grad;
    let surrogate = (grad * similarities).sum(); // [1], d/dS = G
    value + surrogate.clone() - surrogate.detach()
}
