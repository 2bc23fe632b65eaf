"""`cvene bench sweep`'s projection against the real full sweep, on the shipped demo model and
(when bench/out/gpt2-small exists: bench/bench_cpu_forward.py writes it) a GPT-2-small-shaped
model. Each row is one `cvene bench sweep --full` run: the fast path timed on --sample-layers
layers and the top two, the line through the lower layers' times summed over them, plus the top
two as measured and the source and base runs, against the full layers x positions sweep timed in
the same process (median of 3). The issue's target: within 30%. Writes the table into bench/RESULTS.md.

    python3 bench/bench_projection.py [--build build] [--threads 2] [--runs 3]

Needs only a built cvene (no Python packages).
"""
import argparse, json, os, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from results import write_section  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=3, help="bench runs per model (each: its own projection and full sweep)")
    args = ap.parse_args()
    models = [("demo-gpt2 (8 x 96)", ROOT / "assets" / "demo-gpt2", 32)]
    if (ROOT / "bench" / "out" / "gpt2-small" / "model.safetensors").exists():
        models.append(("GPT-2-small shape (12 x 768)", ROOT / "bench" / "out" / "gpt2-small", 16))
    rows, doc = [], None
    for name, path, T in models:
        for run in range(args.runs):
            cmd = [f"{args.build}/cvene", "bench", "sweep", "--model", str(path), "--seq", str(T), "--full",
                   "--threads", str(args.threads), "--repeat", "5", "--seed", str(run), "--json", "-"]
            r = subprocess.run(cmd, capture_output=True, text=True, check=True)
            doc = json.loads(r.stdout)
            p, d = doc["projection"], doc["derived"]
            rows.append((name, d["layers"], d["positions"], d["sampled_layers"], p["full_sweep_seconds"],
                         p["full_sweep_measured_seconds"], p["projection_error_pct"], d.get("speedup_fast_over_naive"),
                         doc["machine"]["load_avg_before"][0]))
            print(f"{name} seed {run}: projected {p['full_sweep_seconds']:.3f} s, measured "
                  f"{p['full_sweep_measured_seconds']:.3f} s, error {p['projection_error_pct']:+.1f}%")
    dev = doc["device"]
    worst = max(abs(r[6]) for r in rows)
    table = [
        "## `cvene bench sweep`: projected against measured full sweeps",
        "",
        f"Machine: {dev['name']}, {dev['threads']} threads, {doc['machine']['cpus']} CPUs; {time.strftime('%Y-%m-%d')}. "
        f"Command: `python3 bench/bench_projection.py --threads {args.threads}` (one `cvene bench sweep --full` per "
        f"row, random prompts from --seed; block_output, logit difference). The projection times the source and base "
        f"runs and {rows[0][3]} sampled layers (median of 5 runs after one warm-up each; the top two layers "
        f"always among them), fits a line through the times of the layers below the top two and sums it over "
        f"them, adding the top two as measured; the measured sweep is the median of 3 full `cvene_sweep` calls "
        f"in the same process. Target: within 30%. Worst here: {worst:.1f}%.",
        "",
        "| model | layers x positions | sampled layers | projected s | measured s | error | fast / naive | load avg |",
        "|---|---|---|---|---|---|---|---|",
    ] + [f"| {n} | {L} x {T} | {s} | {pr:.3f} | {me:.3f} | {e:+.1f}% | {sp:.1f}x | {la:.2f} |"
         for n, L, T, s, pr, me, e, sp, la in rows]
    write_section(ROOT / "bench" / "RESULTS.md", "bench-projection", "\n".join(table))
    return 0 if worst <= 30 else 1


if __name__ == "__main__":
    sys.exit(main())
