#!/usr/bin/env python
"""Generate pyvene 0.1.8 intervention fixtures for cvene (tests/fixtures/pyvene/).

Every case runs a FRESH pyvene.IntervenableModel (docs/pyvene_semantics.md §7.1) on one of
the existing GPT-2 fixture checkpoints (tests/fixtures/gpt2/{small,inner_erf}/model, eager
attention, f32, CPU) and records what pyvene returned:

    tests/fixtures/pyvene/cases/NNN_name/config.json         IntervenableConfig (pyvene's own
                                                             save() output, or the dict form)
    tests/fixtures/pyvene/cases/NNN_name/inputs.json         base / sources / unit_locations /
                                                             subspaces / output_original_output
    tests/fixtures/pyvene/cases/NNN_name/expected.safetensors  logits, original_logits,
                                                             collected.K, noise
    tests/fixtures/pyvene/manifest.json
    tests/fixtures/pyvene/README.md                          (hand-written, not generated)

Each case is also recomputed by an independent reference implementation in this file (plain
forward hooks that follow docs/pyvene_semantics.md, reading the JSON the C side reads) and the
result must be bit-identical to pyvene's; a mismatch aborts the script.

Usage (from the repository root):
    python -m venv v && v/bin/pip install -r tools/requirements.txt
    v/bin/python tools/make_pyvene_fixtures.py

The output is deterministic: re-running yields identical bytes.
"""

import collections
import copy
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
import zlib

import numpy as np
import torch
import transformers
from safetensors import safe_open
from transformers import GPT2LMHeadModel

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

import pyvene as pv  # noqa: E402  (prints "nnsight is not detected", harmless)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_ROOT = os.path.join(REPO, "tests", "fixtures", "pyvene")
MODEL_DIRS = {
    "small": os.path.join(REPO, "tests", "fixtures", "gpt2", "small", "model"),
    "inner_erf": os.path.join(REPO, "tests", "fixtures", "gpt2", "inner_erf", "model"),
}
SIZE_LIMIT = 3 * 1024 * 1024
NOISE_LEVEL = 0.13462981581687927

TYPES = ["Vanilla", "Addition", "Subtraction", "Zero", "Collect", "Skip", "Noise", "Lambda"]
SOURCELESS = {"Zero", "Collect", "Noise"}  # pyvene constant-source classes


# --------------------------------------------------------------------------------------------
# Lambda callbacks (the C test implements the same functions under the same names)
def _half_base_plus_source(b, s):
    # s is None when the intervention's group got no source: treated as 0.
    return b * 0.5 if s is None else b * 0.5 + s


def _negate_base(b, s):
    return -b


CALLBACKS = {"half_base_plus_source": _half_base_plus_source, "negate_base": _negate_base}

BT_COMPONENTS = ["block_input", "block_output", "attention_input", "query_output", "key_output",
                 "value_output", "attention_value_output", "attention_output", "mlp_input",
                 "mlp_activation", "mlp_output"]
HEAD_COMPONENTS = ["head_query_output", "head_key_output", "head_value_output",
                   "head_attention_value_output"]


# --------------------------------------------------------------------------------------------
# deterministic safetensors writer (same as tools/make_gpt2_fixtures.py, plus F64)
def save_safetensors(tensors, path, metadata):
    dt = {torch.float32: "F32", torch.int32: "I32", torch.float64: "F64"}
    header = {"__metadata__": dict(sorted(metadata.items()))}
    blobs = []
    off = 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        b = t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dt[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)
    with safe_open(path, framework="pt") as f:
        assert f.metadata() == metadata
        assert sorted(f.keys()) == sorted(tensors)
        for name in tensors:
            got = f.get_tensor(name)
            assert got.dtype == tensors[name].dtype and torch.equal(got, tensors[name]), name


# --------------------------------------------------------------------------------------------
# models
MODELS = {}
DIMS = {}


def load_models():
    for name, d in MODEL_DIRS.items():
        m = GPT2LMHeadModel.from_pretrained(d, attn_implementation="eager",
                                            torch_dtype=torch.float32).eval()
        assert m.config._attn_implementation == "eager"
        for p in m.parameters():
            p.requires_grad_(False)
        MODELS[name] = m
        c = m.config
        DIMS[name] = dict(C=c.n_embd, H=c.n_head, hd=c.n_embd // c.n_head, L=c.n_layer,
                          I=c.n_inner or 4 * c.n_embd, V=c.vocab_size, P=c.n_positions)


def comp_dim(model, comp):
    d = DIMS[model]
    if comp == "mlp_activation":
        return d["I"]
    if comp.startswith("head_"):
        return d["hd"]
    if comp == "attention_weight":
        return d["P"]
    return d["C"]


# --------------------------------------------------------------------------------------------
# case registry
class Gen:
    """Seeded input generator for one case."""

    def __init__(self, model, seed):
        self.g = torch.Generator().manual_seed(seed)
        self.V = DIMS[model]["V"]

    def ints(self, n, lo, hi):
        return torch.randint(lo, hi, (n,), generator=self.g).tolist()

    def ids(self, B, T, lengths=None, side="right"):
        ids = torch.randint(1, self.V, (B, T), generator=self.g, dtype=torch.int64)
        if lengths is None:
            return {"input_ids": ids}
        mask = torch.zeros((B, T), dtype=torch.int64)
        for b, n in enumerate(lengths):
            if side == "right":
                mask[b, :n] = 1
            else:
                mask[b, T - n:] = 1
        ids = torch.where(mask.bool(), ids, torch.zeros_like(ids))
        return {"input_ids": ids, "attention_mask": mask}

    def pick(self, n, k):
        """k distinct values from range(n), in random order."""
        return torch.randperm(n, generator=self.g)[:k].tolist()

    def rows(self, B, U, n, shared=False, allowed=None):
        """B rows of U distinct ints from range(n) (or from allowed[b]); rows differ if not shared."""
        for _ in range(100):
            if allowed is not None:
                rows = [[allowed[b][i] for i in self.pick(len(allowed[b]), U)] for b in range(B)]
            else:
                rows = [self.pick(n, U) for _ in range(B)]
            if shared:
                rows = [list(rows[0]) for _ in range(B)]
                return rows
            if B == 1 or any(r != rows[0] for r in rows):
                return rows
        raise AssertionError("could not draw differing rows")

    def vec(self, D):
        """float32 vector with short exact decimal values (multiples of 1/256)."""
        return (torch.randn(D, generator=self.g) * 256).round() / 256


CASES = []


def case(name, model, tags=()):
    def deco(fn):
        CASES.append(dict(name=name, model=model, fn=fn, tags=list(tags)))
        return fn
    return deco


def R(layer, comp, unit="pos", n=1, t="Vanilla", part=None, gk=None, lk=None, const=None, cb=None):
    return dict(layer=layer, component=comp, unit=unit, max_number_of_units=n,
                type="Lambda" if cb is not None else t, subspace_partition=part, group_key=gk,
                intervention_link_key=lk, const=const, callback=cb)


def SB(src, base):
    """canonical parallel locations for a list of interventions"""
    return {"sources->base": (src, base)}


# --------------------------------------------------------------------------------------------
# the cases
def pos_locs(g, B, U, Ts, Tb, shared=False):
    return g.rows(B, U, Ts, shared), g.rows(B, U, Tb, shared)


