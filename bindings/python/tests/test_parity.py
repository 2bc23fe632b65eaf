"""The 117 GPT-2 pyvene cases of tests/fixtures/pyvene through the Python API: pyvene's own config
files and call arguments in, pyvene's logits, original logits and collected activations out.
Tolerance 1e-5 of the largest reference magnitude: f32 against f32 (the C suite's bound,
tests/test_pyvene_parity.cpp)."""
import json

import numpy as np
import pytest

import cvene
from conftest import FIXTURES, read_safetensors, rel_err

CASES = FIXTURES / "pyvene" / "cases"
NAMES = sorted(p.name for p in CASES.iterdir() if p.is_dir())
TOL = 1e-5
_models = {}

# the callbacks the fixtures name (tests/fixtures/pyvene/README.md): pyvene's LambdaInterventions
CALLBACKS = {"half_base_plus_source": lambda b, s: b * 0.5 + (s if s is not None else 0.0),
             "negate_base": lambda b, s: -b}


def model_for(name):
    if name not in _models:
        _models[name] = cvene.load(FIXTURES / "gpt2" / name / "model")
    return _models[name]


def test_there_are_117_cases():
    assert len(NAMES) == 117


@pytest.mark.parametrize("case", NAMES)
def test_pyvene_case(case):
    d = CASES / case
    inputs = json.loads((d / "inputs.json").read_text())
    model = model_for(inputs.pop("model"))
    text = (d / "config.json").read_text()
    pv = cvene.IntervenableModel(d / "config.json", model, callbacks={k: f for k, f in CALLBACKS.items() if k in text})
    orig, out = pv(inputs["base"], inputs.get("sources"), unit_locations=inputs.get("unit_locations"),
                   subspaces=inputs.get("subspaces"), output_original_output=inputs.get("output_original_output", False))
    ref = read_safetensors(d / "expected.safetensors")
    mask = np.asarray(inputs["base"].get("attention_mask", np.ones_like(inputs["base"]["input_ids"])), bool)
    # real-token rows only: values at padding mean nothing in either library (README, "Padding")
    assert rel_err(out.logits[mask], ref["logits"][mask]) <= TOL
    if "original_logits" in ref:
        assert orig is not None and rel_err(orig.logits[mask], ref["original_logits"][mask]) <= TOL
    else:
        assert orig is None
    k = 0
    while f"collected.{k}" in ref:
        assert k < len(out.collected_activations)
        assert rel_err(out.collected_activations[k], ref[f"collected.{k}"]) <= TOL, f"collected.{k}"
        k += 1
    assert k == len(out.collected_activations)
