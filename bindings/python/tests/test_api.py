"""Every public name of the package against an independent reference (transformers' logits and
generate, the tokenizers library's ids, the torch causal trace stored with the demo model, pyvene's
generate) or a hand-derived value, and the error paths (C messages become CveneError)."""
import base64
import json

import numpy as np
import pytest

import cvene
from conftest import DEMO, FIXTURES, read_safetensors, rel_err


def test_version_and_cuda():
    assert cvene.__version__.count(".") == 2
    assert cvene.cuda_available() in (True, False)


def test_model_info(small):
    assert (small.arch, small.n_layer, small.n_head, small.n_embd, small.vocab_size) == ("gpt2", 2, 4, 64, 320)
    assert small.n_params > 0 and small.device_name and "2 layers" in repr(small)


def test_forward_equals_transformers(small):
    # tests/fixtures/gpt2/small/reference.safetensors: transformers' logits (f32 vs f32: 1e-5)
    ref = read_safetensors(FIXTURES / "gpt2" / "small" / "reference.safetensors")
    for c in range(3):
        ids = ref[f"case{c}.input_ids"]
        mask = ref.get(f"case{c}.attention_mask")
        got = small.forward(ids, attention_mask=mask)
        real = np.ones(ids.shape, bool) if mask is None else mask.astype(bool)
        assert rel_err(got[real], ref[f"case{c}.logits"][real]) <= 1e-5
        last = small.forward(ids, attention_mask=mask, logits_to_keep=1)
        assert last.shape == (ids.shape[0], 1, 320)
        if mask is None:
            assert rel_err(last[:, 0], got[:, -1]) <= 1e-6


def test_tokenizer_equals_tokenizers():
    # tests/fixtures/tokenizer: ids from Hugging Face tokenizers 0.20.3 on the tiny vocabulary
    tok = cvene.Tokenizer(FIXTURES / "tokenizer" / "tiny" / "tokenizer.json")
    cases = json.loads((FIXTURES / "tokenizer" / "corpus.json").read_text())["cases"]
    n = 0
    for c in cases[:300]:
        text = base64.b64decode(c["b64"])
        assert tok.encode(text) == c["tiny"], text
        n += 1
    assert n == 300
    assert tok.decode(tok.encode("hello world")).lstrip() == "hello world"  # lstrip: add_prefix_space
    tok.close()


def test_trace_equals_the_torch_trace(demo):
    # assets/demo-gpt2/prompts.json: the causal trace torch computed (probabilities to 6 decimals)
    p = json.loads((DEMO / "prompts.json").read_text())
    pr = p["prompts"][0]
    ids = json.loads(pr["ids"]) if isinstance(pr["ids"], str) else pr["ids"]
    start, end = int(pr["subject_start"]), int(pr["subject_end"])
    r = cvene.trace(demo, pr["text"], list(range(start, end)), token=int(pr["answer_id"]),
                    samples=p["trace"]["n_samples"], noise=p["trace"]["noise_scale"], seed=p["trace"]["seed"])
    want = np.asarray(json.loads(pr["scores"]) if isinstance(pr["scores"], str) else pr["scores"])
    assert r.scores.shape == want.shape == (8, len(ids))
    assert np.max(np.abs(r.scores - want)) <= 2e-5
    assert abs(r.source_score - float(pr["clean_prob"])) <= 2e-5
    # the subject given as text finds the same positions
    r2 = cvene.trace(demo, pr["text"], " " + pr["subject"], token=int(pr["answer_id"]),
                     samples=p["trace"]["n_samples"], noise=p["trace"]["noise_scale"], seed=p["trace"]["seed"])
    assert np.array_equal(r.scores, r2.scores)


