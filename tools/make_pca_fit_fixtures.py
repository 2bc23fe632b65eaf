"""Fixtures for cvene's PCA fit (tr_pca_fit, engine/tr_autoencoder.c): tests/fixtures/training/pca_fit/.

pyvene's PCARotatedSpaceIntervention takes `pca` (an sklearn PCA: it reads `components_`), `pca_mean`
and `pca_std`; its users fit them on collected activations as RAVEL's and CausalAbstraction's
featurizers do:

    pca_mean = X.mean(axis=0); pca_std = X.var(axis=0) ** 0.5   (population std; CausalAbstraction
    floors it at 1e-6); Z = (X - pca_mean) / pca_std; components_ = PCA(n_components=k).fit(Z).components_

sklearn is not installed here (it is not in tools/requirements.txt), so this script computes the same
numbers with numpy in float64: components_ are the right singular vectors of the centred Z (sklearn's
full solver; its covariance_eigh solver gives the eigenvectors of Z's covariance, the same vectors), by
decreasing singular value, each signed so its largest-|.| entry is positive (sklearn >= 1.5's
svd_flip(u_based_decision=False); sklearn < 1.5's full solver signed by U instead, which can flip a
row). With sklearn installed, the script also checks its numbers against sklearn's, up to that sign.

Each case: X (n, D) float32 (the data), mean, std (D), components (k, D) float32, variance (k) float64
(the eigenvalues, for the test to see which components are well defined), n_defined (metadata: the
leading components whose eigenvalue is separated from its neighbours by > 1e-3 relative; the others
are arbitrary within their eigenspace), and base, source (5, D), output (5, D): pyvene's forward with
the fitted basis and interchange_dim k_swap (metadata), which no component's sign changes.

Run: python tools/make_pca_fit_fixtures.py   (numpy, safetensors; deterministic, byte-identical)
"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "training", "pca_fit")


def save_safetensors(tensors, path, metadata):
    """safetensors with sorted metadata and tensor names (byte-identical re-runs; the library's
    writer orders its metadata by a hash map)."""
    dt = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64"}
    header = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, off = [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dt[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)
    back = load_file(path)
    assert sorted(back) == sorted(tensors) and all(np.array_equal(back[k], tensors[k]) for k in tensors), path


def fit(X, k):
    X64 = X.astype(np.float64)
    mean = X64.mean(axis=0)
    std = np.sqrt(((X64 - mean) ** 2).mean(axis=0))
    std = np.where(std < 1e-6, 1e-6, std)
    Z = (X64 - mean) / std
    Z = Z - Z.mean(axis=0)  # sklearn centres again
    _, s, vt = np.linalg.svd(Z, full_matrices=False)
    at = np.argmax(np.abs(vt), axis=1)
    vt = vt * np.sign(vt[np.arange(vt.shape[0]), at])[:, None]
    var = s ** 2 / (X.shape[0] - 1)
    return mean, std, vt[:k], var[:k]  # (var: every singular value's, min(n, D) of them)


def n_defined(var, D, k):
    """Leading components (of k) whose eigenvalue is apart from its neighbours in Z's full spectrum
    (D values: those past the data's rank are 0) by > 1e-3 of the largest: the others are arbitrary
    within their eigenspace."""
    full = np.concatenate([var, np.zeros(max(0, D - len(var)))])
    n = 0
    for i in range(k):
        gaps = [abs(full[i] - full[j]) for j in (i - 1, i + 1) if 0 <= j < D]
        if min(gaps + [np.inf]) <= 1e-3 * full[0]:
            break
        n += 1
    return n


def pyvene_forward(base, source, C, mu, sd, k_swap):
    """PCARotatedSpaceIntervention.forward without subspaces, in float64."""
    rb = ((base - mu) / sd) @ C.T
    rs = ((source - mu) / sd) @ C.T
    rb[:, :k_swap] = rs[:, :k_swap]
    return (rb @ C) * sd + mu


def case(name, X, k, k_swap, rng, note):
    n, D = X.shape
    mean, std, C, var_all = fit(X, D)
    var = var_all[:k]
    C = C[:k]
    base = (X[:5] + 0.3 * rng.standard_normal((5, D))).astype(np.float32)
    source = (X[5:10] + 0.3 * rng.standard_normal((5, D))).astype(np.float32)
    out = pyvene_forward(base.astype(np.float64), source.astype(np.float64), C.astype(np.float32).astype(np.float64),
                         mean.astype(np.float32).astype(np.float64), std.astype(np.float32).astype(np.float64), k_swap)
    nd = n_defined(var_all, D, k)
    try:  # optional: sklearn's own numbers, up to a sign per component
        from sklearn.decomposition import PCA
        sk = PCA(n_components=k).fit(((X.astype(np.float64) - mean) / std))
        for i in range(nd):
            d = min(np.abs(sk.components_[i] - C[i]).max(), np.abs(sk.components_[i] + C[i]).max())
            assert d < 1e-8, (name, i, d)
        print("  sklearn agrees", name)
    except ImportError:
        pass
    tensors = {"X": X.astype(np.float32), "mean": mean.astype(np.float32), "std": std.astype(np.float32),
               "components": C.astype(np.float32), "variance": var.astype(np.float64), "base": base,
               "source": source, "output": out.astype(np.float32)}
    meta = {"case": name, "note": note, "n_components": str(k), "n_defined": str(nd), "k_swap": str(k_swap),
            "generator": "tools/make_pca_fit_fixtures.py", "numpy": np.__version__,
            "python": sys.version.split()[0]}
    save_safetensors(tensors, os.path.join(OUT, name + ".safetensors"), meta)
    return {"name": name, "n": n, "D": D, "n_components": k, "n_defined": nd, "k_swap": k_swap, "note": note}


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261213)
    cases = []
    # correlated data with distinct variances along a random basis, offsets and per-dim scales
    D = 12
    Q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    X = (rng.standard_normal((300, D)) * np.linspace(3.0, 0.3, D)) @ Q.T
    X = X * rng.uniform(0.5, 4.0, D) + rng.uniform(-5.0, 5.0, D)
    cases.append(case("pca_d12_all", X.astype(np.float32), D, 5, rng,
                      "300 rows, D=12, every component (sklearn's default n_components = min(n, D))"))
    cases.append(case("pca_d12_k5", X.astype(np.float32), 5, 3, rng, "the same data, n_components=5"))
    # a constant dim: std floored at 1e-6, its standardised column is 0, its component e_3 (eigenvalue 0)
    Xc = rng.standard_normal((60, 8)) @ rng.standard_normal((8, 8)) + 2.0
    Xc[:, 3] = 7.25
    cases.append(case("pca_d8_const", Xc.astype(np.float32), 8, 4, rng,
                      "60 rows, D=8, dim 3 constant (std floored at 1e-6)"))
    # fewer rows than dims: k = min(n, D) = 6; after centring the data has rank 5, the 6th is arbitrary
    Xw = rng.standard_normal((6, 10)) * np.linspace(2.0, 1.0, 10)
    cases.append(case("pca_d10_n6", Xw.astype(np.float32), 6, 2, rng,
                      "6 rows, D=10: min(n, D) = 6 components, the last one arbitrary (rank 5 after centring)"))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"generator": "tools/make_pca_fit_fixtures.py", "numpy": np.__version__, "cases": cases}, f,
                  indent=1, sort_keys=True)
        f.write("\n")
    for c in cases:
        print(c["name"], "components", c["n_components"], "well defined", c["n_defined"])


if __name__ == "__main__":
    main()
