#!/usr/bin/env python3
"""Reference gradients for the backward ops (kernels/backend.h: cvene_ops_bwd), computed by
torch autograd on the CPU, for tests/test_backward_ops.cpp.

Writes tests/fixtures/backward/<op>.safetensors for op in layernorm, attention, activation,
rotary, matmul_tn, xent, affine, mul, sum_rows. Each holds the op's f32 inputs, drawn once, and
two references computed from those same f32 values:
  <name>.f64  the forward written in torch, run in float64 and differentiated by autograd: the
              exact gradient to ~1e-16, against which cvene's own error is measured;
  <name>.f32  the same in float32, as a torch user gets it.
Where transformers defines the forward (gelu_new, GPT-NeoX's rotary embedding) its own code is
run. Odd sizes throughout, so no kernel can lean on a multiple of a block or a warp.

Deterministic: fixed seeds, single-threaded torch, one write order; rerunning rewrites the same
bytes. Versions are stored in each file's metadata ("made_by").

Pinned: tools/requirements.txt (torch 2.5.1, transformers 4.46.3; runs on CPU).
    python tools/make_backward_fixtures.py
"""
import math
import os

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from transformers.activations import NewGELUActivation
from transformers.modeling_rope_utils import _compute_default_rope_parameters
from transformers.models.gpt_neox.modeling_gpt_neox import rotate_half

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "backward")


def rnd(g, *shape, scale=1.0, shift=0.0):
    return ((torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1) * scale + shift).float()


def grads(fn, inputs, dy=None):
    """For dt in (f64, f32): run fn on the inputs converted to dt (requires_grad), backward with
    dy (or a scalar output), and return {dt_name: [grad of each input]} and the outputs."""
    out = {}
    for name, dt in (("f64", torch.float64), ("f32", torch.float32)):
        xs = [x.to(dt).detach().requires_grad_(True) for x in inputs]
        y = fn(*xs)
        if dy is None:
            y.backward()
        else:
            y.backward(dy.to(dt))
        out[name] = ([x.grad.detach() for x in xs], y.detach())
    return out


def put(T, name, per_dt):
    """name.f64 / name.f32 from {dt_name: tensor}."""
    T[name + ".f64"] = per_dt["f64"].to(torch.float64)
    T[name + ".f32"] = per_dt["f32"].to(torch.float32)


def layernorm(g):
    N, C, eps = 7, 37, 1e-5
    x, w, b, dy = rnd(g, N, C, scale=3.0, shift=2.0), rnd(g, C, scale=2.0), rnd(g, C), rnd(g, N, C)
    r = grads(lambda x_, w_, b_: F.layer_norm(x_, (C,), w_, b_, eps), [x, w, b], dy)
    T = {"x": x, "w": w, "b": b, "dy": dy}
    put(T, "dx", {k: v[0][0] for k, v in r.items()})
    return T


