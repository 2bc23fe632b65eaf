"""Intervention runs: cvene (native, C) vs pyvene 0.1.8 on torch CPU, one run, same machine,
same thread count, same configs and inputs. Writes the `interventions` section of
bench/RESULTS.md.

    /work/venv/bin/python bench/bench_interventions.py [--build build] [--iters 3] [--rounds 2] [--threads 2]

Five representative requests on GPT-2-small's shape (124M, random weights, batch 8 x seq 32):
  1. Vanilla interchange, one position, block_output layer 6
  2. Addition on mlp_output layer 6, 3 positions
  3. Vanilla h.pos interchange on head_attention_value_output layer 6, 2 heads x 2 positions
  4. Collect of block_output at every layer (12 interventions, same position, no source)
  5. serial chain over 2 sources: block_output layer 3 (source_0 -> source_1), then layer 9
     (source_1 -> base)
For each: the config is pyvene's own IntervenableModel.save() output and the inputs JSON is
what `cvene run --inputs` reads (both under bench/out/interventions/); cvene is timed by
build/cvene_bench_interventions (parse once, one warm-up, --iters timed cvene_run calls);
pyvene by a fresh IntervenableModel built outside the timed loop, one warm-up call, then
--iters timed calls under torch.no_grad(). The two alternate (--rounds blocks of each, so both
see the same machine load) and the medians of all timed calls are reported. The model is loaded with
attn_implementation="eager" (pyvene's attention-level components need it; the default sdpa
never fires their hooks). Logits (and case 4's collected activations) must agree:
max |cvene - pyvene| / max |pyvene| <= 1e-4.

Also measures, with cvene_bench_interventions --overhead:
  (a) plain cvene_forward of the (source + base) batch vs cvene_run of a one-position Vanilla
      interchange at block_output of the middle layer (the single-pass plan), GPT-2-small,
      8 x 32: overhead % (target <= 5%) over the forward the plan runs (logits for the base rows
      only), and, for reference, vs a forward with every row's logits;
  (b) the same on the tiny fixture model tests/fixtures/gpt2/small/model (2 layers, n_embd 64,
      vocab 320), where the forward is cheap: cvene_run minus its forward, in microseconds
      (target <= 20 us; config parsing and request building are outside the timed loop).
"""
import argparse, copy, json, os, platform, statistics, subprocess, sys, tempfile, time, warnings
import logging
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu_forward import write_section  # noqa: E402

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
import pyvene as pv  # noqa: E402  (prints "nnsight is not detected", harmless)

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "fixtures" / "gpt2" / "small" / "model"
TOL = 1e-4
TYPES = {"Vanilla": pv.VanillaIntervention, "Addition": pv.AdditionIntervention,
         "Collect": pv.CollectIntervention}


def make_gpt2_small(out: Path):
    """GPT-2-small's shape, random weights (as bench_cpu_forward.py makes it), saved once."""
    if (out / "model.safetensors").exists():
        return
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(out, safe_serialization=True)


def R(layer, comp, unit="pos", n=1, t="Vanilla"):
    return {"layer": layer, "component": comp, "unit": unit, "max_number_of_units": n,
            "intervention_type": TYPES[t]}


class Gen:
    def __init__(self, seed, V):
        self.g = torch.Generator().manual_seed(seed)
        self.V = V

    def ids(self, B, T):
        return {"input_ids": torch.randint(0, self.V, (B, T), generator=self.g)}

    def rows(self, B, U, n):
        """B rows of U distinct ints from range(n)"""
        return [torch.randperm(n, generator=self.g)[:U].tolist() for _ in range(B)]


