"""pyvene's IntervenableModel over the C engine: the same config dicts and call shapes."""
from __future__ import annotations

import ctypes as C
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _lib
from ._lib import check, lib
from .core import Model, as_i32, copy_out, is_torch, ptr, to_output

Inputs = Union[Dict[str, Any], Any]  # {"input_ids": .., "attention_mask": .., "position_ids": ..} or ids
_INPUT_KEYS = frozenset(("input_ids", "attention_mask", "position_ids"))


def _conv(o: Any) -> Any:
    if is_torch(o):
        o = o.detach().cpu().numpy()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"cannot pass a {type(o).__name__} in unit_locations / subspaces")


# pyvene's unit_locations / subspaces (tuples, numpy or torch ints, None) as JSON text
_json = json.JSONEncoder(separators=(",", ":"), default=_conv).encode


@dataclass
class Outputs:
    """What a forward returned: ``logits`` (B, T, V) float32 (numpy, or torch when the inputs were)."""
    logits: Any


@dataclass
class IntervenableOutputs(Outputs):
    """The intervened forward: ``logits``, ``collected_activations`` (one array per
    CollectIntervention in pyvene's order, each (B, units, D)) and the forward passes the plan ran."""
    collected_activations: List[Any] = field(default_factory=list)
    n_passes: int = 0


def _config_text(config: Any) -> Tuple[str, Optional[str]]:
    """config dict / IntervenableConfig-like object / JSON text / a config.json path / a saved folder
    -> (JSON, the folder its trained weights are in: a saved folder's own)."""
    if isinstance(config, (str, os.PathLike)) and not str(config).lstrip().startswith("{"):
        p = Path(config)
        if p.is_dir():  # a saved folder: its config and, as pyvene's load, its trained weights
            return (p / "config.json").read_text(), str(p)
        return p.read_text(), None
    if isinstance(config, str):
        return config, None
    if isinstance(config, dict):
        return json.dumps(config), None
    to_dict = getattr(config, "to_dict", None)  # pyvene's IntervenableConfig (a transformers PretrainedConfig)
    if callable(to_dict):
        return json.dumps(to_dict(), default=str), None
    raise TypeError(f"config: expected a dict, JSON text, a saved folder or an IntervenableConfig, got "
                    f"{type(config).__name__}")


_CallbackFn = C.CFUNCTYPE(C.c_int, C.c_void_p, C.POINTER(C.c_float), C.POINTER(C.c_float),
                          C.POINTER(C.c_int64), C.c_int, C.POINTER(C.c_int), C.c_int)


