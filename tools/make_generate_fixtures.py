#!/usr/bin/env python
"""Generate greedy-generation fixtures for cvene (tests/fixtures/generate/).

What:
    tests/fixtures/generate/gpt2/model/          tiny random GPT2LMHeadModel (f32, save_pretrained)
    tests/fixtures/generate/neox/model/          tiny random GPTNeoXForCausalLM (f32, rotary_pct 0.25,
                                                 parallel residual)
    tests/fixtures/generate/<case>.safetensors   per-step raw logits of one case, tensor "logits",
                                                 (B, steps, V) f32 (transformers' output_logits)
    tests/fixtures/generate/manifest.json        every case: inputs, ids, config/request, output ids
    tests/fixtures/generate/README.md            (hand-written, not generated)

Two kinds of case, on both models:

  "greedy": transformers' own GenerationMixin.generate (do_sample=False, num_beams=1,
      output_logits=True, return_dict_in_generate=True, pad_token_id and eos_token_id passed
      explicitly) on a batch of 3 LEFT-padded prompts (lengths 5, 9, 3, attention_mask given,
      transformers' convention) and on one unpadded prompt. eos_token_id is null (no stopping),
      or a token chosen programmatically so that exactly ONE row emits it before the end (that
      row then gets pad_token_id for the remaining steps while the others run on), or, for the
      batch-1 case, a token the row emits early so that generation stops before max_new_tokens.

  "pyvene": pyvene 0.1.8 IntervenableModel(config, model).generate(base, sources=...,
      unit_locations=..., intervene_on_prompt=..., max_new_tokens=16, output_logits=True,
      return_dict_in_generate=True, pad_token_id=..., eos_token_id=None, do_sample=False) on the
      same left-padded batch: constant-vector steering on every call, steering on generated
      steps only, a prompt-only interchange from sources, a source-fed addition on every
      generated step, and subtraction / zeroing of attention_output on every call.
      Added later (after every case above, which they leave byte-identical):
      - gpt2 only, 8 new tokens: CollectIntervention during generate (every generated step at
        block_output L1; the prompt call at one real position per row at mlp_output L0). The
        case file also holds "collected.K", pyvene's K-th collected tensor as returned
        (((None, [tensor, ...]), GenerateDecoderOnlyOutput)), and the manifest n_collected.
      - a trained LowRankRotatedSpaceIntervention (tests/fixtures/training/model/
        das_lowrank_r1_l1, rebuilt with IntervenableModel.load) on tests/fixtures/gpt2/small/model,
        12 new tokens: prompt only with that case's unit locations, and every generated step at
        position 0 with the source read once. Manifest: model_dir, weights_dir (relative to
        tests/fixtures) and the saved config.json as config.
      - gpt2 only, 8 new tokens: SERIAL mode, Vanilla group 0 at block_output L0 and group 1 at
        block_output L1, two unpadded sources (source_0 -> source_1 -> base), one position per
        example: the prompt only (intervene_on_prompt true), and every generated step at position 0
        (intervene_on_prompt false; pyvene's call gate then also skips group 0's setter in
        source_1's forward, so source_0 has no effect). Manifest: serial_source_setters.

Why: a generation loop (KV cache, attention mask growing by one column per step, position ids
derived from the mask, finished rows padded) and pyvene's call-counting rule for interventions
during generation are both easy to get subtly wrong; these fixtures pin transformers' and
pyvene's exact numbers.

Every pyvene case is checked twice before it is written (a mismatch aborts the script):
  1. exact: transformers' generate re-run with a plain forward hook at the same module, applying
     the intervention on the forward calls we claim pyvene intervenes on (all calls / the first
     call only / every call but the first) -> sequences and logits bit-identical to pyvene's;
  2. semantic: a cache-free greedy loop (full forward over the whole sequence every step,
     position_ids = cumsum(mask) - 1, pads at 1, as transformers derives them) whose hook
     intervenes at the ABSOLUTE positions the rule implies (every position / the prompt
     positions listed / every generated position) -> the same token ids, logits within 1e-4.
Every greedy case is checked against the same cache-free loop (ids equal, logits within 1e-4).
Collect cases: ids and logits bit-identical to plain generate; each collected tensor bit-identical
to what a plain forward hook records on the claimed call (same shape), and within 1e-4 of a
cache-free forward read at the absolute position. Trained cases: as the pyvene cases (the hook
applies b + (s W - b W) W^T with W from the saved tensors through torch's own orthogonal
parametrization), plus the calls pyvene's intervention ran on, observed with counters. Serial
cases: the chain rebuilt with plain hooks (source_0's L0, source_1's forward with or without group
0's write, its L1 value put into the base's L1 on the claimed calls) -> bit-identical; the other
choice for group 0, the other gates and group 0 left on during generate must not match (where they
can run); each intervention module's calls observed with counters; and the cache-free check.

All computation is f32 on CPU, attn_implementation="eager", one thread, deterministic
algorithms, models re-loaded from the saved checkpoint. Re-running yields identical bytes.

Usage (from the repository root):
    python -m venv v && v/bin/pip install -r tools/requirements.txt
    v/bin/python tools/make_generate_fixtures.py
"""

import collections
import copy
import json
import logging
import os
import platform
import shutil
import sys
import warnings

import numpy as np
import safetensors
import safetensors.torch
import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
import make_pyvene_fixtures as mpf  # noqa: E402  (R, pv_reps, dict_config, save_safetensors)
import pyvene as pv  # noqa: E402  (prints "nnsight is not detected", harmless)

OUT_ROOT = os.path.join(REPO, "tests", "fixtures", "generate")
SIZE_LIMIT = 3 * 1024 * 1024
GREEDY_NEW = 32
PYVENE_NEW = 16
LOGIT_TOL = 1e-4  # cache-free loop vs transformers' cached generate

MODELS = collections.OrderedDict([
    ("gpt2", dict(
        seed=3111, cls=GPT2LMHeadModel, pad=0, lo=1,
        config=GPT2Config(vocab_size=101, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                          initializer_range=0.35, bos_token_id=0, eos_token_id=0,
                          attn_implementation="eager"),
        modules=lambda m, l: dict(block_output=m.transformer.h[l], attention_output=m.transformer.h[l].attn,
                                  mlp_output=m.transformer.h[l].mlp),
        note="GPT2LMHeadModel vocab 101, n_positions 64, n_embd 32, 2 layers, 4 heads, "
             "initializer_range 0.35, bos = eos = 0, tied lm_head; biases and LayerNorm weights "
             "re-drawn randomly after init.")),
    ("neox", dict(
        seed=3122, cls=GPTNeoXForCausalLM, pad=1, lo=3,
        config=GPTNeoXConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=64, rotary_pct=0.25, use_parallel_residual=True,
                             max_position_embeddings=64, initializer_range=0.35, hidden_act="gelu",
                             bos_token_id=0, eos_token_id=2, attn_implementation="eager"),
        modules=lambda m, l: dict(block_output=m.gpt_neox.layers[l],
                                  attention_output=m.gpt_neox.layers[l].attention,
                                  mlp_output=m.gpt_neox.layers[l].mlp),
        note="GPTNeoXForCausalLM vocab 97, hidden 32, 2 layers, 4 heads (head_dim 8, 2 rotary "
             "dims), intermediate 64, rotary_pct 0.25, parallel residual, max_position_embeddings "
             "64, initializer_range 0.35, bos 0, eos 2, untied embed_out; biases and LayerNorm "
             "weights re-drawn randomly after init.")),
])


# --------------------------------------------------------------------------------------------
# models
def perturb(model, seed, std):
    """Random biases and LayerNorm weights (the default init makes them 0 / 1)."""
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.split(".")[-2]
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 * std))
            elif name.endswith(".weight") and ("ln" in leaf or "layernorm" in leaf or "layer_norm" in leaf):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))


def build_model(name, spec):
    model_dir = os.path.join(OUT_ROOT, name, "model")
    os.makedirs(model_dir)
    torch.manual_seed(spec["seed"])
    m = spec["cls"](copy.deepcopy(spec["config"])).eval()
    perturb(m, spec["seed"], spec["config"].initializer_range)
    m.save_pretrained(model_dir, safe_serialization=True)
    want = {k: v.detach().clone() for k, v in m.state_dict().items()}
    del m
    assert sorted(f for f in os.listdir(model_dir) if f.endswith(".safetensors")) == ["model.safetensors"]
    ref = spec["cls"].from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager").eval()
    assert ref.config._attn_implementation == "eager"
    sd = ref.state_dict()
    for k, v in want.items():
        assert sd[k].dtype == torch.float32 and torch.equal(sd[k], v), k
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


