"""The C library through ctypes: where libcvene.so is found, the struct mirrors (checked against
the library's own sizes at import), the function signatures, and C statuses as exceptions.

Nothing here computes: every number comes from the C library (include/cvene.h documents each
function, its ownership rules and shapes)."""
from __future__ import annotations

import ctypes as C
import os
import weakref
from pathlib import Path
from typing import Any, Optional

__all__ = ["lib", "CveneError", "check", "Handle", "CtxParams", "ModelInfo", "RunOpts", "Input", "TensorView",
           "GenParams", "SweepParams", "SweepSummary", "N_COMPONENTS"]

N_COMPONENTS = 32  # CVENE_N_COMPONENTS (GPT-2's 16 components, the GRU's 16)

_STATUS = {0: "CVENE_OK", 1: "CVENE_ERR_INVALID_ARG", 2: "CVENE_ERR_IO", 3: "CVENE_ERR_FORMAT", 4: "CVENE_ERR_OOM",
           5: "CVENE_ERR_UNSUPPORTED", 6: "CVENE_ERR_BACKEND", 7: "CVENE_ERR_CALLBACK", 8: "CVENE_ERR_NUMERIC"}


class CveneError(RuntimeError):
    """A C call failed: ``status`` is its cvene_status name (e.g. ``"CVENE_ERR_INVALID_ARG"``) and
    the message is the C library's own (it names the field and value that were wrong)."""

    def __init__(self, status: int, message: str):
        self.status = _STATUS.get(status, str(status))
        super().__init__(f"{message} ({self.status})" if message else self.status)


def _find_library() -> str:
    """$CVENE_LIBRARY, else libcvene.so next to this package (a wheel), else a build tree
    (build/ of the source checkout this package sits in)."""
    env = os.environ.get("CVENE_LIBRARY")
    if env:
        return env
    here = Path(__file__).resolve().parent
    for cand in [here / "libcvene.so", here.parent.parent.parent / "build" / "libcvene.so"]:
        if cand.exists():
            return str(cand)
    raise ImportError("cvene: libcvene.so not found: install the package (pip install .), build the C library "
                      "(bash tools/build.sh build) or set CVENE_LIBRARY to its path")


lib = C.CDLL(_find_library())

i32p = C.POINTER(C.c_int32)
f32p = C.POINTER(C.c_float)
SiteFn = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_int, C.c_int, C.c_void_p)
ProgressFn = C.CFUNCTYPE(None, C.c_void_p, C.c_int64, C.c_int64)
TokenFn = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_int, i32p, C.c_int)


class CtxParams(C.Structure):
    _fields_ = [("device", C.c_int), ("n_threads", C.c_int), ("cuda_device", C.c_int), ("compute_dtype", C.c_int),
                ("activation_dtype", C.c_int)]


class TensorView(C.Structure):
    _fields_ = [("data", C.c_void_p), ("dtype", C.c_int), ("device", C.c_int), ("ndim", C.c_int),
                ("shape", C.c_int64 * 4)]


class ModelInfo(C.Structure):
    _fields_ = [("arch", C.c_int), ("n_layer", C.c_int), ("n_head", C.c_int), ("n_embd", C.c_int),
                ("n_inner", C.c_int), ("vocab_size", C.c_int), ("n_positions", C.c_int), ("n_params", C.c_int64),
                ("n_token_ids", C.c_int)]


class RunOpts(C.Structure):
    _fields_ = [("attention_mask", C.c_void_p), ("position_ids", C.c_void_p), ("logits", C.c_void_p), ("logits_row0", C.c_int),
                ("logits_to_keep", C.c_int), ("site_fn", SiteFn), ("site_user", C.c_void_p),
                ("sites", C.c_uint64 * N_COMPONENTS), ("logits_on_device", C.c_int), ("logits_vocab", i32p),
                ("n_logits_vocab", C.c_int)]


class Input(C.Structure):  # pointers as addresses (ints): the cheapest way in from numpy
    _fields_ = [("input_ids", C.c_void_p), ("attention_mask", C.c_void_p), ("B", C.c_int), ("T", C.c_int),
                ("position_ids", C.c_void_p)]


