// topk_cosine.wgsl: exact top-k selection over cosine scores, pass 1 of 2 (per-chunk candidates).
// The merge pass is topk_cosine_merge.wgsl; when a score row fits in one chunk this pass alone
// gives the answer.
//
// What it computes. The scores S [q, n] (row-major f32) are the cosines of q unit-norm queries
// against n unit-norm index rows, S = Q Xᵀ, computed on the device by burn's tiled matmul (which
// reads the index once for all queries; a per-query dot-product loop here would read it q times).
// S never leaves the device: only the [q, k] answer does. Each score row is cut into chunks of
// CHUNK = workgroup_size * rows_per_thread consecutive columns; chunk c holds columns
// [c * CHUNK, (c+1) * CHUNK) (the last one clipped to n). For every query a and chunk c this pass
// writes the k best columns of the chunk, best first:
//
//     order: higher score first; equal scores: lower index first (a strict total order).
//     slot t of (a, c) lives at position (a * num_chunks + c) * k + t of both outputs.
//     a slot with no row (the chunk has fewer than k rows, e.g. k > n) holds
//     index 0xFFFFFFFF and score -inf; padding always comes after every real row.
//
// Scores are stored as the bit patterns of f32 values in u32 words (read them back as f32: the
// host wraps the buffer as an F32 tensor). That way the -inf of padding is written as the
// constant 0xFF800000 and no infinity is ever computed, compared or constant-folded (WGSL
// implementations may assume there are no infinities). With num_chunks = 1 the outputs are the
// final [q, k] answer; otherwise topk_cosine_merge.wgsl reduces the num_chunks * k candidates of
// each query to k. Consecutive threads read consecutive scores (coalesced loads).
//
// Bindings (all in @group(0); burn-wgpu numbering: the with_buffer buffers in order, then the
// MetadataBindingInfo::custom words as the last binding). Every storage buffer is read_write
// because cubecl may sub-allocate several tensors from one wgpu buffer and wgpu rejects a buffer
// bound both read-only and read-write in one dispatch.
//   @binding(0) scores     : array<f32> [q * n]               input S (only read).
//   @binding(1) cand_idx   : array<u32> [q * num_chunks * k]  output column (index row) numbers.
//   @binding(2) cand_score : array<u32> [q * num_chunks * k]  output scores, f32 bits.
//   @binding(3) params     : uniform TopkParams (q, n, d, k, num_chunks; 32 bytes; d is unused here).
//
// Template parameters: workgroup_size (a power of two: 64, 128 or 256), rows_per_thread (1..32;
// the scores each thread reads; it keeps its best min(k, rows_per_thread) in registers).
// Dispatch: q * num_chunks workgroups with num_chunks = ceil(n / CHUNK) (at least 1), laid out as
// (x, y, 1) with x <= 65535; w = workgroup_id.x + workgroup_id.y * num_workgroups.x,
// query = w / num_chunks, chunk = w % num_chunks; workgroups with w >= q * num_chunks exit.
// Entry point: main. f32 only. Requires k >= 1, q * n < 2^32 and q * num_chunks * k < 2^32.

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

@group(0) @binding(0) var<storage, read_write> scores: array<f32>;
@group(0) @binding(1) var<storage, read_write> cand_idx: array<u32>;
@group(0) @binding(2) var<storage, read_write> cand_score: array<u32>;
@group(0) @binding(3) var<uniform> params: TopkParams;

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
    let k = params.k;
    let num_chunks = params.num_chunks;
    let w = wid.x + wid.y * nwg.x;
    if (w >= params.q * num_chunks) {
        return; // uniform: workgroup id and uniform buffer only
    }
    let query = w / num_chunks;
    let chunk = w % num_chunks;
    let row_base = query * n;

    // This thread reads the scores of columns chunk * CHUNK + u * WG + lid, u < RPT (consecutive
    // threads read consecutive scores), and keeps its best LK = min(k, RPT) in a sorted list:
    // the chunk's top-k holds at most k of one thread's columns, so nothing it needs is dropped.
    let lk = min(k, RPT);
    var list_score: array<f32, RPT>;
    var list_row: array<u32, RPT>;
    var count = 0u;
    for (var u = 0u; u < RPT; u = u + 1u) {
        let r = chunk * CHUNK + u * WG + lid;
        if (r < n) {
            let sc = scores[row_base + r];
            // Most scores fail this test at once: a search touches each score about once.
            if (count < lk || better(sc, r, list_score[lk - 1u], list_row[lk - 1u])) {
                var pos = min(count, lk - 1u);
                while (pos > 0u && better(sc, r, list_score[pos - 1u], list_row[pos - 1u])) {
                    list_score[pos] = list_score[pos - 1u];
                    list_row[pos] = list_row[pos - 1u];
                    pos = pos - 1u;
                }
                list_score[pos] = sc;
                list_row[pos] = r;
                count = min(count + 1u, lk);
            }
        }
    }

    // k rounds: the workgroup's best list head wins a slot, its owner moves to its next entry.
    let out_base = w * k; // = (query * num_chunks + chunk) * k
    let k_loop = min(k, CHUNK); // slots past CHUNK can only be padding
    var head = 0u;
    for (var slot = 0u; slot < k_loop; slot = slot + 1u) {
        var bs = 0.0;
        var bi = INVALID;
        if (head < count) {
            bs = list_score[head];
            bi = list_row[head];
        }
        best_score[lid] = bs;
        best_idx[lid] = bi;
        workgroupBarrier();
        // Tree reduction to the workgroup's best head.
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
        // Rows are distinct, so only the owner's head can match the winner.
        if (win_idx != INVALID && head < count && list_row[head] == win_idx) {
            head = head + 1u;
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
