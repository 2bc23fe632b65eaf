#!/usr/bin/env python
"""pyvene 0.1.8 on bf16 models: expected outputs of a subset of the GPT-2 intervention cases
when the model runs as model.to(torch.bfloat16), for tests/test_pyvene_parity.cpp
(Bf16Cases: cvene with compute_dtype = activation_dtype = bf16).

For each case in CASES_BF16 (existing directories under tests/fixtures/pyvene/cases, written by
tools/make_pyvene_fixtures.py), rebuilds the same case (same generator, same seed: identical
config.json and inputs.json, which this script checks), runs a fresh pyvene.IntervenableModel
on the bf16 model and writes expected_bf16.safetensors beside expected.safetensors: logits and
collected.K, as f32 tensors holding the bf16 values pyvene returned.

Pinned: tools/requirements.txt (torch 2.5.1, transformers 4.46.3, pyvene 0.1.8; CPU).
    python tools/make_pyvene_lowp_fixtures.py
"""
import copy
import json
import os
import sys
import zlib

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_pyvene_fixtures as mp  # noqa: E402  (imports pyvene, prints "nnsight is not detected")

# one or more of every intervention type the bf16 path must handle, on both models
CASES_BF16 = [
    "000_vanilla_pos_block_input_small",
    "012_vanilla_pos_block_output_inner_erf",
    "020_vanilla_pos_mlp_activation_inner_erf",
    "022_vanilla_attention_weight_heads_small",
    "028_vanilla_hpos_head_value_output_small",
    "040_addition_block_output_u2",
    "043_subtraction_attention_output",
    "046_zero_mlp_output_u2",
    "049_collect_block_output_u2",
    "052_collect_subspaces_u1",
    "062_const_addition_mlp_output_base_int",
]


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    mp.load_models()
    for name in list(mp.MODELS):
        mp.MODELS[name] = mp.MODELS[name].to(torch.bfloat16)
    by_name = {f"{i:03d}_{spec['name']}": spec for i, spec in enumerate(mp.CASES)}
    for case_name in CASES_BF16:
        spec = by_name[case_name]
        case_dir = os.path.join(mp.OUT_ROOT, "cases", case_name)
        g = mp.Gen(spec["model"], zlib.crc32(spec["name"].encode()))
        c = spec["fn"](g)
        c.setdefault("mode", "parallel")
        c.setdefault("oo", False)
        c.setdefault("subspaces", None)
        with open(os.path.join(case_dir, "inputs.json")) as f:
            saved = json.load(f)
        assert saved["base"] == mp.inputs_json(c["base"]), case_name  # the same case as the f32 fixture
        model = mp.MODELS[spec["model"]]
        torch.manual_seed(0)
        ivm = mp.pv.IntervenableModel(mp.pv.IntervenableConfig(mp.pv_reps(c["reps"]), mode=c["mode"]), model)
        sources = None if c["sources"] is None else [None if s is None else dict(s) for s in c["sources"]]
        with torch.no_grad():
            res = ivm(dict(c["base"]), sources, copy.deepcopy(c["ul"]), subspaces=copy.deepcopy(c["subspaces"]),
                      output_original_output=False, return_dict=True)
        logits = res.intervened_outputs.logits
        assert logits.dtype == torch.bfloat16, logits.dtype
        tensors = {"logits": logits.float().contiguous()}
        for k, t in enumerate(res.collected_activations or []):
            tensors[f"collected.{k}"] = t.detach().float().contiguous()
        meta = {"torch": torch.__version__, "pyvene": mp.pv_version(), "case": case_name,
                "note": "the case run by pyvene on model.to(torch.bfloat16)"}
        mp.save_safetensors(tensors, os.path.join(case_dir, "expected_bf16.safetensors"), meta)
        print("wrote", case_name, {k: tuple(v.shape) for k, v in tensors.items()})


if __name__ == "__main__":
    main()