# --------------------------------------------------------------------------------------------
# inputs
def prompts(g, V, lo, pad, lengths):
    """len(lengths) prompts of those lengths, left-padded with pad to the longest."""
    T = max(lengths)
    ids = torch.full((len(lengths), T), pad, dtype=torch.int64)
    mask = torch.zeros((len(lengths), T), dtype=torch.int64)
    for b, n in enumerate(lengths):
        ids[b, T - n:] = torch.randint(lo, V, (n,), generator=g)
        mask[b, T - n:] = 1
    return ids, mask


def vec(g, D):
    """float32 vector with short exact decimal values (multiples of 1/256), scale ~1."""
    return (torch.randn(D, generator=g) * 256).round() / 256


# --------------------------------------------------------------------------------------------
# generation helpers
def gen_kwargs(pad, eos, n):
    return dict(do_sample=False, num_beams=1, max_new_tokens=n, output_logits=True,
                return_dict_in_generate=True, pad_token_id=pad, eos_token_id=eos)


def unpack(out):
    return out.sequences.clone(), torch.stack(out.logits, dim=1).detach().float().contiguous()


def hf_generate(model, ids, mask, pad, eos, n, hook=None):
    """transformers' generate; hook = (module, fn(h, call_index, T)) edits the module's output
    tensor in place on every forward call (call 0 is the prompt)."""
    handle = None
    if hook is not None:
        module, fn = hook
        calls = [0]
        T = ids.shape[1]

        def h(mod, args, out):
            t = out[0] if isinstance(out, tuple) else out
            fn(t, calls[0], T)
            calls[0] += 1
            return out
        handle = module.register_forward_hook(h)
    try:
        with torch.no_grad():
            out = model.generate(input_ids=ids.clone(), attention_mask=mask.clone(), **gen_kwargs(pad, eos, n))
    finally:
        if handle is not None:
            handle.remove()
    return unpack(out)


def nocache_greedy(model, ids, mask, pad, eos, n, hook=None):
    """Cache-free greedy loop: every step runs the whole sequence, position_ids derived from the
    mask as transformers does. hook = (module, fn(h, positions)) edits the module output for the
    absolute positions listed (here always 0..L-1)."""
    seq, m = ids.clone(), mask.clone()
    B = ids.shape[0]
    done = torch.zeros(B, dtype=torch.bool)
    logits = []
    handle = None
    cur = {}
    if hook is not None:
        module, fn = hook

        def h(mod, args, out):
            t = out[0] if isinstance(out, tuple) else out
            fn(t, list(range(cur["L"])))
            return out
        handle = module.register_forward_hook(h)
    try:
        with torch.no_grad():
            for _ in range(n):
                pos = m.cumsum(-1) - 1
                pos.masked_fill_(m == 0, 1)
                cur["L"] = seq.shape[1]
                lg = model(input_ids=seq, attention_mask=m, position_ids=pos, use_cache=False).logits[:, -1]
                logits.append(lg.float())
                tok = lg.argmax(-1)
                if eos is not None:
                    tok = torch.where(done, torch.full_like(tok, pad), tok)
                    done |= tok == eos
                seq = torch.cat([seq, tok[:, None]], 1)
                m = torch.cat([m, torch.ones((B, 1), dtype=m.dtype)], 1)
                if eos is not None and bool(done.all()):
                    break
    finally:
        if handle is not None:
            handle.remove()
    return seq, torch.stack(logits, 1)


def check_nocache(what, seq, logits, ref_seq, ref_logits):
    assert torch.equal(seq, ref_seq), (what, seq, ref_seq)
    assert logits.shape == ref_logits.shape, what
    d = (logits - ref_logits).abs().max().item()
    assert d <= LOGIT_TOL, (what, d)
    return d


def first_steps(new, tok):
    """per row: first step (0-based) at which tok was generated, or None"""
    out = []
    for row in new.tolist():
        out.append(row.index(tok) if tok in row else None)
    return out


# --------------------------------------------------------------------------------------------
# output
CASES = []
FILES = []


def save_case(entry, logits, meta_note, extra=None):
    """extra: more tensors for the case's file (the collected activations of the Collect cases)"""
    fname = entry["name"] + ".safetensors"
    meta = {"torch": torch.__version__, "transformers": transformers.__version__,
            "pyvene": pv_version(), "numpy": np.__version__, "case": entry["name"], "note": meta_note}
    tensors = {"logits": logits}
    if extra:
        assert "logits" not in extra
        tensors.update(extra)
    mpf.save_safetensors(tensors, os.path.join(OUT_ROOT, fname), meta)
    entry["logits"] = fname
    CASES.append(entry)


def base_entry(name, model_name, kind, ids, mask, pad, eos, n, seq, logits):
    e = collections.OrderedDict()
    e["name"] = name
    e["model"] = model_name
    e["kind"] = kind
    e["input_ids"] = ids.tolist()
    e["attention_mask"] = mask.tolist()
    e["pad_token_id"] = pad
    e["eos_token_id"] = eos
    e["max_new_tokens"] = n
    e["output_ids"] = seq.tolist()
    e["steps"] = logits.shape[1]
    return e


