#!/usr/bin/env python
"""torch's Adam / AdamW with transformers' linear warm-up schedule, for tests/test_optim.cpp:
tests/fixtures/optim/optim.safetensors. Per case: the initial f32 parameters, the gradients of
each of 12 steps (random, fixed), and the parameters and learning rate after every step, from
torch.optim.Adam/AdamW (CPU, single-tensor path: foreach=False) stepped with
transformers.get_linear_schedule_with_warmup (3 warm-up steps of 12).
Usage: /work/venv/bin/python tools/make_optim_fixtures.py   (deterministic)"""
import os
import torch
import transformers
from make_pyvene_fixtures import save_safetensors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "fixtures", "optim", "optim.safetensors")
STEPS, WARMUP, N = 12, 3, 37
CASES = [("adam", torch.optim.Adam, dict(lr=1e-3)),
         ("adam_l2", torch.optim.Adam, dict(lr=5e-3, weight_decay=0.1)),
         ("adamw", torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.01, betas=(0.8, 0.99), eps=1e-6))]


def main():
    torch.manual_seed(0)
    tensors = {}
    for name, cls, kw in CASES:
        p = torch.nn.Parameter(torch.randn(N))
        tensors[f"{name}.init"] = p.detach().clone()
        opt = cls([p], foreach=False, **kw)
        sched = transformers.get_linear_schedule_with_warmup(opt, WARMUP, STEPS)
        grads, params, lrs = [], [], []
        for _ in range(STEPS):
            g = torch.randn(N) * 0.3
            p.grad = g.clone()
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
            grads.append(g)
            params.append(p.detach().clone())
        tensors[f"{name}.grads"] = torch.stack(grads)
        tensors[f"{name}.params"] = torch.stack(params)
        tensors[f"{name}.lr"] = torch.tensor(lrs, dtype=torch.float64)
    meta = {"torch": torch.__version__, "transformers": transformers.__version__,
            "note": "see tools/make_optim_fixtures.py"}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_safetensors(tensors, OUT, meta)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
