// topk_cosine.wgsl: exact top-k cosine search, pass 1 of 2 (per-chunk candidates). The merge pass
// is topk_cosine_merge.wgsl; when the index fits in one chunk this pass alone gives the answer.
//
// What it computes. Queries Q [q, d] and index X [n, d] are row-major f32 with unit-norm rows, so
// score(a, r) = dot(Q[a], X[r]) is their cosine. The index is cut into chunks of CHUNK =
// workgroup_size * rows_per_thread consecutive rows; chunk c holds rows [c * CHUNK, (c+1) * CHUNK)
// (the last one clipped to n). For every query a and chunk c this pass writes the k best rows of
// the chunk, best first:
//
//     order: higher score first; equal scores: lower row index first (a strict total order).
//     slot t of (a, c) lives at position (a * num_chunks + c) * k + t of both outputs.
//     a slot with no row (the chunk has fewer than k rows, e.g. k > n) holds
//     index 0xFFFFFFFF and score -inf; padding always comes after every real row.
//
// Scores are stored as the bit patterns of f32 values in u32 words (read them back as f32: the
// host wraps the buffer as an F32 tensor). That way the -inf of padding is written as the
// constant 0xFF800000 and no infinity is ever computed, compared or constant-folded (WGSL
// implementations may assume there are no infinities). With num_chunks = 1 the outputs are the
// final [q, k] answer; otherwise topk_cosine_merge.wgsl reduces the num_chunks * k candidates of
// each query to k. Nothing of size [q, n] is ever materialised, on the device or on the host.
//
// Bindings (all in @group(0); burn-wgpu numbering: the with_buffer buffers in order, then the
// MetadataBindingInfo::custom words as the last binding). Every storage buffer is read_write
// because cubecl may sub-allocate several tensors from one wgpu buffer and wgpu rejects a buffer
// bound both read-only and read-write in one dispatch.
//   @binding(0) queries    : array<f32> [q * d]               input Q (only read).
//   @binding(1) index      : array<f32> [n * d]               input X (only read).
//   @binding(2) cand_idx   : array<u32> [q * num_chunks * k]  output row indices.
//   @binding(3) cand_score : array<u32> [q * num_chunks * k]  output scores, f32 bits.
//   @binding(4) params     : uniform TopkParams (q, n, d, k, num_chunks; 32 bytes).
//
// Template parameters: workgroup_size (a power of two: 64, 128 or 256), rows_per_thread (1..16;
// each thread keeps that many scores in registers).
// Dispatch: q * num_chunks workgroups with num_chunks = ceil(n / CHUNK) (at least 1), laid out as
// (x, y, 1) with x <= 65535; w = workgroup_id.x + workgroup_id.y * num_workgroups.x,
// query = w / num_chunks, chunk = w % num_chunks; workgroups with w >= q * num_chunks exit.
// Entry point: main. f32 only. Requires k >= 1 and q * num_chunks * k < 2^32.

struct TopkParams {
    q: u32,           // queries
    n: u32,           // index rows
    d: u32,           // dimension
    k: u32,           // results per query (k > n allowed: padded)
    num_chunks: u32,  // ceil(n / CHUNK), at least 1
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

const WG: u32 = {{ workgroup_size }}u;
const RPT: u32 = {{ rows_per_thread }}u;
const CHUNK: u32 = WG * RPT;
const INVALID: u32 = 0xFFFFFFFFu;
const NEG_INF_BITS: u32 = 0xFF800000u;

@group(0) @binding(0) var<storage, read_write> queries: array<f32>;
@group(0) @binding(1) var<storage, read_write> index: array<f32>;
@group(0) @binding(2) var<storage, read_write> cand_idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> cand_score: array<u32>;
@group(0) @binding(4) var<uniform> params: TopkParams;

var<workgroup> best_score: array<f32, WG>;
var<workgroup> best_idx: array<u32, WG>;

// Whether candidate a = (score sa, row ia) comes strictly before b in the output order.
// An INVALID row comes after everything; scores of INVALID rows are never looked at.
fn better(sa: f32, ia: u32, sb: f32, ib: u32) -> bool {
    if (ia == INVALID) {
        return false;
    }
    if (ib == INVALID) {
        return true;
    }
    return sa > sb || (sa == sb && ia < ib);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let n = params.n;
    let d = params.d;
    let k = params.k;
    let num_chunks = params.num_chunks;
    let w = wid.x + wid.y * nwg.x;
    if (w >= params.q * num_chunks) {
        return; // uniform: workgroup id and uniform buffer only
    }
    let query = w / num_chunks;
    let chunk = w % num_chunks;
    let q_base = query * d;

    // Scores of this thread's rows: chunk * CHUNK + u * WG + lid, u < RPT.
    var score: array<f32, RPT>;
    var row: array<u32, RPT>;
    for (var u = 0u; u < RPT; u = u + 1u) {
        let r = chunk * CHUNK + u * WG + lid;
        score[u] = 0.0;
        row[u] = INVALID;
        if (r < n) {
            let r_base = r * d;
            var acc = 0.0;
            for (var c = 0u; c < d; c = c + 1u) {
                acc = acc + queries[q_base + c] * index[r_base + c];
            }
            score[u] = acc;
            row[u] = r;
        }
    }

    let out_base = w * k; // = (query * num_chunks + chunk) * k
    let k_loop = min(k, CHUNK); // slots past CHUNK can only be padding
    for (var slot = 0u; slot < k_loop; slot = slot + 1u) {
        // This thread's best remaining row.
        var bs = 0.0;
        var bi = INVALID;
        for (var u = 0u; u < RPT; u = u + 1u) {
            if (better(score[u], row[u], bs, bi)) {
                bs = score[u];
                bi = row[u];
            }
        }
        best_score[lid] = bs;
        best_idx[lid] = bi;
        workgroupBarrier();
        // Tree reduction to the workgroup's best remaining row.
        for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
            if (lid < stride) {
                let os = best_score[lid + stride];
                let oi = best_idx[lid + stride];
                if (better(os, oi, best_score[lid], best_idx[lid])) {
                    best_score[lid] = os;
                    best_idx[lid] = oi;
                }
            }
            workgroupBarrier();
        }
        let win_idx = best_idx[0];
        let win_score = best_score[0];
        // The owner of the winning row retires it (rows are distinct, so at most one match).
        if (win_idx != INVALID) {
            for (var u = 0u; u < RPT; u = u + 1u) {
                if (row[u] == win_idx) {
                    row[u] = INVALID;
                }
            }
        }
        if (lid == 0u) {
            cand_idx[out_base + slot] = win_idx;
            cand_score[out_base + slot] = select(bitcast<u32>(win_score), NEG_INF_BITS, win_idx == INVALID);
        }
        workgroupBarrier(); // best_* are rewritten by the next slot
    }
    // k > CHUNK: the remaining slots are padding.
    for (var slot = k_loop + lid; slot < k; slot = slot + WG) {
        cand_idx[out_base + slot] = INVALID;
        cand_score[out_base + slot] = NEG_INF_BITS;
    }
}