def cases(V, B=8, T=32, L=12, H=12):
    g = Gen(0, V)
    out = []
    base, src = g.ids(B, T), g.ids(B, T)
    out.append(dict(name="vanilla_block_output_L6", desc="Vanilla, block_output L6, 1 position",
                    reps=[R(6, "block_output")], base=base, sources=[src],
                    ul={"sources->base": ([g.rows(B, 1, T)], [g.rows(B, 1, T)])}))
    base, src = g.ids(B, T), g.ids(B, T)
    out.append(dict(name="addition_mlp_output_3pos", desc="Addition, mlp_output L6, 3 positions",
                    reps=[R(6, "mlp_output", n=3, t="Addition")], base=base, sources=[src],
                    ul={"sources->base": ([g.rows(B, 3, T)], [g.rows(B, 3, T)])}))
    base, src = g.ids(B, T), g.ids(B, T)
    out.append(dict(name="hpos_head_attention_value_output",
                    desc="Vanilla h.pos, head_attention_value_output L6, 2 heads x 2 positions",
                    reps=[R(6, "head_attention_value_output", unit="h.pos", n=2)], base=base,
                    sources=[src],
                    ul={"sources->base": ([[g.rows(B, 2, H), g.rows(B, 2, T)]],
                                          [[g.rows(B, 2, H), g.rows(B, 2, T)]])}))
    base = g.ids(B, T)
    out.append(dict(name="collect_block_output_all_layers",
                    desc=f"Collect, block_output at all {L} layers, position {T - 1}, no source",
                    reps=[R(l, "block_output", t="Collect") for l in range(L)], base=base,
                    sources=None, ul={"sources->base": (None, [[[T - 1]] * B] * L)}))
    base, s0, s1 = g.ids(B, T), g.ids(B, T), g.ids(B, T)
    out.append(dict(name="serial_block_output_L3_L9",
                    desc="serial, 2 sources: block_output L3 then L9", mode="serial",
                    reps=[R(3, "block_output"), R(9, "block_output")], base=base,
                    sources=[s0, s1],
                    ul={"source_0->source_1": ([g.rows(B, 1, T)], [g.rows(B, 1, T)]),
                        "source_1->base": ([g.rows(B, 1, T)], [g.rows(B, 1, T)])}))
    return out


def jsonify(x):
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, dict):
        return {k: jsonify(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonify(v) for v in x]
    return x


def pyvene_forwards(c):
    """forwards pyvene runs for the request: one per source group given, plus the base"""
    return 1 + (0 if c["sources"] is None else sum(s is not None for s in c["sources"]))


def run_pyvene(model, c, iters):
    ivm = pv.IntervenableModel(pv.IntervenableConfig(c["reps"], mode=c.get("mode", "parallel")),
                               model)  # fresh, outside the timed loop

    def call():
        srcs = None if c["sources"] is None else [dict(s) for s in c["sources"]]
        return ivm(dict(c["base"]), srcs, copy.deepcopy(c["ul"]), return_dict=True)

    times = []
    with torch.no_grad():
        first = call()  # warm-up
        for _ in range(iters):
            t0 = time.perf_counter()
            res = call()
            times.append(time.perf_counter() - t0)
    assert not ivm.use_fast  # explicit nested locations (docs/pyvene_semantics.md §7.1)
    # the reused IntervenableModel must give the same answer every call
    assert torch.equal(first.intervened_outputs.logits, res.intervened_outputs.logits)
    return ivm, res, [1e3 * t for t in times]


def run_cvene(exe, model_dir, case_dir, iters, threads, env):
    dump = case_dir / "cvene_out.f32"
    r = subprocess.run([str(exe), str(model_dir), str(case_dir / "config.json"),
                        str(case_dir / "inputs.json"), str(iters), str(threads), str(dump)],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"cvene_bench_interventions failed on {case_dir.name}:\n{r.stderr}")
    info = json.loads(r.stdout.strip().splitlines()[-1])
    flat = np.fromfile(dump, dtype="<f4")
    n = info["B"] * info["T"] * info["V"]
    logits = flat[:n].reshape(info["B"], info["T"], info["V"])
    coll, off = [], n
    for shape in info["collected"]:
        k = int(np.prod(shape))
        coll.append(flat[off:off + k].reshape(shape))
        off += k
    assert off == flat.size
    return info, logits, coll


def rel_diff(a, b):
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b)) / np.max(np.abs(b)))