class GenParams(C.Structure):
    _fields_ = [("max_new_tokens", C.c_int), ("do_sample", C.c_int), ("temperature", C.c_float), ("top_k", C.c_int),
                ("top_p", C.c_float), ("seed", C.c_uint64), ("eos_ids", i32p), ("n_eos", C.c_int),
                ("pad_id", C.c_int32), ("intervene_on_prompt", C.c_int), ("first_call", C.c_int),
                ("last_call", C.c_int), ("keep_logits", C.c_int), ("on_token", TokenFn), ("user", C.c_void_p)]


class SweepParams(C.Structure):
    _fields_ = [("component", C.c_int), ("head", C.c_int), ("metric", C.c_int), ("token", C.c_int32),
                ("token_b", C.c_int32), ("layers", C.POINTER(C.c_int)), ("n_layers", C.c_int),
                ("positions", C.POINTER(C.c_int)), ("n_positions", C.c_int), ("window", C.c_int), ("trace", C.c_int),
                ("subject", C.POINTER(C.c_int)), ("n_subject", C.c_int), ("noise_scale", C.c_float),
                ("n_samples", C.c_int), ("seed", C.c_uint32), ("position_ids", i32p), ("naive", C.c_int),
                ("max_batch", C.c_int), ("progress", ProgressFn), ("progress_user", C.c_void_p), ("atp", C.c_int),
                ("together", C.c_int), ("comm", C.c_void_p)]


class SweepSummary(C.Structure):
    _fields_ = [("base_score", C.c_double), ("source_score", C.c_double), ("forwards", C.c_int64),
                ("sites", C.c_int64)]


def _sig(name: str, restype: Any, *argtypes: Any) -> None:
    f = getattr(lib, name)
    f.restype, f.argtypes = restype, list(argtypes)


P = C.c_void_p
PP = C.POINTER(C.c_void_p)
_sig("cvene_version", C.c_char_p)
_sig("cvene_abi_sizeof", C.c_size_t, C.c_char_p)
_sig("cvene_status_name", C.c_char_p, C.c_int)
_sig("cvene_ctx_default_params", CtxParams)
_sig("cvene_ctx_new", C.c_int, C.POINTER(CtxParams), PP, C.c_char_p, C.c_size_t)
_sig("cvene_ctx_free", None, P)
_sig("cvene_ctx_error", C.c_char_p, P)
_sig("cvene_ctx_device_name", C.c_char_p, P)
_sig("cvene_ctx_threads", C.c_int, P)
_sig("cvene_cuda_available", C.c_int)
_sig("cvene_model_load", C.c_int, P, C.c_char_p, PP)
_sig("cvene_model_free", None, P)
_sig("cvene_model_get_info", ModelInfo, P)
_sig("cvene_component_name", C.c_char_p, C.c_int)
_sig("cvene_component_from_name", C.c_int, C.c_char_p)
_sig("cvene_forward", C.c_int, P, P, C.c_int, C.c_int, C.POINTER(RunOpts))
_sig("cvene_config_parse", C.c_int, P, C.c_char_p, PP)
_sig("cvene_config_free", None, P)
_sig("cvene_config_count", C.c_int, P)
_sig("cvene_config_to_json", C.c_int, P, C.POINTER(C.c_char_p))
_sig("cvene_config_load_weights", C.c_int, P, C.c_char_p)
_sig("cvene_config_count_trainable", C.c_int, P)
_sig("cvene_free", None, P)
_sig("cvene_request_new", C.c_int, P, PP)
_sig("cvene_request_free", None, P)
_sig("cvene_request_set_base", C.c_int, P, C.POINTER(Input))
_sig("cvene_request_set_source", C.c_int, P, C.c_int, C.POINTER(Input))
_sig("cvene_request_set_unit_locations", C.c_int, P, C.c_char_p)
_sig("cvene_request_set_subspaces", C.c_int, P, C.c_char_p)
_sig("cvene_request_set_output_original", None, P, C.c_int)
_sig("cvene_run", C.c_int, P, P, P, PP)
_sig("cvene_result_logits", P, P, P, P, P)  # B, T, V out: addresses (byref into one c_int * 3)
_sig("cvene_result_original_logits", P, P)
_sig("cvene_result_n_collected", C.c_int, P)
_sig("cvene_result_collected", TensorView, P, C.c_int)
_sig("cvene_result_n_passes", C.c_int, P)
_sig("cvene_result_free", None, P)
_sig("cvene_gen_default_params", GenParams)
_sig("cvene_generate", C.c_int, P, P, P, C.POINTER(GenParams), PP)
_sig("cvene_generation_ids", i32p, P, C.POINTER(C.c_int), C.POINTER(C.c_int))
_sig("cvene_generation_steps", C.c_int, P)
_sig("cvene_generation_prompt_len", C.c_int, P)
_sig("cvene_generation_logits", f32p, P, C.POINTER(C.c_int), C.POINTER(C.c_int), C.POINTER(C.c_int))
_sig("cvene_generation_free", None, P)
_sig("cvene_sweep_default_params", SweepParams)
_sig("cvene_sweep", C.c_int, P, i32p, i32p, C.c_int, C.POINTER(SweepParams), f32p, C.POINTER(SweepSummary))
_sig("cvene_sweep_atp", C.c_int, P, i32p, i32p, C.c_int, C.POINTER(SweepParams), f32p, C.POINTER(SweepSummary))
_sig("cvene_tokenizer_load", C.c_int, P, C.c_char_p, PP)
_sig("cvene_tokenizer_free", None, P)
_sig("cvene_tokenizer_encode", C.c_int, P, C.c_char_p, C.c_size_t, C.POINTER(i32p), C.POINTER(C.c_size_t))
_sig("cvene_tokenizer_decode", C.c_int, P, i32p, C.c_size_t, C.POINTER(C.c_void_p), C.POINTER(C.c_size_t))
_sig("cvene_tokenizer_vocab_size", C.c_int, P)

