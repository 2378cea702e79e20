#!/usr/bin/env python3
"""Hugging Face transformers as the reference for the pretrained-model parity tests.

The Rust loaders (SmolVLM / Idefics3 safetensors, llama GGUF) are checked against what
transformers computes from the very same files. This script writes those files and the expected
outputs; it never reads anything the Rust side wrote. Everything runs in float32 on the CPU.

Commands:
  tiny-smolvlm DIR [--gqa|--no-gqa] [--seed S]
      Build a tiny random Idefics3 (SmolVLM) model, perturb every parameter (norm gains and biases
      included) with seeded noise, save it to DIR (config.json + model.safetensors) and write the
      expected outputs to DIR/reference.safetensors and DIR/reference.json.
  gguf-decoder GGUF OUT.safetensors
      Load a llama GGUF (SmolLM2-135M-Instruct) with transformers, run three fixed prompts and save
      their token ids, final (post-norm) hidden states and last-position logits to OUT.safetensors,
      with the tokenizer facts and prompts in OUT.json.

Both take --threads N (torch.set_num_threads; default 2). Requires bench/.venv (bench/setup.sh).
"""

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

# ---------------------------------------------------------------------------------------------
# tiny-smolvlm
# ---------------------------------------------------------------------------------------------

# Token ids of the tiny vocabulary (128 ids). Ids below 100 are ordinary text; the three specials
# sit just above: `<image>` (the config's image_token_id), `<fake_token_around_image>`, `<global-img>`.
IMAGE_TOKEN_ID = 100
FAKE_TOKEN_AROUND_IMAGE_ID = 101
GLOBAL_IMG_TOKEN_ID = 102
# Text ids are drawn from [4, 100): clear of the specials and of 0..3, which ega-core's own
# vocabularies reserve (pad, bos, eos, image), so no Rust-side special-casing can hide a mismatch.
TEXT_ID_RANGE = (4, 100)

PERTURB_STD = 0.1  # std of the seeded noise added to every parameter after construction


def tiny_config(gqa):
    """The tiny SmolVLM-shaped config: SigLIP-like vision tower, pixel-shuffle connector, llama."""
    from transformers import Idefics3Config

    return Idefics3Config(
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            image_size=32, patch_size=8, num_channels=3,
        ),
        text_config=dict(
            vocab_size=128, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2 if gqa else 4, rms_norm_eps=1e-5,
            # A non-default RoPE base, so a loader that ignores the config's theta fails parity.
            rope_parameters={"rope_type": "default", "rope_theta": 50_000.0},
        ),
        scale_factor=2,
        image_token_id=IMAGE_TOKEN_ID,
    )


def perturb_(model, generator):
    """Add N(0, PERTURB_STD²) noise to every parameter, in name order, from one seeded generator.

    transformers initialises LayerNorm/RMSNorm gains to 1 and biases to 0; a loader that dropped
    any of them would still match such a model. After this, none of them is trivial.
    """
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.add_(PERTURB_STD * torch.randn(p.shape, generator=generator, dtype=p.dtype))


