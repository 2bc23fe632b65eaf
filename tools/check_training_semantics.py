#!/usr/bin/env python
"""Executable evidence for the claims in docs/training_semantics.md marked [Cn].

Each check() below asserts one claim about pyvene 0.1.8 / torch 2.5.1 / transformers 4.46.3
(CPU, float32) and prints "ok Cn: ...". The generator tools/make_training_fixtures.py verifies the
claims marked [G] (formulas, gradients, optimizer steps) while it writes the fixtures.

Usage (from the repository root): v/bin/python tools/check_training_semantics.py
"""

import io
import contextlib
import math
import os
import sys
import tempfile
import warnings
import logging

import torch

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_training_fixtures as mtf  # noqa: E402  (also imports pyvene)
import pyvene as pv  # noqa: E402
from pyvene.models.interventions import (  # noqa: E402
    AutoencoderIntervention, BoundlessRotatedSpaceIntervention, JumpReLUAutoencoderIntervention,
    LowRankRotatedSpaceIntervention, RotatedSpaceIntervention, SigmoidMaskIntervention,
    SigmoidMaskRotatedSpaceIntervention)
from pyvene.models.modeling_utils import do_intervention  # noqa: E402
from torch.nn.utils.parametrizations import _is_orthogonal, _make_orthogonal  # noqa: E402
from transformers import get_linear_schedule_with_warmup  # noqa: E402

CHECKS = []


def check(tag, text):
    def deco(fn):
        CHECKS.append((tag, text, fn))
        return fn
    return deco


def orth_init(shape):
    """torch.nn.init.orthogonal_ written out: normal_ (rows, cols) [transposed if rows < cols],
    QR, columns times sign(diag R)."""
    rows, cols = shape
    a = torch.empty(rows, cols).normal_(0, 1)
    if rows < cols:
        a = a.t()
    q, r = torch.linalg.qr(a)
    q = q * torch.diag(r, 0).sign()
    return q.t() if rows < cols else q


def linear_init(out_f, in_f):
    """nn.Linear.reset_parameters written out: kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in))
    for the weight (out, in), then the bias U(-1/sqrt(in), 1/sqrt(in))."""
    bound = 1.0 / math.sqrt(in_f)
    gain = math.sqrt(2.0 / (1 + 5))
    wb = math.sqrt(3.0) * gain / math.sqrt(in_f)
    w = torch.empty(out_f, in_f).uniform_(-wb, wb)
    b = torch.empty(out_f).uniform_(-bound, bound)
    return w, b


@check("C1", "constructor RNG order: orthogonal_ (normal_ rows x cols, QR), then for a non-square weight "
             "randn(n, n-k) in right_inverse; Linear = U(+-1/sqrt(in)) weight then bias; Consreft/Lobireft "
             "rand(r); nothing else draws")
