#!/usr/bin/env python
"""Generate the TRAINING reference fixtures for cvene (issue #13): tests/fixtures/training/.

Three kinds of cases (docs/training_semantics.md explains every formula they exercise):

  unit/<name>.safetensors     one pyvene 0.1.8 (or pyreft-0.1.0-equivalent) trainable intervention
                              module in isolation: its state_dict, base, source, an upstream
                              gradient G, the forward output and the gradients of
                              L = sum(output * G) w.r.t. every trainable parameter, base and source.
  sites/<model>.safetensors   gradients of a loss w.r.t. every stream (site) of the GPT-2, GPT-NeoX
                              and GRU fixture models (no intervention), for two losses.
  model/<name>/               one pyvene IntervenableModel with one trainable intervention on the
                              GPT-2 fixture: pyvene's saved config.json + intkey_*.bin, inputs.json,
                              expected.safetensors (state, loss, parameter gradients).
  train/<name>/               20 optimizer steps on the GPT-2 fixture (DAS, LowRank, Boundless,
                              SigmoidMask, LoReFT; Adam and one AdamW): config.json,
                              trajectory.safetensors (initial/final state, loss, lr, ...);
                              train/dataset.json is the shared synthetic dataset.
  manifest.json               every case with its parameters.

Everything is verified inside this script before it is written (the run aborts on a mismatch):
  - unit: the output and gradients are recomputed from the formulas written in
    docs/training_semantics.md (hand-written matrix_exp / Householder materialisation, masks,
    encoders), and torch.autograd.gradcheck runs on a float64 copy of every module;
  - sites: each stored gradient is checked against a central finite difference of a float64 copy
    of the model along a random direction, injected at the same tensor by a hook;
  - model: pyvene's loss and gradients are recomputed with a hand-written hook that patches the
    stream with the documented formula;
  - train: every optimizer step is replayed by a hand-written Adam / AdamW + linear-warmup
    schedule (must be bit-identical to torch's), and the whole run is replayed with hand-written
    hooks (must agree to float32 rounding).

LoReFT and its variants: pyreft 0.1.0 pins transformers==4.45.1, so it is not installed here;
the classes below re-implement pyreft/interventions.py's formulas, RNG order and state_dict
override. With PYREFT_INTERVENTIONS=/path/to/pyreft/interventions.py in the environment the
script also imports that file and checks that both give identical state, outputs and gradients.

Usage (from the repository root; deterministic: a re-run yields identical bytes):
    python -m venv v && v/bin/pip install -r tools/requirements.txt
    v/bin/python tools/make_training_fixtures.py
"""

import collections
import contextlib
import copy
import importlib.util
import io
import json
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import warnings
import zlib

import numpy as np
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import (GPT2LMHeadModel, GPTNeoXForCausalLM, get_linear_schedule_with_warmup)
from transformers.activations import ACT2FN

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

import pyvene as pv  # noqa: E402  (prints "nnsight is not detected", harmless)
from pyvene.models.gru.modelings_gru import GRUConfig, GRUForClassification, GRULMHeadModel  # noqa: E402
from pyvene.models.interventions import (  # noqa: E402
    AutoencoderIntervention, BoundlessRotatedSpaceIntervention, JumpReLUAutoencoderIntervention,
    LowRankRotatedSpaceIntervention, PCARotatedSpaceIntervention, RotatedSpaceIntervention,
    SigmoidMaskIntervention, SigmoidMaskRotatedSpaceIntervention)
from pyvene.models.modeling_utils import do_intervention  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_pyvene_weights  # noqa: E402  (tools/: .bin -> .safetensors, tensor for tensor)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_ROOT = os.path.join(REPO, "tests", "fixtures", "training")
GPT2_DIR = os.path.join(REPO, "tests", "fixtures", "gpt2", "small", "model")
NEOX_DIR = os.path.join(REPO, "tests", "fixtures", "neox", "par_rot25", "model")
GRU_DIR = os.path.join(REPO, "tests", "fixtures", "gru", "lm2", "model")
GRU_CLS_DIR = os.path.join(REPO, "tests", "fixtures", "gru", "cls2", "model")
SIZE_LIMIT = 6 * 1024 * 1024


def versions():
    from importlib.metadata import version
    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "pyvene": version("pyvene"), "numpy": np.__version__,
            "safetensors": version("safetensors"), "python": platform.python_version()}


VERSIONS = None


# --------------------------------------------------------------------------------------------
# deterministic safetensors writer (as tools/make_pyvene_fixtures.py, plus I64)
def save_safetensors(tensors, path, metadata):
    dt = {torch.float32: "F32", torch.int32: "I32", torch.float64: "F64", torch.int64: "I64"}
    meta = dict(VERSIONS)
    meta.update(metadata)
    header = {"__metadata__": dict(sorted(meta.items()))}
    blobs = []
    off = 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        assert t.dtype in dt, (name, t.dtype)
        b = t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dt[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)
    with safe_open(path, framework="pt") as f:
        assert f.metadata() == dict(sorted(meta.items()))
        assert sorted(f.keys()) == sorted(tensors)
        for name in tensors:
            got = f.get_tensor(name)
            assert got.dtype == tensors[name].dtype and torch.equal(got, tensors[name].detach()), name


def close(a, b, what, rtol=1e-5, atol=0.0):
    a = a.detach().double()
    b = b.detach().double()
    assert a.shape == b.shape, (what, tuple(a.shape), tuple(b.shape))
    err = (a - b).abs().max().item() if a.numel() else 0.0
    scale = max(b.abs().max().item() if b.numel() else 0.0, 1e-30)
    assert err <= rtol * scale + atol, f"{what}: max err {err:.3e} (scale {scale:.3e})"
    return err


def seed_of(name):
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


# --------------------------------------------------------------------------------------------
# pyreft 0.1.0 interventions (pyreft/interventions.py), re-implemented: same class hierarchy,
# same constructor RNG order, same forward formulas and LoreftIntervention's state_dict override.
# __module__ is set so that str(type(obj)) (what IntervenableModel.save writes) names pyreft.
class _ReftLowRankRotateLayer(torch.nn.Module):
    """pyreft's own LowRankRotateLayer (same as pyvene's): weight (n, m), orthogonal_ init."""

    def __init__(self, n, m, init_orth=True):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(n, m), requires_grad=True)
        if init_orth:
            torch.nn.init.orthogonal_(self.weight)

    def forward(self, x):
        return torch.matmul(x.to(self.weight.dtype), self.weight)


def _reft_act(kwargs):
    return ACT2FN["linear"] if kwargs.get("act_fn") is None else ACT2FN[kwargs["act_fn"]]


def _reft_dtype(kwargs):
    return kwargs["dtype"] if "dtype" in kwargs else torch.bfloat16


class LoreftIntervention(pv.SourcelessIntervention, pv.TrainableIntervention,
                         pv.DistributedRepresentationIntervention):
    """LoReFT(h) = h + R^T(Wh + b - Rh)"""

    def __init__(self, **kwargs):
        super().__init__(**kwargs, keep_last_dim=True)
        rotate_layer = _ReftLowRankRotateLayer(self.embed_dim, kwargs["low_rank_dimension"], init_orth=True)
        self.rotate_layer = torch.nn.utils.parametrizations.orthogonal(rotate_layer)
        self.learned_source = torch.nn.Linear(self.embed_dim, kwargs["low_rank_dimension"]).to(_reft_dtype(kwargs))
        self.dropout = torch.nn.Dropout(kwargs["dropout"] if "dropout" in kwargs else 0.0)
        self.act_fn = _reft_act(kwargs)

    def forward(self, base, source=None, subspaces=None):
        rotated_base = self.rotate_layer(base)
        output = base + torch.matmul(
            (self.act_fn(self.learned_source(base)) - rotated_base), self.rotate_layer.weight.T)
        return self.dropout(output.to(base.dtype))

    def state_dict(self, *args, **kwargs):
        state_dict = collections.OrderedDict()
        for k, v in self.learned_source.state_dict().items():
            state_dict[k] = v
        state_dict["rotate_layer"] = self.rotate_layer.weight.data
        return state_dict

    def load_state_dict(self, state_dict, *args, **kwargs):
        self.learned_source.load_state_dict(state_dict, strict=False)
        overload_w = state_dict["rotate_layer"].to(self.learned_source.weight.device)
        overload_w_width = overload_w.shape[-1]
        rotate_layer = _ReftLowRankRotateLayer(self.embed_dim, overload_w_width, init_orth=True).to(
            self.learned_source.weight.device)
        self.rotate_layer = torch.nn.utils.parametrizations.orthogonal(rotate_layer)
        self.rotate_layer.parametrizations.weight[0].base[:, :overload_w_width] = overload_w
        assert torch.allclose(self.rotate_layer.weight.data, overload_w.data)
        return


class NoreftIntervention(pv.SourcelessIntervention, pv.TrainableIntervention,
                         pv.DistributedRepresentationIntervention):
    """NoReFT(h) = h + W2^T(W1h + b - W2h)"""

    def __init__(self, **kwargs):
        super().__init__(**kwargs, keep_last_dim=True)
        self.proj_layer = torch.nn.Linear(self.embed_dim, kwargs["low_rank_dimension"],
                                          bias=kwargs["add_bias"]).to(_reft_dtype(kwargs))
        self.learned_source = torch.nn.Linear(self.embed_dim, kwargs["low_rank_dimension"]).to(_reft_dtype(kwargs))
        self.dropout = torch.nn.Dropout(kwargs["dropout"] if "dropout" in kwargs else 0.0)
        self.act_fn = _reft_act(kwargs)

    def forward(self, base, source=None, subspaces=None):
        proj_base = self.proj_layer(base)
        output = base + torch.matmul(
            (self.act_fn(self.learned_source(base)) - proj_base), self.proj_layer.weight)
        return self.dropout(output.to(base.dtype))


class ConsreftIntervention(pv.SourcelessIntervention, pv.TrainableIntervention,
                           pv.DistributedRepresentationIntervention):
    """ConsReFT(h) = h + R^T(b - Rh)"""

    def __init__(self, **kwargs):
        super().__init__(**kwargs, keep_last_dim=True)
        rotate_layer = _ReftLowRankRotateLayer(self.embed_dim, kwargs["low_rank_dimension"], init_orth=True)
        self.rotate_layer = torch.nn.utils.parametrizations.orthogonal(rotate_layer)
        self.learned_source = torch.nn.Parameter(torch.rand(kwargs["low_rank_dimension"]), requires_grad=True)

    def forward(self, base, source=None, subspaces=None):
        rotated_base = self.rotate_layer(base)
        output = base + torch.matmul((self.learned_source - rotated_base), self.rotate_layer.weight.T)
        return output.to(base.dtype)


class LobireftIntervention(pv.SourcelessIntervention, pv.TrainableIntervention,
                           pv.DistributedRepresentationIntervention):
    """LobiReFT(h) = h + R^T(b)"""

    def __init__(self, **kwargs):
        super().__init__(**kwargs, keep_last_dim=True)
        rotate_layer = _ReftLowRankRotateLayer(self.embed_dim, kwargs["low_rank_dimension"], init_orth=True)
        self.rotate_layer = torch.nn.utils.parametrizations.orthogonal(rotate_layer)
        self.learned_source = torch.nn.Parameter(torch.rand(kwargs["low_rank_dimension"]), requires_grad=True)
        self.dropout = torch.nn.Dropout(kwargs["dropout"] if "dropout" in kwargs else 0.0)

    def forward(self, base, source=None, subspaces=None):
        output = base + torch.matmul(self.learned_source, self.rotate_layer.weight.T)
        return self.dropout(output.to(base.dtype))


class DireftIntervention(pv.SourcelessIntervention, pv.TrainableIntervention,
                         pv.DistributedRepresentationIntervention):
    """DiReFT(h) = h + R^T(Wh + b)"""

    def __init__(self, **kwargs):
        super().__init__(**kwargs, keep_last_dim=True)
        rotate_layer = _ReftLowRankRotateLayer(self.embed_dim, kwargs["low_rank_dimension"], init_orth=True)
        self.rotate_layer = torch.nn.utils.parametrizations.orthogonal(rotate_layer)
        self.learned_source = torch.nn.Linear(self.embed_dim, kwargs["low_rank_dimension"]).to(_reft_dtype(kwargs))
        self.dropout = torch.nn.Dropout(kwargs["dropout"] if "dropout" in kwargs else 0.0)
        self.act_fn = _reft_act(kwargs)

    def forward(self, base, source=None, subspaces=None):
        cast_base = base.to(self.learned_source.weight.dtype)
        output = base + torch.matmul(
            (self.act_fn(self.learned_source(cast_base))).to(self.rotate_layer.weight.dtype),
            self.rotate_layer.weight.T)
        return self.dropout(output.to(base.dtype))


