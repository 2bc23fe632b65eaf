"""Training interventions (DAS, masks, LoReFT) and probes: thin calls over cvene_trainer_* and
cvene_collect / cvene_probe_*, with the CLI's defaults (`cvene train`, `cvene probe`)."""
from __future__ import annotations

import ctypes as C
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _lib
from ._lib import check, lib
from .core import Model, as_i32
from .intervenable import IntervenableModel

_ProgressFn = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_int64, C.c_int64, C.c_double, C.c_double)


class _TrainParams(C.Structure):
    _fields_ = [("epochs", C.c_int), ("batch_size", C.c_int), ("grad_accum", C.c_int), ("max_steps", C.c_int64),
                ("optimizer", C.c_int), ("lr", C.c_double), ("beta1", C.c_double), ("beta2", C.c_double),
                ("eps", C.c_double), ("weight_decay", C.c_double), ("warmup_ratio", C.c_double), ("shuffle", C.c_int),
                ("seed", C.c_uint64), ("temperature_start", C.c_double), ("temperature_end", C.c_double),
                ("boundary_loss", C.c_double), ("boundary_lr", C.c_double), ("progress", _ProgressFn),
                ("progress_user", C.c_void_p), ("comm", C.c_void_p),
                ("shards", C.c_int)]


class _Example(C.Structure):
    _fields_ = [("base_ids", C.c_void_p), ("base_len", C.c_int), ("source_ids", C.c_void_p), ("source_len", C.c_int),
                ("base_pos", C.c_void_p), ("source_pos", C.c_void_p), ("n_pos", C.c_int), ("label", C.c_int32),
                ("label_pos", C.c_int)]


class _Site(C.Structure):
    _fields_ = [("component", C.c_int), ("layer", C.c_int)]


class _ProbeParams(C.Structure):
    _fields_ = [("steps", C.c_int), ("lr", C.c_double), ("beta1", C.c_double), ("beta2", C.c_double),
                ("eps", C.c_double), ("weight_decay", C.c_double), ("standardize", C.c_int)]


def _sig(name: str, restype: Any, *argtypes: Any) -> None:
    f = getattr(lib, name)
    f.restype, f.argtypes = restype, list(argtypes)


P, PP = C.c_void_p, C.POINTER(C.c_void_p)
_sig("cvene_train_default_params", _TrainParams)
_sig("cvene_dataset_new", C.c_int, P, PP)
_sig("cvene_dataset_add", C.c_int, P, C.POINTER(_Example))
_sig("cvene_dataset_load_jsonl", C.c_int, P, C.c_char_p, P, PP)
_sig("cvene_dataset_count", C.c_int, P)
_sig("cvene_dataset_free", None, P)
_sig("cvene_trainer_new", C.c_int, P, P, C.POINTER(_TrainParams), PP)
_sig("cvene_trainer_fit", C.c_int, P, P)
_sig("cvene_trainer_evaluate", C.c_int, P, P, C.POINTER(C.c_double), C.POINTER(C.c_double))
_sig("cvene_trainer_losses", C.POINTER(C.c_double), P, C.POINTER(C.c_int64))
_sig("cvene_trainer_save", C.c_int, P, C.c_char_p)
_sig("cvene_trainer_load", C.c_int, P, C.c_int, C.c_char_p)
_sig("cvene_trainer_free", None, P)
_sig("cvene_collect", C.c_int, P, P, P, P, C.c_int, C.POINTER(_Site), C.c_int, C.c_int, PP)
_sig("cvene_collect_positions", C.c_int, P, P, P, P, C.c_int, C.c_int, C.POINTER(_Site), C.c_int, C.c_int, PP)
_sig("cvene_activations_count", C.c_int, P)
_sig("cvene_activations_width", C.c_int, P, C.c_int)
_sig("cvene_activations_data", P, P, C.c_int)
_sig("cvene_activations_free", None, P)
_sig("cvene_probe_default_params", _ProbeParams)
_sig("cvene_probe_fit", C.c_int, P, P, P, C.c_int, C.c_int, C.c_int, C.POINTER(_ProbeParams), PP)
_sig("cvene_probe_evaluate", C.c_int, P, P, P, C.c_int, C.POINTER(C.c_double), C.POINTER(C.c_double))
_sig("cvene_probe_weights", None, P, PP, PP, PP, PP)
_sig("cvene_probe_free", None, P)
for _cls, _name in [(_TrainParams, "cvene_train_params"), (_Example, "cvene_example"), (_ProbeParams, "cvene_probe_params")]:
    _want = lib.cvene_abi_sizeof(_name.encode())
    if _want != C.sizeof(_cls):
        raise ImportError(f"cvene: {_name} is {_want} bytes in the library, {C.sizeof(_cls)} in this package")

