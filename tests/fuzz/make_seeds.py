#!/usr/bin/env python3
"""Write raw seed inputs for the harnesses of tests/fuzz from the repository's fixtures.

Usage: python3 tests/fuzz/make_seeds.py OUT_DIR   (from the repository root)

Writes OUT_DIR/<harness>/* (standard library only, deterministic). The committed corpora
tests/fuzz/corpus/<harness> are these seeds reduced with libFuzzer's -merge=1 (see
docs/fuzzing.md, "Regenerating the corpora"): the seeds here are many and some are large;
the merge keeps the few that reach distinct code.
"""
import base64
import glob
import json
import os
import struct
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else "fuzz-seeds"
FIX = "tests/fixtures"


def put(harness, name, data):
    d = os.path.join(OUT, harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(path, mode="rb"):
    with open(path, mode) as f:
        return f.read()


# ---- safetensors: the small real files, and synthetic ones for every dtype and shape rule
def st_file(tensors, meta=None, pad=True):
    """tensors: [(name, dtype, shape, bytes)] -> a safetensors file"""
    header, data = {}, b""
    if meta is not None:
        header["__metadata__"] = meta
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


sizes = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
         "F64": 8, "I64": 8, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}
for path in sorted(glob.glob(FIX + "/**/*.safetensors", recursive=True)):
    if os.path.getsize(path) <= 4096:
        put("fuzz_safetensors", path.replace("/", "_"), read(path))
put("fuzz_safetensors", "all_dtypes", st_file([("t." + d, d, [2, 1], b"\x01" * 2 * n) for d, n in sizes.items()]))
put("fuzz_safetensors", "metadata_and_empty",
    st_file([("empty", "F32", [0, 3], b""), ("scalar", "F32", [], struct.pack("<f", 1.5)),
             ("ids", "I32", [3], struct.pack("<3i", 1, -2, 3))], meta={"format": "pt"}))
put("fuzz_safetensors", "eight_dims", st_file([("x", "BF16", [1, 1, 1, 1, 1, 1, 2, 1], b"\x80\x3f\x00\xc0")]))
put("fuzz_safetensors", "f16_specials", st_file([("h", "F16", [4], struct.pack("<4H", 0x7c00, 0xfc00, 0x7e00, 0x0001))]))
put("fuzz_safetensors", "escaped_names", st_file([("a\"b\\c\u00e9\u2028", "F32", [1], b"\0\0\x80\x3f")], pad=False))

# ---- sharded: the index of tests/fixtures/gpt2/sharded, alone and with a fuzzed shard after a NUL
index = read(FIX + "/gpt2/sharded/model/model.safetensors.index.json")
put("fuzz_safetensors_index", "gpt2_sharded", index)
wm = json.loads(index)
moved = dict(wm, weight_map=dict(wm["weight_map"], **{"extra.weight": "fuzz.safetensors"}))
put("fuzz_safetensors_index", "with_fuzzed_shard",
    json.dumps(moved).encode() + b"\0" + st_file([("extra.weight", "F32", [2], b"\0" * 8)]))
put("fuzz_safetensors_index", "only_fuzzed_shard",
    json.dumps({"weight_map": {"a": "fuzz.safetensors", "b": "fuzz.safetensors"}}).encode() + b"\0" +
    st_file([("a", "F16", [1], b"\0\0"), ("b", "I64", [0], b"")]))
put("fuzz_safetensors_index", "neox_sharded", read(FIX + "/neox/sharded/model/model.safetensors.index.json"))

# ---- model config.json: every fixture's and the demo model's
for path in sorted(glob.glob(FIX + "/*/*/model/config.json")) + ["assets/demo-gpt2/config.json"]:
    name = "_".join(path.split("/")[-4:-2]) if path.startswith(FIX) else "demo-gpt2"
    put("fuzz_model_config", name + ".json", read(path))

# ---- intervention configs and requests: the pyvene cases
for path in sorted(glob.glob(FIX + "/pyvene*/cases/*/config.json")):
    put("fuzz_config", path.split("/")[-3] + "_" + path.split("/")[-2] + ".json", read(path))
# (fuzz_request: each small-model case's inputs.json without the fixtures' "model" key, NUL,
# its config.json)
for path in sorted(glob.glob(FIX + "/pyvene/cases/*/inputs.json") + glob.glob(FIX + "/pyvene_inputs/cases/*/inputs.json")):
    req = json.loads(read(path))
    if req.pop("model") in ("small", "gpt2/small"):
        put("fuzz_request", path.split("/")[-2],
            json.dumps(req).encode() + b"\0" + read(path.replace("inputs.json", "config.json")))


# ---- tokenizers: the demo model's and the tiny fixture's, cut down to their first merges
def cut_vocab(vocab, merges, n_merges):
    byte_level = [t for t in vocab if len(t) == 1]
    keep = set(byte_level) | {t for t in vocab if t.startswith("<|")}
    for m in merges[:n_merges]:
        a, b = m.split(" ") if isinstance(m, str) else m
        keep |= {a, b, a + b}
    return {t: i for t, i in vocab.items() if t in keep}