class NodireftIntervention(pv.SourcelessIntervention, pv.TrainableIntervention,
                           pv.DistributedRepresentationIntervention):
    """NodiReFT(h) = h + W2^T(W1h + b)"""

    def __init__(self, **kwargs):
        super().__init__(**kwargs, keep_last_dim=True)
        self.proj_layer = torch.nn.Linear(self.embed_dim, kwargs["low_rank_dimension"],
                                          bias=kwargs["add_bias"]).to(_reft_dtype(kwargs))
        self.learned_source = torch.nn.Linear(self.embed_dim, kwargs["low_rank_dimension"]).to(_reft_dtype(kwargs))
        self.dropout = torch.nn.Dropout(kwargs["dropout"] if "dropout" in kwargs else 0.0)
        self.act_fn = _reft_act(kwargs)

    def forward(self, base, source=None, subspaces=None):
        output = base + torch.matmul(self.act_fn(self.learned_source(base)), self.proj_layer.weight)
        return self.dropout(output.to(base.dtype))


REFT_CLASSES = [LoreftIntervention, NoreftIntervention, ConsreftIntervention, LobireftIntervention,
                DireftIntervention, NodireftIntervention]
for _c in REFT_CLASSES:
    _c.__module__ = "pyreft.interventions"

PV_CLASSES = {c.__name__: c for c in [
    RotatedSpaceIntervention, LowRankRotatedSpaceIntervention, BoundlessRotatedSpaceIntervention,
    SigmoidMaskRotatedSpaceIntervention, SigmoidMaskIntervention, PCARotatedSpaceIntervention,
    AutoencoderIntervention, JumpReLUAutoencoderIntervention] + REFT_CLASSES}


def check_against_real_pyreft():
    """Optional: compare the classes above with pyreft's own file (PYREFT_INTERVENTIONS)."""
    path = os.environ.get("PYREFT_INTERVENTIONS")
    if not path:
        return False
    spec = importlib.util.spec_from_file_location("real_pyreft_interventions", path)
    real = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real)
    D, r = 12, 4
    g = torch.Generator().manual_seed(99)
    base = torch.randn(5, D, generator=g)
    G = torch.randn(5, D, generator=g)
    for ours in REFT_CLASSES:
        theirs = getattr(real, ours.__name__)
        kw = dict(embed_dim=D, low_rank_dimension=r, dtype=torch.float32)
        if "Noreft" in ours.__name__ or "Nodireft" in ours.__name__:
            kw["add_bias"] = ours is NoreftIntervention
        torch.manual_seed(5)
        a = ours(**kw)
        ra = torch.rand(3)
        torch.manual_seed(5)
        b = theirs(**kw)
        rb = torch.rand(3)
        assert torch.equal(ra, rb), f"{ours.__name__}: constructor RNG use differs from pyreft"
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb), (ours.__name__, list(sa), list(sb))
        for k in sa:
            assert torch.equal(sa[k], sb[k]), (ours.__name__, k)
        for iv in (a, b):
            with torch.no_grad():
                for n, p in iv.named_parameters():
                    p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(n))))
        ba = base.clone().requires_grad_(True)
        bb = base.clone().requires_grad_(True)
        oa, ob = a(ba, None), b(bb, None)
        assert torch.equal(oa, ob), ours.__name__
        (oa * G).sum().backward()
        (ob * G).sum().backward()
        assert torch.equal(ba.grad, bb.grad), ours.__name__
        for (n1, p1), (n2, p2) in zip(a.named_parameters(), b.named_parameters()):
            assert n1 == n2 and torch.equal(p1.grad, p2.grad), (ours.__name__, n1)
    print("  pyreft check: the re-implemented classes match", path)
    return True


# --------------------------------------------------------------------------------------------
# hand-written formulas of docs/training_semantics.md (the independent reference)
def ref_householder_product(A, tau):
    """Q = H_0 H_1 ... H_{k-1} I[:, :k], H_i = I - tau_i v_i v_i^T, v_i = e_i + A[i+1:, i]."""
    n, k = A.shape
    Q = torch.eye(n, dtype=A.dtype)[:, :k].clone()
    for i in reversed(range(k)):
        v = torch.zeros(n, dtype=A.dtype)
        v[i] = 1.0
        v[i + 1:] = A[i + 1:, i]
        Q = Q - tau[i] * torch.outer(v, v @ Q)
    return Q


def ref_orthogonal_weight(original, base):
    """torch.nn.utils.parametrizations.orthogonal's forward, written out (n >= k)."""
    n, k = original.shape
    if n == k:  # matrix_exp map
        X = original.tril()
        A = X - X.T
        return base @ torch.matrix_exp(A)
    A = original.tril(-1)  # householder map
    tau = 2.0 / (1.0 + (A * A).sum(dim=0))
    Q = ref_householder_product(A, tau)
    Q = Q * original.diagonal().trunc().unsqueeze(0)  # .int(): truncation toward zero
    return base @ Q


def ref_orthogonal_backward(original, base, dW):
    """dL/d(original) from dL/dW, written out (the recipe of docs/training_semantics.md)."""
    n, k = original.shape
    dQ = base.T @ dW  # W = base @ Q
    if n == k:
        X = original.tril()
        A = X - X.T
        # Frechet derivative of exp at A, adjoint: the top-right block of exp([[A^T, dQ], [0, A^T]])
        M = torch.zeros(2 * n, 2 * n, dtype=A.dtype)
        M[:n, :n] = A.T
        M[n:, n:] = A.T
        M[:n, n:] = dQ
        dA = torch.matrix_exp(M)[:n, n:]
        return (dA - dA.T).tril()  # A = X - X^T, X = tril(original): the diagonal gets 0
    A = original.tril(-1)
    tau = 2.0 / (1.0 + (A * A).sum(dim=0))
    d = original.diagonal().trunc()
    dQ = dQ * d.unsqueeze(0)  # Q' = Q * int(diag)
    # forward states X_k = I[:, :k], X_i = H_i X_{i+1}; Q = X_0
    V = []
    for i in range(k):
        v = torch.zeros(n, dtype=A.dtype)
        v[i] = 1.0
        v[i + 1:] = A[i + 1:, i]
        V.append(v)
    Xs = [None] * (k + 1)
    Xs[k] = torch.eye(n, dtype=A.dtype)[:, :k]
    for i in reversed(range(k)):
        Xs[i] = Xs[i + 1] - tau[i] * torch.outer(V[i], V[i] @ Xs[i + 1])
    dA = torch.zeros_like(A)
    dX = dQ
    for i in range(k):  # X_i = X_{i+1} - tau_i v_i w_i,  w_i = v_i^T X_{i+1}
        v, X1 = V[i], Xs[i + 1]
        w = v @ X1
        u = v @ dX  # v_i^T dX_i
        dtau = -(u * w).sum()
        dv = -tau[i] * (dX @ w + X1 @ u)
        dA[i + 1:, i] += dv[i + 1:]
        dA[:, i] += dtau * (-tau[i] ** 2) * A[:, i]  # d tau_i / d A[:, i] = -tau_i^2 A[:, i]
        dX = dX - tau[i] * torch.outer(v, u)  # H_i^T dX_i
    return dA.tril(-1)


def ref_swap(rb, rs, interchange_dim, subspaces, partition):
    """_do_intervention_by_swap("interchange") on 2-D (n, D) rows."""
    out = rb.clone()
    n = rb.shape[0]
    if subspaces is None:
        k = int(interchange_dim)
        out[:, :k] = rs[:, :k]
        return out
    for i in range(n):
        sel = subspaces[i] if partition is None else [d for s in subspaces[i] for d in partition[s]]
        out[i, sel] = rs[i, sel]
    return out


def expand_partition(part):
    if part is None:
        return None
    return [list(range(p[0], p[1])) if len(p) == 2 and isinstance(p[0], int) else list(p) for p in part]


def ref_forward(case, P, base, source, W=None):
    """Output of the documented formula. P: name -> tensor (parameters and buffers); W: use this
    materialised rotation weight instead of computing it from original/base."""
    t = case["type"]
    sub = case.get("subspaces")
    part = expand_partition(case.get("subspace_partition"))
    units = case.get("units")
    shape = base.shape
    flatten = t in ("RotatedSpaceIntervention", "LowRankRotatedSpaceIntervention",
                    "BoundlessRotatedSpaceIntervention", "SigmoidMaskRotatedSpaceIntervention",
                    "PCARotatedSpaceIntervention", "AutoencoderIntervention")
    if units is not None and flatten:  # do_intervention: (n, U, d) -> (n, U*d)
        base = base.reshape(shape[0], -1)
        source = source.reshape(shape[0], -1)
    if W is None and "rotate_layer.parametrizations.weight.original" in P:
        W = ref_orthogonal_weight(P["rotate_layer.parametrizations.weight.original"],
                                  P["rotate_layer.parametrizations.weight.0.base"])
    if t == "RotatedSpaceIntervention":
        out = ref_swap(base @ W, source @ W, P["interchange_dim"], sub, part) @ W.T
    elif t == "LowRankRotatedSpaceIntervention":
        diff = source @ W - base @ W  # (n, r)
        if sub is None:
            out = base + diff @ W.T
        else:
            rows = []
            for i in range(base.shape[0]):
                sel = sub[i] if part is None else [d for s in sub[i] for d in part[s]]
                rows.append(base[i] + diff[i, sel] @ W[:, sel].T)
            out = torch.stack(rows)
    elif t in ("BoundlessRotatedSpaceIntervention", "SigmoidMaskRotatedSpaceIntervention"):
        tau = P["temperature"]
        if t == "BoundlessRotatedSpaceIntervention":
            Dm = W.shape[0]
            i = torch.arange(Dm, dtype=torch.float32)
            beta = torch.clamp(P["intervention_boundaries"], 1e-3, 1)[0]
            m = torch.sigmoid(i / tau) * torch.sigmoid((beta * Dm - i) / tau)
        else:
            m = torch.sigmoid(P["masks"] / tau)
        out = ((1.0 - m) * (base @ W) + m * (source @ W)) @ W.T
    elif t == "SigmoidMaskIntervention":
        m = torch.sigmoid(P["mask"] / P["temperature"].detach())
        out = (1.0 - m) * base + m * source
    elif t == "PCARotatedSpaceIntervention":
        C, mu, sd = P["pca_components"], P["pca_mean"], P["pca_std"]
        rb = ((base - mu) / sd) @ C.T
        rs = ((source - mu) / sd) @ C.T
        out = (ref_swap(rb, rs, P["interchange_dim"], sub, part) @ C) * sd + mu
    elif t == "AutoencoderIntervention":
        We, be = P["autoencoder.encoder.0.weight"], P["autoencoder.encoder.0.bias"]
        Wd, bd = P["autoencoder.decoder.0.weight"], P["autoencoder.decoder.0.bias"]
        zb = torch.relu((base - bd) @ We.T + be)
        zs = torch.relu((source - bd) @ We.T + be)
        idx = P["interchange_dim"].reshape(-1).tolist()
        z = zb.clone()
        z[..., idx] = zs[..., idx]
        out = z @ Wd.T + bd
    elif t == "JumpReLUAutoencoderIntervention":
        def enc(x):
            pre = x @ P["W_enc"] + P["b_enc"]
            return (pre > P["threshold"]) * torch.relu(pre)
        zb, zs = enc(base), enc(source)
        lat = zb.shape[-1]
        z = zb.clone()
        if sub is None:
            k = min(int(P["interchange_dim"]), lat)
            z[..., :k] = zs[..., :k]
        else:
            sel = sub[0] if part is None else [d for s in sub[0] for d in part[s]]
            z[..., sel] = zs[..., sel]
        out = z @ P["W_dec"] + P["b_dec"]
    elif t == "LoreftIntervention":
        out = base + (base @ P["learned_source.weight"].T + P["learned_source.bias"] - base @ W) @ W.T
    elif t == "ConsreftIntervention":
        out = base + (P["learned_source"] - base @ W) @ W.T
    elif t == "LobireftIntervention":
        out = base + P["learned_source"] @ W.T
    elif t == "DireftIntervention":
        out = base + (base @ P["learned_source.weight"].T + P["learned_source.bias"]) @ W.T
    elif t in ("NoreftIntervention", "NodireftIntervention"):
        W1, b1 = P["learned_source.weight"], P["learned_source.bias"]
        W2 = P["proj_layer.weight"]  # (r, D)
        h = base @ W1.T + b1
        if t == "NoreftIntervention":
            h = h - (base @ W2.T + (P["proj_layer.bias"] if "proj_layer.bias" in P else 0.0))
        out = base + h @ W2
    else:
        raise AssertionError(t)
    return out.reshape(shape)


