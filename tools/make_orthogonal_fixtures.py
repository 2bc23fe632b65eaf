#!/usr/bin/env python
"""torch's orthogonal parametrization (torch.nn.utils.parametrizations.orthogonal, the default
use_trivialization=True) on pyvene 0.1.8's rotate layers, forward and backward, for
tests/test_orthogonal.cpp: tests/fixtures/orthogonal/orthogonal.safetensors.

For each case: the layer's parameter X ("parametrizations.weight.original") set to random
values (not its initial -I, so the gradients through matrix_exp / householder_product are not
trivial; for the tall case X's diagonal stays -1 as torch keeps it), the base buffer
("parametrizations.weight.0.base"), the materialised weight W, a random G and the gradient of
L = sum(W * G) with respect to X, computed by torch autograd in float64 (the C side computes in
double too). Cases: square n = 7 (small entries: no squaring), square n = 9 with large entries
(several squarings), tall 10 x 1, 10 x 3, 6 x 6 is square... (see CASES).
Usage: /work/venv/bin/python tools/make_orthogonal_fixtures.py   (deterministic)
"""
import os
import torch
import transformers  # noqa: F401 (pyvene imports it; versions recorded below)
import pyvene as pv
from make_pyvene_fixtures import save_safetensors, pv_version

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "fixtures", "orthogonal", "orthogonal.safetensors")
CASES = [("sq7_small", 7, 7, 0.05), ("sq9_large", 9, 9, 1.5), ("sq16_mid", 16, 16, 0.3),
         ("tall10x1", 10, 1, 0.4), ("tall10x3", 10, 3, 0.4), ("tall24x5", 24, 5, 0.7)]


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    tensors = {}
    for name, n, k, scale in CASES:
        layer = pv.models.layers.RotateLayer(n) if k == n else pv.models.layers.LowRankRotateLayer(n, k)
        layer = torch.nn.utils.parametrizations.orthogonal(layer).double()
        pw = layer.parametrizations.weight
        X = torch.randn(n, k, dtype=torch.float64) * scale
        if k < n:
            X.diagonal().fill_(-1.0)  # torch's right_inverse gives -I; the diagonal never trains
        with torch.no_grad():
            pw.original.copy_(X)
        W = layer.weight
        G = torch.randn(n, k, dtype=torch.float64)
        (W * G).sum().backward()
        tensors[f"{name}.X"] = X.contiguous()
        tensors[f"{name}.base"] = pw[0].base.detach().contiguous()
        tensors[f"{name}.W"] = W.detach().contiguous()
        tensors[f"{name}.G"] = G.contiguous()
        tensors[f"{name}.dX"] = pw.original.grad.detach().contiguous()
    meta = {"torch": torch.__version__, "pyvene": pv_version(), "note": "see tools/make_orthogonal_fixtures.py"}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_safetensors(tensors, OUT, meta)
    print("wrote", OUT, len(tensors), "tensors")


if __name__ == "__main__":
    main()
