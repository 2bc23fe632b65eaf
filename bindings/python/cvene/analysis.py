"""Sweeps, causal tracing and generation: thin calls over cvene_sweep and cvene_generate, with
the CLI's defaults."""
from __future__ import annotations

import ctypes as C
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from . import _lib
from ._lib import check, lib
from .core import Model, as_i32, is_torch, ptr, to_output
from .intervenable import IntervenableModel

_METRICS = {"logit-diff": 0, "logit_diff": 0, "prob": 1, "kl": 2}


def _progress_bar(total_hint: str) -> Callable[[int, int], None]:
    """tqdm where installed, else nothing"""
    try:
        from tqdm.auto import tqdm  # type: ignore
    except ImportError:
        return lambda done, total: None
    bar = {"b": None}

    def update(done: int, total: int) -> None:
        if bar["b"] is None:
            bar["b"] = tqdm(total=total or None, unit="site", desc=total_hint)
        bar["b"].n = done
        bar["b"].refresh()
    return update


@dataclass
class SweepResult:
    """scores (n_layers, n_positions) float32 in the order of ``layers`` / ``positions``; the metric
    of the unpatched base and of the source run; forward passes run; sites scored."""
    scores: np.ndarray
    layers: list
    positions: list
    base_score: float
    source_score: float
    forwards: int
    sites: int


def _token(model: Model, t: Union[int, str, None], what: str) -> int:
    if t is None:
        return 0
    if isinstance(t, str):
        ids = model.tokenizer.encode(t)
        if len(ids) != 1:
            raise ValueError(f"{what} {t!r} is {len(ids)} tokens, not one")
        return ids[0]
    return int(t)


def _ids(model: Model, x: Any, what: str) -> np.ndarray:
    if isinstance(x, str):
        x = model.tokenizer.encode(x)
    return as_i32(x, what, ndim=1)


def sweep(model: Model, base: Any, source: Any = None, *, component: str = "block_output",
          metric: str = "prob", token: Union[int, str, None] = None, token_b: Union[int, str, None] = None,
          layers: Optional[Sequence[int]] = None, positions: Optional[Sequence[int]] = None, window: int = 1,
          head: Union[int, str] = 0, trace: bool = False, subject: Optional[Sequence[int]] = None, samples: int = 10,
          noise: float = 0.0, seed: int = 0, naive: bool = False, max_batch: int = 0, method: str = "exact",
          together: bool = False,
          progress: Union[bool, Callable[[int, int], None]] = False) -> SweepResult:
    """Activation patching (``cvene sweep``): patch ``component`` from the source run into the base run
    at every (layer, position) and score the last position with ``metric`` ("prob" of ``token``,
    "logit-diff" of ``token`` minus ``token_b``, or "kl" from the source). base / source: text or ids
    of the same length. ``trace``: ROME causal tracing (base = source with noise on the ``subject``
    positions' embeddings; see ``trace``). ``head="all"`` with head_attention_value_output: every head,
    scores (layers, heads, positions). ``method="atp"``: attribution patching, every score estimated
    from one source forward, one base forward and one backward (``cvene sweep --method atp``; not with
    trace, window or naive). ``together``: patch the positions all at once (layer x head patching with
    ``head="all"``): scores (layers, heads, 1) or (layers, 1). ``progress``: True for a tqdm bar (where installed) or a function (done, total)."""
    b = _ids(model, base, "base")
    s = _ids(model, source, "source") if source is not None else b
    if s.size != b.size:
        raise ValueError(f"base has {b.size} tokens and source {s.size}: positions are patched one to one")
    p = lib.cvene_sweep_default_params()
    comp = lib.cvene_component_from_name(component.encode())
    if comp == _lib.N_COMPONENTS:
        raise ValueError(f"component {component!r} is not a component name")
    if metric not in _METRICS:
        raise ValueError(f"metric {metric!r}: expected prob, logit-diff or kl")
    if method not in ("exact", "atp"):
        raise ValueError(f"method {method!r}: expected exact or atp")
    all_heads = isinstance(head, str)
    if all_heads and head != "all":
        raise ValueError(f"head {head!r}: expected a head index or 'all'")
    p.component, p.head, p.metric = comp, -1 if all_heads else int(head), _METRICS[metric]
    p.token, p.token_b = _token(model, token, "token"), _token(model, token_b, "token_b")
    L = list(range(model.n_layer)) if layers is None else [int(x) for x in layers]
    P = list(range(b.size)) if positions is None else [int(x) for x in positions]
    la, pa = np.asarray(L, dtype=np.intc), np.asarray(P, dtype=np.intc)
    p.layers, p.n_layers = la.ctypes.data_as(C.POINTER(C.c_int)), len(L)
    p.positions, p.n_positions = pa.ctypes.data_as(C.POINTER(C.c_int)), len(P)
    p.window, p.trace, p.n_samples, p.noise_scale, p.seed = int(window), int(bool(trace)), int(samples), float(noise), seed
    sub = np.asarray(list(subject or []), dtype=np.intc)
    if trace:
        p.subject, p.n_subject = sub.ctypes.data_as(C.POINTER(C.c_int)), sub.size
    p.naive, p.max_batch = int(bool(naive)), int(max_batch)
    fn = _progress_bar("sweep") if progress is True else progress or None
    cb = _lib.ProgressFn(lambda user, done, total: fn(done, total)) if fn else _lib.ProgressFn()
    p.progress = cb
    p.together = int(bool(together))
    npc = 1 if together else len(P)
    shape = (len(L), model.n_head, npc) if all_heads else (len(L), npc)
    scores = np.empty(shape, dtype=np.float32)
    summ = _lib.SweepSummary()
    run = lib.cvene_sweep_atp if method == "atp" else lib.cvene_sweep
    check(run(model._m, ptr(b, _lib.i32p), ptr(s, _lib.i32p), b.size, C.byref(p), scores.ctypes.data_as(_lib.f32p),
                          C.byref(summ)), model._ctx)
    return SweepResult(scores, L, P, summ.base_score, summ.source_score, summ.forwards, summ.sites)