# A. every (B,T,.) component with pos units, Vanilla, both models
def _coverage_bt():
    for mi, model in enumerate(["small", "inner_erf"]):
        for ci, comp in enumerate(BT_COMPONENTS):
            k = mi * 11 + ci

            def fn(g, comp=comp, model=model, k=k):
                L = DIMS[model]["L"]
                B = 1 + k % 3
                U = 1 + (k // 3) % 3
                Tb = 5 + k % 4
                Ts = Tb + (k % 3) - 1        # shorter / same / longer source
                shared = (k % 4 == 3)
                layer = k % L
                base, src = g.ids(B, Tb), g.ids(B, Ts)
                s, b = pos_locs(g, B, U, Ts, Tb, shared)
                return dict(reps=[R(layer, comp, n=U)], base=base, sources=[src], ul=SB([s], [b]),
                            oo=(k % 5 == 0),
                            desc=f"Vanilla pos on {comp} L{layer}, B={B}, U={U}, base T={Tb}, "
                                 f"source T={Ts}, " + ("one example" if B == 1 else ("shared" if shared else "per-example") + " locations"))
            case(f"vanilla_pos_{comp}_{model}", model, ["coverage"])(fn)


_coverage_bt()


def _coverage_heads():
    for mi, model in enumerate(["small", "inner_erf"]):
        def fn(g, model=model, mi=mi):
            d = DIMS[model]
            B, T = 2, 6 + mi
            base, src = g.ids(B, T), g.ids(B, T)   # heads x all positions: same T
            s, b = g.rows(B, 1 + mi, d["H"]), g.rows(B, 1 + mi, d["H"])
            return dict(reps=[R(d["L"] - 1, "attention_weight", n=1 + mi)], base=base, sources=[src],
                        ul=SB([s], [b]),
                        desc="Vanilla on attention_weight with unit pos: the pos index selects HEADS "
                             "(whole Tq x Tk map copied from the source), spec §3.2")
        case(f"vanilla_attention_weight_heads_{model}", model, ["coverage"])(fn)

        for ci, comp in enumerate(HEAD_COMPONENTS):
            k = mi * 4 + ci

            def fn_h(g, comp=comp, model=model, k=k):
                d = DIMS[model]
                B, T = 1 + (k + 1) % 3, 5 + k % 3
                U = 1 + k % 2
                base, src = g.ids(B, T), g.ids(B, T)
                s, b = g.rows(B, U, d["H"]), g.rows(B, U, d["H"])
                layer = (k + 1) % d["L"]
                return dict(reps=[R(layer, comp, unit="h", n=U)], base=base, sources=[src],
                            ul=SB([s], [b]), oo=(k == 2),
                            desc=f"Vanilla unit h on {comp} L{layer}: head(s) {U} per example, all "
                                 f"positions (source T == base T)")
            case(f"vanilla_h_{comp}_{model}", model, ["coverage"])(fn_h)

            def fn_hp(g, comp=comp, model=model, k=k):
                d = DIMS[model]
                B = 1 + k % 3
                Tb, Ts = 6, 5 + k % 3
                Uh, Up = 1 + (k + 1) % 2, 1 + k % 3
                base, src = g.ids(B, Tb), g.ids(B, Ts)
                hs, hb = g.rows(B, Uh, d["H"]), g.rows(B, Uh, d["H"])
                ps, pb = g.rows(B, Up, Ts), g.rows(B, Up, Tb)
                layer = k % d["L"]
                return dict(reps=[R(layer, comp, unit="h.pos", n=Uh)], base=base, sources=[src],
                            ul=SB([[hs, ps]], [[hb, pb]]),
                            desc=f"Vanilla unit h.pos on {comp} L{layer}: {Uh} head(s) x {Up} "
                                 f"position(s) cross product, source T={Ts}, base T={Tb}")
            case(f"vanilla_hpos_{comp}_{model}", model, ["coverage"])(fn_hp)


_coverage_heads()


# B. intervention types
@case("addition_block_output_u2", "small")
def _(g):
    base, src = g.ids(2, 6), g.ids(2, 7)
    s, b = pos_locs(g, 2, 2, 7, 6)
    return dict(reps=[R(1, "block_output", n=2, t="Addition")], base=base, sources=[src],
                ul=SB([s], [b]), oo=True, desc="Addition on block_output, U=2 per-example locations")


@case("addition_mlp_activation_b3", "inner_erf")
def _(g):
    base, src = g.ids(3, 5), g.ids(3, 4)
    s, b = pos_locs(g, 3, 1, 4, 5)
    return dict(reps=[R(2, "mlp_activation", t="Addition")], base=base, sources=[src],
                ul=SB([s], [b]), desc="Addition on mlp_activation (n_inner=72), B=3, shorter source")


@case("addition_h_head_query_output", "small")
def _(g):
    base, src = g.ids(2, 5), g.ids(2, 5)
    return dict(reps=[R(0, "head_query_output", unit="h", t="Addition")], base=base, sources=[src],
                ul=SB([g.rows(2, 1, 4)], [g.rows(2, 1, 4)]),
                desc="Addition with unit h on head_query_output (all positions of one head)")


@case("subtraction_attention_output", "small")
def _(g):
    base, src = g.ids(2, 7), g.ids(2, 5)
    s, b = pos_locs(g, 2, 3, 5, 7)
    return dict(reps=[R(0, "attention_output", n=3, t="Subtraction")], base=base, sources=[src],
                ul=SB([s], [b]), desc="Subtraction on attention_output, U=3")


@case("subtraction_hpos_head_value_output", "inner_erf")
def _(g):
    base, src = g.ids(2, 6), g.ids(2, 6)
    return dict(reps=[R(1, "head_value_output", unit="h.pos", n=2, t="Subtraction")], base=base,
                sources=[src], ul=SB([[g.rows(2, 2, 6), g.rows(2, 2, 6)]],
                                     [[g.rows(2, 2, 6), g.rows(2, 2, 6)]]),
                desc="Subtraction with unit h.pos on head_value_output (2 heads x 2 positions)")


@case("zero_attention_weight_heads", "small")
def _(g):
    base = g.ids(2, 6)
    return dict(reps=[R(1, "attention_weight", t="Zero")], base=base, sources=None,
                ul=SB(None, [g.rows(2, 1, 4)]), oo=True,
                desc="Zero on attention_weight, pos = head index: zeroes a whole head's probabilities")


@case("zero_mlp_output_u2", "inner_erf")
def _(g):
    base = g.ids(3, 6)
    return dict(reps=[R(2, "mlp_output", n=2, t="Zero")], base=base, sources=None,
                ul=SB(None, [g.rows(3, 2, 6)]), desc="Zero on mlp_output, U=2, B=3, sources=None")


@case("zero_hpos_head_key_output", "small")
def _(g):
    base = g.ids(1, 7)
    return dict(reps=[R(0, "head_key_output", unit="h.pos", n=2, t="Zero")], base=base, sources=None,
                ul=SB(None, [[g.rows(1, 2, 4), g.rows(1, 3, 7)]]),
                desc="Zero with unit h.pos on head_key_output (2 heads x 3 positions), sources=None")


@case("zero_shorthand_base_int", "small", ["shorthand"])
def _(g):
    base = g.ids(2, 6)
    return dict(reps=[R(1, "block_output", t="Zero")], base=base, sources=None, ul={"base": 3},
                form="dict",
                desc="Zero on block_output with the {'base': 3} shorthand (= (None, [[[3]]*B]*n))")


@case("collect_block_output_u2", "small")
def _(g):
    base = g.ids(2, 6)
    return dict(reps=[R(1, "block_output", n=2, t="Collect")], base=base, sources=None,
                ul=SB(None, [g.rows(2, 2, 6)]), oo=True,
                desc="Collect on block_output, U=2 = max_number_of_units; logits unchanged")


@case("collect_mlp_activation_u3_max4", "inner_erf")
def _(g):
    base = g.ids(3, 7)
    return dict(reps=[R(1, "mlp_activation", n=4, t="Collect")], base=base, sources=None,
                ul=SB(None, [g.rows(3, 3, 7)]),
                desc="Collect on mlp_activation, U=3 < max_number_of_units=4 (key nunit_4)")


@case("collect_hpos_head_attention_value_output", "small")
def _(g):
    base = g.ids(2, 6)
    return dict(reps=[R(0, "head_attention_value_output", unit="h.pos", n=2, t="Collect")],
                base=base, sources=None, ul=SB(None, [[g.rows(2, 2, 4), g.rows(2, 3, 6)]]),
                desc="Collect with unit h.pos (2 heads x 3 positions, max units 2): collected is "
                     "(B, Uh, Up, hd)")


@case("collect_subspaces_u1", "small", ["subspaces"])
def _(g):
    base = g.ids(2, 5)
    dims = [3, 0, 17, 40, 41]
    return dict(reps=[R(0, "block_input", t="Collect")], base=base, sources=None,
                ul=SB(None, [g.rows(2, 1, 5)]), subspaces=[[dims, dims]],
                desc="Collect on block_input with raw-dim subspaces (identical rows), U=1: "
                     "collected is (B,1,|S|) in the listed dim order")


@case("collect_two_keys_order", "inner_erf")
def _(g):
    base = g.ids(2, 6)
    return dict(reps=[R(2, "block_output", t="Collect"), R(0, "attention_input", n=2, t="Collect")],
                base=base, sources=None, ul=SB(None, [g.rows(2, 1, 6), g.rows(2, 2, 6)]),
                desc="two Collects, layer 2 listed first: collected.0 is the layer-2 one "
                     "(sorted_keys = config order, not model order)")


@case("collect_after_vanilla_none_source", "small", ["none_source"])
def _(g):
    base, src = g.ids(2, 6), g.ids(2, 8)
    s, b = pos_locs(g, 2, 1, 8, 6)
    return dict(reps=[R(0, "block_output", t="Vanilla"), R(1, "block_input", n=2, t="Collect")],
                base=base, sources=[src, None],
                ul=SB([s, None], [b, g.rows(2, 2, 6)]), oo=True,
                desc="Vanilla at L0 block_output (source 0) + Collect at L1 block_input (source None):"
                     " the collected activations include the upstream patch")


for _i, (_comp, _model, _layer) in enumerate([("block_output", "small", 0),
                                              ("mlp_output", "inner_erf", 1),
                                              ("attention_output", "small", 1),
                                              ("mlp_input", "inner_erf", 2)]):
    def _skip(g, comp=_comp, model=_model, layer=_layer, i=_i):
        B, T = 1 + i % 3, 6
        base = g.ids(B, T)
        locs = g.rows(B, 1 + i % 2, T)
        extra = {"block_output": "the block becomes the identity at those positions",
                 "mlp_output": "the MLP output is replaced by the MLP INPUT ln_2(x), not zero",
                 "attention_output": "a no-op (resid_dropout input == output in eval)",
                 "mlp_input": "pre-hook component, so identical to Vanilla from the base; source "
                              "locations are base locations + 2 (mod T)"}[comp]
        src_locs = locs
        if comp == "mlp_input":
            # same locations would be a no-op on a pre-hook component: read other positions
            src_locs = [[(p + 2) % T for p in row] for row in locs]
        return dict(reps=[R(layer, comp, n=len(locs[0]), t="Skip")], base=base, sources=[base],
                    ul=SB([src_locs], [locs]), oo=(i == 2),
                    desc=f"Skip on {comp} with sources=[base]: {extra}")
    case(f"skip_{_comp}_{_model}", _model)(_skip)


@case("noise_block_input_u4", "small")
def _(g):
    base = g.ids(2, 7)
    return dict(reps=[R(0, "block_input", t="Noise")], base=base, sources=None,
                ul=SB(None, [g.rows(2, 4, 7)]),
                desc="Noise on block_input, U=4 per-example: x += RandomState(1).randn(1,4,64)[u] * "
                     "0.13462981581687927 computed in f64 then rounded to f32")


@case("noise_mlp_output_u4", "inner_erf")
def _(g):
    base = g.ids(3, 6)
    return dict(reps=[R(2, "mlp_output", t="Noise")], base=base, sources=None,
                ul=SB(None, [g.rows(3, 4, 6, shared=True)]), oo=True,
                desc="Noise on mlp_output (D=48), U=4 shared explicit locations, B=3")


@case("const_vanilla_block_output", "small", ["const_source"])
def _(g):
    base = g.ids(2, 6)
    return dict(reps=[R(1, "block_output", n=2, t="Vanilla", const=g.vec(64))], base=base,
                sources=None, ul=SB(None, [g.rows(2, 2, 6)]), form="dict",
                desc="Vanilla with a constant float32 source_representation (D=64), U=2")


@case("const_addition_mlp_output_base_int", "inner_erf", ["const_source", "shorthand"])
def _(g):
    base = g.ids(3, 5)
    return dict(reps=[R(0, "mlp_output", t="Addition", const=g.vec(48))], base=base, sources=None,
                ul={"base": 2}, form="dict",
                desc="Addition of a constant float32 vector on mlp_output with the {'base': 2} "
                     "shorthand")


@case("const_subtraction_attention_value_output", "small", ["const_source"])
def _(g):
    base = g.ids(1, 8)
    return dict(reps=[R(0, "attention_value_output", n=3, t="Subtraction", const=g.vec(64))],
                base=base, sources=None, ul=SB(None, [g.rows(1, 3, 8)]), form="dict",
                desc="Subtraction of a constant float32 vector on attention_value_output, U=3")


@case("const_addition_hpos_head_value_output", "inner_erf", ["const_source"])
def _(g):
    base = g.ids(2, 6)
    return dict(reps=[R(2, "head_value_output", unit="h.pos", n=2, t="Addition", const=g.vec(8))],
                base=base, sources=None, ul=SB(None, [[g.rows(2, 2, 6), g.rows(2, 2, 6)]]),
                form="dict", oo=True,
                desc="Addition of a constant float32 vector of size hd=8 with unit h.pos")


@case("lambda_half_base_plus_source", "small", ["lambda"])
def _(g):
    base, src = g.ids(2, 6), g.ids(2, 5)
    s, b = pos_locs(g, 2, 2, 5, 6)
    return dict(reps=[R(1, "block_output", n=2, cb="half_base_plus_source")], base=base,
                sources=[src], ul=SB([s], [b]), form="dict",
                desc="Lambda half_base_plus_source (b*0.5 + s) on block_output, U=2")


@case("lambda_half_base_no_source", "inner_erf", ["lambda", "none_source"])
def _(g):
    base = g.ids(2, 6)
    return dict(reps=[R(1, "mlp_output", cb="half_base_plus_source")], base=base, sources=None,
                ul=SB(None, [g.rows(2, 1, 6)]), form="dict",
                desc="Lambda half_base_plus_source with sources=None: the callback gets s=None and "
                     "returns b*0.5")


@case("lambda_negate_base_hpos", "small", ["lambda"])
def _(g):
    base, src = g.ids(1, 6), g.ids(1, 6)
    return dict(reps=[R(0, "head_attention_value_output", unit="h.pos", n=2, cb="negate_base")],
                base=base, sources=[src], ul=SB([[g.rows(1, 2, 4), g.rows(1, 2, 6)]],
                                                [[g.rows(1, 2, 4), g.rows(1, 2, 6)]]),
                form="dict",
                desc="Lambda negate_base (-b) with unit h.pos (the source is gathered but unused)")


@case("lambda_mixed_with_vanilla", "inner_erf", ["lambda"])
def _(g):
    base, s0, s1 = g.ids(2, 6), g.ids(2, 6), g.ids(2, 7)
    a, b = pos_locs(g, 2, 1, 6, 6)
    c, d = pos_locs(g, 2, 1, 7, 6)
    return dict(reps=[R(0, "attention_output", cb="negate_base"), R(1, "block_output", t="Vanilla")],
                base=base, sources=[s0, s1], ul=SB([a, c], [b, d]), form="dict",
                desc="Lambda negate_base at L0 attention_output + Vanilla at L1 block_output, "
                     "one source each")


# C. location forms
@case("shorthand_int", "small", ["shorthand"])
def _(g):
    base, src = g.ids(2, 6), g.ids(2, 7)
    return dict(reps=[R(1, "attention_input", t="Vanilla")], base=base, sources=[src],
                ul={"sources->base": 4},
                desc="shorthand {'sources->base': 4}: source and base location 4 for every example")


@case("shorthand_int_two_interventions", "inner_erf", ["shorthand"])
def _(g):
    base, s0, s1 = g.ids(2, 6), g.ids(2, 6), g.ids(2, 8)
    return dict(reps=[R(0, "block_output", t="Vanilla"), R(2, "mlp_output", t="Addition")],
                base=base, sources=[s0, s1], ul={"sources->base": 1}, form="dict",
                desc="int shorthand with 2 interventions: both use location 1 in source and base")


@case("shorthand_pair", "small", ["shorthand"])
def _(g):
    base, src = g.ids(3, 5), g.ids(3, 7)
    return dict(reps=[R(0, "mlp_output", t="Vanilla")], base=base, sources=[src],
                ul={"sources->base": (6, 2)}, oo=True,
                desc="pair shorthand {'sources->base': (6, 2)} (JSON [6, 2]): source pos 6 -> base "
                     "pos 2 for every example")


@case("shorthand_flat_list3", "inner_erf", ["shorthand"])
def _(g):
    base, src = g.ids(2, 7), g.ids(2, 6)
    return dict(reps=[R(1, "value_output", n=3, t="Vanilla")], base=base, sources=[src],
                ul={"sources->base": [0, 5, 3]},
                desc="flat-list shorthand {'sources->base': [0, 5, 3]} (length 3 = 3 units, same "
                     "positions in source and base, every example)")


@case("shorthand_flat_list3_two_groups", "small", ["shorthand"])
def _(g):
    base, s0, s1 = g.ids(1, 6), g.ids(1, 6), g.ids(1, 6)
    return dict(reps=[R(0, "key_output", n=3, t="Addition"), R(1, "query_output", n=3, t="Subtraction")],
                base=base, sources=[s0, s1], ul={"sources->base": [4, 1, 2]}, form="dict",
                desc="flat-list shorthand [4,1,2] applied to two interventions (Addition key_output "
                     "L0 from source 0, Subtraction query_output L1 from source 1)")


@case("unit_locations_none_addition", "small", ["ul_none"])
def _(g):
    base, src = g.ids(2, 5), g.ids(2, 5)
    return dict(reps=[R(0, "block_output", t="Addition")], base=base, sources=[src], ul=None,
                desc="unit_locations=None: whole tensor (all positions, all dims) added from the "
                     "source (same T)")


@case("unit_locations_none_zero", "inner_erf", ["ul_none"])
def _(g):
    base = g.ids(1, 6)
    return dict(reps=[R(1, "mlp_output", t="Zero")], base=base, sources=None, ul=None,
                desc="unit_locations=None with Zero: the whole mlp_output of layer 1 is zeroed")


# D. source lengths and padding
@case("source_longer_u3", "inner_erf", ["src_len"])
def _(g):
    base, src = g.ids(2, 5), g.ids(2, 11)
    s, b = pos_locs(g, 2, 3, 11, 5)
    return dict(reps=[R(2, "block_input", n=3)], base=base, sources=[src], ul=SB([s], [b]),
                desc="source T=11 > base T=5, U=3")


@case("source_shorter_u2", "small", ["src_len"])
def _(g):
    base, src = g.ids(3, 9), g.ids(3, 3)
    s, b = pos_locs(g, 3, 2, 3, 9)
    return dict(reps=[R(1, "mlp_input", n=2)], base=base, sources=[src], ul=SB([s], [b]),
                desc="source T=3 < base T=9, U=2, B=3")


@case("pad_right_base", "small", ["padding"])
def _(g):
    base = g.ids(2, 8, lengths=[8, 5])
    src = g.ids(2, 6)
    s = g.rows(2, 2, 6)
    b = g.rows(2, 2, 0, allowed=[list(range(8)), list(range(5))])
    return dict(reps=[R(0, "block_output", n=2)], base=base, sources=[src], ul=SB([s], [b]), oo=True,
                desc="right-padded base (lengths 8,5, attention_mask), locations on real tokens")


@case("pad_right_source", "inner_erf", ["padding"])
def _(g):
    base = g.ids(2, 6)
    src = g.ids(2, 7, lengths=[4, 7])
    s = g.rows(2, 1, 0, allowed=[list(range(4)), list(range(7))])
    b = g.rows(2, 1, 6)
    return dict(reps=[R(1, "attention_value_output", t="Addition")], base=base, sources=[src],
                ul=SB([s], [b]), desc="right-padded source (lengths 4,7) with attention_mask")


@case("pad_right_both_b3", "small", ["padding"])
def _(g):
    base = g.ids(3, 7, lengths=[7, 4, 6])
    src = g.ids(3, 6, lengths=[3, 6, 5])
    s = g.rows(3, 2, 0, allowed=[list(range(n)) for n in (3, 6, 5)])
    b = g.rows(3, 2, 0, allowed=[list(range(n)) for n in (7, 4, 6)])
    return dict(reps=[R(1, "block_input", n=2)], base=base, sources=[src], ul=SB([s], [b]),
                desc="right-padded base (7,4,6) and source (3,6,5), B=3, U=2 on real tokens")


@case("pad_left_base", "inner_erf", ["padding"])
def _(g):
    base = g.ids(2, 7, lengths=[7, 4], side="left")
    src = g.ids(2, 5)
    s = g.rows(2, 2, 5)
    b = g.rows(2, 2, 0, allowed=[list(range(7)), list(range(3, 7))])
    return dict(reps=[R(1, "mlp_output", n=2)], base=base, sources=[src], ul=SB([s], [b]), oo=True,
                desc="LEFT-padded base (lengths 7,4; no position_ids so wpe is shifted), locations "
                     "only on real tokens; compare logits at real positions")


# E. subspaces
@case("subspaces_raw_identical_rows", "small", ["subspaces"])
def _(g):
    base, src = g.ids(2, 6), g.ids(2, 6)
    s, b = pos_locs(g, 2, 2, 6, 6)
    S = [1, 7, 2, 33, 63]
    return dict(reps=[R(0, "block_output", n=2)], base=base, sources=[src], ul=SB([s], [b]),
                subspaces=[[S, S]], desc="Vanilla with raw-dim subspaces, identical rows (§4 case 1)")


@case("subspaces_raw_identical_addition_b3", "inner_erf", ["subspaces"])
def _(g):
    base, src = g.ids(3, 5), g.ids(3, 6)
    s, b = pos_locs(g, 3, 1, 6, 5)
    S = list(range(10, 30))
    return dict(reps=[R(1, "mlp_output", t="Addition")], base=base, sources=[src], ul=SB([s], [b]),
                subspaces=[[S, S, S]], desc="Addition restricted to dims 10..29 (identical rows), B=3")


@case("subspaces_ragged_b2", "small", ["subspaces"])
def _(g):
    base, src = g.ids(2, 6), g.ids(2, 7)
    s, b = pos_locs(g, 2, 2, 7, 6)
    return dict(reps=[R(1, "attention_input", n=2)], base=base, sources=[src], ul=SB([s], [b]),
                subspaces=[[[5, 0, 9], [12, 13, 14, 60, 2]]],
                desc="ragged per-example subspaces (lengths 3 and 5): correct per-example dims "
                     "(§4 case 3)")


@case("subspaces_ragged_b3_subtraction", "inner_erf", ["subspaces"])
def _(g):
    base, src = g.ids(3, 6), g.ids(3, 6)
    s, b = pos_locs(g, 3, 1, 6, 6)
    return dict(reps=[R(0, "attention_output", t="Subtraction")], base=base, sources=[src],
                ul=SB([s], [b]), subspaces=[[[4], [1, 2, 47], [30, 20]]], oo=True,
                desc="Subtraction with ragged subspaces of lengths 1,3,2 (all distinct), B=3")


@case("subspaces_zero_identical", "small", ["subspaces"])
def _(g):
    base = g.ids(2, 6)
    S = list(range(0, 64, 3))
    return dict(reps=[R(1, "mlp_output", n=2, t="Zero")], base=base, sources=None,
                ul=SB(None, [g.rows(2, 2, 6)]), subspaces=[[S, S]],
                desc="Zero on every 3rd dim (identical rows), U=2")


@case("subspaces_hpos", "small", ["subspaces"])
def _(g):
    base, src = g.ids(2, 6), g.ids(2, 5)
    S = [0, 3, 15, 8]
    return dict(reps=[R(1, "head_query_output", unit="h.pos", n=2)], base=base, sources=[src],
                ul=SB([[g.rows(2, 2, 4), g.rows(2, 2, 5)]], [[g.rows(2, 2, 4), g.rows(2, 2, 6)]]),
                subspaces=[[S, S]],
                desc="h.pos Vanilla with subspaces over the head dim hd=16 (identical rows)")


@case("partition_ranges", "small", ["subspaces", "partition"])
def _(g):
    base, src = g.ids(2, 6), g.ids(2, 6)
    s, b = pos_locs(g, 2, 1, 6, 6)
    return dict(reps=[R(0, "block_output", part=[[0, 16], [16, 64]])], base=base, sources=[src],
                ul=SB([s], [b]), subspaces=[[[1], [1]]],
                desc="subspace_partition [[0,16],[16,64]] with partition id 1 (dims 16..63), "
                     "identical rows")


@case("partition_ranges_ragged", "inner_erf", ["subspaces", "partition"])
def _(g):
    base, src = g.ids(2, 5), g.ids(2, 6)
    s, b = pos_locs(g, 2, 1, 6, 5)
    return dict(reps=[R(1, "block_output", part=[[0, 8], [8, 20], [20, 48]], t="Addition")],
                base=base, sources=[src], ul=SB([s], [b]), subspaces=[[[2], [0, 1]]], form="dict",
                desc="partition [[0,8],[8,20],[20,48]], ragged partition-id rows [2] / [0,1]")


@case("partition_discrete", "small", ["subspaces", "partition"])
def _(g):
    base, src = g.ids(1, 6), g.ids(1, 7)
    s, b = pos_locs(g, 1, 2, 7, 6)
    return dict(reps=[R(1, "attention_output", n=2, part=[[0, 8], [40, 5, 9], [60, 61, 62, 63]])],
                base=base, sources=[src], ul=SB([s], [b]), subspaces=[[[2, 1]]],
                desc="partition with discrete lists [40,5,9] and [60,61,62,63] (length != 2) and a "
                     "range [0,8]; ids [2,1] -> dims 60,61,62,63,40,5,9")


@case("subspaces_shorthand_flat_list", "small", ["subspaces"])
def _(g):
    base, src = g.ids(2, 6), g.ids(2, 6)
    s, b = pos_locs(g, 2, 1, 6, 6)
    return dict(reps=[R(0, "mlp_input")], base=base, sources=[src], ul=SB([s], [b]),
                subspaces=[2, 9, 11], form="dict",
                desc="subspaces shorthand: flat int list [2,9,11] = [[L]*B]*n")


@case("subspaces_shorthand_int", "inner_erf", ["subspaces"])
def _(g):
    base, src = g.ids(2, 6), g.ids(2, 6)
    s, b = pos_locs(g, 2, 1, 6, 6)
    return dict(reps=[R(0, "block_output", part=[[0, 24], [24, 48]], t="Addition")], base=base,
                sources=[src], ul=SB([s], [b]), subspaces=1,
                desc="subspaces shorthand: int 1 = [[[1]]*B]*n, here a partition id (dims 24..47)")


@case("subspaces_one_none", "small", ["subspaces"])
def _(g):
    base, s0, s1 = g.ids(2, 6), g.ids(2, 6), g.ids(2, 6)
    a, b = pos_locs(g, 2, 1, 6, 6)
    c, d = pos_locs(g, 2, 1, 6, 6)
    return dict(reps=[R(0, "block_output"), R(1, "mlp_output", t="Addition")], base=base,
                sources=[s0, s1], ul=SB([a, c], [b, d]), subspaces=[None, [[0, 1, 2, 3], [0, 1, 2, 3]]],
                desc="subspaces list with None for the first intervention (whole dim) and dims "
                     "0..3 for the second")


# F. parallel groups
@case("parallel_two_sources", "small", ["multi"])
def _(g):
    base, s0, s1 = g.ids(2, 6), g.ids(2, 8), g.ids(2, 4)
    a, b = pos_locs(g, 2, 1, 8, 6)
    c, d = pos_locs(g, 2, 1, 4, 6)
    return dict(reps=[R(0, "block_output"), R(1, "attention_output", t="Addition")], base=base,
                sources=[s0, s1], ul=SB([a, c], [b, d]), oo=True,
                desc="two interventions, no group_key: source i feeds intervention i")


@case("parallel_three_sources_b3", "inner_erf", ["multi"])
def _(g):
    base, s0, s1, s2 = g.ids(3, 6), g.ids(3, 5), g.ids(3, 7), g.ids(3, 6)
    a, b = pos_locs(g, 3, 2, 5, 6)
    c, d = pos_locs(g, 3, 1, 7, 6)
    e, f = pos_locs(g, 3, 1, 6, 6)
    return dict(reps=[R(0, "mlp_activation", n=2), R(1, "query_output", t="Subtraction"),
                      R(2, "attention_input", t="Addition")],
                base=base, sources=[s0, s1, s2], ul=SB([a, c, e], [b, d, f]),
                desc="three interventions / three sources, B=3, different types and layers")


@case("group_key_shared_source", "small", ["multi", "group_key"])
def _(g):
    base, s0, s1 = g.ids(2, 6), g.ids(2, 7), g.ids(2, 5)
    a, b = pos_locs(g, 2, 1, 7, 6)
    c, d = pos_locs(g, 2, 1, 7, 6)
    e, f = pos_locs(g, 2, 1, 5, 6)
    return dict(reps=[R(0, "block_output", gk=0), R(1, "mlp_output", gk=0),
                      R(1, "block_output", gk=1)],
                base=base, sources=[s0, s1], ul=SB([a, c, e], [b, d, f]),
                desc="group_key 0 (two interventions share source 0), group_key 1 <- source 1")


@case("group_key_three_share", "inner_erf", ["multi", "group_key"])
def _(g):
    base, s0 = g.ids(2, 7), g.ids(2, 6)
    locs = [pos_locs(g, 2, 1, 6, 7) for _ in range(3)]
    return dict(reps=[R(0, "attention_output", gk=0, t="Addition"), R(1, "mlp_input", gk=0),
                      R(2, "block_input", gk=0, t="Subtraction")],
                base=base, sources=[s0], ul=SB([l[0] for l in locs], [l[1] for l in locs]),
                form="dict", desc="three interventions in group 0, all reading one source forward")


@case("none_source_zero_group", "small", ["multi", "none_source"])
def _(g):
    base, s0, s2 = g.ids(2, 6), g.ids(2, 6), g.ids(2, 7)
    a, b = pos_locs(g, 2, 1, 6, 6)
    e, f = pos_locs(g, 2, 1, 7, 6)
    return dict(reps=[R(0, "block_output"), R(1, "attention_weight", t="Zero"),
                      R(1, "mlp_output", t="Vanilla")],
                base=base, sources=[s0, None, s2], ul=SB([a, None, e], [b, g.rows(2, 1, 4), f]),
                oo=True, desc="Vanilla <- source 0, Zero(attention_weight head) with source None, "
                              "Vanilla <- source 2")


@case("group_key_none_source_collect", "inner_erf", ["multi", "group_key", "none_source"])
def _(g):
    base, s0 = g.ids(2, 6), g.ids(2, 8)
    a, b = pos_locs(g, 2, 2, 8, 6)
    return dict(reps=[R(0, "block_output", n=2, gk=0), R(2, "block_input", n=2, gk=1, t="Collect"),
                      R(1, "mlp_activation", n=1, gk=1, t="Collect")],
                base=base, sources=[s0, None], ul=SB([a, None, None], [b, g.rows(2, 2, 6), g.rows(2, 1, 6)]),
                desc="group 0 Vanilla <- source 0; group 1 (two Collects) gets source None")


@case("sources_replicated", "small", ["multi"])
def _(g):
    base, s0 = g.ids(2, 6), g.ids(2, 6)
    a, b = pos_locs(g, 2, 1, 6, 6)
    c, d = pos_locs(g, 2, 1, 6, 6)
    return dict(reps=[R(0, "attention_input"), R(1, "value_output", t="Addition")], base=base,
                sources=[s0], ul=SB([a, c], [b, d]),
                desc="2 groups but sources has ONE entry: pyvene replicates it for every group")


@case("stacking_addition_then_vanilla", "small", ["multi", "stacking"])
def _(g):
    base, s0, s1 = g.ids(2, 6), g.ids(2, 6), g.ids(2, 6)
    return dict(reps=[R(1, "block_output", n=2, t="Addition"), R(1, "block_output", n=2)],
                base=base, sources=[s0, s1],
                ul=SB([g.rows(2, 2, 6), g.rows(2, 2, 6)], [[[1, 3], [0, 4]], [[3, 5], [4, 2]]]),
                desc="same module twice: Addition (#0) then Vanilla (#1); keys ...#0/#1, setters "
                     "fire in config order so Vanilla wins where the locations overlap (pos 3 in "
                     "example 0, pos 4 in example 1)")


@case("stacking_vanilla_then_addition", "inner_erf", ["multi", "stacking"])
def _(g):
    base, s0, s1 = g.ids(2, 5), g.ids(2, 6), g.ids(2, 7)
    locs = g.rows(2, 1, 5)
    return dict(reps=[R(1, "mlp_output"), R(1, "mlp_output", t="Addition")], base=base,
                sources=[s0, s1], ul=SB([g.rows(2, 1, 6), g.rows(2, 1, 7)], [locs, locs]), oo=True,
                desc="same module, same locations: Vanilla then Addition -> src0 + src1")


# G. serial
@case("serial_two", "small", ["serial"])
def _(g):
    base, s0, s1 = g.ids(2, 6), g.ids(2, 7), g.ids(2, 5)
    return dict(reps=[R(0, "block_output"), R(1, "block_output")], mode="serial", base=base,
                sources=[s0, s1],
                ul={"source_0->source_1": ([g.rows(2, 1, 7)], [g.rows(2, 1, 5)]),
                    "source_1->base": ([g.rows(2, 1, 5)], [g.rows(2, 1, 6)])},
                desc="serial: source_0 -(L0 block_output)-> source_1 -(L1 block_output)-> base")


@case("serial_three", "inner_erf", ["serial"])
def _(g):
    base, s0, s1, s2 = g.ids(2, 6), g.ids(2, 5), g.ids(2, 8), g.ids(2, 6)
    return dict(reps=[R(0, "mlp_output"), R(1, "attention_output", t="Addition"),
                      R(2, "block_output", n=2)], mode="serial", base=base, sources=[s0, s1, s2],
                ul={"source_0->source_1": ([g.rows(2, 1, 5)], [g.rows(2, 1, 8)]),
                    "source_1->source_2": ([g.rows(2, 1, 8)], [g.rows(2, 1, 6)]),
                    "source_2->base": ([g.rows(2, 2, 6)], [g.rows(2, 2, 6)])}, oo=True,
                desc="serial chain of 3 sources across layers 0,1,2 with Vanilla/Addition/Vanilla")


@case("serial_group_keys_addition", "small", ["serial", "group_key"])
def _(g):
    base, s0, s1 = g.ids(1, 7), g.ids(1, 6), g.ids(1, 7)
    return dict(reps=[R(0, "attention_input", gk=0, t="Addition"), R(1, "mlp_input", gk=1, t="Subtraction")],
                mode="serial", base=base, sources=[s0, s1],
                ul={"source_0->source_1": ([g.rows(1, 1, 6)], [g.rows(1, 1, 7)]),
                    "source_1->base": ([g.rows(1, 1, 7)], [g.rows(1, 1, 7)])}, form="dict",
                desc="serial with explicit group_keys 0,1 (one key each), Addition then Subtraction")


@case("serial_getter_before_setter", "small", ["serial"])
def _(g):
    base, s0, s1 = g.ids(2, 6), g.ids(2, 6), g.ids(2, 6)
    p = g.rows(2, 1, 6)
    return dict(reps=[R(1, "block_output"), R(0, "block_output")], mode="serial", base=base,
                sources=[s0, s1],
                ul={"source_0->source_1": ([g.rows(2, 1, 6)], [p]),
                    "source_1->base": ([p], [g.rows(2, 1, 6)])},
                desc="serial where group 1's getter (L0) runs BEFORE group 0's setter (L1) in the "
                     "source_1 forward: it reads the unpatched value")


@case("serial_shorthand_int", "inner_erf", ["serial", "shorthand"])
def _(g):
    base, s0, s1 = g.ids(2, 6), g.ids(2, 6), g.ids(2, 6)
    return dict(reps=[R(0, "block_output"), R(2, "mlp_input")], mode="serial", base=base,
                sources=[s0, s1], ul={"source_0->source_1": 3, "source_1->base": (2, 4)},
                desc="serial with shorthands per key: int 3, then the pair (2,4)")


# H. intervention_link_key
@case("link_key_addition", "small", ["link_key"])
def _(g):
    base, s0, s1 = g.ids(2, 6), g.ids(2, 7), g.ids(2, 6)
    a, b = pos_locs(g, 2, 1, 7, 6)
    c, d = pos_locs(g, 2, 1, 6, 6)
    return dict(reps=[R(0, "block_output", t="Addition", lk=0), R(1, "block_output", t="Addition", lk=0)],
                base=base, sources=[s0, s1], ul=SB([a, c], [b, d]),
                desc="linked Additions (link key 0): the 2nd one's base is the 1st one's result "
                     "(hot chaining) -> writes (b1+s1)+s2 at its location")


@case("link_key_addition_same_layer", "inner_erf", ["link_key"])
def _(g):
    base, s0, s1 = g.ids(2, 7), g.ids(2, 6), g.ids(2, 6)
    b = g.rows(2, 4, 7)
    return dict(reps=[R(1, "mlp_output", n=2, t="Addition", lk=5), R(1, "mlp_output", n=2, t="Addition", lk=5)],
                base=base, sources=[s0, s1],
                ul=SB([g.rows(2, 2, 6), g.rows(2, 2, 6)], [[r[:2] for r in b], [r[2:] for r in b]]),
                form="dict", oo=True,
                desc="linked Additions on the same module, disjoint positions, U=2, link key 5")


@case("link_key_vanilla", "small", ["link_key"])
def _(g):
    base, s0, s1 = g.ids(2, 6), g.ids(2, 6), g.ids(2, 8)
    a, b = pos_locs(g, 2, 1, 6, 6)
    c, d = pos_locs(g, 2, 1, 8, 6)
    return dict(reps=[R(0, "mlp_output", lk=1), R(1, "attention_output", lk=1)], base=base,
                sources=[s0, s1], ul=SB([a, c], [b, d]),
                desc="linked Vanillas without subspaces: hot chaining has no visible effect")


# I. a few more mixed cases for breadth
@case("mixed_types_b1_long", "inner_erf", ["multi"])
def _(g):
    base, s0 = g.ids(1, 12), g.ids(1, 10)
    a, b = pos_locs(g, 1, 3, 10, 12)
    return dict(reps=[R(0, "value_output", n=3, t="Subtraction", gk=0), R(1, "attention_weight", t="Zero", gk=1),
                      R(2, "mlp_activation", n=2, t="Collect", gk=1)],
                base=base, sources=[s0, None], ul=SB([a, None, None], [b, g.rows(1, 1, 6), g.rows(1, 2, 12)]),
                oo=True, desc="B=1 T=12: Subtraction value_output <- source 0; Zero head + Collect in "
                              "group 1 with source None")


@case("vanilla_h_and_pos_same_layer", "small", ["multi"])
def _(g):
    base, s0, s1 = g.ids(3, 6), g.ids(3, 6), g.ids(3, 8)
    a, b = g.rows(3, 1, 4), g.rows(3, 1, 4)
    c, d = pos_locs(g, 3, 2, 8, 6)
    return dict(reps=[R(1, "head_value_output", unit="h"), R(1, "value_output", n=2, t="Addition")],
                base=base, sources=[s0, s1], ul=SB([a, c], [b, d]),
                desc="head_value_output unit h and value_output pos on the same c_attn module")


@case("zero_query_output_shared", "inner_erf")
def _(g):
    base = g.ids(3, 6)
    return dict(reps=[R(1, "query_output", n=2, t="Zero")], base=base, sources=None,
                ul=SB(None, [g.rows(3, 2, 6, shared=True)]),
                desc="Zero on query_output (first third of c_attn), shared explicit locations")


@case("addition_key_output_pos", "small")
def _(g):
    base, src = g.ids(2, 7), g.ids(2, 7)
    s, b = pos_locs(g, 2, 2, 7, 7)
    return dict(reps=[R(1, "key_output", n=2, t="Addition")], base=base, sources=[src],
                ul=SB([s], [b]), form="dict",
                desc="Addition on key_output (middle third of c_attn), U=2")


@case("subtraction_mlp_activation_hand_dict", "small")
def _(g):
    base, src = g.ids(1, 5), g.ids(1, 9)
    s, b = pos_locs(g, 1, 1, 9, 5)
    return dict(reps=[R(0, "mlp_activation", t="Subtraction")], base=base, sources=[src],
                ul=SB([s], [b]), form="dict", desc="Subtraction on mlp_activation (4C=256), B=1")


@case("addition_attention_weight_u2_b3", "small")
def _(g):
    base, src = g.ids(3, 5), g.ids(3, 5)
    return dict(reps=[R(0, "attention_weight", n=2, t="Addition")], base=base, sources=[src],
                ul=SB([g.rows(3, 2, 4)], [g.rows(3, 2, 4)]), form="dict",
                desc="Addition on attention_weight, 2 heads per example, B=3 (probabilities no "
                     "longer sum to 1; that is what pyvene does)")


# --------------------------------------------------------------------------------------------
# JSON conversion
def jsonify(x):
    if isinstance(x, (tuple, list)):
        return [jsonify(v) for v in x]
    if isinstance(x, dict):
        return {k: jsonify(v) for k, v in x.items()}
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return x


def inputs_json(d):
    return {k: v.tolist() for k, v in d.items()}


def pv_reps(reps):
    out = []
    for r in reps:
        kw = dict(layer=r["layer"], component=r["component"], unit=r["unit"],
                  max_number_of_units=r["max_number_of_units"], subspace_partition=r["subspace_partition"],
                  group_key=r["group_key"], intervention_link_key=r["intervention_link_key"])
        if r["callback"] is not None:
            kw["intervention"] = CALLBACKS[r["callback"]]
        else:
            kw["intervention_type"] = getattr(pv, r["type"] + "Intervention")
        if r["const"] is not None:
            kw["source_representation"] = r["const"].clone()
        out.append(pv.RepresentationConfig(**kw))
    return out


def dict_config(reps, mode):
    rr = []
    for r in reps:
        d = collections.OrderedDict()
        for k in ("layer", "component", "unit", "max_number_of_units"):
            d[k] = r[k]
        d["intervention_type"] = r["type"] + "Intervention"
        for k in ("subspace_partition", "group_key", "intervention_link_key"):
            d[k] = r[k]
        if r["callback"] is not None:
            d["callback"] = r["callback"]
        if r["const"] is not None:
            assert r["const"].dtype == torch.float32
            d["source_representation"] = [float(v) for v in r["const"].tolist()]
        rr.append(d)
    return {"mode": mode, "representations": rr}


def dump_dict_config(cfg):
    """indent=2 JSON, but with each representation's source_representation on one line"""
    cfg = copy.deepcopy(cfg)
    vecs = []
    for r in cfg["representations"]:
        if "source_representation" in r:
            vecs.append(json.dumps(r["source_representation"], separators=(", ", ": ")))
            r["source_representation"] = f"@@VEC{len(vecs) - 1}@@"
    text = json.dumps(cfg, indent=2)
    for k, v in enumerate(vecs):
        text = text.replace(f'"@@VEC{k}@@"', v)
    assert json.loads(text) == json.loads(json.dumps(dict_config_roundtrip(cfg, vecs)))
    return text


def dict_config_roundtrip(cfg, vecs):
    for r in cfg["representations"]:
        v = r.get("source_representation")
        if isinstance(v, str) and v.startswith("@@VEC"):
            r["source_representation"] = json.loads(vecs[int(v[5:-2])])
    return cfg


# --------------------------------------------------------------------------------------------
# independent reference implementation (reads the JSON the C side reads)
def expand_parallel_ul(ul, n, B):
    if ul is None:
        return [None] * n, [None] * n
    if "sources->base" in ul:
        return expand_loc_value(ul["sources->base"], n, B)
    v = ul["base"]
    if isinstance(v, int) or (isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v)):
        s, b = expand_loc_value(v, n, B)
        return None, b
    if isinstance(v, list) and all(isinstance(x, int) for x in v):
        return None, [[list(v) for _ in range(B)] for _ in range(n)]
    return None, v


