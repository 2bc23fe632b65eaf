#!/usr/bin/env python
"""Generate GPT-2 reference fixtures for cvene from Hugging Face transformers.

Writes tests/fixtures/gpt2/<NAME>/{model/, reference.safetensors} for a few tiny,
randomly initialised GPT-2 models.  Each reference.safetensors holds, per case,
the input ids / attention mask, the logits and every intervention point that
pyvene 0.1.8 exposes for GPT-2, captured with forward (pre-)hooks at exactly the
modules pyvene hooks.

The reference is always computed in float32 by a model *re-loaded from the
saved checkpoint* (from_pretrained(..., torch_dtype=float32)), so for the fp16 /
bf16 checkpoints it is the f32 computation on the rounded weights, which is what
the C engine does.

Usage (from the repository root):
    python -m venv v && v/bin/pip install -r tools/requirements.txt
    v/bin/python tools/make_gpt2_fixtures.py

The output is deterministic: re-running yields bit-identical tensors.
"""

import json
import os
import platform
import shutil

import numpy as np
import safetensors
import torch
import transformers
from safetensors import safe_open
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_ROOT = os.path.join(REPO, "tests", "fixtures", "gpt2")
SIZE_LIMIT = 5 * 1024 * 1024

COMPONENTS = [
    "block_input",
    "block_output",
    "attention_input",
    "query_output",
    "key_output",
    "value_output",
    "head_query_output",
    "head_key_output",
    "head_value_output",
    "attention_weight",
    "attention_value_output",
    "head_attention_value_output",
    "attention_output",
    "mlp_input",
    "mlp_activation",
    "mlp_output",
]

# (B, T, lengths, padding side); padding_side None means no padding.
CASES = [
    dict(B=2, T=7, lengths=[7, 7], side=None),
    dict(B=3, T=9, lengths=[9, 5, 7], side="right"),
    dict(B=2, T=8, lengths=[8, 5], side="left"),
]

