"""Runs the WGSL kernels of ../../shaders on a real WebGPU device, without cargo or burn, and
checks them against a float64 reference of EGA.md (and an exact top-k).

It launches them the way burn-wgpu 0.22.1 launches a raw template kernel (see
../burn-wgsl-kernels.md): the placeholders are filled like SourceTemplate does, the pipeline layout
is derived from the shader ("auto", as burn passes `layout: None` for a precompiled kernel), the
buffers go to @binding(0..k) in order and the parameter words to @binding(k) as a uniform. Some
inputs and outputs deliberately share one GPU buffer at different offsets, as cubecl's memory
pool does, to show that the read_write declarations avoid wgpu's usage conflict.

Needs the `wgpu` Python package (wgpu-py, which ships wgpu-native) and a Vulkan driver; on a
machine without a GPU, Mesa's lavapipe works:  python3 -m venv /tmp/w && /tmp/w/bin/pip install
wgpu && /tmp/w/bin/python notes/wgsl-check/run_kernels.py   (slow parts: --quick skips N=1024)
"""

import math
import random
import re
import struct
import sys
from pathlib import Path

import wgpu

SHADERS = Path(__file__).resolve().parent.parent.parent / "shaders"
INVALID = 0xFFFFFFFF
QUICK = "--quick" in sys.argv


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def fill(name, **values):
    text = (SHADERS / name).read_text()

    def sub(m):
        key = m.group(1)
        if key not in values:
            raise KeyError(f"{name}: no value for placeholder {key}")
        return str(values[key])

    return re.sub(r"\{\{\s*(\w+)\s*\}\}", sub, text)


adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
device = adapter.request_device_sync()
ALIGN = device.limits["min-storage-buffer-offset-alignment"]
print(f"adapter: {adapter.info['device']} ({adapter.info['backend_type']}), storage offset alignment {ALIGN}")

_pipelines = {}


def pipeline(name, **values):
    key = (name, tuple(sorted(values.items())))
    if key not in _pipelines:
        module = device.create_shader_module(code=fill(name, **values))
        _pipelines[key] = device.create_compute_pipeline(
            layout="auto", compute={"module": module, "entry_point": "main"}
        )
    return _pipelines[key]


def words_u32(values):
    """The parameter struct as 4-byte words (u32 or f32 bits); burn packs the same bytes in u64s."""
    out = b""
    for v in values:
        out += struct.pack("<f", v) if isinstance(v, float) else struct.pack("<I", v)
    assert len(out) % 16 == 0
    return out


