// ega_loss_backward.wgsl: EGA's gradient of the loss with respect to S (docs/ega.md, "Backward"),
// one row per workgroup. alpha = 0 gives info-NCE's true gradient (P - I) / (N tau) when the
// upstream gradients are those of the mean, 1/N per row.
//
// What it computes. S is [N, M] (row-major f32, M >= N, row i's positive is column i), Z = S / tau,
// and max_i, sumexp_i come from the forward kernel (ega_loss.wgsl). For every row i and column j:
//
//     P[i][j]  = exp(Z[i][j] - max_i) * (1 / sumexp_i)                (softmax of row i; Z = S * (1/tau))
//     h[i][j]  = sigmoid(clamp((S[i][j] - S[i][i]) / tau_h, -80, 80))   for j != i
//     Pb[i][j] = P[i][j] * (1 + alpha * h[i][j])                        for j != i
//     Pb[i][i] = P[i][i]
//     rescale = sum (params.rescale = 1): the off-diagonal Pb[i][.] is multiplied by
//                  c_i = (sum_{j!=i} P[i][j]) / max(sum_{j!=i} Pb[i][j], 1e-30)
//                so that it sums to sum_{j!=i} P[i][j] (= 1 - P[i][i] without the cancellation).
//     g_i      = grad_rows[i] * grad_scale          (upstream gradient of loss_i; 1/N for the mean)
//     G[i][j]  = ((Pb[i][j] - [i == j]) / tau) * g_i
//
// Pb is a constant of the backward pass (no gradient flows through h or through c_i).
//
// Bindings (all in @group(0); burn-wgpu numbering: the with_buffer buffers in order, then the
// MetadataBindingInfo::custom words as the last binding). Storage buffers are all declared
// read_write, even those only read, because cubecl may sub-allocate several tensors from one wgpu
// buffer and wgpu rejects a buffer bound both read-only and read-write in one dispatch.
//   @binding(0) s        : array<f32> [N * M]  input S, row-major contiguous (only read).
//   @binding(1) stats    : array<f32> [N * 2]  input, the forward kernel's output:
//                                              stats[2i] = max_i, stats[2i + 1] = sumexp_i.
//   @binding(2) grad_rows: array<f32> [N]      input, the upstream gradient of each row's loss
//                                              (read on the device: no host synchronisation).
//   @binding(3) grad_s   : array<f32> [N * M]  output G, row-major.
//   @binding(4) params   : uniform EgaParams   n, m, tau, tau_h, alpha, reserved, grad_scale, rescale.
//
// Template parameter: workgroup_size, a power of two (64, 128 or 256). Any M works.
// Dispatch: one workgroup per row, as (x, y, 1) with x <= 65535;
// row = workgroup_id.x + workgroup_id.y * num_workgroups.x; workgroups with row >= N exit.
// Entry point: main. f32 only; no infinity is produced for finite inputs (the hardness argument
// is clamped to +-80, exp(80) = 5.5e34 is finite, the rescale denominator is floored at 1e-30).

struct EgaParams {
    n: u32,
    m: u32,
    tau: f32,
    tau_h: f32,
    alpha: f32,
    reserved: f32,
    grad_scale: f32,
    rescale: u32,
}

const WG: u32 = {{ workgroup_size }}u;
const HARDNESS_CLAMP: f32 = 80.0;
const TINY: f32 = 1.0e-30;

@group(0) @binding(0) var<storage, read_write> s: array<f32>;
@group(0) @binding(1) var<storage, read_write> stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad_rows: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad_s: array<f32>;
@group(0) @binding(4) var<uniform> params: EgaParams;

var<workgroup> red_p: array<f32, WG>;
var<workgroup> red_pb: array<f32, WG>;

// 1 + alpha * h[i][j] for an off-diagonal entry. e_ij = exp(Z[i][j] - max_i) and
// e_ii = exp(Z[i][i] - max_i) are the unnormalised probabilities the caller already has: when
// tau_h = tau, h = sigma(Z_ij - Z_ii) = e_ij / (e_ij + e_ii) (docs/ega.md, "Backward": the
// probability that j wins a softmax over just {i, j}), which costs a division instead of a second exp. When both
// underflow to 0, or tau_h != tau, the clamped sigmoid is used.
fn amplification(s_ij: f32, s_ii: f32, e_ij: f32, e_ii: f32) -> f32 {
    var h: f32;
    let pair = e_ij + e_ii;
    if (params.tau_h == params.tau && pair > 0.0) {
        h = e_ij / pair;
    } else {
        let arg = clamp((s_ij - s_ii) / params.tau_h, -HARDNESS_CLAMP, HARDNESS_CLAMP);
        h = 1.0 / (1.0 + exp(-arg));
    }
    return 1.0 + params.alpha * h;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let n = params.n;
    let m = params.m;
    let tau = params.tau;
    let row = wid.x + wid.y * nwg.x;
    if (row >= n) {
        return; // uniform: depends on the workgroup and the uniform buffer only
    }
    let base = row * m;
    let row_max = stats[row * 2u];
    let row_sum = stats[row * 2u + 1u];
    // Multiplications by reciprocals, not divisions, in the per-element loops (the forward kernel
    // forms Z the same way, so max_i is exactly the largest Z this kernel recomputes).
    let inv_tau = 1.0 / tau;
    let s_ii = s[base + row];
    let e_ii = exp(s_ii * inv_tau - row_max);
    let inv_sum = 1.0 / row_sum;
    let g_over_tau = grad_rows[row] * params.grad_scale * inv_tau;

    // rescale = sum: c_i = (sum_{j!=i} P) / max(sum_{j!=i} Pb, TINY), a workgroup reduction.
    var c = 1.0;
    if (params.rescale != 0u) {
        var off_p = 0.0;
        var off_pb = 0.0;
        for (var j = lid; j < m; j = j + WG) {
            if (j != row) {
                let s_ij = s[base + j];
                let e_ij = exp(s_ij * inv_tau - row_max);
                let p = e_ij * inv_sum;
                off_p = off_p + p;
                off_pb = off_pb + p * amplification(s_ij, s_ii, e_ij, e_ii);
            }
        }
        red_p[lid] = off_p;
        red_pb[lid] = off_pb;
        workgroupBarrier();
        for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
            if (lid < stride) {
                red_p[lid] = red_p[lid] + red_p[lid + stride];
                red_pb[lid] = red_pb[lid] + red_pb[lid + stride];
            }
            workgroupBarrier();
        }
        c = red_p[0] / max(red_pb[0], TINY);
    }

    for (var j = lid; j < m; j = j + WG) {
        let s_ij = s[base + j];
        let e_ij = exp(s_ij * inv_tau - row_max);
        let p = e_ij * inv_sum;
        var d: f32;
        if (j == row) {
            d = p - 1.0;
        } else {
            d = p * amplification(s_ij, s_ii, e_ij, e_ii) * c;
        }
        grad_s[base + j] = d * g_over_tau;
    }
}
