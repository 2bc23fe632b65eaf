"""GPU forward: cvene's CUDA backend vs transformers on torch, same GPU, same batch, f32 (and bf16).

    python3 bench/bench_gpu_forward.py --bin DIR_WITH_cvene_bench_forward [--out DIR]

Run by bench/gpu_check.sh on a lent GPU machine (python3 there has torch and transformers).
Models: GPT-2-small's shape (GPT2Config(), 124M) and Pythia-160M's (GPTNeoXConfig), random
weights (seed 0) built on the GPU and saved with save_pretrained to a temporary directory,
which cvene loads. Shapes: batch 1 x 128 and 32 x 128.

Timing, both sides producing the same thing, (B, T, V) f32 logits in host memory:
  cvene         cvene_bench_forward DIR B T ITERS 0 cuda --ids FILE: wall clock per
                cvene_forward, which ends with the logits copy to the host (it synchronizes
                the backend's stream); median of ITERS after one warm-up.
  transformers  model(ids, use_cache=False).logits.cpu() under torch.no_grad(), wall clock
                after torch.cuda.synchronize(); median of ITERS after two warm-ups. Also
                shown: the same forward with the logits left on the GPU, timed with CUDA
                events (what transformers costs when the caller stays on the device).
TF32 is off in torch (cvene's cuBLAS GEMMs are plain f32), so the logits must agree:
max |cvene - torch| / max |torch| <= 1e-4 over the whole (B, T, V) tensor, per shape.
Targets: speed-up (host-logits medians) >= 1.5x at batch 1, >= 1.0x at batch 32.

bf16 rows (unless --no-bf16): cvene in bf16 (cvene_bench_forward --dtype bf16: compute_dtype =
activation_dtype = bf16, i.e. bf16 weights, parameters and activations, f32 accumulation, bf16
logits widened to f32) against the same transformers model converted with .to(torch.bfloat16),
timed the same ways (transformers' host copy is of its bf16 logits: half the bytes of cvene's
f32 ones). Parity: cvene's rel diff from the f32 torch logits (relative to max |ref|) must be
<= max(TOL_BF16 = 1e-2, 1.5 x transformers' own bf16 rel diff from them): a bf16 run is as
far from f32 as bf16 makes it, and cvene's may not be much farther than transformers'
(tests/test_lowp.cpp measures the two 16-bit runs against each other on fixtures). The rel
diff between cvene's and transformers' bf16 logits is printed too.

Exit status: 0 all parity checks passed (speed targets are reported, not enforced),
1 a parity check or a run failed, 3 skipped (no torch / transformers, or no CUDA device).
The last line printed is `RESULT <json>` for gpu_check.sh's summary; --out DIR also gets
forward.json and forward.md (a table for bench/RESULTS.md).

    python3 bench/bench_gpu_forward.py --bin build/ --device cpu --tiny
is a smoke test of this script on a machine without a GPU (tiny models, cvene on the CPU).
"""
import argparse, copy, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

TOL = 1e-4
TOL_BF16 = 1e-2
TARGETS = {1: 1.5, 32: 1.0}
PYTHIA_160M = dict(vocab_size=50304, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                   intermediate_size=3072, rotary_pct=0.25, rotary_emb_base=10000, max_position_embeddings=2048,
                   use_parallel_residual=True, tie_word_embeddings=False)
TINY = {"gpt2-small": dict(n_layer=2, n_embd=64, n_head=4, vocab_size=512, n_positions=256),
        "pythia-160m": dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=256, rotary_pct=0.25, rotary_emb_base=10000,
                            max_position_embeddings=256, use_parallel_residual=True, tie_word_embeddings=False)}


def result_line(status, rows, note=""):
    print("RESULT " + json.dumps({"status": status, "note": note, "rows": rows}), flush=True)


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def make_models(torch, transformers, tiny):
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM
    return {
        "gpt2-small": (GPT2LMHeadModel, GPT2Config(**(TINY["gpt2-small"] if tiny else {}))),
        "pythia-160m": (GPTNeoXForCausalLM, GPTNeoXConfig(**(TINY["pythia-160m"] if tiny else PYTHIA_160M))),
    }