def attention(g):
    """q, k, v (B, T, H*D); causal with a key mask: batch 0 has a hole at key 2, batch 1 is left
    padded by 2 (its queries 0 and 1 see no key: all-zero probability rows, as cvene's attn_probs
    writes them). out = probs @ v; the references are d<out, dout>/d(q, k, v)."""
    B, Tn, H, D = 2, 5, 3, 4
    scale = 1.0 / math.sqrt(D)
    q, k, v = rnd(g, B, Tn, H * D, scale=2.0), rnd(g, B, Tn, H * D, scale=2.0), rnd(g, B, Tn, H * D)
    dout = rnd(g, B, Tn, H * D)
    mask = torch.ones(B, Tn, dtype=torch.int32)
    mask[0, 2] = 0
    mask[1, :2] = 0
    causal = torch.arange(Tn)[None, :] <= torch.arange(Tn)[:, None]  # (Tq, Tk)
    ok = causal[None, None] & (mask[:, None, None, :] != 0)  # (B, 1, T, T)
    seen = ok.any(-1, keepdim=True)

    def probs_of(q_, k_):
        qh = q_.view(B, Tn, H, D).transpose(1, 2)
        kh = k_.view(B, Tn, H, D).transpose(1, 2)
        sc = (qh @ kh.transpose(-1, -2)) * scale
        sc = sc.masked_fill(~ok, float("-inf"))
        sc = torch.where(seen, sc, torch.zeros_like(sc))  # rows seeing nothing: finite, then zeroed
        return torch.softmax(sc, dim=-1) * seen

    def fwd(q_, k_, v_):
        vh = v_.view(B, Tn, H, D).transpose(1, 2)
        return (probs_of(q_, k_) @ vh).transpose(1, 2).reshape(B, Tn, H * D)

    r = grads(fwd, [q, k, v], dout)
    T = {"q": q, "k": k, "v": v, "mask": mask, "dout": dout}
    for i, n in enumerate(("dq", "dk", "dv")):
        put(T, n, {kk: vv[0][i] for kk, vv in r.items()})
    put(T, "probs", {"f64": probs_of(q.double(), k.double()), "f32": probs_of(q, k)})
    return T


ACTS = {
    "gelu_tanh": NewGELUActivation(),  # transformers' gelu_new
    "gelu_erf": lambda x: F.gelu(x),
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "none": lambda x: x,
}


def activation(g):
    # 0 exactly (ReLU's kink: torch gives 0 there), tiny, large and very large inputs, then random
    special = torch.tensor([0.0, 1e-3, -1e-3, 0.5, -0.75, 3.0, -3.0, 9.0, -9.0, 20.0, -20.0, 60.0, -60.0],
                           dtype=torch.float32)
    x = torch.cat([special, rnd(g, 244, scale=6.0)])  # 257
    dy = rnd(g, x.numel(), scale=2.0)
    T = {"x": x, "dy": dy}
    for name, f in ACTS.items():
        r = grads(f, [x], dy)
        put(T, name, {k: v[0][0] for k, v in r.items()})
    return T


def rotary(g):
    """GPT-NeoX rotary over the first rot dims of each head (transformers' default rope
    parameters, cos / sin of the f32 angle, rotate_half) on rows of stride ld > H*D; the
    reference is its gradient (dims past rot and the row's tail pass through)."""
    B, Tn, H, D, rot, ld, base = 2, 3, 2, 10, 6, 23, 10000.0
    inv, _ = _compute_default_rope_parameters(None, "cpu", base=base, dim=rot)  # f32, as transformers
    pos = torch.tensor([[0, 5, 17], [2, 3, 301]], dtype=torch.int32)
    ang = (pos.reshape(-1, 1).float() * inv[None, :])  # (B*T, rot/2) in f32, as transformers
    emb = torch.cat((ang, ang), dim=-1)  # (B*T, rot)
    x, dy = rnd(g, B * Tn, ld, scale=2.0), rnd(g, B * Tn, ld)

    def fwd(x_):
        cos, sin = emb.to(x_.dtype).cos(), emb.to(x_.dtype).sin()
        heads = x_[:, :H * D].reshape(B * Tn, H, D)
        r_, p_ = heads[..., :rot], heads[..., rot:]
        r_ = r_ * cos[:, None, :] + rotate_half(r_) * sin[:, None, :]
        return torch.cat([torch.cat([r_, p_], dim=-1).reshape(B * Tn, H * D), x_[:, H * D:]], dim=-1)

    r = grads(fwd, [x], dy)
    # positions 0..T-1 (cvene's pos = NULL)
    ang0 = torch.arange(Tn).repeat(B).reshape(-1, 1).float() * inv[None, :]
    emb0 = torch.cat((ang0, ang0), dim=-1)

    def fwd0(x_):
        cos, sin = emb0.to(x_.dtype).cos(), emb0.to(x_.dtype).sin()
        heads = x_[:, :H * D].reshape(B * Tn, H, D)
        r_, p_ = heads[..., :rot], heads[..., rot:]
        r_ = r_ * cos[:, None, :] + rotate_half(r_) * sin[:, None, :]
        return torch.cat([torch.cat([r_, p_], dim=-1).reshape(B * Tn, H * D), x_[:, H * D:]], dim=-1)

    r0 = grads(fwd0, [x], dy)
    T = {"dy": dy, "pos": pos}
    put(T, "dx", {k: v[0][0] for k, v in r.items()})
    put(T, "dx_pos0", {k: v[0][0] for k, v in r0.items()})
    return T