def c1():
    D, r = 12, 3
    cases = [
        (lambda: RotatedSpaceIntervention(embed_dim=D), lambda: [orth_init((D, D))]),
        (lambda: BoundlessRotatedSpaceIntervention(embed_dim=D), lambda: [orth_init((D, D))]),
        (lambda: SigmoidMaskRotatedSpaceIntervention(embed_dim=D), lambda: [orth_init((D, D))]),
        (lambda: LowRankRotatedSpaceIntervention(embed_dim=D, low_rank_dimension=r),
         lambda: [orth_init((D, r)), torch.randn(D, D - r)]),
        (lambda: AutoencoderIntervention(embed_dim=D, latent_dim=6),
         lambda: list(linear_init(6, D)) + list(linear_init(D, 6))),
        (lambda: JumpReLUAutoencoderIntervention(embed_dim=D, low_rank_dimension=8), lambda: []),
        (lambda: SigmoidMaskIntervention(embed_dim=D), lambda: []),
        (lambda: mtf.LoreftIntervention(embed_dim=D, low_rank_dimension=r, dtype=torch.float32),
         lambda: [orth_init((D, r)), torch.randn(D, D - r)] + list(linear_init(r, D))),
        (lambda: mtf.ConsreftIntervention(embed_dim=D, low_rank_dimension=r),
         lambda: [orth_init((D, r)), torch.randn(D, D - r), torch.rand(r)]),
        (lambda: mtf.NoreftIntervention(embed_dim=D, low_rank_dimension=r, add_bias=True, dtype=torch.float32),
         lambda: list(linear_init(r, D)) + list(linear_init(r, D))),
    ]
    for make, replay in cases:
        torch.manual_seed(3)
        iv = make()
        after = torch.rand(4)
        torch.manual_seed(3)
        draws = replay()
        after2 = torch.rand(4)
        assert torch.equal(after, after2), make
        sd = torch.nn.Module.state_dict(iv)
        if "rotate_layer.parametrizations.weight.0.base" in sd:
            base = sd["rotate_layer.parametrizations.weight.0.base"]
            W0 = draws[0]
            if W0.shape[0] == W0.shape[1]:
                assert torch.equal(base, W0)
            else:
                assert torch.equal(base, _make_orthogonal(torch.cat([W0, draws[1]], -1)))
        if isinstance(iv, AutoencoderIntervention):
            assert torch.equal(sd["autoencoder.encoder.0.weight"], draws[0])
            assert torch.equal(sd["autoencoder.decoder.0.bias"], draws[3])
        if isinstance(iv, mtf.LoreftIntervention):
            assert torch.equal(sd["learned_source.weight"], draws[2]) and torch.equal(sd["learned_source.bias"], draws[3])


@check("C2", "orthogonal() registration: square -> base = the weight itself (orthogonal_ output passes "
             "_is_orthogonal), original = -I, weight == base bit for bit; D x k -> base = QR([W0 | randn]) "
             "(n x n), original = -I[:, :k], weight == base[:, :k] (= W0 to ~6e-8)")
def c2():
    for D in (12, 64, 768):
        torch.manual_seed(0)
        w = orth_init((D, D))
        assert _is_orthogonal(w)
    torch.manual_seed(1)
    iv = RotatedSpaceIntervention(embed_dim=12)
    P = iv.rotate_layer.parametrizations.weight
    assert torch.equal(P.original, -torch.eye(12)) and torch.equal(iv.rotate_layer.weight, P[0].base)
    torch.manual_seed(2)
    iv = LowRankRotatedSpaceIntervention(embed_dim=12, low_rank_dimension=3)
    torch.manual_seed(2)
    W0 = orth_init((12, 3))
    P = iv.rotate_layer.parametrizations.weight
    assert torch.equal(P.original, -torch.eye(12)[:, :3])
    assert torch.equal(iv.rotate_layer.weight, P[0].base[:, :3])
    assert (iv.rotate_layer.weight - W0).abs().max() < 2e-7
    assert tuple(P[0].base.shape) == (12, 12)


@check("C3", "the parametrization is re-evaluated on every .weight access (no caching outside "
             "parametrize.cached()): 5 evaluations per RotatedSpace / LowRank forward")
def c3():
    for iv in (RotatedSpaceIntervention(embed_dim=12), LowRankRotatedSpaceIntervention(embed_dim=12, low_rank_dimension=2)):
        cls = type(iv.rotate_layer.parametrizations.weight[0])
        n = [0]
        orig = cls.forward

        def counting(self, X):
            n[0] += 1
            return orig(self, X)
        cls.forward = counting
        try:
            iv(torch.randn(3, 12), torch.randn(3, 12))
        finally:
            cls.forward = orig
        assert n[0] == 5, n[0]


@check("C4", "gradients of `original`: matrix_exp map -> strictly upper triangle and diagonal exactly 0; "
             "householder map -> diagonal and upper triangle exactly 0")