def expand_loc_value(v, n, B):
    if isinstance(v, int):
        x = [[[v] for _ in range(B)] for _ in range(n)]
        return x, copy.deepcopy(x)
    assert isinstance(v, list)
    if all(isinstance(x, int) for x in v):
        if len(v) == 2:
            return ([[[v[0]] for _ in range(B)] for _ in range(n)],
                    [[[v[1]] for _ in range(B)] for _ in range(n)])
        x = [[list(v) for _ in range(B)] for _ in range(n)]
        return x, copy.deepcopy(x)
    assert len(v) == 2
    return v[0], v[1]


def expand_subspaces(sub, n, B):
    if sub is None:
        return None
    if isinstance(sub, int):
        return [[[sub] for _ in range(B)] for _ in range(n)]
    if all(isinstance(x, int) for x in sub):
        return [[list(sub) for _ in range(B)] for _ in range(n)]
    return sub


def partition_dims(part, ids):
    dims = []
    for i in ids:
        p = part[i]
        if len(p) == 2 and isinstance(p[0], int):
            dims += list(range(p[0], p[1]))
        else:
            dims += list(p)
    return dims


class Reference:
    def __init__(self, model_name, cfg_json, inp):
        self.m = MODELS[model_name]
        self.d = DIMS[model_name]
        self.mode = cfg_json["mode"]
        self.reps = cfg_json["representations"]
        self.inp = inp
        self.n = len(self.reps)

    def site(self, r):
        blk = self.m.transformer.h[r["layer"]]
        c = r["component"]
        return {
            "block_input": (blk, "pre"), "block_output": (blk, "post"),
            "attention_input": (blk.attn, "pre"), "attention_output": (blk.attn.resid_dropout, "post"),
            "query_output": (blk.attn.c_attn, "post"), "key_output": (blk.attn.c_attn, "post"),
            "value_output": (blk.attn.c_attn, "post"), "head_query_output": (blk.attn.c_attn, "post"),
            "head_key_output": (blk.attn.c_attn, "post"), "head_value_output": (blk.attn.c_attn, "post"),
            "attention_weight": (blk.attn.attn_dropout, "pre"),
            "attention_value_output": (blk.attn.c_proj, "pre"),
            "head_attention_value_output": (blk.attn.c_proj, "pre"),
            "mlp_input": (blk.mlp, "pre"), "mlp_output": (blk.mlp, "post"),
            "mlp_activation": (blk.mlp.act, "post"),
        }[c]

    def view(self, raw, comp):
        C, H, hd = self.d["C"], self.d["H"], self.d["hd"]
        k = {"query": 0, "key": 1, "value": 2}
        for name, i in k.items():
            if comp == f"{name}_output":
                return raw[..., i * C:(i + 1) * C]
            if comp == f"head_{name}_output":
                return raw[..., i * C:(i + 1) * C].unflatten(-1, (H, hd)).permute(0, 2, 1, 3)
        if comp == "head_attention_value_output":
            return raw.unflatten(-1, (H, hd)).permute(0, 2, 1, 3)
        return raw

    @staticmethod
    def index(unit, loc, b):
        if unit == "h.pos":
            heads, pos = torch.tensor(loc[0][b]), torch.tensor(loc[1][b])
            return (b, heads[:, None], pos[None, :])
        return (b, torch.tensor(loc[b]))

    def gather(self, raw, r, loc, B):
        if loc is None:
            return raw.clone()
        X = self.view(raw, r["component"])
        return torch.stack([X[self.index(r["unit"], loc, b)] for b in range(B)]).clone()

    def scatter(self, raw, r, loc, res, B):
        if loc is None:
            raw[:] = res
            return
        X = self.view(raw, r["component"])
        for b in range(B):
            X[self.index(r["unit"], loc, b)] = res[b]

    def compute(self, i, base, src, sub):
        r = self.reps[i]
        t = r["intervention_type"].replace("Intervention", "")
        B = base.shape[0]
        if t == "Lambda":
            return CALLBACKS[r["callback"]](base, src)
        dims = None
        if sub is not None:
            dims = [partition_dims(r["subspace_partition"], s) if r["subspace_partition"] else list(s)
                    for s in sub]
        if t == "Collect":
            assert base.shape[1] <= r["max_number_of_units"]
            if dims is None:
                return base.clone()
            assert base.dim() == 3 and base.shape[1] == 1
            return torch.stack([base[b].flatten()[dims[b]] for b in range(B)])[:, None, :]
        if t == "Noise":
            D = base.shape[-1]
            noise = torch.from_numpy(np.random.RandomState(1).randn(1, 4, D))
            lvl = torch.tensor(NOISE_LEVEL, dtype=torch.float32).double()
            return (base.double() + noise * lvl).float()
        if r.get("source_representation") is not None:
            src = torch.tensor(r["source_representation"], dtype=torch.float32)
        out = base.clone()
        for b in range(B):
            d = slice(None) if dims is None else dims[b]
            sb = None if t == "Zero" else (src[b] if src.dim() == base.dim() else src)
            if t in ("Vanilla", "Skip"):
                out[b][..., d] = sb[..., d]
            elif t == "Addition":
                out[b][..., d] = base[b][..., d] + sb[..., d]
            elif t == "Subtraction":
                out[b][..., d] = base[b][..., d] - sb[..., d]
            elif t == "Zero":
                out[b][..., d] = 0
            else:
                raise AssertionError(t)
        return out

    def needs_setter(self, i, have_src):
        r = self.reps[i]
        t = r["intervention_type"].replace("Intervention", "")
        return have_src or t in ("Lambda", "Zero", "Collect", "Noise") or r.get("source_representation") is not None

    def hook(self, r, fn, is_getter=False):
        mod, kind = self.site(r)
        skip = r["intervention_type"] == "SkipIntervention"
        if kind == "pre":
            def h(m, args):
                fn(args[0])
            return mod.register_forward_pre_hook(h)

        def h(m, args, out):
            if is_getter and skip:
                fn(args[0])
            else:
                fn(out[0] if isinstance(out, tuple) else out)
        return mod.register_forward_hook(h)

    def run(self):
        base = {k: torch.tensor(v) for k, v in self.inp["base"].items()}
        B = base["input_ids"].shape[0]
        srcs = [None if s is None else {k: torch.tensor(v) for k, v in s.items()}
                for s in (self.inp.get("sources") or [])]
        gks = [r["group_key"] for r in self.reps]
        if any(k is not None for k in gks):
            groups = collections.OrderedDict()
            for i, k in enumerate(gks):
                groups.setdefault(k, []).append(i)
            groups = collections.OrderedDict(sorted(groups.items()))
        else:
            groups = collections.OrderedDict((i, [i]) for i in range(self.n))
        G = len(groups)
        if not srcs:
            srcs = [None] * G
        if len(srcs) == 1 and G > 1:
            srcs = srcs * G
        assert len(srcs) == G
        sub = expand_subspaces(self.inp.get("subspaces"), self.n, B)
        link = {i: r["intervention_link_key"] for i, r in enumerate(self.reps)
                if r["intervention_link_key"] is not None}
        hot = {}
        acts = {}
        collected = {}

        def setter(i, bloc):
            r = self.reps[i]

            def fn(raw):
                if i in link and link[i] in hot:
                    sel = hot[link[i]]
                else:
                    sel = self.gather(raw, r, bloc, B)
                res = self.compute(i, sel, acts.get(i), sub[i] if sub is not None else None)
                if r["intervention_type"] == "CollectIntervention":
                    collected[i] = res
                    return
                if i in link:
                    hot[link[i]] = res.clone()
                self.scatter(raw, r, bloc, res, B)
            return self.hook(r, fn)

        def getter(i, sloc):
            def fn(raw):
                acts[i] = self.gather(raw, self.reps[i], sloc, B)
            return self.hook(self.reps[i], fn, is_getter=True)

        ul = self.inp["unit_locations"]
        with torch.no_grad():
            orig = self.m(**base).logits if self.inp["output_original_output"] else None
            if self.mode == "parallel":
                S, Bl = expand_parallel_ul(ul, self.n, B)
                for g, keys in groups.items():
                    if srcs[g] is None:
                        continue
                    hs = [getter(i, S[i] if S is not None else None) for i in keys]
                    self.m(**srcs[g])
                    for h in hs:
                        h.remove()
                handles = [setter(i, Bl[i]) for keys in groups.values() for i in keys
                           if self.needs_setter(i, i in acts)]
            else:
                handles = []
                for g, keys in groups.items():
                    assert len(keys) == 1 and srcs[g] is not None
                    i = keys[0]
                    name = f"source_{g}->source_{g + 1}" if g < G - 1 else f"source_{g}->base"
                    s, bl = expand_loc_value(ul[name], 1, B)
                    gh = getter(i, s[0])
                    self.m(**srcs[g])
                    gh.remove()
                    for h in handles:
                        h.remove()
                    handles = [setter(i, bl[0])]
            out = self.m(**base).logits
            for h in handles:
                h.remove()
        coll = [collected[i] for i in range(self.n) if i in collected]
        return out, orig, coll


