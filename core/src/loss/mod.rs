//! Contrastive losses over a similarity matrix `S = Q Tᵀ` of shape `[N, M]` (`M >= N`; target `i`
//! is the positive of query `i`, targets `N..M` are extra hard negatives shared by all queries).
//!
//! Reference implementations in burn tensor ops, which every faster path is tested against:
//! - [`infonce()`]: the plain contrastive cross-entropy.
//! - [`ega()`]: the Explicit Gradient Amplifier. Same value as info-NCE; its gradient with respect
//!   to `S` is `(P̄ − I)/(Nτ)` with hard negatives' probabilities amplified (docs/ega.md).
//! - [`llave()`]: LLaVE hardness weighting (a real change of the forward loss).
//! - [`hcl()`]: HCL importance-weighted negatives (Robinson et al. 2021).
//!
//! [`oracle`] holds an independent float64 host implementation of info-NCE and EGA.

mod ega;
mod hcl;
mod infonce;
mod llave;
pub mod oracle;

pub use ega::{ega, ega_matrices, EgaMatrices};
pub use hcl::hcl;
pub use infonce::{infonce, logsumexp_rows};
pub use llave::llave;

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::kernels::{self, EgaKernelParams, LossPath};
use crate::{EgaError, Result};

/// Which contrastive loss trains the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Plain info-NCE (EGA with `alpha = 0`).
    #[serde(rename = "infonce")]
    InfoNce,
    /// The Explicit Gradient Amplifier (the project's default).
    #[default]
    Ega,
    /// LLaVE hardness-weighted logits.
    Llave,
    /// HCL importance-weighted negatives.
    Hcl,
}

impl std::fmt::Display for LossKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LossKind::InfoNce => "infonce",
            LossKind::Ega => "ega",
            LossKind::Llave => "llave",
            LossKind::Hcl => "hcl",
        })
    }
}

impl std::str::FromStr for LossKind {
    type Err = EgaError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "infonce" | "info-nce" => Ok(Self::InfoNce),
            "ega" => Ok(Self::Ega),
            "llave" => Ok(Self::Llave),
            "hcl" => Ok(Self::Hcl),
            other => Err(EgaError::config("loss", other, "expected infonce, ega, llave or hcl")),
        }
    }
}

/// How EGA treats the total push after amplification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rescale {
    /// `P̄[i][j] = P[i][j]·(1 + α·h[i][j])` as is: hard negatives get more push in total.
    #[default]
    None,
    /// Rescale the off-diagonal `P̄[i][·]` to sum to `1 − P[i][i]`: the push is redistributed
    /// toward hard negatives without raising its total.
    Sum,
}

impl std::fmt::Display for Rescale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rescale::None => "none",
            Rescale::Sum => "sum",
        })
    }
}

impl std::str::FromStr for Rescale {
    type Err = EgaError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Self::None),
            "sum" => Ok(Self::Sum),
            other => Err(EgaError::config("rescale", other, "expected none or sum")),
        }
    }
}

/// The loss and all of its options; serialised with every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// Which loss.
    pub kind: LossKind,
    /// Temperature of the logits `Z = S/τ`.
    pub tau: f64,
    /// EGA amplification α; 0 reproduces info-NCE exactly.
    pub alpha: f64,
    /// Temperature of the hardness score; `None` means "equal to `tau`".
    pub tau_h: Option<f64>,
    /// EGA rescale mode.
    pub rescale: Rescale,
    /// Also apply the loss with targets as queries (`Sᵀ`) and average the two. With extra
    /// negatives (`M > N`) the transposed term uses the in-batch square block `S[:, :N]ᵀ`, since
    /// the extra negatives have no positive to be queries for.
    pub symmetric: bool,
    /// LLaVE β: negative logits become `Z[i][j] + β·sg(S[i][j])` (0.5 in LLaVE's code).
    pub llave_beta: f64,
    /// HCL concentration β: importance weights `exp(β·Z)` on negatives.
    pub hcl_beta: f64,
    /// HCL debiasing class prior τ⁺ (0 disables debiasing).
    pub hcl_tau_plus: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            kind: LossKind::Ega,
            tau: 0.05,
            alpha: 1.0,
            tau_h: None,
            rescale: Rescale::None,
            symmetric: false,
            llave_beta: 0.5,
            hcl_beta: 1.0,
            hcl_tau_plus: 0.0,
        }
    }
}

impl LossConfig {
    /// info-NCE with temperature `tau`.
    pub fn infonce(tau: f64) -> Self {
        Self { tau, ..Self::default() }.with_kind(LossKind::InfoNce)
    }