class _Example(C.Structure):
    _fields_ = [("base_ids", _lib.i32p), ("source_ids", _lib.i32p), ("T", C.c_int), ("positions", C.POINTER(C.c_int)),
                ("token", C.c_int32), ("token_b", C.c_int32)]


if lib.cvene_abi_sizeof(b"cvene_sweep_example") != C.sizeof(_Example):
    raise ImportError("cvene: cvene_sweep_example differs between this package and its library (a stale build?)")
_lib._sig("cvene_sweep_dataset", C.c_int, _lib.P, C.POINTER(_Example), C.c_int, C.c_int, C.POINTER(_lib.SweepParams),
          _lib.f32p, _lib.f32p, C.POINTER(_lib.SweepSummary))


@dataclass
class DatasetSweepResult:
    """per_example (N, n_layers, n_positions) -- (N, n_layers, n_head, n_positions) with head="all" --
    and their mean; the mean base and source scores; forward passes run; sites scored."""
    per_example: np.ndarray
    mean: np.ndarray
    layers: list
    base_score: float
    source_score: float
    forwards: int
    sites: int


def sweep_dataset(model: Model, examples: Sequence[dict], *, component: str = "block_output", metric: str = "prob",
                  token: Union[int, str, None] = None, token_b: Union[int, str, None] = None,
                  layers: Optional[Sequence[int]] = None, head: Union[int, str] = 0, method: str = "exact",
                  naive: bool = False, max_batch: int = 0) -> DatasetSweepResult:
    """Activation patching over a dataset (``cvene sweep --data``): each example a dict with ``base`` and
    ``source`` (text or ids, the same length), ``positions`` (its position for each column, negative from
    the end; the same number for every example) and optionally ``token`` / ``token_b`` (else the
    arguments). Every example is swept at its own positions on the fast path (or by AtP, method="atp");
    the result holds every example's scores and their mean."""
    if not examples:
        raise ValueError("sweep_dataset: no examples")
    if metric not in _METRICS or method not in ("exact", "atp"):
        raise ValueError(f"metric {metric!r} / method {method!r}: expected prob, logit-diff or kl / exact or atp")
    keep, ex = [], (_Example * len(examples))()
    R = None
    for i, e in enumerate(examples):
        b, s = _ids(model, e["base"], f"examples[{i}].base"), _ids(model, e["source"], f"examples[{i}].source")
        if b.size != s.size:
            raise ValueError(f"examples[{i}]: base has {b.size} tokens and source {s.size}")
        pos = np.asarray([p + b.size if p < 0 else p for p in e["positions"]], dtype=np.intc)
        if R is None:
            R = pos.size
        if pos.size != R or R == 0:
            raise ValueError(f"examples[{i}]: {pos.size} positions, the first example has {R}")
        t, tb = e.get("token", token), e.get("token_b", token_b)
        if (t is None and metric != "kl") or (tb is None and metric == "logit-diff"):
            raise ValueError(f"examples[{i}]: no metric token{'' if t is None else '_b'} (give it in the example or "
                             f"as the argument)")
        t, tb = _token(model, t, f"examples[{i}].token"), _token(model, tb, f"examples[{i}].token_b")
        keep += [b, s, pos]
        ex[i] = _Example(ptr(b, _lib.i32p), ptr(s, _lib.i32p), b.size, pos.ctypes.data_as(C.POINTER(C.c_int)), t, tb)
    p = lib.cvene_sweep_default_params()
    comp = lib.cvene_component_from_name(component.encode())
    if comp == _lib.N_COMPONENTS:
        raise ValueError(f"component {component!r} is not a component name")
    all_heads = isinstance(head, str)
    p.component, p.head, p.metric = comp, -1 if all_heads else int(head), _METRICS[metric]
    L = list(range(model.n_layer)) if layers is None else [int(x) for x in layers]
    la = np.asarray(L, dtype=np.intc)
    p.layers, p.n_layers = la.ctypes.data_as(C.POINTER(C.c_int)), len(L)
    p.naive, p.max_batch, p.atp = int(bool(naive)), int(max_batch), int(method == "atp")
    shape = (len(L), model.n_head, R) if all_heads else (len(L), R)
    per, mean = np.empty((len(examples),) + shape, dtype=np.float32), np.empty(shape, dtype=np.float32)
    summ = _lib.SweepSummary()
    check(lib.cvene_sweep_dataset(model._m, ex, len(examples), R, C.byref(p), per.ctypes.data_as(_lib.f32p),
                                  mean.ctypes.data_as(_lib.f32p), C.byref(summ)), model._ctx)
    return DatasetSweepResult(per, mean, L, summ.base_score, summ.source_score, summ.forwards, summ.sites)