# --------------------------------------------------------------------------------------------
# sanity guards against the pyvene behaviours we avoid (spec §7)
def check_case(c, B):
    reps, ul, sub = c["reps"], c["ul"], c.get("subspaces")
    n = len(reps)
    for r in reps:
        assert r["component"] in BT_COMPONENTS + HEAD_COMPONENTS + ["attention_weight"]
        if r["component"].startswith("head_"):
            assert r["unit"] in ("h", "h.pos")
        else:
            assert r["unit"] == "pos"
    if c["mode"] == "serial":
        gks = groups_of(reps)
        assert len(set(gks)) == len(gks), "serial groups must have one key each"
        assert sub is None
        for name, v in ul.items():
            s, b = expand_loc_value(jsonify(v), 1, B)
            for rows in (s[0], b[0]):
                assert all(len(set(r)) == len(r) for r in rows)
        return
    if ul is None:
        for r in reps:
            assert r["component"] not in ("key_output", "value_output")
        return
    shorthand = not ("sources->base" in ul and isinstance(ul["sources->base"], tuple)
                     and not all(isinstance(x, int) for x in ul["sources->base"])) and \
        not ("base" in ul and isinstance(ul["base"], list) and isinstance(ul["base"][0], list))
    S, Bl = expand_parallel_ul(jsonify(ul), n, B)
    for i, r in enumerate(reps):
        for side in (S, Bl):
            if side is None or side[i] is None:
                continue
            loc = side[i]
            tables = loc if r["unit"] == "h.pos" else [loc]
            for t in tables:
                assert len(t) == B, (c["name"], "rows != B")
                assert all(len(set(row)) == len(row) for row in t), (c["name"], "duplicate units")
                if shorthand:
                    assert all(row == t[0] for row in t), "shorthand with per-example locations"
            if r["unit"] == "h.pos":
                # pyvene's "pos" use_fast fix-up isn't used for h.pos, but keep it simple
                assert not shorthand
        if r["type"] == "Collect":
            U = len(Bl[i][0]) if r["unit"] != "h.pos" else len(Bl[i][0][0])
            assert U <= r["max_number_of_units"]
        if r["type"] == "Noise":
            assert len(Bl[i][0]) == 4 and r["max_number_of_units"] == 1
        if r["type"] == "Collect":
            assert c["sources"] is None or c["sources"][groups_of(reps)[i]] is None
        if r["type"] in ("Zero", "Noise") or r["const"] is not None:
            assert c["sources"] is None or len(c["sources"]) == 1 or c["sources"][groups_of(reps)[i]] is None
    if sub is not None:
        subx = expand_subspaces(sub, n, B)
        for i, rows in enumerate(subx):
            if rows is None:
                continue
            same = all(row == rows[0] for row in rows)
            lens = [len(row) for row in rows]
            assert same or len(set(lens)) == len(lens), (c["name"], "same-length different rows")
            if not same:
                assert not shorthand
            assert reps[i]["type"] not in ("Noise", "Lambda")