for name, path in [("demo", "assets/demo-gpt2/tokenizer.json"), ("tiny", FIX + "/tokenizer/tiny/tokenizer.json")]:
    tj = json.loads(read(path))
    for n in (0, 40):
        t = json.loads(json.dumps(tj))
        t["model"]["merges"] = tj["model"]["merges"][:n]
        t["model"]["vocab"] = cut_vocab(tj["model"]["vocab"], tj["model"]["merges"], n)
        text = json.dumps(t, ensure_ascii=False).encode()
        put("fuzz_tokenizer_json", "%s_%d_merges.json" % (name, n), text)
        # with a text after a NUL (the harness encodes it too)
        put("fuzz_tokenizer_json", "%s_%d_merges_text" % (name, n), text + b"\0<|endoftext|> the theory, 12345!")
vocab = json.loads(read("assets/demo-gpt2/vocab.json"))
merges = read("assets/demo-gpt2/merges.txt", "r").splitlines()
body = [m for m in merges if m and not m.startswith("#version")]
for n in (0, 40):
    cut = cut_vocab(vocab, body, n)
    files = json.dumps(cut, ensure_ascii=False).encode() + b"\0" + ("#version: 0.2\n" + "\n".join(body[:n]) + "\n").encode()
    put("fuzz_tokenizer_bpe", "demo_%d_merges" % n, files)
    put("fuzz_tokenizer_bpe", "demo_%d_merges_text" % n, files + b"\0 the theory of everything<|endoftext|>")

# ---- text: the tokenizer corpus (a few strings of every tag) and the demo prompts
corpus = json.loads(read(FIX + "/tokenizer/corpus.json"))["cases"]
seen = {}
for c in corpus:
    k = seen.get(c["tag"], 0)
    if k < 2:
        put("fuzz_tokenize", "%s_%d" % (c["tag"], k), base64.b64decode(c["b64"]))
        seen[c["tag"]] = k + 1
for i, p in enumerate(json.loads(read("assets/demo-gpt2/prompts.json"))["prompts"][:8]):
    put("fuzz_tokenize", "demo_prompt_%d" % i, p["text"] + p["answer"])

# ---- sweep results files: what `cvene sweep` writes for the sweep fuzz_resume.c fixes
# (the arguments of tests/cli/sweep_resume.sh), complete and interrupted after one layer
spec = {"model": "tests/fixtures/gpt2/small/model", "source_ids": [4, 4, 6, 1, 9, 2, 8],
        "base_ids": [5, 9, 2, 7, 1, 3, 8], "component": "block_output", "head": 0, "metric": "kl",
        "token": 90, "token_b": -1, "window": 1, "trace": False, "layers": [0, 1], "positions": list(range(7))}
row0 = [0.10495547950267792, 0.11532729119062424, 0.136212095618248, 0.12366028130054474, 0.13003446161746979,
        0.1224573478102684, 0.0679548978805542]
row1 = [0.14213615655899048] * 6 + [0]
tokens = ["#4", "#4", "#6", "#1", "#9", "#2", "#8"]
put("fuzz_resume", "complete.json", json.dumps(
    {"sweep": spec, "scores": [row0, row1], "tokens": tokens, "base_score": 0.14213615265645485,
     "source_score": 0, "complete": True}, indent="\t"))
put("fuzz_resume", "interrupted.json", json.dumps(
    {"sweep": spec, "scores": [row0, None], "tokens": tokens, "base_score": 0.14213615265645485,
     "source_score": 0, "complete": False}, indent="\t"))
put("fuzz_resume", "nothing_done.json", json.dumps({"sweep": spec, "scores": [None, None]}))

# ---- training datasets (JSONL): the training fixtures' examples as ids, and text examples
# of the demo model's prompts (the harness tokenizes with assets/demo-gpt2)
examples = json.loads(read(FIX + "/training/train/dataset.json"))["examples"]
lines = [json.dumps({"base": e["base_ids"], "source": e["source_ids"], "base_pos": e["base_position"],
                     "source_pos": e["source_position"], "label": e["label"]}) for e in examples[:6]]
put("fuzz_dataset", "ids.jsonl", "\n".join(lines) + "\n")
prompts = json.loads(read("assets/demo-gpt2/prompts.json"))["prompts"]
text = [json.dumps({"base": p["text"], "source": prompts[(i + 1) % len(prompts)]["text"], "base_pos": "last",
                    "source_pos": -1, "label": p["answer"]}) for i, p in enumerate(prompts[:4])]
put("fuzz_dataset", "text.jsonl", "\n".join(text) + "\n")
put("fuzz_dataset", "forms.jsonl", "\r\n".join([
    json.dumps({"base": [5, 6, 7, 8], "base_pos": [0, -1], "label": 9, "label_pos": 2}),  # no source (LoReFT)
    "   ",
    json.dumps({"base": "a b c", "source": [1, 2, 3], "base_pos": [0, 1], "source_pos": [2, 0], "label": [4]}),
    json.dumps({"base": [1], "source": None, "label": " a", "label_pos": -1}),
]) + "\r\n")
