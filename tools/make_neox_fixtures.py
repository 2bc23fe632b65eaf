#!/usr/bin/env python
"""Generate GPT-NeoX (Pythia) reference fixtures for cvene.

Two sets, both written from scratch on every run (deterministic: a re-run yields identical bytes):

1. tests/fixtures/neox/<NAME>/{model/, reference.safetensors}: tiny random GPTNeoXForCausalLM
   models saved by transformers (f32, f16, bf16, a sharded f32 one; rotary_pct 0.25 / 0.5 / 1.0;
   parallel and sequential residual) and, per input case, transformers' logits and every stream
   cvene publishes at a site:
     - the pyvene 0.1.8 GPT-NeoX components, captured with hooks at exactly the modules pyvene
       hooks (pyvene/models/gpt_neox/modelings_intervenable_gpt_neox.py);
     - query/key/value_output and head_{query,key,value}_output, which pyvene lacks for GPT-NeoX:
       cvene defines them as the vectors attention uses, i.e. AFTER the rotary embedding (value
       has none). Captured by wrapping GPTNeoXAttention._attn, which receives exactly those;
     - attention_weight: the softmax probabilities _attn returns.
   Plus "iv.*": one forward with q/k/v overwritten inside _attn, to check that writing at the
   post-rotary sites feeds attention as transformers would.

2. tests/fixtures/pyvene_neox/{cases/NNN_name/, manifest.json}: pyvene 0.1.8 intervention cases on
   two of the f32 models above, in the SAME format as tests/fixtures/pyvene (this script reuses
   tools/make_pyvene_fixtures.py's case machinery, including its independent reference, which must
   agree bit for bit with pyvene). inputs.json "model" names a directory under tests/fixtures/neox.

References are computed in float32 by a model re-loaded from the saved checkpoint
(from_pretrained(..., torch_dtype=float32, attn_implementation="eager")), so for the f16/bf16
checkpoints they are the f32 computation on the rounded weights, which is what cvene's CPU
backend does.

Usage (from the repository root):
    python -m venv v && v/bin/pip install -r tools/requirements.txt
    v/bin/python tools/make_neox_fixtures.py
"""

import collections
import json
import logging
import os
import platform
import shutil
import sys
import warnings

import numpy as np
import safetensors
import torch
import transformers
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
import make_gpt2_fixtures as g2  # noqa: E402  (save_reference, checkpoint_listing, dir_size)
import make_pyvene_fixtures as mpf  # noqa: E402  (case machinery; prints "nnsight is not detected")
import pyvene as pv  # noqa: E402

OUT_ROOT = os.path.join(REPO, "tests", "fixtures", "neox")
PV_ROOT = os.path.join(REPO, "tests", "fixtures", "pyvene_neox")
SIZE_LIMIT = 3 * 1024 * 1024  # both directories together

PYVENE_COMPONENTS = ["block_input", "block_output", "attention_input", "attention_value_output",
                     "head_attention_value_output", "attention_output", "mlp_input",
                     "mlp_activation", "mlp_output"]
QKV_COMPONENTS = ["query_output", "key_output", "value_output", "head_query_output",
                  "head_key_output", "head_value_output", "attention_weight"]
COMPONENTS = PYVENE_COMPONENTS + QKV_COMPONENTS

# (B, T, lengths, padding side, position ids); side None = no padding.
# pos "shifted": position_ids = max(cumsum(mask) - 1, 0) + 29, so left-padded rows start their real
# tokens at 29 and run past max_position_embeddings (32): rotary has no position table.
CASES = [
    dict(B=2, T=6, lengths=[6, 6], side=None, pos=None),
    dict(B=2, T=7, lengths=[7, 4], side="right", pos=None),
    dict(B=2, T=6, lengths=[6, 3], side="left", pos=None),
    dict(B=2, T=6, lengths=[6, 4], side="left", pos="shifted"),
]

