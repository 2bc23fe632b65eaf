"""DAS training, cvene vs pyvene, one run, same machine, same data, same steps (issue #13's benchmark).
Writes the `das` section of bench/RESULTS.md.

    /work/venv/bin/python bench/bench_das.py [--build build] [--threads 2] [--steps 20] [--rounds 2]

Problem: GPT-2-small's shape (124M, random weights, bench/out/gpt2-small, as the other benchmarks),
64 examples of 16 random token ids for base and source (numpy seed 0), one position each (random),
label = the clean model's argmax at the source's last position; a DAS intervention at
block_output of layer 6 (the middle), batch 16 in dataset order, Adam lr 1e-3 with
get_linear_schedule_with_warmup (10% warm-up), mean cross-entropy at the base's last position:
  - RotatedSpaceIntervention (768 x 768, interchange_dim 64 set as the DAS tutorial sets it);
  - LowRankRotatedSpaceIntervention, rank 1.
pyvene 0.1.8: the tutorial's loop (IntervenableModel, get_trainable_parameters, Adam, the
scheduler, loss.backward(), step) on torch CPU. cvene: `cvene train` with pyvene's own saved
config.json and its initial weights (IntervenableModel.save, tools/convert_pyvene_weights.py), so
both start from the same parameters; its time includes building the caches (the frozen prefix below
layer 6 and the sources' activations, computed once). Both: model loading excluded, --threads
threads (OMP_NUM_THREADS / torch.set_num_threads). Each round runs both, interleaved; the table
shows medians.
Final parameters: LowRank's `original` directly; RotatedSpace through E = W diag(m) W^T, the map
it applies (its null-space entries follow f32 noise in both; tests/fixtures/training/README.md);
each as max |cvene - pyvene| / max |pyvene's change over the run|.
"""
import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
import logging
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import load_file
from transformers import GPT2LMHeadModel, get_linear_schedule_with_warmup

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tools"))
from bench_cpu_forward import make_model, write_section  # noqa: E402
import convert_pyvene_weights  # noqa: E402

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
import pyvene as pv  # noqa: E402

LAYER, N, T, BATCH, INTERCHANGE = 6, 64, 16, 16, 64
ORIG = "rotate_layer.parametrizations.weight.original"
# measured by hand (perf, cvene train on the kept inputs of --keep) and argued; stays with the table
ANALYSIS = """**Against the issue's target of 5x:** LowRank passes it per step (a longer run's rate) and
misses it over these 20 steps; RotatedSpace misses both. Where cvene's time goes (perf, 2 threads):
- Live rows: positions before an example's intervened one are the clean run's in every layer above,
  so a step runs only the rows from there on (docs/training.md). Here the positions are random: 52%
  of the rows run. A dataset that intervenes late in every prompt runs far fewer (the demo's colour
  task: 18%); one that intervenes at the first token gains nothing.
- LowRank's steps are mostly OpenBLAS sgemm at about 90 GFLOP/s, near what two cores give.
- The one-time part is about 2 s, a quarter of cvene's 20 steps: the frozen layers 0 to 6 for every
  base and source, the clean keys and values above them, and the first step. Over a longer run it is
  paid once per dataset (64 examples here; DAS runs are usually many epochs of far more).
- RotatedSpace adds the 768 x 768 matrix exponential and its exact reverse, in double: 6 + s matrix
  products forward and 12 + 2s back (Paterson-Stockmeyer, s = 4 squarings here), about 0.4 s a step,
  more than its model layers. In f32 (torch's own precision) it would take about half."""


def dataset(model):
    r = np.random.RandomState(0)
    V = model.config.vocab_size
    base, src = r.randint(0, V, (N, T)), r.randint(0, V, (N, T))
    bpos, spos = r.randint(0, T, N), r.randint(0, T, N)
    with torch.no_grad():
        labels = model(torch.tensor(src)).logits[:, -1].argmax(-1).tolist()
    return [dict(base=base[i].tolist(), source=src[i].tolist(), base_pos=int(bpos[i]), source_pos=int(spos[i]),
                 label=labels[i]) for i in range(N)]


