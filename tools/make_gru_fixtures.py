#!/usr/bin/env python
"""Generate GRU reference fixtures for cvene (pyvene 0.1.8's GRU, pyvene/models/gru/).

Two sets, both written from scratch on every run (deterministic: a re-run yields identical bytes):

1. tests/fixtures/gru/<NAME>/{model/, reference.safetensors}: small random pyvene GRULMHeadModel /
   GRUForClassification models. model/config.json is what GRUConfig.save_pretrained writes
   (model_type "gru", with "architectures" naming the class, as transformers' save_pretrained
   would); model/model.safetensors is exactly the model's state_dict (every tensor, F32).
   reference.safetensors holds, per input case, the model's logits and every GRU stream cvene
   publishes, captured with hooks at exactly the modules pyvene 0.1.8 hooks
   (modelings_intervenable_gru.py), one tensor per timestep, stacked to (B, T, W):
       caseK.<component>.<layer>   (B, T, h)  or (B, T, 3h) for x2h_output / h2h_output
   The {reset,update,new}_{x2h,h2h}_output streams are the thirds of x2h / h2h's output (what
   pyvene's split_three gives on GRUForClassification; see "pyvene quirks" below).
   Logits: LM caseK.logits (B, T, V); classifier caseK.logits (B, T, n_labels) = score applied to
   the top layer's output at every timestep (what cvene's forward writes) and caseK.pooled_logits
   (B, n_labels), the model's own output (the row at sum(attention_mask) - 1).
   Plus "iv.*": case0 run with in-place edits at several (component, layer, timestep) sites inside
   the forward (see iv_edits), to check that writing at cvene's per-timestep sites feeds the
   recurrence as pyvene's in-place hooks do (cell_input of layer l >= 1 is the same tensor as
   layer l-1's hidden state for the next step).

2. tests/fixtures/pyvene_gru/{cases/NNN_name/, manifest.json}: pyvene 0.1.8 intervention cases at
   unit "t" on those models, in the format of tests/fixtures/pyvene (config.json, inputs.json,
   expected.safetensors). inputs.json "model" names a directory under tests/fixtures/gru. For a
   classifier, expected "logits" are pyvene's pooled (B, n_labels).

pyvene quirks at unit "t" (docs/interventions.md, "GRU"), and how the cases stay clear of them:
  - a setter's scatter fails for batch size > 1 (shape mismatch in scatter_neurons), so cases with
    B > 1 run pyvene once per example (a fresh IntervenableModel each, the example's own
    locations) and stack the rows; GRU rows never interact;
  - at a timestep an example does not list, pyvene's setter still runs with an all-zero source
    ("dummy tensor"): harmless for Addition/Subtraction, but Vanilla zeroes the stream there; so
    Vanilla (and Lambda) cases list every base timestep;
  - constant-source interventions (Zero, Collect, a source_representation) ignore the locations
    and act at every timestep: those cases list every base timestep (or pass None);
  - GRULMHeadModel's mapping drops split_three, so there update/new_{x2h,h2h}_output act on the
    reset third; split components other than reset_* run on the classifier;
  - serial mode re-tidies already tidied activations and fails: no serial cases.
Each case is also recomputed by an independent hook-based reference of cvene's documented
semantics (batched, from the JSON files the C side reads), which must agree with pyvene to 1e-6
relative, or the script aborts.

Usage (from the repository root):
    python -m venv v && v/bin/pip install -r tools/requirements.txt
    v/bin/python tools/make_gru_fixtures.py
"""

import collections
import contextlib
import copy
import io
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import warnings
import zlib

import numpy as np
import safetensors
import torch
import transformers
from safetensors.torch import load_file

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
import make_gpt2_fixtures as g2  # noqa: E402  (save_reference, dir_size)
import make_pyvene_fixtures as mpf  # noqa: E402  (JSON helpers; prints "nnsight is not detected")
import pyvene as pv  # noqa: E402
from pyvene.models.gru.modelings_gru import GRUConfig, GRUForClassification, GRULMHeadModel  # noqa: E402

OUT_ROOT = os.path.join(REPO, "tests", "fixtures", "gru")
PV_ROOT = os.path.join(REPO, "tests", "fixtures", "pyvene_gru")
SIZE_LIMIT = 2 * 1024 * 1024  # both directories together

COMPONENTS = ["cell_input", "x2h_output", "reset_x2h_output", "update_x2h_output", "new_x2h_output",
              "h2h_output", "reset_h2h_output", "update_h2h_output", "new_h2h_output",
              "reset_gate_input", "reset_gate_output", "update_gate_input", "update_gate_output",
              "new_gate_input", "new_gate_output", "cell_output"]
THIRD = {"reset": 0, "update": 1, "new": 2}

MODELS = [
    dict(name="lm2", cls=GRULMHeadModel, seed=3001,
         config=dict(n_layer=2, h_dim=16, vocab_size=40, max_position_embeddings=16, include_bias=True),
         note="GRULMHeadModel, 2 layers, h_dim 16, vocab 40, include_bias true."),
    dict(name="lm3_nobias", cls=GRULMHeadModel, seed=3002,
         config=dict(n_layer=3, h_dim=12, vocab_size=32, max_position_embeddings=12, include_bias=False),
         note="GRULMHeadModel, 3 layers, h_dim 12, vocab 32, include_bias false (no x2h/h2h biases)."),
    dict(name="cls2", cls=GRUForClassification, seed=3003,
         config=dict(n_layer=2, h_dim=16, vocab_size=40, max_position_embeddings=16, n_labels=3,
                     include_bias=True),
         note="GRUForClassification, 2 layers, h_dim 16, vocab 40, n_labels 3."),
]

# (B, T, lengths (right padding) or None, position_ids?)
CASES = [
    dict(B=2, T=6, lengths=None, pos=False),
    dict(B=3, T=5, lengths=None, pos=True),
    dict(B=2, T=7, lengths=[7, 4], pos=False),
]


def is_cls(model):
    return isinstance(model, GRUForClassification)