def c4():
    torch.manual_seed(0)
    for iv in (RotatedSpaceIntervention(embed_dim=12), LowRankRotatedSpaceIntervention(embed_dim=12, low_rank_dimension=3)):
        P = iv.rotate_layer.parametrizations.weight
        with torch.no_grad():
            d = P.original.diagonal().clone()
            P.original.add_(0.3 * torch.randn(P.original.shape))
            P.original.diagonal().copy_(d)
        W = iv.rotate_layer.weight
        (W * torch.randn(W.shape)).sum().backward()
        g = P.original.grad
        n, k = g.shape
        assert torch.all(g.triu(1 if n == k else 0) == 0) and torch.all(g.diagonal() == 0)
        assert torch.any(g.tril(-1) != 0)


@check("C5", "householder map reads original's diagonal through .int() (truncation): -1 -> column kept, "
             "1.5 -> +1 (sign flip), -0.5 -> 0 (zero column), -2.5 -> -2 (column doubled: not orthonormal)")
def c5():
    torch.manual_seed(0)
    iv = LowRankRotatedSpaceIntervention(embed_dim=12, low_rank_dimension=4)
    P = iv.rotate_layer.parametrizations.weight
    W1 = iv.rotate_layer.weight.detach().clone()
    with torch.no_grad():
        P.original.diagonal().copy_(torch.tensor([-1.0, 1.5, -0.5, -2.5]))
    W2 = iv.rotate_layer.weight.detach()
    assert torch.equal(W2[:, 0], W1[:, 0]) and torch.equal(W2[:, 1], -W1[:, 1])
    assert torch.all(W2[:, 2] == 0) and torch.equal(W2[:, 3], 2 * W1[:, 3])


@check("C6", "Adam leaves a householder `original` diagonal at exactly -1 (its gradient is 0); AdamW's "
             "decoupled decay makes it -(1 - lr*wd) > -1, .int() -> 0, and the weight is exactly 0 after one "
             "step with lr > 0; the matrix_exp map ignores its diagonal, so RotatedSpace is unaffected")
def c6():
    for opt_cls, expect_zero in ((torch.optim.Adam, False), (torch.optim.AdamW, True)):
        torch.manual_seed(0)
        iv = LowRankRotatedSpaceIntervention(embed_dim=12, low_rank_dimension=2)
        opt = opt_cls(iv.parameters(), lr=1e-3, weight_decay=0.01 if opt_cls is torch.optim.AdamW else 0)
        b, s = torch.randn(4, 12), torch.randn(4, 12)
        (iv(b, s) ** 2).sum().backward()
        opt.step()
        W = iv.rotate_layer.weight
        assert bool(torch.all(W == 0)) == expect_zero
        if not expect_zero:
            assert torch.all(iv.rotate_layer.parametrizations.weight.original.diagonal() == -1)
    torch.manual_seed(0)
    iv = RotatedSpaceIntervention(embed_dim=12)
    opt = torch.optim.AdamW(iv.parameters(), lr=1e-3, weight_decay=0.01)
    (iv(torch.randn(4, 12), torch.randn(4, 12)) ** 2).sum().backward()
    opt.step()
    W = iv.rotate_layer.weight
    assert (W.T @ W - torch.eye(12)).abs().max() < 1e-5


@check("C7", "IntervenableModel.set_temperature reaches Boundless and SigmoidMask only (not "
             "SigmoidMaskRotatedSpace); it assigns temperature.data = temp (dtype and all)")
def c7():
    m = mtf.load_gpt2()
    reps = [dict(layer=0, component="block_output", intervention_type=t) for t in
            (BoundlessRotatedSpaceIntervention, SigmoidMaskIntervention, SigmoidMaskRotatedSpaceIntervention)]
    ivm = pv.IntervenableModel(reps, m)
    ivm.set_temperature(torch.tensor(7.0, dtype=torch.bfloat16))
    t = [float(v.temperature) for v in ivm.interventions.values()]
    assert t == [7.0, 7.0, 50.0], t
    assert list(ivm.interventions.values())[0].temperature.dtype == torch.bfloat16