MODELS = [
    dict(
        name="small",
        seed=1001,
        cls="lm",
        save_dtype=torch.float32,
        shard=None,
        config=dict(n_embd=64, n_head=4, n_layer=2, n_inner=None, vocab_size=320,
                    n_positions=32, activation_function="gelu_new", initializer_range=0.1),
        note="f32 checkpoint; reference = f32 eager forward of the checkpoint as saved.",
    ),
    dict(
        name="inner_erf",
        seed=1002,
        cls="lm",
        save_dtype=torch.float32,
        shard=None,
        config=dict(n_embd=48, n_head=6, n_layer=3, n_inner=72, vocab_size=300,
                    n_positions=24, activation_function="gelu",
                    scale_attn_by_inverse_layer_idx=True, initializer_range=0.08),
        note="f32 checkpoint, n_inner=72, erf gelu, scale_attn_by_inverse_layer_idx; "
             "reference = f32 eager forward of the checkpoint as saved.",
    ),
    dict(
        name="sharded",
        seed=1003,
        cls="lm",
        save_dtype=torch.float32,
        shard="40KB",
        config=dict(n_embd=32, n_head=2, n_layer=3, vocab_size=256, n_positions=16,
                    initializer_range=0.1),
        note="f32 checkpoint saved with max_shard_size=40KB (index.json + shards); "
             "reference = f32 eager forward of the checkpoint as saved.",
    ),
    dict(
        name="fp16",
        seed=1004,
        cls="lm",
        save_dtype=torch.float16,
        shard=None,
        config=dict(n_embd=64, n_head=8, n_layer=2, vocab_size=288, n_positions=32,
                    initializer_range=0.1),
        note="checkpoint saved as F16 (model.half()); reference = f32 eager forward with the "
             "fp16-rounded weights upcast to f32 (model.half().float()), i.e. weights converted "
             "to f32 and all compute in f32.",
    ),
    dict(
        name="bf16_base",
        seed=1005,
        cls="base",
        save_dtype=torch.bfloat16,
        shard=None,
        config=dict(n_embd=40, n_head=5, n_layer=2, vocab_size=260, n_positions=20,
                    initializer_range=0.1),
        note="bare GPT2Model (no transformer. prefix, no lm_head) saved as BF16; reference = f32 "
             "eager forward with the bf16-rounded weights upcast to f32; logits = "
             "last_hidden_state @ wte.weight.T (tied head), computed in f32.",
    ),
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
    return ids, mask


def split_heads(x, H):
    B, T, C = x.shape
    return x.reshape(B, T, H, C // H).permute(0, 2, 1, 3)


def first_hidden(args, kwargs):
    if len(args) > 0:
        return args[0]
    return kwargs["hidden_states"]


def capture(model, body, ids, mask, cfg):
    """Run the forward, return (logits, {component.layer: tensor})."""
    H = cfg.n_head
    C = cfg.n_embd
    caps = {}
    handles = []

    def put(key, t):
        assert key not in caps, f"hook fired twice: {key}"
        caps[key] = t.detach().clone().float().contiguous()

    for l, blk in enumerate(body.h):
        def blk_pre(mod, args, kwargs, l=l):
            put(f"block_input.{l}", first_hidden(args, kwargs))

        def blk_post(mod, args, kwargs, out, l=l):
            put(f"block_output.{l}", out[0])

        def attn_pre(mod, args, kwargs, l=l):
            put(f"attention_input.{l}", first_hidden(args, kwargs))

        def attn_post(mod, args, kwargs, out, l=l):
            put(f"attention_output.{l}", out[0])

        def cattn_post(mod, args, out, l=l):
            assert out.shape[-1] == 3 * C
            q, k, v = out.split(C, dim=-1)
            put(f"query_output.{l}", q)
            put(f"key_output.{l}", k)
            put(f"value_output.{l}", v)
            put(f"head_query_output.{l}", split_heads(q, H))
            put(f"head_key_output.{l}", split_heads(k, H))
            put(f"head_value_output.{l}", split_heads(v, H))

        def drop_pre(mod, args, kwargs, l=l):
            put(f"attention_weight.{l}", args[0] if args else kwargs["input"])

        def cproj_pre(mod, args, kwargs, l=l):
            x = args[0] if args else kwargs["x"]
            put(f"attention_value_output.{l}", x)
            put(f"head_attention_value_output.{l}", split_heads(x, H))

        def mlp_pre(mod, args, kwargs, l=l):
            put(f"mlp_input.{l}", first_hidden(args, kwargs))

        def mlp_post(mod, args, out, l=l):
            put(f"mlp_output.{l}", out)

        def act_post(mod, args, out, l=l):
            put(f"mlp_activation.{l}", out)

        handles += [
            blk.register_forward_pre_hook(blk_pre, with_kwargs=True),
            blk.register_forward_hook(blk_post, with_kwargs=True),
            blk.attn.register_forward_pre_hook(attn_pre, with_kwargs=True),
            blk.attn.register_forward_hook(attn_post, with_kwargs=True),
            blk.attn.c_attn.register_forward_hook(cattn_post),
            blk.attn.attn_dropout.register_forward_pre_hook(drop_pre, with_kwargs=True),
            blk.attn.c_proj.register_forward_pre_hook(cproj_pre, with_kwargs=True),
            blk.mlp.register_forward_pre_hook(mlp_pre, with_kwargs=True),
            blk.mlp.register_forward_hook(mlp_post),
            blk.mlp.act.register_forward_hook(act_post),
        ]
    try:
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, use_cache=False)
            if isinstance(model, GPT2LMHeadModel):
                logits = out.logits
                last_hidden = None
            else:
                last_hidden = out.last_hidden_state
                logits = last_hidden @ model.wte.weight.T
    finally:
        for h in handles:
            h.remove()
    return logits.float().contiguous(), caps, last_hidden


def check_capture(body, cfg, caps, logits, ids, mask, is_lm, model):
    """Consistency checks so that a hook on the wrong module is caught."""
    B, T = ids.shape
    C, H, L = cfg.n_embd, cfg.n_head, cfg.n_layer
    D = C // H
    I = cfg.n_inner if cfg.n_inner is not None else 4 * C
    exp_shapes = {
        "block_input": (B, T, C), "block_output": (B, T, C), "attention_input": (B, T, C),
        "query_output": (B, T, C), "key_output": (B, T, C), "value_output": (B, T, C),
        "head_query_output": (B, H, T, D), "head_key_output": (B, H, T, D),
        "head_value_output": (B, H, T, D), "attention_weight": (B, H, T, T),
        "attention_value_output": (B, T, C), "head_attention_value_output": (B, H, T, D),
        "attention_output": (B, T, C), "mlp_input": (B, T, C), "mlp_activation": (B, T, I),
        "mlp_output": (B, T, C),
    }
    assert len(caps) == len(COMPONENTS) * L, (len(caps), len(COMPONENTS) * L)
    for comp in COMPONENTS:
        for l in range(L):
            t = caps[f"{comp}.{l}"]
            assert tuple(t.shape) == exp_shapes[comp], (comp, l, tuple(t.shape), exp_shapes[comp])
            assert t.dtype == torch.float32
            assert torch.isfinite(t).all(), (comp, l)
    assert torch.isfinite(logits).all()
    assert logits.shape == (B, T, cfg.vocab_size)

    def close(a, b, what, atol=1e-5, rtol=1e-5):
        assert torch.allclose(a, b, atol=atol, rtol=rtol), (what, (a - b).abs().max().item())

    with torch.no_grad():
        # embeddings feed block 0 (default position ids 0..T-1)
        pos = torch.arange(T)
        emb = body.wte(ids) + body.wpe(pos)[None]
        assert torch.equal(caps["block_input.0"], emb), "block_input.0 != wte+wpe"
        for l in range(L):
            blk = body.h[l]
            g = lambda c: caps[f"{c}.{l}"]
            if l + 1 < L:
                assert torch.equal(g("block_output"), caps[f"block_input.{l + 1}"]), l
            assert torch.equal(g("attention_input"), blk.ln_1(g("block_input")))
            qkv = blk.attn.c_attn(g("attention_input"))
            assert torch.equal(torch.cat([g("query_output"), g("key_output"), g("value_output")], -1), qkv)
            for c in ("query", "key", "value"):
                hq = g(f"head_{c}_output")
                assert torch.equal(hq.permute(0, 2, 1, 3).reshape(B, T, C), g(f"{c}_output"))
            # attention weights are a softmax over keys, causal
            aw = g("attention_weight")
            close(aw.sum(-1), torch.ones(B, H, T), "softmax rows")
            # valid (non-pad) queries: zero weight on future keys and on padded keys.
            # (Padded query rows may put weight anywhere: all their scores are ~finfo.min.)
            qv = mask.bool()[:, None, :, None]
            causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)[None, None]
            assert (aw.masked_select(qv & causal) == 0).all(), "attention_weight not causal"
            kpad = ~mask.bool()[:, None, None, :]
            assert (aw.masked_select(qv & kpad) == 0).all(), "padding key got weight"
            av = torch.matmul(aw, g("head_value_output"))
            close(av, g("head_attention_value_output"), "aw @ v")
            assert torch.equal(g("head_attention_value_output").permute(0, 2, 1, 3).reshape(B, T, C),
                               g("attention_value_output"))
            close(blk.attn.c_proj(g("attention_value_output")), g("attention_output"), "attn c_proj")
            h1 = g("attention_output") + g("block_input")
            assert torch.equal(g("mlp_input"), blk.ln_2(h1))
            assert g("mlp_activation").shape[-1] == I
            pre_act = blk.mlp.c_fc(g("mlp_input"))
            assert torch.equal(g("mlp_activation"), blk.mlp.act(pre_act))
            assert torch.equal(g("mlp_output"), blk.mlp.c_proj(g("mlp_activation")))
            assert torch.equal(g("block_output"), h1 + g("mlp_output"))
        final = body.ln_f(caps[f"block_output.{L - 1}"])
        ref_logits = model.lm_head(final) if is_lm else final @ body.wte.weight.T
        close(ref_logits, logits, "logits")