def overhead(exe, model_dir, B, T, iters, threads, env):
    r = subprocess.run([str(exe), "--overhead", str(model_dir), str(B), str(T), str(iters),
                        str(threads)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"cvene_bench_interventions --overhead failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--iters", type=int, default=3, help="timed calls per block (after a warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating cvene/pyvene blocks per case")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters-a", type=int, default=7, help="(a): iterations, GPT-2-small")
    ap.add_argument("--iters-b", type=int, default=2000, help="(b): iterations, tiny model")
    ap.add_argument("--repeats", type=int, default=3, help="(a), (b): repeats, median reported")
    args = ap.parse_args()
    exe = Path(args.build) / "cvene_bench_interventions"
    if not exe.exists():
        raise SystemExit(f"{exe} not found: build first (cmake --build {args.build})")
    t_start = time.time()
    load0 = os.getloadavg()[0]
    out = ROOT / "bench" / "out" / "gpt2-small"
    make_gpt2_small(out)
    torch.set_num_threads(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    model = GPT2LMHeadModel.from_pretrained(out, attn_implementation="eager").eval()
    assert model.config._attn_implementation == "eager"
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = model.config
    V = cfg.vocab_size
    work = ROOT / "bench" / "out" / "interventions"
    rows = []
    for i, c in enumerate(cases(cfg.vocab_size, L=cfg.n_layer, H=cfg.n_head), 1):
        case_dir = work / f"{i}_{c['name']}"
        case_dir.mkdir(parents=True, exist_ok=True)
        # pyvene first: its own save() is the config cvene reads. Then alternate cvene and
        # pyvene blocks of --iters calls (--rounds times) so both see the same machine load.
        c_times, p_times = [], []
        for rnd in range(args.rounds):
            ivm, res, pt = run_pyvene(model, c, args.iters)
            p_times += pt
            if rnd == 0:
                with tempfile.TemporaryDirectory() as td:
                    ivm.save(os.path.join(td, "ivm"))
                    (case_dir / "config.json").write_bytes((Path(td) / "ivm" / "config.json").read_bytes())
                inputs = {"base": jsonify(c["base"]),
                          "sources": None if c["sources"] is None else [jsonify(s) for s in c["sources"]],
                          "unit_locations": jsonify(c["ul"])}
                (case_dir / "inputs.json").write_text(json.dumps(inputs) + "\n")
            del ivm
            info, logits, coll = run_cvene(exe, out, case_dir, args.iters, args.threads, env)
            c_times += info["ms_all"]
        c_ms, pv_ms = statistics.median(c_times), statistics.median(p_times)
        ref = res.intervened_outputs.logits.float().numpy()
        assert logits.shape == ref.shape, (logits.shape, ref.shape)
        diff = rel_diff(logits, ref)
        pcoll = res.collected_activations or []
        assert len(coll) == len(pcoll), (len(coll), len(pcoll))
        for a, b in zip(coll, pcoll):
            assert a.shape == tuple(b.shape), (a.shape, b.shape)
            diff = max(diff, rel_diff(a, b.float().numpy()))
        ok = diff <= TOL
        rows.append(dict(i=i, desc=c["desc"], c_ms=c_ms, p_ms=pv_ms, diff=diff, ok=ok,
                         passes=info["passes"], pv_passes=pyvene_forwards(c), ncoll=len(coll)))
        print(f"{i}. {c['desc']}: cvene {c_ms:.1f} ms ({info['passes']} pass(es)), "
              f"pyvene {pv_ms:.1f} ms, speed-up {pv_ms / c_ms:.2f}x, "
              f"max rel diff {diff:.2e} {'ok' if ok else 'FAIL'}", flush=True)
    del model

    def med_overhead(model_dir, B, T, iters):
        runs = [overhead(exe, model_dir, B, T, iters, args.threads, env) for _ in range(args.repeats)]
        key = lambda r: r["overhead_us"]
        return sorted(runs, key=key)[len(runs) // 2], runs

    pcts = lambda rs, k="overhead_pct": ", ".join(f"{r[k]:+.2f}%" for r in rs)
    uss = lambda rs: ", ".join(f"{r['overhead_us']:+.1f}" for r in rs)

    def show(tag, r, rs):
        print(f"{tag}: full-logits forward {r['full_ms_median']:.3f} ms, base-logits forward "
              f"{r['forward_ms_median']:.3f} ms, cvene_run {r['run_ms_median']:.3f} ms -> overhead "
              f"{r['overhead_pct']:+.2f}% / {r['overhead_us']:+.1f} us (repeats: {pcts(rs)} / {uss(rs)}), "
              f"vs full {r['vs_full_pct']:+.2f}%; page faults/call {r['forward_page_faults']:.0f} vs "
              f"{r['run_page_faults']:.0f}; fresh result buffer +{r['fresh_result_extra_ms']:.3f} ms", flush=True)

    oa, oa_all = med_overhead(out, 8, 32, args.iters_a)
    show("(a) GPT-2-small 8x32", oa, oa_all)
    ob, ob_all = med_overhead(TINY, 1, 8, args.iters_b)
    show("(b) tiny 1x8", ob, ob_all)
    ob8, ob8_all = med_overhead(TINY, 8, 32, args.iters_b // 5)
    show("(b') tiny 8x32", ob8, ob8_all)

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    met = lambda ok: "met" if ok else "**not met**"
    a_ok, b_ok = oa["overhead_pct"] <= 5.0, ob["overhead_us"] <= 20.0
    body = [
        "## Interventions: cvene vs pyvene on CPU, GPT-2-small (124M, random weights)",
        "",
        f"Machine: {cpu}, {os.cpu_count()} cores, {args.threads} threads for both "
        f"(OMP_NUM_THREADS / torch.set_num_threads); torch {torch.__version__}, "
        f"transformers {transformers.__version__}, pyvene {getattr(pv, '__version__', '0.1.8')}; "
        f"1-min load average {load0:.1f} at the start, {load:.1f} at the end (the machine is shared: medians); "
        f"{time.strftime('%Y-%m-%d')}, {time.time() - t_start:.0f} s in all.",
        f"Command: `{Path(sys.executable).as_posix()} bench/bench_interventions.py --iters {args.iters} "
        f"--rounds {args.rounds} --threads {args.threads}` (after `cmake -S . -B build && cmake --build build`).",
        "",
        "Batch 8 x seq 32 (base and every source). pyvene: model loaded with "
        "`attn_implementation=\"eager\"` (pyvene's attention-level hooks need it; with sdpa they never fire), "
        "a fresh `IntervenableModel` built outside the timed loop, explicit nested unit_locations, "
        f"one warm-up call, then {args.iters} timed calls under `torch.no_grad()`. cvene: "
        "`build/cvene_bench_interventions` with pyvene's own saved config.json and the request JSON "
        "(bench/out/interventions/), parsed once, one warm-up, then "
        f"{args.iters} timed `cvene_run` calls. The two alternate, {args.rounds} blocks each per case, and the "
        f"table shows the median of all {args.rounds * args.iters} timed calls of each. Max rel diff = "
        "max |cvene - pyvene| / max |pyvene| over the logits (and case 4's 12 collected tensors); tolerance 1e-4. "
        "Passes: forwards run by cvene (its plan batches same-length sources with the base into one pass and "
        "stops source passes at their last site) / by pyvene (each source group, then the base).",
        "",
        "| case | cvene ms | pyvene ms | speed-up | max rel diff | passes (cvene / pyvene) |",
        "|---|---|---|---|---|---|",
    ] + [f"| {r['i']}. {r['desc']} | {r['c_ms']:.1f} | {r['p_ms']:.1f} | {r['p_ms'] / r['c_ms']:.2f}x | "
         f"{r['diff']:.1e}{'' if r['ok'] else ' **FAIL**'} | {r['passes']} / {r['pv_passes']} |" for r in rows] + [
        "",
        "Overheads (`cvene_bench_interventions --overhead MODEL B T ITERS 2`): a one-position Vanilla "
        "interchange at block_output of the middle layer with one source of the base's length, so cvene_run's "
        "plan is one batched pass over the source + base rows (2B, T) that computes logits for the base rows "
        "only. Each iteration times, in rotating order, (i) a plain `cvene_forward` of that batch with logits "
        "for all 2B rows, (ii) a plain `cvene_forward` of that batch with logits for the base rows only "
        "(`logits_row0 = B`: the forward the plan runs), both into buffers reused across iterations, and "
        "(iii) `cvene_run` (config parsed and request built once outside the loop; `cvene_result_free` "
        f"untimed). Overhead = cvene_run - (ii); {args.repeats} repeats, the median repeat shown:",
        "",
        f"- (a) GPT-2-small, 8 x 32, layer {oa['layer']}: (ii) {oa['forward_ms_median']:.1f} ms, cvene_run "
        f"{oa['run_ms_median']:.1f} ms ({oa['passes']} pass) -> overhead **{oa['overhead_pct']:+.2f}%** "
        f"(target <= 5%: {met(a_ok)}; repeats {pcts(oa_all)}; {args.iters_a} iterations each). Against (i), the "
        f"plain forward with every row's logits ({oa['full_ms_median']:.1f} ms), cvene_run is "
        f"{oa['vs_full_pct']:+.2f}% (repeats {pcts(oa_all, 'vs_full_pct')}): it skips the source rows' lm_head. "
        f"Minor page faults per call: (ii) {oa['forward_page_faults']:.0f}, cvene_run "
        f"{oa['run_page_faults']:.0f}: the result's fresh (B, T, V) logits buffer "
        f"({8 * 32 * V * 4 / 2**20:.0f} MiB, "
        "which glibc maps afresh on every malloc of that size) touched in 4 KiB pages, the one piece of extra "
        "work that grows with V. Measured alone and single-threaded, malloc + first write of such a buffer costs "
        f"{oa['fresh_result_extra_ms']:.1f} ms more than the same writes into a reused one; the run's whole "
        f"overhead is {oa['run_ms_median'] - oa['forward_ms_median']:.1f} ms.",
        f"- (b) tiny model (tests/fixtures/gpt2/small/model: 2 layers, n_embd 64, vocab 320), 1 x 8, layer "
        f"{ob['layer']}: (ii) {1e3 * ob['forward_ms_median']:.1f} us, cvene_run "
        f"{1e3 * ob['run_ms_median']:.1f} us -> per-request overhead **{ob['overhead_us']:+.1f} us** "
        f"(target <= 20 us: {met(b_ok)}; repeats {uss(ob_all)}; {args.iters_b} iterations each).",
        f"- (b') the same at 8 x 32: (ii) {1e3 * ob8['forward_ms_median']:.1f} us, cvene_run "
        f"{1e3 * ob8['run_ms_median']:.1f} us -> {ob8['overhead_us']:+.1f} us "
        f"(repeats {uss(ob8_all)}; {args.iters_b // 5} iterations each; page faults per call: (ii) "
        f"{ob8['forward_page_faults']:.0f}, cvene_run {ob8['run_page_faults']:.0f}). Per-request work that "
        "grows with B x T: assembling the (2B, T) ids and mask, gathering/scattering the units, a fresh "
        "(B, T, V) result buffer.",
    ]
    write_section(ROOT / "bench" / "RESULTS.md", "interventions", "\n".join(body))
    print(f"wrote bench/RESULTS.md section 'interventions' ({time.time() - t_start:.0f} s)")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
