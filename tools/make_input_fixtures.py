#!/usr/bin/env python
"""pyvene 0.1.8 fixtures for what a request's INPUTS may hold (tests/fixtures/pyvene_inputs/):

  * a source of batch size 1, or a source location table listing one example, which pyvene
    gathers once and broadcasts to every base example (issue #18, item 13);
  * position_ids on the base and the sources (left-padded batches, as generation builds them),
    which pyvene passes to the model with the rest of each input dict (issue #18, item 7).

Each case runs a fresh pyvene.IntervenableModel on one of the existing fixture checkpoints
(tests/fixtures/gpt2/small, tests/fixtures/neox/par_rot25; eager attention, f32, CPU, 1 thread)
and records what pyvene returned, in the layout of tests/fixtures/pyvene (config.json as pyvene's
save() writes it, inputs.json, expected.safetensors with logits / original_logits, manifest.json).
The "model" of a case names its checkpoint directory under tests/fixtures ("gpt2/small").

Every case is also checked against the same call with the broadcast made explicit (the source
repeated to the base's batch size, its one location row repeated) or, for position ids, against
transformers run directly with the intervention done by hand, so the fixture states pyvene's
behaviour and that behaviour is what the description says.

Usage (from the repository root, with the packages of tools/requirements.txt):
    v/bin/python tools/make_input_fixtures.py
The output is deterministic.
"""

import collections
import copy
import json
import os
import shutil
import tempfile
import warnings
import zlib

import torch
import transformers
from transformers import AutoModelForCausalLM

warnings.filterwarnings("ignore")
import pyvene as pv  # noqa: E402

from make_pyvene_fixtures import save_safetensors, pv_version  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_ROOT = os.path.join(REPO, "tests", "fixtures", "pyvene_inputs")
MODELS = {}


def model(name):
    if name not in MODELS:
        d = os.path.join(REPO, "tests", "fixtures", name, "model")
        m = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager", torch_dtype=torch.float32).eval()
        for p in m.parameters():
            p.requires_grad_(False)
        MODELS[name] = m
    return MODELS[name]


def ids(g, V, B, T):
    return torch.randint(1, V, (B, T), generator=g, dtype=torch.int64)


def left_padded(g, V, B, T, lengths):
    """A left-padded batch with attention_mask and the position_ids generation builds
    (cumsum(mask) - 1, padding at 0)."""
    x = ids(g, V, B, T)
    mask = torch.zeros((B, T), dtype=torch.int64)
    for b, n in enumerate(lengths):
        mask[b, T - n:] = 1
    x = torch.where(mask.bool(), x, torch.zeros_like(x))
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": x, "attention_mask": mask, "position_ids": pos}


CASES = []


def case(name, model_name, desc):
    def deco(fn):
        CASES.append(dict(name=name, model=model_name, fn=fn, desc=desc))
        return fn
    return deco


def jsonify(x):
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, (list, tuple)):
        return [jsonify(v) for v in x]
    if isinstance(x, dict):
        return {k: jsonify(v) for k, v in x.items()}
    return x


def repeat_rows(inp, B):
    return {k: v.expand(B, -1).contiguous() for k, v in inp.items()}


# ---- broadcast sources -----------------------------------------------------------------------
@case("bcast_source_b1_vanilla_block_output", "gpt2/small",
      "source of batch 1 (locations for its one example) patched into every example of a base of 3")
def _(g, V):
    base, src = {"input_ids": ids(g, V, 3, 6)}, {"input_ids": ids(g, V, 1, 6)}
    ul = {"sources->base": ([[[2]]], [[[1], [3], [4]]])}
    explicit = ({"input_ids": src["input_ids"].expand(3, -1)}, {"sources->base": ([[[2]] * 3], [[[1], [3], [4]]])})
    return dict(reps=[{"layer": 1, "component": "block_output"}], types=pv.VanillaIntervention,
                base=base, sources=[src], ul=ul, explicit=explicit)


@case("bcast_source_b1_addition_mlp_output_u2", "gpt2/small",
      "Addition from a batch-1 source of another length, two units, into a base of 2. pyvene 0.1.8 "
      "broadcasts only a single gathered vector (1, 1, D) and refuses this call, so the expected values "
      "are pyvene's for the broadcast written out (source and its location row repeated per example): "
      "cvene's extension, unit u of the one source example into unit u of every base example")