def save_reference(tensors, path, metadata):
    """Write a safetensors file with a canonical (sorted) header so the bytes are
    reproducible.  safetensors.torch.save_file writes the same tensor data, but
    its __metadata__ key order varies from run to run (hash map)."""
    dt = {torch.float32: "F32", torch.int32: "I32"}
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
    # round-trip through the safetensors library
    with safe_open(path, framework="pt") as f:
        assert f.metadata() == metadata
        assert sorted(f.keys()) == sorted(tensors)
        for name in tensors:
            got = f.get_tensor(name)
            assert got.dtype == tensors[name].dtype and torch.equal(got, tensors[name]), name


def checkpoint_listing(model_dir):
    files = sorted(f for f in os.listdir(model_dir) if f.endswith(".safetensors"))
    rows = []
    for f in files:
        with open(os.path.join(model_dir, f), "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            hdr = json.loads(fh.read(n))
        for k in sorted(hdr):
            if k == "__metadata__":
                continue
            rows.append((f, k, hdr[k]["dtype"], tuple(hdr[k]["shape"])))
    return files, rows


def dir_size(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def perturb_default_init(model, seed, std):
    """GPT-2's _init_weights sets every bias to 0 and every LayerNorm weight to 1,
    which would let an engine that ignores biases / LN affine params pass.  Give
    them deterministic random values instead."""
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 * std))
            elif name.endswith(".weight") and ("ln_" in name.split(".")[-2]):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
    for name, p in model.named_parameters():
        if name.endswith(".bias") or "ln_" in name.split(".")[-2]:
            assert not torch.all(p == 0) and not torch.all(p == 1), name


