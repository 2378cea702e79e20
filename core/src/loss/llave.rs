//! LLaVE hardness weighting (Lan et al. 2025, "LLaVE: Large Language and Vision Embedding Models
//! with Hardness-Weighted Contrastive Learning"): each negative's term in the softmax denominator
//! is weighted by `exp(β·sg(S[i][j]))`, i.e. its logit becomes `Z[i][j] + β·sg(S[i][j])`.
//! Unlike EGA this changes the loss value itself.

use burn::tensor::Tensor;

use super::infonce::cross_entropy_diagonal;
use crate::tensor_util::eye;

/// LLaVE loss of similarities `[N, M]`.
///
/// # Shapes
/// - similarities: `[N, M]` → `[1]`
pub fn llave(similarities: Tensor<2>, tau: f64, beta: f64) -> Tensor<1> {
    let [n, m] = similarities.dims();
    let off_diagonal = eye(n, m, &similarities.device()).neg().add_scalar(1.0); // [N, M]
    let weight_logits = similarities.clone().detach().mul_scalar(beta) * off_diagonal; // [N, M]
    cross_entropy_diagonal(similarities.div_scalar(tau) + weight_logits)
}