def _(g, V):
    base, src = {"input_ids": ids(g, V, 2, 5)}, {"input_ids": ids(g, V, 1, 7)}
    ul = {"sources->base": ([[[1, 5]]], [[[0, 2], [3, 4]]])}
    explicit = ({"input_ids": src["input_ids"].expand(2, -1)}, {"sources->base": ([[[1, 5]] * 2], ul["sources->base"][1])})
    return dict(reps=[{"layer": 0, "component": "mlp_output"}], types=pv.AdditionIntervention,
                base=base, sources=[src], ul=ul, explicit=explicit, pyvene_refuses=True)


@case("bcast_one_row_of_b2_source", "gpt2/small",
      "a source of batch 2 whose location table lists one example: pyvene gathers example 0 only and "
      "broadcasts it")
def _(g, V):
    base, src = {"input_ids": ids(g, V, 2, 6)}, {"input_ids": ids(g, V, 2, 6)}
    ul = {"sources->base": ([[[4]]], [[[2], [5]]])}
    explicit = ({"input_ids": src["input_ids"][:1].expand(2, -1)}, {"sources->base": ([[[4]] * 2], [[[2], [5]]])})
    return dict(reps=[{"layer": 1, "component": "attention_output"}], types=pv.VanillaIntervention,
                base=base, sources=[src], ul=ul, explicit=explicit)


@case("bcast_source_b1_neox_block_input", "neox/par_rot25",
      "GPT-NeoX: a batch-1 source patched into a base of 3 at block_input")
def _(g, V):
    base, src = {"input_ids": ids(g, V, 3, 5)}, {"input_ids": ids(g, V, 1, 5)}
    ul = {"sources->base": ([[[3]]], [[[1], [0], [4]]])}
    explicit = ({"input_ids": src["input_ids"].expand(3, -1)}, {"sources->base": ([[[3]] * 3], ul["sources->base"][1])})
    return dict(reps=[{"layer": 1, "component": "block_input"}], types=pv.VanillaIntervention,
                base=base, sources=[src], ul=ul, explicit=explicit)


# ---- position ids ----------------------------------------------------------------------------
@case("position_ids_left_padded_gpt2", "gpt2/small",
      "left-padded base with position_ids (cumsum(mask) - 1), unpadded source; Vanilla at block_output")
def _(g, V):
    base = left_padded(g, V, 2, 7, [7, 4])
    src = {"input_ids": ids(g, V, 2, 5)}
    ul = {"sources->base": ([[[1], [2]]], [[[2], [5]]])}
    return dict(reps=[{"layer": 0, "component": "block_output"}], types=pv.VanillaIntervention,
                base=base, sources=[src], ul=ul, oo=True)


@case("position_ids_both_left_padded_gpt2", "gpt2/small",
      "left-padded base and source, both with position_ids; Addition at mlp_input")
def _(g, V):
    base = left_padded(g, V, 2, 6, [3, 6])
    src = left_padded(g, V, 2, 6, [6, 5])
    ul = {"sources->base": ([[[4], [3]]], [[[5], [1]]])}
    return dict(reps=[{"layer": 1, "component": "mlp_input"}], types=pv.AdditionIntervention,
                base=base, sources=[src], ul=ul, oo=True)


@case("position_ids_left_padded_neox", "neox/par_rot25",
      "GPT-NeoX (rotary): left-padded base and source with position_ids, the base's also restarting "
      "mid-row (rotary attention depends only on position differences, so a plain left-padding shift "
      "would change nothing but rounding); Vanilla at block_output")
def _(g, V):
    base = left_padded(g, V, 3, 6, [6, 2, 4])
    base["position_ids"] = torch.tensor([[0, 1, 2, 0, 1, 2], [0, 0, 0, 0, 0, 1], [0, 0, 0, 1, 0, 1]])
    src = left_padded(g, V, 3, 6, [5, 6, 3])
    ul = {"sources->base": ([[[1], [0], [4]]], [[[0], [4], [3]]])}
    return dict(reps=[{"layer": 0, "component": "block_output"}], types=pv.VanillaIntervention,
                base=base, sources=[src], ul=ul, oo=True)