BASE = dict(max_position_embeddings=32, initializer_range=0.1, hidden_act="gelu")
MODELS = [
    dict(name="par_rot25", seed=2001, save_dtype=torch.float32, shard=None,
         config=dict(hidden_size=64, num_attention_heads=4, num_hidden_layers=2, intermediate_size=96,
                     vocab_size=96, rotary_pct=0.25, use_parallel_residual=True),
         note="f32 checkpoint, head_dim 16, rotary_pct 0.25 (4 rotary dims), parallel residual, "
              "intermediate_size 96 (not 4*hidden)."),
    dict(name="seq_rot100", seed=2002, save_dtype=torch.float32, shard=None,
         config=dict(hidden_size=48, num_attention_heads=6, num_hidden_layers=3, intermediate_size=128,
                     vocab_size=96, rotary_pct=1.0, rotary_emb_base=500, layer_norm_eps=1e-3,
                     use_parallel_residual=False),
         note="f32 checkpoint, head_dim 8, rotary_pct 1.0, rotary_emb_base 500, layer_norm_eps 1e-3, "
              "sequential residual."),
    dict(name="fp16", seed=2003, save_dtype=torch.float16, shard=None, cases=[0, 3],
         config=dict(hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=80,
                     vocab_size=128, rotary_pct=0.5, use_parallel_residual=True),
         note="F16 checkpoint (model.half()), head_dim 16, rotary_pct 0.5, parallel residual; "
              "reference = f32 forward of the fp16-rounded weights."),
    dict(name="bf16_seq", seed=2004, save_dtype=torch.bfloat16, shard=None, cases=[0, 3],
         config=dict(hidden_size=64, num_attention_heads=2, num_hidden_layers=2, intermediate_size=128,
                     vocab_size=128, rotary_pct=0.25, use_parallel_residual=False, attention_bias=False),
         note="BF16 checkpoint, head_dim 32, rotary_pct 0.25 (8 dims), sequential residual, "
              "attention_bias false (no query_key_value / dense biases); reference = f32 forward "
              "of the bf16-rounded weights."),
    dict(name="sharded", seed=2005, save_dtype=torch.float32, shard="20KB", cases=[1, 3],
         config=dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=3, intermediate_size=64,
                     vocab_size=128, rotary_pct=1.0, use_parallel_residual=True,
                     tie_word_embeddings=True),
         note="f32 checkpoint saved with max_shard_size=20KB (index.json + shards), head_dim 8, "
              "rotary_pct 1.0, tie_word_embeddings true (no embed_out.weight in the checkpoint)."),
]


