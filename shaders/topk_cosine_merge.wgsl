// topk_cosine_merge.wgsl: exact top-k cosine search, pass 2 of 2 (merge). Reduces the
// num_chunks * k candidates per query written by topk_cosine.wgsl to the final k.
//
// What it computes. For every query a, among the L = num_chunks * k candidates at positions
// [a * L, (a + 1) * L) of cand_idx / cand_score, it writes the k best to out_idx / out_score at
// [a * k, (a + 1) * k), best first, in the same order as pass 1: higher score first, equal scores
// by lower row index, INVALID (0xFFFFFFFF) rows last. Chunks are disjoint, so a row appears at most
// once. Slots with no row (k > n) get index 0xFFFFFFFF and score -inf (bits 0xFF800000).
// Scores are f32 bit patterns in u32 words, as in pass 1 (no infinity is ever computed or compared).
//
// The candidate buffers are consumed: a candidate that is selected has its index overwritten with
// INVALID. Candidate position j is only ever read and written by thread j % workgroup_size, so no
// cross-thread memory ordering on storage is needed.
//
// Bindings (all in @group(0); burn-wgpu numbering: the with_buffer buffers in order, then the
// MetadataBindingInfo::custom words as the last binding; storage read_write for the reason given
// in topk_cosine.wgsl):
//   @binding(0) cand_idx   : array<u32> [q * num_chunks * k]  input, consumed (overwritten).
//   @binding(1) cand_score : array<u32> [q * num_chunks * k]  input, f32 bits (only read).
//   @binding(2) out_idx    : array<u32> [q * k]               output row indices.
//   @binding(3) out_score  : array<u32> [q * k]               output scores, f32 bits.
//   @binding(4) params     : uniform TopkParams (same 32-byte layout and values as pass 1).
//
// Template parameter: workgroup_size (a power of two: 64, 128 or 256).
// Dispatch: q workgroups as (x, y, 1) with x <= 65535; query = workgroup_id.x +
// workgroup_id.y * num_workgroups.x; workgroups with query >= q exit. Entry point: main.

struct TopkParams {
    q: u32,
    n: u32,
    d: u32,
    k: u32,
    num_chunks: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

const WG: u32 = {{ workgroup_size }}u;
const INVALID: u32 = 0xFFFFFFFFu;
const NEG_INF_BITS: u32 = 0xFF800000u;

@group(0) @binding(0) var<storage, read_write> cand_idx: array<u32>;
@group(0) @binding(1) var<storage, read_write> cand_score: array<u32>;
@group(0) @binding(2) var<storage, read_write> out_idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> out_score: array<u32>;
@group(0) @binding(4) var<uniform> params: TopkParams;

var<workgroup> best_score: array<f32, WG>;
var<workgroup> best_idx: array<u32, WG>;
var<workgroup> best_pos: array<u32, WG>;

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
    let k = params.k;
    let query = wid.x + wid.y * nwg.x;
    if (query >= params.q) {
        return; // uniform: workgroup id and uniform buffer only
    }
    let len = params.num_chunks * k;
    let in_base = query * len;
    let out_base = query * k;

    for (var slot = 0u; slot < k; slot = slot + 1u) {
        var bs = 0.0;
        var bi = INVALID;
        var bp = 0u;
        for (var j = lid; j < len; j = j + WG) {
            let i = cand_idx[in_base + j];
            if (i != INVALID) {
                let sc = bitcast<f32>(cand_score[in_base + j]);
                if (better(sc, i, bs, bi)) {
                    bs = sc;
                    bi = i;
                    bp = j;
                }
            }
        }
        best_score[lid] = bs;
        best_idx[lid] = bi;
        best_pos[lid] = bp;
        workgroupBarrier();
        for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
            if (lid < stride) {
                let os = best_score[lid + stride];
                let oi = best_idx[lid + stride];
                if (better(os, oi, best_score[lid], best_idx[lid])) {
                    best_score[lid] = os;
                    best_idx[lid] = oi;
                    best_pos[lid] = best_pos[lid + stride];
                }
            }
            workgroupBarrier();
        }
        let win_idx = best_idx[0];
        let win_score = best_score[0];
        let win_pos = best_pos[0];
        // The thread that owns the winning position retires it.
        if (win_idx != INVALID && win_pos % WG == lid) {
            cand_idx[in_base + win_pos] = INVALID;
        }
        if (lid == 0u) {
            out_idx[out_base + slot] = win_idx;
            out_score[out_base + slot] = select(bitcast<u32>(win_score), NEG_INF_BITS, win_idx == INVALID);
        }
        workgroupBarrier(); // best_* are rewritten by the next slot
    }
}
