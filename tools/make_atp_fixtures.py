#!/usr/bin/env python3
"""Attribution patching (AtP) references for tests/test_localize.cpp, by torch autograd on
transformers' own models.

AtP (Nanda 2023; Kramar et al. 2024) estimates the effect of patching a component's activation
a from a source run into a base run at (layer, position) by its first-order Taylor expansion at
the base run:

    score(l, t) ~= metric(base) + (a_src(l, t) - a_base(l, t)) . d metric / d a(l, t) |_base

in the units of cvene's exact sweep (the metric of the patched run at the last position):
logit difference logit[tok] - logit[tok_b], probability p(tok), or KL(source || patched) over the
vocabulary. For head_attention_value_output the dot product runs over each head's slice of the
attention's value output (the input of the output projection), giving (layer, head, position).

Here the activations are captured with forward hooks at the modules pyvene hooks (the same
places as tools/make_gpt2_fixtures.py), the gradient comes from torch.autograd.grad of the metric
on the base run, and the model runs in float64 (the exact estimate, ~1e-15; cvene computes it in
float32). Writes tests/fixtures/atp/<model>.json with the ids, the metric tokens and, per
(component, metric), the estimates (L, T) or (L, H, T) and the base score.

Deterministic (fixed ids, no randomness). Pinned: tools/requirements.txt (torch 2.5.1,
transformers 4.46.3; CPU).
    python tools/make_atp_fixtures.py   # in a venv with tools/requirements.txt
"""
import json
import os

import torch
import transformers
from transformers import AutoModelForCausalLM

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "fixtures", "atp")
MODELS = {  # name -> model directory (relative to tests/fixtures)
    "gpt2_small": "gpt2/small/model",
    "neox_par_rot25": "neox/par_rot25/model",
    "neox_seq_rot100": "neox/seq_rot100/model",
}
COMPONENTS = ["block_output", "block_input", "attention_output", "mlp_output", "mlp_activation",
              "attention_value_output", "head_attention_value_output"]
METRICS = ["logit_diff", "prob", "kl"]


def modules(model, l):
    """(block, attention, mlp, mlp act, attention output projection) of layer l."""
    if model.config.model_type == "gpt2":
        b = model.transformer.h[l]
        return b, b.attn, b.mlp, b.mlp.act, b.attn.c_proj
    b = model.gpt_neox.layers[l]
    return b, b.attention, b.mlp, b.mlp.act, b.attention.dense


def run(model, ids, comp, keep_graph):
    """Logits (T, V) of the last... all positions, and the component's activation per layer, each
    (T, D) and part of the autograd graph when keep_graph."""
    acts, hooks = {}, []
    L = model.config.num_hidden_layers

    def save(l):
        def f(t):
            if keep_graph:
                t.retain_grad()
            acts[l] = t
        return f

    for l in range(L):
        blk, attn, mlp, act, proj = modules(model, l)
        s = save(l)
        if comp == "block_output":
            hooks.append(blk.register_forward_hook(lambda m, i, o, s=s: s(o[0])))
        elif comp == "block_input":
            hooks.append(blk.register_forward_pre_hook(lambda m, a, kw, s=s: s(a[0] if a else kw["hidden_states"]),
                                                       with_kwargs=True))
        elif comp == "attention_output":
            hooks.append(attn.register_forward_hook(lambda m, i, o, s=s: s(o[0])))
        elif comp == "mlp_output":
            hooks.append(mlp.register_forward_hook(lambda m, i, o, s=s: s(o)))
        elif comp == "mlp_activation":
            hooks.append(act.register_forward_hook(lambda m, i, o, s=s: s(o)))
        else:  # the value output: the output projection's input
            hooks.append(proj.register_forward_pre_hook(lambda m, a, s=s: s(a[0])))
    try:
        logits = model(torch.tensor([ids])).logits[0]
    finally:
        for h in hooks:
            h.remove()
    return logits, [acts[l] for l in range(L)]


def metric(name, logits_last, tok, tok_b, src_logp):
    if name == "logit_diff":
        return logits_last[tok] - logits_last[tok_b]
    lp = torch.log_softmax(logits_last, -1)
    if name == "prob":
        return lp[tok].exp()
    return (src_logp.exp() * (src_logp - lp)).sum()


def estimates(model, base, src, comp, mname, tok, tok_b):
    H = model.config.num_attention_heads
    with torch.no_grad():
        src_logits, src_acts = run(model, src, comp, False)
    src_logp = torch.log_softmax(src_logits[-1], -1)
    logits, acts = run(model, base, comp, True)
    m = metric(mname, logits[-1], tok, tok_b, src_logp)
    grads = torch.autograd.grad(m, acts)
    out = []
    for l, (a, g) in enumerate(zip(acts, grads)):
        d = (src_acts[l][0] - a[0].detach()) * g[0]  # (T, D)
        if comp == "head_attention_value_output":
            T, C = d.shape
            out.append(d.reshape(T, H, C // H).sum(-1).T.tolist())  # (H, T)
        else:
            out.append(d.sum(-1).tolist())  # (T)
    return float(m), out


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    for name, rel in MODELS.items():
        model = AutoModelForCausalLM.from_pretrained(os.path.join(REPO, "tests", "fixtures", rel),
                                                     torch_dtype=torch.float64)
        model.eval()
        V = model.config.vocab_size
        T = 9
        base = [(7 * t + 3) % V for t in range(T)]
        src = [(11 * t + 5) % V for t in range(T)]
        src[-1] = base[-1]  # the metric reads the last position; patches come from the others
        tok, tok_b = 5 % V, 17 % V
        doc = {"made_by": "tools/make_atp_fixtures.py", "torch": torch.__version__,
               "transformers": transformers.__version__, "model": rel, "base": base, "source": src,
               "token": tok, "token_b": tok_b, "cases": []}
        for comp in COMPONENTS:
            for mname in METRICS:
                base_score, est = estimates(model, base, src, comp, mname, tok, tok_b)
                doc["cases"].append({"component": comp, "metric": mname, "base_score": base_score,
                                     "scores": est})
        path = os.path.join(OUT, name + ".json")
        with open(path, "w") as f:
            json.dump(doc, f, indent=None, separators=(",", ":"))
            f.write("\n")
        print(path, len(doc["cases"]), "cases")


if __name__ == "__main__":
    main()