def make_case_inputs(case, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    B, T = case["B"], case["T"]
    ids = torch.randint(1, vocab, (B, T), generator=g, dtype=torch.int64)
    mask = torch.zeros((B, T), dtype=torch.int64)
    for b, n in enumerate(case["lengths"]):
        if case["side"] in (None, "right"):
            mask[b, :n] = 1
        else:
            mask[b, T - n:] = 1
    ids = torch.where(mask.bool(), ids, torch.zeros_like(ids))  # pad id 0
    pos = None
    if case["pos"] == "shifted":
        pos = (mask.cumsum(-1) - 1).clamp(min=0) + 29
    return ids, mask, pos


def split_heads(x, H):
    B, T, C = x.shape
    return x.reshape(B, T, H, C // H).permute(0, 2, 1, 3)


def merge_heads(x):
    B, H, T, D = x.shape
    return x.permute(0, 2, 1, 3).reshape(B, T, H * D)


def first_hidden(args, kwargs):
    return args[0] if len(args) > 0 else kwargs["hidden_states"]


def capture(model, ids, mask, pos, edit=None):
    """Run the forward; return (logits, {component.layer: tensor}). edit(l, q, k, v) may modify the
    post-rotary q/k/v (B, H, T, D) in place inside _attn."""
    body = model.gpt_neox
    caps = {}
    handles = []
    originals = []
    H = model.config.num_attention_heads

    def put(key, t):
        assert key not in caps, f"hook fired twice: {key}"
        caps[key] = t.detach().clone().float().contiguous()

    for l, blk in enumerate(body.layers):
        att = blk.attention

        def blk_pre(mod, args, kwargs, l=l):
            put(f"block_input.{l}", first_hidden(args, kwargs))

        def blk_post(mod, args, kwargs, out, l=l):
            put(f"block_output.{l}", out[0])

        def attn_pre(mod, args, kwargs, l=l):
            put(f"attention_input.{l}", first_hidden(args, kwargs))

        def attn_post(mod, args, kwargs, out, l=l):
            put(f"attention_output.{l}", out[0])

        def dense_pre(mod, args, kwargs, l=l):
            x = args[0] if args else kwargs["input"]
            put(f"attention_value_output.{l}", x)
            put(f"head_attention_value_output.{l}", split_heads(x, H))

        def mlp_pre(mod, args, kwargs, l=l):
            put(f"mlp_input.{l}", first_hidden(args, kwargs))

        def mlp_post(mod, args, out, l=l):
            put(f"mlp_output.{l}", out)

        def act_post(mod, args, out, l=l):
            put(f"mlp_activation.{l}", out)

        orig = att._attn

        def wrapped(query, key, value, attention_mask=None, head_mask=None, l=l, orig=orig):
            if edit is not None:
                edit(l, query, key, value)
            for name, t in (("query", query), ("key", key), ("value", value)):
                put(f"head_{name}_output.{l}", t)
                put(f"{name}_output.{l}", merge_heads(t))
            out, weights = orig(query, key, value, attention_mask, head_mask)
            put(f"attention_weight.{l}", weights)
            return out, weights

        att._attn = wrapped
        originals.append(att)
        handles += [
            blk.register_forward_pre_hook(blk_pre, with_kwargs=True),
            blk.register_forward_hook(blk_post, with_kwargs=True),
            att.register_forward_pre_hook(attn_pre, with_kwargs=True),
            att.register_forward_hook(attn_post, with_kwargs=True),
            att.dense.register_forward_pre_hook(dense_pre, with_kwargs=True),
            blk.mlp.register_forward_pre_hook(mlp_pre, with_kwargs=True),
            blk.mlp.register_forward_hook(mlp_post),
            blk.mlp.act.register_forward_hook(act_post),
        ]
    try:
        with torch.no_grad():
            kw = dict(input_ids=ids, attention_mask=mask, use_cache=False)
            if pos is not None:
                kw["position_ids"] = pos
            out = model(**kw)
    finally:
        for h in handles:
            h.remove()
        for att in originals:
            del att._attn  # back to the class method
    return out.logits.float().contiguous(), caps


def rotary_reference(x, pos, rot, base):
    """GPT-NeoX rotate-half on the first rot dims of x (B, H, T, D), in float64 from the f32 inputs."""
    if rot == 0:
        return x.double()
    i = np.arange(0, rot, 2, dtype=np.int64).astype(np.float32) / np.float32(rot)
    inv = (1.0 / np.power(np.float64(base), i.astype(np.float64))).astype(np.float32)
    ang = pos.double()[:, None, :, None] * torch.from_numpy(inv.astype(np.float64))  # (B, 1, T, rot/2)
    c, s = torch.cos(ang), torch.sin(ang)
    xd = x.double()
    x1, x2 = xd[..., : rot // 2], xd[..., rot // 2: rot]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s, xd[..., rot:]], dim=-1)


def check_capture(model, caps, logits, ids, mask, pos):
    """Consistency checks so that a hook on the wrong module is caught."""
    cfg = model.config
    body = model.gpt_neox
    B, T = ids.shape
    C, H, L, I = cfg.hidden_size, cfg.num_attention_heads, cfg.num_hidden_layers, cfg.intermediate_size
    D = C // H
    rot = int(D * cfg.rotary_pct)
    exp_shapes = {c: (B, T, C) for c in COMPONENTS}
    exp_shapes.update({"head_query_output": (B, H, T, D), "head_key_output": (B, H, T, D),
                       "head_value_output": (B, H, T, D), "head_attention_value_output": (B, H, T, D),
                       "attention_weight": (B, H, T, T), "mlp_activation": (B, T, I)})
    assert len(caps) == len(COMPONENTS) * L, (len(caps), len(COMPONENTS) * L)
    for comp in COMPONENTS:
        for l in range(L):
            t = caps[f"{comp}.{l}"]
            assert tuple(t.shape) == exp_shapes[comp], (comp, l, tuple(t.shape), exp_shapes[comp])
            assert torch.isfinite(t).all(), (comp, l)
    assert torch.isfinite(logits).all() and logits.shape == (B, T, cfg.vocab_size)

    def close(a, b, what, tol=1e-5):
        err = (a.double() - b.double()).abs().max().item()
        assert err <= tol * max(1.0, b.abs().max().item()), (what, err)

    p = pos if pos is not None else torch.arange(T)[None].expand(B, T)
    with torch.no_grad():
        assert torch.equal(caps["block_input.0"], body.embed_in(ids)), "block_input.0 != embed_in"
        for l in range(L):
            blk = body.layers[l]
            g = lambda c: caps[f"{c}.{l}"]
            if l + 1 < L:
                assert torch.equal(g("block_output"), caps[f"block_input.{l + 1}"]), l
            assert torch.equal(g("attention_input"), blk.input_layernorm(g("block_input")))
            qkv = blk.attention.query_key_value(g("attention_input")).view(B, T, H, 3 * D)
            q, k, v = (qkv[..., i * D:(i + 1) * D].permute(0, 2, 1, 3) for i in range(3))
            assert torch.equal(g("head_value_output"), v), "value is the third per-head slice"
            assert torch.equal(g("head_query_output")[..., rot:], q[..., rot:]), "pass-through dims"
            assert torch.equal(g("head_key_output")[..., rot:], k[..., rot:])
            close(g("head_query_output"), rotary_reference(q, p, rot, cfg.rotary_emb_base), "q rotary")
            close(g("head_key_output"), rotary_reference(k, p, rot, cfg.rotary_emb_base), "k rotary")
            if rot > 0:
                assert not torch.equal(g("head_query_output")[..., :rot], q[..., :rot]), "rotary not applied"
            for c in ("query", "key", "value"):
                assert torch.equal(merge_heads(g(f"head_{c}_output")), g(f"{c}_output"))
            aw = g("attention_weight")
            close(aw.sum(-1), torch.ones(B, H, T), "softmax rows")
            qv = mask.bool()[:, None, :, None]
            causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)[None, None]
            assert (aw.masked_select(qv & causal) == 0).all(), "attention_weight not causal"
            assert (aw.masked_select(qv & ~mask.bool()[:, None, None, :]) == 0).all(), "pad key weight"
            close(torch.matmul(aw, g("head_value_output")), g("head_attention_value_output"), "aw @ v")
            assert torch.equal(merge_heads(g("head_attention_value_output")), g("attention_value_output"))
            assert torch.equal(blk.attention.dense(g("attention_value_output")), g("attention_output"))
            if cfg.use_parallel_residual:
                assert torch.equal(g("mlp_input"), blk.post_attention_layernorm(g("block_input")))
                want = g("mlp_output") + g("attention_output") + g("block_input")
            else:
                h1 = g("attention_output") + g("block_input")
                assert torch.equal(g("mlp_input"), blk.post_attention_layernorm(h1))
                want = g("mlp_output") + h1
            assert torch.equal(g("mlp_activation"), blk.mlp.act(blk.mlp.dense_h_to_4h(g("mlp_input"))))
            assert torch.equal(g("mlp_output"), blk.mlp.dense_4h_to_h(g("mlp_activation")))
            assert torch.equal(g("block_output"), want)
        final = body.final_layer_norm(caps[f"block_output.{L - 1}"])
        close(model.embed_out(final), logits, "logits")


def perturb_default_init(model, seed, std):
    """GPT-NeoX's _init_weights sets every bias to 0 and every LayerNorm weight to 1, which would
    let an engine that ignores them pass. Give them deterministic random values instead."""
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 * std))
            elif name.endswith(".weight") and ("layernorm" in name or "final_layer_norm" in name):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
    for name, p in model.named_parameters():
        if name.endswith(".bias") or "layernorm" in name or "final_layer_norm" in name:
            assert not torch.all(p == 0) and not torch.all(p == 1), name