# --------------------------------------------------------------------------------------------
# UNIT cases
N_ROWS = 5


def U(name, type_, D=12, **kw):
    c = dict(name=name, type=type_, D=D)
    c.update(kw)
    return c


UNIT_CASES = [
    U("rotated_space_d12_i5", "RotatedSpaceIntervention", interchange_dim=5,
      note="RotatedSpace, D=12, interchange_dim 5 (rotated dims 0..4 swapped); `original` random (the "
           "upper triangle and diagonal are unused by the matrix_exp map, so their gradients are 0)."),
    U("rotated_space_d12_subspaces", "RotatedSpaceIntervention", subspaces=[[0, 3, 7, 10]] * N_ROWS,
      note="RotatedSpace with subspaces [0,3,7,10] on every row (rows equal: pyvene's fast path); "
           "interchange_dim is ignored when subspaces are given."),
    U("rotated_space_d12_partition", "RotatedSpaceIntervention", subspace_partition=[[0, 4], [4, 8], [8, 12]],
      subspaces=[[0], [2], [0, 1], [1, 2], [2]],
      note="RotatedSpace with subspace_partition [[0,4],[4,8],[8,12]] and per-row partition ids "
           "(ragged rows: pyvene's per-example loop)."),
    U("rotated_space_d12_rows", "RotatedSpaceIntervention",
      subspaces=[[0, 1, 2], [2, 3, 4], [4, 5, 6], [1, 6, 9], [7, 8, 11]],
      note="RotatedSpace with different raw-dim subspaces of equal length per row (pyvene's tensor path; "
           "per-row and correct here because the flattened tensor is 2-D)."),
    U("rotated_space_units2", "RotatedSpaceIntervention", D=12, units=(2, 6), interchange_dim=5,
      note="RotatedSpace over U=2 positions of d=6 per example (max_number_of_units=2, embed_dim 12): "
           "base/source are (n, U, d); do_intervention flattens to (n, U*d), rotates, swaps, unflattens."),
    U("low_rank_d12_r1", "LowRankRotatedSpaceIntervention", low_rank_dimension=1,
      note="LowRankRotatedSpace, D=12, rank 1: out = b + (sW - bW) W^T; W from the householder map."),
    U("low_rank_d12_r3", "LowRankRotatedSpaceIntervention", low_rank_dimension=3,
      note="LowRankRotatedSpace, D=12, rank 3."),
    U("low_rank_d12_r3_subspaces", "LowRankRotatedSpaceIntervention", low_rank_dimension=3,
      subspaces=[[0, 2]] * N_ROWS,
      note="LowRank rank 3 with subspaces [0,2] on every row: only columns 0 and 2 of W are used."),
    U("low_rank_d12_r3_partition", "LowRankRotatedSpaceIntervention", low_rank_dimension=3,
      subspace_partition=[[0, 1], [1, 2], [2, 3]], subspaces=[[0], [2], [1], [0], [2]],
      note="LowRank rank 3 with subspace_partition [[0,1],[1,2],[2,3]] and different partition ids per "
           "row (pyvene's non-fast path, which needs a partition and equal-size selections)."),
    U("low_rank_d12_r3_diag", "LowRankRotatedSpaceIntervention", low_rank_dimension=3,
      diag=[-1.0, 1.5, -0.5],
      note="LowRank rank 3 with original's diagonal (-1, 1.5, -0.5): the householder map multiplies "
           "column j by int(diag_j) = (-1, 1, 0), so column 1 flips sign and column 2 is ZERO."),
    U("low_rank_units2", "LowRankRotatedSpaceIntervention", D=12, units=(2, 6), low_rank_dimension=2,
      note="LowRank rank 2 over U=2 positions of d=6 (flattened to 12)."),
    U("boundless_d12", "BoundlessRotatedSpaceIntervention", boundary=0.37, temperature=2.0,
      note="Boundless, D=12, intervention_boundaries 0.37, temperature 2.0 (both get gradients)."),
    U("boundless_d12_clamped", "BoundlessRotatedSpaceIntervention", boundary=1.25, temperature=0.8,
      note="Boundless with boundary 1.25 > 1: clamp(1e-3, 1) makes its gradient exactly 0."),
    U("boundless_units2", "BoundlessRotatedSpaceIntervention", D=12, units=(2, 6), boundary=0.6,
      temperature=1.5, note="Boundless over U=2 positions of d=6 (mask over the flattened 12)."),
    U("sigmoid_mask_rotated_d12", "SigmoidMaskRotatedSpaceIntervention", temperature=1.3,
      note="SigmoidMaskRotatedSpace, D=12, masks random, temperature 1.3 (gets a gradient)."),
    U("sigmoid_mask_d12", "SigmoidMaskIntervention",
      note="SigmoidMask, D=12, mask random, temperature 0.01 (default): no gradient reaches the "
           "temperature (pyvene divides by torch.tensor(self.temperature), a detached copy)."),
    U("sigmoid_mask_units2", "SigmoidMaskIntervention", D=12, units=(2, 12),
      note="SigmoidMask over U=2 positions of d=12 (localist: the D=12 mask applies to each position; "
           "embed_dim must equal d, i.e. max_number_of_units 1)."),
    U("pca_d12_i5", "PCARotatedSpaceIntervention", interchange_dim=5,
      note="PCARotatedSpace, D=12, fitted on 64 random correlated rows (components_ by SVD of the "
           "standardised data, as sklearn's PCA), interchange_dim 5; its parameters are frozen."),
    U("pca_d12_subspaces", "PCARotatedSpaceIntervention", subspaces=[[1, 2, 6]] * N_ROWS,
      note="PCARotatedSpace with subspaces [1,2,6] on every row."),
    U("autoencoder_d12_l6", "AutoencoderIntervention", latent_dim=6, interchange_dim=[1, 4],
      note="AutoencoderIntervention, D=12, latent 6; interchange_dim is an INDEX into the latent "
           "(here the list [1,4]), not a prefix length; subspaces are ignored."),
    U("jumprelu_d12_l8", "JumpReLUAutoencoderIntervention", low_rank_dimension=8,
      subspaces=[[0, 3, 5]] * N_ROWS,
      note="JumpReLU SAE, D=12, latent 8, nonzero threshold; latents 0,3,5 swapped. The threshold "
           "gets no gradient (the mask pre > threshold is boolean)."),
    U("jumprelu_d12_l8_full", "JumpReLUAutoencoderIntervention", low_rank_dimension=8,
      note="JumpReLU without subspaces: interchange_dim = embed_dim = 12 >= latent 8, so the whole "
           "latent is swapped and the output is the source's reconstruction."),
    U("jumprelu_units2", "JumpReLUAutoencoderIntervention", D=12, units=(2, 12), low_rank_dimension=8,
      subspaces=[[1, 2]] * N_ROWS,
      note="JumpReLU over U=2 positions (keep_last_dim: per position, not flattened)."),
    U("loreft_d12_r4", "LoreftIntervention", low_rank_dimension=4, sourceless=True,
      note="pyreft LoReFT, D=12, rank 4, dtype float32: h + (W h + b - R h) R^T with R the (D, r) "
           "orthonormal-column weight. state_dict is pyreft's override: weight, bias, rotate_layer."),
    U("loreft_units3", "LoreftIntervention", D=12, units=(3, 12), low_rank_dimension=4, sourceless=True,
      note="LoReFT over U=3 positions (keep_last_dim: applied per position)."),
    U("noreft_d12_r4", "NoreftIntervention", low_rank_dimension=4, sourceless=True, add_bias=True,
      note="pyreft NoReFT (add_bias true): h + (W1 h + b1 - (W2 h + b2)) W2."),
    U("consreft_d12_r4", "ConsreftIntervention", low_rank_dimension=4, sourceless=True,
      note="pyreft ConsReFT: h + (b - R h) R^T."),
    U("lobireft_d12_r4", "LobireftIntervention", low_rank_dimension=4, sourceless=True,
      note="pyreft LobiReFT: h + b R^T (independent of h)."),
    U("direft_d12_r4", "DireftIntervention", low_rank_dimension=4, sourceless=True,
      note="pyreft DiReFT: h + (W h + b) R^T."),
    U("nodireft_d12_r4", "NodireftIntervention", low_rank_dimension=4, sourceless=True, add_bias=False,
      note="pyreft NodiReFT (add_bias false): h + (W1 h + b1) W2."),
]


# full (every Jacobian entry) float64 gradcheck for one case per type; fast_mode for the rest
FULL_GRADCHECK = {"rotated_space_d12_i5", "low_rank_d12_r3", "boundless_d12", "sigmoid_mask_rotated_d12",
                  "sigmoid_mask_d12", "pca_d12_i5", "autoencoder_d12_l6", "jumprelu_d12_l8",
                  "loreft_d12_r4", "noreft_d12_r4", "consreft_d12_r4", "lobireft_d12_r4",
                  "direft_d12_r4", "nodireft_d12_r4"}


class FakePCA:
    """What PCARotatedSpaceIntervention reads from an sklearn PCA: components_ (k, D)."""

    def __init__(self, components):
        self.components_ = components


def fit_pca(D, g):
    """Standardise 64 correlated random rows; components_ = V^T of the SVD of the centred
    standardised data, sign-fixed as sklearn's svd_flip (largest |u| entry of each column > 0)."""
    X = torch.randn(64, D, generator=g, dtype=torch.float64) @ torch.randn(D, D, generator=g, dtype=torch.float64)
    mean = X.mean(0)
    std = X.std(0)
    Z = (X - mean) / std
    Z = Z - Z.mean(0)
    u, s, vt = np.linalg.svd(Z.numpy(), full_matrices=False)
    idx = np.argmax(np.abs(u), axis=0)
    signs = np.sign(u[idx, np.arange(u.shape[1])])
    vt = vt * signs[:, None]
    return FakePCA(vt.astype(np.float32)), mean.numpy().astype(np.float32), std.numpy().astype(np.float32)


