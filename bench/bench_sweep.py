"""Full activation-patching sweep three ways, one run, same machine, same thread count:
the cvene sweep engine (fast path), cvene's naive per-site loop (one full forward per
site), and pyvene 0.1.8 on torch CPU looping over sites as its causal-tracing tutorial
does. Writes the `sweep` section of bench/RESULTS.md.

    /work/venv/bin/python bench/bench_sweep.py [--build build] [--threads 2]
        [--reps-fast 3] [--reps-naive 1] [--naive-layers all] [--pv-layers 0,6,11] [--attn auto]

Problem: GPT-2-small's shape (124M, random weights, bench/out/gpt2-small, shared with
bench_cpu_forward.py), base and source prompts of 32 random token ids (numpy seed 0),
component block_output at all 12 layers x 32 positions (384 sites), metric = logit
difference logit[token] - logit[token_b] at the last position (tokens drawn with the
same seed), the same for all three.

cvene: build/cvene_bench_sweep (bench/bench_sweep.c) loads the model once (not timed),
runs one warm-up forward, then times whole cvene_sweep calls (the source and base runs
included): --reps-fast with naive = 0, --reps-naive with naive = 1; the median is reported.
--naive-layers restricts the naive sweep to some layers (its cost per site is uniform) and
extrapolates linearly to 384 sites.

pyvene: one IntervenableModel per layer (Vanilla intervention on block_output), built
inside the timed loop; per site one call ivm(base, [source], {"sources->base":
([[[p]]], [[[p]]])}) with explicit nested unit_locations (so pyvene's sticky use_fast
stays off, docs/pyvene_semantics.md 7.1), under torch.no_grad(), metric from the
returned logits. Each call runs the source and the base forward with full logits,
which is what the tutorial's loop does. The layers of --pv-layers (all 32 positions
each) are timed and extrapolated linearly to 384 sites (by the median seconds per site;
the mean is shown too). --attn auto times a few calls with attn_implementation "eager"
and "sdpa" (pyvene's block_output hook fires with both) and uses the faster one.

Scores: max |fast - naive| over the naive sites, max |cvene fast - pyvene| over the
pyvene sites.
"""
import argparse, json, os, platform, statistics, subprocess, sys, time, warnings, logging
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import GPT2LMHeadModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu_forward import make_model, write_section  # noqa: E402

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
import pyvene as pv  # noqa: E402  (prints "nnsight is not detected", harmless)

ROOT = Path(__file__).resolve().parent.parent
T = 32
SEED = 0


def prompts(V):
    r = np.random.RandomState(SEED)
    base = r.randint(0, V, T).tolist()
    source = r.randint(0, V, T).tolist()
    token, token_b = (int(x) for x in r.randint(0, V, 2))
    return base, source, token, token_b


def run_cvene(args, model_dir, ids_path, out_path, naive_layers):
    cmd = [f"{args.build}/cvene_bench_sweep", str(model_dir), str(ids_path), str(out_path),
           str(args.reps_fast), str(args.reps_naive), str(args.threads)]
    if naive_layers is not None:
        cmd.append(",".join(map(str, naive_layers)))
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    return json.loads(out_path.read_text()), cmd


class PyveneSweep:
    def __init__(self, model, base, source, token, token_b):
        self.model = model
        self.base = {"input_ids": torch.tensor([base])}
        self.source = {"input_ids": torch.tensor([source])}
        self.token, self.token_b = token, token_b

    def ivm(self, layer):
        cfg = pv.IntervenableConfig([{"layer": layer, "component": "block_output", "unit": "pos",
                                      "max_number_of_units": 1,
                                      "intervention_type": pv.VanillaIntervention}])
        return pv.IntervenableModel(cfg, self.model)

    def site(self, ivm, p):
        _, out = ivm(self.base, [self.source], {"sources->base": ([[[p]]], [[[p]]])})
        lg = out.logits[0, -1]
        return float(lg[self.token] - lg[self.token_b])

    def sweep(self, layers):
        """scores {(l, p)}, per-site seconds, total seconds (IntervenableModel builds included)"""
        scores, per_site = {}, []
        t_all = time.perf_counter()
        with torch.no_grad():
            for l in layers:
                ivm = self.ivm(l)
                for p in range(T):
                    t0 = time.perf_counter()
                    scores[(l, p)] = self.site(ivm, p)
                    per_site.append(time.perf_counter() - t0)
        return scores, per_site, time.perf_counter() - t_all


