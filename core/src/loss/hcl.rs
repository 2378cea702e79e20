//! HCL (Robinson et al. 2021, "Contrastive Learning with Hard Negative Samples", ICLR): negatives
//! are importance-weighted by `exp(β·Z)` (normalised to mean 1), with optional debiasing by the
//! class prior `τ⁺`:
//!
//! ```text
//! Ng_i   = max( (Σ_j w_ij e^{Z_ij} − n·τ⁺·e^{Z_ii}) / (1 − τ⁺),  n·e^{−1/τ} ),  w_ij = e^{βZ_ij} / mean_k e^{βZ_ik}
//! loss_i = −log( e^{Z_ii} / (e^{Z_ii} + Ng_i) )                                   (j, k ≠ i; n = M − 1)
//! ```
//!
//! Computed in the log domain so that τ = 0.01 with similarities near ±1 stays finite.

use burn::tensor::activation::softplus;
use burn::tensor::Tensor;

use super::infonce::logsumexp_rows;
use crate::tensor_util::{diagonal_index, eye};

/// Replaces the positive's entry in a log-sum-exp over negatives: `exp` of it underflows to 0.
const MASKED: f64 = -1.0e9;

/// HCL loss of similarities `[N, M]` (`M >= 2`).
///
/// # Shapes
/// - similarities: `[N, M]` → `[1]`
pub fn hcl(similarities: Tensor<2>, tau: f64, beta: f64, tau_plus: f64) -> Tensor<1> {
    let [n, m] = similarities.dims();
    let device = similarities.device();
    let negatives = (m - 1) as f64;
    let logits = similarities.div_scalar(tau); // [N, M]
    let positive = logits.clone().gather(1, diagonal_index(n, &device)); // [N, 1]
    let diagonal = eye(n, m, &device).equal_elem(1.0);
    // Row-wise log-sum-exp over the negatives only (the positive masked out after scaling).
    let negatives_lse = |x: Tensor<2>| logsumexp_rows(x.mask_fill(diagonal.clone(), MASKED)); // [N, 1]
                                                                                              // log Σ_j w_j e^{Z_j} = lse((1+β)Z) − (lse(βZ) − log n)
    let log_weighted =
        negatives_lse(logits.clone().mul_scalar(1.0 + beta)) - negatives_lse(logits.mul_scalar(beta)) + negatives.ln(); // [N, 1]
    let log_ng = if tau_plus == 0.0 {
        log_weighted
    } else {
        // Shift by c = max(log_weighted, positive) so that the exponentials stay in range.
        let shift = log_weighted.clone().max_pair(positive.clone()).detach(); // [N, 1]
        let debiased = ((log_weighted - shift.clone()).exp()
            - (positive.clone() - shift.clone()).exp().mul_scalar(negatives * tau_plus))
        .div_scalar(1.0 - tau_plus);
        let floor = shift.clone().neg().sub_scalar(1.0 / tau).exp().mul_scalar(negatives);
        debiased.max_pair(floor).clamp_min(1.0e-30).log() + shift
    };
    // −log(e^a / (e^a + e^b)) = softplus(b − a)
    softplus(log_ng - positive, 1.0).mean().reshape([1])
}
