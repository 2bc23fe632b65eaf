#!/usr/bin/env python3
"""transformers' logits for the GPT-2 and GPT-NeoX fixture models run in bf16 and f16, for
tests/test_lowp.cpp (cvene_ctx_params.activation_dtype: 16-bit activations end to end).

For each model directory below, loads tests/fixtures/<arch>/<NAME>/model with
transformers (eager attention), converts it with model.to(dtype) - every parameter and so
every activation in that dtype, as a researcher runs a bf16 model - and runs the input cases
of that directory's reference.safetensors (written by make_gpt2_fixtures.py /
make_neox_fixtures.py). Writes <NAME>/reference_lowp.safetensors with, per case k,
case{k}.logits_bf16 and case{k}.logits_f16 (F32 tensors holding the dtype logits).

Pinned: tools/requirements.txt (torch 2.5.1, transformers 4.46.3; CPU, 1 thread).
    python tools/make_lowp_fixtures.py
"""
import os

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
MODELS = [("gpt2", "small"), ("gpt2", "inner_erf"), ("gpt2", "fp16"),
          ("neox", "seq_rot100"), ("neox", "par_rot25"), ("neox", "fp16")]


def cases(ref_path):
    with safe_open(ref_path, "pt") as f:
        keys = set(f.keys())
        k = 0
        while f"case{k}.input_ids" in keys:
            c = {"input_ids": f.get_tensor(f"case{k}.input_ids").long(),
                 "attention_mask": f.get_tensor(f"case{k}.attention_mask").long()}
            if f"case{k}.position_ids" in keys:
                c["position_ids"] = f.get_tensor(f"case{k}.position_ids").long()
            yield k, c
            k += 1


def main():
    torch.set_num_threads(1)
    for arch, name in MODELS:
        d = os.path.join(ROOT, arch, name)
        out = {}
        for tag, dt in (("bf16", torch.bfloat16), ("f16", torch.float16)):
            model = AutoModelForCausalLM.from_pretrained(os.path.join(d, "model"), torch_dtype=torch.float32,
                                                         attn_implementation="eager").to(dt).eval()
            for k, c in cases(os.path.join(d, "reference.safetensors")):
                with torch.no_grad():
                    logits = model(**c).logits
                assert logits.dtype == dt
                out[f"case{k}.logits_{tag}"] = logits.float().contiguous()
        path = os.path.join(d, "reference_lowp.safetensors")
        save_file(out, path, {"torch": torch.__version__, "transformers": transformers.__version__,
                              "note": "model.to(dtype), eager attention, CPU"})
        print("wrote", path)


if __name__ == "__main__":
    main()