# --------------------------------------------------------------------------------------------
# models
def make_model(spec):
    torch.manual_seed(spec["seed"])
    cfg = GRUConfig(include_emb=True, **spec["config"])
    cfg.architectures = [spec["cls"].__name__]
    model = spec["cls"](cfg).eval()
    # GRUModel's _init_weights draws the embeddings with std initializer_range = 0.02, which
    # leaves the gates near their bias values; use unit-variance embeddings instead
    g = torch.Generator().manual_seed(spec["seed"] + 7)
    with torch.no_grad():
        model.gru.wte.weight.copy_(torch.randn(model.gru.wte.weight.shape, generator=g))
        model.gru.wpe.weight.copy_(torch.randn(model.gru.wpe.weight.shape, generator=g))
    for p in model.parameters():
        p.requires_grad_(False)
    return cfg, model


def save_model(cfg, model, model_dir):
    os.makedirs(model_dir)
    cfg.save_pretrained(model_dir)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    mpf.save_safetensors(sd, os.path.join(model_dir, "model.safetensors"), {"format": "pt"})
    # reload: same config, same tensors, loadable by the class (strict)
    cfg2 = GRUConfig.from_pretrained(model_dir)
    assert cfg2.to_dict() == cfg.to_dict(), "config.json does not round-trip"
    m2 = type(model)(cfg2).eval()
    m2.load_state_dict(load_file(os.path.join(model_dir, "model.safetensors")), strict=True)
    for k, v in m2.state_dict().items():
        assert torch.equal(v, sd[k]), k
    return m2


def make_inputs(case, vocab, P, seed):
    g = torch.Generator().manual_seed(seed)
    B, T = case["B"], case["T"]
    ids = torch.randint(1, vocab, (B, T), generator=g, dtype=torch.int64)
    mask = torch.ones((B, T), dtype=torch.int64)
    if case["lengths"] is not None:
        for b, n in enumerate(case["lengths"]):
            mask[b, n:] = 0
        ids = torch.where(mask.bool(), ids, torch.zeros_like(ids))
    pos = torch.randint(0, P, (B, T), generator=g, dtype=torch.int64) if case["pos"] else None
    return ids, mask, pos


# --------------------------------------------------------------------------------------------
# hooks at pyvene's GRU modules: (module, "pre" | "post", third or None)
def site(model, comp, layer):
    cell = model.gru.cells[layer]
    if comp == "cell_input":
        return cell, "pre", None
    if comp == "cell_output":
        return cell, "post", None
    if comp in ("x2h_output", "h2h_output"):
        return getattr(cell, comp[:3]), "post", None
    if comp.endswith("_x2h_output") or comp.endswith("_h2h_output"):
        gate, mat = comp.split("_")[:2]
        return getattr(cell, mat), "post", THIRD[gate]
    gate, _, io = comp.split("_")
    return getattr(cell, gate + "_act"), "pre" if io == "input" else "post", None


def view(raw, third, h):
    return raw if third is None else raw[:, third * h:(third + 1) * h]


def register(model, comp, layer, fn):
    """fn(step, tensor) at every call of the site; the tensor is the live (B, W) tensor."""
    mod, kind, third = site(model, comp, layer)
    h = model.config.h_dim
    count = [0]

    if kind == "pre":
        def hook(m, args):
            fn(count[0], view(args[0], third, h))
            count[0] += 1
        return mod.register_forward_pre_hook(hook)

    def hook(m, args, out):
        fn(count[0], view(out, third, h))
        count[0] += 1
    return mod.register_forward_hook(hook)


def head_logits(model, hidden):
    return (model.score if is_cls(model) else model.lm_head)(hidden)


def capture(model, ids, mask, pos, edits=None):
    """Forward with every stream recorded; edits: {(comp, layer, step): fn(tensor) in place}.
    Returns (per-step head logits (B, T, n_out), model output logits, {comp.layer: (B, T, W)})."""
    L = model.config.n_layer
    caps = collections.defaultdict(list)
    handles = []
    for comp in COMPONENTS:
        for l in range(L):
            def fn(step, t, comp=comp, l=l):
                if edits and (comp, l, step) in edits:
                    edits[(comp, l, step)](t)
                caps[f"{comp}.{l}"].append(t.detach().clone())
            handles.append(register(model, comp, l, fn))
    try:
        with torch.no_grad():
            kw = dict(input_ids=ids)
            if pos is not None:
                kw["position_ids"] = pos
            if is_cls(model):
                kw["attention_mask"] = mask
            out = model(**kw)[0]
    finally:
        for hd in handles:
            hd.remove()
    T = ids.shape[1]
    streams = {}
    for k, v in caps.items():
        assert len(v) == T, (k, len(v))
        streams[k] = torch.stack(v, dim=1).float().contiguous()
    with torch.no_grad():
        steps = head_logits(model, streams[f"cell_output.{L - 1}"]).float().contiguous()
    return steps, out.float().contiguous(), streams


def check_capture(model, ids, mask, pos, steps, out, s):
    """Consistency checks, so that a hook on the wrong module is caught."""
    cfg = model.config
    B, T = ids.shape
    h, L = cfg.h_dim, cfg.n_layer
    assert len(s) == len(COMPONENTS) * L
    for k, v in s.items():
        W = 3 * h if k.split(".")[0] in ("x2h_output", "h2h_output") else h
        assert tuple(v.shape) == (B, T, W), (k, tuple(v.shape))
        assert torch.isfinite(v).all(), k

    def close(a, b, what, tol=1e-6):
        err = (a.double() - b.double()).abs().max().item()
        assert err <= tol * max(1.0, b.abs().max().item()), (what, err)

    with torch.no_grad():
        emb = model.gru.wte(ids) + (model.gru.wpe(pos) if pos is not None else 0)
        assert torch.equal(s["cell_input.0"], emb)
        for l in range(L):
            g = lambda c: s[f"{c}.{l}"]
            cell = model.gru.cells[l]
            if l + 1 < L:
                assert torch.equal(g("cell_output"), s[f"cell_input.{l + 1}"])
            close(g("x2h_output"), cell.x2h(g("cell_input")), "x2h")
            for mat in ("x2h", "h2h"):
                for gate, k in THIRD.items():
                    assert torch.equal(g(f"{gate}_{mat}_output"), g(f"{mat}_output")[..., k * h:(k + 1) * h])
            prev = torch.cat([torch.zeros(B, 1, h), g("cell_output")[:, :-1]], dim=1)
            close(g("h2h_output"), cell.h2h(prev), "h2h")
            close(g("reset_gate_input"), g("reset_x2h_output") + g("reset_h2h_output"), "r in")
            close(g("update_gate_input"), g("update_x2h_output") + g("update_h2h_output"), "z in")
            # element-wise ops on (B, T, h) at once vs per step: equal up to vectorisation ulps
            close(g("reset_gate_output"), torch.sigmoid(g("reset_gate_input")), "sigmoid r")
            close(g("update_gate_output"), torch.sigmoid(g("update_gate_input")), "sigmoid z")
            close(g("new_gate_input"), g("new_x2h_output") + g("reset_gate_output") * g("new_h2h_output"), "n in")
            close(g("new_gate_output"), torch.tanh(g("new_gate_input")), "tanh n")
            z = g("update_gate_output")
            close(g("cell_output"), z * prev + (1 - z) * g("new_gate_output"), "h")
        if is_cls(model):
            last = mask.sum(-1) - 1
            close(out, steps[torch.arange(B), last], "pooled logits")
        else:
            assert torch.equal(out, steps), "lm logits"