def run(ivm, base, sources, ul, oo):
    with torch.no_grad():
        return ivm(dict(base), [dict(s) for s in sources], copy.deepcopy(ul), output_original_output=oo,
                   return_dict=True)


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    assert pv_version() == "0.1.8", pv_version()
    if os.path.exists(OUT_ROOT):
        shutil.rmtree(OUT_ROOT)
    os.makedirs(os.path.join(OUT_ROOT, "cases"))
    manifest = []
    for idx, spec in enumerate(CASES):
        name = f"{idx:03d}_{spec['name']}"
        m = model(spec["model"])
        g = torch.Generator().manual_seed(zlib.crc32(spec["name"].encode()))
        c = spec["fn"](g, m.config.vocab_size)
        oo = c.get("oo", False)
        torch.manual_seed(0)
        ivm = pv.IntervenableModel(pv.IntervenableConfig(c["reps"], intervention_types=c["types"]), m)
        if c.get("pyvene_refuses"):  # pyvene's answer for the explicit form (see the case)
            try:
                run(ivm, c["base"], c["sources"], c["ul"], oo)
                raise AssertionError(f"{name}: pyvene accepted the broadcast form")
            except ValueError:
                pass
            src_x, ul_x = c["explicit"]
            ivm = pv.IntervenableModel(pv.IntervenableConfig(c["reps"], intervention_types=c["types"]), m)
            res = run(ivm, c["base"], [src_x], ul_x, oo)
        else:
            res = run(ivm, c["base"], c["sources"], c["ul"], oo)
        logits = res.intervened_outputs.logits.detach().float().contiguous()
        tensors = {"logits": logits}
        if oo:
            tensors["original_logits"] = res.original_outputs.logits.detach().float().contiguous()
        # the same call with the broadcast written out must agree exactly
        if "explicit" in c and not c.get("pyvene_refuses"):
            src_x, ul_x = c["explicit"]
            ivm2 = pv.IntervenableModel(pv.IntervenableConfig(c["reps"], intervention_types=c["types"]), m)
            res2 = run(ivm2, c["base"], [src_x], ul_x, False)
            d = (res2.intervened_outputs.logits - res.intervened_outputs.logits).abs().max().item()
            assert d < 1e-5, (name, d)  # torch's GEMMs round a batch of 1 and of B differently
        # position ids: they must matter (the same call without them differs at real tokens)
        if "position_ids" in c["base"]:
            nopos = {k: v for k, v in c["base"].items() if k != "position_ids"}
            srcs = [{k: v for k, v in s.items() if k != "position_ids"} for s in c["sources"]]
            ivm3 = pv.IntervenableModel(pv.IntervenableConfig(c["reps"], intervention_types=c["types"]), m)
            res3 = run(ivm3, nopos, srcs, c["ul"], False)
            real = c["base"]["attention_mask"].bool()
            d = (res3.intervened_outputs.logits[real] - logits[real]).abs().max().item()
            assert d > 1e-3, (name, d)  # far above rounding: a test ignoring them fails
        with torch.no_grad():
            clean = m(**c["base"]).logits
        assert not torch.equal(clean, logits), f"{name}: the intervention had no effect"
        assert torch.isfinite(logits).all()

        case_dir = os.path.join(OUT_ROOT, "cases", name)
        os.makedirs(case_dir)
        with tempfile.TemporaryDirectory() as td:
            ivm.save(td)
            with open(os.path.join(td, "config.json"), "rb") as f:
                cfg_bytes = f.read()
        with open(os.path.join(case_dir, "config.json"), "wb") as f:
            f.write(cfg_bytes)
        inp = collections.OrderedDict()
        inp["model"] = spec["model"]
        inp["base"] = jsonify(c["base"])
        inp["sources"] = [jsonify(s) for s in c["sources"]]
        inp["unit_locations"] = jsonify(c["ul"])
        inp["output_original_output"] = oo
        with open(os.path.join(case_dir, "inputs.json"), "w") as f:
            f.write(json.dumps(inp, separators=(", ", ": ")) + "\n")
        meta = {"torch": torch.__version__, "transformers": transformers.__version__, "pyvene": pv_version(),
                "case": name, "note": spec["desc"]}
        save_safetensors(tensors, os.path.join(case_dir, "expected.safetensors"), meta)
        manifest.append({"name": name, "model": spec["model"], "description": spec["desc"]})
        print(f"{name:50s} {spec['model']}")
    with open(os.path.join(OUT_ROOT, "manifest.json"), "w") as f:
        f.write("[\n" + ",\n".join("  " + json.dumps(e) for e in manifest) + "\n]\n")
    print(f"{len(manifest)} cases")


if __name__ == "__main__":
    main()