def build_unit(case, g):
    t = case["type"]
    D = case["D"]
    cls = PV_CLASSES[t]
    kw = dict(embed_dim=D)
    for k in ("low_rank_dimension", "latent_dim", "subspace_partition", "add_bias"):
        if k in case:
            kw[k] = case[k]
    if t in [c.__name__ for c in REFT_CLASSES]:
        kw["dtype"] = torch.float32
    if t == "PCARotatedSpaceIntervention":
        pca, mean, std = fit_pca(D, g)
        kw.update(pca=pca, pca_mean=mean, pca_std=std)
    torch.manual_seed(seed_of(case["name"]))
    iv = cls(**kw)
    if "interchange_dim" in case:
        iv.set_interchange_dim(case["interchange_dim"])
    # non-trivial parameter values
    with torch.no_grad():
        for n, p in iv.named_parameters():
            if n == "rotate_layer.parametrizations.weight.original":
                rows, cols = p.shape
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
                if rows != cols:  # householder: the diagonal acts through int(); keep -1 unless asked
                    p.diagonal().copy_(torch.tensor(case.get("diag", [-1.0] * cols)))
            elif n == "intervention_boundaries":
                p.fill_(case["boundary"])
            elif n == "temperature" and "temperature" in case:
                p.fill_(case["temperature"])
            elif n == "masks":
                p.copy_(1.5 * torch.randn(p.shape, generator=g))
            elif n == "mask":
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            elif n in ("W_enc", "W_dec"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif n in ("b_enc", "b_dec"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif n == "threshold":
                p.copy_(0.05 + 0.25 * torch.rand(p.shape, generator=g))
            elif n.startswith("learned_source") or n.startswith("proj_layer"):
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    return iv


def module_tensors(iv):
    """nn.Module's own state (parameters and buffers by name), whatever state_dict() returns."""
    return collections.OrderedDict(torch.nn.Module.state_dict(iv, keep_vars=True))


def unit_inputs(case, g):
    n = N_ROWS
    shape = (n, case["D"]) if case.get("units") is None else (n,) + tuple(case["units"])
    base = torch.randn(shape, generator=g)
    source = torch.randn(shape, generator=g)
    G = torch.randn(shape, generator=g)
    return base, source, G


def run_unit(case):
    name = case["name"]
    g = torch.Generator().manual_seed(seed_of(name) + 1)
    iv = build_unit(case, g)
    base, source, G = unit_inputs(case, g)
    sourceless = case.get("sourceless", False)
    sub = case.get("subspaces")
    b = base.clone().requires_grad_(True)
    s = None if sourceless else source.clone().requires_grad_(True)
    out = do_intervention(b, s, iv, copy.deepcopy(sub))  # exactly what pyvene's setter calls
    assert out.shape == base.shape
    pyvene_backward_error = None
    if isinstance(iv, AutoencoderIntervention):
        # pyvene's backward raises here: forward() writes the swapped latents in place into the
        # ReLU output that ReluBackward saved. The gradients are those of the same function with
        # the swap done on a copy (the documented formula), whose output must equal pyvene's.
        try:
            torch.autograd.grad((out * G).sum(), [b])
        except RuntimeError as e:
            pyvene_backward_error = str(e).split(".")[0]
        assert pyvene_backward_error is not None, "pyvene's AutoencoderIntervention backward now works"
        b = base.clone().requires_grad_(True)
        s = source.clone().requires_grad_(True)
        out2 = ref_forward(case, dict(module_tensors(iv)), b, s)
        assert torch.equal(out2, out.detach()), name
        out = out2
    L = (out * G).sum()
    params = [(n, p) for n, p in iv.named_parameters() if p.requires_grad]
    inputs = [p for _, p in params] + [b] + ([] if sourceless else [s])
    grads = torch.autograd.grad(L, inputs, allow_unused=True)
    gp = {n: gr for (n, _), gr in zip(params, grads[:len(params)])}
    gbase = grads[len(params)]
    gsrc = None if sourceless else grads[len(params) + 1]

    # --- verification 1: the documented formulas (hand-written reference)
    P = {k: v.detach().clone() for k, v in module_tensors(iv).items()}
    Pg = {k: (v.requires_grad_(True) if k in gp else v) for k, v in P.items()}
    b2 = base.clone().requires_grad_(True)
    s2 = source.clone().requires_grad_(True)
    ref = ref_forward(case, Pg, b2, s2)
    close(ref, out, f"{name}: reference output", rtol=2e-6)
    rin = [Pg[n] for n in gp] + [b2] + ([] if sourceless else [s2])
    rg = torch.autograd.grad((ref * G).sum(), rin, allow_unused=True)
    for (n, gr), r in zip(list(gp.items()) + [("base", gbase), ("source", gsrc)], rg):
        if gr is None:
            assert r is None or torch.all(r == 0), (name, n)
            continue
        close(r, gr, f"{name}: reference grad {n}", rtol=2e-5)
    # the materialised weight, for the C side's forward check
    extra = {}
    if "rotate_layer.parametrizations.weight.original" in P:
        W = iv.rotate_layer.weight.detach().clone()
        close(ref_orthogonal_weight(P["rotate_layer.parametrizations.weight.original"],
                                    P["rotate_layer.parametrizations.weight.0.base"]), W,
              f"{name}: materialised weight", rtol=2e-6)
        extra["materialized.rotate_layer.weight"] = W
        # dL/dW through the documented formula, then the hand-written backward of the map
        Wl = W.clone().requires_grad_(True)
        o3 = ref_forward(case, P, base, source, W=Wl)
        dW = torch.autograd.grad((o3 * G).sum(), [Wl])[0]
        extra["grad.materialized.rotate_layer.weight"] = dW
        gname = "rotate_layer.parametrizations.weight.original"
        if gname in gp:
            hb = ref_orthogonal_backward(P[gname].double(), P["rotate_layer.parametrizations.weight.0.base"].double(),
                                         dW.double())
            close(hb, gp[gname], f"{name}: hand-written orthogonal backward", rtol=2e-5)

    # --- verification 2: gradcheck in float64 on a copy
    iv64 = copy.deepcopy(iv).double()
    if isinstance(iv64, BoundlessRotatedSpaceIntervention):
        # (population - 0.0) is computed in the default dtype (float32) whatever the module's dtype;
        # a float64 population (same integer values) keeps the whole float64 copy in float64
        iv64.intervention_population = torch.nn.Parameter(
            iv64.intervention_population.double(), requires_grad=False)
    # parameters whose gradient pyvene cuts (grad None) are not gradcheck inputs
    names = [n for n in gp if gp[n] is not None]
    p64 = dict(iv64.named_parameters())
    b64 = base.double().requires_grad_(True)
    s64 = None if sourceless else source.double().requires_grad_(True)
    ps64 = [p64[n].detach().clone().requires_grad_(True) for n in names]
    wrapped = _Do(iv64, sub, case)

    # The householder map reads original's diagonal through .int() (a step function): gradcheck
    # perturbs only the strictly lower triangle there (the diagonal's gradient is exactly 0).
    hh = {n: (p64[n].detach() - p64[n].detach().tril(-1)) for n in names
          if n.endswith("weight.original") and p64[n].shape[0] != p64[n].shape[1]}
    gc_in = [(p.detach().tril(-1).clone().requires_grad_(True) if n in hh else p) for n, p in zip(names, ps64)]

    def f(bb, ss, *ps):
        ps = [(p.tril(-1) + hh[n] if n in hh else p) for n, p in zip(names, ps)]
        return torch.func.functional_call(wrapped, {"iv." + n: p for n, p in zip(names, ps)}, (bb, ss))

    fast = name not in FULL_GRADCHECK
    if sourceless:
        ok = torch.autograd.gradcheck(lambda bb, *ps: f(bb, None, *ps), [b64] + gc_in,
                                      eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=fast)
    else:
        ok = torch.autograd.gradcheck(f, [b64, s64] + gc_in, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=fast)
    assert ok, name
    ps64 = [(p + hh[n] if n in hh else p) for n, p in zip(names, gc_in)]
    # float32 gradients vs float64 autograd
    o64 = f(b64, s64, *ps64)
    xs = [b64] + ([] if sourceless else [s64]) + ps64
    g64 = torch.autograd.grad((o64 * G.double()).sum(), xs, allow_unused=True)
    ours = [gbase] + ([] if sourceless else [gsrc]) + [gp[n] for n in names]
    for i, (a, r) in enumerate(zip(ours, g64)):
        if a is None:
            assert r is None, (name, i)
            continue
        close(a, r, f"{name}: f32 vs f64 gradient {i}", rtol=1e-4)

    # --- write
    tensors = {}
    state = iv.state_dict()
    for k, v in state.items():
        tensors[k] = v.detach().clone()
    if type(iv) is LoreftIntervention:  # pyreft's override drops the module tensors
        for k, v in module_tensors(iv).items():
            tensors["module." + k] = v.detach().clone()
    tensors.update(extra)
    tensors["base"] = base
    if not sourceless:
        tensors["source"] = source
    tensors["grad_output"] = G
    tensors["output"] = out.detach().clone()
    tensors["grad.base"] = gbase
    if not sourceless:
        tensors["grad.source"] = gsrc
    grad_none = []
    for n, gr in gp.items():
        if gr is None:
            grad_none.append(n)
        else:
            tensors["grad." + n] = gr
    params = {k: case[k] for k in ("D", "units", "interchange_dim", "low_rank_dimension", "latent_dim",
                                   "subspaces", "subspace_partition", "add_bias") if k in case}
    entry = {
        "name": name, "kind": "unit", "file": f"unit/{name}.safetensors", "type": case["type"],
        "class": str(type(iv)), "params": params,
        "embed_dim": int(iv.embed_dim) if iv.embed_dim is not None else None,
        "interchange_dim": iv.interchange_dim.tolist() if iv.interchange_dim is not None else None,
        "sourceless": sourceless,
        "flattened": bool(case.get("units") is not None and not getattr(iv, "keep_last_dim", False)
                          and not isinstance(iv, pv.models.interventions.LocalistRepresentationIntervention)),
        "state_dict_keys": list(state.keys()),
        "trainable_parameters": [n for n in gp],
        "grad_none": grad_none,
        "frozen_parameters": [n for n, p in iv.named_parameters() if not p.requires_grad],
        "pyvene_backward_error": pyvene_backward_error,
        "note": case["note"],
    }
    save_safetensors(tensors, os.path.join(OUT_ROOT, entry["file"]),
                     {"case": name, "note": case["note"], "params": json.dumps(params, sort_keys=True)})
    return entry


class _Do(torch.nn.Module):
    """do_intervention(base, source, iv, subspaces) as a module, for torch.func.functional_call."""

    def __init__(self, iv, sub, case):
        super().__init__()
        self.iv = iv
        self.sub = sub
        self.case = case

    def forward(self, b, s):
        if isinstance(self.iv, AutoencoderIntervention):  # see run_unit: pyvene's backward raises
            return ref_forward(self.case, dict(module_tensors(self.iv)), b, s)
        return do_intervention(b, s, self.iv, copy.deepcopy(self.sub))


# --------------------------------------------------------------------------------------------
# SITE gradients (no intervention): dL/d(stream) at every pyvene site of the fixture models
GPT2_SITES = ["block_input", "block_output", "attention_input", "query_output", "key_output",
              "value_output", "attention_value_output", "attention_weight", "attention_output",
              "mlp_input", "mlp_activation", "mlp_output"]
NEOX_SITES = ["block_input", "block_output", "attention_input", "query_output", "key_output",
              "value_output", "attention_weight", "attention_value_output", "attention_output",
              "mlp_input", "mlp_activation", "mlp_output"]
GRU_SITES = ["cell_input", "x2h_output", "reset_x2h_output", "update_x2h_output", "new_x2h_output",
             "h2h_output", "reset_h2h_output", "update_h2h_output", "new_h2h_output",
             "reset_gate_input", "reset_gate_output", "update_gate_input", "update_gate_output",
             "new_gate_input", "new_gate_output", "cell_output"]
THIRDS = {"query": 0, "key": 1, "value": 2, "reset": 0, "update": 1, "new": 2}


class Probe:
    """Called by every site hook with (key, live tensor). In "capture" mode it retains the
    tensor's gradient; in "perturb" mode it adds eps * direction to one key's tensor in place."""

    def __init__(self):
        self.mode = "capture"
        self.caps = collections.defaultdict(list)
        self.delta = None  # (key, direction stacked like the stored tensor, eps)

    def __call__(self, key, t, split=None):
        """split: None, or (keys of the thirds of t's last dim)."""
        step = len(self.caps[key])
        if self.mode == "capture":
            t.retain_grad()
            self.caps[key].append(t)
            return t
        self.caps[key].append(None)
        if self.delta is None:
            return t
        k, d, eps = self.delta
        if k != key and (split is None or k not in split):
            return t
        if d.dim() == t.dim() + 1:  # per-step stack (GRU): (B, T, W) -> this step's (B, W)
            d = d[:, step]
        # in place, as pyvene's setters write: every later reader of this tensor object sees it
        # (GRU: cell_input.l, l >= 1, IS cell_output.(l-1), also read by layer l-1's next step)
        if k != key:
            j = split.index(k)
            w = t.shape[-1] // len(split)
            t[..., j * w:(j + 1) * w].add_(eps * d)
        else:
            t.add_(eps * d)
        return t

    def grads(self, key):
        ts = self.caps[key]
        gs = [t.grad for t in ts]
        assert all(g is not None for g in gs), key
        return gs[0] if len(gs) == 1 else torch.stack(gs, dim=1)

    def values(self, key):
        ts = self.caps[key]
        return ts[0].detach() if len(ts) == 1 else torch.stack([t.detach() for t in ts], dim=1)


def _first(args, kwargs, name="hidden_states"):
    return args[0] if len(args) > 0 else kwargs[name]


def _replace_first(args, kwargs, new, name="hidden_states"):
    if len(args) > 0:
        return (new,) + tuple(args[1:]), kwargs
    kwargs = dict(kwargs)
    kwargs[name] = new
    return args, kwargs


def hooks_gpt2(model, probe):
    hs = []
    C = model.config.n_embd
    for l, blk in enumerate(model.transformer.h):
        def pre(key):
            def f(m, args, kwargs):
                t = _first(args, kwargs)
                return _replace_first(args, kwargs, probe(key, t))
            return f

        def post_tuple(key):
            def f(m, args, kwargs, out):
                return (probe(key, out[0]),) + tuple(out[1:])
            return f

        def post(key):
            def f(m, args, kwargs, out):
                return probe(key, out)
            return f

        def cattn(m, args, kwargs, out, l=l):
            return probe(f"c_attn.{l}", out, split=[f"query_output.{l}", f"key_output.{l}", f"value_output.{l}"])

        hs += [blk.register_forward_pre_hook(pre(f"block_input.{l}"), with_kwargs=True),
               blk.register_forward_hook(post_tuple(f"block_output.{l}"), with_kwargs=True),
               blk.attn.register_forward_pre_hook(pre(f"attention_input.{l}"), with_kwargs=True),
               blk.attn.c_attn.register_forward_hook(cattn, with_kwargs=True),
               blk.attn.attn_dropout.register_forward_pre_hook(pre(f"attention_weight.{l}"), with_kwargs=True),
               blk.attn.c_proj.register_forward_pre_hook(pre(f"attention_value_output.{l}"), with_kwargs=True),
               blk.attn.resid_dropout.register_forward_hook(post(f"attention_output.{l}"), with_kwargs=True),
               blk.mlp.register_forward_pre_hook(pre(f"mlp_input.{l}"), with_kwargs=True),
               blk.mlp.act.register_forward_hook(post(f"mlp_activation.{l}"), with_kwargs=True),
               blk.mlp.register_forward_hook(post(f"mlp_output.{l}"), with_kwargs=True)]
    return hs, []


def hooks_neox(model, probe):
    hs, patched = [], []
    H = model.config.num_attention_heads
    for l, blk in enumerate(model.gpt_neox.layers):
        att = blk.attention

        def pre(key):
            def f(m, args, kwargs):
                t = _first(args, kwargs)
                return _replace_first(args, kwargs, probe(key, t))
            return f

        def post_tuple(key):
            def f(m, args, kwargs, out):
                return (probe(key, out[0]),) + tuple(out[1:])
            return f

        def post(key):
            def f(m, args, kwargs, out):
                return probe(key, out)
            return f

        orig = att._attn

        def wrapped(query, key, value, attention_mask=None, head_mask=None, l=l, orig=orig):
            # post-rotary (B, H, T, D) -> the (B, T, C) stream cvene publishes, and back
            def through(name, t):
                B, Hh, T, D = t.shape
                m = t.permute(0, 2, 1, 3).reshape(B, T, Hh * D)
                m = probe(f"{name}_output.{l}", m)
                return m.reshape(B, T, Hh, D).permute(0, 2, 1, 3).contiguous()
            query, key, value = through("query", query), through("key", key), through("value", value)
            return orig(query, key, value, attention_mask, head_mask)

        att._attn = wrapped
        patched.append(att)
        hs += [blk.register_forward_pre_hook(pre(f"block_input.{l}"), with_kwargs=True),
               blk.register_forward_hook(post_tuple(f"block_output.{l}"), with_kwargs=True),
               att.register_forward_pre_hook(pre(f"attention_input.{l}"), with_kwargs=True),
               att.register_forward_hook(post_tuple(f"attention_output.{l}"), with_kwargs=True),
               att.attention_dropout.register_forward_pre_hook(pre(f"attention_weight.{l}"), with_kwargs=True),
               att.dense.register_forward_pre_hook(pre(f"attention_value_output.{l}"), with_kwargs=True),
               blk.mlp.register_forward_pre_hook(pre(f"mlp_input.{l}"), with_kwargs=True),
               blk.mlp.act.register_forward_hook(post(f"mlp_activation.{l}"), with_kwargs=True),
               blk.mlp.register_forward_hook(post(f"mlp_output.{l}"), with_kwargs=True)]
    return hs, patched


def hooks_gru(model, probe):
    hs = []
    for l, cell in enumerate(model.gru.cells):
        def pre(key):
            def f(m, args):
                return (probe(key, args[0]),) + tuple(args[1:])
            return f

        def post(key, split=None):
            def f(m, args, out):
                return probe(key, out, split=split)
            return f

        hs += [cell.register_forward_pre_hook(pre(f"cell_input.{l}")),
               cell.register_forward_hook(post(f"cell_output.{l}")),
               cell.x2h.register_forward_hook(post(f"x2h_output.{l}",
                                                   [f"{g}_x2h_output.{l}" for g in ("reset", "update", "new")])),
               cell.h2h.register_forward_hook(post(f"h2h_output.{l}",
                                                   [f"{g}_h2h_output.{l}" for g in ("reset", "update", "new")]))]
        for gate, act in (("reset", cell.reset_act), ("update", cell.update_act), ("new", cell.new_act)):
            hs += [act.register_forward_pre_hook(pre(f"{gate}_gate_input.{l}")),
                   act.register_forward_hook(post(f"{gate}_gate_output.{l}"))]
    return hs, []


def parent_of(key):
    comp, layer = key.rsplit(".", 1)
    if comp in ("query_output", "key_output", "value_output") and SITE_MODEL_KIND[0] == "gpt2":
        return f"c_attn.{layer}", THIRDS[comp.split("_")[0]], 3
    if comp.endswith("_x2h_output") or comp.endswith("_h2h_output"):
        gate, mat = comp.split("_")[:2]
        return f"{mat}_output.{layer}", THIRDS[gate], 3
    return None


SITE_MODEL_KIND = [None]


def site_grads(probe, key):
    par = parent_of(key)
    if par is None:
        return probe.grads(key), probe.values(key)
    pk, j, n = par
    g, v = probe.grads(pk), probe.values(pk)
    w = g.shape[-1] // n
    return g[..., j * w:(j + 1) * w].contiguous(), v[..., j * w:(j + 1) * w].contiguous()


def site_losses(logits, ce_pairs, ld_pairs):
    if logits.dim() == 2:  # a classifier's pooled (B, n_labels): pairs (b, label) and (b, a, c)
        b, y = (torch.tensor(c) for c in zip(*ce_pairs))
        ce = torch.nn.functional.cross_entropy(logits[b], y)
        b, a, c = (torch.tensor(x) for x in zip(*ld_pairs))
        return {"ce": ce, "logit_diff": (logits[b, a] - logits[b, c]).mean()}
    b, t, y = (torch.tensor(c) for c in zip(*ce_pairs))
    ce = torch.nn.functional.cross_entropy(logits[b, t], y)
    b, t, a, c = (torch.tensor(x) for x in zip(*ld_pairs))
    ld = (logits[b, t, a] - logits[b, t, c]).mean()
    return {"ce": ce, "logit_diff": ld}


def run_sites(name, kind, model, hooks_fn, fwd, inputs, sites, ce_pairs, ld_pairs, note, meaning):
    SITE_MODEL_KIND[0] = kind
    L = len(model.gpt_neox.layers) if kind == "neox" else (
        len(model.transformer.h) if kind == "gpt2" else model.config.n_layer)
    keys = [f"{c}.{l}" for l in range(L) for c in sites]
    for p in model.parameters():
        p.requires_grad_(True)
    tensors = {}
    for k, v in inputs.items():
        tensors[k] = v.to(torch.int32)
    tensors["ce.pairs"] = torch.tensor(ce_pairs, dtype=torch.int32)
    tensors["logit_diff.pairs"] = torch.tensor(ld_pairs, dtype=torch.int32)
    results = {}
    for loss_name in ("ce", "logit_diff"):
        probe = Probe()
        hs, patched = hooks_fn(model, probe)
        try:
            logits = fwd(model, inputs)
        finally:
            for h in hs:
                h.remove()
            for att in patched:
                del att._attn
        logits.retain_grad()
        loss = site_losses(logits, ce_pairs, ld_pairs)[loss_name]
        model.zero_grad(set_to_none=True)
        loss.backward()
        tensors[f"loss.{loss_name}"] = loss.detach().reshape(())
        tensors[f"{loss_name}.grad.logits"] = logits.grad.detach().clone()
        if loss_name == "ce":
            tensors["logits"] = logits.detach().clone()
        for k in keys:
            g, v = site_grads(probe, k)
            tensors[f"{loss_name}.grad.{k}"] = g.detach().clone()
            if loss_name == "ce":
                tensors[f"value.{k}"] = v.clone()
            else:
                assert torch.equal(tensors[f"value.{k}"], v), k
        results[loss_name] = loss.item()
    for p in model.parameters():
        p.requires_grad_(False)
    model.zero_grad(set_to_none=True)

    # verification: directional finite differences of a float64 copy, injected at the same tensor
    m64 = copy.deepcopy(model).double()
    g = torch.Generator().manual_seed(seed_of(name))
    worst = 0.0
    with torch.no_grad():
        for loss_name in ("ce", "logit_diff"):
            for k in keys:
                gr = tensors[f"{loss_name}.grad.{k}"].double()
                v = torch.randn(gr.shape, generator=g, dtype=torch.float64)
                eps = 1e-6
                vals = []
                for sgn in (1.0, -1.0):
                    probe = Probe()
                    probe.mode = "perturb"
                    probe.delta = (k, v, sgn * eps)
                    hs, patched = hooks_fn(m64, probe)
                    try:
                        torch.set_default_dtype(torch.float64)  # the GRU's h0 is torch.zeros(...)
                        lg = fwd(m64, inputs)
                    finally:
                        torch.set_default_dtype(torch.float32)
                        for h in hs:
                            h.remove()
                        for att in patched:
                            del att._attn
                    assert len(probe.caps[parent_of(k)[0] if parent_of(k) else k]) > 0, k
                    vals.append(site_losses(lg, ce_pairs, ld_pairs)[loss_name].item())
                fd = (vals[0] - vals[1]) / (2 * eps)
                an = (gr * v).sum().item()
                scale = gr.norm().item() * v.norm().item()
                err = abs(fd - an) / max(scale, 1e-30)
                worst = max(worst, err)
                assert err < 1e-4, f"{name} {loss_name} {k}: fd {fd} vs grad {an} (scale {scale})"
    print(f"  sites {name}: {len(keys)} streams x 2 losses, worst |fd - <g,v>| / (|g||v|) = {worst:.2e}")
    path = os.path.join(OUT_ROOT, "sites", f"{name}.safetensors")
    save_safetensors(tensors, path, {"case": name, "note": note, "streams": json.dumps(meaning, sort_keys=True)})
    return {"name": name, "kind": "sites", "file": f"sites/{name}.safetensors", "model": kind,
            "layers": L, "components": sites, "losses": results,
            "ce_pairs": ce_pairs, "logit_diff_pairs": ld_pairs, "streams": meaning, "note": note}


def load_gpt2():
    m = GPT2LMHeadModel.from_pretrained(GPT2_DIR, attn_implementation="eager", torch_dtype=torch.float32).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def load_neox():
    m = GPTNeoXForCausalLM.from_pretrained(NEOX_DIR, attn_implementation="eager", torch_dtype=torch.float32).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def load_gru(d=GRU_DIR, cls=GRULMHeadModel):
    cfg = GRUConfig.from_pretrained(d)
    torch.manual_seed(0)  # the constructor draws an init that load_state_dict overwrites
    m = cls(cfg).eval()
    m.load_state_dict(load_file(os.path.join(d, "model.safetensors")), strict=True)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def padded_batch(g, V, B, T, lengths):
    ids = torch.randint(1, V, (B, T), generator=g)
    mask = torch.zeros(B, T, dtype=torch.int64)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    ids = torch.where(mask.bool(), ids, torch.zeros_like(ids))
    return {"input_ids": ids, "attention_mask": mask}


def site_pairs(g, V, lengths, n_ce=4, n_ld=3):
    ce, ld = [], []
    cand = [(b, t) for b, n in enumerate(lengths) for t in range(n)]
    perm = torch.randperm(len(cand), generator=g).tolist()
    for i in perm[:n_ce]:
        b, t = cand[i]
        ce.append([b, t, int(torch.randint(0, V, (1,), generator=g))])
    for i in perm[n_ce:n_ce + n_ld]:
        b, t = cand[i]
        a, c = torch.randperm(V, generator=g)[:2].tolist()
        ld.append([b, t, a, c])
    return ce, ld


def all_sites():
    entries = []
    # GPT-2
    m = load_gpt2()
    g = torch.Generator().manual_seed(seed_of("sites_gpt2"))
    V = m.config.vocab_size
    inp = padded_batch(g, V, 2, 6, [6, 4])
    ce, ld = site_pairs(g, V, [6, 4])
    meaning = {
        "block_input": "transformer.h[l] forward-pre input hidden_states (B,T,C)",
        "block_output": "transformer.h[l] output[0] (B,T,C) (= block_input of l+1; the last layer's feeds ln_f)",
        "attention_input": "transformer.h[l].attn input = ln_1 output (B,T,C)",
        "query_output": "transformer.h[l].attn.c_attn output[..., 0:C] (B,T,C), before the head split",
        "key_output": "transformer.h[l].attn.c_attn output[..., C:2C] (B,T,C)",
        "value_output": "transformer.h[l].attn.c_attn output[..., 2C:3C] (B,T,C)",
        "attention_weight": "transformer.h[l].attn.attn_dropout input = softmax probabilities (B,H,T,T)",
        "attention_value_output": "transformer.h[l].attn.c_proj input = merged heads (B,T,C)",
        "attention_output": "transformer.h[l].attn.resid_dropout output = c_proj output (B,T,C)",
        "mlp_input": "transformer.h[l].mlp input = ln_2 output (B,T,C)",
        "mlp_activation": "transformer.h[l].mlp.act output = gelu_new(c_fc) (B,T,4C)",
        "mlp_output": "transformer.h[l].mlp output (B,T,C)",
    }
    entries.append(run_sites(
        "gpt2_small", "gpt2", m, hooks_gpt2, lambda mm, x: mm(**x, use_cache=False).logits, inp,
        GPT2_SITES, ce, ld,
        "GPT-2 fixture tests/fixtures/gpt2/small (eager, f32), B=2 T=6, row 1 right-padded to length 4. "
        "loss.ce = mean over ce.pairs (b, t, label) of cross_entropy(logits[b,t], label); "
        "loss.logit_diff = mean over logit_diff.pairs (b, t, a, c) of logits[b,t,a] - logits[b,t,c]. "
        "<loss>.grad.<component>.<layer> = dLoss/d(stream), value.<component>.<layer> = the stream.",
        meaning))
    del m
    # GPT-NeoX
    m = load_neox()
    g = torch.Generator().manual_seed(seed_of("sites_neox"))
    V = m.config.vocab_size
    inp = padded_batch(g, V, 2, 6, [6, 4])
    ce, ld = site_pairs(g, V, [6, 4])
    meaning = {
        "block_input": "gpt_neox.layers[l] input hidden_states (B,T,C)",
        "block_output": "gpt_neox.layers[l] output[0] (B,T,C)",
        "attention_input": "gpt_neox.layers[l].attention input = input_layernorm output (B,T,C)",
        "query_output": "cvene's site: the POST-rotary query GPTNeoXAttention._attn receives, (B,H,T,D) "
                        "permuted to (B,T,H,D) and merged to (B,T,C) (not a pyvene component)",
        "key_output": "cvene's site: the POST-rotary key, merged to (B,T,C) as query_output",
        "value_output": "cvene's site: the value _attn receives (no rotary), merged to (B,T,C)",
        "attention_weight": "gpt_neox.layers[l].attention.attention_dropout input = softmax probabilities (B,H,T,T)",
        "attention_value_output": "gpt_neox.layers[l].attention.dense input = merged heads (B,T,C)",
        "attention_output": "gpt_neox.layers[l].attention output[0] = dense output (B,T,C)",
        "mlp_input": "gpt_neox.layers[l].mlp input = post_attention_layernorm output (B,T,C) "
                     "(parallel residual: LN of block_input)",
        "mlp_activation": "gpt_neox.layers[l].mlp.act output = gelu(dense_h_to_4h) (B,T,I)",
        "mlp_output": "gpt_neox.layers[l].mlp output (B,T,C)",
    }
    entries.append(run_sites(
        "neox_par_rot25", "neox", m, hooks_neox, lambda mm, x: mm(**x, use_cache=False).logits, inp,
        NEOX_SITES, ce, ld,
        "GPT-NeoX fixture tests/fixtures/neox/par_rot25 (eager, f32, parallel residual, rotary_pct 0.25), "
        "B=2 T=6, row 1 right-padded to length 4 (default position ids). Keys as gpt2_small; "
        "query/key/value_output are cvene's post-rotary sites (see the streams metadata).", meaning))
    del m
    # GRU
    m = load_gru()
    g = torch.Generator().manual_seed(seed_of("sites_gru"))
    V = m.config.vocab_size
    ids = torch.randint(1, V, (2, 6), generator=g)
    ce, ld = site_pairs(g, V, [6, 6])
    meaning = {c: "per timestep, stacked to (B,T,W): " + d for c, d in {
        "cell_input": "gru.cells[l] forward-pre input current_states (B,h)",
        "cell_output": "gru.cells[l] output hy (B,h)",
        "x2h_output": "gru.cells[l].x2h output (B,3h)",
        "h2h_output": "gru.cells[l].h2h output (B,3h)",
        "reset_x2h_output": "x2h output[:, 0:h]", "update_x2h_output": "x2h output[:, h:2h]",
        "new_x2h_output": "x2h output[:, 2h:3h]",
        "reset_h2h_output": "h2h output[:, 0:h]", "update_h2h_output": "h2h output[:, h:2h]",
        "new_h2h_output": "h2h output[:, 2h:3h]",
        "reset_gate_input": "reset_act input", "reset_gate_output": "reset_act output",
        "update_gate_input": "update_act input", "update_gate_output": "update_act output",
        "new_gate_input": "new_act input", "new_gate_output": "new_act output"}.items()}
    entries.append(run_sites(
        "gru_lm2", "gru", m, hooks_gru, lambda mm, x: mm(input_ids=x["input_ids"])[0], {"input_ids": ids},
        GRU_SITES, ce, ld,
        "pyvene GRULMHeadModel fixture tests/fixtures/gru/lm2 (2 layers, h 16), B=2 T=6, no padding, "
        "no position_ids (so no wpe). Streams are hooked once per timestep and stacked to (B,T,W); "
        "the reset/update/new thirds of x2h/h2h are slices of the x2h/h2h output.", meaning))
    del m
    # GRU classifier: pooled logits at sum(attention_mask) - 1
    m = load_gru(GRU_CLS_DIR, GRUForClassification)
    g = torch.Generator().manual_seed(seed_of("sites_gru_cls"))
    V, NL = m.config.vocab_size, m.config.n_labels
    inp = padded_batch(g, V, 2, 6, [6, 4])
    ce = [[b, int(torch.randint(0, NL, (1,), generator=g))] for b in range(2)]
    ld = [[b] + torch.randperm(NL, generator=g)[:2].tolist() for b in range(2)]
    entries.append(run_sites(
        "gru_cls2", "gru", m, hooks_gru,
        lambda mm, x: mm(input_ids=x["input_ids"], attention_mask=x["attention_mask"])[0], inp,
        GRU_SITES, ce, ld,
        "pyvene GRUForClassification fixture tests/fixtures/gru/cls2 (2 layers, h 16, 3 labels), B=2 T=6, "
        "row 1 right-padded to length 4 (the GRU runs every timestep; the model pools the top layer at "
        "sum(attention_mask) - 1, so timesteps after that get zero gradients). logits are the pooled (B, 3); "
        "ce.pairs = (b, label), logit_diff.pairs = (b, a, c) over the pooled logits.", meaning))
    return entries


# --------------------------------------------------------------------------------------------
# MODEL cases: one trainable intervention in a pyvene IntervenableModel on the GPT-2 fixture
MODEL_LAYER = 1
MODEL_CASES = [
    dict(name="das_rotated_l1", type="RotatedSpaceIntervention", interchange_dim=8,
         note="RotatedSpaceIntervention (64x64, interchange_dim 8) at block_output of layer 1, one position "
              "per example; `original` randomised (scale 0.05) so that W != base."),
    dict(name="das_lowrank_r1_l1", type="LowRankRotatedSpaceIntervention", low_rank_dimension=1,
         note="LowRankRotatedSpaceIntervention rank 1 (W 64x1) at block_output of layer 1; `original`'s "
              "strictly lower part randomised (scale 0.05), diagonal -1."),
    dict(name="boundless_l1", type="BoundlessRotatedSpaceIntervention", boundary=0.4, temperature=1.0,
         note="BoundlessRotatedSpaceIntervention at block_output of layer 1, boundary 0.4, temperature 1.0; "
              "the loss has no boundary term here."),
    dict(name="loreft_r4_l1", type="LoreftIntervention", low_rank_dimension=4,
         note="pyreft LoReFT rank 4 (dtype float32) at block_output of layer 1, no source."),
]


def gather_rows(h, pos):
    return torch.stack([h[b, pos[b]] for b in range(h.shape[0])])


def model_batch(g, V, B, T):
    base = torch.randint(1, V, (B, T), generator=g)
    src = torch.randint(1, V, (B, T), generator=g)
    bpos = torch.randint(1, T, (B,), generator=g).tolist()
    spos = torch.randint(1, T, (B,), generator=g).tolist()
    labels = torch.randint(0, V, (B,), generator=g).tolist()
    return base, src, bpos, spos, labels


def make_ivm(model, spec, seed, layer):
    """A fresh IntervenableModel with one representation at block_output of `layer`."""
    rep = dict(layer=layer, component="block_output")
    torch.manual_seed(seed)
    if spec["type"] in [c.__name__ for c in REFT_CLASSES]:
        iv = PV_CLASSES[spec["type"]](embed_dim=model.config.n_embd, low_rank_dimension=spec["low_rank_dimension"],
                                      dtype=torch.float32)
        rep.update(intervention=iv, low_rank_dimension=spec["low_rank_dimension"])
    else:
        rep["intervention_type"] = PV_CLASSES[spec["type"]]
        if "low_rank_dimension" in spec:
            rep["low_rank_dimension"] = spec["low_rank_dimension"]
    ivm = pv.IntervenableModel([rep], model)
    key = ivm.sorted_keys[0]
    iv = ivm.interventions[key]
    if "interchange_dim" in spec:
        iv.set_interchange_dim(spec["interchange_dim"])
    return ivm, key, iv


def hand_patch_loss(model, spec, P, base, src, bpos, spos, labels, extra_loss=None):
    """The documented formula applied by a plain forward hook (no pyvene): patched logits and loss."""
    srows = None
    if src is not None:
        with torch.no_grad():
            cap = {}
            hd = model.transformer.h[MODEL_LAYER].register_forward_hook(
                lambda m, a, o: cap.update(h=o[0].detach().clone()))
            model(input_ids=src, use_cache=False)
            hd.remove()
            srows = gather_rows(cap["h"], spos)
    case = {"type": spec["type"]}

    def hook(m, a, o):
        h = o[0]
        brows = gather_rows(h, bpos)
        new = ref_forward(case, P, brows, srows if srows is not None else brows)
        h2 = h.clone()
        for b in range(h.shape[0]):
            h2[b, bpos[b]] = new[b]
        return (h2,) + tuple(o[1:])

    hd = model.transformer.h[MODEL_LAYER].register_forward_hook(hook)
    try:
        logits = model(input_ids=base, use_cache=False).logits
    finally:
        hd.remove()
    sel = logits[torch.arange(base.shape[0]), torch.tensor(bpos)]
    loss = torch.nn.functional.cross_entropy(sel, torch.tensor(labels))
    if extra_loss is not None:
        loss = loss + extra_loss(P)
    return logits, loss


def saved_files(ivm):
    """pyvene's IntervenableModel.save output: {file name: bytes}."""
    with tempfile.TemporaryDirectory() as td:
        d = os.path.join(td, "saved")
        with contextlib.redirect_stdout(io.StringIO()):  # save() prints "Directory ... created"
            ivm.save(d)
        return {f: open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))}