Example = Dict[str, Any]  # {"base": ids, "source": ids, "base_pos": p | [p..], "source_pos": ..., "label": id}


class Dataset(_lib.Handle):
    """Training / evaluation examples: a JSONL file as `cvene train --data` reads it (text through the
    model's tokenizer, or ids), or a list of dicts with base / source ids, positions and a label."""

    def __init__(self, model: Model, data: Union[str, os.PathLike, Iterable[Example]]):
        self.model = model
        model._live()
        self._d = C.c_void_p()
        model.adopt(self)
        ctx = model._ctx
        if isinstance(data, (str, os.PathLike)):
            tok = model.tokenizer._tok if _has_tokenizer(model) else None
            check(lib.cvene_dataset_load_jsonl(ctx, os.fspath(data).encode(), tok, C.byref(self._d)), ctx)
            return
        check(lib.cvene_dataset_new(ctx, C.byref(self._d)), ctx)
        for i, e in enumerate(data):
            missing = [k for k in ("base", "label") if k not in e]
            if missing:
                raise ValueError(f"examples[{i}] has no {missing[0]!r} (base, source, base_pos, source_pos, label)")
            try:
                b = as_i32(e["base"], f"examples[{i}].base", ndim=1)
                s = as_i32(e["source"], f"examples[{i}].source", ndim=1) if e.get("source") is not None else None
                bp = np.atleast_1d(np.asarray(e.get("base_pos", -1), dtype=np.intc))
                sp = np.atleast_1d(np.asarray(e.get("source_pos", bp), dtype=np.intc))
            except KeyError as k:
                raise ValueError(f"examples[{i}] has no {k}") from None
            if sp.size != bp.size:
                raise ValueError(f"examples[{i}]: {bp.size} base positions but {sp.size} source positions")
            bp = np.where(bp < 0, bp + b.size, bp).astype(np.intc)  # negative: from the end, as the JSONL form
            sp = np.where(sp < 0, sp + (s.size if s is not None else b.size), sp).astype(np.intc)
            x = _Example(b.ctypes.data, b.size, None if s is None else s.ctypes.data, 0 if s is None else s.size,
                         bp.ctypes.data, sp.ctypes.data, bp.size, int(e["label"]), int(e.get("label_pos", -1)))
            check(lib.cvene_dataset_add(self._d, C.byref(x)), ctx)

    def __len__(self) -> int:
        return lib.cvene_dataset_count(self._d)

    def _release(self) -> None:
        if getattr(self, "_d", None):
            lib.cvene_dataset_free(self._d)
            self._d = C.c_void_p()


def _has_tokenizer(model: Model) -> bool:
    try:
        model.tokenizer
        return True
    except _lib.CveneError:
        return False


def _dataset(model: Model, data: Any) -> Dataset:
    return data if isinstance(data, Dataset) else Dataset(model, data)