class Arena:
    """One storage buffer holding several arrays at aligned offsets (like a cubecl memory page)."""

    def __init__(self, sizes):
        self.offsets = []
        off = 0
        for s in sizes:
            self.offsets.append(off)
            off += -(-max(s, 4) // ALIGN) * ALIGN
        self.buffer = device.create_buffer(
            size=max(off, 4),
            usage=wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_DST | wgpu.BufferUsage.COPY_SRC,
        )
        self.sizes = sizes

    def binding(self, i):
        return {"buffer": self.buffer, "offset": self.offsets[i], "size": max(self.sizes[i], 4)}

    def write(self, i, data):
        device.queue.write_buffer(self.buffer, self.offsets[i], data)

    def read(self, i):
        return bytes(device.queue.read_buffer(self.buffer, self.offsets[i], self.sizes[i]))


def dispatch(pipe, resources, params, groups):
    uniform = device.create_buffer_with_data(data=params, usage=wgpu.BufferUsage.UNIFORM)
    entries = [{"binding": i, "resource": r} for i, r in enumerate(resources)]
    entries.append({"binding": len(resources), "resource": {"buffer": uniform, "offset": 0, "size": len(params)}})
    bind_group = device.create_bind_group(layout=pipe.get_bind_group_layout(0), entries=entries)
    x = min(groups, 65535)
    y = -(-groups // 65535)
    encoder = device.create_command_encoder()
    cpass = encoder.begin_compute_pass()
    cpass.set_pipeline(pipe)
    cpass.set_bind_group(0, bind_group)
    cpass.dispatch_workgroups(x, y, 1)
    cpass.end()
    device.queue.submit([encoder.finish()])


def pack_f32(values):
    return struct.pack(f"<{len(values)}f", *values)


def unpack_f32(data):
    return list(struct.unpack(f"<{len(data) // 4}f", data))


def unpack_u32(data):
    return list(struct.unpack(f"<{len(data) // 4}I", data))


# ---------------------------------------------------------------- EGA: float64 reference (EGA.md)


def ega_reference(S, n, m, tau, tau_h, alpha, rescale_sum, g=1.0):
    loss_rows, lse_rows, G = [], [], [0.0] * (n * m)
    for i in range(n):
        z = [S[i * m + j] / tau for j in range(m)]
        mx = max(z)
        se = sum(math.exp(v - mx) for v in z)
        lse = mx + math.log(se)
        loss_rows.append(lse - z[i])
        lse_rows.append(lse)
        P = [math.exp(v - lse) for v in z]
        s_ii = S[i * m + i]
        Pb = []
        for j in range(m):
            if j == i:
                Pb.append(P[j])
            else:
                a = max(-80.0, min(80.0, (S[i * m + j] - s_ii) / tau_h))
                Pb.append(P[j] * (1.0 + alpha * (1.0 / (1.0 + math.exp(-a)))))
        if rescale_sum:
            target = sum(P[j] for j in range(m) if j != i)
            denom = max(sum(Pb[j] for j in range(m) if j != i), 1e-30)
            Pb = [Pb[j] if j == i else Pb[j] * target / denom for j in range(m)]
        for j in range(m):
            G[i * m + j] = (Pb[j] - (1.0 if j == i else 0.0)) / (n * tau) * g
    return loss_rows, lse_rows, G


def ega_gpu(S, n, m, tau, tau_h, alpha, rescale_sum, wg, g=1.0):
    params = words_u32([n, m, f32(tau), f32(tau_h), f32(alpha), f32(n * tau), 1.0, 1 if rescale_sum else 0])
    # s, rows and grad_out share one buffer; grad_s gets its own, as cubecl may do either.
    arena = Arena([4 * n * m, 16 * n, 4])
    out = Arena([4 * n * m])
    arena.write(0, pack_f32(S))
    arena.write(2, pack_f32([g]))
    dispatch(pipeline("ega_loss.wgsl", workgroup_size=wg), [arena.binding(0), arena.binding(1)], params, n)
    dispatch(
        pipeline("ega_loss_backward.wgsl", workgroup_size=wg),
        [arena.binding(0), arena.binding(1), arena.binding(2), out.binding(0)],
        params,
        n,
    )
    rows = unpack_f32(arena.read(1))
    return rows, unpack_f32(out.read(0))


def compare(name, got, ref, atol=1e-5, rtol=1e-4):
    worst, first_bad = 0.0, None
    for i, (a, b) in enumerate(zip(got, ref)):
        if not math.isfinite(a):
            return f"{name}: non-finite {a} at {i}"
        diff = abs(a - b)
        worst = max(worst, diff)
        if diff > atol + rtol * abs(b) and first_bad is None:
            first_bad = (i, a, b)
    if first_bad:
        i, a, b = first_bad
        return f"{name}: first bad index {i}: got {a!r}, reference {b!r}; largest difference {worst:.3g}"
    return None


failures = []
checked = 0


def check_ega(S, n, m, tau, tau_h, alpha, rescale_sum, wg, label, g=1.0):
    global checked
    S = [f32(v) for v in S]
    rows, G = ega_gpu(S, n, m, tau, tau_h, alpha, rescale_sum, wg, g)
    loss_ref, lse_ref, G_ref = ega_reference(S, n, m, tau, tau_h, alpha, rescale_sum, g)
    tag = f"{label} N={n} M={m} tau={tau} tau_h={tau_h} alpha={alpha} rescale={'sum' if rescale_sum else 'none'} wg={wg}"
    for what, got, ref in [
        ("loss_i", rows[0::4], loss_ref),
        ("lse_i", rows[1::4], lse_ref),
        ("G", G, G_ref),
    ]:
        err = compare(f"{tag} {what}", got, ref)
        if err:
            failures.append(err)
    loss = sum(rows[0::4]) / n
    if not math.isfinite(loss):
        failures.append(f"{tag}: loss {loss}")
    checked += 1
    return rows, G


# EGA.md's worked example (N = 2, M = 3, tau = tau_h = 0.1, alpha = 1).
S = [0.9, 0.8, 0.3, 0.1, 0.7, 0.6]
rows, G = check_ega(S, 2, 3, 0.1, 0.1, 1.0, False, 64, "worked example")
expect = {
    "L": 0.315072,
    "G_ega": [-1.351319, 1.703268, 0.009067, 0.009067, -1.351319, 1.703268],
}
if abs(sum(rows[0::4]) / 2 - expect["L"]) > 1e-5:
    failures.append(f"worked example L = {sum(rows[0::4]) / 2}")
if err := compare("worked example G (EGA.md)", G, expect["G_ega"], atol=2e-6, rtol=0):
    failures.append(err)
_, G = check_ega(S, 2, 3, 0.1, 0.1, 1.0, True, 64, "worked example")
if err := compare("worked example G rescale=sum (EGA.md)", G, [-1.351319, 1.344164, 0.007155, 0.007155, -1.351319, 1.344164], atol=2e-6, rtol=0):
    failures.append(err)
_, G = check_ega(S, 2, 3, 0.1, 0.1, 0.0, False, 64, "worked example info-NCE")
if err := compare("worked example G info-NCE (EGA.md)", G, [-1.351319, 1.342275, 0.009044, 0.009044, -1.351319, 1.342275], atol=2e-6, rtol=0):
    failures.append(err)
# Upstream gradient 0.5 scales G.
check_ega(S, 2, 3, 0.1, 0.1, 1.0, True, 64, "upstream 0.5", g=0.5)

# EGA.md's test matrix: N in {1, 2, 7, 64, 257, 1024}, M in {N, N + 13}, tau in {0.01, 0.05, 1.0},
# similarities near +-1 (large logits).
rng = random.Random(7)
sizes = [1, 2, 7, 64, 257] + ([] if QUICK else [1024])
for n in sizes:
    for m in (n, n + 13):
        for tau in (0.01, 0.05, 1.0):
            S = [rng.choice((-1.0, 1.0)) * (1.0 - 0.02 * rng.random()) for _ in range(n * m)]
            for alpha, rescale in ((0.0, False), (1.0, False), (1.0, True)):
                if n >= 1024 and (tau, alpha) != (0.05, 1.0):
                    continue  # the float64 reference is slow in pure Python
                wg = 256 if n > 7 else 64
                check_ega(S, n, m, tau, tau, alpha, rescale, wg, "matrix")
# tau_h != tau, and every similarity of each row equal (criterion 5).
check_ega([0.3] * (5 * 9), 5, 9, 0.05, 0.1, 2.0, True, 64, "all equal")
check_ega([rng.uniform(-1, 1) for _ in range(9 * 300)], 9, 300, 0.05, 0.02, 1.5, True, 128, "tau_h=0.02")
# M = 1 (N = 1): no negative at all, the rescale denominator floor is hit.
check_ega([0.5], 1, 1, 0.05, 0.05, 1.0, True, 64, "single")
print(f"EGA: {checked} configurations checked")

# ---------------------------------------------------------------- top-k


def unit(v):
    norm = math.sqrt(sum(x * x for x in v))
    return [f32(x / norm) for x in v]


def topk_reference(Q, X, q, n, d, k):
    out = []
    for a in range(q):
        # Same summation order as the kernel (sequential in f32) so that ties are exact.
        scores = []
        for r in range(n):
            acc = 0.0
            for c in range(d):
                acc = f32(acc + f32(Q[a * d + c] * X[r * d + c]))
            scores.append((-acc, r))
        scores.sort()
        row = [(r, -s) for s, r in scores[:k]]
        row += [(INVALID, float("-inf"))] * (k - len(row))
        out.append(row)
    return out


def topk_gpu(Q, X, q, n, d, k, wg, rpt):
    chunk = wg * rpt
    num_chunks = max(1, -(-n // chunk))
    params = words_u32([q, n, d, k, num_chunks, 0, 0, 0])
    cand = q * num_chunks * k
    arena = Arena([4 * q * d, 4 * n * d, 4 * cand, 4 * cand])
    arena.write(0, pack_f32(Q))
    arena.write(1, pack_f32(X))
    pass1 = pipeline("topk_cosine.wgsl", workgroup_size=wg, rows_per_thread=rpt)
    dispatch(pass1, [arena.binding(i) for i in range(4)], params, q * num_chunks)
    if num_chunks == 1:
        idx, sc = arena.read(2), arena.read(3)
    else:
        out = Arena([4 * q * k, 4 * q * k])
        merge = pipeline("topk_cosine_merge.wgsl", workgroup_size=wg)
        dispatch(merge, [arena.binding(2), arena.binding(3), out.binding(0), out.binding(1)], params, q)
        idx, sc = out.read(0), out.read(1)
    return unpack_u32(idx), unpack_f32(sc), num_chunks


topk_checked = 0


def check_topk(q, n, d, k, wg, rpt, label, copies=()):
    """`copies`: index rows overwritten with query 0, exact ties at the top of query 0's list."""
    global topk_checked
    Q = [x for _ in range(q) for x in unit([rng.gauss(0, 1) for _ in range(d)])]
    X = [x for _ in range(n) for x in unit([rng.gauss(0, 1) for _ in range(d)])]
    for dst in copies:
        X[dst * d:(dst + 1) * d] = Q[0:d]
    idx, sc, chunks = topk_gpu(Q, X, q, n, d, k, wg, rpt)
    ref = topk_reference(Q, X, q, n, d, k)
    tag = f"top-k {label} q={q} n={n} d={d} k={k} wg={wg} rpt={rpt} chunks={chunks}"
    for a in range(q):
        exact = {}
        for r in range(n):
            exact[r] = sum(Q[a * d + c] * X[r * d + c] for c in range(d))
        for t in range(k):
            gi, gs = idx[a * k + t], sc[a * k + t]
            ri, rs = ref[a][t]
            if ri == INVALID:
                ok = gi == INVALID and math.isinf(gs) and gs < 0
            else:
                # The GPU may contract a*b+c into an FMA: scores can differ from the sequential f32
                # reference in the last bits, so a different row is accepted only at a near-tie.
                ok = gi != INVALID and abs(gs - rs) <= 1e-6 and (
                    gi == ri or abs(exact[gi] - exact[ri]) <= 1e-6
                )
            if not ok:
                failures.append(f"{tag}: query {a} slot {t}: got ({gi}, {gs!r}), reference ({ri}, {rs!r})")
                return
        got_rows = [i for i in idx[a * k:(a + 1) * k] if i != INVALID]
        if len(set(got_rows)) != len(got_rows):
            failures.append(f"{tag}: query {a}: a row appears twice: {got_rows}")
            return
        # Ties are broken by the lower index: within equal scores the indices must increase.
        for t in range(1, k):
            if idx[a * k + t] != INVALID and sc[a * k + t] == sc[a * k + t - 1] and idx[a * k + t] < idx[a * k + t - 1]:
                failures.append(f"{tag}: query {a}: tie at slot {t} not ordered by index")
                return
    topk_checked += 1


check_topk(3, 10, 8, 4, 64, 4, "one chunk")
check_topk(2, 5, 8, 9, 64, 4, "k > n")
# Ties inside one thread (rows 3, 67, 131 with wg 64), across threads (3, 9, 200) and chunks.
check_topk(2, 250, 8, 6, 64, 4, "ties in one chunk", copies=(200, 131, 67, 9, 3))
check_topk(4, 700, 16, 10, 64, 4, "ties across chunks", copies=(650, 300, 299, 5, 256))
check_topk(2, 300, 16, 300, 64, 2, "k > CHUNK (merge)")
check_topk(2, 100, 16, 300, 64, 1, "k > CHUNK and k > n")
check_topk(5, 2000, 32, 7, 256, 4, "two chunks wg256", copies=(1500, 2, 1024, 1023))
check_topk(1, 1, 4, 1, 128, 4, "n = 1")
print(f"top-k: {topk_checked} configurations checked")

if failures:
    print(f"{len(failures)} FAILED:")
    for f in failures[:40]:
        print("  " + f)
    sys.exit(1)
print(f"{checked + topk_checked} passed, 0 failed")