def matmul_tn(g):
    M, K, N = 7, 37, 11
    a, dy = rnd(g, M, K), rnd(g, M, N)
    W = rnd(g, K, N)
    r = grads(lambda a_, W_: a_ @ W_, [a, W], dy)  # W.grad = aᵀ dy
    T = {"a": a, "b": dy}
    put(T, "out", {k: v[0][1] for k, v in r.items()})
    return T


def xent(g):
    """Rows of logits (N, V); row 3 is ignored (label -100); row 5 is shifted by +50 (the max
    must be subtracted); scale = 1 / (rows counted), i.e. a mean loss."""
    N, V = 7, 37
    logits = rnd(g, N, V, scale=5.0)
    logits[5] += 50.0
    labels = torch.randint(0, V, (N,), generator=g, dtype=torch.int32)
    labels[3] = -100
    valid = int((labels >= 0).sum())
    scale = 1.0 / valid
    T = {"logits": logits, "labels": labels, "scale": torch.tensor([scale], dtype=torch.float32)}
    for name, dt in (("f64", torch.float64), ("f32", torch.float32)):
        x = logits.to(dt).requires_grad_(True)
        loss = F.cross_entropy(x, labels.long(), ignore_index=-100, reduction="none")
        (loss.sum() * torch.tensor(scale, dtype=torch.float32).to(dt)).backward()
        T["loss." + name] = loss.detach()
        T["dlogits." + name] = x.grad.detach()
    return T


def affine(g):
    n = 101
    a, b = rnd(g, n, scale=3.0), rnd(g, n, scale=3.0)
    alpha, beta, gamma = 0.75, -1.5, 0.25
    T = {"a": a, "b": b, "coef": torch.tensor([alpha, beta, gamma], dtype=torch.float32)}
    for name, dt in (("f64", torch.float64), ("f32", torch.float32)):
        T["out." + name] = alpha * a.to(dt) + beta * b.to(dt) + gamma
        T["out_nob." + name] = alpha * a.to(dt) + gamma
    return T


def mul(g):
    n = 101
    a, b = rnd(g, n, scale=3.0), rnd(g, n, scale=3.0)
    T = {"a": a, "b": b}
    r = grads(lambda x_: x_ * b.to(x_.dtype), [a], a)  # the gradient of x ⊙ b given dy = a: a ⊙ b
    put(T, "out", {k: v[0][0] for k, v in r.items()})
    return T


def sum_rows(g):
    M, N = 67, 37
    x = rnd(g, M, N, scale=2.0)
    z = rnd(g, M, N)
    r = grads(lambda z_, bias: z_ + bias, [z, torch.zeros(N)], x)  # bias.grad = sum over rows of dy
    T = {"x": x}
    put(T, "out", {k: v[0][1] for k, v in r.items()})
    return T


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    # one metadata key: safetensors writes several in hash order, which would change the bytes
    meta = {"made_by": f"tools/make_backward_fixtures.py; torch {torch.__version__}; "
                       f"transformers {transformers.__version__}"}
    for i, fn in enumerate((layernorm, attention, activation, rotary, matmul_tn, xent, affine, mul, sum_rows)):
        g = torch.Generator().manual_seed(1000 + i)
        T = {k: v.contiguous() for k, v in fn(g).items()}
        path = os.path.join(OUT, fn.__name__ + ".safetensors")
        save_file(T, path, meta)
        print("wrote", path)


if __name__ == "__main__":
    main()
