"""How far does torch's own 20-step training move when its gradients change by float noise?

tests/test_training.cpp (Trajectories) compares cvene's 20 optimizer steps with pyvene's. cvene's
forward and backward are not bitwise torch's (another GEMM, another summation order), so its
gradients differ from torch's by ~1e-6 relative. Adam divides by sqrt(v), so in entries whose
true gradient is zero (a square rotation's null space: rotations among the dims the mask ignores)
torch's f32 noise becomes lr-sized steps of arbitrary sign. This script measures what that does
to torch itself: it replays every train/ case of tests/fixtures/training (the fixtures' own
pyvene-free replay: hand-written hook, formula and Adam, tools/make_training_fixtures.py) with
each gradient multiplied by (1 + eps * N(0, 1)), and reports, against the unperturbed fixtures,

  - the largest relative change of a step's loss,
  - for square rotations: the change of E = W diag(m) W^T, the map the intervention applies,
    as a fraction of E's movement over the run,
  - for every other parameter: the change as a fraction of its movement.

The test's tolerances are set from these numbers (a factor of ~10 above them).

    python tools/trajectory_sensitivity.py [--eps 1e-6] [--seeds 3]
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_training_fixtures as M  # noqa: E402

ORIG = "rotate_layer.parametrizations.weight.original"
BASE = "rotate_layer.parametrizations.weight.0.base"


def mask_of(case, P, temperature, D):
    i = torch.arange(D, dtype=torch.float32)
    if case["type"] == "RotatedSpaceIntervention":
        return (i < case["interchange_dim"]).float()
    b = P["intervention_boundaries"].clamp(1e-3, 1.0)[0]
    return torch.sigmoid(i / temperature) * torch.sigmoid((b * D - i) / temperature)


def effective(P, base, mask):
    W = M.ref_orthogonal_weight(P[ORIG].double(), base.double())
    return W @ torch.diag(mask.double()) @ W.T


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eps", type=float, default=1e-6)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = M.load_gpt2()
    data = M.make_dataset(model)
    manifest = json.load(open(os.path.join(M.OUT_ROOT, "manifest.json")))
    hand_step = M.HandAdam.step
    print(f"gradients x (1 + {args.eps:g} N(0,1)), {args.seeds} seeds; worst over seeds")
    print(f"{'case':22} {'loss rel':>10} {'quantity':50} {'change/movement':>16}")
    for c in [c for c in manifest["cases"] if c["kind"] == "train"]:
        ref = load_file(os.path.join(M.OUT_ROOT, c["dir"], "trajectory.safetensors"))
        lore = any(k.startswith("init.module.") for k in ref)
        pre = "init.module." if lore else "init."
        init = {k[len(pre):]: v for k, v in ref.items() if k.startswith(pre)}
        fin_pre = "final.module." if lore else "final."
        spec = dict(c, optimizer=c["optimizer"]["class"], boundless=c["type"].startswith("Boundless"))
        groups = [g["params"] for g in c["optimizer"]["param_groups"]]
        hp = M.ADAMW if spec["optimizer"] == "AdamW" else M.ADAM
        square = c["type"] in ("RotatedSpaceIntervention", "BoundlessRotatedSpaceIntervention")
        worst_loss, worst = 0.0, {}
        for seed in range(args.seeds):
            gen = torch.Generator().manual_seed(seed)

            def noisy(self, n, p, g, lr, gen=gen):
                if g is not None:
                    g = g * (1 + args.eps * torch.randn(g.shape, generator=gen))
                return hand_step(self, n, p, g, lr)

            M.HandAdam.step = noisy
            try:
                losses, final = M.replay_training(model, data, spec, init, groups, hp)
            finally:
                M.HandAdam.step = hand_step
            want = ref["loss"].double()
            worst_loss = max(worst_loss, ((torch.tensor(losses) - want).abs() / want.abs()).max().item())
            for n, v in final.items():
                ini, fin = init[n], ref[fin_pre + n]
                if square and n == ORIG:
                    T = float(ref["temperature_schedule"][-1]) if spec["boundless"] else 1.0
                    Pf = dict(final, **{n: v})
                    Pr = {n: fin, "intervention_boundaries": ref.get("final.intervention_boundaries")}
                    Pi = {n: ini, "intervention_boundaries": ref.get("final.intervention_boundaries")}
                    base = init[BASE]
                    e_ref = effective(Pr, base, mask_of(c, Pr, T, base.shape[0]))
                    e_got = effective(Pf, base, mask_of(c, Pr, T, base.shape[0]))
                    e_ini = effective(Pi, base, mask_of(c, Pr, T, base.shape[0]))
                    q, r = "E = W diag(m) W^T", (e_got - e_ref).abs().max() / (e_ref - e_ini).abs().max()
                else:
                    q, r = n, (v - fin).abs().max() / max((fin - ini).abs().max().item(), 1e-30)
                worst[q] = max(worst.get(q, 0.0), float(r))
        first = True
        for q, r in worst.items():
            print(f"{c['name'] if first else '':22} {worst_loss if first else float('nan'):10.2e} {q:50} {r:16.2e}")
            first = False


if __name__ == "__main__":
    main()