# --------------------------------------------------------------------------------------------
# greedy cases
def greedy_cases(name, spec, model, g):
    V, pad, lo = spec["config"].vocab_size, spec["pad"], spec["lo"]
    ids3, mask3 = prompts(g, V, lo, pad, [5, 9, 3])
    ids1, mask1 = prompts(g, V, lo, pad, [7])
    T3, T1 = ids3.shape[1], ids1.shape[1]

    # 1. batch 3, left padded, no eos
    seq, lg = hf_generate(model, ids3, mask3, pad, None, GREEDY_NEW)
    assert seq.shape == (3, T3 + GREEDY_NEW) and lg.shape == (3, GREEDY_NEW, V)
    assert torch.equal(seq[:, :T3], ids3)
    d = check_nocache(name, *nocache_greedy(model, ids3, mask3, pad, None, GREEDY_NEW), seq, lg)
    new = seq[:, T3:]
    for b in range(3):
        distinct = len(set(new[b].tolist()))
        assert distinct >= 8, f"{name}: row {b} greedy output too repetitive: {new[b].tolist()}"
    e = base_entry(f"{name}_greedy_b3_noeos", name, "greedy", ids3, mask3, pad, None, GREEDY_NEW, seq, lg)
    e["description"] = ("3 left-padded prompts (5, 9, 3 tokens), eos_token_id null: every row runs "
                        f"{GREEDY_NEW} steps.")
    e["finished"] = [None, None, None]
    save_case(e, lg, e["description"])
    print(f"{e['name']:34s} distinct tokens per row {[len(set(r)) for r in new.tolist()]}, "
          f"no-cache max |dlogit| {d:.2e}")
    noeos_seq, noeos_lg = seq, lg

    # 2. batch 3 with an eos that exactly one row emits early (and no other row ever emits)
    cands = []
    for tok in range(V):
        if tok == pad:
            continue
        f = first_steps(new, tok)
        hit = [b for b in range(3) if f[b] is not None]
        if len(hit) == 1 and 4 <= f[hit[0]] <= GREEDY_NEW - 8:
            cands.append((abs(f[hit[0]] - GREEDY_NEW // 2), tok, hit[0], f[hit[0]]))
    assert cands, f"{name}: no token finishes exactly one row early"
    _, eos, row, step = min(cands)
    seq, lg = hf_generate(model, ids3, mask3, pad, eos, GREEDY_NEW)
    assert seq.shape == (3, T3 + GREEDY_NEW) and lg.shape == (3, GREEDY_NEW, V)
    want = noeos_seq.clone()
    want[row, T3 + step + 1:] = pad
    assert torch.equal(seq, want), name
    others = [b for b in range(3) if b != row]
    assert torch.equal(lg[others], noeos_lg[others])          # other rows unaffected, bit for bit
    assert torch.equal(lg[row, :step + 1], noeos_lg[row, :step + 1])
    d = check_nocache(name, *nocache_greedy(model, ids3, mask3, pad, eos, GREEDY_NEW), seq, lg)
    e = base_entry(f"{name}_greedy_b3_eos", name, "greedy", ids3, mask3, pad, eos, GREEDY_NEW, seq, lg)
    e["description"] = (f"same prompts, eos_token_id {eos}: row {row} emits it at step {step} "
                        f"(output column {T3 + step}) and gets pad_token_id {pad} after it; rows "
                        f"{others} never emit it and run all {GREEDY_NEW} steps. The logits of row "
                        f"{row} after it finished are the model's logits on the pad tokens fed "
                        "(attention_mask 1 there), as transformers computes them.")
    e["finished"] = [step if b == row else None for b in range(3)]
    save_case(e, lg, e["description"])
    print(f"{e['name']:34s} eos {eos}: row {row} finishes at step {step}, no-cache max |dlogit| {d:.2e}")

    # 3. batch 1, no padding, eos emitted early -> generation stops early
    s1, l1 = hf_generate(model, ids1, mask1, pad, None, GREEDY_NEW)
    new1 = s1[0, T1:].tolist()
    stop = None
    for k in range(6, GREEDY_NEW - 6):
        if new1[k] != pad and new1[k] not in new1[:k]:
            stop = k
            break
    assert stop is not None, f"{name}: no early-stop token for the batch-1 case"
    eos1 = new1[stop]
    seq, lg = hf_generate(model, ids1, mask1, pad, eos1, GREEDY_NEW)
    assert torch.equal(seq, s1[:, :T1 + stop + 1]) and torch.equal(lg, l1[:, :stop + 1]), name
    d = check_nocache(name, *nocache_greedy(model, ids1, mask1, pad, eos1, GREEDY_NEW), seq, lg)
    e = base_entry(f"{name}_greedy_b1_stop", name, "greedy", ids1, mask1, pad, eos1, GREEDY_NEW, seq, lg)
    e["description"] = (f"1 unpadded prompt of {T1} tokens, eos_token_id {eos1}, first emitted at "
                        f"step {stop}: generation stops there, so output_ids has {T1 + stop + 1} "
                        f"columns and logits {stop + 1} steps (< max_new_tokens {GREEDY_NEW}).")
    e["finished"] = [stop]
    save_case(e, lg, e["description"])
    print(f"{e['name']:34s} eos {eos1}: stops after {stop + 1} steps, no-cache max |dlogit| {d:.2e}")
    return ids3, mask3


# --------------------------------------------------------------------------------------------
# pyvene cases
def pv_version():
    from importlib.metadata import version
    return version("pyvene")


def run_pyvene(model, reps, base, sources, ul, iop, pad, n):
    torch.manual_seed(0)
    ivm = pv.IntervenableModel(pv.IntervenableConfig(mpf.pv_reps(reps), mode="parallel"), model)
    with torch.no_grad():
        orig, out = ivm.generate(copy.deepcopy(base),
                                 sources=None if sources is None else [dict(s) for s in sources],
                                 unit_locations=copy.deepcopy(ul), intervene_on_prompt=iop,
                                 **gen_kwargs(pad, None, n))
    assert orig is None
    return unpack(out)


def pyvene_cases(name, spec, model, g, ids3, mask3):
    C = spec["config"].hidden_size if name == "neox" else spec["config"].n_embd
    V, pad, lo = spec["config"].vocab_size, spec["pad"], spec["lo"]
    mods = lambda l: spec["modules"](model, l)  # noqa: E731
    B, T = ids3.shape
    n = PYVENE_NEW
    base = {"input_ids": ids3, "attention_mask": mask3}
    clean_seq, clean_lg = hf_generate(model, ids3, mask3, pad, None, n)
    real = [[t for t in range(T) if mask3[b, t]] for b in range(B)]

    def capture(module, inputs):
        got = {}

        def h(mod, args, out):
            got["t"] = (out[0] if isinstance(out, tuple) else out).detach().clone()
        hd = module.register_forward_hook(h)
        with torch.no_grad():
            model(**inputs)
        hd.remove()
        return got["t"]

    specs = []

    # a) constant steering on every call
    v = vec(g, C)
    specs.append(dict(
        tag="steer_every_call", reps=[mpf.R(0, "block_output", t="Addition", const=v)],
        sources=None, ul=None, iop=True, site=("block_output", 0),
        calls="all", local=lambda h, v=v: h.add_(v), rule=lambda h, P, v=v: h.add_(v),
        desc="AdditionIntervention, constant source_representation, block_output L0, "
             "unit_locations null, intervene_on_prompt true: pyvene's call gate only applies when "
             "unit locations are given, so the vector is added on EVERY forward call (the prompt "
             "call and every generated step), at every position of the stream (pads included)."))

    # b) constant steering on generated steps only
    v = vec(g, C)
    specs.append(dict(
        tag="steer_steps_only", reps=[mpf.R(0, "block_output", t="Addition", const=v)],
        sources=None, ul=None, iop=False, site=("block_output", 0),
        calls="after_first", local=lambda h, v=v: h[:, 0].add_(v),
        rule=lambda h, P, v=v, T=T: [h[:, j].add_(v) for j, p in enumerate(P) if p >= T],
        desc="same with intervene_on_prompt false and unit_locations null: pyvene substitutes "
             "{\"base\": 0} and skips its first call, so the vector is added on every generated "
             "step (calls 1..n-1) at position 0 of the step's one-token input, i.e. at every "
             "generated token; the prompt is untouched."))

    # c) prompt-only interchange from sources (same padding as the base)
    src_ids = torch.where(mask3.bool(), torch.randint(lo, V, (B, T), generator=g), torch.full_like(ids3, pad))
    src = {"input_ids": src_ids, "attention_mask": mask3.clone()}
    sp = [[real[b][int(torch.randint(len(real[b]), (1,), generator=g))]] for b in range(B)]
    bp = [[real[b][int(torch.randint(len(real[b]), (1,), generator=g))]] for b in range(B)]
    act = capture(mods(1)["block_output"], src)
    pos_src = mask3.cumsum(-1) - 1
    pos_src.masked_fill_(mask3 == 0, 1)
    act_derived = capture(mods(1)["block_output"], dict(src, position_ids=pos_src))

    def local_c(h, act=act, sp=sp, bp=bp):
        for b in range(B):
            h[b, bp[b][0]] = act[b, sp[b][0]]

    def rule_c(h, P, act=act, sp=sp, bp=bp, T=T):
        for b in range(B):
            if bp[b][0] in P:
                h[b, P.index(bp[b][0])] = act[b, sp[b][0]]
    specs.append(dict(
        tag="interchange_prompt", reps=[mpf.R(1, "block_output")],
        sources=[src], ul={"sources->base": ([sp], [bp])}, iop=True, site=("block_output", 1),
        calls="first", local=local_c, rule=rule_c,
        alt=(None if torch.equal(act, act_derived) else
             lambda h, act=act_derived, sp=sp, bp=bp: local_c(h, act, sp, bp)),
        desc="VanillaIntervention at block_output L1 from a batch of 3 source prompts with the "
             "base's padding, one position per example (indices into the padded tensors), "
             "intervene_on_prompt true: only pyvene's first call (the prompt) is intervened. The "
             "source forward gets no position_ids, so its positions are 0..T-1 even in "
             "left-padded rows (unlike the base, whose position_ids generate derives from the mask)."))

    # d) source-fed addition on every generated step at the step's position 0
    Ts = 6
    src_d = {"input_ids": torch.randint(lo, V, (B, Ts), generator=g)}
    ks = [[int(torch.randint(Ts, (1,), generator=g))] for b in range(B)]
    act = capture(mods(0)["mlp_output"], src_d)
    sv = torch.stack([act[b, ks[b][0]] for b in range(B)])

    def rule_d(h, P, sv=sv, T=T):
        for j, p in enumerate(P):
            if p >= T:
                h[:, j].add_(sv)
    specs.append(dict(
        tag="add_source_steps", reps=[mpf.R(0, "mlp_output", t="Addition")],
        sources=[src_d], ul={"sources->base": ([ks], [[[0]] * B])}, iop=False,
        site=("mlp_output", 0), calls="after_first", local=lambda h, sv=sv: h[:, 0].add_(sv), rule=rule_d,
        desc=f"AdditionIntervention at mlp_output L0 from an unpadded source batch (T={Ts}, no "
             "attention_mask), source position k per example, base position 0, "
             "intervene_on_prompt false: the source runs ONCE before generation and the same "
             "source vector is added on every generated step (calls 1..n-1) at position 0 of the "
             "step's one-token input; the prompt is untouched."))

    # e1) subtraction of a constant from attention_output on every call
    v = vec(g, C)
    specs.append(dict(
        tag="subtract_attn_every_call", reps=[mpf.R(1, "attention_output", t="Subtraction", const=v)],
        sources=None, ul=None, iop=True, site=("attention_output", 1),
        calls="all", local=lambda h, v=v: h.sub_(v), rule=lambda h, P, v=v: h.sub_(v),
        desc="SubtractionIntervention, constant source_representation, attention_output L1, "
             "unit_locations null, intervene_on_prompt true: every call, every position."))

    # e2) zero attention_output on every call
    specs.append(dict(
        tag="zero_attn_every_call", reps=[mpf.R(0, "attention_output", t="Zero")],
        sources=None, ul=None, iop=True, site=("attention_output", 0),
        calls="all", local=lambda h: h.zero_(), rule=lambda h, P: h.zero_(),
        desc="ZeroIntervention, attention_output L0, unit_locations null, intervene_on_prompt true: "
             "the attention output is zeroed on every call at every position."))

    for s in specs:
        cname = f"{name}_pyvene_{s['tag']}"
        try:
            seq, lg = run_pyvene(model, s["reps"], base, s["sources"], s["ul"], s["iop"], pad, n)
        except Exception as ex:  # recorded in the README if it ever happens
            print(f"{cname:34s} pyvene generate FAILED: {type(ex).__name__}: {ex}; case dropped")
            continue
        assert seq.shape == (B, T + n) and lg.shape == (B, n, V), cname
        assert not torch.equal(seq, clean_seq) or not torch.equal(lg, clean_lg), f"{cname}: no effect"
        module = mods(s["site"][1])[s["site"][0]]
        # 1. exact: transformers generate + a hook doing what pyvene does inside an intervened
        #    call (call-local indices: the whole tensor, or the listed positions of this call's
        #    input), on the calls of the claimed gate
        gates = {"all": lambda c: True, "first": lambda c: c == 0, "after_first": lambda c: c > 0}

        def gated(gate, local=s["local"]):
            def fn(h, c, T):
                if gate(c):
                    local(h)
            return fn
        rs, rl = hf_generate(model, ids3, mask3, pad, None, n, hook=(module, gated(gates[s["calls"]])))
        assert torch.equal(rs, seq), (cname, rs, seq)
        assert torch.equal(rl, lg), (cname, (rl - lg).abs().max().item())
        # the other gates must NOT reproduce pyvene (so the check above means something)
        for other in gates:
            if other == s["calls"]:
                continue
            try:
                _, ol = hf_generate(model, ids3, mask3, pad, None, n, hook=(module, gated(gates[other])))
            except IndexError:  # listed prompt positions do not exist in a one-token step
                continue
            assert not torch.equal(ol, lg), (cname, "gate", other, "also matches")
        # (c) the source forward gets no position_ids (0..T-1 even in left-padded rows): the
        #     source read with mask-derived position_ids must NOT reproduce pyvene
        if s.get("alt") is not None:
            _, al = hf_generate(model, ids3, mask3, pad, None, n, hook=(module, gated(gates[s["calls"]], s["alt"])))
            assert not torch.equal(al, lg), (cname, "source with mask-derived positions also matches")
        # 2. semantic: cache-free loop, rule at absolute positions
        d = check_nocache(cname, *nocache_greedy(model, ids3, mask3, pad, None, n, hook=(module, s["rule"])),
                          seq, lg)

        e = base_entry(cname, name, "pyvene", ids3, mask3, pad, None, n, seq, lg)
        e["config"] = mpf.dict_config(s["reps"], "parallel")
        req = collections.OrderedDict()
        req["base"] = mpf.inputs_json(base)
        req["sources"] = None if s["sources"] is None else [mpf.inputs_json(x) for x in s["sources"]]
        req["unit_locations"] = mpf.jsonify(s["ul"])
        e["request"] = req
        e["intervene_on_prompt"] = s["iop"]
        e["intervened_calls"] = s["calls"]
        e["description"] = s["desc"]
        save_case(e, lg, s["desc"])
        changed = int((seq[:, T:] != clean_seq[:, T:]).sum())
        print(f"{cname:34s} calls={s['calls']:11s} tokens changed vs clean {changed:2d}/{B * n}, "
              f"no-cache max |dlogit| {d:.2e}")


# --------------------------------------------------------------------------------------------
# pyvene Collect cases (gpt2): what IntervenableModel.generate collects, call by call
COLLECT_NEW = 8


def pv_generate_collect(model, reps, base, ul, iop, pad, n):
    """pyvene generate with a config holding only CollectInterventions. pyvene 0.1.8 sets
    return_collect_activations on such a model and generate then returns
    ((base_outputs, collected_activations), counterfactual_outputs): base_outputs is None
    (output_original_output false), collected_activations a plain list of tensors (one per
    intervened forward call and Collect intervention, appended by the setter hook), and
    counterfactual_outputs transformers' GenerateDecoderOnlyOutput."""
    torch.manual_seed(0)
    ivm = pv.IntervenableModel(pv.IntervenableConfig(mpf.pv_reps(reps), mode="parallel"), model)
    assert ivm.return_collect_activations
    with torch.no_grad():
        res = ivm.generate(copy.deepcopy(base), sources=None, unit_locations=copy.deepcopy(ul),
                           intervene_on_prompt=iop, **gen_kwargs(pad, None, n))
    assert type(res) is tuple and len(res) == 2, type(res)
    assert type(res[0]) is tuple and len(res[0]) == 2, type(res[0])
    (orig, collected), out = res
    assert orig is None
    assert type(collected) is list and all(type(t) is torch.Tensor for t in collected)
    assert type(out).__name__ == "GenerateDecoderOnlyOutput", type(out)
    structure = ("((None, list of %d torch.Tensor %s), %s)" %
                 (len(collected), sorted({tuple(t.shape) for t in collected}), type(out).__name__))
    return unpack(out), [t.detach().clone() for t in collected], structure


def record_calls(model, module, ids, mask, pad, n):
    """plain transformers generate with a forward hook that records the module's output tensor
    (a copy) on every forward call; returns (sequences, logits, [tensor per call])"""
    rec = []

    def fn(h, c, T):
        assert c == len(rec)
        rec.append(h.detach().clone())
    seq, lg = hf_generate(model, ids, mask, pad, None, n, hook=(module, fn))
    return seq, lg, rec


def collect_cases(name, spec, model, ids3, mask3):
    C = spec["config"].n_embd
    V, pad = spec["config"].vocab_size, spec["pad"]
    mods = lambda l: spec["modules"](model, l)  # noqa: E731
    B, T = ids3.shape
    n = COLLECT_NEW
    base = {"input_ids": ids3, "attention_mask": mask3}
    # a generator of its own, so that every earlier case draws exactly what it drew before
    g = torch.Generator().manual_seed(spec["seed"] * 10 + 2)
    real = [[t for t in range(T) if mask3[b, t]] for b in range(B)]
    P = [[real[b][int(torch.randint(len(real[b]), (1,), generator=g))]] for b in range(B)]
    clean_seq, clean_lg = hf_generate(model, ids3, mask3, pad, None, n)
    # one cache-free forward over every fed token (the prompt, then generated tokens 0..n-2) with
    # the mask-derived position_ids: the absolute-position reading of each call's activation
    full_ids = clean_seq[:, :T + n - 1]
    full_mask = torch.cat([mask3, torch.ones((B, n - 1), dtype=mask3.dtype)], 1)
    full_pos = full_mask.cumsum(-1) - 1
    full_pos.masked_fill_(full_mask == 0, 1)

    def full_stream(module):
        got = {}
        hd = module.register_forward_hook(
            lambda m, a, o: got.update(h=(o[0] if isinstance(o, tuple) else o).detach().clone()))
        with torch.no_grad():
            model(input_ids=full_ids, attention_mask=full_mask, position_ids=full_pos, use_cache=False)
        hd.remove()
        return got["h"]

    def rows_at(h, P=P):
        return torch.stack([h[b, P[b][0]] for b in range(B)])[:, None]   # (B, 1, C)

    specs = [
        dict(tag="collect_block_output_steps", reps=[mpf.R(1, "block_output", t="Collect")],
             ul=None, iop=False, site=("block_output", 1), calls=list(range(1, n)),
             local=lambda h: h[:, 0:1], absolute=lambda H, c: H[:, T + c - 1:T + c],
             desc="CollectIntervention at block_output L1 (unit pos), unit_locations null, "
                  "intervene_on_prompt false: pyvene substitutes {\"base\": 0} and skips its first "
                  f"call, so it collects on every generated step (calls 1..{n - 1}): one tensor per "
                  "call, (B, 1, C), the block output at position 0 of the step's one-token input, "
                  f"i.e. generated tokens 0..{n - 2} (absolute positions T..T+{n - 2}). "
                  f"{n - 1} tensors for {n} new tokens: the last generated token is never fed. "
                  "Nothing is changed: ids and logits equal plain generate's."),
        dict(tag="collect_mlp_prompt", reps=[mpf.R(0, "mlp_output", t="Collect")],
             ul={"base": [P]}, iop=True, site=("mlp_output", 0), calls=[0],
             local=rows_at, absolute=lambda H, c: rows_at(H),
             desc="CollectIntervention at mlp_output L0 (unit pos), unit_locations "
                  "{\"base\": [[[p0], [p1], [p2]]]} (one real prompt position per row, indices "
                  "into the left-padded tensor), intervene_on_prompt true: only the first call (the "
                  "prompt) is acted on, so exactly one tensor is collected, (B, 1, C), row b the MLP "
                  "output at position p_b. Nothing is changed: ids and logits equal plain generate's."),
    ]
    structures = []
    for s in specs:
        cname = f"{name}_pyvene_{s['tag']}"
        (seq, lg), collected, structure = pv_generate_collect(model, s["reps"], base, s["ul"], s["iop"], pad, n)
        structures.append((cname, structure))
        # Collect changes nothing: plain transformers generate, bit for bit
        assert torch.equal(seq, clean_seq), cname
        assert torch.equal(lg, clean_lg), cname
        assert seq.shape == (B, T + n) and lg.shape == (B, n, V), cname
        # exact: a plain forward hook on the same module records every call; pyvene's list is the
        # claimed calls' selections, in call order, shapes as pyvene returns them, bit for bit
        module = mods(s["site"][1])[s["site"][0]]
        rs, rl, rec = record_calls(model, module, ids3, mask3, pad, n)
        assert torch.equal(rs, seq) and torch.equal(rl, lg), cname
        assert len(rec) == n, (cname, len(rec))     # one forward call per new token
        assert len(collected) == len(s["calls"]), (cname, len(collected), s["calls"])
        for k, c in enumerate(s["calls"]):
            want = s["local"](rec[c])
            assert collected[k].shape == want.shape == (B, 1, C), (cname, k, collected[k].shape)
            assert collected[k].dtype == torch.float32, cname
            assert torch.equal(collected[k], want), (cname, k, (collected[k] - want).abs().max().item())
        # semantic: the same activations read at absolute positions from one cache-free forward
        H = full_stream(module)
        d = 0.0
        for k, c in enumerate(s["calls"]):
            d = max(d, (collected[k] - s["absolute"](H, c)).abs().max().item())
        assert d <= LOGIT_TOL, (cname, d)

        e = base_entry(cname, name, "pyvene", ids3, mask3, pad, None, n, seq, lg)
        e["config"] = mpf.dict_config(s["reps"], "parallel")
        req = collections.OrderedDict()
        req["base"] = mpf.inputs_json(base)
        req["sources"] = None
        req["unit_locations"] = mpf.jsonify(s["ul"])
        e["request"] = req
        e["intervene_on_prompt"] = s["iop"]
        e["intervened_calls"] = "first" if s["calls"] == [0] else "after_first"
        e["n_collected"] = len(collected)
        e["collected_calls"] = s["calls"]
        e["collected_shape"] = list(collected[0].shape)
        e["description"] = s["desc"]
        save_case(e, lg, s["desc"], extra={f"collected.{k}": t for k, t in enumerate(collected)})
        print(f"{cname:34s} collected {len(collected)} x {tuple(collected[0].shape)} on calls "
              f"{s['calls']}, ids/logits = plain generate, cache-free max |d| {d:.2e}")
    return structures


# --------------------------------------------------------------------------------------------
# a trained intervention (tests/fixtures/training/model/<case>: pyvene's save) during generate
FIXTURES = os.path.join(REPO, "tests", "fixtures")
TRAINED_MODEL_DIR = "gpt2/small/model"                 # relative to tests/fixtures
TRAINED_WEIGHTS_DIR = "training/model/das_lowrank_r1_l1"
TRAINED_NEW = 12
TRAINED_PAD = 0


class _LowRankW(torch.nn.Module):
    """a bare (D, r) weight; torch's orthogonal parametrization on it, loaded with the saved
    tensors, gives W without pyvene"""

    def __init__(self, D, r):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(D, r))


def observed_calls(ivm, iv, module, base, src, ul, iop, n):
    """pyvene generate once more with two counting hooks: the indices of the module's forward
    calls during which the intervention module itself ran"""
    # pyvene's generate removes every hook on the model's modules first, so the block's calls are
    # counted by wrapping its forward on the instance; the source forward is call -1
    state = {"call": -2, "ran": []}
    fwd = module.forward

    def counting(*a, **k):
        state["call"] += 1
        return fwd(*a, **k)
    module.forward = counting
    h2 = iv.register_forward_hook(lambda m, a, o: state["ran"].append(state["call"]))
    try:
        with torch.no_grad():
            ivm.generate(copy.deepcopy(base), sources=[dict(src)], unit_locations=copy.deepcopy(ul),
                         intervene_on_prompt=iop, **gen_kwargs(TRAINED_PAD, None, n))
    finally:
        del module.forward
        h2.remove()
    assert state["call"] == n - 1, state
    return state["ran"]


def trained_cases():
    wdir = os.path.join(FIXTURES, TRAINED_WEIGHTS_DIR)
    with open(os.path.join(wdir, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(wdir, "inputs.json")) as f:
        inp = json.load(f)
    assert cfg["intervention_types"] == ["<class 'pyvene.models.interventions.LowRankRotatedSpaceIntervention'>"]
    assert cfg["mode"] == "parallel" and len(cfg["representations"]) == 1
    layer, comp, unit = cfg["representations"][0][:3]
    assert (comp, unit) == ("block_output", "pos")
    key = inp["key"]
    assert cfg["sorted_keys"] == [key] and inp["model"] == "tests/fixtures/" + TRAINED_MODEL_DIR
    saved = safetensors.torch.load_file(os.path.join(wdir, f"intkey_{key}.safetensors"))

    model = GPT2LMHeadModel.from_pretrained(os.path.join(FIXTURES, TRAINED_MODEL_DIR), attn_implementation="eager",
                                            torch_dtype=torch.float32).eval()
    assert model.config._attn_implementation == "eager"
    for p in model.parameters():
        p.requires_grad_(False)
    V, D = model.config.vocab_size, model.config.n_embd
    module = model.transformer.h[layer]

    ids = torch.tensor(inp["base"]["input_ids"])
    B, T = ids.shape
    assert T + TRAINED_NEW <= model.config.n_positions
    assert bool((ids != TRAINED_PAD).all())
    mask = torch.ones_like(ids)
    base = {"input_ids": ids, "attention_mask": mask}
    assert len(inp["sources"]) == 1
    src = {"input_ids": torch.tensor(inp["sources"][0]["input_ids"])}
    SRC, BASE = inp["unit_locations"]["sources->base"]
    sp = [SRC[0][b][0] for b in range(B)]
    bp = [BASE[0][b][0] for b in range(B)]
    n = TRAINED_NEW
    clean_seq, clean_lg = hf_generate(model, ids, mask, TRAINED_PAD, None, n)

    # W from the saved tensors through torch's own orthogonal parametrization (not pyvene's layer)
    r = saved["rotate_layer.parametrizations.weight.original"].shape[1]
    lw = torch.nn.utils.parametrizations.orthogonal(_LowRankW(D, r))
    lw.load_state_dict({k[len("rotate_layer."):]: v for k, v in saved.items() if k.startswith("rotate_layer.")})
    with torch.no_grad():
        W = lw.weight.detach().clone()
    assert W.shape == (D, r)
    # the source's block output, a plain forward (no mask, no position_ids, as pyvene runs it)
    cap = {}
    hd = module.register_forward_hook(lambda m, a, o: cap.update(h=o[0].detach().clone()))
    with torch.no_grad():
        model(**src)
    hd.remove()
    s_rows = torch.stack([cap["h"][b, sp[b]] for b in range(B)])[:, None]       # (B, 1, D)

    def lowrank(b):  # pyvene's formula, same operand order: b + (s W - b W) W^T
        return (b + torch.matmul(torch.matmul(s_rows, W) - torch.matmul(b, W), W.T)).to(b.dtype)

    def local_prompt(h):
        new = lowrank(torch.stack([h[b, bp[b]] for b in range(B)])[:, None])
        for b in range(B):
            h[b, bp[b]] = new[b, 0]

    def rule_prompt(h, P):
        for b in range(B):
            if bp[b] in P:
                j = P.index(bp[b])
                h[b, j] = lowrank(h[:, j:j + 1].clone())[b, 0]

    def local_steps(h):
        h[:, 0:1] = lowrank(h[:, 0:1].clone())

    def rule_steps(h, P):
        for j, p in enumerate(P):
            if p >= T:
                h[:, j:j + 1] = lowrank(h[:, j:j + 1].clone())

    specs = [
        dict(tag="prompt", ul={"sources->base": (SRC, BASE)}, iop=True, calls="first",
             local=local_prompt, rule=rule_prompt,
             desc=f"LowRankRotatedSpaceIntervention (rank {r}) loaded with IntervenableModel.load from "
                  f"tests/fixtures/{TRAINED_WEIGHTS_DIR} (its saved config.json and weights), on the GPT-2 "
                  f"small fixture, block_output L{layer}; the case's own base and source (inputs.json, "
                  f"B={B}, T={T}, no padding) and unit_locations, intervene_on_prompt true: only the "
                  f"prompt call is intervened, base position BASE[b] <- b + (s - b) W W^T with s the "
                  "source's block output at SRC[b] (one source forward before generation). Layer "
                  f"{layer} is the model's last, so an edited prompt position only changes that "
                  f"position's own logits: only rows whose base position is T-1 = {T - 1} change "
                  "the generated tokens."),
        dict(tag="steps", ul={"sources->base": (SRC, [[[0]] * B])}, iop=False, calls="after_first",
             local=local_steps, rule=rule_steps,
             desc=f"the same trained intervention with intervene_on_prompt false and unit_locations "
                  "{\"sources->base\": (SRC, [[[0]] * B])}: the source runs once, and every generated "
                  f"step (calls 1..{n - 1}) gets b + (s - b) W W^T at position 0 of its one-token "
                  "input, with the same s (the source's block output at SRC[b]); the prompt is "
                  "untouched."),
    ]
    for s in specs:
        cname = f"gpt2_small_pyvene_lowrank_{s['tag']}"
        torch.manual_seed(0)  # load() builds the intervention (random init) before loading the weights
        ivm = pv.IntervenableModel.load(wdir, model)
        assert list(ivm.interventions) == [key]
        iv = ivm.interventions[key]
        assert type(iv).__name__ == "LowRankRotatedSpaceIntervention"
        sd = iv.state_dict()
        assert sorted(sd) == sorted(saved), (sorted(sd), sorted(saved))
        for k, v in saved.items():
            assert sd[k].dtype == v.dtype and torch.equal(sd[k], v), k
        with torch.no_grad():
            assert torch.equal(iv.rotate_layer.weight, W), cname
            orig, out = ivm.generate(copy.deepcopy(base), sources=[dict(src)],
                                     unit_locations=copy.deepcopy(s["ul"]), intervene_on_prompt=s["iop"],
                                     **gen_kwargs(TRAINED_PAD, None, n))
        assert orig is None
        seq, lg = unpack(out)
        assert seq.shape == (B, T + n) and lg.shape == (B, n, V), cname
        assert not torch.equal(seq, clean_seq) or not torch.equal(lg, clean_lg), f"{cname}: no effect"
        # exact: plain generate + a hook with the formula and the saved W, on the claimed calls only
        gates = {"all": lambda c: True, "first": lambda c: c == 0, "after_first": lambda c: c > 0}

        def gated(gate, local=s["local"]):
            def fn(h, c, T):
                if gate(c):
                    local(h)
            return fn
        rs, rl = hf_generate(model, ids, mask, TRAINED_PAD, None, n, hook=(module, gated(gates[s["calls"]])))
        assert torch.equal(rs, seq), (cname, rs, seq)
        assert torch.equal(rl, lg), (cname, (rl - lg).abs().max().item())
        # the calls pyvene's intervention actually ran on, observed: a hook counting the block's
        # forward calls and one on the intervention module (pyvene calls it inside the block's hook)
        ran = observed_calls(ivm, iv, module, base, src, s["ul"], s["iop"], n)
        assert ran == [c for c in range(n) if gates[s["calls"]](c)], (cname, ran)
        same = []
        for other in gates:
            if other == s["calls"]:
                continue
            try:
                _, ol = hf_generate(model, ids, mask, TRAINED_PAD, None, n, hook=(module, gated(gates[other])))
            except IndexError:  # listed prompt positions do not exist in a one-token step
                continue
            if torch.equal(ol, lg):
                same.append(other)
        # an edit of the LAST layer's output at a prompt position other than T-1 reaches no logit
        # that generate reads, so "all" cannot be told from "after_first" by the outputs here; the
        # observed calls above settle it
        assert same in ([], ["all"]) and (not same or s["calls"] == "after_first"), (cname, same)
        # semantic: cache-free loop, the formula at the absolute positions the rule implies
        d = check_nocache(cname, *nocache_greedy(model, ids, mask, TRAINED_PAD, None, n, hook=(module, s["rule"])),
                          seq, lg)

        e = base_entry(cname, "gpt2_small", "pyvene", ids, mask, TRAINED_PAD, None, n, seq, lg)
        e["model_dir"] = TRAINED_MODEL_DIR
        e["weights_dir"] = TRAINED_WEIGHTS_DIR
        e["config"] = cfg
        req = collections.OrderedDict()
        req["base"] = mpf.inputs_json(base)
        req["sources"] = [mpf.inputs_json(src)]
        req["unit_locations"] = mpf.jsonify(s["ul"])
        e["request"] = req
        e["intervene_on_prompt"] = s["iop"]
        e["intervened_calls"] = s["calls"]
        e["description"] = s["desc"]
        save_case(e, lg, s["desc"])
        changed = int((seq[:, T:] != clean_seq[:, T:]).sum())
        rows = [b for b in range(B) if not torch.equal(seq[b], clean_seq[b])]
        dl = (lg - clean_lg).abs().amax(dim=(1, 2))
        print(f"{cname:34s} calls={s['calls']:11s} tokens changed vs clean {changed:2d}/{B * n} "
              f"(rows {rows}), max |dlogit| vs clean per row {[f'{x:.3g}' for x in dl.tolist()]}, "
              f"observed calls {ran}, same outputs with gates {same}, no-cache max |dlogit| {d:.2e}")
    return {"dir": "../" + TRAINED_MODEL_DIR, "class": "GPT2LMHeadModel",
            "note": f"the repository's GPT-2 small fixture (tests/fixtures/{TRAINED_MODEL_DIR}; vocab {V}, "
                    f"n_positions {model.config.n_positions}, n_embd {D}, {model.config.n_layer} layers, "
                    f"{model.config.n_head} heads), not written by this script"}


# --------------------------------------------------------------------------------------------
# pyvene SERIAL mode during generate (gpt2): source_0 -> source_1 -> base
SERIAL_NEW = 8
SERIAL_TS = 6


def run_pyvene_serial(model, reps, base, sources, ul, iop, pad, n):
    torch.manual_seed(0)
    ivm = pv.IntervenableModel(pv.IntervenableConfig(mpf.pv_reps(reps), mode="serial"), model)
    with torch.no_grad():
        orig, out = ivm.generate(copy.deepcopy(base), sources=[dict(s) for s in sources],
                                 unit_locations=copy.deepcopy(ul), intervene_on_prompt=iop,
                                 **gen_kwargs(pad, None, n))
    assert orig is None
    return ivm, unpack(out)


def serial_observed_calls(model, ivm, base, sources, ul, iop, pad, n):
    """pyvene generate once more, counting the model's forward calls (by wrapping the token
    embedding's forward on the instance: pyvene's generate removes every forward hook on the
    model's modules first) and recording, for each intervention (sorted_keys order), the calls
    on which its module ran. source_0's forward is call -2, source_1's -1, generate's 0..n-1."""
    wte = model.transformer.wte
    fwd = wte.forward
    state = {"call": -3, "ran": [[] for _ in ivm.sorted_keys]}

    def counting(*a, **k):
        state["call"] += 1
        return fwd(*a, **k)
    wte.forward = counting
    hs = [ivm.interventions[k].register_forward_hook(lambda m, a, o, i=i: state["ran"][i].append(state["call"]))
          for i, k in enumerate(ivm.sorted_keys)]
    try:
        with torch.no_grad():
            _, out = ivm.generate(copy.deepcopy(base), sources=[dict(s) for s in sources],
                                  unit_locations=copy.deepcopy(ul), intervene_on_prompt=iop,
                                  **gen_kwargs(pad, None, n))
    finally:
        del wte.forward
        for h in hs:
            h.remove()
    assert state["call"] == n - 1, state
    return state["ran"], unpack(out)


def serial_cases(name, spec, model, ids3, mask3):
    V, pad, lo = spec["config"].vocab_size, spec["pad"], spec["lo"]
    mods = lambda l: spec["modules"](model, l)  # noqa: E731
    B, T = ids3.shape
    n = SERIAL_NEW
    Ts = SERIAL_TS
    base = {"input_ids": ids3, "attention_mask": mask3}
    clean_seq, clean_lg = hf_generate(model, ids3, mask3, pad, None, n)
    # a generator of its own, so that every earlier case draws exactly what it drew before
    g = torch.Generator().manual_seed(spec["seed"] * 10 + 3)
    src0 = {"input_ids": torch.randint(lo, V, (B, Ts), generator=g)}
    src1 = {"input_ids": torch.randint(lo, V, (B, Ts), generator=g)}
    sources = [src0, src1]
    p0 = [int(torch.randint(Ts, (1,), generator=g)) for b in range(B)]   # read in source_0 (L0)
    # written in source_1 at L0 (p01) no later than read in source_1 at L1 (p1), so the write
    # reaches the value read
    pair = [sorted(torch.randint(Ts, (2,), generator=g).tolist()) for b in range(B)]
    p01, p1 = [q[0] for q in pair], [q[1] for q in pair]
    # base positions (prompt case): layer 1 is the model's last, so an edit of its output at a
    # prompt position reaches only that position's own logits, and generate reads only T-1's.
    # Rows 0 and 2 at T-1 (visible); row 1 at another real position (no visible effect: its
    # outputs must equal plain generate's, which pins per-row positions)
    real1 = [t for t in range(T) if mask3[1, t] and t != T - 1]
    bp = [T - 1, real1[int(torch.randint(len(real1), (1,), generator=g))], T - 1]
    reps = [mpf.R(0, "block_output"), mpf.R(1, "block_output")]
    L0, L1 = mods(0)["block_output"], mods(1)["block_output"]

    def capture(module, inputs, hook=None):
        got = {}
        hd = module.register_forward_hook(
            lambda m, a, o: got.update(h=(o[0] if isinstance(o, tuple) else o).detach().clone()))
        hd2 = None if hook is None else hook[0].register_forward_hook(hook[1])
        with torch.no_grad():
            model(**inputs)
        hd.remove()
        if hd2 is not None:
            hd2.remove()
        return got["h"]

    # the independent serial chain, with plain hooks
    a0 = capture(L0, src0)                                   # source_0's L0 block output

    def write01(m, a, o):                                   # group 0's setter in source_1
        h = o[0] if isinstance(o, tuple) else o
        for b in range(B):
            h[b, p01[b]] = a0[b, p0[b]]
        return o
    a1_set = capture(L1, src1, hook=(L0, write01))           # source_1's L1, group 0 applied
    a1_clean = capture(L1, src1)                             # source_1's L1, group 0 not applied
    assert not torch.equal(a1_set, a1_clean)
    v_set = torch.stack([a1_set[b, p1[b]] for b in range(B)])      # (B, C)
    v_clean = torch.stack([a1_clean[b, p1[b]] for b in range(B)])
    assert all(not torch.equal(v_set[b], v_clean[b]) for b in range(B))

    def local_prompt(v):
        def f(h):
            for b in range(B):
                h[b, bp[b]] = v[b]
        return f

    def local_steps(v):
        def f(h):
            h[:, 0] = v
        return f

    def rule_prompt(v):
        def f(h, P):
            for b in range(B):
                if bp[b] in P:
                    h[b, P.index(bp[b])] = v[b]
        return f

    def rule_steps(v):
        def f(h, P):
            for j, p in enumerate(P):
                if p >= T:
                    h[:, j] = v
        return f

    ul_s01 = ([[[x] for x in p0]], [[[x] for x in p01]])
    ul_src1 = [[[x] for x in p1]]
    specs = [
        dict(tag="serial_prompt", iop=True, ul={"source_0->source_1": ul_s01,
                                                 "source_1->base": (ul_src1, [[[x] for x in bp]])},
             calls="first", group0=True, local=local_prompt, rule=rule_prompt,
             desc="IntervenableConfig(mode=\"serial\"): VanillaIntervention group 0 at block_output L0 "
                  "and group 1 at block_output L1 (unit pos, default group keys), two unpadded source "
                  f"batches (T={Ts}, input_ids only), unit_locations {{\"source_0->source_1\": (P0, P01), "
                  "\"source_1->base\": (P1, BASE)}, one position per example, intervene_on_prompt true. "
                  "pyvene runs source_0's forward (group 0's getter reads L0 at P0), then source_1's "
                  "forward with group 0's setter (L0 at P01 <- source_0's value; this is the setter's "
                  "first, 'prompt', call, so it acts) and group 1's getter (L1 at P1, after the write), "
                  "then removes group 0's setter and runs the base generate with group 1's setter: only "
                  "the prompt call, L1 at BASE[b] (indices into the left-padded tensor) <- that value. "
                  f"BASE = T-1 for rows 0 and 2; row 1's BASE is another real position, and since L1 is "
                  "the last layer that edit reaches no logit that generate reads: row 1 equals plain "
                  "generate."),
        dict(tag="serial_steps", iop=False, ul={"source_0->source_1": ul_s01,
                                                 "source_1->base": (ul_src1, [[[0]] * B])},
             calls="after_first", group0=False, local=local_steps, rule=rule_steps,
             desc="the same config and sources with intervene_on_prompt false and base positions 0 "
                  "({\"source_1->base\": (P1, [[[0]] * B])}). pyvene's call gate also applies to group 0's "
                  "setter during source_1's forward, which is that setter's first call, i.e. its "
                  "'prompt': it is SKIPPED, so source_1 runs unpatched and source_0 has no effect at "
                  "all. Group 1's setter then skips the base prompt call and on every generated step "
                  f"(calls 1..{n - 1}) sets L1 at position 0 of the step's one-token input to source_1's "
                  "clean L1 value at P1. L1 is the last layer, so the logits of steps 1.. are the same "
                  "for every step of a row (a constant replaced stream)."),
    ]
    gates = {"all": lambda c: True, "first": lambda c: c == 0, "after_first": lambda c: c > 0}

    def gated(gate, local):
        def fn(h, c, T):
            if gate(c):
                local(h)
        return fn

    for s in specs:
        cname = f"{name}_pyvene_{s['tag']}"
        try:
            ivm, (seq, lg) = run_pyvene_serial(model, reps, base, sources, s["ul"], s["iop"], pad, n)
        except Exception as ex:  # recorded in the README if it ever happens
            print(f"{cname:34s} pyvene generate FAILED: {type(ex).__name__}: {ex}; case dropped")
            continue
        assert seq.shape == (B, T + n) and lg.shape == (B, n, V), cname
        assert not torch.equal(seq, clean_seq) or not torch.equal(lg, clean_lg), f"{cname}: no effect"
        # pyvene's groups: one key each, group 0 at L0, group 1 at L1
        assert list(ivm._intervention_group) == [0, 1], ivm._intervention_group
        keys = [ivm._intervention_group[0], ivm._intervention_group[1]]
        assert [len(k) for k in keys] == [1, 1] and keys[0][0].startswith("layer_0_comp_block_output") \
            and keys[1][0].startswith("layer_1_comp_block_output"), keys
        assert ivm.sorted_keys == [keys[0][0], keys[1][0]], ivm.sorted_keys
        v = v_set if s["group0"] else v_clean
        v_other = v_clean if s["group0"] else v_set
        # 1. exact: plain generate with a hook at L1 on the claimed calls, the value from the
        #    hook-built serial chain -> bit-identical
        rs, rl = hf_generate(model, ids3, mask3, pad, None, n, hook=(L1, gated(gates[s["calls"]], s["local"](v))))
        assert torch.equal(rs, seq), (cname, rs, seq)
        assert torch.equal(rl, lg), (cname, (rl - lg).abs().max().item())
        # ... the other choice for group 0's setter in source_1's forward must NOT match
        _, ol = hf_generate(model, ids3, mask3, pad, None, n, hook=(L1, gated(gates[s["calls"]], s["local"](v_other))))
        assert not torch.equal(ol, lg), (cname, "group 0 applied" if not s["group0"] else "group 0 skipped",
                                         "also matches")
        # ... nor any other gate for group 1 on the base's calls, with either value
        tried, same = [], []
        for other in gates:
            if other == s["calls"]:
                continue
            for which, vv in (("group0 applied", v_set), ("group0 skipped", v_clean)):
                try:
                    _, ol = hf_generate(model, ids3, mask3, pad, None, n, hook=(L1, gated(gates[other], s["local"](vv))))
                except IndexError:  # prompt positions do not exist in a one-token step
                    continue
                tried.append(f"{other}/{which}")
                if torch.equal(ol, lg):
                    same.append(other)
                    assert vv is v, (cname, "gate", other, which, "also matches")
        # L1 is the last layer: an edit of the prompt at position 0 (not T-1) reaches no logit that
        # generate reads, so "all" cannot be told from "after_first" by the outputs in the steps
        # case; the observed calls below settle it
        assert same in ([], ["all"]) and (not same or s["calls"] == "after_first"), (cname, same)
        # ... nor group 0's setter left on during the base generate (L0 at P01 of the base, on the
        #     calls of group 1's gate), together with group 1
        cnt0 = [0]

        def g0_on_base(m, a, o, gate=gates[s["calls"]]):
            if gate(cnt0[0]):
                h = o[0] if isinstance(o, tuple) else o
                for b in range(B):
                    h[b, p01[b]] = a0[b, p0[b]]
            cnt0[0] += 1
            return o
        hd = L0.register_forward_hook(g0_on_base)
        try:
            _, ol = hf_generate(model, ids3, mask3, pad, None, n, hook=(L1, gated(gates[s["calls"]], s["local"](v))))
            assert not torch.equal(ol, lg), (cname, "group 0 also on the base also matches")
            tried.append("group0_on_base")
        except IndexError:  # P01 positions do not exist in a one-token step
            pass
        finally:
            hd.remove()
        # observed: the calls each intervention's module ran on (source_0 = -2, source_1 = -1)
        ran, (os_, ol_) = serial_observed_calls(model, ivm, base, sources, s["ul"], s["iop"], pad, n)
        assert torch.equal(os_, seq) and torch.equal(ol_, lg), cname
        want_ran = [[-1] if s["group0"] else [], [c for c in range(n) if gates[s["calls"]](c)]]
        assert ran == want_ran, (cname, ran, want_ran)
        # 2. semantic: cache-free loop, the value at the absolute positions the rule implies
        d = check_nocache(cname, *nocache_greedy(model, ids3, mask3, pad, None, n, hook=(L1, s["rule"](v))),
                          seq, lg)
        rows_changed = [b for b in range(B) if not torch.equal(seq[b], clean_seq[b])
                        or not torch.equal(lg[b], clean_lg[b])]
        if s["calls"] == "first":
            assert rows_changed == [0, 2], (cname, rows_changed)
        else:
            assert rows_changed == list(range(B)), (cname, rows_changed)
            assert torch.equal(lg[:, 0], clean_lg[:, 0]), cname
            assert all(torch.equal(lg[:, k], lg[:, 1]) for k in range(2, n)), cname

        e = base_entry(cname, name, "pyvene", ids3, mask3, pad, None, n, seq, lg)
        e["config"] = mpf.dict_config(reps, "serial")
        req = collections.OrderedDict()
        req["base"] = mpf.inputs_json(base)
        req["sources"] = [mpf.inputs_json(x) for x in sources]
        req["unit_locations"] = mpf.jsonify(s["ul"])
        e["request"] = req
        e["intervene_on_prompt"] = s["iop"]
        e["intervened_calls"] = s["calls"]
        e["serial_source_setters"] = [s["group0"]]
        e["description"] = s["desc"]
        save_case(e, lg, s["desc"])
        changed = int((seq[:, T:] != clean_seq[:, T:]).sum())
        print(f"{cname:34s} calls={s['calls']:11s} group 0 on source_1: {s['group0']}, observed calls "
              f"{ran}, tokens changed vs clean {changed:2d}/{B * n} (rows {rows_changed}), alternatives "
              f"tried {tried}, same outputs with gates {same}, no-cache max |dlogit| {d:.2e}")


# --------------------------------------------------------------------------------------------
def dump_manifest(manifest, path):
    """one key per line inside each case; values compact, ints stay ints"""
    lines = ["{", '  "versions": ' + json.dumps(manifest["versions"]) + ",",
             '  "models": ' + json.dumps(manifest["models"]) + ",", '  "cases": [']
    for i, c in enumerate(manifest["cases"]):
        body = ",\n".join(f"      {json.dumps(k)}: {json.dumps(v)}" for k, v in c.items())
        lines.append("    {\n" + body + "\n    }" + ("," if i + 1 < len(manifest["cases"]) else ""))
    lines += ["  ]", "}"]
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == json.loads(json.dumps(manifest))
    with open(path, "w") as f:
        f.write(text)


def dir_size(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    assert pv_version() == "0.1.8", pv_version()
    assert transformers.__version__ == "4.46.3", transformers.__version__
    os.makedirs(OUT_ROOT, exist_ok=True)
    for f in os.listdir(OUT_ROOT):  # keep the hand-written README.md
        p = os.path.join(OUT_ROOT, f)
        if f in MODELS:
            shutil.rmtree(p)
        elif f.endswith(".safetensors") or f == "manifest.json":
            os.remove(p)
    models = collections.OrderedDict()
    built = {}
    for name, spec in MODELS.items():
        model = build_model(name, spec)
        g = torch.Generator().manual_seed(spec["seed"] * 10 + 1)
        ids3, mask3 = greedy_cases(name, spec, model, g)
        pyvene_cases(name, spec, model, g, ids3, mask3)
        models[name] = {"dir": f"{name}/model", "class": spec["cls"].__name__, "note": spec["note"]}
        built[name] = (model, ids3, mask3)
    # later additions, after every earlier case (whose bytes they leave alone)
    structures = collect_cases("gpt2", MODELS["gpt2"], *built["gpt2"])
    models["gpt2_small"] = trained_cases()
    serial_cases("gpt2", MODELS["gpt2"], *built["gpt2"])
    for cname, st in structures:
        print(f"{cname}: pyvene generate returned {st}")
    names = [c["name"] for c in CASES]
    assert len(set(names)) == len(names)
    manifest = {
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "pyvene": pv_version(), "numpy": np.__version__,
                     "safetensors": safetensors.__version__, "python": platform.python_version()},
        "models": models,
        "cases": CASES,
    }
    dump_manifest(manifest, os.path.join(OUT_ROOT, "manifest.json"))
    total = dir_size(OUT_ROOT)
    print(f"\n{len(CASES)} cases; total size of tests/fixtures/generate: {total} bytes "
          f"({total / 1024 / 1024:.2f} MiB)")
    assert total < SIZE_LIMIT, "fixtures exceed the size budget"


if __name__ == "__main__":
    main()