    /// EGA with temperature `tau` and amplification `alpha` (other options at their defaults).
    pub fn ega(tau: f64, alpha: f64) -> Self {
        Self { kind: LossKind::Ega, tau, alpha, ..Self::default() }
    }

    /// The hardness temperature actually used.
    pub fn tau_h(&self) -> f64 {
        self.tau_h.unwrap_or(self.tau)
    }

    /// The amplification actually used: info-NCE is EGA with α = 0, whatever `alpha` says.
    pub fn alpha_used(&self) -> f64 {
        if self.kind == LossKind::InfoNce {
            0.0
        } else {
            self.alpha
        }
    }

    /// This config with the loss `kind`, and `alpha` set to the one it uses (0 for info-NCE), so
    /// that a saved config says what ran.
    pub fn with_kind(self, kind: LossKind) -> Self {
        let config = Self { kind, ..self };
        Self { alpha: config.alpha_used(), ..config }
    }

    /// The options of the fused kernels (docs/ega.md's options, in f32).
    pub fn kernel_params(&self) -> EgaKernelParams {
        EgaKernelParams {
            tau: self.tau as f32,
            tau_h: self.tau_h() as f32,
            alpha: self.alpha_used() as f32,
            rescale_sum: self.rescale == Rescale::Sum,
        }
    }

    /// Checks every option's range.
    pub fn validate(&self) -> Result<()> {
        let positive = |field: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(EgaError::config(field, v, "must be a finite number > 0"))
            }
        };
        positive("tau", self.tau)?;
        positive("tau_h", self.tau_h())?;
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(EgaError::config("alpha", self.alpha, "must be a finite number >= 0"));
        }
        if !self.llave_beta.is_finite() {
            return Err(EgaError::config("llave_beta", self.llave_beta, "must be finite"));
        }
        if !(self.hcl_beta.is_finite() && self.hcl_beta >= 0.0) {
            return Err(EgaError::config("hcl_beta", self.hcl_beta, "must be a finite number >= 0"));
        }
        if !(self.hcl_tau_plus.is_finite() && (0.0..1.0).contains(&self.hcl_tau_plus)) {
            return Err(EgaError::config("hcl_tau_plus", self.hcl_tau_plus, "must be in [0, 1)"));
        }
        Ok(())
    }

    /// Checks that `[n, m]` is a similarity matrix this loss can use.
    pub fn check_shape(&self, n: usize, m: usize) -> Result<()> {
        if n == 0 || m < n {
            return Err(EgaError::Shape {
                context: "contrastive loss",
                message: format!("similarities are [{n}, {m}]; need N >= 1 queries and M >= N targets"),
            });
        }
        if self.kind == LossKind::Hcl && m < 2 {
            return Err(EgaError::Shape {
                context: "HCL loss",
                message: format!("similarities are [{n}, {m}]; HCL needs at least one negative (M >= 2)"),
            });
        }
        Ok(())
    }
}

/// The configured loss of a similarity matrix `[N, M]`: a one-element tensor.
///
/// info-NCE and EGA run on the fused WGSL kernels on wgpu devices ([`contrastive_loss_fused`]),
/// the burn reference ops elsewhere; LLaVE and HCL always run the reference. With `symmetric`, the
/// mean of the loss over `S` and over the transposed in-batch block.
pub fn contrastive_loss(similarities: Tensor<2>, config: &LossConfig) -> Result<Tensor<1>> {
    config.validate()?;
    let [n, m] = similarities.dims();
    config.check_shape(n, m)?;
    let similarities = if matches!(config.kind, LossKind::InfoNce | LossKind::Ega)
        && kernels::ega_path(&similarities.device()) == LossPath::FusedWgsl
    {
        match contrastive_loss_fused(similarities, config) {
            Ok(loss) => return Ok(loss),
            Err(similarities) => similarities,
        }
    } else {
        similarities
    };
    Ok(reference_loss(similarities, config))
}

/// The EGA (or info-NCE) loss of `S [N, M]` through the fused kernels' per-row losses
/// ([`kernels::ega_rows_fused`]), honouring `symmetric`; `Err(S)` back when the kernels cannot
/// run on this tensor (not on wgpu, not f32, or an autodiff graph with gradient checkpointing),
/// for the caller to run the reference. `config` must be checked already ([`contrastive_loss`]
/// does).
///
/// # Shapes
/// - similarities: `[N, M]` → `[1]`
pub fn contrastive_loss_fused(similarities: Tensor<2>, config: &LossConfig) -> Result<Tensor<1>, Tensor<2>> {
    #[cfg(feature = "wgpu")]
    {
        let params = config.kernel_params();
        symmetric_mean(similarities, config, |s| kernels::ega_rows_fused(s, params).map(|rows| rows.mean()))
    }
    #[cfg(not(feature = "wgpu"))]
    {
        // Built without wgpu (the page's CPU module): no tensor can go to the kernels.
        let _ = config;
        Err(similarities)
    }
}