def run_model_case(model, spec):
    name = spec["name"]
    g = torch.Generator().manual_seed(seed_of(name))
    V = model.config.vocab_size
    B, T = 4, 6
    base, src, bpos, spos, labels = model_batch(g, V, B, T)
    sourceless = spec["type"] in [c.__name__ for c in REFT_CLASSES]
    ivm, key, iv = make_ivm(model, spec, seed_of(name) + 1, MODEL_LAYER)
    with torch.no_grad():
        for n, p in iv.named_parameters():
            if n == "rotate_layer.parametrizations.weight.original":
                d = p.diagonal().clone()
                p.add_(0.05 * torch.randn(p.shape, generator=g))
                if p.shape[0] != p.shape[1]:
                    p.diagonal().copy_(d)
            elif n == "intervention_boundaries":
                p.fill_(spec["boundary"])
            elif n == "temperature":
                p.fill_(spec["temperature"])
            elif n.startswith("learned_source"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    SRC = None if sourceless else [[[q] for q in spos]]
    BASE = [[[p] for p in bpos]]
    out_dir = os.path.join(OUT_ROOT, "model", name)
    os.makedirs(out_dir)
    files = saved_files(ivm)
    for f, data in files.items():
        with open(os.path.join(out_dir, f), "wb") as fh:
            fh.write(data)
        if f.endswith(".bin"):  # what the C side reads: the same state dict as safetensors
            convert_pyvene_weights.to_safetensors(os.path.join(out_dir, f))
    # pyvene forward + backward
    ivm.zero_grad()
    _, out = ivm({"input_ids": base}, None if sourceless else [{"input_ids": src}],
                 {"sources->base": (SRC, BASE)})
    assert not ivm.use_fast
    logits = out.logits
    sel = logits[torch.arange(B), torch.tensor(bpos)]
    loss = torch.nn.functional.cross_entropy(sel, torch.tensor(labels))
    loss.backward()
    tensors = {}
    for k, v in iv.state_dict().items():
        tensors[k] = v.detach().clone()
    if type(iv) is LoreftIntervention:
        for k, v in module_tensors(iv).items():
            tensors["module." + k] = v.detach().clone()
    tensors["logits"] = logits.detach().clone()
    tensors["loss"] = loss.detach().reshape(())
    grads = {}
    prefix = key + "."
    for n, p in ivm.named_parameters():
        assert n.startswith(prefix)
        if p.grad is not None:
            grads[n[len(prefix):]] = p.grad.detach().clone()
            tensors["grad." + n[len(prefix):]] = grads[n[len(prefix):]]
    # verification: a hand-written hook with the documented formula
    P = {k: v.detach().clone() for k, v in module_tensors(iv).items()}
    for n in grads:
        P[n].requires_grad_(True)
    hl, hloss = hand_patch_loss(model, spec, P, base, None if sourceless else src, bpos, spos, labels)
    close(hl, logits, f"{name}: hand-written logits", rtol=1e-5)
    close(hloss, loss, f"{name}: hand-written loss", rtol=1e-6)
    hg = torch.autograd.grad(hloss, [P[n] for n in grads])
    for n, hgr in zip(grads, hg):
        close(hgr, grads[n], f"{name}: hand-written grad {n}", rtol=1e-4)
    # verification: pyvene's own load gives the same logits (pyreft types need pyreft: skipped)
    if not sourceless:
        with tempfile.TemporaryDirectory() as td:
            d = os.path.join(td, "saved")
            for f, data in files.items():
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, f), "wb") as fh:
                    fh.write(data)
            torch.manual_seed(12345)  # load() re-constructs the intervention (RNG), then loads
            ivm2 = pv.IntervenableModel.load(d, model)
            with torch.no_grad():
                _, out2 = ivm2({"input_ids": base}, [{"input_ids": src}], {"sources->base": (SRC, BASE)})
            assert torch.equal(out2.logits, logits.detach()), name
    inputs = collections.OrderedDict()
    inputs["model"] = "tests/fixtures/gpt2/small/model"
    inputs["key"] = key
    inputs["base"] = {"input_ids": base.tolist()}
    inputs["sources"] = None if sourceless else [{"input_ids": src.tolist()}]
    inputs["unit_locations"] = {"sources->base": [SRC, BASE]}
    inputs["labels"] = labels
    inputs["loss"] = ("mean over b of cross_entropy(logits[b, BASE[0][b][0]], labels[b]) "
                      "(the logits at each example's intervened base position)")
    with open(os.path.join(out_dir, "inputs.json"), "w") as f:
        f.write(compact_json(inputs))
    save_safetensors(tensors, os.path.join(out_dir, "expected.safetensors"), {"case": name, "note": spec["note"]})
    print(f"  model {name}: loss {loss.item():.6f}, grads {list(grads)}")
    return {"name": name, "kind": "model", "dir": f"model/{name}", "type": spec["type"], "key": key,
            "files": sorted(list(files) + ["inputs.json", "expected.safetensors"]),
            "trainable_parameters": list(grads), "loss": loss.item(), "note": spec["note"]}


