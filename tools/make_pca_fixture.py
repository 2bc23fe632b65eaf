"""Fixture for cvene_trainer_fit_pca (tests/test_trained_run.cpp, PcaFromData): a PCA fitted, as
pyvene's users fit one, to the demo model's activations at block_output of layer 2 at each
example's base position, for the first 48 examples of assets/demo-gpt2/das_colour/train.jsonl.

Reference: transformers' hidden_states[3] (the output of block 2) in f32; numpy in float64:
mean, population std (floored at 1e-6), the eigenvectors of the standardised data's covariance
by decreasing eigenvalue (sklearn's PCA components_), each signed so its largest-|.| entry is
positive (sklearn >= 1.5). Writes tests/fixtures/training/pca_demo.safetensors (ids, lens, pos,
pca_mean, pca_std, pca_components, eigenvalues).

    /work/venv/bin/python tools/make_pca_fixture.py
"""
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import GPT2LMHeadModel, GPT2TokenizerFast

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assets" / "demo-gpt2"
N, LAYER = 48, 2


def main():
    tok = GPT2TokenizerFast.from_pretrained(DEMO)
    model = GPT2LMHeadModel.from_pretrained(DEMO).eval()
    lines = (DEMO / "das_colour" / "train.jsonl").read_text().splitlines()[:N]
    rows, ids, lens, pos = [], [], [], []
    for line in lines:
        e = json.loads(line)
        x = tok(e["base"])["input_ids"]
        p = e["base_pos"] if e["base_pos"] >= 0 else len(x) + e["base_pos"]
        with torch.no_grad():
            h = model(torch.tensor([x]), output_hidden_states=True).hidden_states[LAYER + 1][0, p]
        rows.append(h.double().numpy())
        ids.append(x), lens.append(len(x)), pos.append(p)
    X = np.stack(rows)
    mean, std = X.mean(0), X.std(0)
    std = np.where(std < 1e-6, 1e-6, std)
    Z = (X - mean) / std
    cov = np.cov(Z, rowvar=False)  # (n - 1) normalisation, as sklearn's explained_variance_
    w, v = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1]
    w, comps = w[order], v[:, order].T
    for c in comps:
        if c[np.argmax(np.abs(c))] < 0:
            c *= -1
    T = max(lens)
    flat = np.zeros((N, T), dtype=np.int32)
    for i, x in enumerate(ids):
        flat[i, :len(x)] = x
    save_file({"ids": flat, "lens": np.array(lens, dtype=np.int32), "pos": np.array(pos, dtype=np.int32),
               "pca_mean": mean.astype(np.float32), "pca_std": std.astype(np.float32),
               "pca_components": comps.astype(np.float32), "eigenvalues": w.astype(np.float64)},
              str(ROOT / "tests" / "fixtures" / "training" / "pca_demo.safetensors"),
              metadata={"generator": "tools/make_pca_fixture.py", "layer": str(LAYER), "n": str(N)})
    print("eigenvalues", np.round(w[:10], 3), "... min", w.min())


if __name__ == "__main__":
    main()