def trace(model: Model, prompt: Any, subject: Union[str, Sequence[int]], *, token: Union[int, str, None] = None,
          component: str = "block_output", samples: int = 10, noise: float = 0.0, seed: int = 0,
          window: int = 1, progress: Union[bool, Callable[[int, int], None]] = False) -> SweepResult:
    """ROME's causal trace (pyvene's causal-tracing tutorial in one call): noise on the subject's
    token embeddings (3 x the embeddings' std unless ``noise``), then the clean ``component``
    restored at each (layer, position); scores are p(token) at the last position, averaged over
    ``samples`` noise draws (numpy RandomState(seed + s)). subject: its text (found in the prompt's
    tokens) or its positions. token: default the clean run's top prediction."""
    ids = _ids(model, prompt, "prompt")
    if isinstance(subject, str):
        sid = model.tokenizer.encode(subject)
        found = [i for i in range(ids.size - len(sid) + 1) if list(ids[i:i + len(sid)]) == sid]
        if not found:
            raise ValueError(f"subject {subject!r} does not appear in the prompt's tokens")
        subject = list(range(found[0], found[0] + len(sid)))
    if token is None:
        token = int(np.argmax(model.forward(ids[None, :], logits_to_keep=1)[0, -1]))
    return sweep(model, ids, ids, component=component, metric="prob", token=token, trace=True, subject=subject,
                 samples=samples, noise=noise, seed=seed, window=window, progress=progress)