class IntervenableModel(_lib.Handle):
    """``IntervenableModel(config, model)`` as pyvene's: config is a pyvene config dict (what
    ``IntervenableModel.save`` writes, or the dict form ``{"representations": [{"layer": .., "component":
    .., "intervention_type": ..}]}``), its JSON text, a saved folder (trained weights are loaded from
    it) or an ``IntervenableConfig``. ``callbacks`` binds LambdaIntervention names to Python
    functions ``fn(base, source) -> new base`` on (B, units, rows, D) float32 arrays (source None
    when there is none); returning None keeps the in-place edits of ``base``. Trainable interventions
    (DAS rotations, masks, LoReFT) take their weights from ``weights`` (a folder of intkey_* files) or
    the saved folder; without them the config can be trained (``cvene.Trainer``), not run."""

    def __init__(self, config: Any, model: Model, weights: Optional[Union[str, os.PathLike]] = None,
                 callbacks: Optional[Dict[str, Callable[[np.ndarray, Optional[np.ndarray]], Any]]] = None):
        self.model = model
        model._live()
        text, folder = _config_text(config)
        self._cfg = C.c_void_p()
        model.adopt(self)  # freed before the model's context
        check(lib.cvene_config_parse(model._ctx, text.encode(), C.byref(self._cfg)), model._ctx)
        self._keep: List[Any] = []  # ctypes callback objects must outlive the config
        for name, fn in (callbacks or {}).items():
            self._bind(name, fn)
        # trainable interventions: their weights from weights= or the saved folder; without either the
        # config can be trained (cvene.Trainer) but not run (cvene_run says so)
        wdir = weights if weights is not None else folder
        if lib.cvene_config_count_trainable(self._cfg) > 0 and wdir is not None:
            check(lib.cvene_config_load_weights(self._cfg, os.fspath(wdir).encode()), model._ctx)

    def _bind(self, name: str, fn: Callable[[np.ndarray, Optional[np.ndarray]], Any]) -> None:
        def tramp(user, base, source, shape, example, dims, n_dims):  # pragma: no cover - called from C
            try:
                shp = tuple(shape[i] for i in range(4))
                n = int(np.prod(shp))
                b = np.ctypeslib.as_array(base, shape=(n,)).reshape(shp)
                s = np.ctypeslib.as_array(source, shape=(n,)).reshape(shp).copy() if source else None
                r = fn(b, s)
                if r is not None:
                    b[...] = np.asarray(r, dtype=np.float32)
                return 0
            except Exception as e:  # a Python error stops the run (CVENE_ERR_CALLBACK), not the process
                self._cb_error = e
                return 1
        cb = _CallbackFn(tramp)
        self._keep.append(cb)
        _sig = lib.cvene_config_bind_callback
        _sig.restype, _sig.argtypes = C.c_int, [C.c_void_p, C.c_char_p, _CallbackFn, C.c_void_p]
        check(_sig(self._cfg, name.encode(), cb, None), self.model._ctx)

    def __len__(self) -> int:
        return lib.cvene_config_count(self._cfg)

    def _input(self, x: Inputs, what: str, keep: List[Any]) -> _lib.Input:
        if isinstance(x, dict):
            if not _INPUT_KEYS.issuperset(x):
                raise ValueError(f"{what}: unknown key(s) {sorted(set(x) - _INPUT_KEYS)} (input_ids, attention_mask, "
                                 "position_ids)")
            ids, mask, pos = x.get("input_ids"), x.get("attention_mask"), x.get("position_ids")
        else:
            ids, mask, pos = x, None, None
        if ids is None:
            raise ValueError(f"{what}: no input_ids")
        ids = as_i32(ids, what, key="input_ids")
        if mask is not None:
            mask = as_i32(mask, what, key="attention_mask")
        if pos is not None:
            pos = as_i32(pos, what, key="position_ids")
        keep += (ids, mask, pos)
        return _lib.Input(ids.ctypes.data, None if mask is None else mask.ctypes.data, ids.shape[0], ids.shape[1],
                          None if pos is None else pos.ctypes.data)

    def _request(self, base: Inputs, sources: Optional[Sequence[Optional[Inputs]]], unit_locations: Any,
                 subspaces: Any, output_original_output: bool, keep: List[Any]) -> C.c_void_p:
        ctx = self.model._ctx
        req = C.c_void_p()
        check(lib.cvene_request_new(ctx, C.byref(req)), ctx)
        try:
            b = self._input(base, "base", keep)
            st = lib.cvene_request_set_base(req, C.byref(b))
            if st:
                check(st, ctx)
            if isinstance(sources, dict):
                sources = [sources]
            for k, s in enumerate(sources or ()):  # None: pyvene's None (that group has no source)
                si = self._input(s, "sources[%d]" % k, keep) if s is not None else None
                st = lib.cvene_request_set_source(req, k, C.byref(si) if si is not None else None)
                if st:
                    check(st, ctx)
            if unit_locations is not None:
                st = lib.cvene_request_set_unit_locations(req, _json(unit_locations).encode())
                if st:
                    check(st, ctx)
            if subspaces is not None:
                check(lib.cvene_request_set_subspaces(req, _json(subspaces).encode()), ctx)
            if output_original_output:
                lib.cvene_request_set_output_original(req, 1)
        except Exception:
            lib.cvene_request_free(req)
            raise
        return req

    def __call__(self, base: Inputs, sources: Optional[Sequence[Optional[Inputs]]] = None,
                 unit_locations: Any = None, subspaces: Any = None, output_original_output: bool = False,
                 return_dict: bool = False) -> Any:
        """One intervened forward, as pyvene's ``pv_model(base, sources, unit_locations, subspaces)``.
        base / sources: dicts of input_ids (attention_mask, position_ids) or bare ids (numpy, lists or
        torch tensors). Returns ``(original_outputs, intervened_outputs)`` - original_outputs is None
        unless output_original_output - or, with return_dict, an object with ``original_outputs``,
        ``intervened_outputs`` and ``collected_activations``. Outputs are torch tensors when base's
        input_ids is one."""
        if not self._cfg:
            raise ValueError("this IntervenableModel is closed (or its model is)")
        keep: List[Any] = []
        ctx = self.model._ctx
        req = self._request(base, sources, unit_locations, subspaces, output_original_output, keep)
        res = C.c_void_p()
        self._cb_error = None
        try:
            st = lib.cvene_run(self.model._m, self._cfg, req, C.byref(res))
            if st:
                if self._cb_error is not None:
                    raise self._cb_error
                check(st, ctx)
            like = base.get("input_ids") if isinstance(base, dict) else base
            dims = (C.c_int * 3)()
            lp = lib.cvene_result_logits(res, C.byref(dims, 0), C.byref(dims, 4), C.byref(dims, 8))
            shape = (dims[0], dims[1], dims[2])
            logits = copy_out(lp, shape)
            op = lib.cvene_result_original_logits(res)
            orig = Outputs(to_output(copy_out(op, shape), like)) if op else None
            coll = []
            for k in range(lib.cvene_result_n_collected(res)):
                v = lib.cvene_result_collected(res, k)
                coll.append(to_output(copy_out(v.data, tuple(v.shape[i] for i in range(v.ndim))), like))
            out = IntervenableOutputs(to_output(logits, like), coll, lib.cvene_result_n_passes(res))
        finally:
            lib.cvene_result_free(res)
            lib.cvene_request_free(req)
        if return_dict:
            return IntervenableModelOutput(orig, out, out.collected_activations)
        return orig, out

    forward = __call__

    def to_json(self) -> str:
        """The config in cvene's dict form (JSON text)."""
        p = C.c_char_p()
        check(lib.cvene_config_to_json(self._cfg, C.byref(p)), self.model._ctx)
        try:
            return p.value.decode()
        finally:
            lib.cvene_free(C.cast(p, C.c_void_p))

    def _release(self) -> None:
        if getattr(self, "_cfg", None):
            lib.cvene_config_free(self._cfg)
            self._cfg = C.c_void_p()


@dataclass
class IntervenableModelOutput:
    """pyvene's return_dict=True result."""
    original_outputs: Optional[Outputs]
    intervened_outputs: IntervenableOutputs
    collected_activations: List[Any]