# --------------------------------------------------------------------------------------------
# TRAINING cases: 20 optimizer steps on the GPT-2 fixture
TRAIN_LAYER = 0
N_STEPS = 20
BATCH = 8
N_EXAMPLES = 32
WARMUP = int(0.1 * N_STEPS)  # 2; pyvene's train_alignment passes 0.1 * t_total (a float: same lambda here)
TRAIN_CASES = [
    dict(name="das_rotated_i8", type="RotatedSpaceIntervention", interchange_dim=8, optimizer="Adam",
         note="DAS: RotatedSpaceIntervention (64x64) at block_output of layer 0, interchange_dim 8; "
              "Adam(get_trainable_parameters(), lr 1e-3)."),
    dict(name="das_lowrank_r1", type="LowRankRotatedSpaceIntervention", low_rank_dimension=1, optimizer="Adam",
         note="DAS: LowRankRotatedSpaceIntervention rank 1 at block_output of layer 0; Adam lr 1e-3."),
    dict(name="boundless", type="BoundlessRotatedSpaceIntervention", optimizer="Adam", boundless=True,
         note="Boundless DAS at block_output of layer 0 as the pyvene Boundless_DAS tutorial: Adam with two "
              "groups (rotate_layer.parameters() lr 1e-3; intervention_boundaries lr 1e-2), loss = CE + "
              "1.0 * intervention_boundaries.sum(), temperature from torch.linspace(50, 0.1, 20) (float32) "
              "set after every optimizer step (the forward of step s uses linspace[max(s - 1, 0)])."),
    dict(name="sigmoid_mask", type="SigmoidMaskIntervention", optimizer="Adam",
         note="SigmoidMaskIntervention (mask init 0, temperature 0.01 fixed) at block_output of layer 0; "
              "Adam(get_trainable_parameters(), lr 1e-3) (the temperature is in the list but never gets a "
              "gradient, so Adam skips it)."),
    dict(name="loreft_r4", type="LoreftIntervention", low_rank_dimension=4, optimizer="Adam",
         note="pyreft LoReFT rank 4 (float32) at block_output of layer 0, no source; Adam lr 1e-3."),
    dict(name="das_lowrank_r1_adamw", type="LowRankRotatedSpaceIntervention", low_rank_dimension=1,
         optimizer="AdamW",
         note="As das_lowrank_r1 with AdamW(lr 1e-3, weight_decay 0.01). Decoupled weight decay also "
              "shrinks `original`'s diagonal (-1 -> -0.999995 at step 1), which the householder map reads "
              "through .int(): the materialised weight becomes exactly 0 after step 1 and the intervention "
              "is the identity from step 2 on (loss constant, gradients 0)."),
]
ADAM = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)


