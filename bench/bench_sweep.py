"""Full activation-patching sweep three ways, one run, same machine, same thread count:
the cvene sweep engine (fast path), cvene's naive per-site loop (one full forward per
site), and pyvene 0.1.8 on torch CPU looping over sites as its causal-tracing tutorial
does. Writes the `sweep` section of bench/RESULTS.md.

    /work/venv/bin/python bench/bench_sweep.py [--build build] [--threads 2] [--rounds 3]
        [--naive-layers all] [--pv-layers all] [--attn auto]

Problem: GPT-2-small's shape (124M, random weights, bench/out/gpt2-small, written by
bench_cpu_forward.make_model), base and source prompts of 32 random token ids (numpy
seed 0), component block_output at all 12 layers x 32 positions (384 sites), metric =
logit difference logit[token] - logit[token_b] at the last position (tokens drawn with
the same seed), the same for all three.

The machine is shared, so the three are interleaved in --rounds rounds; each round runs
  - cvene: build/cvene_bench_sweep (bench/bench_sweep.c) in a fresh process: model load
    (not timed), warm-ups, one timed fast cvene_sweep of all 384 sites (naive = 0, source
    and base runs included), then one timed naive sweep (naive = 1) of its share of
    --naive-layers (all positions);
  - pyvene: its share of --pv-layers: one IntervenableModel per layer (Vanilla intervention
    on block_output, built inside the timed loop), one call per site ivm(base, [source],
    {"sources->base": ([[[p]]], [[[p]]])}) with explicit nested unit_locations (so pyvene's
    sticky use_fast stays off, docs/pyvene_semantics.md 7.1) under torch.no_grad(), the
    metric from the returned logits. Each call runs a source and a base forward with full
    logits, which is what the tutorial's loop does.
Reported: fast = median of the rounds' sweeps; naive = seconds per naive forward x 386 (a
full naive sweep: source, base, one forward per site); pyvene = median seconds per site x
384 (extrapolated linearly when --pv-layers is a subset, e.g. 0,6,11 on a busy machine;
with the defaults, all 384 pyvene sites, the run takes about 3 minutes on an idle 2-core
machine, and several times that while other jobs run). --attn auto first times 5 calls with
attn_implementation "eager" and "sdpa" (pyvene's block_output hook fires with both) and
uses the faster one.

Scores: max |fast - naive| over the naive sites, max |cvene fast - pyvene| over every
pyvene call (calibration included).
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


def run_cvene(args, model_dir, ids_path, out_path, naive_layers, breakdown):
    """one cvene_bench_sweep process: one fast sweep of all sites, one naive sweep of naive_layers
    (and, with breakdown, one more fast sweep timed layer by layer)"""
    cmd = [f"{args.build}/cvene_bench_sweep", str(model_dir), str(ids_path), str(out_path),
           "1", "1" if naive_layers else "0", str(args.threads), ",".join(map(str, naive_layers)),
           "1" if breakdown else "0"]
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


def split(layers, rounds):
    return [layers[r::rounds] for r in range(rounds)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of (cvene fast sweep, share of the naive layers, share of the pyvene layers)")
    ap.add_argument("--naive-layers", default="all", help='"all" or a comma list, e.g. 0,6,11 (extrapolated)')
    ap.add_argument("--pv-layers", default="all",
                    help='"all" or a comma list of layers, e.g. 0,6,11 (32 positions each; extrapolated)')
    ap.add_argument("--attn", default="auto", choices=["auto", "eager", "sdpa"])
    args = ap.parse_args()
    t_start = time.time()
    loads = [os.getloadavg()[0]]
    model_dir = ROOT / "bench" / "out" / "gpt2-small"
    make_model("gpt2-small", model_dir)
    work = ROOT / "bench" / "out" / "sweep"
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)

    cfg = json.loads((model_dir / "config.json").read_text())
    L, V = cfg["n_layer"], cfg["vocab_size"]
    n_sites = L * T
    base, source, token, token_b = prompts(V)
    ids_path = work / "ids.json"
    ids_path.write_text(json.dumps({"base": base, "source": source, "token": token, "token_b": token_b}))
    naive_layers = list(range(L)) if args.naive_layers == "all" else [int(x) for x in args.naive_layers.split(",")]
    pv_layers = list(range(L)) if args.pv_layers == "all" else [int(x) for x in args.pv_layers.split(",")]
    R = max(1, args.rounds)

    # ---- pyvene: pick the attention implementation (a few calls each)
    calib, pv_scores = {}, {}
    attns = ["eager", "sdpa"] if args.attn == "auto" else [args.attn]
    for attn in attns:
        sw = PyveneSweep(load_torch(model_dir, attn), base, source, token, token_b)
        with torch.no_grad():
            ivm = sw.ivm(L // 2)
            sw.site(ivm, T - 1)  # warm-up
            ts = []
            for p in (0, 8, 16, 24, 31):
                t0 = time.perf_counter()
                pv_scores[(attn, L // 2, p)] = sw.site(ivm, p)
                ts.append(time.perf_counter() - t0)
        calib[attn] = statistics.median(ts)
        print(f"pyvene {attn}: median {calib[attn]:.3f} s per site (5 calls)", flush=True)
    attn = min(calib, key=calib.get)
    sw = PyveneSweep(load_torch(model_dir, attn), base, source, token, token_b)
    with torch.no_grad():
        sw.site(sw.ivm(0), 0)  # warm-up

    # ---- rounds, interleaved so that load from other jobs falls on all three alike
    fast_s, naive_s, naive_fw, pv_site_s, pv_total, rounds = [], 0.0, 0, [], 0.0, []
    fast = None
    naive = {}
    for r, (nls, pls) in enumerate(zip(split(naive_layers, R), split(pv_layers, R))):
        c, cmd = run_cvene(args, model_dir, ids_path, work / f"cvene_round{r}.json", nls, r == 0)
        if r == 0:
            brk = (c["seconds_begin"], c["seconds_per_layer"])
        f = np.array(c["scores_fast"]).reshape(L, T)
        if fast is not None:
            assert np.array_equal(f, fast), "cvene fast sweep is not deterministic"
        fast = f
        fast_s.append(c["seconds_fast"][0])
        for i, l in enumerate(c["naive_layers"] if nls else []):
            naive[l] = np.array(c["scores_naive"][i * T:(i + 1) * T])
        t_n = c["seconds_naive"][0] if nls else 0.0
        naive_s += t_n
        naive_fw += c["forwards_naive"]
        s_pv, per_site, tot = sw.sweep(pls)
        pv_scores.update({(attn, l, p): v for (l, p), v in s_pv.items()})
        pv_site_s += per_site
        pv_total += tot
        rr = {"fast": fast_s[-1],
              "naive": t_n / c["forwards_naive"] * (n_sites + 2) if nls else None,
              "pv": statistics.median(per_site) * n_sites if per_site else None}
        rounds.append(rr)
        loads.append(os.getloadavg()[0])
        print(f"round {r}: fast {rr['fast']:.2f} s; naive layers {nls}: {t_n:.1f} s "
              f"({c['forwards_naive']} forwards); pyvene layers {pls}: {tot:.1f} s ({len(per_site)} sites); "
              f"load {loads[-1]:.1f}", flush=True)

    # ---- results
    t_fast = statistics.median(fast_s)
    t_naive = naive_s / naive_fw * (n_sites + 2)   # a full naive sweep: source, base, one forward per site
    n_pv = len(pv_site_s)
    t_pv = statistics.median(pv_site_s) * n_sites
    t_pv_mean = pv_total / n_pv * n_sites
    d_fast_naive = max(float(np.abs(fast[l] - v).max()) for l, v in naive.items())
    d_pv = max(abs(v - fast[l, p]) for (_, l, p), v in pv_scores.items())
    scale = float(np.abs(fast).max())
    elapsed = time.time() - t_start
    per_round = lambda k: ", ".join(f"{rr[k]:.1f}" if rr[k] else "-" for rr in rounds)  # noqa: E731
    ratio_n = [rr["naive"] / rr["fast"] for rr in rounds if rr["naive"]]
    ratio_p = [rr["pv"] / rr["fast"] for rr in rounds if rr["pv"]]
    naive_note = (f"measured: all {n_sites} sites, layers split over the {R} rounds ({naive_s:.1f} s, "
                  f"{naive_fw} forwards, rescaled to one sweep's {n_sites + 2})"
                  if len(naive) == L else
                  f"**extrapolated** from layers {','.join(map(str, sorted(naive)))} x 32 positions "
                  f"({len(naive) * T} sites, {naive_s:.1f} s measured; per forward x {n_sites + 2})")
    pv_note = (f"measured: all {n_sites} sites ({pv_total:.1f} s; median s/site x {n_sites})" if n_pv == n_sites else
               f"**extrapolated** from layers {','.join(map(str, pv_layers))} x 32 positions ({n_pv} sites, "
               f"{pv_total:.1f} s measured; median s/site x {n_sites}; mean-based: {t_pv_mean:.1f} s)")
    py_cmd = ("/work/venv/bin/python bench/bench_sweep.py " + " ".join(sys.argv[1:])).strip()
    c_cmd = " ".join(Path(x).name if i in (0, 1, 2, 3) else x for i, x in enumerate(cmd))
    table = [
        "## Sweep: activation patching, GPT-2-small (124M, random weights), 12 layers x 32 positions, block_output",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, {args.threads} threads for all three "
        f"(OMP_NUM_THREADS / torch.set_num_threads); torch {torch.__version__}, transformers "
        f"{transformers.__version__}, pyvene {getattr(pv, '__version__', '0.1.8')}; 1-min load average "
        + " / ".join(f"{x:.1f}" for x in loads) + " (start / after each round: the machine is shared, so the "
        f"three are interleaved in {R} rounds and medians are reported); {time.strftime('%Y-%m-%d')}, "
        f"{elapsed:.0f} s in all.",
        f"Command: `{py_cmd}` (after `cmake -S . -B build -DCVENE_WERROR=ON && cmake --build build -j2`); "
        f"each round runs `{c_cmd}` (last round shown).",
        "",
        f"Base and source: 32 random token ids each (numpy RandomState({SEED})); metric: logit[{token}] - "
        f"logit[{token_b}] at the last position, the same for all three (base {c['base_score']:.4f}, source "
        f"{c['source_score']:.4f}; scores span up to |{scale:.3f}|). "
        f"cvene (`build/cvene_bench_sweep`, bench/bench_sweep.c): model loaded outside the timing, warm-ups "
        f"(one forward, one one-layer sweep), then each timed run is one whole `cvene_sweep` call (source and "
        f"base runs included). Fast path: {c['forwards_fast']} forwards (source, base, then per layer packed "
        f"forwards of up to 8 positions each, resumed above the layer with the base's cached K/V from the "
        f"batch's earliest patched position on, last-position logits only). Naive: one full forward (all positions, full logits) per site. "
        f"pyvene: attn_implementation=\"{attn}\" (the faster in a 5-call calibration: "
        + ", ".join(f"{k} {v:.3f} s/site" for k, v in calib.items()) + "; block_output's hook fires with "
        f"both), one IntervenableModel per layer (Vanilla, block_output, built inside the timed loop), one call "
        f"per site with explicit nested unit_locations under torch.no_grad(): a source and a base forward with "
        f"full logits per site, as the causal-tracing tutorial loops.",
        "",
        f"| method | seconds (384 sites) | sites/s | vs cvene naive | vs pyvene | max score diff vs fast | how |",
        "|---|---|---|---|---|---|---|",
        f"| cvene sweep (fast path) | {t_fast:.2f} | {n_sites / t_fast:.1f} | **{t_naive / t_fast:.1f}x** | "
        f"**{t_pv / t_fast:.1f}x** | — | median of {len(fast_s)} full sweeps: {per_round('fast')} s |",
        f"| cvene naive (one forward per site) | {t_naive:.2f} | {n_sites / t_naive:.2f} | 1.0x | "
        f"{t_pv / t_naive:.2f}x | {d_fast_naive:.1e} | {naive_note} |",
        f"| pyvene 0.1.8 ({attn}), loop over sites | {t_pv:.2f} | {n_sites / t_pv:.2f} | "
        f"{t_naive / t_pv:.2f}x | 1.0x | {d_pv:.1e} | {pv_note} |",
        "",
        f"Per round (each against that round's fast sweep): naive-equivalent {per_round('naive')} s -> "
        + ", ".join(f"{x:.1f}x" for x in ratio_n) + f"; pyvene-equivalent {per_round('pv')} s -> "
        + ", ".join(f"{x:.1f}x" for x in ratio_p) + ".",
        f"Where the fast sweep's time goes (round 0, one more sweep through cvene_sweep_begin / "
        f"cvene_sweep_layer): source + base runs {brk[0]:.2f} s; patching layer 0..{L - 1}: "
        + ", ".join(f"{x:.2f}" for x in brk[1]) + f" s (sum {brk[0] + sum(brk[1]):.2f} s). Layer l's packed "
        f"forwards run their rows (8 per batch by default, each padded to the batch's earliest patched position) "
        f"through the {L - 1} - l layers above it, so the cost falls linearly with l.",
        f"Targets: >= 3x over cvene naive: **{'met' if t_naive / t_fast >= 3 else 'not met'}** "
        f"({t_naive / t_fast:.1f}x); >= 20x over pyvene: **{'met' if t_pv / t_fast >= 20 else 'not met'}** "
        f"({t_pv / t_fast:.1f}x); identical scores: max |fast - naive| {d_fast_naive:.1e}, "
        f"max |cvene - pyvene| {d_pv:.1e} over {len(pv_scores)} pyvene calls (f32; scores up to |{scale:.2f}|).",
    ]
    write_section(ROOT / "bench" / "RESULTS.md", "sweep", "\n".join(table))
    print("\n".join(table))


if __name__ == "__main__":
    sys.exit(main())