def cmd_tiny_smolvlm(args):
    from transformers import Idefics3Model

    torch.manual_seed(args.seed)
    cfg = tiny_config(args.gqa)
    model = Idefics3Model(cfg).eval()
    perturb_(model, torch.Generator().manual_seed(args.seed + 1))
    os.makedirs(args.dir, exist_ok=True)
    model.save_pretrained(args.dir)

    params = dict(model.named_parameters())
    for name, p in params.items():
        print(f"{name} {list(p.shape)}")
    n_params = sum(p.numel() for p in params.values())
    print(f"{len(params)} tensors, {n_params} parameters", file=sys.stderr)

    vc, tc = cfg.vision_config, cfg.text_config
    grid = vc.image_size // vc.patch_size
    n_patches = grid * grid  # P
    k = n_patches // cfg.scale_factor**2  # image tokens per image (K)
    assert k == model.image_seq_len

    # Inputs, all from one seeded generator: the image and the text ids.
    g = torch.Generator().manual_seed(args.seed + 2)
    pixels = torch.rand(1, 3, vc.image_size, vc.image_size, generator=g)  # [1, 3, H, W] in [0, 1)
    text_ids = torch.randint(*TEXT_ID_RANGE, (1, 7), generator=g)  # [1, 7]
    before = torch.randint(*TEXT_ID_RANGE, (3,), generator=g).tolist()
    after = torch.randint(*TEXT_ID_RANGE, (2,), generator=g).tolist()
    # One global image without splitting, as Idefics3Processor.replace_image_token lays it out for
    # rows == cols == 0: <fake_token_around_image><global-img><image>*K<fake_token_around_image>.
    image_ids = torch.tensor([before + [FAKE_TOKEN_AROUND_IMAGE_ID, GLOBAL_IMG_TOKEN_ID]
                              + [IMAGE_TOKEN_ID] * k + [FAKE_TOKEN_AROUND_IMAGE_ID] + after])  # [1, L2]

    # The SmolVLM processor normalises with mean 0.5, std 0.5; the model takes [B, images, 3, H, W].
    pixel_values = ((pixels - 0.5) / 0.5).unsqueeze(1)  # [1, 1, 3, H, W]

    with torch.no_grad():
        # Vision tower on its own: every patch is real, so the patch mask is all ones.
        patch_mask = torch.ones(1, grid, grid, dtype=torch.bool)
        vision_out = model.vision_model(
            pixel_values=pixel_values[:, 0], patch_attention_mask=patch_mask
        ).last_hidden_state  # [1, P, Dv], after post_layernorm
        connector_out = model.connector(vision_out)  # [1, K, D]

        text_hidden = model(input_ids=text_ids, use_cache=False).last_hidden_state  # [1, L, D]
        image_hidden = model(
            input_ids=image_ids, pixel_values=pixel_values, use_cache=False
        ).last_hidden_state  # [1, L2, D]

        # Self-checks. (1) The model's own image path gives what we computed piecewise.
        feats = model.get_image_features(pixel_values).pooler_output[0]  # [K, D]
        assert torch.allclose(feats, connector_out[0], atol=1e-6), "image features differ"
        # (2) Image features replace the <image> positions in order: splice them in by hand and
        # run the language model on the embeddings.
        embeds = model.get_input_embeddings()(image_ids).clone()  # [1, L2, D]
        positions = (image_ids[0] == IMAGE_TOKEN_ID).nonzero().flatten()
        embeds[0, positions] = connector_out[0]
        manual = model.text_model(inputs_embeds=embeds, use_cache=False).last_hidden_state
        assert torch.allclose(manual, image_hidden, atol=1e-5), "in-order splice differs"

    tensors = {
        "pixels": pixels,
        "vision_out": vision_out,
        "connector_out": connector_out,
        "text_ids": text_ids,
        "text_hidden": text_hidden,
        "image_ids": image_ids,
        "image_inputs_embeds": embeds,  # the merged input embeddings, for debugging a mismatch
        "image_hidden": image_hidden,
        "text_embedding": F.normalize(text_hidden[:, -1], dim=-1),  # [1, D]
        "image_embedding": F.normalize(image_hidden[:, -1], dim=-1),  # [1, D]
    }
    tensors = {n: t.contiguous() for n, t in tensors.items()}
    save_file(tensors, os.path.join(args.dir, "reference.safetensors"))

    reference = {
        "dtype": "float32",
        "seed": args.seed,
        "gqa": args.gqa,
        "perturb_std": PERTURB_STD,
        "vision": {
            "hidden_size": vc.hidden_size, "intermediate_size": vc.intermediate_size,
            "num_hidden_layers": vc.num_hidden_layers, "num_attention_heads": vc.num_attention_heads,
            "image_size": vc.image_size, "patch_size": vc.patch_size, "num_channels": vc.num_channels,
            "hidden_act": vc.hidden_act, "layer_norm_eps": vc.layer_norm_eps,
        },
        "text": {
            "vocab_size": tc.vocab_size, "hidden_size": tc.hidden_size,
            "intermediate_size": tc.intermediate_size, "num_hidden_layers": tc.num_hidden_layers,
            "num_attention_heads": tc.num_attention_heads, "num_key_value_heads": tc.num_key_value_heads,
            "head_dim": tc.head_dim, "hidden_act": tc.hidden_act, "rms_norm_eps": tc.rms_norm_eps,
            "rope_theta": tc.rope_parameters["rope_theta"], "tie_word_embeddings": tc.tie_word_embeddings,
        },
        "scale_factor": cfg.scale_factor,
        "patches_per_image": n_patches,
        "image_seq_len": k,
        "image_token_id": IMAGE_TOKEN_ID,
        "fake_token_around_image_id": FAKE_TOKEN_AROUND_IMAGE_ID,
        "global_img_token_id": GLOBAL_IMG_TOKEN_ID,
        "pixel_normalisation": {"mean": 0.5, "std": 0.5, "model_input": "(pixels - 0.5) / 0.5"},
        "text_ids": text_ids[0].tolist(),
        "image_ids": image_ids[0].tolist(),
        "image_prompt_layout": "text*3 <fake_token_around_image> <global-img> <image>*K "
                               "<fake_token_around_image> text*2",
        "embedding": "last position of last_hidden_state (after the final RMSNorm), L2-normalised",
        "tensors": {n: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                    for n, t in tensors.items()},
        "parameters": n_params,
        "parameter_tensors": len(params),
    }
    with open(os.path.join(args.dir, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
    for n, t in tensors.items():
        print(f"reference {n} {list(t.shape)} {str(t.dtype).removeprefix('torch.')}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# gguf-decoder
# ---------------------------------------------------------------------------------------------

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Koalas sleep up to twenty hours a day because",
]


def load_gguf(path):
    """(tokenizer, LlamaForCausalLM) from a GGUF file, dequantised to float32 by transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(os.path.abspath(path))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    return tokenizer, model


def cmd_gguf_decoder(args):
    tokenizer, model = load_gguf(args.gguf)
    tensors, prompts = {}, []
    with torch.no_grad():
        for i, text in enumerate(PROMPTS):
            # The tokenizer's defaults (add_special_tokens=True); whether that adds a BOS is
            # recorded below and visible in the ids.
            ids = tokenizer(text, return_tensors="pt").input_ids  # [1, L]
            out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
            hidden = out.hidden_states[-1]  # [1, L, 576]
            # In transformers 5 the last entry of hidden_states is tied to the base model's
            # last_hidden_state (after the final norm); check that rather than trust it.
            base = model.model(input_ids=ids, use_cache=False).last_hidden_state
            assert torch.equal(hidden, base), "hidden_states[-1] is not the post-norm output"
            assert torch.allclose(model.lm_head(hidden[:, -1]), out.logits[:, -1], atol=1e-4)
            tensors[f"ids_{i}"] = ids[0]
            tensors[f"hidden_{i}"] = hidden[0]
            tensors[f"logits_last_{i}"] = out.logits[0, -1]
            top = torch.topk(out.logits[0, -1], 5)
            top5 = [[tokenizer.decode([t]), int(t), round(float(v), 4)] for v, t in zip(top.values, top.indices)]
            prompts.append({"text": text, "ids": ids[0].tolist(),
                            "tokens": tokenizer.convert_ids_to_tokens(ids[0].tolist()), "top5": top5})
            print(f"prompt {i} {text!r} ids {ids[0].tolist()}", file=sys.stderr)
            print(f"  top-5 next: {top5}", file=sys.stderr)

    tensors = {n: t.contiguous() for n, t in tensors.items()}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(tensors, args.out)

    cfg = model.config
    plain = tokenizer("x").input_ids
    info = {
        "gguf": os.path.basename(args.gguf),
        "dtype": "float32",
        "model_class": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "bos_token": tokenizer.bos_token, "bos_token_id": tokenizer.bos_token_id,
        "eos_token": tokenizer.eos_token, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "adds_bos": tokenizer.bos_token_id is not None and plain[:1] == [tokenizer.bos_token_id],
        "adds_eos": tokenizer.eos_token_id is not None and plain[-1:] == [tokenizer.eos_token_id],
        "config": {
            "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
            "head_dim": cfg.head_dim, "rms_norm_eps": cfg.rms_norm_eps,
            "rope_theta": (cfg.rope_parameters or {}).get("rope_theta"),
            "tie_word_embeddings": cfg.tie_word_embeddings,
        },
        "hidden": "hidden_k = last_hidden_state (after the final RMSNorm) [L, hidden_size]",
        "prompts": prompts,
        "tensors": {n: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                    for n, t in tensors.items()},
    }
    json_path = os.path.splitext(args.out)[0] + ".json"
    with open(json_path, "w") as f:
        json.dump(info, f, indent=1, ensure_ascii=False)
    print(f"wrote {args.out} and {json_path}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tiny-smolvlm", help="tiny random Idefics3 model + reference outputs")
    p.add_argument("dir")
    p.add_argument("--gqa", action=argparse.BooleanOptionalAction, default=True,
                   help="2 key-value heads for 4 query heads (default); --no-gqa: 4")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=argparse.SUPPRESS)
    p.set_defaults(run=cmd_tiny_smolvlm)

    p = sub.add_parser("gguf-decoder", help="reference outputs of a llama GGUF on fixed prompts")
    p.add_argument("gguf")
    p.add_argument("out", help="OUT.safetensors (OUT.json is written beside it)")
    p.add_argument("--threads", type=int, default=argparse.SUPPRESS)
    p.set_defaults(run=cmd_gguf_decoder)

    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.run(args)


if __name__ == "__main__":
    main()