@check("C8", "get_trainable_parameters() = every parameter of every TrainableIntervention (requires_grad "
             "or not: Boundless contributes intervention_boundaries, temperature, intervention_population "
             "(int64, frozen) and original) + model parameters with requires_grad; PCA (not a "
             "TrainableIntervention) contributes nothing; named_parameters() prefixes '<key>.'")
def c8():
    m = mtf.load_gpt2()
    ivm = pv.IntervenableModel([dict(layer=0, component="block_output",
                                     intervention_type=BoundlessRotatedSpaceIntervention)], m)
    ps = ivm.get_trainable_parameters()
    shapes = sorted(tuple(p.shape) for p in ps)
    assert shapes == [(), (1,), (64,), (64, 64)], shapes
    assert any(p.dtype == torch.int64 and not p.requires_grad for p in ps)
    names = [n for n, _ in ivm.named_parameters()]
    assert names[0].startswith("layer_0_comp_block_output_unit_pos_nunit_1#0."), names
    D = 64
    pca = mtf.FakePCA(torch.eye(D).numpy())
    iv = pv.PCARotatedSpaceIntervention(embed_dim=D, pca=pca, pca_mean=torch.zeros(D).numpy(),
                                        pca_std=torch.ones(D).numpy())
    ivm = pv.IntervenableModel([dict(layer=0, component="block_output", intervention=iv)], m)
    assert ivm.get_trainable_parameters() == []


@check("C9", "building an IntervenableModel calls disable_model_gradients(): model.eval() and "
             "requires_grad=False on every model parameter (enable_model_gradients() does model.train())")
def c9():
    m = mtf.load_gpt2()
    m.train()
    for p in m.parameters():
        p.requires_grad_(True)
    ivm = pv.IntervenableModel([dict(layer=0, component="block_output")], m)
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    ivm.enable_model_gradients()
    assert m.training and all(p.requires_grad for p in m.parameters())
    ivm.disable_model_gradients()


@check("C10", "several units: Distributed types and Autoencoder see (B, U*D) (row-major flatten of the "
              "gathered (B, U, D)); embed_dim = D*max_number_of_units must equal U*D (else a matmul shape "
              "error); Localist (SigmoidMask) and keep_last_dim types (JumpReLU, pyreft) act per unit and "
              "need max_number_of_units 1")
def c10():
    D = 6
    torch.manual_seed(0)
    b, s = torch.randn(3, 2, D), torch.randn(3, 2, D)
    for iv in (RotatedSpaceIntervention(embed_dim=2 * D), LowRankRotatedSpaceIntervention(embed_dim=2 * D, low_rank_dimension=2),
               BoundlessRotatedSpaceIntervention(embed_dim=2 * D)):
        if isinstance(iv, RotatedSpaceIntervention):
            iv.set_interchange_dim(5)
        out = do_intervention(b.clone(), s.clone(), iv, None)
        flat = iv(b.reshape(3, -1), s.reshape(3, -1)).reshape(3, 2, D)
        assert torch.equal(out, flat)
        try:
            do_intervention(torch.randn(3, 1, D), torch.randn(3, 1, D), iv, None)
            raise AssertionError("U < max_number_of_units should fail")
        except RuntimeError:
            pass
    iv = SigmoidMaskIntervention(embed_dim=D)
    with torch.no_grad():
        iv.mask.copy_(torch.randn(D))
    assert torch.equal(do_intervention(b, s, iv, None), iv(b, s))
    iv = mtf.LoreftIntervention(embed_dim=D, low_rank_dimension=2, dtype=torch.float32)
    assert torch.equal(do_intervention(b, None, iv, None), iv(b, None))


@check("C11", "save() writes config.json + intkey_<key>.bin = torch.save(intervention.state_dict()) for "
              "TrainableInterventions (and constant sources); load() rebuilds the model (fresh interventions, "
              "RNG draws), set_interchange_dim(config value), load_state_dict (strict) -> identical weights; "
              "PCARotatedSpace is not saved and cannot be loaded")
