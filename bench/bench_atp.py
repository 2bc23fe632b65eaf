"""Attribution patching (`cvene sweep --method atp`) against cvene's exact fast sweep, in one run:
sites/s of each over every layer x position (block_output) and every layer x head x position
(head_attention_value_output --head all), and the speed-up (the issue expects >= 10x on GPT-2-small
shapes); then how well the estimate ranks the sites on the shipped demo model (a trained model:
interchanges of a subject's favourite colour), reported, not gated: Spearman's rank correlation
of estimated and exact changes over all sites, the overlap of the top 10, and the sign agreement.

    python3 bench/bench_atp.py [--build build] [--threads 2]

Needs only a built cvene (no Python packages). The GPT-2-small-shaped model is bench/out/gpt2-small
(random weights; bench/bench_cpu_forward.py writes it): used for speed only.
"""
import argparse, json, os, re, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from results import write_section  # noqa: E402


def sweep(cvene, args, out, threads):
    """Run `cvene sweep`; (its own elapsed seconds, the JSON document), or None when refused."""
    r = subprocess.run([cvene, "sweep", *args, "--threads", str(threads), "--out", out], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    m = re.search(r"forward passes, ([0-9.]+) s;", r.stdout)
    return float(m.group(1)), json.load(open(out + ".json"))


def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r


def spearman(x, y):
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return sxy / (sxx * syy) ** 0.5 if sxx and syy else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=3, help="timed runs per row (median)")
    a = ap.parse_args()
    cvene = f"{a.build}/cvene"
    tmp = tempfile.mkdtemp()
    load_before = os.getloadavg()[0]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), os.uname().machine)
    # speed: random prompts of T tokens
    models = [("demo-gpt2 (8 x 96, 4 heads)", ROOT / "assets" / "demo-gpt2", 32)]
    if (ROOT / "bench" / "out" / "gpt2-small" / "model.safetensors").exists():
        models.append(("GPT-2-small shape (12 x 768, 12 heads)", ROOT / "bench" / "out" / "gpt2-small", 16))
    speed = []
    for name, path, T in models:
        base = ",".join(str((7919 * t + 13) % 90) for t in range(T))
        src = ",".join(str((104729 * t + 7) % 90) for t in range(T))
        common = ["--model", str(path), "--base-ids", base, "--source-ids", src, "--metric", "logit-diff",
                  "--token-id", "5", "--token-b-id", "17"]
        for comp in (["--component", "block_output"], ["--component", "head_attention_value_output", "--head", "all"]):
            t = {}
            for method in ("exact", "atp"):
                times = []
                for _ in range(a.runs):
                    s, doc = sweep(cvene, common + comp + ["--method", method], f"{tmp}/s", a.threads)
                    times.append(s)
                t[method] = sorted(times)[len(times) // 2]
                sites = sum(len(r) for r in doc["scores"])
            speed.append((name, comp[1], sites, t["exact"], t["atp"]))
            print(f"{name} {comp[1]}: {sites} sites, exact {t['exact']:.3f} s, atp {t['atp']:.3f} s, "
                  f"{t['exact'] / t['atp']:.1f}x", flush=True)
    # agreement on the demo model: colour interchanges
    world = json.load(open(ROOT / "assets" / "demo-gpt2" / "world.json"))
    subj = world["subjects"]
    # pairs spread over the world (subject i with the next subject of another colour), plus the README's
    # Triklol -> Zenul, where residual-stream estimates saturate
    byname = {s["name"]: s for s in subj}
    pairs = [(byname[a], byname[b]) for a, b in (("Judge Triklol", "Sister Zenul"),) if a in byname and b in byname]
    for i in range(0, len(subj), max(1, len(subj) // 8)):
        j = next((k for k in range(i + 1, len(subj)) if subj[k]["colour"] != subj[i]["colour"]), None)
        if j is not None:
            pairs.append((subj[i], subj[j]))
    agree = []
    for A, B in pairs:
        if len(agree) >= 16:
            break
        common = ["--model", str(ROOT / "assets" / "demo-gpt2"), "--base", f"Today, {A['name']}'s favourite colour is",
                  "--source", f"Today, {B['name']}'s favourite colour is", "--metric", "logit-diff",
                  "--token", " " + B["colour"], "--token-b", " " + A["colour"]]
        for comp in (["--component", "block_output"], ["--component", "head_attention_value_output", "--head", "all"]):
            ex = sweep(cvene, common + comp, f"{tmp}/e", a.threads)
            at = sweep(cvene, common + comp + ["--method", "atp"], f"{tmp}/a", a.threads)
            if not ex or not at:
                break  # prompts of different token lengths: skipped
            b = ex[1]["base_score"]
            e = [v - b for row in ex[1]["scores"] for v in row]
            s = [v - b for row in at[1]["scores"] for v in row]
            top = lambda v: set(sorted(range(len(v)), key=lambda k: -abs(v[k]))[:10])
            big = [k for k in range(len(e)) if abs(e[k]) > 0.01 * max(abs(x) for x in e)]
            agree.append((f"{A['name']} -> {B['name']}", comp[1], spearman(s, e), len(top(e) & top(s)),
                          sum((s[k] > 0) == (e[k] > 0) for k in big) / max(1, len(big)), b, ex[1]["source_score"]))
            print(agree[-1], flush=True)
    lines = [
        "## Attribution patching (`cvene sweep --method atp`) against the exact fast sweep",
        "",
        f"Machine: {cpu}, {a.threads} threads, {os.cpu_count()} CPUs, load average {load_before:.2f} "
        f"before; {time.strftime('%Y-%m-%d')}. Command: `python3 bench/bench_atp.py --threads {a.threads}`. Each time "
        f"is `cvene sweep`'s own elapsed time (model loaded, prompts tokenised before it), median of {a.runs}; "
        "logit difference of two fixed tokens, random prompts. AtP: one source forward, one base forward and "
        "one backward whatever the number of sites; exact: cvene's fast path (source and base cached, sites "
        "packed 8 to a forward from the patched layer up).",
        "",
        "| model | component | sites | exact s | exact sites/s | AtP s | AtP sites/s | AtP speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ] + [f"| {n} | {c} | {k} | {e:.3f} | {k / e:.0f} | {t:.3f} | {k / t:.0f} | {e / t:.0f}x |"
         for n, c, k, e, t in speed] + [
        "",
        "How well the estimate ranks the sites (reported, not gated), on the shipped demo model: base \"Today, A's "
        "favourite colour is\", source the same with B (a subject of another colour, same token count), metric "
        "logit[B's colour] - logit[A's colour]; changes are from the base score. Spearman over all sites; top-10 "
        "overlap of the largest |change|; sign agreement over the sites whose exact change is above 1% of the "
        "largest.",
        "",
        "| pair | component | Spearman | top-10 overlap | sign agreement | base | source |",
        "|---|---|---|---|---|---|---|",
    ] + [f"| {p} | {c} | {r:.2f} | {o}/10 | {sg:.0%} | {b:.2f} | {s:.2f} |" for p, c, r, o, sg, b, s in agree]
    write_section(ROOT / "bench" / "RESULTS.md", "atp", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