# the mirrors above must be the library's structs: a mismatch would corrupt memory silently
for _cls, _name in [(CtxParams, "cvene_ctx_params"), (TensorView, "cvene_tensor_view"), (ModelInfo, "cvene_model_info"),
                    (RunOpts, "cvene_run_opts"), (Input, "cvene_input"), (GenParams, "cvene_gen_params"),
                    (SweepParams, "cvene_sweep_params"), (SweepSummary, "cvene_sweep_summary")]:
    _want = lib.cvene_abi_sizeof(_name.encode())
    if _want != C.sizeof(_cls):
        raise ImportError(f"cvene: {_name} is {_want} bytes in {lib._name} but {C.sizeof(_cls)} in this package: "
                          "the package and the library are from different versions")


class Handle:
    """A C object freed once: by close(), or when garbage-collected. What points into it (a config
    into its model's context, a trainer into its config) is adopted: the parent counts its live
    children and frees its own C objects only after the last of them, whatever order Python
    finalizes them in (cyclic garbage and interpreter exit finalize in any order and clear weak
    references first). close() closes the children it can still reach, then itself."""

    _users = 0         # live adopted children
    _closing = False   # close() was called while children were alive
    _freed = False

    def adopt(self, child: "Handle") -> None:
        kids = self.__dict__.get("_children")
        if kids is None:
            kids = self.__dict__["_children"] = weakref.WeakSet()
        kids.add(child)
        child.__dict__["_parent_handle"] = self
        self._users += 1

    def _release(self) -> None:  # the subclass frees its C objects
        raise NotImplementedError

    def close(self) -> None:
        """Free the C objects (this object and those that depend on it are unusable afterwards)."""
        for child in list(self.__dict__.get("_children") or ()):
            child.close()
        if self._users > 0:  # children out of reach (being finalized): the last one frees us
            self._closing = True
            return
        self._free_now()

    def _free_now(self) -> None:
        if self._freed:
            return
        self._freed = True
        self._release()
        parent = self.__dict__.pop("_parent_handle", None)
        if parent is not None:
            parent._users -= 1
            if parent._closing and parent._users == 0:
                parent._free_now()

    def __del__(self) -> None:
        self.close()


def check(status: int, ctx: Optional[int]) -> None:
    """Raise CveneError with the context's message unless status is CVENE_OK."""
    if status != 0:
        msg = lib.cvene_ctx_error(ctx).decode(errors="replace") if ctx else ""
        raise CveneError(status, msg)