def iv_edits(h):
    """In-place edits at (component, layer, timestep), applied inside the forward."""
    def zero(t):
        t.zero_()

    def double(t):
        t.mul_(2.0)

    def add_half(t):
        t.add_(0.5)

    def negate(t):
        t.neg_()

    def halve(t):
        t.mul_(0.5)

    def bump_row0(t):
        t[0].add_(1.0)

    return {
        ("cell_output", 0, 1): zero,           # h^0_1 = 0: layer 1 at t=1 and layer 0 at t=2 see it
        ("cell_input", 1, 0): double,          # the same tensor as h^0_0: layer 0 at t=1 sees it too
        ("reset_gate_output", 1, 2): add_half,
        ("new_h2h_output", 0, 3): negate,      # a third of h2h's output
        ("update_x2h_output", 1, 4): halve,
        ("new_gate_input", 0, 2): bump_row0,   # example 0 only
    }


IV_DOC = ("iv.*: case0 with in-place edits inside the forward: cell_output L0 t=1 zeroed; cell_input L1 t=0 "
          "doubled (the same tensor as layer 0's hidden state at t=0, so layer 0 at t=1 reads it too); "
          "reset_gate_output L1 t=2 += 0.5; new_h2h_output (third 2 of h2h) L0 t=3 negated; "
          "update_x2h_output (third 1 of x2h) L1 t=4 halved; new_gate_input L0 t=2 of example 0 += 1. "
          "iv.logits: per-step head logits (B, T, n_out).")


def build(spec):
    name = spec["name"]
    out_dir = os.path.join(OUT_ROOT, name)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    cfg, model = make_model(spec)
    ref = save_model(cfg, model, os.path.join(out_dir, "model"))
    files, rows = g2.checkpoint_listing(os.path.join(out_dir, "model"))
    print(f"== {name}: {files}")
    for f, k, dt, shp in rows:
        print(f"   {k:32s} {dt:4s} {list(shp)}")
    tensors = {}
    P = cfg.max_position_embeddings
    for ci, case in enumerate(CASES):
        ids, mask, pos = make_inputs(case, cfg.vocab_size, P, seed=spec["seed"] * 100 + ci)
        steps, out, s = capture(ref, ids, mask, pos)
        check_capture(ref, ids, mask, pos, steps, out, s)
        pre = f"case{ci}."
        tensors[pre + "input_ids"] = ids.to(torch.int32)
        tensors[pre + "attention_mask"] = mask.to(torch.int32)
        if pos is not None:
            tensors[pre + "position_ids"] = pos.to(torch.int32)
        tensors[pre + "logits"] = steps
        if is_cls(ref):
            tensors[pre + "pooled_logits"] = out
        for k, v in s.items():
            tensors[pre + k] = v
    ids, mask, pos = make_inputs(CASES[0], cfg.vocab_size, P, seed=spec["seed"] * 100)
    edits = iv_edits(cfg.h_dim)
    iv_steps, _, iv_s = capture(ref, ids, mask, pos, edits)
    assert not torch.equal(iv_steps, tensors["case0.logits"]), "the edits had no effect"
    for (comp, l, t) in edits:
        assert not torch.equal(iv_s[f"{comp}.{l}"][:, t], tensors[f"case0.{comp}.{l}"][:, t]), (comp, l, t)
    tensors["iv.logits"] = iv_steps
    tensors["iv.cell_output.0"] = iv_s["cell_output.0"]
    meta = {
        "n_cases": str(len(CASES)), "torch": torch.__version__, "transformers": transformers.__version__,
        "pyvene": mpf.pv_version(), "numpy": np.__version__, "safetensors": safetensors.__version__,
        "python": platform.python_version(), "model": name,
        "note": spec["note"] + " model.eval(), torch.no_grad(); embeddings redrawn N(0, 1). Streams "
                "(B, T, W) hooked at pyvene 0.1.8's GRU modules, one call per timestep. " + IV_DOC +
                " Cases: " + ", ".join(f"case{i}: B={c['B']} T={c['T']} lengths={c['lengths']} "
                                        f"position_ids={c['pos']}" for i, c in enumerate(CASES)),
    }
    g2.save_reference(tensors, os.path.join(out_dir, "reference.safetensors"), meta)
    print(f"   reference: {len(tensors)} tensors, "
          f"{os.path.getsize(os.path.join(out_dir, 'reference.safetensors'))} bytes")
    return ref


# --------------------------------------------------------------------------------------------
# pyvene cases
PV_MODELS = {}
PV_CASES = []


def pvcase(name, model, tags=()):
    def deco(fn):
        PV_CASES.append(dict(name=name, model=model, fn=fn, tags=list(tags)))
        return fn
    return deco


