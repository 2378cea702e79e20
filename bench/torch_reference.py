#!/usr/bin/env python3
"""PyTorch reference of ega-core's embedder and of the EGA loss, for parity tests and benchmarks.

Written independently of the Rust code, from the model description (README, `native info`,
core/src/model docs: a ViT, a 2x2-merge projector, a LLaMA-style decoder, last-token pooling,
L2 normalisation) and from docs/ega.md for the loss. Parameter names and layouts follow
the safetensors files ega-core writes (`vision.blocks.0.attn.qkv.weight`, linear weights stored
`[d_in, d_out]`), so its weights load here unchanged. Everything runs in float32 on the CPU.

Shape legend: B = prompts in a batch, L = longest prompt (image tokens spliced in), Bi = images,
K = image tokens per image, P = patches per image, D = language width, Dv = vision width,
N = queries, M = targets.

Commands:
  info                     parameter counts of the presets (asserted against `native info`)
  parity DIR               recompute what the Rust parity test wrote to DIR; print max |diff| as JSON
  serve --threads N        benchmark server: one JSON command per stdin line, one JSON reply per line
  profile BATCH_FILE       torch.profiler's operator table of training steps on a `bench train` batch
"""

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

# The presets, as `native info` lists them (core/src/model/mod.rs). `params` is the total that
# `native info` prints; the model built here must have exactly as many.
PRESETS = {
    "tiny": dict(
        image_size=32, patch_size=8, channels=3, vision_width=64, vision_layers=2, vision_heads=4, mlp_ratio=4,
        vocab_size=512, width=64, layers=2, heads=4, ffn_hidden=172, max_seq_len=64, rope_theta=10_000.0,
        params=265_984,
    ),
    "small": dict(
        image_size=64, patch_size=8, channels=3, vision_width=128, vision_layers=4, vision_heads=4, mlp_ratio=4,
        vocab_size=2048, width=256, layers=4, heads=8, ffn_hidden=688, max_seq_len=96, rope_theta=10_000.0,
        params=4_712_064,
    ),
}

IMAGE_ID = 3  # the `<image>` special token (pad 0, bos 1, eos 2, image 3)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class Linear(nn.Module):
    """y = x @ weight + bias, weight stored [d_in, d_out] (ega-core's layout)."""

    def __init__(self, d_in, d_out, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_in, d_out) * 0.02)
        self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None

    def forward(self, x):
        y = x @ self.weight
        return y + self.bias if self.bias is not None else y


class RmsNorm(nn.Module):
    def __init__(self, width, eps=1e-6):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.gain


class LayerNorm(nn.Module):
    def __init__(self, width, eps=1e-5):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, (x.shape[-1],), self.gain, self.bias, self.eps)


def rotate(x, cos, sin):
    """Rotary embedding, rotate-half convention: pairs (x[k], x[k + hd/2]). x: [B, H, L, hd]."""
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, width, heads, bias):
        super().__init__()
        self.qkv = Linear(width, 3 * width, bias)
        self.out = Linear(width, width, bias)
        self.heads = heads

    def forward(self, x, rope=None, allowed=None):
        bsz, length, width = x.shape
        hd = width // self.heads
        q, k, v = self.qkv(x).view(bsz, length, 3, self.heads, hd).unbind(2)  # each [B, L, H, hd]
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, L, hd]
        if rope is not None:
            q, k = rotate(q, *rope), rotate(k, *rope)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)  # [B, H, L, L]
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        context = scores.softmax(-1) @ v  # [B, H, L, hd]
        return self.out(context.transpose(1, 2).reshape(bsz, length, width))