def test_sweep_fast_equals_naive(small):
    # plumbing of cvene.sweep's arguments: the naive path (one full forward per site, each a plain
    # forward with one patch) is the reference for the fast one, as in tests/test_sweep.cpp; the torch
    # trace above is this function's independent reference
    base, source = [11, 42, 7, 300, 99, 5], [200, 3, 77, 150, 31, 90]
    fast = cvene.sweep(small, base, source, metric="logit-diff", token=5, token_b=9)
    naive = cvene.sweep(small, base, source, metric="logit-diff", token=5, token_b=9, naive=True)
    assert fast.scores.shape == (2, 6) and fast.sites == 12
    assert rel_err(fast.scores, naive.scores) <= 1e-5
    seen = []
    part = cvene.sweep(small, base, source, layers=[1], positions=[0, 5], token=5,
                       progress=lambda d, t: seen.append(d))
    assert part.scores.shape == (1, 2) and seen
    with pytest.raises(ValueError, match="component 'nope'"):
        cvene.sweep(small, base, source, component="nope")
    with pytest.raises(ValueError, match="patched one to one"):
        cvene.sweep(small, base, source[:3])
    with pytest.raises(cvene.CveneError, match="layer"):
        cvene.sweep(small, base, source, layers=[7])


def test_sweep_atp_and_all_heads(small):
    # attribution patching against torch autograd's estimate (tests/fixtures/atp, 1e-4 of the largest
    # change, as tests/test_localize.cpp), and every head at once against one head at a time (1e-5)
    ref = json.loads((FIXTURES / "atp" / "gpt2_small.json").read_text())
    for case in ref["cases"]:
        if case["component"] != "head_attention_value_output" or case["metric"] != "kl":
            continue
        got = cvene.sweep(small, ref["base"], ref["source"], component=case["component"], head="all",
                          metric="kl", method="atp")
        want = case["base_score"] + np.asarray(case["scores"])
        assert got.scores.shape == want.shape == (2, 4, 9)
        assert np.max(np.abs(got.scores - want)) <= 1e-4 * max(1e-3, np.max(np.abs(want - case["base_score"])))
    base, source = ref["base"], ref["source"]
    every = cvene.sweep(small, base, source, component="head_attention_value_output", head="all", metric="logit-diff",
                        token=5, token_b=9)
    one = cvene.sweep(small, base, source, component="head_attention_value_output", head=2, metric="logit-diff",
                      token=5, token_b=9, naive=True)
    assert rel_err(every.scores[:, 2, :], one.scores) <= 1e-5
    tog = cvene.sweep(small, base, source, component="head_attention_value_output", head="all", metric="kl",
                      together=True)
    tog_naive = cvene.sweep(small, base, source, component="head_attention_value_output", head="all", metric="kl",
                            together=True, naive=True)
    assert tog.scores.shape == (2, 4, 1) and rel_err(tog.scores, tog_naive.scores) <= 1e-5
    with pytest.raises(ValueError, match="method 'fast'"):
        cvene.sweep(small, base, source, method="fast")
    with pytest.raises(cvene.CveneError, match="window"):
        cvene.sweep(small, base, source, method="atp", window=2)


def test_sweep_dataset_and_collect_positions(small):
    # the dataset sweep's rows and mean against single-pair naive sweeps at each example's positions
    # (1e-5, as tests/test_localize.cpp); collect at (N, R) positions against one column at a time
    exs = [dict(base=[5, 9, 2, 7, 1, 3], source=[4, 4, 6, 1, 9, 2], positions=[2, -1], token=3, token_b=8),
           dict(base=[15, 19, 12, 17, 11, 13, 40, 41], source=[14, 14, 16, 11, 19, 12, 50, 51], positions=[5, -1])]
    ones = [cvene.sweep(small, e["base"], e["source"], metric="logit-diff", token=e.get("token", 5),
                        token_b=e.get("token_b", 2), positions=[p % len(e["base"]) for p in e["positions"]],
                        naive=True).scores for e in (exs[0], dict(exs[1], token=5))]
    with pytest.raises(ValueError, match=r"examples\[1\]: no metric token"):
        cvene.sweep_dataset(small, exs, metric="logit-diff", token_b=2)
    with pytest.raises(cvene.CveneError, match="example 0: position"):
        cvene.sweep_dataset(small, [dict(exs[0], positions=[2, -9])], metric="logit-diff")
    got = cvene.sweep_dataset(small, [exs[0], dict(exs[1], token=5)], metric="logit-diff", token_b=2)
    assert got.per_example.shape == (2, 2, 2) and got.mean.shape == (2, 2)
    for i in range(2):
        assert rel_err(got.per_example[i], ones[i]) <= 1e-5
    assert rel_err(got.mean, (ones[0] + ones[1]) / 2) <= 1e-5
    ids = [[5, 9, 2, 7, 1, 3], [15, 19, 12, 17, 11, 13, 40]]
    grid = cvene.collect(small, ids, [[1, -1], [4, -2]], [("block_output", 1)])[("block_output", 1)]
    assert grid.shape == (2, 2, 64)
    for k, col in enumerate(([1, 4], [-1, -2])):
        one = cvene.collect(small, ids, col, [("block_output", 1)])[("block_output", 1)]
        assert np.array_equal(grid[:, k], one)