def iv_edit(L):
    """The 'iv' case: zero head 1 of the post-rotary query at layer 0, negate position 2 of the
    value at the last layer, add 0.25 to dims 0..2 of every post-rotary key at layer 0."""
    def edit(l, q, k, v):
        if l == 0:
            q[:, 1] = 0.0
            k[..., 0:3] += 0.25
        if l == L - 1:
            v[:, :, 2] = -v[:, :, 2]
    return edit


def build(spec):
    name = spec["name"]
    out_dir = os.path.join(OUT_ROOT, name)
    model_dir = os.path.join(out_dir, "model")
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(model_dir)

    torch.manual_seed(spec["seed"])
    cfg = GPTNeoXConfig(**BASE, **spec["config"], attn_implementation="eager")
    model = GPTNeoXForCausalLM(cfg).eval()
    perturb_default_init(model, spec["seed"], cfg.initializer_range)
    rounded = model.to(spec["save_dtype"])
    kw = dict(safe_serialization=True)
    if spec["shard"] is not None:
        kw["max_shard_size"] = spec["shard"]
    rounded.save_pretrained(model_dir, **kw)
    expected_f32 = {k: v.detach().float().clone() for k, v in rounded.state_dict().items()}
    del model, rounded

    files, rows = g2.checkpoint_listing(model_dir)
    if spec["shard"] is not None:
        assert os.path.exists(os.path.join(model_dir, "model.safetensors.index.json"))
        assert len(files) >= 3, f"expected >= 3 shards, got {files}"
    else:
        assert files == ["model.safetensors"], files
    want_dtype = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}[spec["save_dtype"]]
    for _, k, dt, _ in rows:
        assert dt == want_dtype, (k, dt)
    names = [k for _, k, _, _ in rows]
    assert ("embed_out.weight" in names) == (not cfg.tie_word_embeddings), names
    print(f"== {name}: checkpoint files {files}")
    for f, k, dt, shp in rows:
        print(f"   {f:40s} {k:52s} {dt:5s} {list(shp)}")

    ref = GPTNeoXForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                             attn_implementation="eager").eval()
    assert ref.config._attn_implementation == "eager"
    sd = ref.state_dict()
    for k, v in expected_f32.items():
        assert sd[k].dtype == torch.float32 and torch.equal(sd[k], v), f"reloaded weight differs: {k}"
    if cfg.tie_word_embeddings:
        assert ref.embed_out.weight.data_ptr() == ref.gpt_neox.embed_in.weight.data_ptr()

    tensors = {}
    case_list = [CASES[i] for i in spec.get("cases", range(len(CASES)))]
    for ci, case in enumerate(case_list):
        ids, mask, pos = make_case_inputs(case, cfg.vocab_size, seed=spec["seed"] * 100 + ci)
        logits, caps = capture(ref, ids, mask, pos)
        check_capture(ref, caps, logits, ids, mask, pos)
        tensors[f"case{ci}.input_ids"] = ids.to(torch.int32).contiguous()
        tensors[f"case{ci}.attention_mask"] = mask.to(torch.int32).contiguous()
        if pos is not None:
            tensors[f"case{ci}.position_ids"] = pos.to(torch.int32).contiguous()
        tensors[f"case{ci}.logits"] = logits
        for k, v in caps.items():
            tensors[f"case{ci}.{k}"] = v
    # the intervention case on case0's inputs
    ids, mask, pos = make_case_inputs(case_list[0], cfg.vocab_size, seed=spec["seed"] * 100)
    L = cfg.num_hidden_layers
    iv_logits, iv_caps = capture(ref, ids, mask, pos, edit=iv_edit(L))
    clean = tensors["case0.logits"]
    assert torch.equal(tensors["case0.input_ids"], ids.to(torch.int32))
    assert not torch.equal(iv_logits, clean), "the q/k/v edit had no effect"
    tensors["iv.logits"] = iv_logits
    # what the edited streams look like (the sites must show the edited values)
    tensors["iv.head_query_output.0"] = iv_caps["head_query_output.0"]
    tensors[f"iv.value_output.{L - 1}"] = iv_caps[f"value_output.{L - 1}"]

    meta = {
        "n_cases": str(len(case_list)), "torch": torch.__version__, "transformers": transformers.__version__,
        "numpy": np.__version__, "safetensors": safetensors.__version__,
        "python": platform.python_version(), "model": name,
        "note": spec["note"] + " GPTNeoXForCausalLM, attn_implementation=eager, model.eval(), "
                "torch.no_grad(), pad id 0. pyvene components hooked as pyvene 0.1.8 hooks them; "
                "q/k/v (and head_ forms) are the post-rotary tensors GPTNeoXAttention._attn receives, "
                "attention_weight the probabilities it returns. iv.*: case0 with head 1 of layer-0 "
                "query zeroed, +0.25 on dims 0..2 of every layer-0 key, position 2 of the last "
                "layer's value negated (all post-rotary, inside _attn). Biases and LayerNorm weights "
                "re-drawn randomly after init. Cases: " + ", ".join(
                    f"case{i}: B={c['B']} T={c['T']} lengths={c['lengths']} padding={c['side']} "
                    f"position_ids={c['pos']}" for i, c in enumerate(case_list)),
    }
    g2.save_reference(tensors, os.path.join(out_dir, "reference.safetensors"), meta)
    print(f"   reference: {len(tensors)} tensors, "
          f"{os.path.getsize(os.path.join(out_dir, 'reference.safetensors'))} bytes")