class VisionBlock(nn.Module):
    def __init__(self, width, heads, mlp_ratio):
        super().__init__()
        self.norm1 = LayerNorm(width)
        self.attn = Attention(width, heads, bias=True)
        self.norm2 = LayerNorm(width)
        self.fc1 = Linear(width, mlp_ratio * width, True)
        self.fc2 = Linear(mlp_ratio * width, width, True)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class VisionEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        p = c["patch_size"]
        grid = c["image_size"] // p
        self.patch = p
        self.patch_embed = Linear(c["channels"] * p * p, c["vision_width"], True)
        self.pos_embed = nn.Parameter(torch.randn(grid * grid, c["vision_width"]) * 0.02)
        self.blocks = nn.ModuleList(
            VisionBlock(c["vision_width"], c["vision_heads"], c["mlp_ratio"]) for _ in range(c["vision_layers"])
        )
        self.norm = LayerNorm(c["vision_width"])

    def forward(self, images):
        """images [Bi, C, H, W] in [0, 1] -> [Bi, P, Dv], patches in row-major grid order."""
        p = self.patch
        pixels = images * 2.0 - 1.0
        # unfold: [Bi, C·p·p, P] with each patch flattened channel-major, then row, then column.
        patches = F.unfold(pixels, kernel_size=p, stride=p).transpose(1, 2)  # [Bi, P, C·p·p]
        x = self.patch_embed(patches) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class Projector(nn.Module):
    """2x2 neighbouring patches concatenated (row-major within the square), then a GELU MLP."""

    def __init__(self, vision_width, width, grid):
        super().__init__()
        self.fc1 = Linear(4 * vision_width, width, True)
        self.fc2 = Linear(width, width, True)
        self.grid = grid

    def forward(self, patches):
        bi, _, dv = patches.shape
        g = self.grid
        square = patches.view(bi, g, g, dv)  # [Bi, row, col, Dv]
        merged = torch.cat(
            [square[:, 0::2, 0::2], square[:, 0::2, 1::2], square[:, 1::2, 0::2], square[:, 1::2, 1::2]], dim=-1
        )  # [Bi, g/2, g/2, 4·Dv]: (top-left, top-right, bottom-left, bottom-right)
        return self.fc2(F.gelu(self.fc1(merged.reshape(bi, (g // 2) ** 2, 4 * dv))))


class DecoderBlock(nn.Module):
    def __init__(self, width, heads, ffn_hidden):
        super().__init__()
        self.attn_norm = RmsNorm(width)
        self.attn = Attention(width, heads, bias=False)
        self.ffn_norm = RmsNorm(width)
        self.gate = Linear(width, ffn_hidden, False)
        self.up = Linear(width, ffn_hidden, False)
        self.down = Linear(ffn_hidden, width, False)

    def forward(self, x, rope, allowed):
        x = x + self.attn(self.attn_norm(x), rope, allowed)
        h = self.ffn_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class LanguageModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.token_embed = nn.Parameter(torch.randn(c["vocab_size"], c["width"]) * 0.02)
        self.blocks = nn.ModuleList(DecoderBlock(c["width"], c["heads"], c["ffn_hidden"]) for _ in range(c["layers"]))
        self.norm = RmsNorm(c["width"])
        self.heads = c["heads"]
        self.theta = c["rope_theta"]

    def rope(self, length):
        hd = self.token_embed.shape[1] // self.heads
        inv_freq = self.theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)  # [hd/2]
        angles = torch.arange(length, dtype=torch.float64)[:, None] * inv_freq[None, :]  # [L, hd/2]
        return angles.cos().float(), angles.sin().float()

    def forward(self, x, lengths):
        """x [B, L, D] input embeddings, lengths [B] real tokens per row -> [B, L, D]."""
        length = x.shape[1]
        position = torch.arange(length)
        causal = position[None, :] <= position[:, None]  # [L(query), L(key)]
        real_key = position[None, :] < lengths[:, None]  # [B, L(key)]
        allowed = (causal[None] & real_key[:, None, :])[:, None]  # [B, 1, L, L]
        allowed = allowed | (position == 0)  # a padded query still sees position 0: no empty row
        rope = self.rope(length)
        for block in self.blocks:
            x = block(x, rope, allowed)
        return self.norm(x)


class Embedder(nn.Module):
    def __init__(self, preset):
        super().__init__()
        c = PRESETS[preset]
        self.config = c
        self.vision = VisionEncoder(c)
        self.projector = Projector(c["vision_width"], c["width"], c["image_size"] // c["patch_size"])
        self.language = LanguageModel(c)

    def image_tokens(self):
        return (self.config["image_size"] // self.config["patch_size"] // 2) ** 2

    def prepare(self, prompts):
        """Host-side layout of prompts: a list of (ids, image index or None), ids with one IMAGE_ID
        where an image goes. Returns padded ids [B, L] (image slots hold 0), lengths [B], and for every
        image-token slot its (row, column, image, token) — done once per batch, outside timing."""
        k = self.image_tokens()
        rows = []
        slots = ([], [], [], [])
        for b, (ids, image) in enumerate(prompts):
            seq = []
            for token in ids:
                if token == IMAGE_ID:
                    for t in range(k):
                        for slot, value in zip(slots, (b, len(seq), image, t)):
                            slot.append(value)
                        seq.append(0)
                else:
                    seq.append(token)
            rows.append(seq)
        length = max(map(len, rows))
        ids = torch.tensor([r + [0] * (length - len(r)) for r in rows], dtype=torch.long)
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        return dict(ids=ids, lengths=lengths, slots=tuple(torch.tensor(s, dtype=torch.long) for s in slots))

    def embed(self, layout, images):
        """Unit-norm embeddings [B, D] of prepared prompts with their images [Bi, C, H, W]."""
        x = self.language.token_embed[layout["ids"]]  # [B, L, D]
        if images is not None and len(layout["slots"][0]):
            tokens = self.projector(self.vision(images))  # [Bi, K, D]
            row, col, image, token = layout["slots"]
            x = x.index_put((row, col), tokens[image, token])
        hidden = self.language(x, layout["lengths"])  # [B, L, D]
        last = hidden[torch.arange(hidden.shape[0]), layout["lengths"] - 1]  # [B, D]
        return last / torch.sqrt(last.pow(2).sum(-1, keepdim=True) + 1e-12)


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())


def build(preset):
    model = Embedder(preset)
    count = parameter_count(model)
    expected = PRESETS[preset]["params"]
    assert count == expected, f"{preset}: the PyTorch model has {count} parameters, ega-core's has {expected}"
    return model


# ---------------------------------------------------------------------------------------------
# The losses (docs/ega.md)
# ---------------------------------------------------------------------------------------------


def infonce(s, tau):
    """L = mean_i −log softmax(S/τ)[i][i]; target i is query i's positive (M >= N)."""
    return F.cross_entropy(s / tau, torch.arange(s.shape[0]))


class EgaFunction(torch.autograd.Function):
    """info-NCE's value; backward (P̄ − I)/(N·τ) with P̄ = P·(1 + α·σ((S − S_ii)/τ_h)) off the diagonal."""

    @staticmethod
    def forward(ctx, s, tau, alpha, tau_h, rescale):
        ctx.save_for_backward(s)
        ctx.options = (tau, alpha, tau_h, rescale)
        z = s / tau
        n = s.shape[0]
        diagonal = z[torch.arange(n), torch.arange(n)]
        return (torch.logsumexp(z, dim=1) - diagonal).mean()

    @staticmethod
    def backward(ctx, grad_output):
        (s,) = ctx.saved_tensors
        return grad_output * ega_grad(s, *ctx.options), None, None, None, None


def ega_grad(s, tau, alpha, tau_h, rescale):
    """∂L/∂S of EGA (docs/ega.md, "Backward"), no graph."""
    n, m = s.shape
    s = s.detach()
    p = torch.softmax(s / tau, dim=1)
    positive = s.diagonal()[:, None]  # [N, 1]
    off = torch.ones(n, m, dtype=torch.bool)
    off[torch.arange(n), torch.arange(n)] = False
    hardness = torch.sigmoid((s - positive) / tau_h) * off
    amplified = p * (1 + alpha * hardness)
    if rescale == "sum":
        scale = (p * off).sum(1, keepdim=True) / (amplified * off).sum(1, keepdim=True).clamp_min(1e-30)
        amplified = torch.where(off, amplified * scale, p)
    target = torch.zeros(n, m)
    target[torch.arange(n), torch.arange(n)] = 1.0
    return (amplified - target) / (n * tau)


def loss_fn(s, loss):
    if loss["kind"] == "infonce":
        return infonce(s, loss["tau"])
    tau_h = loss.get("tau_h") or loss["tau"]
    return EgaFunction.apply(s, loss["tau"], loss["alpha"], tau_h, loss.get("rescale", "none"))


# ---------------------------------------------------------------------------------------------
# parity: recompute what the Rust test wrote
# ---------------------------------------------------------------------------------------------


def load_weights(model, path):
    from safetensors.torch import load_file

    weights = load_file(path)
    own = dict(model.named_parameters())
    missing = sorted(set(own) - set(weights))
    extra = sorted(set(weights) - set(own))
    assert not missing and not extra, f"weights do not match the model: missing {missing}, unexpected {extra}"
    with torch.no_grad():
        for name, param in own.items():
            value = weights[name]
            assert value.shape == param.shape, f"{name}: file {tuple(value.shape)}, model {tuple(param.shape)}"
            param.copy_(value.float())


def max_abs_diff(ours, theirs):
    theirs = torch.tensor(theirs, dtype=torch.float32).reshape(ours.shape)
    return float((ours.detach() - theirs).abs().max())


def parity(folder):
    case = json.load(open(f"{folder}/case.json"))
    assert case["magic"] == "ega-torch-parity" and case["version"] == 1, "not a parity case of this version"
    model = build(case["preset"])
    load_weights(model, f"{folder}/model.safetensors")
    size = model.config["image_size"]
    images = torch.tensor(case["images"], dtype=torch.float32).reshape(-1, 3, size, size)
    queries = model.prepare([(p["ids"], p["image"]) for p in case["queries"]])
    targets = model.prepare([(p["ids"], p["image"]) for p in case["targets"]])

    q = model.embed(queries, None)
    t = model.embed(targets, images)
    s = q @ t.T
    loss_config = case["loss"]
    loss = loss_fn(s, loss_config)
    s.retain_grad()
    loss.backward()
    report = {
        "parameters": parameter_count(model),
        "query_embeddings": max_abs_diff(q, case["query_embeddings"]),
        "target_embeddings": max_abs_diff(t, case["target_embeddings"]),
        "loss": abs(float(loss) - case["loss_value"]),
        "grad_s": max_abs_diff(s.grad, case["grad_s"]),
    }
    params = dict(model.named_parameters())
    for name, grad in case["param_grads"].items():
        report[f"grad {name}"] = max_abs_diff(params[name].grad, grad)
    # ∂L/∂S of the other loss options on the same S (from the Rust side's own S).
    rust_s = torch.tensor(case["similarities"], dtype=torch.float32).reshape(s.shape)
    report["similarities"] = max_abs_diff(s, case["similarities"])
    for name, extra in case.get("extra_losses", {}).items():
        leaf = rust_s.clone().requires_grad_(True)
        loss_fn(leaf, extra["loss"]).backward()
        report[f"grad_s {name}"] = max_abs_diff(leaf.grad, extra["grad_s"])
    print(json.dumps(report))


# ---------------------------------------------------------------------------------------------
# serve: the PyTorch side of `native bench train`
# ---------------------------------------------------------------------------------------------


class Bench:
    """State of the benchmark server: a model, an optimizer and a batch (what ega-core's side has)."""

    def __init__(self, spec):
        torch.manual_seed(spec.get("seed", 0))
        self.model = build(spec["preset"])
        size = self.model.config["image_size"]
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"], eps=1e-5
        )
        self.grad_clip = spec["grad_clip"]
        batch = json.load(open(spec["batch_file"]))
        self.images = torch.tensor(batch["images"], dtype=torch.float32).reshape(-1, 3, size, size)
        self.queries = self.model.prepare([(p["ids"], p["image"]) for p in batch["queries"]])
        self.targets = self.model.prepare([(p["ids"], p["image"]) for p in batch["targets"]])
        self.index_prompts = [(p["ids"], p["image"]) for p in batch["index"]]
        # Decoded pixels in host memory, as an indexer holds them before embedding.
        self.index_images = torch.tensor(batch["index_images"], dtype=torch.float32).reshape(-1, 3, size, size)

    def train_step(self, loss):
        """Embed → S → loss → backward → per-tensor norm clipping → AdamW; returns the loss value."""
        self.optimizer.zero_grad(set_to_none=True)
        s = self.model.embed(self.queries, None) @ self.model.embed(self.targets, self.images).T
        value = loss_fn(s, loss)
        value.backward()
        if self.grad_clip > 0:
            for p in self.model.parameters():  # ega-core clips each tensor's gradient on its own
                torch.nn.utils.clip_grad_norm_([p], self.grad_clip, foreach=True)
        self.optimizer.step()
        return value.item()  # the step is finished: the loss is on the host

    def embed_index(self):
        """Images → embeddings as an indexer does: layout of the prompts, forward, rows on the host."""
        with torch.inference_mode():
            layout = self.model.prepare(self.index_prompts)
            return self.model.embed(layout, self.index_images)


def serve(threads):
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    bench = None
    for line in sys.stdin:
        request = json.loads(line)
        command = request["cmd"]
        if command == "setup":
            bench = Bench(request)
            reply = {"torch": torch.__version__, "threads": torch.get_num_threads(), "params": parameter_count(bench.model)}
        elif command == "train":
            times, losses = [], []
            for _ in range(request["steps"]):
                start = time.perf_counter()
                losses.append(bench.train_step(request["loss"]))
                times.append(time.perf_counter() - start)
            reply = {"seconds": times, "losses": losses}
        elif command == "embed":
            times = []
            for _ in range(request["repeats"]):
                start = time.perf_counter()
                out = bench.embed_index()
                float(out[0, 0])  # results are on the host; nothing pending
                times.append(time.perf_counter() - start)
            reply = {"seconds": times}
        elif command == "loss":
            # The loss alone: forward + backward on a leaf S of the batch's shape.
            n, m = request["shape"]
            s = torch.rand(n, m, generator=torch.Generator().manual_seed(0)) * 2 - 1
            times = []
            for _ in range(request["repeats"]):
                leaf = s.clone().requires_grad_(True)
                start = time.perf_counter()
                loss_fn(leaf, request["loss"]).backward()
                float(leaf.grad[0, 0])
                times.append(time.perf_counter() - start)
            reply = {"seconds": times}
        elif command == "version":
            reply = {"torch": torch.__version__, "threads": torch.get_num_threads()}
        elif command == "quit":
            break
        else:
            reply = {"error": f"unknown command {command!r}"}
        print(json.dumps(reply), flush=True)


def profile(batch_file, preset, threads, steps, loss_kind):
    """Where a PyTorch training step spends its time: torch.profiler's table of operators."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(threads)
    bench = Bench(dict(preset=preset, batch_file=batch_file, lr=5e-4, weight_decay=0.01, grad_clip=1.0))
    loss = {"kind": loss_kind, "tau": 0.05, "alpha": 1.0, "rescale": "sum"}
    bench.train_step(loss)  # warm-up
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            bench.train_step(loss)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info")
    p = sub.add_parser("parity")
    p.add_argument("dir")
    p.add_argument("--threads", type=int, default=0)
    f = sub.add_parser("profile", help="profile training steps on a batch file written by `native bench train`")
    f.add_argument("batch_file")
    f.add_argument("--preset", default="small")
    f.add_argument("--threads", type=int, default=1)
    f.add_argument("--steps", type=int, default=5)
    f.add_argument("--loss", default="ega", choices=["ega", "infonce"])
    s = sub.add_parser("serve")
    s.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    if args.command == "info":
        for name in PRESETS:
            print(f"{name}: {parameter_count(build(name))} parameters (torch {torch.__version__})")
    elif args.command == "parity":
        if args.threads:
            torch.set_num_threads(args.threads)
        parity(args.dir)
    elif args.command == "profile":
        profile(args.batch_file, args.preset, args.threads, args.steps, args.loss)
    else:
        serve(args.threads)


if __name__ == "__main__":
    main()
