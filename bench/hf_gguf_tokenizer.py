"""Reference values for ega-core's GGUF loader, from Hugging Face transformers and the `gguf` package.

Usage: python bench/hf_gguf_tokenizer.py FILE.gguf < request.json > reply.json

The request is {"texts": [str, ...], "rows": [{"tensor": GGUF name, "rows": [int, ...]}, ...]}.
The reply is {"ids": [[int, ...], ...], "rows": {GGUF name: [[float, ...], ...]}}:
- "ids": each text encoded by `AutoTokenizer.from_pretrained(dir, gguf_file=name)` (the tokenizer
  transformers converts from the file's metadata), with its default special-token handling;
- "rows": the chosen rows of each tensor dequantized by the `gguf` package (`gguf.quants.dequantize`)
  in PyTorch layout ([out, in]), with transformers' own Q/K un-permutation
  (`LlamaTensorProcessor`) applied to `attn_q` / `attn_k`, as `from_pretrained` does.
Used by tests/integration/gguf.rs.
"""

import json
import os
import sys

import gguf
import numpy as np
from transformers import AutoTokenizer
from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor


def main() -> None:
    path = os.path.abspath(sys.argv[1])
    request = json.load(sys.stdin)
    tokenizer = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    ids = [tokenizer(text)["input_ids"] for text in request.get("texts", [])]

    reader = gguf.GGUFReader(path)
    heads = reader.fields["llama.attention.head_count"].contents()
    kv_heads = reader.fields["llama.attention.head_count_kv"].contents()
    processor = LlamaTensorProcessor(config={"num_attention_heads": heads, "num_key_value_heads": kv_heads})
    tensors = {t.name: t for t in reader.tensors}
    rows = {}
    for item in request.get("rows", []):
        tensor = tensors[item["tensor"]]
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        values = processor.process(values, tensor.name).weights
        values = np.asarray(values, dtype=np.float32)
        rows[tensor.name] = [values[r].tolist() for r in item["rows"]]
    json.dump({"ids": ids, "rows": rows}, sys.stdout)


if __name__ == "__main__":
    main()