# --------------------------------------------------------------------------------------------
# pyvene cases (format of tests/fixtures/pyvene, machinery of tools/make_pyvene_fixtures.py)
PV_MODELS = ["par_rot25", "seq_rot100"]


class NeoxReference(mpf.Reference):
    """make_pyvene_fixtures' independent reference, with pyvene's GPT-NeoX hook points."""

    def site(self, r):
        blk = self.m.gpt_neox.layers[r["layer"]]
        return {
            "block_input": (blk, "pre"), "block_output": (blk, "post"),
            "attention_input": (blk.attention, "pre"), "attention_output": (blk.attention, "post"),
            "attention_value_output": (blk.attention.dense, "pre"),
            "head_attention_value_output": (blk.attention.dense, "pre"),
            "mlp_input": (blk.mlp, "pre"), "mlp_output": (blk.mlp, "post"),
            "mlp_activation": (blk.mlp.act, "post"),
        }[r["component"]]


def load_pv_models():
    mpf.MODELS.clear()
    mpf.DIMS.clear()
    for name in PV_MODELS:
        m = GPTNeoXForCausalLM.from_pretrained(os.path.join(OUT_ROOT, name, "model"),
                                               attn_implementation="eager", torch_dtype=torch.float32).eval()
        for p in m.parameters():
            p.requires_grad_(False)
        c = m.config
        mpf.MODELS[name] = m
        mpf.DIMS[name] = dict(C=c.hidden_size, H=c.num_attention_heads, hd=c.hidden_size // c.num_attention_heads,
                              L=c.num_hidden_layers, I=c.intermediate_size, V=c.vocab_size,
                              P=c.max_position_embeddings)
    mpf.OUT_ROOT = PV_ROOT
    mpf.Reference = NeoxReference