class Trainer(_lib.Handle):
    """Trains the trainable interventions of an IntervenableModel with the model frozen (`cvene
    train`): Adam / AdamW with pyvene's defaults (lr 1e-3, linear warm-up over 10% of the steps then
    decay), from ``seed``. ``init`` (a safetensors file of pyvene's state-dict names) sets the first
    intervention's starting parameters. After ``fit``, ``intervenable()`` is an IntervenableModel
    running the trained interventions (``save(dir)`` writes pyvene's files)."""

    def __init__(self, intervenable: IntervenableModel, *, epochs: int = 1, batch_size: int = 16, lr: float = 1e-3,
                 max_steps: int = 0, optimizer: str = "adam", weight_decay: float = 0.0, warmup_ratio: float = 0.1,
                 grad_accum: int = 1, shuffle: bool = True, seed: int = 0,
                 temperature: Optional[Tuple[float, float]] = None, boundary_loss: float = 0.0,
                 boundary_lr: float = 1e-2, init: Optional[Union[str, os.PathLike]] = None,
                 progress: Union[bool, Callable[[int, int, float, float], Any]] = False):
        self.pv, model = intervenable, intervenable.model
        p = lib.cvene_train_default_params()
        if optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer {optimizer!r}: expected 'adam' or 'adamw'")
        p.epochs, p.batch_size, p.lr, p.max_steps = int(epochs), int(batch_size), float(lr), int(max_steps)
        p.optimizer, p.weight_decay, p.warmup_ratio = int(optimizer == "adamw"), float(weight_decay), float(warmup_ratio)
        p.grad_accum, p.shuffle, p.seed = int(grad_accum), int(bool(shuffle)), int(seed)
        if temperature is not None:
            p.temperature_start, p.temperature_end = float(temperature[0]), float(temperature[1])
        p.boundary_loss, p.boundary_lr = float(boundary_loss), float(boundary_lr)
        fn = progress if callable(progress) else _train_bar() if progress else None
        self._cb = _ProgressFn(lambda user, step, total, loss, lr_: int(bool(fn(step, total, loss, lr_)))) if fn \
            else _ProgressFn()
        p.progress = self._cb
        self._t = C.c_void_p()
        if not intervenable._cfg:
            raise ValueError("the IntervenableModel is closed")
        intervenable.adopt(self)  # the trainer points into the config: freed before it
        check(lib.cvene_trainer_new(model._m, intervenable._cfg, C.byref(p), C.byref(self._t)), model._ctx)
        if init is not None:
            check(lib.cvene_trainer_load(self._t, 0, os.fspath(init).encode()), model._ctx)

    def fit(self, data: Any) -> "Trainer":
        """Train on data (a Dataset, a JSONL path or a list of example dicts)."""
        d = _dataset(self.pv.model, data)
        check(lib.cvene_trainer_fit(self._t, d._d), self.pv.model._ctx)
        return self

    def evaluate(self, data: Any) -> Tuple[float, float]:
        """(interchange-intervention accuracy, mean loss) of the intervened model on data."""
        d = _dataset(self.pv.model, data)
        acc, loss = C.c_double(), C.c_double()
        check(lib.cvene_trainer_evaluate(self._t, d._d, C.byref(acc), C.byref(loss)), self.pv.model._ctx)
        return acc.value, loss.value

    @property
    def losses(self) -> np.ndarray:
        """The loss of every optimizer step so far."""
        n = C.c_int64()
        p = lib.cvene_trainer_losses(self._t, C.byref(n))
        return np.ctypeslib.as_array(p, shape=(n.value,)).copy() if n.value else np.zeros(0)

    def save(self, directory: Union[str, os.PathLike]) -> None:
        """pyvene's config.json and intkey_<key>.safetensors in directory (IntervenableModel(directory, model)
        loads them back)."""
        check(lib.cvene_trainer_save(self._t, os.fspath(directory).encode()), self.pv.model._ctx)

    def intervenable(self) -> IntervenableModel:
        """A new IntervenableModel with the trained weights (through a temporary folder of pyvene's files)."""
        import tempfile
        d = tempfile.TemporaryDirectory(prefix="cvene-trained-")
        self.save(d.name)
        pv = IntervenableModel(d.name, self.pv.model)
        pv._weights_dir = d  # the library reads the files at the first run: they live as long as pv
        return pv

    def _release(self) -> None:
        if getattr(self, "_t", None):
            lib.cvene_trainer_free(self._t)
            self._t = C.c_void_p()