class Gen:
    def __init__(self, model, seed):
        self.g = torch.Generator().manual_seed(seed)
        self.V = PV_MODELS[model].config.vocab_size
        self.h = PV_MODELS[model].config.h_dim

    def ids(self, B, T, lengths=None):
        ids = torch.randint(1, self.V, (B, T), generator=self.g, dtype=torch.int64)
        if lengths is None:
            return {"input_ids": ids}
        mask = torch.ones((B, T), dtype=torch.int64)
        for b, n in enumerate(lengths):
            mask[b, n:] = 0
        return {"input_ids": torch.where(mask.bool(), ids, torch.zeros_like(ids)), "attention_mask": mask}

    def steps(self, B, U, T, ordered=True):
        """B rows of U distinct timesteps from range(T) (ascending, or in random order)."""
        rows = []
        for _ in range(B):
            r = torch.randperm(T, generator=self.g)[:U].tolist()
            rows.append(sorted(r) if ordered else r)
        return rows

    def vec(self, D):
        return (torch.randn(D, generator=self.g) * 256).round() / 256


def R(layer, comp, t="Vanilla", **kw):
    return mpf.R(layer, comp, unit="t", t=t, **kw)


def every(B, T):
    return [list(range(T)) for _ in range(B)]


SB = mpf.SB