def make_ivm(model, kind):
    if kind == "rotated":
        cfg = pv.IntervenableConfig(representations=[pv.RepresentationConfig(LAYER, "block_output", "pos", 1)],
                                    intervention_types=pv.RotatedSpaceIntervention)
    else:
        cfg = pv.IntervenableConfig(representations=[pv.RepresentationConfig(
            LAYER, "block_output", "pos", 1, low_rank_dimension=1)],
            intervention_types=pv.LowRankRotatedSpaceIntervention)
    ivm = pv.IntervenableModel(cfg, model)
    ivm.disable_model_gradients()
    iv = list(ivm.interventions.values())[0]
    if kind == "rotated":
        iv.set_interchange_dim(INTERCHANGE)  # the DAS tutorial's call
    return ivm, iv


def train_pyvene(ivm, data, steps):
    opt = torch.optim.Adam(ivm.get_trainable_parameters(), lr=1e-3)
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=int(0.1 * steps), num_training_steps=steps)
    times, losses = [], []
    for s in range(steps):
        b0 = (s % (N // BATCH)) * BATCH
        batch = data[b0:b0 + BATCH]
        t0 = time.perf_counter()
        base = torch.tensor([e["base"] for e in batch])
        src = torch.tensor([e["source"] for e in batch])
        _, out = ivm({"input_ids": base}, [{"input_ids": src}],
                     {"sources->base": ([[[e["source_pos"]] for e in batch]], [[[e["base_pos"]] for e in batch]])})
        loss = torch.nn.functional.cross_entropy(out.logits[:, -1], torch.tensor([e["label"] for e in batch]))
        loss.backward()
        opt.step()
        sched.step()
        ivm.set_zero_grad()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    return times, losses


def run_cvene(args, model_dir, init_dir, data_path, out_dir, steps):
    key = json.loads((init_dir / "config.json").read_text())["sorted_keys"][0]
    cmd = [f"{args.build}/cvene", "train", "--model", str(model_dir), "--config", str(init_dir / "config.json"),
           "--init", str(init_dir / f"intkey_{key}.safetensors"), "--data", str(data_path), "--eval-fraction", "0",
           "--no-shuffle", "--batch", str(BATCH), "--steps", str(steps), "--lr", "1e-3", "--warmup", "0.1",
           "--threads", str(args.threads), "--out", str(out_dir)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    wall = time.perf_counter() - t0
    m = re.search(r"(\d+) steps in ([0-9.]+) s", res.stdout)
    assert m and int(m.group(1)) == steps, res.stdout + res.stderr
    return float(m.group(2)), wall, cmd, key


def effective(original, base):
    from make_training_fixtures import ref_orthogonal_weight  # noqa: E402  (the fixtures' reference)
    W = ref_orthogonal_weight(original.double(), base.double())
    return W[:, :INTERCHANGE] @ W[:, :INTERCHANGE].T


def compare(kind, init_sd, pyv_sd, cv_sd):
    if kind == "rotated":
        base = init_sd["rotate_layer.parametrizations.weight.0.base"]
        e0, e1, e2 = (effective(sd[ORIG], base) for sd in (init_sd, pyv_sd, cv_sd))
        return ((e2 - e1).abs().max() / (e1 - e0).abs().max()).item(), "E = W diag(m) W^T"
    d = (cv_sd[ORIG].double() - pyv_sd[ORIG].double()).abs().max()
    return (d / (pyv_sd[ORIG].double() - init_sd[ORIG].double()).abs().max()).item(), "original"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    ap.add_argument("--keep", metavar="DIR", help="keep the data, the initial weights and the outputs in DIR (to "
                    "profile a cvene train run by hand: the printed command)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = ROOT / "bench" / "out" / "gpt2-small"
    make_model("gpt2-small", model_dir)
    model = GPT2LMHeadModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    data = dataset(model)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_das_"))
    work.mkdir(parents=True, exist_ok=True)
    data_path = work / "data.jsonl"
    data_path.write_text("".join(json.dumps(e) + "\n" for e in data))
    load0 = os.getloadavg()[0]
    rows = []
    started = time.time()
    for kind in ("rotated", "lowrank"):
        pv_times, cv_times, cv_walls, errs, pv_steady, cv_steady = [], [], [], [], [], []
        for rnd in range(args.rounds):
            torch.manual_seed(rnd)
            ivm, iv = make_ivm(model, kind)
            init_dir = work / f"{kind}_init_{rnd}"
            ivm.save(str(init_dir))
            for f in init_dir.glob("intkey_*.bin"):
                convert_pyvene_weights.to_safetensors(str(f))
            init_sd = {k: v.clone() for k, v in iv.state_dict().items()}
            cv_s, cv_wall, cmd, key = run_cvene(args, model_dir, init_dir, data_path, work / f"{kind}_out_{rnd}",
                                                args.steps)
            times, losses = train_pyvene(ivm, data, args.steps)
            # the one-time part of cvene's seconds (its caches and the first step), from a 1-step run
            cv_1, _, _, _ = run_cvene(args, model_dir, init_dir, data_path, work / f"{kind}_one_{rnd}", 1)
            pv_times.append(sum(times))
            pv_steady.append(statistics.median(times[1:]))
            cv_steady.append((cv_s - cv_1) / (args.steps - 1))
            cv_times.append(cv_s)
            cv_walls.append(cv_wall)
            cv_sd = load_file(str(work / f"{kind}_out_{rnd}" / f"intkey_{key}.safetensors"))
            err, what = compare(kind, init_sd, iv.state_dict(), cv_sd)
            errs.append(err)
            print(f"{kind} round {rnd}: pyvene {sum(times):.2f} s, cvene {cv_s:.2f} s (process {cv_wall:.2f} s), "
                  f"final {what} diff {err:.1e} of its change; pyvene loss {losses[0]:.4f} -> {losses[-1]:.4f}",
                  flush=True)
        pv, cv = statistics.median(pv_times), statistics.median(cv_times)
        rows.append((kind, what, pv, cv, max(errs), statistics.median(pv_steady), statistics.median(cv_steady)))
    if args.keep:
        print("kept in", work, "; the last cvene command:", " ".join(cmd))
    else:
        shutil.rmtree(work, ignore_errors=True)
    load1 = os.getloadavg()[0]
    name = {"rotated": f"RotatedSpace (768 x 768, interchange_dim {INTERCHANGE})", "lowrank": "LowRankRotatedSpace, rank 1"}
    lines = [
        "## DAS training: cvene vs pyvene on CPU, GPT-2-small (124M, random weights)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads for both; "
        f"torch {torch.__version__}, transformers {transformers.__version__}, pyvene 0.1.8; 1-min load average "
        f"{load0:.1f} at the start, {load1:.1f} at the end; {time.strftime('%Y-%m-%d')}, {time.time() - started:.0f} s "
        "in all.",
        f"Command: `/work/venv/bin/python bench/bench_das.py --threads {args.threads} --steps {args.steps} "
        f"--rounds {args.rounds}` (after `cmake --build build`).",
        "",
        f"{N} examples of {T} random tokens (base and source), one position each; block_output of layer {LAYER}; "
        f"batch {BATCH} in order; Adam lr 1e-3, 10% linear warm-up then decay; {args.steps} steps from the same "
        "initial parameters (pyvene's, saved and converted). cvene's seconds include building its caches "
        "(the frozen layers below the site and the sources' activations, once); model loading is excluded for both. "
        "Per step, once the caches stand: pyvene's median step after the first; cvene's "
        f"(seconds for {args.steps} steps - seconds for 1 step) / {args.steps - 1}, i.e. what every further step "
        "of a longer run costs. Medians over the rounds.",
        "",
        f"| intervention | pyvene s ({args.steps} steps) | cvene s | speed-up | pyvene s/step | cvene s/step "
        "| per-step speed-up | final parameters: max diff / max change |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, what, pv, cv, err, pvs, cvs in rows:
        lines.append(f"| {name[kind]} | {pv:.2f} | {cv:.2f} | **{pv / cv:.1f}x** | {pvs:.3f} | {cvs:.3f} | "
                     f"**{pvs / cvs:.1f}x** | {err:.1e} ({what}) |")
    lines += ["", ANALYSIS]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section(ROOT / "bench" / "RESULTS.md", "das", body)


if __name__ == "__main__":
    sys.exit(main())