def make_dataset(model):
    g = torch.Generator().manual_seed(seed_of("training_dataset"))
    V = model.config.vocab_size
    T = 6
    base = torch.randint(1, V, (N_EXAMPLES, T), generator=g)
    src = torch.randint(1, V, (N_EXAMPLES, T), generator=g)
    bpos = torch.randint(0, T, (N_EXAMPLES,), generator=g)
    spos = torch.randint(0, T, (N_EXAMPLES,), generator=g)
    with torch.no_grad():
        labels = model(input_ids=src, use_cache=False).logits[:, -1].argmax(-1)
    return dict(base=base, src=src, bpos=bpos.tolist(), spos=spos.tolist(), labels=labels.tolist())


def batch_of(data, step):
    i0 = (step % (N_EXAMPLES // BATCH)) * BATCH
    sl = slice(i0, i0 + BATCH)
    return (data["base"][sl], data["src"][sl], data["bpos"][sl], data["spos"][sl], data["labels"][sl])


def lr_lambda(step):
    """transformers.get_linear_schedule_with_warmup's lambda (num_warmup_steps=WARMUP)."""
    if step < WARMUP:
        return float(step) / float(max(1, WARMUP))
    return max(0.0, float(N_STEPS - step) / float(max(1, N_STEPS - WARMUP)))


def fma(a, b, c):
    """a * b + c rounded once to float32 (the float64 product of two float32 values is exact)."""
    a = a if torch.is_tensor(a) else torch.tensor(a, dtype=torch.float32)
    return (a.double() * b.double() + c.double()).float()


class HandAdam:
    """torch.optim.Adam / AdamW (torch 2.5.1, CPU, foreach=False, amsgrad=False, maximize=False),
    written out. Python-float scalars meet float32 tensors as float32. torch's vectorised CPU kernels
    (x86-64 AVX2/AVX-512 builds) evaluate lerp_ and addcmul_ with a fused multiply-add."""

    def __init__(self, decoupled, betas, eps, weight_decay):
        self.decoupled, self.b1, self.b2, self.eps, self.wd = decoupled, betas[0], betas[1], eps, weight_decay
        self.state = {}

    def step(self, name, p, g, lr):
        """returns the new parameter; g None: untouched (as torch: no state, no decay)."""
        if g is None:
            return p
        st = self.state.setdefault(name, dict(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p)))
        f32 = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
        if self.decoupled:
            p = p * f32(1.0 - lr * self.wd)        # param.mul_(1 - lr * weight_decay)
        elif self.wd != 0:
            g = g + f32(self.wd) * p               # grad.add(param, alpha=weight_decay)
        st["t"] += 1
        t = st["t"]
        # exp_avg.lerp_(grad, 1 - beta1) = fma(w, grad - m, m)  (weight < 0.5 branch)
        st["m"] = fma(f32(1.0 - self.b1).expand(p.shape), g - st["m"], st["m"])
        # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2) = fma((1-b2)*g, g, v*b2)
        st["v"] = fma(f32(1.0 - self.b2) * g, g, st["v"] * f32(self.b2))
        bc1 = 1.0 - self.b1 ** t
        bc2 = 1.0 - self.b2 ** t
        step_size = lr / bc1
        # denom = (exp_avg_sq.sqrt() / sqrt(bc2)).add_(eps)
        denom = st["v"].sqrt() / f32(math.sqrt(bc2)) + f32(self.eps)
        # param.addcdiv_(exp_avg, denom, value=-step_size) = p + (value * m) / denom
        return p + (f32(-step_size) * st["m"]) / denom


def run_train_case(model, data, spec):
    name = spec["name"]
    g = torch.Generator().manual_seed(seed_of(name))
    sourceless = spec["type"] in [c.__name__ for c in REFT_CLASSES]
    ivm, key, iv = make_ivm(model, spec, seed_of(name) + 1, TRAIN_LAYER)
    assert key.startswith(f"layer_{TRAIN_LAYER}_comp_block_output")
    prefix = key + "."
    out_dir = os.path.join(OUT_ROOT, "train", name)
    os.makedirs(out_dir)
    files = saved_files(ivm)
    with open(os.path.join(out_dir, "config.json"), "wb") as fh:
        fh.write(files["config.json"])
    hp = ADAMW if spec["optimizer"] == "AdamW" else ADAM
    if spec.get("boundless"):
        groups = [{"params": iv.rotate_layer.parameters()},
                  {"params": iv.intervention_boundaries, "lr": 1e-2}]
        group_names = [["rotate_layer.parametrizations.weight.original"], ["intervention_boundaries"]]
    else:
        params = ivm.get_trainable_parameters()
        named = {id(p): n[len(prefix):] for n, p in ivm.named_parameters()}
        groups = [{"params": params}]
        group_names = [[named[id(p)] for p in params]]
    opt_cls = torch.optim.AdamW if spec["optimizer"] == "AdamW" else torch.optim.Adam
    opt = opt_cls(groups, lr=hp["lr"], betas=hp["betas"], eps=hp["eps"], weight_decay=hp["weight_decay"])
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=WARMUP, num_training_steps=N_STEPS)
    schedule = torch.linspace(50.0, 0.1, N_STEPS) if spec.get("boundless") else None
    if schedule is not None:
        ivm.set_temperature(schedule[0])
    name_of = {}
    for gi, grp in enumerate(opt.param_groups):
        for p, n in zip(grp["params"], group_names[gi]):
            name_of[id(p)] = (n, gi)
    tensors = {}
    init_state = {k: v.detach().clone() for k, v in iv.state_dict().items()}
    init_module = {k: v.detach().clone() for k, v in module_tensors(iv).items()}
    for k, v in init_state.items():
        tensors["init." + k] = v
    if type(iv) is LoreftIntervention:
        for k, v in init_module.items():
            tensors["init.module." + k] = v
    hand = HandAdam(spec["optimizer"] == "AdamW", hp["betas"], hp["eps"], hp["weight_decay"])
    losses, ce_losses, lrs, temps = [], [], [], []
    bit_identical = True
    for s in range(N_STEPS):
        base, src, bpos, spos, labels = batch_of(data, s)
        SRC = None if sourceless else [[[q] for q in spos]]
        BASE = [[[p] for p in bpos]]
        if schedule is not None:
            temps.append(float(iv.temperature))
        lrs.append([grp["lr"] for grp in opt.param_groups])
        for gi, grp in enumerate(opt.param_groups):
            assert grp["lr"] == (hp["lr"] if gi == 0 else 1e-2) * lr_lambda(s), (s, gi, grp["lr"])
        _, out = ivm({"input_ids": base}, None if sourceless else [{"input_ids": src}],
                     {"sources->base": (SRC, BASE)})
        ce = torch.nn.functional.cross_entropy(out.logits[:, -1], torch.tensor(labels))
        loss = ce
        if spec.get("boundless"):
            for k, v in ivm.interventions.items():
                boundary_loss = 1.0 * v.intervention_boundaries.sum()
            loss = loss + boundary_loss
        loss.backward()
        losses.append(loss.item())
        ce_losses.append(ce.item())
        before = {}
        for grp in opt.param_groups:
            for p in grp["params"]:
                n, gi = name_of[id(p)]
                before[n] = (p.detach().clone(), None if p.grad is None else p.grad.detach().clone(), grp["lr"])
                if s < 3 and p.grad is not None:
                    tensors[f"step{s}.grad.{n}"] = p.grad.detach().clone()
        opt.step()
        sched.step()
        ivm.set_zero_grad()
        if schedule is not None:
            ivm.set_temperature(schedule[s])
        # verification: the hand-written optimizer step is bit-identical to torch's
        for grp in opt.param_groups:
            for p in grp["params"]:
                n, gi = name_of[id(p)]
                p0, g0, lr = before[n]
                want = hand.step(n, p0, g0, lr)
                if not torch.equal(want, p.detach()):
                    bit_identical = False
                    close(want, p.detach(), f"{name} step {s} {n}: hand-written {spec['optimizer']}", rtol=1e-6)
                if s < 3 and g0 is not None:
                    tensors[f"step{s}.param.{n}"] = p.detach().clone()
        if spec["optimizer"] == "AdamW" and s >= 1:
            assert torch.count_nonzero(iv.rotate_layer.weight) == 0, "AdamW collapse expected"
    for k, v in iv.state_dict().items():
        tensors["final." + k] = v.detach().clone()
    if type(iv) is LoreftIntervention:
        for k, v in module_tensors(iv).items():
            tensors["final.module." + k] = v.detach().clone()
    for p, st in opt.state.items():
        n, _ = name_of[id(p)]
        tensors[f"final.adam.exp_avg.{n}"] = st["exp_avg"].clone()
        tensors[f"final.adam.exp_avg_sq.{n}"] = st["exp_avg_sq"].clone()
        tensors[f"final.adam.step.{n}"] = st["step"].clone().reshape(())
    tensors["loss"] = torch.tensor(losses, dtype=torch.float32)
    tensors["ce_loss"] = torch.tensor(ce_losses, dtype=torch.float32)
    tensors["lr"] = torch.tensor(lrs, dtype=torch.float64)
    if schedule is not None:
        tensors["temperature"] = torch.tensor(temps, dtype=torch.float32)
        tensors["temperature_schedule"] = schedule.clone()

    # verification: replay the 20 steps without pyvene or torch.optim (hand hook + HandAdam)
    replay_losses, replay_final = replay_training(model, data, spec, init_module, group_names, hp)
    close(torch.tensor(replay_losses), torch.tensor(losses), f"{name}: replayed losses", rtol=2e-5)
    for n, v in replay_final.items():
        ref = module_tensors(iv)[n].detach()
        moved = (ref - init_module[n]).norm().item()
        err = (v - ref).norm().item()
        print(f"    replay {n}: |final - init| {moved:.3e}, |replay - final| {err:.3e}, max {(v - ref).abs().max().item():.3e}")
        assert err <= 2e-2 * moved + 1e-7, f"{name}: replayed final {n}: err {err} vs moved {moved}"
    meta = {"case": name, "note": spec["note"]}
    save_safetensors(tensors, os.path.join(out_dir, "trajectory.safetensors"), meta)
    print(f"  train {name}: loss {losses[0]:.4f} -> {losses[-1]:.4f}; hand-written optimizer bit-identical: "
          f"{bit_identical}")
    return {"name": name, "kind": "train", "dir": f"train/{name}", "type": spec["type"], "key": key,
            "layer": TRAIN_LAYER, "component": "block_output", "sourceless": sourceless,
            "interchange_dim": spec.get("interchange_dim"), "low_rank_dimension": spec.get("low_rank_dimension"),
            "optimizer": {"class": spec["optimizer"], "lr": hp["lr"], "betas": list(hp["betas"]), "eps": hp["eps"],
                          "weight_decay": hp["weight_decay"], "amsgrad": False, "foreach": False,
                          "param_groups": [{"params": group_names[i], "lr": grp["initial_lr"]}
                                           for i, grp in enumerate(opt.param_groups)]},
            "scheduler": {"name": "get_linear_schedule_with_warmup", "num_warmup_steps": WARMUP,
                          "num_training_steps": N_STEPS},
            "steps": N_STEPS, "batch_size": BATCH, "batch_of_step": "examples[8*(s % 4) : 8*(s % 4) + 8]",
            "loss": "mean over the batch of cross_entropy(logits[b, -1], label[b])" +
                    (" + 1.0 * intervention_boundaries.sum()" if spec.get("boundless") else ""),
            "temperature": ("forward of step s uses linspace(50, 0.1, 20)[max(s-1, 0)]"
                            if spec.get("boundless") else None),
            "hand_optimizer_bit_identical": bit_identical,
            "losses": losses, "note": spec["note"]}


