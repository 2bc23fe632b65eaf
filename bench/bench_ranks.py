"""Ranks (issue #15): one activation-patching sweep on 1 process against the same sweep split among 2
and 3 MPI ranks (`mpirun -np N cvene sweep`), every process on one thread, in one run; the scores must
be equal (bit for bit: the JSON files are compared). Reports wall-clock seconds of the whole command
(model load and MPI start included) and cvene's own elapsed time of the sweep (rank 0's: from the
first forward to the last row received), median of --repeat, and the speed-up over 1 process.

    python3 bench/bench_ranks.py [--build build] [--model bench/out/gpt2-small] [--seq 32] [--repeat 3]

The issue's target on this 2-core machine: 2 ranks x 1 thread >= 1.8x 1 rank x 1 thread. Needs only a
built cvene and mpirun (OpenMPI). bench/bench_cpu_forward.py writes the GPT-2-small-shaped model.
"""
import argparse, json, os, random, re, statistics, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from results import MPIRUN as MPI, cpu_name, ranks_env, run_timed, write_section  # noqa: E402


def run(cmd, env):
    wall, out = run_timed(cmd, env)
    m = re.search(r"forward passes, ([0-9.]+) s;", out)
    return wall, float(m.group(1)), out



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--model", default=str(ROOT / "bench" / "out" / "gpt2-small"))
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ranks", default="2,3")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    cvene = str(Path(a.build) / "cvene")
    cfg = json.load(open(Path(a.model) / "config.json"))
    rng = random.Random(0)
    base = [rng.randrange(cfg["vocab_size"]) for _ in range(a.seq)]
    src = list(base)
    for t in range(0, a.seq, 3):
        src[t] = rng.randrange(cfg["vocab_size"])
    env = ranks_env()
    load = os.getloadavg()[0]
    cpu = cpu_name()
    tmp = tempfile.mkdtemp()
    args = ["sweep", "--model", a.model, "--base-ids", ",".join(map(str, base)), "--source-ids",
            ",".join(map(str, src)), "--metric", "kl", "--threads", "1"]
    setups = [("1 process", [], 1)] + [(f"{n} ranks (mpirun -np {n})", MPI + ["-np", str(n)], n)
                                       for n in map(int, a.ranks.split(","))]
    res = {}
    for name, pre, n in setups:
        walls, own = [], []
        for k in range(a.repeat):
            out = f"{tmp}/r{n}_{k}"
            w, s, _ = run(pre + [cvene] + args + ["--out", out], env)
            walls.append(w), own.append(s)
        res[name] = (statistics.median(walls), statistics.median(own), n)
        print(f"{name}: wall {res[name][0]:.2f} s, sweep {res[name][1]:.2f} s", flush=True)
    ref = open(f"{tmp}/r1_0.json", "rb").read()
    for name, pre, n in setups[1:]:
        if open(f"{tmp}/r{n}_0.json", "rb").read() != ref:
            sys.exit(f"{name}: the scores differ from 1 process")
    w1, s1, _ = res["1 process"]
    L = cfg.get("n_layer", cfg.get("num_hidden_layers"))
    rows = [f"| {name} | {n} | {w:.2f} | {w1 / w:.2f}x | {s:.2f} | {s1 / s:.2f}x | {100 * s1 / s / n:.0f}% |"
            for name, (w, s, n) in res.items()]
    body = (f"## Ranks: one sweep split among MPI ranks (`mpirun -np N cvene sweep`)\n\n"
            f"Machine: {cpu}, {os.cpu_count()} CPUs, every process on 1 thread "
            f"(OMP_NUM_THREADS=1, --threads 1), load average {load:.2f} before; OpenMPI shared-memory transport; "
            f"{time.strftime('%Y-%m-%d')}. Command: `python3 bench/bench_ranks.py`. Sweep: {Path(a.model).name} "
            f"({L} layers, random weights), block_output at every layer x {a.seq} positions, KL metric, exact fast "
            f"path; layers split by cvene_sweep_split's cost model. The scores of every run are equal to 1 "
            f"process's (JSON files compared byte for byte). Median of {a.repeat}. Wall: the whole command (model load and MPI start "
            f"included); sweep: cvene's own elapsed time (rank 0: first forward to last row received). Efficiency: "
            f"sweep speed-up / ranks.\n\n"
            "| setup | ranks | wall s | wall speed-up | sweep s | sweep speed-up | efficiency |\n|---|---|---|---|---|---|---|\n"
            + "\n".join(rows))
    print(body)
    if not a.no_write:
        write_section(ROOT / "bench" / "RESULTS.md", "ranks", body)


if __name__ == "__main__":
    main()