def _train_bar() -> Optional[Callable[[int, int, float, float], None]]:
    try:
        from tqdm.auto import tqdm  # type: ignore
    except ImportError:
        return None
    bar: Dict[str, Any] = {}

    def update(step: int, total: int, loss: float, lr: float) -> None:
        if "b" not in bar:
            bar["b"] = tqdm(total=total, unit="step", desc="train")
        bar["b"].n = step
        bar["b"].set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.1e}", refresh=True)
    return update


def train(intervenable: IntervenableModel, data: Any, eval_data: Any = None, **kwargs: Any) -> Trainer:
    """``Trainer(intervenable, **kwargs).fit(data)``; with eval_data, the held-out IIA and loss are
    ``trainer.eval_accuracy`` / ``trainer.eval_loss``."""
    t = Trainer(intervenable, **kwargs).fit(data)
    if eval_data is not None:
        t.eval_accuracy, t.eval_loss = t.evaluate(eval_data)
    return t


def collect(model: Model, ids: Sequence[Sequence[int]], positions: Any,
            sites: Sequence[Tuple[str, int]], batch_size: int = 32) -> Dict[Tuple[str, int], np.ndarray]:
    """Activations at one position per example (negative: from the end) at each (component, layer)
    site: {(component, layer): (N, D) float32}. positions (N, R) -- R positions per example, a probe
    grid's columns, from the same single pass -- gives (N, R, D) arrays instead."""
    rows = [as_i32(r, f"ids[{i}]", ndim=1) for i, r in enumerate(ids)]
    N = len(rows)
    ptrs = (C.c_void_p * max(N, 1))(*[r.ctypes.data for r in rows])
    lens = np.asarray([r.size for r in rows], dtype=np.intc)
    pos = np.ascontiguousarray(positions, dtype=np.intc)
    grid = pos.ndim == 2
    R = pos.shape[1] if grid else 1
    if pos.ndim not in (1, 2) or pos.shape[0] != N:
        raise ValueError(f"{N} examples but positions of shape {pos.shape} (want ({N},) or ({N}, R))")
    st = (_Site * max(len(sites), 1))()
    for k, (comp, layer) in enumerate(sites):
        c = lib.cvene_component_from_name(comp.encode())
        if c == _lib.N_COMPONENTS:
            raise ValueError(f"sites[{k}]: component {comp!r} is not a component name")
        st[k] = _Site(c, int(layer))
    a = C.c_void_p()
    check(lib.cvene_collect_positions(model._m, ptrs, lens.ctypes.data, pos.ctypes.data, R, N, st, len(sites),
                                      int(batch_size), C.byref(a)), model._ctx)
    try:
        out = {}
        for k, (comp, layer) in enumerate(sites):
            D = lib.cvene_activations_width(a, k)
            x = np.ctypeslib.as_array(C.cast(lib.cvene_activations_data(a, k), _lib.f32p), shape=(N * R, D)).copy()
            out[(comp, int(layer))] = x.reshape(N, R, D) if grid else x
        return out
    finally:
        lib.cvene_activations_free(a)