def build(spec):
    name = spec["name"]
    out_dir = os.path.join(OUT_ROOT, name)
    model_dir = os.path.join(out_dir, "model")
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(model_dir)

    torch.manual_seed(spec["seed"])
    cfg = GPT2Config(**spec["config"], attn_implementation="eager")
    Cls = GPT2LMHeadModel if spec["cls"] == "lm" else GPT2Model
    model = Cls(cfg).eval()
    perturb_default_init(model, spec["seed"], cfg.initializer_range)
    rounded = model.to(spec["save_dtype"])
    kw = dict(safe_serialization=True)
    if spec["shard"] is not None:
        kw["max_shard_size"] = spec["shard"]
    rounded.save_pretrained(model_dir, **kw)
    expected_f32 = {k: v.detach().float().clone() for k, v in rounded.state_dict().items()}
    del model, rounded

    files, rows = checkpoint_listing(model_dir)
    if spec["shard"] is not None:
        assert os.path.exists(os.path.join(model_dir, "model.safetensors.index.json"))
        assert len(files) >= 3, f"expected >= 3 shards, got {files}"
    else:
        assert files == ["model.safetensors"], files
    want_dtype = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}[spec["save_dtype"]]
    for _, k, dt, _ in rows:
        assert dt == want_dtype, (k, dt)
    if spec["cls"] == "base":
        assert all(not k.startswith("transformer.") and not k.startswith("lm_head") for _, k, _, _ in rows)

    print(f"== {name}: checkpoint files {files}")
    for f, k, dt, shp in rows:
        print(f"   {f:40s} {k:32s} {dt:5s} {list(shp)}")

    # Reference model: reload what is on disk, in f32, eager attention.
    ref = Cls.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager").eval()
    assert ref.config._attn_implementation == "eager"
    sd = ref.state_dict()
    for k, v in expected_f32.items():
        assert sd[k].dtype == torch.float32
        assert torch.equal(sd[k], v), f"reloaded weight differs: {k}"
    body = ref.transformer if spec["cls"] == "lm" else ref
    if spec["cls"] == "lm":
        assert ref.lm_head.weight.data_ptr() == body.wte.weight.data_ptr(), "lm_head not tied"

    tensors = {}
    for ci, case in enumerate(CASES):
        ids, mask = make_case_inputs(case, cfg.vocab_size, seed=spec["seed"] * 100 + ci)
        assert ids.shape[1] <= cfg.n_positions
        logits, caps, _ = capture(ref, body, ids, mask, ref.config)
        check_capture(body, ref.config, caps, logits, ids, mask, spec["cls"] == "lm", ref)
        tensors[f"case{ci}.input_ids"] = ids.to(torch.int32).contiguous()
        tensors[f"case{ci}.attention_mask"] = mask.to(torch.int32).contiguous()
        tensors[f"case{ci}.logits"] = logits
        for k, v in caps.items():
            tensors[f"case{ci}.{k}"] = v

    meta = {
        "n_cases": str(len(CASES)),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
        "model": name,
        "note": spec["note"] + " attn_implementation=eager, model.eval(), torch.no_grad(), no "
                "position_ids passed (default 0..T-1), pad id 0; hooks placed as in pyvene 0.1.8. "
                "Values at padded positions are whatever transformers produced. Biases and LayerNorm "
                "weights were re-drawn randomly after init (GPT-2 init makes them 0/1).",
    }
    save_reference(tensors, os.path.join(out_dir, "reference.safetensors"), meta)
    print(f"   reference: {len(tensors)} tensors, {os.path.getsize(os.path.join(out_dir, 'reference.safetensors'))} bytes")


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT_ROOT, exist_ok=True)
    print(f"python {platform.python_version()} torch {torch.__version__} transformers "
          f"{transformers.__version__} numpy {np.__version__} safetensors {safetensors.__version__}")
    for spec in MODELS:
        build(spec)
    total = dir_size(os.path.join(REPO, "tests", "fixtures"))
    print(f"total size of tests/fixtures: {total} bytes ({total / 1024 / 1024:.2f} MiB)")
    assert total < SIZE_LIMIT, "fixtures exceed the size budget"


if __name__ == "__main__":
    main()
