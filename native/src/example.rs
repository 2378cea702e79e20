//! `native example`: EGA on a small similarity matrix, through the float64 oracle and through the
//! burn reference on a device.

use anyhow::{Context, Result};
use clap::Args;
use ega_core::device::{self, DeviceChoice};
use ega_core::loss::{self, oracle, LossConfig, Rescale};
use ega_core::tensor_util::{floats, to_f64_vec};

#[derive(Args, Debug)]
pub struct ExampleArgs {
    /// Similarity matrix rows, `;`-separated, values `,`-separated (N rows, M >= N columns).
    #[arg(long, default_value = "0.9,0.8,0.3;0.1,0.7,0.6")]
    pub similarities: String,
    /// Temperature τ of the logits.
    #[arg(long, default_value_t = 0.1)]
    pub tau: f64,
    /// Amplification α (0 = info-NCE).
    #[arg(long, default_value_t = LossConfig::default().alpha)]
    pub alpha: f64,
    /// Hardness temperature τ_h (default: equal to τ).
    #[arg(long)]
    pub tau_h: Option<f64>,
    /// Rescale mode: none or sum.
    #[arg(long, default_value_t = LossConfig::default().rescale)]
    pub rescale: Rescale,
    /// Also compute the loss on Sᵀ and average (targets as queries).
    #[arg(long)]
    pub symmetric: bool,
    /// Device that runs the burn reference (the float64 oracle runs on the host).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
}

fn parse_matrix(text: &str) -> Result<(Vec<f64>, usize, usize)> {
    let rows: Vec<Vec<f64>> = text
        .split(';')
        .enumerate()
        .map(|(r, row)| {
            row.split(',')
                .map(|v| v.trim().parse::<f64>().with_context(|| format!("row {}: {v:?} is not a number", r + 1)))
                .collect::<Result<Vec<f64>>>()
        })
        .collect::<Result<_>>()?;
    let n = rows.len();
    let m = rows[0].len();
    if let Some((r, row)) = rows.iter().enumerate().find(|(_, row)| row.len() != m) {
        anyhow::bail!("row {} has {} values, row 1 has {m}", r + 1, row.len());
    }
    if m < n {
        anyhow::bail!("{n} rows but only {m} columns: need M >= N (column i is row i's positive)");
    }
    if let Some(v) = rows.iter().flatten().find(|v| !v.is_finite()) {
        anyhow::bail!("similarity {v} is not finite");
    }
    Ok((rows.into_iter().flatten().collect(), n, m))
}

fn print_matrix(name: &str, values: &[f64], m: usize) {
    println!("{name}");
    for row in values.chunks(m) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:>10.6}")).collect();
        println!("  [{}]", cells.join(", "));
    }
}

/// `native example`.
pub fn run(args: ExampleArgs) -> Result<()> {
    let (s, n, m) = parse_matrix(&args.similarities).context("reading --similarities")?;
    let config = LossConfig {
        tau: args.tau,
        alpha: args.alpha,
        tau_h: args.tau_h,
        rescale: args.rescale,
        symmetric: args.symmetric,
        ..LossConfig::default()
    };
    config.validate()?;
    let one = oracle::ega_one_direction(&s, n, m, &config);
    println!(
        "S = {n}×{m}, τ = {}, τ_h = {}, α = {}, rescale = {:?}\n",
        config.tau,
        config.tau_h(),
        config.alpha,
        config.rescale
    );
    print_matrix("P = softmax(S/τ)", &one.probs, m);
    print_matrix("h (hardness, 0 on the diagonal)", &one.hardness, m);
    print_matrix("P̄ (amplified)", &one.amplified_probs, m);
    let (loss_value, grad_infonce, grad) = oracle::ega_loss_and_grads(&s, n, m, &config);
    println!("L = {loss_value:.6}{}", if config.symmetric { " (symmetric)" } else { "" });
    print_matrix("∂L/∂S info-NCE", &grad_infonce, m);
    print_matrix("∂L/∂S EGA", &grad, m);

    // The same through the burn reference on the chosen device, autodiff included.
    let selected = device::select(args.device)?;
    let device = selected.device.autodiff();
    let sims = floats(s.iter().map(|&v| v as f32).collect(), [n, m], &device).require_grad();
    let value = loss::contrastive_loss(sims.clone(), &config)?;
    let grads = value.backward();
    let burn_grad = to_f64_vec(sims.grad(&grads).context("no gradient reached S")?)?;
    let burn_value = to_f64_vec(value)?[0];
    let worst = grad.iter().zip(&burn_grad).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    println!(
        "\nburn reference on {}: L = {burn_value:.6}, largest |G_burn − G_f64| = {worst:.2e}",
        selected.description
    );
    Ok(())
}