def c11():
    m = mtf.load_gpt2()
    torch.manual_seed(0)
    ivm = pv.IntervenableModel([dict(layer=1, component="block_output", intervention_type=RotatedSpaceIntervention)], m)
    iv = list(ivm.interventions.values())[0]
    iv.set_interchange_dim(8)
    with torch.no_grad():
        iv.rotate_layer.parametrizations.weight.original.add_(0.1)
    with tempfile.TemporaryDirectory() as td:
        with contextlib.redirect_stdout(io.StringIO()):
            ivm.save(td + "/s")
        files = sorted(os.listdir(td + "/s"))
        assert files == ["config.json", "intkey_layer_1_comp_block_output_unit_pos_nunit_1#0.bin"], files
        sd = torch.load(td + "/s/" + files[1])
        assert list(sd) == ["embed_dim", "interchange_dim", "rotate_layer.parametrizations.weight.original",
                            "rotate_layer.parametrizations.weight.0.base"], list(sd)
        torch.manual_seed(99)
        ivm2 = pv.IntervenableModel.load(td + "/s", m)
        iv2 = list(ivm2.interventions.values())[0]
        assert int(iv2.interchange_dim) == 8 and torch.equal(iv2.rotate_layer.weight, iv.rotate_layer.weight)
    D = 64
    iv = pv.PCARotatedSpaceIntervention(embed_dim=D, pca=mtf.FakePCA(torch.eye(D).numpy()),
                                        pca_mean=torch.zeros(D).numpy(), pca_std=torch.ones(D).numpy())
    ivm = pv.IntervenableModel([dict(layer=0, component="block_output", intervention=iv)], m)
    with tempfile.TemporaryDirectory() as td:
        with contextlib.redirect_stdout(io.StringIO()):
            ivm.save(td + "/s")
        assert sorted(os.listdir(td + "/s")) == ["config.json"]
        try:
            pv.IntervenableModel.load(td + "/s", m)
            raise AssertionError("PCA load should fail")
        except (KeyError, TypeError):
            pass


@check("C12", "pyreft LoreftIntervention.state_dict() = {weight, bias, rotate_layer (the materialised D x r "
              "weight)}; load_state_dict() re-draws a rotate layer (RNG) and overwrites base[:, :r], so base is "
              "no longer orthogonal and further training loses orthonormality")
def c12():
    D, r = 12, 4
    torch.manual_seed(0)
    iv = mtf.LoreftIntervention(embed_dim=D, low_rank_dimension=r, dtype=torch.float32)
    with torch.no_grad():
        iv.rotate_layer.parametrizations.weight.original.add_(torch.randn(D, r).tril(-1) * 0.3)
    sd = iv.state_dict()
    assert list(sd) == ["weight", "bias", "rotate_layer"]
    torch.manual_seed(5)
    iv2 = mtf.LoreftIntervention(embed_dim=D, low_rank_dimension=r, dtype=torch.float32)
    iv2.load_state_dict(sd)
    P = iv2.rotate_layer.parametrizations.weight
    assert torch.equal(iv2.rotate_layer.weight, sd["rotate_layer"])
    assert (P[0].base.T @ P[0].base - torch.eye(D)).abs().max() > 0.1
    with torch.no_grad():
        P.original.add_(torch.randn(D, r).tril(-1) * 0.3)
    W = iv2.rotate_layer.weight
    assert (W.T @ W - torch.eye(r)).abs().max() > 0.05


@check("C13", "Boundless: mask_i = sigmoid(i/tau) * sigmoid((beta*D - i)/tau), so rotated dim 0 is at most 0.5 "
              "swapped; (population - 0.0) is float32 whatever the temperature's dtype, so a bfloat16 "
              "temperature (the tutorial's schedule) only rounds tau")