def load_torch(model_dir, attn):
    return GPT2LMHeadModel.from_pretrained(model_dir, attn_implementation=attn).eval()


def cpu_name():
    try:
        return next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps-fast", type=int, default=3)
    ap.add_argument("--reps-naive", type=int, default=1)
    ap.add_argument("--naive-layers", default="all", help='"all" or a comma list, e.g. 0,6,11')
    ap.add_argument("--pv-layers", default="0,6,11", help='"all" or a comma list of layers (32 positions each)')
    ap.add_argument("--attn", default="auto", choices=["auto", "eager", "sdpa"])
    args = ap.parse_args()
    t_start = time.time()
    load0 = os.getloadavg()[0]
    model_dir = ROOT / "bench" / "out" / "gpt2-small"
    make_model("gpt2-small", model_dir)
    work = ROOT / "bench" / "out" / "sweep"
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)

    L = json.loads((model_dir / "config.json").read_text())["n_layer"]
    V = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    n_sites = L * T
    base, source, token, token_b = prompts(V)
    ids_path = work / "ids.json"
    ids_path.write_text(json.dumps({"base": base, "source": source, "token": token, "token_b": token_b}))

    # ---- cvene: fast path and naive loop
    naive_layers = None if args.naive_layers == "all" else [int(x) for x in args.naive_layers.split(",")]
    c, cmd = run_cvene(args, model_dir, ids_path, work / "cvene.json", naive_layers)
    fast = np.array(c["scores_fast"]).reshape(L, T)
    nl = c["naive_layers"]
    naive = np.array(c["scores_naive"]).reshape(len(nl), T)
    t_fast = statistics.median(c["seconds_fast"])
    t_naive_meas = statistics.median(c["seconds_naive"])
    t_naive = t_naive_meas * n_sites / (len(nl) * T)
    d_fast_naive = float(np.abs(fast[nl] - naive).max())
    print(f"cvene fast {c['seconds_fast']} s, naive {c['seconds_naive']} s over {len(nl)} layers "
          f"-> {t_naive:.1f} s for {n_sites} sites; max |fast - naive| = {d_fast_naive:.2e}", flush=True)

    # ---- pyvene: pick the attention implementation, then time the subset of layers
    pv_layers = list(range(L)) if args.pv_layers == "all" else [int(x) for x in args.pv_layers.split(",")]
    calib = {}
    attns = ["eager", "sdpa"] if args.attn == "auto" else [args.attn]
    for attn in attns:
        sw = PyveneSweep(load_torch(model_dir, attn), base, source, token, token_b)
        with torch.no_grad():
            ivm = sw.ivm(L // 2)
            sw.site(ivm, T - 1)  # warm-up
            ts = []
            for p in (0, 8, 16, 24, 31):
                t0 = time.perf_counter()
                s = sw.site(ivm, p)
                ts.append(time.perf_counter() - t0)
                assert abs(s - fast[L // 2, p]) < 1e-3, (attn, p, s, fast[L // 2, p])
        calib[attn] = statistics.median(ts)
        print(f"pyvene {attn}: median {calib[attn]:.3f} s per site (5 calls)", flush=True)
    attn = min(calib, key=calib.get)
    sw = PyveneSweep(load_torch(model_dir, attn), base, source, token, token_b)
    with torch.no_grad():
        sw.site(sw.ivm(0), 0)  # warm-up
    pv_scores, per_site, pv_total = sw.sweep(pv_layers)
    n_pv = len(per_site)
    t_pv_med = statistics.median(per_site) * n_sites
    t_pv_mean = pv_total / n_pv * n_sites
    d_pv = max(abs(v - fast[l, p]) for (l, p), v in pv_scores.items())
    print(f"pyvene ({attn}) {pv_total:.1f} s for {n_pv} sites -> {t_pv_med:.1f} s (median) / "
          f"{t_pv_mean:.1f} s (mean) for {n_sites} sites; max |cvene - pyvene| = {d_pv:.2e}", flush=True)

    # ---- table
    t_fast_sps, t_naive_sps, t_pv_sps = n_sites / t_fast, n_sites / t_naive, n_sites / t_pv_med
    scale = float(np.abs(fast).max())
    load = os.getloadavg()[0]
    elapsed = time.time() - t_start
    naive_note = ("measured, all 384 sites" if naive_layers is None else
                  f"extrapolated from layers {','.join(map(str, nl))} x 32 positions "
                  f"({len(nl) * T} sites, {t_naive_meas:.1f} s measured)")
    pv_note = ("measured, all 384 sites" if n_pv == n_sites else
               f"**extrapolated** from layers {','.join(map(str, pv_layers))} x 32 positions "
               f"({n_pv} sites, {pv_total:.1f} s measured; median s/site x 384; mean-based: {t_pv_mean:.1f} s)")
    reps = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    py_cmd = ("/work/venv/bin/python bench/bench_sweep.py " + " ".join(sys.argv[1:])).strip()
    table = [
        "## Sweep: activation patching, GPT-2-small (124M, random weights), 12 layers x 32 positions, block_output",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, {args.threads} threads for all three "
        f"(OMP_NUM_THREADS / torch.set_num_threads); torch {torch.__version__}, transformers "
        f"{transformers.__version__}, pyvene {pv.__version__ if hasattr(pv, '__version__') else '0.1.8'}; "
        f"1-min load average {load0:.1f} at the start, {load:.1f} at the end (the machine is shared: medians); "
        f"{time.strftime('%Y-%m-%d')}, {elapsed:.0f} s in all.",
        f"Command: `{py_cmd}` (after `cmake -S . -B build -DCVENE_WERROR=ON && cmake --build build -j2`; "
        f"cvene part: `{' '.join(Path(x).name if i < 4 and '/' in x else x for i, x in enumerate(cmd))}`).",
        "",
        f"Base and source: 32 random token ids each (numpy RandomState({SEED})); metric: logit[{token}] - "
        f"logit[{token_b}] at the last position (base {c['base_score']:.4f}, source {c['source_score']:.4f}; "
        f"scores span up to |{scale:.3f}|). cvene: model loaded once outside the timing, one warm-up forward, "
        f"each timed run is one whole `cvene_sweep` call (source and base runs included); fast path "
        f"{c['forwards_fast']} forwards (source, base, then per layer one packed forward of the 32 positions "
        f"resumed above the layer with cached K/V, last-position logits only); naive path one full forward "
        f"(all positions, full logits) per site. pyvene: attn_implementation=\"{attn}\" (faster in a 5-call "
        f"calibration: " + ", ".join(f"{k} {v:.3f} s/site" for k, v in calib.items()) + "), one "
        f"IntervenableModel per layer (Vanilla on block_output), one call per site with explicit nested "
        f"unit_locations under torch.no_grad() (source + base forward, full logits, per call), as the "
        f"causal-tracing tutorial loops.",
        "",
        "| method | seconds (384 sites) | sites/s | vs cvene naive | vs pyvene | max score diff | how |",
        "|---|---|---|---|---|---|---|",
        f"| cvene sweep (fast path) | {t_fast:.2f} | {t_fast_sps:.1f} | **{t_naive / t_fast:.1f}x** | "
        f"**{t_pv_med / t_fast:.1f}x** | — (reference) | median of {len(c['seconds_fast'])} runs: "
        f"{reps(c['seconds_fast'])} s |",
        f"| cvene naive (one forward per site) | {t_naive:.2f} | {t_naive_sps:.2f} | 1.0x | "
        f"{t_pv_med / t_naive:.1f}x | {d_fast_naive:.1e} vs fast | {naive_note}; runs: "
        f"{reps(c['seconds_naive'])} s |",
        f"| pyvene 0.1.8 ({attn}), loop over sites | {t_pv_med:.2f} | {t_pv_sps:.2f} | "
        f"{t_naive / t_pv_med:.2f}x | 1.0x | {d_pv:.1e} vs fast | {pv_note} |",
        "",
        f"Targets: >= 3x over cvene naive: **{'met' if t_naive / t_fast >= 3 else 'not met'}** "
        f"({t_naive / t_fast:.1f}x); >= 20x over pyvene: **{'met' if t_pv_med / t_fast >= 20 else 'not met'}** "
        f"({t_pv_med / t_fast:.1f}x); identical scores: max |fast - naive| {d_fast_naive:.1e}, "
        f"max |cvene - pyvene| {d_pv:.1e} (f32).",
    ]
    write_section(ROOT / "bench" / "RESULTS.md", "sweep", "\n".join(table))
    print("\n".join(table))


if __name__ == "__main__":
    sys.exit(main())