def replay_training(model, data, spec, init_module, group_names, hp):
    """The same run with a hand-written hook (documented formula), HandAdam and lr_lambda."""
    P = {k: v.clone() for k, v in init_module.items()}
    trainable = [n for grp in group_names for n in grp]
    hand = HandAdam(spec["optimizer"] == "AdamW", hp["betas"], hp["eps"], hp["weight_decay"])
    base_lr = {n: (1e-2 if n == "intervention_boundaries" and spec.get("boundless") else hp["lr"]) for n in trainable}
    schedule = torch.linspace(50.0, 0.1, N_STEPS) if spec.get("boundless") else None
    sourceless = spec["type"] in [c.__name__ for c in REFT_CLASSES]
    case = {"type": spec["type"]}
    losses = []
    for s in range(N_STEPS):
        base, src, bpos, spos, labels = batch_of(data, s)
        if schedule is not None:
            P["temperature"] = schedule[max(s - 1, 0)].clone()
        for n in trainable:
            if n in P and P[n].is_floating_point():
                P[n] = P[n].detach().requires_grad_(True)
        srows = None
        if not sourceless:
            with torch.no_grad():
                cap = {}
                hd = model.transformer.h[TRAIN_LAYER].register_forward_hook(
                    lambda m, a, o: cap.update(h=o[0].detach().clone()))
                model(input_ids=src, use_cache=False)
                hd.remove()
                srows = gather_rows(cap["h"], spos)

        def hook(m, a, o):
            h = o[0]
            brows = gather_rows(h, bpos)
            new = ref_forward(case, P, brows, srows if srows is not None else brows)
            h2 = h.clone()
            for b in range(h.shape[0]):
                h2[b, bpos[b]] = new[b]
            return (h2,) + tuple(o[1:])

        hd = model.transformer.h[TRAIN_LAYER].register_forward_hook(hook)
        try:
            logits = model(input_ids=base, use_cache=False).logits
        finally:
            hd.remove()
        loss = torch.nn.functional.cross_entropy(logits[:, -1], torch.tensor(labels))
        if spec.get("boundless"):
            loss = loss + 1.0 * P["intervention_boundaries"].sum()
        names = [n for n in trainable if P[n].requires_grad]
        gr = torch.autograd.grad(loss, [P[n] for n in names], allow_unused=True)
        losses.append(loss.item())
        for n, gg in zip(names, gr):
            P[n] = hand.step(n, P[n].detach(), gg, base_lr[n] * lr_lambda(s))
    return losses, {n: P[n].detach() for n in trainable}


# --------------------------------------------------------------------------------------------
def compact_json(obj, indent=1):
    """Top-level keys (or list items) one per line, values compact: small, diff-friendly files."""
    if isinstance(obj, dict):
        items = [f'{" " * indent}{json.dumps(k)}: {json.dumps(v, separators=(", ", ": "))}' for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n}\n"
    items = [" " * indent + json.dumps(v, separators=(", ", ": ")) for v in obj]
    return "[\n" + ",\n".join(items) + "\n]\n"


def write_dataset(data):
    ex = []
    for i in range(N_EXAMPLES):
        ex.append({"base_ids": data["base"][i].tolist(), "source_ids": data["src"][i].tolist(),
                   "base_position": data["bpos"][i], "source_position": data["spos"][i],
                   "label": data["labels"][i]})
    obj = collections.OrderedDict()
    obj["note"] = ("32 synthetic examples for the train/ cases (GPT-2 fixture vocabulary 320). base_ids and "
                   "source_ids are uniform random in [1, 320); base_position / source_position (the unit "
                   "locations, uniform in [0, 6)) say where the intervention reads the source and writes "
                   "the base; label = argmax of the clean model's logits at the SOURCE's last position. "
                   "Step s (0-based) uses examples[8 * (s % 4) : 8 * (s % 4) + 8], in order (no shuffling).")
    obj["batch_size"] = BATCH
    obj["steps"] = N_STEPS
    obj["examples"] = ex
    with open(os.path.join(OUT_ROOT, "train", "dataset.json"), "w") as f:
        f.write(compact_json(obj))


def main():
    global VERSIONS
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    VERSIONS = versions()
    assert VERSIONS["pyvene"] == "0.1.8" and VERSIONS["transformers"] == "4.46.3", VERSIONS
    assert VERSIONS["torch"].startswith("2.5.1"), VERSIONS
    os.makedirs(OUT_ROOT, exist_ok=True)
    for sub in ("unit", "sites", "model", "train"):
        shutil.rmtree(os.path.join(OUT_ROOT, sub), ignore_errors=True)
        os.makedirs(os.path.join(OUT_ROOT, sub))
    if os.path.exists(os.path.join(OUT_ROOT, "manifest.json")):
        os.remove(os.path.join(OUT_ROOT, "manifest.json"))
    check_against_real_pyreft()
    names = [c["name"] for c in UNIT_CASES + MODEL_CASES + TRAIN_CASES]
    assert len(names) == len(set(names))

    cases = []
    print("unit cases")
    for c in UNIT_CASES:
        cases.append(run_unit(c))
    print(f"  {len(UNIT_CASES)} unit cases")
    print("site gradients")
    cases += all_sites()
    print("model cases")
    model = load_gpt2()
    for spec in MODEL_CASES:
        cases.append(run_model_case(model, spec))
    print("training cases")
    data = make_dataset(model)
    write_dataset(data)
    for spec in TRAIN_CASES:
        cases.append(run_train_case(model, data, spec))

    manifest = collections.OrderedDict()
    manifest["generator"] = "tools/make_training_fixtures.py"
    manifest["versions"] = VERSIONS
    manifest["pyreft"] = ("pyreft 0.1.0 interventions re-implemented in the generator (pyreft pins "
                          "transformers==4.45.1); intervention_types name pyreft.interventions.*")
    manifest["cases"] = cases
    with open(os.path.join(OUT_ROOT, "manifest.json"), "w") as f:
        f.write("{\n" + ",\n".join(
            f' {json.dumps(k)}: ' + (compact_json(v, 2).rstrip() if k == "cases" else json.dumps(v))
            for k, v in manifest.items()) + "\n}\n")
    total = 0
    for root, _, files in os.walk(OUT_ROOT):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    print(f"{len(cases)} cases; tests/fixtures/training: {total} bytes ({total / 1024 / 1024:.2f} MiB)")
    assert total < SIZE_LIMIT, "fixtures exceed the size budget"


if __name__ == "__main__":
    main()