class Probe(_lib.Handle):
    """A softmax-regression probe fitted by full-batch Adam (`cvene probe`; torch's Adam on the same
    activations gives the same weights): ``Probe.fit(X, y, n_classes)``, then ``accuracy`` /
    ``evaluate``; ``W`` (C, D), ``b`` (C), and the standardisation's ``mean`` / ``std``."""

    def __init__(self, handle: C.c_void_p, ctx: C.c_void_p, ctx_owner: Any):
        self._p, self._ctx, self._owner = handle, ctx, ctx_owner
        W, b, mean, std = (C.c_void_p() for _ in range(4))
        lib.cvene_probe_weights(self._p, C.byref(W), C.byref(b), C.byref(mean), C.byref(std))
        self._shape = None
        self._raw = (W, b, mean, std)

    @classmethod
    def fit(cls, X: np.ndarray, y: Sequence[int], n_classes: Optional[int] = None, *, steps: int = 300,
            lr: float = 1e-2, weight_decay: float = 0.0, standardize: bool = True,
            model: Optional[Model] = None) -> "Probe":
        """Fit on X (N, D) float32 with labels y in [0, n_classes) (default: max(y) + 1): W and b from
        zero, ``steps`` full-batch Adam steps (torch's defaults, ``lr``) on the mean cross-entropy plus
        ``weight_decay`` on W; ``standardize`` z-scores each feature with the training mean / std.
        ``model``: tie the probe's lifetime to that model's context (else it has its own)."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        yy = as_i32(y, "y", ndim=1)
        if X.ndim != 2 or X.shape[0] != yy.size:
            raise ValueError(f"X must be (N, D) with N = len(y) = {yy.size}, got {X.shape}")
        C_ = int(n_classes if n_classes is not None else (int(yy.max()) + 1 if yy.size else 0))
        holder = model if model is not None else _CtxHolder()
        p = lib.cvene_probe_default_params()
        p.steps, p.lr, p.weight_decay, p.standardize = int(steps), float(lr), float(weight_decay), int(bool(standardize))
        h = C.c_void_p()
        check(lib.cvene_probe_fit(holder._ctx, X.ctypes.data, yy.ctypes.data, X.shape[0], X.shape[1], C_, C.byref(p),
                                  C.byref(h)), holder._ctx)
        pr = cls(h, holder._ctx, holder)
        pr.n_classes, pr.dim = C_, X.shape[1]
        if model is not None:
            model.adopt(pr)
        return pr

    def _arr(self, i: int, shape: Tuple[int, ...]) -> Optional[np.ndarray]:
        p = self._raw[i].value
        return None if not p else np.ctypeslib.as_array(C.cast(p, _lib.f32p), shape=shape).copy()

    @property
    def W(self) -> np.ndarray:
        """the weights (n_classes, D)"""
        return self._arr(0, (self.n_classes, self.dim))

    @property
    def b(self) -> np.ndarray:
        """the bias (n_classes,)"""
        return self._arr(1, (self.n_classes,))

    @property
    def mean(self) -> Optional[np.ndarray]:
        """the standardisation's mean (D,), or None without it"""
        return self._arr(2, (self.dim,))

    @property
    def std(self) -> Optional[np.ndarray]:
        """the standardisation's deviation (D,), or None without it"""
        return self._arr(3, (self.dim,))

    def evaluate(self, X: np.ndarray, y: Sequence[int]) -> Tuple[float, float]:
        """(accuracy, mean cross-entropy) on X (N, D)"""
        X = np.ascontiguousarray(X, dtype=np.float32)
        yy = as_i32(y, "y", ndim=1)
        acc, loss = C.c_double(), C.c_double()
        check(lib.cvene_probe_evaluate(self._p, X.ctypes.data, yy.ctypes.data, X.shape[0], C.byref(acc), C.byref(loss)),
              self._ctx)
        return acc.value, loss.value

    def accuracy(self, X: np.ndarray, y: Sequence[int]) -> float:
        """the fraction of X's rows whose top class is their label"""
        return self.evaluate(X, y)[0]

    def _release(self) -> None:
        if getattr(self, "_p", None):
            lib.cvene_probe_free(self._p)
            self._p = C.c_void_p()


class _CtxHolder:
    """a CPU context for a probe fitted without a model"""

    def __init__(self) -> None:
        self._ctx = C.c_void_p()
        p = lib.cvene_ctx_default_params()
        err = C.create_string_buffer(256)
        st = lib.cvene_ctx_new(C.byref(p), C.byref(self._ctx), err, len(err))
        if st:
            raise _lib.CveneError(st, err.value.decode())

    def __del__(self) -> None:
        if self._ctx:
            lib.cvene_ctx_free(self._ctx)