def c13():
    torch.manual_seed(0)
    iv = BoundlessRotatedSpaceIntervention(embed_dim=12)
    b, s = torch.randn(2, 12), torch.randn(2, 12)
    for tau in (50.0, 1.0, 0.1):
        iv.set_temperature(torch.tensor(tau))
        i = torch.arange(12, dtype=torch.float32)
        m = torch.sigmoid(i / tau) * torch.sigmoid((0.5 * 12 - i) / tau)
        assert float(m[0]) <= 0.5
    iv.set_temperature(torch.tensor(0.3, dtype=torch.bfloat16))
    out_bf = iv(b, s)
    iv.set_temperature(torch.tensor(float(torch.tensor(0.3, dtype=torch.bfloat16)), dtype=torch.float32))
    out_f = iv(b, s)
    assert out_bf.dtype == torch.float32 and torch.equal(out_bf, out_f)


@check("C14", "AutoencoderIntervention: forward works, but backward raises (the latent swap writes in place "
              "into the ReLU output ReluBackward saved); interchange_dim is an index into the latent, so the "
              "default (embed_dim) raises IndexError unless latent_dim > embed_dim")
def c14():
    iv = AutoencoderIntervention(embed_dim=12, latent_dim=6)
    b = torch.randn(3, 12, requires_grad=True)
    try:
        iv(b, torch.randn(3, 12))
        raise AssertionError("default interchange_dim should raise")
    except IndexError:
        pass
    iv.set_interchange_dim([1, 4])
    out = iv(b, torch.randn(3, 12))
    try:
        out.sum().backward()
        raise AssertionError("backward should raise")
    except RuntimeError as e:
        assert "inplace" in str(e)


@check("C15", "get_linear_schedule_with_warmup(opt, 2 (or 2.0), 20): lr factor 0, 0.5, then (20 - s)/18; "
              "the first optimizer step runs with lr 0 (no parameter change, but Adam's state and step count "
              "advance)")
def c15():
    for warm in (2, 0.1 * 20):
        p = torch.nn.Parameter(torch.ones(3))
        opt = torch.optim.Adam([p], lr=1e-3)
        sch = get_linear_schedule_with_warmup(opt, num_warmup_steps=warm, num_training_steps=20)
        lrs = []
        for s in range(20):
            lrs.append(opt.param_groups[0]["lr"])
            p.grad = torch.ones(3)
            before = p.detach().clone()
            opt.step()
            if s == 0:
                assert torch.equal(p.detach(), before) and int(opt.state[p]["step"]) == 1
            sch.step()
        want = [0.0, 0.5e-3] + [1e-3 * (20 - s) / 18 for s in range(2, 20)]
        assert all(abs(a - b) < 1e-18 for a, b in zip(lrs, want)), lrs


@check("C16", "LowRank subspaces: equal rows -> fast path (columns S of W); different rows -> needs "
              "subspace_partition (AssertionError without) and equal-size selections (torch.stack)")
def c16():
    torch.manual_seed(0)
    iv = LowRankRotatedSpaceIntervention(embed_dim=12, low_rank_dimension=3)
    b, s = torch.randn(2, 12), torch.randn(2, 12)
    W = iv.rotate_layer.weight
    out = iv(b, s, [[0, 2], [0, 2]])
    want = b + ((s - b) @ W[:, [0, 2]]) @ W[:, [0, 2]].T
    assert (out - want).abs().max() < 1e-6
    try:
        iv(b, s, [[0], [2]])
        raise AssertionError("should need a partition")
    except AssertionError as e:
        assert str(e) == ""
    iv = LowRankRotatedSpaceIntervention(embed_dim=12, low_rank_dimension=3, subspace_partition=[[0, 1], [1, 3]])
    try:
        iv(b, s, [[0], [1]])
        raise AssertionError("unequal sizes should fail")
    except RuntimeError:
        pass