def save_for_cvene(model, cfg, out: Path):
    """save_pretrained, then make sure config.json names the rotary settings the way cvene reads
    them: transformers 5 moves rotary_pct / rotary_emb_base into rope_parameters."""
    model.save_pretrained(out, safe_serialization=True)
    path = out / "config.json"
    j = json.loads(path.read_text())
    added = []
    if j.get("model_type") == "gpt_neox":
        rp = j.get("rope_parameters") or {}
        if "rotary_pct" not in j:
            j["rotary_pct"] = rp.get("partial_rotary_factor", getattr(cfg, "rotary_pct", 0.25))
            added.append("rotary_pct")
        if "rotary_emb_base" not in j:
            j["rotary_emb_base"] = rp.get("rope_theta", getattr(cfg, "rotary_emb_base", 10000))
            added.append("rotary_emb_base")
        if j.get("rope_scaling") and (j["rope_scaling"].get("rope_type", j["rope_scaling"].get("type")) == "default"):
            j["rope_scaling"] = None  # the default rotary embedding, spelled as a scaling dict
            added.append("rope_scaling=null")
    if added:
        path.write_text(json.dumps(j, indent=2))
    return added


def no_tf32(torch):
    """Plain f32 matmuls in torch (already its default, precision "highest"). Through the legacy
    flag only: torch >= 2.9 deprecates it (a warning) but raises on a read through the legacy API
    after a write through the new fp32_precision one, which library code might do."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.backends.cuda.matmul.allow_tf32 = False
            return "TF32 off (matmul allow_tf32 = False)"
        except Exception as e:  # report, and let the parity check judge
            return f"could not turn TF32 off ({e})"


def run_cvene(bin_path, model_dir, ids_path, logits_path, B, T, iters, device, timeout, keep=0, dtype="f32",
              on_device=False):
    cmd = [str(bin_path), str(model_dir), str(B), str(T), str(iters), "0", device, "--ids", str(ids_path),
           "--logits-out", str(logits_path), "--dtype", dtype] + (["--keep", str(keep)] if keep else []) \
        + (["--logits-on-device"] if on_device else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"cvene_bench_forward failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def time_torch(torch, model, ids, iters, dev):
    """(median ms with logits copied to the host, median ms with logits left on the device)."""
    cuda = dev == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with torch.no_grad():
        for _ in range(2):
            model(ids, use_cache=False).logits.cpu()
        sync()
        host = []
        for _ in range(iters):
            t0 = time.perf_counter()
            model(ids, use_cache=False).logits.cpu()
            sync()
            host.append(1e3 * (time.perf_counter() - t0))
        dev_ms = []
        for _ in range(iters):
            if cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                model(ids, use_cache=False).logits
                b.record()
                b.synchronize()
                dev_ms.append(a.elapsed_time(b))
            else:
                t0 = time.perf_counter()
                model(ids, use_cache=False).logits
                dev_ms.append(1e3 * (time.perf_counter() - t0))
    return median(host), median(dev_ms)


def time_torch_last(torch, model, ids, iters, dev):
    """Median ms of a forward returning only the last position's logits to the host
    (transformers' logits_to_keep=1; num_logits_to_keep before transformers 4.50)."""
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    kw = None
    with torch.no_grad():
        for name in ("logits_to_keep", "num_logits_to_keep"):
            try:
                out = model(ids, use_cache=False, **{name: 1}).logits
            except TypeError:
                continue
            if out.shape[1] == 1:  # a model that swallows unknown keywords returns every position
                kw = {name: 1}
                break
        if kw is None:
            return None
        sync()
        ms = []
        for _ in range(iters):
            t0 = time.perf_counter()
            model(ids, use_cache=False, **kw).logits.cpu()
            sync()
            ms.append(1e3 * (time.perf_counter() - t0))
    return median(ms)


def rel_diff(got, ref):
    rel = ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
    return rel if rel == rel else float("inf")  # NaN -> inf


def bf16_row(torch, np, bench, mdir, ids_path, logits_path, model16, ids_dev, ref, B, T, iters, dev, timeout):
    """cvene compute_dtype bf16 vs the transformers model in bf16 on one batch (see the module doc)."""
    V = ref.shape[-1]
    c = run_cvene(bench, mdir, ids_path, logits_path, B, T, iters, dev, timeout, dtype="bf16")
    got = torch.from_numpy(np.fromfile(logits_path, dtype=np.float32)).to(dev).view_as(ref)
    rel = rel_diff(got, ref)
    t_host, t_dev = time_torch(torch, model16, ids_dev, iters, dev)
    with torch.no_grad():
        theirs = model16(ids_dev, use_cache=False).logits.float()
    rel_t = rel_diff(theirs, ref)
    rel_ct = rel_diff(got, theirs)
    tol = max(TOL_BF16, 1.5 * rel_t)
    k1 = run_cvene(bench, mdir, ids_path, logits_path, B, T, iters, dev, timeout, keep=1, dtype="bf16")
    got1 = torch.from_numpy(np.fromfile(logits_path, dtype=np.float32)).to(dev).view(B, 1, V)
    rel1 = rel_diff(got1, ref[:, -1:, :])
    rel1_t = rel_diff(theirs[:, -1:, :], ref[:, -1:, :])
    tol1 = max(TOL_BF16, 1.5 * rel1_t)
    t_last = time_torch_last(torch, model16, ids_dev, iters, dev)
    r = dict(cvene_ms=c["ms_median"], torch_ms=t_host, torch_dev_ms=t_dev, speedup=t_host / c["ms_median"],
             rel_diff=rel, torch_rel_diff=rel_t, rel_diff_vs_torch_bf16=rel_ct, rel_diff_last=rel1,
             cvene_last_ms=k1["ms_median"], torch_last_ms=t_last, parity=rel <= tol and rel1 <= tol1)
    print(f"  bf16 {B}x{T}: cvene {r['cvene_ms']:.2f} ms, transformers bf16 {t_host:.2f} ms (logits kept on the "
          f"GPU: {t_dev:.2f} ms), speed-up {r['speedup']:.2f}x; last position only: cvene {r['cvene_last_ms']:.2f} ms, "
          f"transformers " + (f"{t_last:.2f} ms" if t_last else "n/a")
          + f"; vs f32 torch: cvene {rel:.1e} / last {rel1:.1e} ({'ok' if r['parity'] else 'FAIL'} <= {tol:.1e} / "
          f"{tol1:.1e}), transformers bf16 {rel_t:.1e}; cvene vs transformers bf16 {rel_ct:.1e}", flush=True)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="directory holding cvene_bench_forward")
    ap.add_argument("--out", default=None, help="write forward.json / forward.md here")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--shapes", default="1x128,32x128")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: smoke test only")
    ap.add_argument("--tiny", action="store_true", help="tiny models (smoke test)")
    ap.add_argument("--step-timeout", type=float, default=120, help="seconds per cvene run")
    ap.add_argument("--no-bf16", action="store_true", help="f32 rows only")
    args = ap.parse_args()
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    try:
        import numpy as np
        import torch
        import transformers
    except ImportError as e:
        print(f"bench_gpu_forward: SKIP: {e}")
        result_line("SKIP", [], f"python has no {e.name}")
        return 3
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu_forward: SKIP: no CUDA device (torch.cuda.is_available() is False)")
        result_line("SKIP", [], "no CUDA device")
        return 3
    bench = Path(args.bin) / "cvene_bench_forward"
    if not bench.exists():
        print(f"bench_gpu_forward: FAIL: {bench} does not exist")
        result_line("FAIL", [], f"{bench} missing")
        return 1
    dev = args.device
    tf32 = no_tf32(torch)
    card = torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"
    print(f"bench_gpu_forward: {card}; torch {torch.__version__}, transformers {transformers.__version__}; "
          f"{tf32}; {args.iters} timed passes", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="cvene-gpu-fwd-"))
    rows, failed = [], False
    try:
        for name, (cls, cfg) in make_models(torch, transformers, args.tiny).items():
            t0 = time.time()
            torch.manual_seed(0)
            with torch.device(dev):
                model = cls(cfg).to(torch.float32).eval()
            mdir = tmp / name
            added = save_for_cvene(model, cfg, mdir)
            model16 = None if args.no_bf16 else copy.deepcopy(model).to(torch.bfloat16).eval()
            print(f"  {name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, built and saved in "
                  f"{time.time() - t0:.1f} s" + (f" (config.json: added {', '.join(added)})" if added else ""),
                  flush=True)
            V = model.config.vocab_size
            for B, T in shapes:
                row = {"model": name, "B": B, "T": T}
                try:
                    g = torch.Generator().manual_seed(1234 + B * 1000 + T)
                    ids = torch.randint(0, V, (B, T), generator=g, dtype=torch.int64)
                    ids_path, logits_path = tmp / "ids.bin", tmp / "logits.bin"
                    ids.to(torch.int32).numpy().tofile(ids_path)
                    iters = args.iters if B * T <= 512 else max(5, args.iters // 2)
                    c = run_cvene(bench, mdir, ids_path, logits_path, B, T, iters, dev, args.step_timeout)
                    ids_dev = ids.to(dev)
                    t_host, t_dev = time_torch(torch, model, ids_dev, iters, dev)
                    with torch.no_grad():
                        ref = model(ids_dev, use_cache=False).logits.float()
                    got = torch.from_numpy(np.fromfile(logits_path, dtype=np.float32)).to(dev)
                    if got.numel() != ref.numel():
                        raise RuntimeError(f"cvene wrote {got.numel()} logits, transformers {ref.numel()}")
                    got = got.view_as(ref)
                    rel = ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
                    if not (rel == rel):  # NaN
                        rel = float("inf")
                    speed = t_host / c["ms_median"]
                    row.update(cvene_ms=c["ms_median"], torch_ms=t_host, torch_dev_ms=t_dev, speedup=speed,
                               target=TARGETS.get(B), rel_diff=rel, parity=rel <= TOL, iters=iters,
                               cvene_tok_s=B * T / (c["ms_median"] / 1e3))
                    failed |= rel > TOL
                    # last-position logits only (cvene logits_to_keep = 1; transformers logits_to_keep = 1):
                    # what a patching metric reads; parity against the full forward's last position
                    k1 = run_cvene(bench, mdir, ids_path, logits_path, B, T, iters, dev, args.step_timeout, keep=1)
                    got1 = torch.from_numpy(np.fromfile(logits_path, dtype=np.float32)).to(dev).view(B, 1, V)
                    ref1 = ref[:, -1:, :]
                    rel1 = ((got1 - ref1).abs().max() / ref1.abs().max().clamp_min(1e-30)).item()
                    if not (rel1 == rel1):
                        rel1 = float("inf")
                    t_last = time_torch_last(torch, model, ids_dev, iters, dev)
                    # logits left on the device on both sides (issue #16): cvene_run_opts.logits_on_device
                    # against transformers' logits tensor on the GPU; parity of what was left there
                    kd = run_cvene(bench, mdir, ids_path, logits_path, B, T, iters, dev, args.step_timeout,
                                   on_device=True)
                    gotd = torch.from_numpy(np.fromfile(logits_path, dtype=np.float32)).to(dev).view_as(ref)
                    reld = ((gotd - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
                    row.update(cvene_dev_ms=kd["ms_median"], dev_speedup=t_dev / kd["ms_median"], rel_diff_dev=reld)
                    failed |= not (reld <= TOL)
                    print(f"  {name} {B}x{T}, logits left on the device: cvene {kd['ms_median']:.2f} ms, transformers "
                          f"{t_dev:.2f} ms ({t_dev / kd['ms_median']:.2f}x, target 1.0x at 32x128), max rel diff "
                          f"{reld:.2e}", flush=True)
                    row.update(cvene_last_ms=k1["ms_median"], torch_last_ms=t_last, rel_diff_last=rel1)
                    failed |= rel1 > TOL
                    tgt = TARGETS.get(B)
                    print(f"  {name} {B}x{T}: cvene {c['ms_median']:.2f} ms, transformers {t_host:.2f} ms "
                          f"(logits kept on the GPU: {t_dev:.2f} ms), speed-up {speed:.2f}x"
                          + (f" (target {tgt}x: {'met' if speed >= tgt else 'MISSED'})" if tgt else "")
                          + f", max rel diff {rel:.2e} ({'ok' if rel <= TOL else 'FAIL'} <= {TOL:g})", flush=True)
                    print(f"  {name} {B}x{T}, last-position logits only: cvene {k1['ms_median']:.2f} ms, transformers "
                          + (f"{t_last:.2f} ms ({t_last / k1['ms_median']:.2f}x)" if t_last else "n/a")
                          + f", max rel diff {rel1:.2e} ({'ok' if rel1 <= TOL else 'FAIL'})", flush=True)
                    if model16 is not None:
                        row["bf16"] = bf16_row(torch, np, bench, mdir, ids_path, logits_path, model16, ids_dev, ref,
                                               B, T, iters, dev, args.step_timeout)
                        failed |= not row["bf16"]["parity"]
                    del got, ref
                except Exception as e:  # keep going: report the other shapes
                    row.update(error=str(e)[-500:])
                    failed = True
                    print(f"  {name} {B}x{T}: FAIL: {e}", flush=True)
                rows.append(row)
            del model, model16
            if dev == "cuda":
                torch.cuda.empty_cache()
            shutil.rmtree(mdir, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if out:
        meta = {"card": card, "torch": torch.__version__, "transformers": transformers.__version__,
                "date": time.strftime("%Y-%m-%d"), "iters": args.iters, "tol": TOL}
        (out / "forward.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        lines = [f"Card: {card}; torch {torch.__version__}, transformers {transformers.__version__}; f32, TF32 off; "
                 f"medians; {meta['date']}. Both sides deliver (B, T, V) f32 logits in host memory.", "",
                 "| model | batch x seq | cvene ms | transformers ms | speed-up (target) | transformers ms, logits left on GPU | cvene ms, logits left on GPU (speed-up) | max rel diff | last-position logits only: cvene ms / transformers ms |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['model']} | {r['B']} x {r['T']} | error: {r['error'][:80]} | | | | | | |")
            else:
                lines.append(f"| {r['model']} | {r['B']} x {r['T']} | {r['cvene_ms']:.2f} | {r['torch_ms']:.2f} | "
                             f"{r['speedup']:.2f}x ({r['target']}x) | {r['torch_dev_ms']:.2f} | "
                             f"{r['cvene_dev_ms']:.2f} ({r['dev_speedup']:.2f}x) | {r['rel_diff']:.1e} | "
                             f"{r['cvene_last_ms']:.2f} / "
                             + (f"{r['torch_last_ms']:.2f} |" if r.get('torch_last_ms') else "n/a |"))
        b16 = [r for r in rows if "bf16" in r]
        if b16:
            lines += ["", "bf16: cvene --dtype bf16 (bf16 weights, parameters and activations, f32 accumulation; "
                      "activation_dtype) vs transformers .to(torch.bfloat16) (bf16 logits to the host); rel diff of "
                      f"each against the f32 torch logits (cvene must be <= max({TOL_BF16:g}, 1.5 x transformers'), "
                      "and of cvene's against transformers' bf16 logits.", "",
                      "| model | batch x seq | cvene ms | transformers ms | speed-up | transformers ms, logits left on GPU | cvene rel diff | transformers bf16 rel diff | cvene vs transformers bf16 | last-position logits only: cvene ms / transformers ms |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for r in b16:
                b = r["bf16"]
                lines.append(f"| {r['model']} | {r['B']} x {r['T']} | {b['cvene_ms']:.2f} | {b['torch_ms']:.2f} | "
                             f"{b['speedup']:.2f}x | {b['torch_dev_ms']:.2f} | {b['rel_diff']:.1e} | "
                             f"{b['torch_rel_diff']:.1e} | {b['rel_diff_vs_torch_bf16']:.1e} | {b['cvene_last_ms']:.2f} / "
                             + (f"{b['torch_last_ms']:.2f} |" if b.get('torch_last_ms') else "n/a |"))
        (out / "forward.md").write_text("\n".join(lines) + "\n")
    result_line("FAIL" if failed else "PASS", rows, card)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
