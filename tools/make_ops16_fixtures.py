#!/usr/bin/env python3
"""Reference outputs of the ops on 16-bit activations (kernels/backend.h: cvene_ops16),
computed by torch on the CPU, for tests/test_ops16.cpp.

Writes tests/fixtures/ops16/{bf16,f16}.safetensors. For each case: the inputs (activations as
bf16 / f16 tensors, parameters f32, indices int32) and torch's output. Torch computes each
output the way a bf16 / f16 model stores it:
  - element-wise ops, layer norm and softmax: torch's own bf16 / f16 CPU kernels on the 16-bit
    tensors (they widen to f32, compute, and round once);
  - GEMMs, attention, rotary and the GRU steps: the f32 expression on the widened inputs,
    rounded once with .to(dtype) (torch's 16-bit GEMM paths differ by backend in where they
    round; the f32 expression is the rule cvene's ops16 promise).
Layer-norm weights and biases and GEMM biases are drawn as 16-bit values (stored f32) so the
natural 16-bit torch ops see exactly the parameters cvene does.

Pinned: tools/requirements.txt (torch 2.5.1; runs on CPU).
    python tools/make_ops16_fixtures.py
"""
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "ops16")


def make(dt, seed):
    g = torch.Generator().manual_seed(seed)
    T = {}

    def rnd(*shape, scale=1.0):
        return (torch.rand(*shape, generator=g) * 2 - 1) * scale

    def act16(*shape, scale=1.0):  # a 16-bit activation
        return rnd(*shape, scale=scale).to(dt)

    def param16(*shape, scale=1.0):  # an f32 parameter holding 16-bit values
        return rnd(*shape, scale=scale).to(dt).float()

    # embedding: out (B, T, C) = wte[ids] + wpe[pos], f32 tables, one rounding
    V, P, B, Tn, C = 11, 9, 2, 5, 13
    wte, wpe = rnd(V, C), rnd(P, C)
    ids = torch.randint(0, V, (B, Tn), generator=g, dtype=torch.int32)
    pos = torch.randint(0, P, (B, Tn), generator=g, dtype=torch.int32)
    T.update({"emb.wte": wte, "emb.wpe": wpe, "emb.ids": ids, "emb.pos": pos,
              "emb.out": (wte[ids.long()] + wpe[pos.long()]).to(dt)})

    # layernorm (N, C), and residual + layernorm: x = x + y (16-bit add), out = ln(x)
    N, C, eps = 7, 37, 1e-5
    x, y = act16(N, C, scale=3.0), act16(N, C)
    w, b = param16(C, scale=2.0), param16(C)
    T.update({"ln.in": x, "ln.y": y, "ln.w": w, "ln.b": b,
              "ln.out": F.layer_norm(x, (C,), w.to(dt), b.to(dt), eps)})
    xs = x + y
    T.update({"rln.x": xs, "rln.out": F.layer_norm(xs, (C,), w.to(dt), b.to(dt), eps)})

    # residual_add
    a, c = act16(101, scale=4.0), act16(101)
    T.update({"add.x": a, "add.y": c, "add.out": a + c})

    # matmul_act: out = round(act(round(x @ W + bias))), W (K, N) [trans 0] or (N, K) [trans 1]
    M, K, Nn = 5, 33, 17
    xm = act16(M, K)
    for trans in (0, 1):
        Wt = act16(Nn, K, scale=0.5) if trans else act16(K, Nn, scale=0.5)
        bias = param16(Nn)
        lin = (xm.float() @ (Wt.float().t() if trans else Wt.float()) + bias).to(dt)
        T[f"mm{trans}.w"] = Wt
        T[f"mm{trans}.bias"] = bias
        T[f"mm{trans}.none"] = lin
        T[f"mm{trans}.gelu_tanh"] = F.gelu(lin, approximate="tanh")
        T[f"mm{trans}.gelu_erf"] = F.gelu(lin)
        T[f"mm{trans}.relu"] = F.relu(lin)
    T["mm.in"] = xm

    # attention: q (B, Tq, H*D), k / v (B, Tk, H*D), causal with past = Tk - Tq, key mask
    B, Tq, Tk, H, D = 2, 3, 5, 2, 7
    scale = 1.0 / math.sqrt(D)
    q, k, v = act16(B, Tq, H * D, scale=2.0), act16(B, Tk, H * D, scale=2.0), act16(B, Tk, H * D)
    mask = torch.ones(B, Tk, dtype=torch.int32)
    mask[0, 1] = 0
    mask[1, :3] = 0  # batch 1, query 0 (key position 2) sees no key: an all-zero row
    qf = q.float().view(B, Tq, H, D).transpose(1, 2)
    kf = k.float().view(B, Tk, H, D).transpose(1, 2)
    sc = qf @ kf.transpose(-1, -2) * scale  # (B, H, Tq, Tk)
    past = Tk - Tq
    ok = (torch.arange(Tk)[None, :] <= (past + torch.arange(Tq))[:, None])[None, None] & (mask[:, None, None, :] != 0)
    sc = sc.masked_fill(~ok, float("-inf"))
    probs = torch.softmax(sc, dim=-1)
    probs = torch.where(ok.any(-1, keepdim=True), probs, torch.zeros_like(probs))
    T.update({"attn.q": q, "attn.k": k, "attn.v": v, "attn.mask": mask, "attn.probs": probs.to(dt)})
    p16 = probs.to(dt)
    vf = v.float().view(B, Tk, H, D).transpose(1, 2)
    T["attn.out"] = (p16.float() @ vf).transpose(1, 2).reshape(B, Tq, H * D).to(dt)

    # activations: torch's 16-bit kernels
    xa = act16(257, scale=6.0)
    T.update({"act.in": xa, "act.gelu_tanh": F.gelu(xa, approximate="tanh"), "act.gelu_erf": F.gelu(xa),
              "act.relu": F.relu(xa), "act.sigmoid": torch.sigmoid(xa), "act.tanh": torch.tanh(xa)})

    # softmax over rows
    xs = act16(3, 19, scale=5.0)
    T.update({"softmax.in": xs, "softmax.out": torch.softmax(xs, dim=-1)})

    # rotary (GPT-NeoX rotate-half over the first rot dims of each head), rows of stride ld
    B, Tn, H, D, rot, ld, base = 2, 3, 2, 8, 6, 21, 10000.0
    xr = act16(B * Tn, ld, scale=2.0)
    rpos = torch.tensor([[0, 4, 7], [2, 3, 11]], dtype=torch.int32)
    inv = 1.0 / (base ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot))
    ang = rpos.reshape(-1, 1).float() * inv[None, :]  # (B*T, rot/2)
    cos, sin = torch.cos(ang), torch.sin(ang)
    out = xr.clone()
    half = rot // 2
    for h in range(H):
        lo = xr[:, h * D:h * D + half].float()
        hi = xr[:, h * D + half:h * D + rot].float()
        out[:, h * D:h * D + half] = (lo * cos - hi * sin).to(dt)
        out[:, h * D + half:h * D + rot] = (hi * cos + lo * sin).to(dt)
    T.update({"rot.in": xr, "rot.pos": rpos, "rot.out": out})

    # GRU element-wise steps (f32 expression, one rounding)
    ga, gb, gc = act16(55), act16(55), act16(55)
    ga01 = torch.sigmoid(ga.float()).to(dt)  # a gate in (0, 1)
    T.update({"gru.a": ga, "gru.b": gb, "gru.c": gc, "gru.z": ga01,
              "gru.new_gate_in": (ga.float() + gb.float() * gc.float()).to(dt),
              "gru.hidden": (ga01.float() * gb.float() + (1 - ga01.float()) * gc.float()).to(dt)})

    # permute_heads: (B, T, H, D) <-> (B, H, T, D), a move
    xp = act16(2, 3, 4, 5)
    T.update({"perm.in": xp, "perm.to_heads": xp.transpose(1, 2).contiguous()})

    # convert: f32 -> dt (ties, subnormals, overflow, specials) and dt -> f32
    special = torch.tensor([0.0, -0.0, 1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 1.0 + 2 ** -11, 1.0 + 3 * 2 ** -11,
                            65504.0, 65520.0, 70000.0, 1e-7, 6e-8, 3e38, -3e38, float("inf"), float("-inf"),
                            float("nan")], dtype=torch.float32)
    cv = torch.cat([special, rnd(64, scale=100.0)])
    T.update({"cvt.f32": cv, "cvt.out": cv.to(dt)})
    return {k: v.contiguous() for k, v in T.items()}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, dt, seed in (("bf16", torch.bfloat16, 1), ("f16", torch.float16, 2)):
        path = os.path.join(OUT, f"{name}.safetensors")
        save_file(make(dt, seed), path, {"torch": torch.__version__})
        print("wrote", path)


if __name__ == "__main__":
    main()
