"""Contexts, models, forwards and the tokenizer (cvene.load, Model, Tokenizer)."""
from __future__ import annotations

import ctypes as C
import os
from typing import Any, Optional, Sequence, Union

import numpy as np

from . import _lib
from ._lib import check, lib

ArrayLike = Union[np.ndarray, Sequence[Sequence[int]], Sequence[int], Any]  # Any: a torch tensor

_DTYPES = {"float32": 0, "f32": 0, "float": 0, "float16": 1, "f16": 1, "half": 1, "bfloat16": 2, "bf16": 2}
_ARCH = {0: "gpt2", 1: "gpt_neox", 2: "gru"}


def _dtype_code(dtype: Any) -> int:
    """'float32' / 'bf16' / np.float16 / torch.bfloat16 ... -> cvene_dtype"""
    if dtype is None:
        return 0
    name = str(dtype).replace("torch.", "").replace("<class 'numpy.", "").rstrip("'>")
    if name not in _DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected float32, bfloat16 or float16")
    return _DTYPES[name]


def is_torch(x: Any) -> bool:
    """x is a torch object (checked without importing torch)"""
    return type(x).__module__.startswith("torch")


_I32_MIN, _I32_MAX = int(np.iinfo(np.int32).min), int(np.iinfo(np.int32).max)
_INT32 = np.dtype(np.int32)


def as_i32(x: Optional[ArrayLike], what: str, ndim: int = 2, key: Optional[str] = None) -> Optional[np.ndarray]:
    """ids / masks / positions as a C-contiguous int32 array of ndim dims (a 1-d row becomes
    (1, T)); None stays None. Values beyond int32 are refused, not wrapped. Messages name
    what (and what.key when key is given)."""
    if x is None:
        return None
    if type(x) is np.ndarray and x.dtype == _INT32 and x.ndim == ndim and x.flags.c_contiguous:
        return x  # the common fast path: nothing to convert or check
    if key is not None:
        what = f"{what}.{key}"
    if is_torch(x):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype.kind not in "iub":
        raise TypeError(f"{what}: expected integers, got {a.dtype}")
    if ndim == 2 and a.ndim == 1:
        a = a[None, :]
    if a.ndim != ndim:
        raise ValueError(f"{what}: expected {ndim} dimensions, got shape {a.shape}")
    b = np.ascontiguousarray(a, dtype=np.int32)
    if a.dtype.itemsize >= 4 and a.dtype != _INT32 and a.size and not np.array_equal(b, a):
        raise ValueError(f"{what}: a value does not fit in int32")
    return b


def ptr(a: Optional[np.ndarray], typ: Any = None) -> Any:
    """a's address (None for None); typ: a ctypes pointer type instead of an int"""
    if a is None:
        return None
    return a.ctypes.data if typ is None else a.ctypes.data_as(typ)


def copy_out(address: int, shape: tuple, dtype: Any = np.float32) -> np.ndarray:
    """a fresh numpy array holding the C buffer at address (which the caller is about to free)"""
    out = np.empty(shape, dtype=dtype)
    if out.nbytes:
        C.memmove(out.ctypes.data, address, out.nbytes)
    return out


class Model(_lib.Handle):
    """A model loaded from a local Hugging Face directory (config.json + model.safetensors; GPT-2,
    GPT-NeoX / Pythia, pyvene's GRU) on a device. Use ``cvene.load``. Nothing is read from the
    network. The model and its context are freed by ``close()`` (or when garbage-collected), after
    everything built on it. Attributes: ``arch`` ("gpt2", "gpt_neox", "gru"), ``n_layer``, ``n_head``,
    ``n_embd``, ``n_inner``, ``vocab_size`` (the logits' last dimension), ``n_positions``, ``n_params``,
    ``path``, ``device``."""

    def __init__(self, path: Union[str, os.PathLike], device: str = "cpu", dtype: Any = None, threads: int = 0,
                 cuda_device: int = 0):
        self._ctx = C.c_void_p()
        self._m = C.c_void_p()
        p = lib.cvene_ctx_default_params()
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device {device!r}: expected 'cpu' or 'cuda'")
        p.device = 1 if device == "cuda" else 0
        p.n_threads, p.cuda_device = int(threads), int(cuda_device)
        p.compute_dtype = p.activation_dtype = _dtype_code(dtype)
        err = C.create_string_buffer(1024)
        st = lib.cvene_ctx_new(C.byref(p), C.byref(self._ctx), err, len(err))
        if st != 0:
            raise _lib.CveneError(st, err.value.decode(errors="replace"))
        self.path, self.device = os.fspath(path), device
        try:
            check(lib.cvene_model_load(self._ctx, self.path.encode(), C.byref(self._m)), self._ctx)
        except Exception:
            lib.cvene_ctx_free(self._ctx)
            self._ctx = C.c_void_p()
            raise
        i = lib.cvene_model_get_info(self._m)
        self.arch: str = _ARCH.get(i.arch, "?")
        self.n_layer, self.n_head, self.n_embd, self.n_inner = i.n_layer, i.n_head, i.n_embd, i.n_inner
        self.vocab_size, self.n_positions, self.n_params = i.vocab_size, i.n_positions, i.n_params
        self._tok: Optional[Tokenizer] = None

    @property
    def device_name(self) -> str:
        """The GPU's name, or the CPU's model name."""
        return lib.cvene_ctx_device_name(self._ctx).decode()

    @property
    def tokenizer(self) -> "Tokenizer":
        """The model directory's tokenizer (tokenizer.json, or vocab.json + merges.txt)."""
        self._live()
        if self._tok is None:
            self._tok = Tokenizer(self.path, _model=self)
            self.adopt(self._tok)
        return self._tok

    def forward(self, input_ids: ArrayLike, attention_mask: Optional[ArrayLike] = None,
                position_ids: Optional[ArrayLike] = None, logits_to_keep: int = 0) -> Any:
        """Logits (B, T, V) float32 (or (B, logits_to_keep, V)) of one batch, as transformers'
        ``model(input_ids, attention_mask=..., position_ids=...).logits``; a torch tensor when
        input_ids is one (sharing the numpy array's memory), else a numpy array."""
        self._live()
        ids = as_i32(input_ids, "input_ids")
        B, T = ids.shape
        mask = as_i32(attention_mask, "attention_mask")
        pos = as_i32(position_ids, "position_ids")
        for name, a in (("attention_mask", mask), ("position_ids", pos)):
            if a is not None and a.shape != ids.shape:
                raise ValueError(f"{name} has shape {a.shape}, input_ids {ids.shape}")
        rows = logits_to_keep if logits_to_keep else T
        out = np.empty((B, rows, self.vocab_size), dtype=np.float32)
        o = _lib.RunOpts()
        o.attention_mask, o.position_ids = ptr(mask), ptr(pos)
        o.logits = out.ctypes.data
        o.logits_to_keep = int(logits_to_keep)
        check(lib.cvene_forward(self._m, ptr(ids), B, T, C.byref(o)), self._ctx)
        return to_output(out, input_ids)

    __call__ = forward

    def _release(self) -> None:
        if getattr(self, "_m", None):
            lib.cvene_model_free(self._m)
            self._m = C.c_void_p()
        if getattr(self, "_ctx", None):
            lib.cvene_ctx_free(self._ctx)
            self._ctx = C.c_void_p()

    def _live(self) -> None:
        if not self._m:
            raise ValueError("the model is closed")

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"cvene.Model({self.path!r}, {self.arch}, {self.n_layer} layers, n_embd {self.n_embd}, "
                f"{self.n_params / 1e6:.1f}M parameters, device {self.device})")