PV_CASES = []


def pvcase(name, model, tags=()):
    def deco(fn):
        PV_CASES.append(dict(name=name, model=model, fn=fn, tags=list(tags)))
        return fn
    return deco


R, SB, pos_locs = mpf.R, mpf.SB, mpf.pos_locs
BT = ["block_input", "block_output", "attention_input", "attention_value_output", "attention_output",
      "mlp_input", "mlp_activation", "mlp_output"]


def _coverage():
    for mi, model in enumerate(PV_MODELS):
        for ci, comp in enumerate(BT):
            k = mi * len(BT) + ci

            def fn(g, comp=comp, model=model, k=k):
                L = mpf.DIMS[model]["L"]
                B, U, Tb = 1 + k % 3, 1 + (k // 3) % 3, 5 + k % 4
                Ts = Tb + (k % 3) - 1
                layer = k % L
                base, src = g.ids(B, Tb), g.ids(B, Ts)
                s, b = pos_locs(g, B, U, Ts, Tb, k % 4 == 3)
                return dict(reps=[R(layer, comp, n=U)], base=base, sources=[src], ul=SB([s], [b]),
                            oo=(k % 5 == 0),
                            desc=f"Vanilla pos on {comp} L{layer}, B={B}, U={U}, base T={Tb}, source T={Ts}")
            pvcase(f"vanilla_pos_{comp}_{model}", model, ["coverage"])(fn)

        def fn_h(g, model=model, mi=mi):
            d = mpf.DIMS[model]
            B, T, U = 2, 5 + mi, 1 + mi
            base, src = g.ids(B, T), g.ids(B, T)
            return dict(reps=[R(d["L"] - 1, "head_attention_value_output", unit="h", n=U)], base=base,
                        sources=[src], ul=SB([g.rows(B, U, d["H"])], [g.rows(B, U, d["H"])]),
                        desc=f"Vanilla unit h on head_attention_value_output, {U} head(s), all positions")
        pvcase(f"vanilla_h_head_attention_value_output_{model}", model, ["coverage"])(fn_h)

        def fn_hp(g, model=model, mi=mi):
            d = mpf.DIMS[model]
            B, Tb, Ts = 2, 6, 5 + 2 * mi
            hs, hb = g.rows(B, 2, d["H"]), g.rows(B, 2, d["H"])
            ps, pb = g.rows(B, 2, Ts), g.rows(B, 2, Tb)
            return dict(reps=[R(mi, "head_attention_value_output", unit="h.pos", n=2)], base=g.ids(B, Tb),
                        sources=[g.ids(B, Ts)], ul=SB([[hs, ps]], [[hb, pb]]),
                        desc="Vanilla unit h.pos on head_attention_value_output: 2 heads x 2 positions")
        pvcase(f"vanilla_hpos_head_attention_value_output_{model}", model, ["coverage"])(fn_hp)


_coverage()


@pvcase("addition_mlp_activation_b3", "par_rot25")
def _(g):
    base, src = g.ids(3, 5), g.ids(3, 4)
    s, b = pos_locs(g, 3, 1, 4, 5)
    return dict(reps=[R(1, "mlp_activation", t="Addition")], base=base, sources=[src], ul=SB([s], [b]),
                desc="Addition on mlp_activation (intermediate_size 96), B=3, shorter source")


@pvcase("subtraction_attention_output_u3", "seq_rot100")
def _(g):
    base, src = g.ids(2, 7), g.ids(2, 5)
    s, b = pos_locs(g, 2, 3, 5, 7)
    return dict(reps=[R(1, "attention_output", n=3, t="Subtraction")], base=base, sources=[src],
                ul=SB([s], [b]), oo=True, desc="Subtraction on attention_output, U=3")


@pvcase("zero_block_output_shorthand_base_int", "seq_rot100", ["shorthand"])
def _(g):
    return dict(reps=[R(2, "block_output", t="Zero")], base=g.ids(2, 6), sources=None, ul={"base": 3},
                form="dict", desc="Zero on block_output with the {'base': 3} shorthand")


@pvcase("collect_mlp_input_u2", "par_rot25")
def _(g):
    base = g.ids(2, 6)
    return dict(reps=[R(1, "mlp_input", n=2, t="Collect")], base=base, sources=None,
                ul=SB(None, [g.rows(2, 2, 6)]), oo=True,
                desc="Collect on mlp_input (parallel residual: ln2 of the block input), U=2")


@pvcase("collect_hpos_head_attention_value_output", "seq_rot100")
def _(g):
    return dict(reps=[R(0, "head_attention_value_output", unit="h.pos", n=2, t="Collect")],
                base=g.ids(2, 6), sources=None, ul=SB(None, [[g.rows(2, 2, 6), g.rows(2, 3, 6)]]),
                desc="Collect unit h.pos (2 heads x 3 positions): (B, Uh, Up, hd)")


@pvcase("skip_block_output", "par_rot25", ["skip"])
def _(g):
    base = g.ids(2, 6)
    locs = g.rows(2, 2, 6)
    return dict(reps=[R(0, "block_output", n=2, t="Skip")], base=base, sources=[base], ul=SB([locs], [locs]),
                desc="Skip on block_output (source = base): the block is the identity at 2 positions")


@pvcase("skip_mlp_output", "seq_rot100", ["skip"])
def _(g):
    base = g.ids(2, 6)
    locs = g.rows(2, 1, 6)
    return dict(reps=[R(1, "mlp_output", t="Skip")], base=base, sources=[base], ul=SB([locs], [locs]),
                oo=True, desc="Skip on mlp_output: the MLP output becomes its input (ln2 output)")


@pvcase("skip_attn_neox_reads_attention_input", "par_rot25", ["skip"])
def _(g):
    base = g.ids(2, 7)
    locs = g.rows(2, 2, 7)
    return dict(reps=[R(1, "attention_output", n=2, t="Skip")], base=base, sources=[base],
                ul=SB([locs], [locs]),
                desc="Skip on attention_output: pyvene hooks the whole GPTNeoXAttention module, so the "
                     "skipped value is its INPUT, attention_input (unlike GPT-2, where it is a no-op)")


@pvcase("noise_attention_value_output_u4", "par_rot25")
def _(g):
    return dict(reps=[R(0, "attention_value_output", t="Noise")], base=g.ids(2, 7), sources=None,
                ul=SB(None, [g.rows(2, 4, 7)]),
                desc="Noise on attention_value_output, U=4 per-example")


@pvcase("lambda_half_base_plus_source_mlp_output", "seq_rot100", ["lambda"])
def _(g):
    base, src = g.ids(2, 6), g.ids(2, 5)
    s, b = pos_locs(g, 2, 2, 5, 6)
    return dict(reps=[R(2, "mlp_output", n=2, cb="half_base_plus_source")], base=base, sources=[src],
                ul=SB([s], [b]), form="dict", desc="Lambda half_base_plus_source on mlp_output, U=2")


@pvcase("const_addition_block_input", "par_rot25", ["const_source"])
def _(g):
    return dict(reps=[R(1, "block_input", n=2, t="Addition", const=g.vec(64))], base=g.ids(2, 6),
                sources=None, ul=SB(None, [g.rows(2, 2, 6)]), form="dict",
                desc="Addition of a constant float32 vector on block_input, U=2")


@pvcase("subspaces_ragged_attention_input", "seq_rot100", ["subspaces"])
def _(g):
    base, src = g.ids(2, 6), g.ids(2, 7)
    s, b = pos_locs(g, 2, 2, 7, 6)
    return dict(reps=[R(2, "attention_input", n=2)], base=base, sources=[src], ul=SB([s], [b]),
                subspaces=[[[5, 0, 9], [12, 13, 14, 47, 2]]], desc="ragged per-example raw subspaces")


@pvcase("partition_ids_mlp_output", "par_rot25", ["subspaces"])
def _(g):
    base, src = g.ids(2, 6), g.ids(2, 6)
    s, b = pos_locs(g, 2, 1, 6, 6)
    return dict(reps=[R(0, "mlp_output", part=[[0, 16], [16, 40], [40, 64]])], base=base, sources=[src],
                ul=SB([s], [b]), subspaces=[[[2, 0], [2, 0]]],
                desc="subspace_partition [[0,16],[16,40],[40,64]], subspaces pick parts 2 and 0")


@pvcase("group_key_three_one_source", "seq_rot100", ["multi", "group_key"])
def _(g):
    base, s0 = g.ids(2, 7), g.ids(2, 6)
    locs = [pos_locs(g, 2, 1, 6, 7) for _ in range(3)]
    return dict(reps=[R(0, "attention_output", gk=0, t="Addition"), R(1, "mlp_input", gk=0),
                      R(2, "block_input", gk=0, t="Subtraction")],
                base=base, sources=[s0], ul=SB([l[0] for l in locs], [l[1] for l in locs]),
                form="dict", desc="three interventions in group 0, one source forward")


@pvcase("two_sources_attention_value_and_block_output", "par_rot25", ["multi"])
def _(g):
    base, s0, s1 = g.ids(2, 6), g.ids(2, 6), g.ids(2, 8)
    a, b = pos_locs(g, 2, 1, 6, 6)
    c, d = pos_locs(g, 2, 2, 8, 6)
    return dict(reps=[R(0, "attention_value_output"), R(1, "block_output", n=2, t="Addition")],
                base=base, sources=[s0, s1], ul=SB([a, c], [b, d]), oo=True,
                desc="two groups, sources of different lengths (one runs first)")


@pvcase("serial_two", "seq_rot100", ["serial"])
def _(g):
    base, s0, s1 = g.ids(2, 6), g.ids(2, 7), g.ids(2, 5)
    return dict(reps=[R(0, "block_output"), R(2, "mlp_output")], mode="serial", base=base, sources=[s0, s1],
                ul={"source_0->source_1": ([g.rows(2, 1, 7)], [g.rows(2, 1, 5)]),
                    "source_1->base": ([g.rows(2, 1, 5)], [g.rows(2, 1, 6)])},
                desc="serial: source_0 -(L0 block_output)-> source_1 -(L2 mlp_output)-> base")


@pvcase("link_key_addition", "par_rot25", ["link_key"])
def _(g):
    base, s0, s1 = g.ids(2, 6), g.ids(2, 7), g.ids(2, 6)
    a, b = pos_locs(g, 2, 1, 7, 6)
    c, d = pos_locs(g, 2, 1, 6, 6)
    return dict(reps=[R(0, "block_output", t="Addition", lk=0), R(1, "block_output", t="Addition", lk=0)],
                base=base, sources=[s0, s1], ul=SB([a, c], [b, d]),
                desc="linked Additions: the 2nd one's base is the 1st one's result")


@pvcase("pad_left_base", "seq_rot100", ["padding"])
def _(g):
    base = g.ids(2, 7, lengths=[7, 4], side="left")
    src = g.ids(2, 5)
    s = g.rows(2, 2, 5)
    b = g.rows(2, 2, 0, allowed=[list(range(7)), list(range(3, 7))])
    return dict(reps=[R(1, "mlp_output", n=2)], base=base, sources=[src], ul=SB([s], [b]), oo=True,
                desc="LEFT-padded base (lengths 7,4; default position ids), locations on real tokens")


@pvcase("pad_right_source", "par_rot25", ["padding"])
def _(g):
    base = g.ids(2, 6)
    src = g.ids(2, 7, lengths=[4, 7])
    s = g.rows(2, 1, 0, allowed=[list(range(4)), list(range(7))])
    b = g.rows(2, 1, 6)
    return dict(reps=[R(1, "attention_value_output", t="Addition")], base=base, sources=[src],
                ul=SB([s], [b]), desc="right-padded source (lengths 4,7) with attention_mask")


@pvcase("unit_locations_none_zero_mlp_activation", "seq_rot100", ["ul_none"])
def _(g):
    return dict(reps=[R(1, "mlp_activation", t="Zero")], base=g.ids(1, 6), sources=None, ul=None,
                desc="unit_locations=None with Zero: the whole mlp_activation of layer 1 is zeroed")


def run_pyvene_cases():
    load_pv_models()
    cases_dir = os.path.join(PV_ROOT, "cases")
    if os.path.exists(cases_dir):
        shutil.rmtree(cases_dir)
    os.makedirs(cases_dir)
    names = [c["name"] for c in PV_CASES]
    assert len(set(names)) == len(names)
    summary = collections.Counter()
    manifest = [mpf.run_case(i, spec, summary) for i, spec in enumerate(PV_CASES)]
    with open(os.path.join(PV_ROOT, "manifest.json"), "w") as f:
        f.write("[\n" + ",\n".join("  " + json.dumps(m) for m in manifest) + "\n]\n")
    print(f"\n{len(manifest)} pyvene GPT-NeoX cases")
    for k in sorted(summary):
        print(f"   {k:40s} {summary[k]:4d}")
    assert len(manifest) >= 20


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    assert mpf.pv_version() == "0.1.8", mpf.pv_version()
    print(f"python {platform.python_version()} torch {torch.__version__} transformers "
          f"{transformers.__version__} pyvene {mpf.pv_version()} numpy {np.__version__}")
    os.makedirs(OUT_ROOT, exist_ok=True)
    for spec in MODELS:
        build(spec)
    run_pyvene_cases()
    total = g2.dir_size(OUT_ROOT) + g2.dir_size(PV_ROOT)
    print(f"size of tests/fixtures/neox + pyvene_neox: {total} bytes ({total / 1024 / 1024:.2f} MiB)")
    assert total < SIZE_LIMIT, "fixtures exceed the size budget"


if __name__ == "__main__":
    main()