def _cases():
    # Vanilla: every base timestep (pyvene zeroes unlisted ones), sources of other lengths
    @pvcase("vanilla_all_cell_output_L0_b1", "lm2", ["vanilla_all_steps"])
    def _(g):
        return dict(reps=[R(0, "cell_output")], base=g.ids(1, 5), sources=[g.ids(1, 7)],
                    ul=SB([g.steps(1, 5, 7)], [every(1, 5)]),
                    desc="Vanilla cell_output L0 at every base step from 5 of 7 source steps (ascending pairs)")

    @pvcase("vanilla_all_cell_output_L1_b2", "lm2", ["vanilla_all_steps"])
    def _(g):
        return dict(reps=[R(1, "cell_output")], base=g.ids(2, 4), sources=[g.ids(2, 6)],
                    ul=SB([g.steps(2, 4, 6)], [every(2, 4)]), oo=True,
                    desc="Vanilla cell_output L1 (the top layer), per-example source steps, B=2")

    @pvcase("vanilla_all_new_gate_output_L2", "lm3_nobias", ["vanilla_all_steps"])
    def _(g):
        return dict(reps=[R(2, "new_gate_output")], base=g.ids(2, 5), sources=[g.ids(2, 5)],
                    ul=SB([every(2, 5)], [every(2, 5)]),
                    desc="Vanilla new_gate_output L2 at every step from the same steps of the source")

    @pvcase("vanilla_all_reset_h2h_output_L0_cls", "cls2", ["vanilla_all_steps", "split"])
    def _(g):
        return dict(reps=[R(0, "reset_h2h_output")], base=g.ids(2, 5), sources=[g.ids(2, 6)],
                    ul=SB([g.steps(2, 5, 6)], [every(2, 5)]),
                    desc="Vanilla reset_h2h_output (first third of h2h) L0 on the classifier")

    @pvcase("vanilla_all_update_gate_input_subspaces", "lm2", ["vanilla_all_steps", "subspaces"])
    def _(g):
        return dict(reps=[R(1, "update_gate_input")], base=g.ids(2, 4), sources=[g.ids(2, 4)],
                    ul=SB([g.steps(2, 4, 4)], [every(2, 4)]), subspaces=[[[1, 5, 9], [1, 5, 9]]],
                    desc="Vanilla update_gate_input L1, subspace dims [1, 5, 9]")

    # Addition / Subtraction at some timesteps (unlisted steps get + 0 in pyvene too)
    @pvcase("addition_cell_output_L0_source_step_later", "lm2", ["partial_steps"])
    def _(g):
        return dict(reps=[R(0, "cell_output", t="Addition")], base=g.ids(2, 6), sources=[g.ids(2, 6)],
                    ul=SB([[[5], [4]]], [[[2], [1]]]),
                    desc="Addition cell_output L0: base step 2 / 1 from source step 5 / 4 (later than the "
                         "base step: the source runs first)")

    @pvcase("addition_cell_input_L1_two_steps_unsorted", "lm2", ["partial_steps", "unsorted"])
    def _(g):
        return dict(reps=[R(1, "cell_input", n=2, t="Addition")], base=g.ids(2, 6), sources=[g.ids(2, 5)],
                    ul=SB([[[4, 0], [3, 2]]], [[[1, 3], [4, 0]]]),
                    desc="Addition cell_input L1 (= cell_output L0, also layer 0's next hidden state) at two "
                         "steps; lists in non-ascending order: the k-th smallest source step feeds the k-th "
                         "smallest base step")

    @pvcase("subtraction_update_gate_output_L1_b1", "lm3_nobias", ["partial_steps"])
    def _(g):
        return dict(reps=[R(1, "update_gate_output", t="Subtraction")], base=g.ids(1, 6),
                    sources=[g.ids(1, 4)], ul=SB([[[3]]], [[[2]]]),
                    desc="Subtraction update_gate_output L1 at one step, shorter source")

    @pvcase("addition_reset_gate_input_L0", "lm3_nobias", ["partial_steps"])
    def _(g):
        return dict(reps=[R(0, "reset_gate_input", n=2, t="Addition")], base=g.ids(2, 5),
                    sources=[g.ids(2, 5)], ul=SB([g.steps(2, 2, 5)], [g.steps(2, 2, 5)]),
                    desc="Addition reset_gate_input L0 at two per-example steps")

    @pvcase("addition_update_gate_input_L2", "lm3_nobias", ["partial_steps"])
    def _(g):
        return dict(reps=[R(2, "update_gate_input", t="Addition")], base=g.ids(2, 5), sources=[g.ids(2, 7)],
                    ul=SB([g.steps(2, 1, 7)], [g.steps(2, 1, 5)]), oo=True,
                    desc="Addition update_gate_input L2 (top layer), longer source")

    @pvcase("addition_new_gate_input_L1_b3", "lm2", ["partial_steps"])
    def _(g):
        return dict(reps=[R(1, "new_gate_input", n=3, t="Addition")], base=g.ids(3, 6), sources=[g.ids(3, 6)],
                    ul=SB([g.steps(3, 3, 6)], [g.steps(3, 3, 6)]),
                    desc="Addition new_gate_input L1 at three steps, B=3")

    @pvcase("addition_reset_gate_output_L1", "lm2", ["partial_steps"])
    def _(g):
        return dict(reps=[R(1, "reset_gate_output", t="Addition")], base=g.ids(2, 5), sources=[g.ids(2, 5)],
                    ul=SB([g.steps(2, 1, 5)], [g.steps(2, 1, 5)]),
                    desc="Addition reset_gate_output L1")

    @pvcase("subtraction_new_gate_output_L0", "lm2", ["partial_steps"])
    def _(g):
        return dict(reps=[R(0, "new_gate_output", n=2, t="Subtraction")], base=g.ids(2, 6),
                    sources=[g.ids(2, 6)], ul=SB([g.steps(2, 2, 6)], [g.steps(2, 2, 6)]),
                    desc="Subtraction new_gate_output L0 at two steps")

    @pvcase("addition_x2h_output_L0", "lm2", ["partial_steps"])
    def _(g):
        return dict(reps=[R(0, "x2h_output", t="Addition")], base=g.ids(2, 5), sources=[g.ids(2, 5)],
                    ul=SB([g.steps(2, 1, 5)], [g.steps(2, 1, 5)]),
                    desc="Addition x2h_output L0 (3 h_dim wide)")

    @pvcase("addition_h2h_output_L1", "lm3_nobias", ["partial_steps"])
    def _(g):
        return dict(reps=[R(1, "h2h_output", n=2, t="Addition")], base=g.ids(2, 5), sources=[g.ids(2, 6)],
                    ul=SB([g.steps(2, 2, 6)], [g.steps(2, 2, 5)]),
                    desc="Addition h2h_output L1 (3 h_dim wide) at two steps")

    @pvcase("addition_reset_x2h_output_L1_lm", "lm2", ["partial_steps", "split"])
    def _(g):
        return dict(reps=[R(1, "reset_x2h_output", t="Addition")], base=g.ids(2, 5), sources=[g.ids(2, 5)],
                    ul=SB([g.steps(2, 1, 5)], [g.steps(2, 1, 5)]),
                    desc="Addition reset_x2h_output L1 on the LM (pyvene's LM mapping has no split, but the "
                         "first h_dim dims are the reset third, so it agrees)")

    @pvcase("addition_update_x2h_output_L0_cls_padded", "cls2", ["partial_steps", "split", "padding"])
    def _(g):
        base = g.ids(2, 6, lengths=[6, 4])
        return dict(reps=[R(0, "update_x2h_output", t="Addition")], base=base, sources=[g.ids(2, 6)],
                    ul=SB([[[4], [5]]], [[[1], [2]]]), oo=True,
                    desc="Addition update_x2h_output (second third of x2h) L0, right-padded base: pooled at "
                         "the last real token")

    @pvcase("addition_new_h2h_output_L1_cls", "cls2", ["partial_steps", "split"])
    def _(g):
        return dict(reps=[R(1, "new_h2h_output", n=2, t="Addition")], base=g.ids(2, 6), sources=[g.ids(2, 6)],
                    ul=SB([g.steps(2, 2, 6)], [g.steps(2, 2, 6)]),
                    desc="Addition new_h2h_output (third third of h2h) L1 on the classifier")

    @pvcase("two_groups_new_x2h_update_h2h_cls", "cls2", ["partial_steps", "split", "multi"])
    def _(g):
        return dict(reps=[R(1, "new_x2h_output", t="Addition"), R(0, "update_h2h_output", t="Subtraction")],
                    base=g.ids(2, 5), sources=[g.ids(2, 5), g.ids(2, 6)],
                    ul=SB([g.steps(2, 1, 5), g.steps(2, 1, 6)], [g.steps(2, 1, 5), g.steps(2, 1, 5)]),
                    desc="two groups: Addition new_x2h_output L1, Subtraction update_h2h_output L0")

    @pvcase("group_key_two_on_one_source", "lm2", ["partial_steps", "multi", "group_key"])
    def _(g):
        return dict(reps=[R(0, "cell_output", t="Addition", gk=0), R(1, "update_gate_output", t="Addition", gk=0)],
                    base=g.ids(2, 6), sources=[g.ids(2, 6)],
                    ul=SB([g.steps(2, 1, 6), g.steps(2, 1, 6)], [g.steps(2, 1, 6), g.steps(2, 1, 6)]),
                    desc="group_key 0 on two interventions (cell_output L0, update_gate_output L1), one source")

    @pvcase("addition_subspaces_cell_output_L1", "lm2", ["partial_steps", "subspaces"])
    def _(g):
        return dict(reps=[R(1, "cell_output", n=2, t="Addition")], base=g.ids(2, 5), sources=[g.ids(2, 5)],
                    ul=SB([g.steps(2, 2, 5)], [g.steps(2, 2, 5)]), subspaces=[[[0, 2, 3, 7], [0, 2, 3, 7]]],
                    desc="Addition cell_output L1 on subspace dims [0, 2, 3, 7] at two steps")

    @pvcase("addition_shorthand_int", "lm2", ["partial_steps", "shorthand"])
    def _(g):
        return dict(reps=[R(0, "new_gate_output", t="Addition")], base=g.ids(2, 5), sources=[g.ids(2, 5)],
                    ul={"sources->base": 3}, desc="{'sources->base': 3}: source step 3 -> base step 3")

    @pvcase("addition_shorthand_pair", "lm3_nobias", ["partial_steps", "shorthand"])
    def _(g):
        return dict(reps=[R(1, "cell_output", t="Addition")], base=g.ids(2, 5), sources=[g.ids(2, 6)],
                    ul={"sources->base": (5, 2)}, desc="{'sources->base': (5, 2)}: source step 5 -> base step 2")

    # constant-source interventions act at every step in pyvene: list every step (or None)
    @pvcase("zero_ul_none_cell_output_L1", "lm2", ["all_steps", "ul_none"])
    def _(g):
        return dict(reps=[R(1, "cell_output", t="Zero")], base=g.ids(2, 5), sources=None, ul=None,
                    desc="Zero cell_output L1, unit_locations None: every step")

    @pvcase("zero_all_new_gate_output_subspaces", "lm3_nobias", ["all_steps", "subspaces"])
    def _(g):
        return dict(reps=[R(0, "new_gate_output", t="Zero")], base=g.ids(2, 5), sources=None,
                    ul=SB(None, [every(2, 5)]), subspaces=[[[0, 3, 5], [0, 3, 5]]],
                    desc="Zero new_gate_output L0 dims [0, 3, 5] at every step")

    @pvcase("collect_all_cell_output_L0", "lm2", ["all_steps"])
    def _(g):
        return dict(reps=[R(0, "cell_output", n=5, t="Collect")], base=g.ids(2, 5), sources=None,
                    ul=SB(None, [every(2, 5)]), oo=True,
                    desc="Collect cell_output L0 at every step: (B, T, h)")

    @pvcase("collect_ul_none_x2h_output_L2", "lm3_nobias", ["all_steps", "ul_none"])
    def _(g):
        return dict(reps=[R(2, "x2h_output", t="Collect")], base=g.ids(2, 4), sources=None, ul=None,
                    desc="Collect x2h_output L2 with unit_locations None: (B, T, 3h)")

    @pvcase("collect_two_update_h2h_and_reset_gate_cls", "cls2", ["all_steps", "split", "multi"])
    def _(g):
        return dict(reps=[R(1, "update_h2h_output", n=6, t="Collect"), R(0, "reset_gate_output", n=6, t="Collect")],
                    base=g.ids(3, 6), sources=None, ul=SB([None, None], [every(3, 6), every(3, 6)]),
                    desc="two Collects on the classifier (update_h2h_output L1, reset_gate_output L0), B=3")

    @pvcase("const_addition_all_cell_input_L0", "lm2", ["all_steps", "const_source"])
    def _(g):
        return dict(reps=[R(0, "cell_input", t="Addition", const=g.vec(16))], base=g.ids(2, 5), sources=None,
                    ul=SB(None, [every(2, 5)]), form="dict",
                    desc="Addition of a constant vector to cell_input L0 (the embedding) at every step")

    @pvcase("lambda_all_cell_output_L1", "lm3_nobias", ["vanilla_all_steps", "lambda"])
    def _(g):
        return dict(reps=[R(1, "cell_output", cb="half_base_plus_source")], base=g.ids(2, 4),
                    sources=[g.ids(2, 6)], ul=SB([g.steps(2, 4, 6)], [every(2, 4)]), form="dict",
                    desc="Lambda half_base_plus_source on cell_output L1 at every base step")

    @pvcase("addition_top_cell_output_then_collect_cls", "cls2", ["multi"])
    def _(g):
        return dict(reps=[R(1, "cell_output", t="Addition"), R(1, "cell_output", n=5, t="Collect")],
                    base=g.ids(2, 5), sources=[g.ids(2, 5), None],
                    ul=SB([g.steps(2, 1, 5), None], [g.steps(2, 1, 5), every(2, 5)]), form="dict",
                    desc="Addition on the classifier's top cell_output, then a Collect of the same stream "
                         "(sees the added values at the listed step)")


