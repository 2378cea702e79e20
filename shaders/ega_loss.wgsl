// ega_loss.wgsl: forward pass of the info-NCE / EGA loss (docs/ega.md, "Forward"), one row per workgroup.
//
// What it computes. S is the similarity matrix [N, M] (row-major f32, M >= N; row i's positive
// is column i, columns N..M are extra negatives). With Z = S / tau, for every row i < N:
//
//     max_i    = max_j Z[i][j]
//     sumexp_i = sum_j exp(Z[i][j] - max_i)                (>= 1, the max term is exp(0))
//     loss_i   = (max_i - Z[i][i]) + log(sumexp_i)          (= lse_i - Z[i][i] = -log P[i][i])
//
// The loss is L = mean_i loss_i; the host takes that mean (an ordinary burn op, so autodiff hands
// the backward kernel one upstream gradient per row). max_i and sumexp_i are kept so that the backward kernel (ega_loss_backward.wgsl) can form
// P[i][j] = exp(Z[i][j] - max_i) / sumexp_i exactly like burn's softmax, without a second
// reduction and without the rounding of lse_i (|lse| can be ~100 when tau = 0.01).
//
// Bindings (all in @group(0); the numbering is burn-wgpu's for raw template kernels: the buffers
// passed with KernelArguments::with_buffer, in order, then the `info` words of
// MetadataBindingInfo::custom as the last binding):
//   @binding(0) s       : array<f32>  [N * M]  input, S row-major (contiguous). Declared read_write
//                                              only because cubecl may place several tensors in one
//                                              wgpu buffer, and wgpu rejects one buffer bound both
//                                              read-only and read-write in a dispatch; never written.
//   @binding(1) loss    : array<f32>  [N]      output, loss[i] = loss_i.
//   @binding(2) stats   : array<f32>  [N * 2]  output, stats[2i] = max_i, stats[2i + 1] = sumexp_i.
//   @binding(3) params  : uniform EgaParams (8 x 4 bytes, shared layout with the backward kernel;
//                         this kernel reads n, m and tau only).
//
// Template parameter (filled by burn's SourceTemplate before compilation):
//   workgroup_size : threads per workgroup, a power of two (64, 128 or 256; WebGPU's default
//                    limit is 256). Any M works: each thread strides over the row.
//
// Dispatch: one workgroup per row, N workgroups in total, laid out as (x, y, 1) with
// x <= 65535 (the per-dimension limit); row = workgroup_id.x + workgroup_id.y * num_workgroups.x,
// extra workgroups (row >= N) exit at once. Entry point: main (burn's SourceKernel requires it).
//
// f32 only. Finite inputs give finite outputs: no infinity is ever produced or compared (the
// running max starts at -MAX_F32, not -inf; WGSL implementations may assume no infinities).
// Workgroup memory is written before it is read (burn-wgpu does not zero-initialise it), and
// every index is guarded (burn-wgpu compiles WGSL without runtime bounds checks).

struct EgaParams {
    n: u32,            // rows N
    m: u32,            // columns M (>= N)
    tau: f32,          // temperature of the logits
    tau_h: f32,        // temperature of the hardness score (backward only)
    alpha: f32,        // amplification (backward only)
    reserved: f32,     // unused (keeps the 8-field layout)
    grad_scale: f32,   // host factor on the upstream gradient (backward only)
    rescale: u32,      // 0 = none, 1 = sum (backward only)
}

const WG: u32 = {{ workgroup_size }}u;
const NEG_BIG: f32 = -0x1.fffffep+127f; // -f32::MAX (exact): the identity of max, not -inf

@group(0) @binding(0) var<storage, read_write> s: array<f32>;
@group(0) @binding(1) var<storage, read_write> loss: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;
@group(0) @binding(3) var<uniform> params: EgaParams;

var<workgroup> red: array<f32, WG>;
var<workgroup> red_max: array<f32, WG>;

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
    // Uniform exit: row depends only on the workgroup, params is a uniform buffer.
    if (row >= n) {
        return;
    }
    let base = row * m;

    // One pass over the row (online softmax, Milakov & Gimelshein 2018): each thread keeps a
    // running max and the sum of exp(Z - running max), rescaling the sum when the max grows.
    let inv_tau = 1.0 / tau; // Z = S * (1/tau), formed the same way by the backward kernel
    var local_max = NEG_BIG;
    var local_sum = 0.0;
    for (var j = lid; j < m; j = j + WG) {
        let z = s[base + j] * inv_tau;
        if (z > local_max) {
            local_sum = local_sum * exp(local_max - z) + 1.0;
            local_max = z;
        } else {
            local_sum = local_sum + exp(z - local_max);
        }
    }
    red_max[lid] = local_max;
    red[lid] = local_sum;
    workgroupBarrier();
    // Tree reduction of (max, sum) pairs: the larger max wins, the other sum is rescaled to it.
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            let m1 = red_max[lid];
            let m2 = red_max[lid + stride];
            let top = max(m1, m2);
            red[lid] = red[lid] * exp(m1 - top) + red[lid + stride] * exp(m2 - top);
            red_max[lid] = top;
        }
        workgroupBarrier();
    }
    let row_max = red_max[0];

    if (lid == 0u) {
        let sumexp = red[0];
        let log_sum = log(sumexp);
        let z_pos = s[base + row] * inv_tau; // row < N <= M: the positive exists
        loss[row] = (row_max - z_pos) + log_sum;
        stats[row * 2u] = row_max;
        stats[row * 2u + 1u] = sumexp;
    }
}
