//! info-NCE: `L = (1/N) Σ_i −log softmax(S/τ)[i][i]`, computed with a stable log-sum-exp.

use burn::tensor::Tensor;

use crate::tensor_util::diagonal_index;

/// Row-wise `log Σ_j exp(x[i][j])` of `[N, M]`, stable: the row maximum is subtracted first.
///
/// # Shapes
/// - x: `[N, M]` → `[N, 1]`
pub fn logsumexp_rows(x: Tensor<2>) -> Tensor<2> {
    // The shift cancels out of the value and of the gradient, so it needs no gradient itself.
    let row_max = x.clone().max_dim(1).detach(); // [N, 1]
    (x - row_max.clone()).exp().sum_dim(1).log() + row_max
}

/// Mean over rows of `lse(logits[i]) − logits[i][i]`.
///
/// # Shapes
/// - logits: `[N, M]` → `[1]`
pub(crate) fn cross_entropy_diagonal(logits: Tensor<2>) -> Tensor<1> {
    let [n, _] = logits.dims();
    let device = logits.device();
    let positive = logits.clone().gather(1, diagonal_index(n, &device)); // [N, 1]
    (logsumexp_rows(logits) - positive).mean().reshape([1])
}

/// info-NCE of similarities `[N, M]` at temperature `tau`; its autodiff gradient is `(P − I)/(Nτ)`.
///
/// # Shapes
/// - similarities: `[N, M]` → `[1]`
pub fn infonce(similarities: Tensor<2>, tau: f64) -> Tensor<1> {
    cross_entropy_diagonal(similarities.div_scalar(tau))
}