_cases()


def per_example(x, b):
    return {k: v[b:b + 1] for k, v in x.items()}


def slice_ul(ul, b):
    """The explicit nested parallel form restricted to example b; shorthands and None unchanged."""
    if ul is None or "sources->base" not in ul:
        return copy.deepcopy(ul)
    v = ul["sources->base"]
    if isinstance(v, int) or all(isinstance(x, int) for x in v):
        return copy.deepcopy(ul)
    src, base = v
    cut = lambda side: None if side is None else [None if e is None else [e[b]] for e in side]
    return {"sources->base": (cut(src), cut(base))}


def slice_sub(sub, b):
    return None if sub is None else [None if e is None else [e[b]] for e in sub]


def pv_run(model, c, base, sources, ul, sub):
    """One fresh IntervenableModel run; returns (logits, original logits, collected list)."""
    ivm = pv.IntervenableModel(pv.IntervenableConfig(mpf.pv_reps(c["reps"]), mode=c["mode"]), model)
    srcs = None if sources is None else [None if s is None else dict(s) for s in sources]
    with torch.no_grad():
        res = ivm(dict(base), srcs, copy.deepcopy(ul), subspaces=copy.deepcopy(sub),
                  output_original_output=c["oo"], return_dict=True)
    out = res.intervened_outputs[0].float()
    orig = res.original_outputs[0].float() if c["oo"] else None
    coll = list(res.collected_activations or [])
    return out, orig, coll


class GruReference:
    """cvene's documented unit-t semantics with plain hooks, batched, from the JSON files."""

    def __init__(self, model, cfg_json, inp):
        self.m = model
        self.h = model.config.h_dim
        self.reps = cfg_json["representations"]
        self.inp = inp
        self.n = len(self.reps)

    def run(self):
        assert all(r["unit"] == "t" for r in self.reps)
        base = {k: torch.tensor(v) for k, v in self.inp["base"].items()}
        B, Tb = base["input_ids"].shape
        srcs = [None if s is None else {k: torch.tensor(v) for k, v in s.items()}
                for s in (self.inp.get("sources") or [])]
        gks = [r["group_key"] for r in self.reps]
        groups = collections.OrderedDict()
        for i, k in enumerate(gks):
            groups.setdefault(i if k is None else k, []).append(i)
        G = len(groups)
        if not srcs:
            srcs = [None] * G
        if len(srcs) == 1 and G > 1:
            srcs = srcs * G
        S, Bl = mpf.expand_parallel_ul(self.inp["unit_locations"], self.n, B)
        sub = mpf.expand_subspaces(self.inp.get("subspaces"), self.n, B)
        store, collected = {}, {}

        def steps_of(loc, b, T):
            return list(range(T)) if loc is None else sorted(loc[b])

        def fwd(x):
            return self.m(**x)[0]

        with torch.no_grad():
            orig = fwd(base).float() if self.inp["output_original_output"] else None
            for gi, (g, keys) in enumerate(groups.items()):
                src = srcs[gi]
                if src is None:
                    continue
                Ts = src["input_ids"].shape[1]
                hs = []
                for i in keys:
                    r = self.reps[i]
                    loc = S[i] if S is not None else None
                    store[i] = [dict() for _ in range(B)]

                    def fn(step, t, i=i, loc=loc, Ts=Ts):
                        for b in range(B):
                            st = steps_of(loc, b, Ts)
                            if step in st:
                                store[i][b][st.index(step)] = t[b].clone()
                    hs.append(register(self.m, r["component"], r["layer"], fn))
                fwd(src)
                for hd in hs:
                    hd.remove()
            hs = []
            for i, r in enumerate(self.reps):
                t = r["intervention_type"].replace("Intervention", "")
                const = r.get("source_representation")
                if i not in store and t not in ("Zero", "Collect", "Lambda") and const is None:
                    continue
                loc = Bl[i] if Bl is not None else None
                dims = None if sub is None or sub[i] is None else sub[i]
                if t == "Collect":
                    U = Tb if loc is None else len(loc[0])
                    collected[i] = torch.zeros(B, U, (3 if r["component"] in ("x2h_output", "h2h_output") else 1) * self.h)

                def fn(step, x, i=i, loc=loc, t=t, const=const, dims=dims):
                    for b in range(B):
                        st = steps_of(loc, b, Tb)
                        if step not in st:
                            continue
                        k = st.index(step)
                        y = store[i][b][k] if i in store else (
                            torch.tensor(const, dtype=torch.float32) if const is not None else None)
                        d = slice(None) if dims is None else dims[b]
                        if t == "Collect":
                            collected[i][b, k] = x[b]
                        elif t == "Lambda":
                            x[b] = mpf.CALLBACKS[self.reps[i]["callback"]](x[b], y)
                        elif t == "Vanilla":
                            x[b, d] = y[d]
                        elif t == "Addition":
                            x[b, d] = x[b, d] + y[d]
                        elif t == "Subtraction":
                            x[b, d] = x[b, d] - y[d]
                        elif t == "Zero":
                            x[b, d] = 0
                        else:
                            raise AssertionError(t)
                hs.append(register(self.m, r["component"], r["layer"], fn))
            out = fwd(base).float()
            for hd in hs:
                hd.remove()
        return out, orig, [collected[i] for i in range(self.n) if i in collected]