def is_nested(c):
    ul = c["ul"]
    if ul is None:
        return True
    if c["mode"] == "serial":
        return all(isinstance(v, tuple) for v in ul.values())
    v = ul.get("sources->base")
    return isinstance(v, tuple) and not all(isinstance(x, int) for x in v)


def groups_of(reps):
    gks = [r["group_key"] for r in reps]
    if any(k is not None for k in gks):
        return gks
    return list(range(len(reps)))


# --------------------------------------------------------------------------------------------
def run_case(idx, spec, summary):
    name = f"{idx:03d}_{spec['name']}"
    model_name = spec["model"]
    seed = zlib.crc32(spec["name"].encode())
    g = Gen(model_name, seed)
    c = spec["fn"](g)
    c.setdefault("mode", "parallel")
    c.setdefault("oo", False)
    c.setdefault("form", "saved")
    c.setdefault("subspaces", None)
    c["name"] = name
    for r in c["reps"]:
        if r["const"] is not None or r["callback"] is not None:
            assert c["form"] == "dict", name
    base = c["base"]
    B = base["input_ids"].shape[0]
    check_case(c, B)

    model = MODELS[model_name]
    torch.manual_seed(0)
    ivm = pv.IntervenableModel(pv.IntervenableConfig(pv_reps(c["reps"]), mode=c["mode"]), model)
    assert not ivm.use_fast
    case_dir = os.path.join(OUT_ROOT, "cases", name)
    os.makedirs(case_dir)

    # config.json
    if c["form"] == "saved":
        with tempfile.TemporaryDirectory() as td:
            ivm.save(td)
            with open(os.path.join(td, "config.json"), "rb") as f:
                cfg_bytes = f.read()
        cfg_json = json.loads(cfg_bytes)
        # the reference reads the saved form too
        fields = list(pv.RepresentationConfig._fields)
        ref_cfg = {"mode": cfg_json["mode"], "representations": []}
        for arr, ty in zip(cfg_json["representations"], cfg_json["intervention_types"]):
            d = dict(zip(fields, arr))
            d["intervention_type"] = ty.split(".")[-1].rstrip("'>")
            ref_cfg["representations"].append(d)
        assert cfg_json["sorted_keys"] == ivm.sorted_keys
    else:
        cfg_json = dict_config(c["reps"], c["mode"])
        cfg_bytes = (dump_dict_config(cfg_json) + "\n").encode()
        ref_cfg = json.loads(cfg_bytes)
    with open(os.path.join(case_dir, "config.json"), "wb") as f:
        f.write(cfg_bytes)

    # inputs.json
    inp = collections.OrderedDict()
    inp["model"] = model_name
    inp["base"] = inputs_json(base)
    inp["sources"] = None if c["sources"] is None else [None if s is None else inputs_json(s)
                                                        for s in c["sources"]]
    inp["unit_locations"] = jsonify(c["ul"])
    if c["subspaces"] is not None:
        inp["subspaces"] = jsonify(c["subspaces"])
    inp["output_original_output"] = c["oo"]
    inp_text = json.dumps(inp, separators=(", ", ": ")) + "\n"
    with open(os.path.join(case_dir, "inputs.json"), "w") as f:
        f.write(inp_text)

    # run pyvene (pass copies: pyvene mutates some arguments)
    sources = None if c["sources"] is None else [None if s is None else dict(s) for s in c["sources"]]
    with torch.no_grad():
        res = ivm(dict(base), sources, copy.deepcopy(c["ul"]),
                  subspaces=copy.deepcopy(c["subspaces"]),
                  output_original_output=c["oo"], return_dict=True)
    # shorthands set pyvene's sticky use_fast flag; explicit nested locations must not
    # (if they did, per-example "pos" scatters would use example 0's locations, spec §7.1)
    if is_nested(c):
        assert not ivm.use_fast, name
    logits = res.intervened_outputs.logits.detach().float().contiguous()
    tensors = {"logits": logits}
    if c["oo"]:
        tensors["original_logits"] = res.original_outputs.logits.detach().float().contiguous()
    else:
        assert res.original_outputs is None
    coll = res.collected_activations
    n_collect = sum(r["type"] == "Collect" for r in c["reps"])
    if n_collect:
        assert len(coll) == n_collect
        for k, t in enumerate(coll):
            tensors[f"collected.{k}"] = t.detach().float().contiguous()
    else:
        assert coll is None or len(coll) == 0
    for k, r in enumerate(c["reps"]):
        if r["type"] == "Noise":
            key = ivm.sorted_keys[k]
            nz = ivm.interventions[key].noise.detach()
            D = comp_dim(model_name, r["component"])
            assert nz.dtype == torch.float64 and tuple(nz.shape) == (1, 4, D)
            assert torch.equal(nz, torch.from_numpy(np.random.RandomState(1).randn(1, 4, D)))
            tensors["noise"] = nz[0].contiguous()
            assert float(ivm.interventions[key].noise_level) == NOISE_LEVEL

    # independent reference from the JSON files
    ref_inp = json.loads(inp_text)
    out, orig, rcoll = Reference(model_name, ref_cfg, ref_inp).run()
    assert torch.equal(out, logits), (name, (out - logits).abs().max().item())
    if c["oo"]:
        assert torch.equal(orig, tensors["original_logits"]), name
    assert len(rcoll) == n_collect
    for k, t in enumerate(rcoll):
        assert t.shape == tensors[f"collected.{k}"].shape and torch.equal(t, tensors[f"collected.{k}"]), \
            (name, k, tuple(t.shape), tuple(tensors[f"collected.{k}"].shape))
    # did something happen?
    with torch.no_grad():
        clean = model(**base).logits
    changed = not torch.equal(clean, logits)
    only_collect = all(r["type"] == "Collect" for r in c["reps"])
    if only_collect or "skip_attention_output" in name:
        assert not changed, name
    else:
        assert changed, f"{name}: intervention had no effect"
    assert torch.isfinite(logits).all()

    note = c["desc"]
    meta = {"torch": torch.__version__, "transformers": transformers.__version__,
            "pyvene": pv_version(), "numpy": np.__version__, "case": name, "note": note}
    save_safetensors(tensors, os.path.join(case_dir, "expected.safetensors"), meta)

    # tags
    tags = [model_name, c["mode"], "config_" + c["form"], f"B{B}"]
    for r in c["reps"]:
        tags += [r["component"], "unit_" + r["unit"], r["type"]]
        if r["const"] is not None:
            tags.append("const_source")
        if r["callback"]:
            tags.append("callback_" + r["callback"])
        if r["group_key"] is not None:
            tags.append("group_key")
        if r["intervention_link_key"] is not None:
            tags.append("link_key")
        if r["subspace_partition"] is not None:
            tags.append("partition")
    ul = c["ul"]
    if ul is None:
        tags.append("ul_none")
    elif c["mode"] == "parallel":
        if "base" in ul:
            tags.append("shorthand_base_int")
        else:
            v = ul["sources->base"]
            if isinstance(v, int):
                tags.append("shorthand_int")
            elif all(isinstance(x, int) for x in v):
                tags.append("shorthand_pair" if len(v) == 2 else "shorthand_flat_list")
            else:
                tags.append("nested_locations")
    else:
        tags.append("nested_locations" if all(isinstance(v, tuple) for v in ul.values()) else "shorthand_serial")
    if c["subspaces"] is not None:
        tags.append("subspaces")
    if c["oo"]:
        tags.append("original_output")
    if "attention_mask" in base or any(s is not None and "attention_mask" in s for s in (c["sources"] or [])):
        tags.append("padding")
    if len(c["reps"]) > 1:
        tags.append("multi")
    Tb = base["input_ids"].shape[1]
    if any(s is not None and s["input_ids"].shape[1] != Tb for s in (c["sources"] or [])):
        tags.append("src_len_diff")
    if c["mode"] == "parallel" and is_nested(c) and ul is not None:
        S, Bl = expand_parallel_ul(jsonify(ul), len(c["reps"]), B)
        per_ex, us = False, set()
        for i, r in enumerate(c["reps"]):
            for side in (S, Bl):
                if side is None or side[i] is None:
                    continue
                tabs = side[i] if r["unit"] == "h.pos" else [side[i]]
                per_ex |= any(any(row != t[0] for row in t) for t in tabs)
            if Bl[i] is not None:
                us.add(len(Bl[i][0]) if r["unit"] != "h.pos" else len(Bl[i][1][0]))
        if B > 1:
            tags.append("per_example_locations" if per_ex else "shared_locations")
        tags += [f"U{u}" for u in sorted(us)]
    tags += spec["tags"]
    tags = list(dict.fromkeys(tags))
    for t in tags:
        summary[t] += 1
    size = sum(os.path.getsize(os.path.join(case_dir, f)) for f in os.listdir(case_dir))
    print(f"{name:58s} {model_name:9s} {c['mode']:8s} B={B} T={base['input_ids'].shape[1]:2d} "
          f"{c['form']:5s} {size:7d} B")
    return {"name": name, "model": model_name, "description": note, "tags": tags}