def to_output(a: np.ndarray, like: Any) -> Any:
    """numpy out, or a torch tensor over the same memory when the caller gave torch input."""
    if is_torch(like):
        import torch
        return torch.from_numpy(a)
    return a


def load(path: Union[str, os.PathLike], device: str = "cpu", dtype: Any = None, threads: int = 0) -> Model:
    """Load a model directory on ``device`` ("cpu" or "cuda"); ``dtype`` float32 (default), bfloat16
    or float16 runs it as transformers after ``model.to(dtype)`` (GPT-2 / GPT-NeoX); ``threads``: CPU
    threads (0: OpenMP's default)."""
    return Model(path, device=device, dtype=dtype, threads=threads)


class Tokenizer(_lib.Handle):
    """Byte-level BPE as GPT-2 uses it (ids identical to Hugging Face's GPT2TokenizerFast), from a
    model directory or a tokenizer.json path."""

    def __init__(self, path: Union[str, os.PathLike], _model: Optional[Model] = None):
        self._own_ctx = _model is None
        self._ctx = _model._ctx if _model is not None else C.c_void_p()
        if self._own_ctx:
            p = lib.cvene_ctx_default_params()
            err = C.create_string_buffer(512)
            st = lib.cvene_ctx_new(C.byref(p), C.byref(self._ctx), err, len(err))
            if st != 0:
                raise _lib.CveneError(st, err.value.decode(errors="replace"))
        self._tok = C.c_void_p()
        try:
            check(lib.cvene_tokenizer_load(self._ctx, os.fspath(path).encode(), C.byref(self._tok)), self._ctx)
        except Exception:
            if self._own_ctx:
                lib.cvene_ctx_free(self._ctx)
            self._ctx = C.c_void_p()
            raise
        self.vocab_size: int = lib.cvene_tokenizer_vocab_size(self._tok)

    def encode(self, text: Union[str, bytes]) -> list:
        """Token ids of text (no special tokens added, as GPT-2's tokenizer)."""
        b = text.encode() if isinstance(text, str) else bytes(text)
        ids, n = _lib.i32p(), C.c_size_t()
        check(lib.cvene_tokenizer_encode(self._tok, b, len(b), C.byref(ids), C.byref(n)), self._ctx)
        try:
            return [ids[i] for i in range(n.value)]
        finally:
            lib.cvene_free(C.cast(ids, C.c_void_p))

    __call__ = encode

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ids (invalid UTF-8 bytes, e.g. half a character, become U+FFFD here)."""
        a = as_i32(ids, "ids", ndim=1)
        text, n = C.c_void_p(), C.c_size_t()
        check(lib.cvene_tokenizer_decode(self._tok, ptr(a, _lib.i32p), a.size, C.byref(text), C.byref(n)), self._ctx)
        try:
            return C.string_at(text, n.value).decode(errors="replace")
        finally:
            lib.cvene_free(text)

    def _release(self) -> None:
        if getattr(self, "_tok", None):
            lib.cvene_tokenizer_free(self._tok)
            self._tok = C.c_void_p()
        if getattr(self, "_own_ctx", False) and self._ctx:
            lib.cvene_ctx_free(self._ctx)
            self._ctx = C.c_void_p()