@dataclass
class Generation:
    """ids (B, prompt + steps) int32: each row's prompt then its generated tokens (transformers'
    generate output); logits (B, steps, V) when asked; text when the model has a tokenizer."""
    ids: Any
    prompt_len: int
    steps: int
    logits: Optional[Any] = None
    text: Optional[list] = None


def generate(model: Model, prompt: Any, *, intervenable: Optional[IntervenableModel] = None, sources: Any = None,
             unit_locations: Any = None, subspaces: Any = None, intervene_on_prompt: bool = False,
             max_new_tokens: int = 16, do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, seed: int = 0, eos_token_id: Union[int, Sequence[int], None] = None,
             pad_token_id: int = -1, output_logits: bool = False,
             first_call: int = -1, last_call: int = -1) -> Generation:
    """Decoding (``cvene generate``), optionally with interventions (pyvene's
    ``IntervenableModel.generate`` semantics: ``intervene_on_prompt``, unit_locations None = every
    call). prompt: text, a list of texts (left-padded), ids (B, T), or a dict with input_ids and
    attention_mask (left-padded). Greedy unless do_sample."""
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], str)):
        texts = [prompt] if isinstance(prompt, str) else prompt
        rows = [model.tokenizer.encode(t) for t in texts]
        T = max(len(r) for r in rows)
        ids = np.zeros((len(rows), T), dtype=np.int32)
        mask = np.zeros_like(ids)
        for i, r in enumerate(rows):  # left padding, as transformers asks of decoder-only models
            ids[i, T - len(r):] = r
            mask[i, T - len(r):] = 1
        base = {"input_ids": ids, "attention_mask": mask}
    else:
        base = prompt if isinstance(prompt, dict) else {"input_ids": prompt}
    helper = intervenable or _NoConfig(model)
    keep: list = []
    req = helper._request(base, sources, unit_locations, subspaces, False, keep)
    gp = lib.cvene_gen_default_params()
    gp.max_new_tokens, gp.do_sample, gp.temperature = int(max_new_tokens), int(bool(do_sample)), float(temperature)
    gp.top_k, gp.top_p, gp.seed = int(top_k), float(top_p), int(seed)
    eos = np.asarray([] if eos_token_id is None else np.atleast_1d(eos_token_id), dtype=np.int32)
    gp.eos_ids, gp.n_eos = ptr(eos, _lib.i32p) if eos.size else None, eos.size
    gp.pad_id, gp.intervene_on_prompt = int(pad_token_id), int(bool(intervene_on_prompt))
    gp.first_call, gp.last_call, gp.keep_logits = int(first_call), int(last_call), int(bool(output_logits))
    g = C.c_void_p()
    try:
        check(lib.cvene_generate(model._m, intervenable._cfg if intervenable else None, req, C.byref(gp), C.byref(g)),
              model._ctx)
        B, T = C.c_int(), C.c_int()
        ip = lib.cvene_generation_ids(g, C.byref(B), C.byref(T))
        out_ids = np.ctypeslib.as_array(ip, shape=(B.value, T.value)).copy()
        steps, plen = lib.cvene_generation_steps(g), lib.cvene_generation_prompt_len(g)
        logits = None
        if output_logits:
            b, s, v = C.c_int(), C.c_int(), C.c_int()
            lp = lib.cvene_generation_logits(g, C.byref(b), C.byref(s), C.byref(v))
            logits = np.ctypeslib.as_array(lp, shape=(b.value, s.value, v.value)).copy()
    finally:
        lib.cvene_generation_free(g)
        lib.cvene_request_free(req)
    text = None
    try:
        tok = model.tokenizer
        text = [tok.decode(r[plen:]) for r in out_ids]
    except _lib.CveneError:
        pass  # a model directory without tokenizer files: ids only
    like = base.get("input_ids")
    return Generation(to_output(out_ids, like), plen, steps, None if logits is None else to_output(logits, like), text)


class _NoConfig(IntervenableModel):
    """builds requests for generation without interventions"""

    def __init__(self, model: Model):  # noqa: D401 - no config to parse
        self.model = model
        model._live()
        self._cfg = C.c_void_p()