def pv_version():
    from importlib.metadata import version
    return version("pyvene")


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    assert pv_version() == "0.1.8", pv_version()
    load_models()
    cases_dir = os.path.join(OUT_ROOT, "cases")
    if os.path.exists(cases_dir):
        shutil.rmtree(cases_dir)
    os.makedirs(cases_dir)
    names = [c["name"] for c in CASES]
    assert len(set(names)) == len(names)
    summary = collections.Counter()
    manifest = [run_case(i, spec, summary) for i, spec in enumerate(CASES)]
    with open(os.path.join(OUT_ROOT, "manifest.json"), "w") as f:
        f.write("[\n" + ",\n".join("  " + json.dumps(m) for m in manifest) + "\n]\n")

    print(f"\n{len(manifest)} cases")
    groups = [("models", ["small", "inner_erf"]), ("modes", ["parallel", "serial"]),
              ("types", TYPES), ("units", ["unit_pos", "unit_h", "unit_h.pos"]),
              ("components", BT_COMPONENTS + ["attention_weight"] + HEAD_COMPONENTS)]
    seen = set()
    for title, keys in groups:
        print(f"-- cases per {title[:-1]}")
        for k in keys:
            print(f"   {k:30s} {summary[k]:4d}")
            seen.add(k)
    print("-- other tags")
    for k in sorted(summary):
        if k not in seen:
            print(f"   {k:30s} {summary[k]:4d}")
    total = 0
    for root, _, files in os.walk(OUT_ROOT):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    print(f"total size of tests/fixtures/pyvene: {total} bytes ({total / 1024 / 1024:.2f} MiB)")
    assert len(manifest) >= 90
    assert total < SIZE_LIMIT, "fixtures exceed the size budget"


if __name__ == "__main__":
    main()