def close(a, b, what, tol=1e-6):
    assert a.shape == b.shape, (what, tuple(a.shape), tuple(b.shape))
    err = (a.double() - b.double()).abs().max().item()
    assert err <= tol * max(1.0, b.abs().max().item()), (what, err)


def run_case(idx, spec, summary):
    name = f"{idx:03d}_{spec['name']}"
    model = PV_MODELS[spec["model"]]
    g = Gen(spec["model"], zlib.crc32(spec["name"].encode()))
    c = spec["fn"](g)
    c.setdefault("mode", "parallel")
    c.setdefault("oo", False)
    c.setdefault("form", "saved")
    c.setdefault("subspaces", None)
    base = c["base"]
    B, Tb = base["input_ids"].shape
    case_dir = os.path.join(PV_ROOT, "cases", name)
    os.makedirs(case_dir)

    # config.json
    if c["form"] == "saved":
        ivm = pv.IntervenableModel(pv.IntervenableConfig(mpf.pv_reps(c["reps"]), mode=c["mode"]), model)
        with tempfile.TemporaryDirectory() as td:
            with contextlib.redirect_stdout(io.StringIO()):  # pyvene prints the directory it made
                ivm.save(os.path.join(td, "iv"))
            with open(os.path.join(td, "iv", "config.json"), "rb") as f:
                cfg_bytes = f.read()
        cfg_json = json.loads(cfg_bytes)
        fields = list(pv.RepresentationConfig._fields)
        ref_cfg = {"mode": cfg_json["mode"], "representations": []}
        for arr, ty in zip(cfg_json["representations"], cfg_json["intervention_types"]):
            d = dict(zip(fields, arr))
            d["intervention_type"] = ty.split(".")[-1].rstrip("'>")
            ref_cfg["representations"].append(d)
    else:
        cfg_bytes = (mpf.dump_dict_config(mpf.dict_config(c["reps"], c["mode"])) + "\n").encode()
        ref_cfg = json.loads(cfg_bytes)
    with open(os.path.join(case_dir, "config.json"), "wb") as f:
        f.write(cfg_bytes)

    # inputs.json
    inp = collections.OrderedDict()
    inp["model"] = spec["model"]
    inp["base"] = mpf.inputs_json(base)
    inp["sources"] = None if c["sources"] is None else [None if s is None else mpf.inputs_json(s)
                                                        for s in c["sources"]]
    inp["unit_locations"] = mpf.jsonify(c["ul"])
    if c["subspaces"] is not None:
        inp["subspaces"] = mpf.jsonify(c["subspaces"])
    inp["output_original_output"] = c["oo"]
    inp_text = json.dumps(inp, separators=(", ", ": ")) + "\n"
    with open(os.path.join(case_dir, "inputs.json"), "w") as f:
        f.write(inp_text)

    # pyvene: one example at a time (its unit-t setters only work for batch size 1)
    rows = []
    for b in range(B):
        srcs = None if c["sources"] is None else [None if s is None else per_example(s, b) for s in c["sources"]]
        rows.append(pv_run(model, c, per_example(base, b), srcs, slice_ul(c["ul"], b),
                           slice_sub(c["subspaces"], b)))
    logits = torch.cat([r[0] for r in rows]).contiguous()
    tensors = {"logits": logits}
    if c["oo"]:
        tensors["original_logits"] = torch.cat([r[1] for r in rows]).contiguous()
    n_collect = sum(r["type"] == "Collect" for r in c["reps"])
    if n_collect:
        # pyvene collects every timestep: per Collect, Tb entries of (1, D); stack to (B, Tb, D)
        for b in range(B):
            assert len(rows[b][2]) == n_collect * Tb, (name, len(rows[b][2]))
        for k in range(n_collect):
            tensors[f"collected.{k}"] = torch.cat(
                [torch.stack(rows[b][2][k * Tb:(k + 1) * Tb], dim=1) for b in range(B)]).float().contiguous()
        if all(r["type"] == "Collect" for r in c["reps"]):  # no scatter: pyvene runs batched too
            out, _, coll = pv_run(model, c, base, c["sources"], c["ul"], c["subspaces"])
            close(out, logits, name + " batched")
            for k in range(n_collect):
                close(torch.stack(coll[k * Tb:(k + 1) * Tb], dim=1), tensors[f"collected.{k}"], name)

    # the independent reference, from the JSON files
    out, orig, coll = GruReference(model, ref_cfg, json.loads(inp_text)).run()
    close(out, logits, name)
    if c["oo"]:
        close(orig, tensors["original_logits"], name + " original")
    assert len(coll) == n_collect
    for k, t in enumerate(coll):
        close(t, tensors[f"collected.{k}"], f"{name} collected.{k}")
    with torch.no_grad():
        clean = model(**base)[0]
    changed = not torch.allclose(clean, logits, rtol=0, atol=1e-6)
    assert changed == (not all(r["type"] == "Collect" for r in c["reps"])), f"{name}: effect {changed}"
    assert torch.isfinite(logits).all()

    meta = {"torch": torch.__version__, "transformers": transformers.__version__, "pyvene": mpf.pv_version(),
            "numpy": np.__version__, "case": name, "note": c["desc"]}
    mpf.save_safetensors(tensors, os.path.join(case_dir, "expected.safetensors"), meta)
    tags = [spec["model"], c["mode"], "config_" + c["form"], f"B{B}"]
    for r in c["reps"]:
        tags += [r["component"], "unit_t", r["type"]]
    if c["oo"]:
        tags.append("original_output")
    if B > 1:
        tags.append("per_example_pyvene_runs")
    tags += spec["tags"]
    tags = list(dict.fromkeys(tags))
    for t in tags:
        summary[t] += 1
    size = sum(os.path.getsize(os.path.join(case_dir, f)) for f in os.listdir(case_dir))
    print(f"{name:56s} {spec['model']:10s} B={B} T={Tb} {c['form']:5s} {size:6d} B")
    return {"name": name, "model": spec["model"], "description": c["desc"], "tags": tags}


