#!/usr/bin/env python3
"""Reference gradients for bwd.gru_cell (kernels/backend.h: the element-wise backward of one step
of pyvene's GRUCell), computed by torch autograd through pyvene's own GRUCell.forward, for
tests/test_backward_ops.cpp.

Writes tests/fixtures/backward/gru_cell.safetensors (the other files of that directory are
tools/make_backward_fixtures.py's, whose helpers this script uses):
  saved (8, B, h)    the op's input: h_{t-1}, a_r, a_z, a_n, r, z, n, h_n (kernels/backend.h:
                     cvene_gru_saved) from the float32 forward of the inputs below
  dy (B, h)          the gradient of the cell's output hy
  h, xg, hg          the forward's inputs: h_{t-1} (B, h) and the x2h / h2h outputs (B, 3h)
and, as <name>.f64 / <name>.f32 (autograd in float64 of the same f32 inputs: the exact gradient;
and in float32, as a torch user gets it):
  dx, dhg (3, B, h)  the gradients of x2h's and h2h's outputs, gate-major (reset, update, new)
  dh_prev (B, h)     the gradient of h_{t-1} (the cell's direct use of it: z * h)
  d_r, d_z, d_n      the gradients of the gate outputs r, z, n (B, h)
  d_ar, d_az, d_an   the gradients of the gate activations' inputs (B, h)
The cell's x2h and h2h are replaced by modules that return given tensors, so the GEMMs drop out
and autograd's gradient of those tensors is the gradient of the GEMM outputs; everything else
is pyvene's GRUCell code (sigmoid / tanh modules, chunk, the hidden update). A few gate inputs
are pushed into saturation (sigmoid' and tanh' near 0). Odd sizes (B 3, h 7).

Deterministic: a fixed seed, single-threaded torch, one metadata key; rerunning rewrites the
same bytes. Pinned: tools/requirements.txt (torch 2.5.1, pyvene 0.1.8; runs on CPU).
    python tools/make_gru_backward_fixtures.py
"""
import os
from importlib.metadata import version

import torch
from make_backward_fixtures import OUT, put, rnd
from pyvene.models.gru.modelings_gru import GRUCell, GRUConfig
from safetensors.torch import save_file


class Given(torch.nn.Module):
    """Stands in for x2h / h2h: returns a given (B, 3h) tensor whatever its input."""

    def __init__(self, t):
        super().__init__()
        self.t = t

    def forward(self, _):
        return self.t


def gru_cell(g):
    B, H = 3, 7
    h = rnd(g, B, H, scale=1.5)
    xg = rnd(g, B, 3 * H, scale=3.0)
    hg = rnd(g, B, 3 * H, scale=3.0)
    xg[0, 0] = 14.0           # reset gate saturated high
    xg[1, H + 1] = -15.0      # update gate saturated low
    xg[2, 2 * H + 2] = 9.0    # new gate (tanh) saturated
    dy = rnd(g, B, H)
    T = {"h": h, "xg": xg, "hg": hg, "dy": dy}
    refs = {}
    for name, dt in (("f64", torch.float64), ("f32", torch.float32)):
        cell = GRUCell(GRUConfig(h_dim=H, include_bias=False)).to(dt)
        h_ = h.to(dt).requires_grad_(True)
        xg_ = xg.to(dt).requires_grad_(True)
        hg_ = hg.to(dt).requires_grad_(True)
        cell.x2h, cell.h2h = Given(xg_), Given(hg_)
        kept = {}

        def keep(key, t):
            t.retain_grad()
            kept[key] = t

        for gate, act in (("r", cell.reset_act), ("z", cell.update_act), ("n", cell.new_act)):
            act.register_forward_pre_hook(lambda m, args, gate=gate: keep("a" + gate, args[0]))
            act.register_forward_hook(lambda m, args, out, gate=gate: keep(gate, out))
        hy = cell(torch.zeros(B, H, dtype=dt), h_)
        hy.backward(dy.to(dt))
        thirds = lambda t: t.detach().view(B, 3, H).permute(1, 0, 2)  # (B, 3h) -> (3, B, h)
        r = {"dx": thirds(xg_.grad), "dhg": thirds(hg_.grad), "dh_prev": h_.grad.detach()}
        for k in ("r", "z", "n", "ar", "az", "an"):
            r["d_" + k] = kept[k].grad.detach()
        refs[name] = r
        if dt == torch.float32:
            T["saved"] = torch.stack([h, kept["ar"].detach(), kept["az"].detach(), kept["an"].detach(),
                                      kept["r"].detach(), kept["z"].detach(), kept["n"].detach(),
                                      hg[:, 2 * H:]])
    for k in refs["f64"]:
        put(T, k, {dtn: refs[dtn][k] for dtn in refs})
    return T


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    meta = {"made_by": f"tools/make_gru_backward_fixtures.py; torch {torch.__version__}; "
                       f"pyvene {version('pyvene')}"}
    T = {k: v.contiguous() for k, v in gru_cell(torch.Generator().manual_seed(2000)).items()}
    path = os.path.join(OUT, "gru_cell.safetensors")
    save_file(T, path, meta)
    print("wrote", path)


if __name__ == "__main__":
    main()