def _gen_case(name):
    m = json.loads((FIXTURES / "generate" / "manifest.json").read_text())
    return next(c for c in m["cases"] if c["name"] == name)


def test_generate_equals_transformers():
    c = _gen_case("gpt2_greedy_b3_noeos")
    with cvene.load(FIXTURES / "generate" / "gpt2" / "model") as m:
        g = m and cvene.generate(m, {"input_ids": c["input_ids"], "attention_mask": c["attention_mask"]},
                                 max_new_tokens=c["max_new_tokens"], pad_token_id=c["pad_token_id"])
        assert g.ids.tolist() == c["output_ids"]
        assert g.steps == c["max_new_tokens"] and g.prompt_len == len(c["input_ids"][0])


def test_generate_with_steering_equals_pyvene():
    c = _gen_case("gpt2_pyvene_steer_every_call")
    with cvene.load(FIXTURES / "generate" / "gpt2" / "model") as m:
        pv = cvene.IntervenableModel(c["config"], m)
        g = cvene.generate(m, c["request"]["base"], intervenable=pv, unit_locations=None, intervene_on_prompt=True,
                           max_new_tokens=c["max_new_tokens"], pad_token_id=c["pad_token_id"], output_logits=True)
        assert g.ids.tolist() == c["output_ids"]
        assert g.logits.shape == (3, c["max_new_tokens"], m.vocab_size)


def test_return_dict_and_collect(small):
    cfg = {"representations": [{"layer": 1, "component": "block_output", "intervention_type": "CollectIntervention"}]}
    pv = cvene.IntervenableModel(cfg, small)
    assert len(pv) == 1 and "CollectIntervention" in pv.to_json()
    ids = np.array([[11, 42, 7, 300, 99]])
    r = pv({"input_ids": ids}, unit_locations={"base": 2}, return_dict=True)
    assert r.original_outputs is None and len(r.collected_activations) == 1
    # hand-derived reference: the collected block_output of layer 1 at position 2 does not change the
    # logits, which equal the plain forward's
    assert np.array_equal(r.intervened_outputs.logits, small.forward(ids))
    assert r.collected_activations[0].shape == (1, 1, 64)


def test_callbacks(small):
    cfg = {"representations": [{"layer": 0, "component": "block_output", "intervention_type": "LambdaIntervention",
                                "callback": "zero"}]}
    ids = [[11, 42, 7]]
    calls = []

    def zero(b, s):
        calls.append(b.shape)
        return np.zeros_like(b)
    pv = cvene.IntervenableModel(cfg, small, callbacks={"zero": zero})
    _, out = pv({"input_ids": ids}, unit_locations={"base": 1})
    ref = cvene.IntervenableModel({"representations": [{"layer": 0, "component": "block_output",
                                                        "intervention_type": "ZeroIntervention"}]}, small)
    _, want = ref({"input_ids": ids}, unit_locations={"base": 1})
    assert calls and np.array_equal(out.logits, want.logits)

    def boom(b, s):
        raise KeyError("from the callback")
    pv2 = cvene.IntervenableModel(cfg, small, callbacks={"zero": boom})
    with pytest.raises(KeyError, match="from the callback"):
        pv2({"input_ids": ids}, unit_locations={"base": 1})