def check_quirks():
    """The pyvene 0.1.8 behaviours at unit t that the cases avoid (module docstring), asserted so
    that a pyvene that fixes them is noticed."""
    model = PV_MODELS["lm2"]
    g = Gen("lm2", 7)
    base, src = g.ids(2, 5), g.ids(2, 5)
    inp = lambda ul: dict(base=mpf.inputs_json(base), sources=[mpf.inputs_json(src)], unit_locations=ul,
                          output_original_output=False)
    c = dict(reps=[R(0, "cell_output")], mode="parallel", oo=False)
    ul = SB([[[3], [1]]], [[[2], [4]]])
    # 1. a setter at unit t with batch size 2 fails in scatter_neurons
    try:
        pv_run(model, c, base, [src], ul, None)
        raise AssertionError("pyvene now scatters unit t for B > 1: run the cases batched")
    except RuntimeError as e:
        assert "shape mismatch" in str(e), e
    # 2. Vanilla at one step: pyvene also writes zeros at every other step
    got = torch.cat([pv_run(model, c, per_example(base, b), [per_example(src, b)], slice_ul(ul, b), None)[0]
                     for b in range(2)])
    want = GruReference(model, dict(mode="parallel", representations=[dict(
        layer=0, component="cell_output", unit="t", intervention_type="VanillaIntervention", group_key=None)]),
        json.loads(json.dumps(mpf.jsonify(inp(ul))))).run()[0]
    assert not torch.allclose(got[:, 0], want[:, 0]), "pyvene no longer zeroes unlisted steps"
    close(got[:, :2], GruReference(model, dict(mode="parallel", representations=[dict(
        layer=0, component="cell_output", unit="t", intervention_type="ZeroIntervention", group_key=None)]),
        json.loads(json.dumps(mpf.jsonify(dict(inp(None), sources=None))))).run()[0][:, :2], "zeroed steps")
    # 3. Zero (a constant-source intervention) ignores its locations: acts at every step
    cz = dict(reps=[R(0, "cell_output", t="Zero")], mode="parallel", oo=False)
    a = pv_run(model, cz, per_example(base, 0), None, SB(None, [[[4]]]), None)[0]
    b = pv_run(model, cz, per_example(base, 0), None, None, None)[0]
    assert torch.equal(a, b), "pyvene's Zero now honours unit t locations"
    # 4. GRULMHeadModel's mapping has no split: update_x2h_output collects the reset third
    cc = dict(reps=[R(0, "update_x2h_output", t="Collect")], mode="parallel", oo=False)
    coll = pv_run(model, cc, per_example(base, 0), None, None, None)[2]
    x = {}
    hd = model.gru.cells[0].x2h.register_forward_hook(lambda m, a_, o: x.setdefault("o", o.clone()))
    with torch.no_grad():
        model(**per_example(base, 0))
    hd.remove()
    h = model.config.h_dim
    assert torch.equal(coll[0], x["o"][:, :h]), "pyvene's LM mapping now splits x2h"
    print("pyvene quirks at unit t confirmed (B > 1 scatter, Vanilla zeros, Zero everywhere, LM split)")


def run_pyvene_cases():
    check_quirks()
    cases_dir = os.path.join(PV_ROOT, "cases")
    if os.path.exists(cases_dir):
        shutil.rmtree(cases_dir)
    os.makedirs(cases_dir)
    names = [c["name"] for c in PV_CASES]
    assert len(set(names)) == len(names)
    summary = collections.Counter()
    manifest = [run_case(i, spec, summary) for i, spec in enumerate(PV_CASES)]
    with open(os.path.join(PV_ROOT, "manifest.json"), "w") as f:
        f.write("[\n" + ",\n".join("  " + json.dumps(m) for m in manifest) + "\n]\n")
    print(f"\n{len(manifest)} pyvene GRU cases")
    for k in sorted(summary):
        print(f"   {k:40s} {summary[k]:4d}")
    comps = {c for m in manifest for c in m["tags"] if c in COMPONENTS}
    assert comps == set(COMPONENTS), set(COMPONENTS) - comps  # every GRU component in some case
    assert len(manifest) >= 20


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    assert mpf.pv_version() == "0.1.8", mpf.pv_version()
    print(f"python {platform.python_version()} torch {torch.__version__} transformers "
          f"{transformers.__version__} pyvene {mpf.pv_version()} numpy {np.__version__}")
    os.makedirs(OUT_ROOT, exist_ok=True)
    for spec in MODELS:
        PV_MODELS[spec["name"]] = build(spec)
    run_pyvene_cases()
    total = g2.dir_size(OUT_ROOT) + g2.dir_size(PV_ROOT)
    print(f"size of tests/fixtures/gru + pyvene_gru: {total} bytes ({total / 1024 / 1024:.2f} MiB)")
    assert total < SIZE_LIMIT, "fixtures exceed the size budget"


if __name__ == "__main__":
    main()