@check("C17", "SigmoidMaskIntervention divides by torch.tensor(self.temperature) (a detached copy): the "
              "temperature never gets a gradient")
def c17():
    iv = SigmoidMaskIntervention(embed_dim=12)
    out = iv(torch.randn(2, 12), torch.randn(2, 12))
    out.sum().backward()
    assert iv.temperature.grad is None and iv.mask.grad is not None


@check("C18", "RotatedSpace with the default interchange_dim (= embed_dim) and no subspaces swaps every "
              "rotated dim: the output is the source (up to rounding); DAS needs set_interchange_dim(k) or "
              "subspaces")
def c18():
    torch.manual_seed(0)
    iv = RotatedSpaceIntervention(embed_dim=12)
    b, s = torch.randn(3, 12), torch.randn(3, 12)
    assert (iv(b, s) - s).abs().max() < 1e-5


@check("C19", "the tutorials' intervenable.model.train() turns GPT-2 dropout on (the fixture model has p=0.1): "
              "outputs change from call to call; the fixtures run in eval mode")
def c19():
    m = mtf.load_gpt2()
    ids = torch.randint(1, 320, (1, 6))
    m.train()
    with torch.no_grad():
        a, b = m(input_ids=ids).logits, m(input_ids=ids).logits
    m.eval()
    assert not torch.equal(a, b)


@check("C20", "API shape in 0.1.8: intervenable.interventions[key] IS the intervention (the tutorials' "
              "v[0] raises TypeError); IntervenableModel has no get_boundary_parameters (Boundless has one; "
              "SigmoidMaskRotatedSpace's raises AttributeError: it reads a missing intervention_boundaries)")
def c20():
    m = mtf.load_gpt2()
    ivm = pv.IntervenableModel([dict(layer=0, component="block_output",
                                     intervention_type=BoundlessRotatedSpaceIntervention)], m)
    v = list(ivm.interventions.values())[0]
    assert isinstance(v, BoundlessRotatedSpaceIntervention)
    try:
        v[0]
        raise AssertionError("v[0] should fail")
    except TypeError:
        pass
    assert not hasattr(ivm, "get_boundary_parameters")
    assert v.get_boundary_parameters() is v.intervention_boundaries
    try:
        SigmoidMaskRotatedSpaceIntervention(embed_dim=4).get_boundary_parameters()
        raise AssertionError("should raise")
    except AttributeError:
        pass


@check("C21", "torch.optim.Adam/AdamW on CPU parameters default to the single-tensor (for-loop) "
              "implementation: foreach=False, fused=False")
def c21():
    from torch.optim.optimizer import _default_to_fused_or_foreach
    p = torch.nn.Parameter(torch.ones(3))
    assert _default_to_fused_or_foreach([p], differentiable=False, use_fused=False) == (False, False)


@check("C22", "intervention_link_key shares one object between keys, so get_trainable_parameters() lists its "
              "parameters once per key; torch.optim.Adam warns about duplicate parameters and then applies "
              "the update once per occurrence (shared state: step advances twice per optimizer.step())")
def c22():
    m = mtf.load_gpt2()
    reps = [dict(layer=l, component="block_output", intervention_type=RotatedSpaceIntervention,
                 intervention_link_key=0) for l in (0, 1)]
    ivm = pv.IntervenableModel(reps, m)
    ps = ivm.get_trainable_parameters()
    assert len(ps) == 2 and ps[0] is ps[1]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        opt = torch.optim.Adam(ps, lr=1e-3)
    assert any("duplicate parameters" in str(x.message) for x in w)
    p = ps[0]
    p.grad = torch.full_like(p, 0.5)
    opt.step()
    assert int(opt.state[p]["step"]) == 2


def main():
    torch.set_num_threads(1)
    mtf.VERSIONS = mtf.versions()
    for tag, text, fn in CHECKS:
        fn()
        print(f"ok {tag}: {text}")
    print(f"{len(CHECKS)} checks passed")


if __name__ == "__main__":
    main()