/// The configured loss through the burn reference ops only, on any device (what the kernels are
/// tested against).
pub fn contrastive_loss_reference(similarities: Tensor<2>, config: &LossConfig) -> Result<Tensor<1>> {
    config.validate()?;
    let [n, m] = similarities.dims();
    config.check_shape(n, m)?;
    Ok(reference_loss(similarities, config))
}

/// The reference ops on a checked config and shape.
fn reference_loss(similarities: Tensor<2>, config: &LossConfig) -> Tensor<1> {
    let one_direction = |s| reference_one_direction(s, config);
    symmetric_mean(similarities, config, |s| Ok(one_direction(s))).unwrap_or_else(one_direction)
}

/// The configured loss of `S` in one direction (queries are the rows), by the reference ops.
fn reference_one_direction(similarities: Tensor<2>, config: &LossConfig) -> Tensor<1> {
    match config.kind {
        LossKind::InfoNce => infonce(similarities, config.tau),
        LossKind::Ega => ega(similarities, config),
        LossKind::Llave => llave(similarities, config.tau, config.llave_beta),
        LossKind::Hcl => hcl(similarities, config.tau, config.hcl_beta, config.hcl_tau_plus),
    }
}

/// `one_direction(S)`, or with `symmetric` the mean of it over `S` and over the transposed
/// in-batch block `S[:, :N]ᵀ` (the extra negatives have no positive to be queries for): the one
/// assembly of every path. `Err(S)` back when `one_direction` cannot run on `S`; the transposed
/// term has the same device and dtype, so it runs where the first did, and the reference is only
/// a guard for it.
fn symmetric_mean(
    similarities: Tensor<2>,
    config: &LossConfig,
    one_direction: impl Fn(Tensor<2>) -> Result<Tensor<1>, Tensor<2>>,
) -> Result<Tensor<1>, Tensor<2>> {
    if !config.symmetric {
        return one_direction(similarities);
    }
    let [n, m] = similarities.dims();
    let square = if m == n { similarities.clone() } else { similarities.clone().slice([0..n, 0..n]) };
    let forward = one_direction(similarities)?;
    let backward =
        one_direction(square.transpose()).unwrap_or_else(|transposed| reference_one_direction(transposed, config));
    Ok((forward + backward).div_scalar(2.0))
}

/// Cosine similarities of unit-norm embeddings: `S = Q Tᵀ`.
///
/// # Shapes
/// - queries: `[N, d]`, targets: `[M, d]` → `[N, M]`
pub fn similarity_matrix(queries: Tensor<2>, targets: Tensor<2>) -> Tensor<2> {
    queries.matmul(targets.transpose())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_names_read_back() {
        // The command line shows defaults with Display and reads them with FromStr.
        for rescale in [Rescale::None, Rescale::Sum] {
            assert_eq!(rescale.to_string().parse::<Rescale>().unwrap(), rescale);
        }
        for kind in [LossKind::InfoNce, LossKind::Ega, LossKind::Llave, LossKind::Hcl] {
            assert_eq!(kind.to_string().parse::<LossKind>().unwrap(), kind);
        }
    }

    #[test]
    fn infonce_is_ega_with_alpha_zero_in_every_mapping() {
        let ega = LossConfig { alpha: 2.5, ..LossConfig::default() };
        let infonce = ega.clone().with_kind(LossKind::InfoNce);
        assert_eq!((infonce.kind, infonce.alpha), (LossKind::InfoNce, 0.0));
        assert_eq!(LossConfig::infonce(0.1), LossConfig { tau: 0.1, ..infonce.clone() });
        // A config that says info-NCE with an α (an edited run.json) still runs with α = 0.
        let edited = LossConfig { kind: LossKind::InfoNce, ..ega.clone() };
        assert_eq!((edited.alpha_used(), edited.kernel_params().alpha), (0.0, 0.0));
        // Other kinds keep their α.
        assert_eq!(ega.clone().with_kind(LossKind::Hcl).alpha, 2.5);
        assert_eq!(ega.kernel_params().alpha, 2.5);
        let sum = LossConfig { rescale: Rescale::Sum, tau_h: Some(0.2), ..ega }.kernel_params();
        assert_eq!((sum.tau, sum.tau_h, sum.rescale_sum), (0.05, 0.2, true));
    }
}
