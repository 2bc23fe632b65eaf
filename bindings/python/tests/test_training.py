"""Training and probes through the Python API against torch / pyvene: pyvene's 20-step DAS
trajectory (losses within 1e-4 relative, the C suite's bound: tests/test_training.cpp), the
probe fixture's hook activations (1e-5) and torch-Adam probe weights (1e-5 of the largest) with
torch's accuracies exactly (tests/fixtures/probe, tests/test_probe.cpp)."""
import json

import numpy as np
import pytest

import cvene
from conftest import DEMO, FIXTURES, read_safetensors, rel_err, write_safetensors

TRAIN = FIXTURES / "training"


def test_das_trajectory_follows_pyvene(small, tmp_path):
    case = next(c for c in json.loads((TRAIN / "manifest.json").read_text())["cases"] if c["name"] == "das_lowrank_r1")
    d = TRAIN / "train" / "das_lowrank_r1"
    data = json.loads((TRAIN / "train" / "dataset.json").read_text())["examples"]
    examples = [{"base": e["base_ids"], "source": e["source_ids"], "base_pos": e["base_position"],
                 "source_pos": e["source_position"], "label": e["label"]} for e in data]
    init = {k[len("init."):]: v for k, v in read_safetensors(d / "trajectory.safetensors").items()
            if k.startswith("init.rotate_layer")}
    write_safetensors(tmp_path / "init.safetensors", init)
    pv = cvene.IntervenableModel(d / "config.json", small)
    steps = []
    t = cvene.Trainer(pv, batch_size=8, max_steps=20, shuffle=False, lr=case["optimizer"]["lr"],
                      init=tmp_path / "init.safetensors", progress=lambda s, n, loss, lr: steps.append(s))
    t.fit(examples)
    want = np.asarray(case["losses"])
    assert np.max(np.abs(t.losses - want) / np.abs(want)) <= 1e-4
    assert steps[-1] == 20
    acc, loss = t.evaluate(examples)
    assert 0 <= acc <= 1 and np.isfinite(loss)
    # the trained interventions run: their IIA on the training examples, recomputed from the logits
    # of plain intervened forwards, is the trainer's own
    trained = t.intervenable()
    hits = 0
    for e in examples:
        _, out = trained({"input_ids": [e["base"]]}, [{"input_ids": [e["source"]]}],
                         unit_locations={"sources->base": ([[[e["source_pos"]]]], [[[e["base_pos"]]]])})
        hits += int(out.logits[0, -1].argmax() == e["label"])
    assert hits / len(examples) == pytest.approx(acc)
    with pytest.raises(cvene.CveneError, match="has no weights"):
        pv({"input_ids": [examples[0]["base"]]}, [{"input_ids": [examples[0]["source"]]}],
           unit_locations={"sources->base": 1})


def test_trainer_errors(small):
    pv = cvene.IntervenableModel({"representations": [{"layer": 0, "component": "block_output"}]}, small)
    with pytest.raises(cvene.CveneError, match="trainable"):
        cvene.Trainer(pv)
    rot = {"representations": [{"layer": 0, "component": "block_output",
                                "intervention_type": "LowRankRotatedSpaceIntervention", "low_rank_dimension": 1}]}
    with pytest.raises(ValueError, match="optimizer"):
        cvene.Trainer(cvene.IntervenableModel(rot, small), optimizer="sgd")
    with pytest.raises(ValueError, match="no 'label'"):
        cvene.Dataset(small, [{"base": [1, 2], "source": [3, 4], "base_pos": 0}])


def test_probe_equals_torch(demo):
    m = json.loads((FIXTURES / "probe" / "manifest.json").read_text())
    ref = read_safetensors(FIXTURES / "probe" / "probe.safetensors")
    ids = [row[:n] for row, n in zip(ref["ids"], ref["lens"])]
    sites = [(s["component"], s["layer"]) for s in m["sites"]]
    acts = cvene.collect(demo, ids, ref["pos"], sites)
    train, held = ref["train"], ref["held_out"]
    y = ref["labels"]
    pp = m["params"]
    for s in m["sites"]:
        key = f"{s['component']}.{s['layer']}"
        X = acts[(s["component"], s["layer"])]
        assert rel_err(X, ref[key + ".activations"]) <= 1e-5, key
        # fitted on torch's own activations, as the fixture's probe was
        Xr = ref[key + ".activations"]
        pr = cvene.Probe.fit(Xr[train], y[train], len(m["classes"]), steps=pp["steps"], lr=pp["lr"],
                             weight_decay=pp["weight_decay"], standardize=pp["standardize"])
        assert rel_err(pr.W, ref[key + ".weight"]) <= 1e-5, key
        assert rel_err(pr.b, ref[key + ".bias"]) <= 1e-5, key
        acc, loss = pr.evaluate(Xr[held], y[held])
        assert acc == pytest.approx(s["held_out_accuracy"], abs=1e-7), key
        assert pr.accuracy(Xr[train], y[train]) == pytest.approx(s["train_accuracy"], abs=1e-7), key


def test_collect_errors(demo):
    with pytest.raises(ValueError, match="component 'nope'"):
        cvene.collect(demo, [[1, 2]], [0], [("nope", 0)])
    with pytest.raises(cvene.CveneError, match="layer"):
        cvene.collect(demo, [[1, 2]], [0], [("block_output", 99)])
    with pytest.raises(ValueError, match="positions"):
        cvene.collect(demo, [[1, 2]], [0, 1], [("block_output", 0)])
