#!/usr/bin/env python3
"""Forward throughput of a pretrained decoder under Hugging Face transformers (the reference side).

Command:
  decoder GGUF [--threads 2] [--batch 8] [--seq 40] [--rounds 5]
      Load a llama GGUF (e.g. SmolLM2-135M-Instruct) with transformers in float32, then time the
      base model's forward (token embedding → decoder layers → final norm; no lm_head, as in an
      embedder) on `batch` sequences of `seq` fixed token ids, without gradients. One warm-up
      forward, then `rounds` timed ones; prints one JSON line:
      {"tokens_per_s", "median_s", "threads", "batch", "seq", "rounds", "load_s", ...}
      where tokens_per_s = batch * seq / median_s and load_s is the wall time of from_pretrained.

Requires bench/.venv (bench/setup.sh). CPU only.
"""

import argparse
import json
import os
import statistics
import time

import torch

# Text tokenised (and repeated) to make the fixed ids; content does not matter for the timing.
FILLER = ("Koalas sleep up to twenty hours a day because their diet of eucalyptus leaves gives "
          "them very little energy. ")


def cmd_decoder(args):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(os.path.abspath(args.gguf))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    load_s = time.perf_counter() - start
    base = model.model  # LlamaModel: the decoder up to and including the final RMSNorm

    # Fixed ids: the filler tokenised, repeated to length; row b starts b tokens later so the
    # rows differ. Every row is full length (no padding), so no attention mask is needed.
    stream = tokenizer(FILLER).input_ids
    need = args.seq + args.batch
    stream = (stream * (need // len(stream) + 1))[:need]
    ids = torch.tensor([stream[b:b + args.seq] for b in range(args.batch)])  # [batch, seq]

    times = []
    with torch.no_grad():
        for r in range(args.rounds + 1):
            start = time.perf_counter()
            hidden = base(input_ids=ids, use_cache=False).last_hidden_state  # [batch, seq, width]
            elapsed = time.perf_counter() - start
            if r > 0:  # round 0 is the warm-up
                times.append(elapsed)
    assert hidden.shape == (args.batch, args.seq, model.config.hidden_size)

    median_s = statistics.median(times)
    print(json.dumps({
        "tokens_per_s": args.batch * args.seq / median_s,
        "median_s": median_s,
        "threads": args.threads,
        "batch": args.batch,
        "seq": args.seq,
        "rounds": args.rounds,
        "load_s": load_s,
        "times_s": times,
        "layers": model.config.num_hidden_layers,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("decoder", help="forward throughput of a GGUF decoder")
    p.add_argument("gguf")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=40)
    p.add_argument("--rounds", type=int, default=5)
    p.set_defaults(run=cmd_decoder)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.run(args)


if __name__ == "__main__":
    main()