def test_errors(small, tmp_path):
    with pytest.raises(cvene.CveneError, match="no/such/dir") as e:
        cvene.load("no/such/dir")
    assert e.value.status == "CVENE_ERR_IO"
    with pytest.raises(ValueError, match="dtype"):
        cvene.load(FIXTURES / "gpt2" / "small" / "model", dtype="int8")
    with pytest.raises(ValueError, match="device"):
        cvene.load(FIXTURES / "gpt2" / "small" / "model", device="tpu")
    with pytest.raises(cvene.CveneError, match="malformed JSON") as e:
        cvene.IntervenableModel('{"representations": [', small)
    assert e.value.status == "CVENE_ERR_FORMAT"
    pv = cvene.IntervenableModel({"representations": [{"layer": 1, "component": "block_output"}]}, small)
    ids = [[1, 2, 3]]
    with pytest.raises(ValueError, match="unknown key"):
        pv({"input_ids": ids, "input_id": ids}, [{"input_ids": ids}], unit_locations={"sources->base": 1})
    with pytest.raises(cvene.CveneError, match="out of range"):
        pv({"input_ids": ids}, [{"input_ids": ids}], unit_locations={"sources->base": 7})
    with pytest.raises(TypeError, match="integers"):
        small.forward([[0.5, 1.5]])
    with pytest.raises(cvene.CveneError, match="vocab"):
        small.forward([[1, 99999]])
    rot = cvene.IntervenableModel({"representations": [{"layer": 1, "component": "block_output",
                                                        "intervention_type": "RotatedSpaceIntervention"}]}, small)
    with pytest.raises(cvene.CveneError, match="has no weights"):
        rot({"input_ids": ids}, [{"input_ids": ids}], unit_locations={"sources->base": 1})
    (tmp_path / "config.json").write_text('{"representations": [{"layer": 9, "component": "block_output"}]}')
    pv9 = cvene.IntervenableModel(tmp_path, small)  # a saved folder
    with pytest.raises(cvene.CveneError, match="layer"):
        pv9({"input_ids": ids}, [{"input_ids": ids}], unit_locations={"sources->base": 1})


def test_torch_interop(small):
    torch = pytest.importorskip("torch")
    ids = torch.tensor([[11, 42, 7, 300]], dtype=torch.int64)
    out = small.forward(ids)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert np.array_equal(out.numpy(), small.forward(ids.numpy()))
    pv = cvene.IntervenableModel({"representations": [{"layer": 1, "component": "block_output"}]}, small)
    _, o = pv({"input_ids": ids}, [{"input_ids": ids.flip(1)}], unit_locations={"sources->base": (1, 2)})
    assert isinstance(o.logits, torch.Tensor)


def test_close_and_finalization_order(tmp_path):
    """closing a model closes what depends on it; and whatever order Python finalizes objects in
    (cyclic garbage, interpreter exit), no C object is freed before what points into it (a trainer
    before its config, a config before its model's context): run in a subprocess, since getting it
    wrong is a segfault"""
    import subprocess
    import sys
    m = cvene.load(FIXTURES / "gpt2" / "small" / "model")
    pv = cvene.IntervenableModel({"representations": [{"layer": 1, "component": "block_output"}]}, m)
    m.close()
    with pytest.raises(ValueError, match="closed"):
        m.forward([[1, 2]])
    with pytest.raises(ValueError, match="closed"):
        pv({"input_ids": [[1, 2]]}, [{"input_ids": [[2, 1]]}], unit_locations={"sources->base": 1})
    script = tmp_path / "cycle.py"
    script.write_text(f"""
import gc, cvene
ns = {{}}
code = '''
model = cvene.load({str(FIXTURES / "gpt2" / "small" / "model")!r})
das = cvene.IntervenableModel({{"representations": [{{"layer": 0, "component": "block_output",
    "intervention_type": "LowRankRotatedSpaceIntervention", "low_rank_dimension": 1}}]}}, model)
trainer = cvene.Trainer(das, max_steps=1, batch_size=2)
trainer.fit([{{"base": [1, 2, 3], "source": [4, 5, 6], "base_pos": 1, "source_pos": 1, "label": 7}}])
data = cvene.Dataset(model, [{{"base": [1, 2], "source": [3, 4], "label": 5}}])
tok_free = model.forward([[1, 2]])
def f(): return model  # ns <-> f: everything in ns is cyclic garbage now
'''
exec(code, {{"cvene": cvene, "__builtins__": __builtins__}}, ns)
ns["self"] = ns
del ns
gc.collect()
print("collected")
""")
    env = {**__import__("os").environ}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and "collected" in r.stdout, r.stderr[-2000:]
