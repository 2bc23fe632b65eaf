"""Ranks (issue #15): data-parallel DAS training (`mpirun -np N cvene train --shards S`) against one process,
every process on one thread, in one run. One process runs whole batches (the default) and with the same
--shards as the ranks; the ranks' trained weights must equal the latter's byte for byte (the safetensors
files are compared). Reports wall-clock seconds of the whole command and cvene's own training time
("N steps in T s": rank 0's, the frozen caches included), median of --repeat.

    python3 bench/bench_ranks_train.py [--build build] [--model bench/out/gpt2-small] [--repeat 3]

Needs a built cvene and mpirun (OpenMPI); bench/bench_cpu_forward.py writes the GPT-2-small-shaped model.
"""
import argparse, filecmp, json, os, random, re, statistics, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from results import MPIRUN as MPI, cpu_name, ranks_env, run_timed, write_section  # noqa: E402


def run(cmd, env):
    wall, out = run_timed(cmd, env)
    m = re.search(r"(\d+) steps in ([0-9.]+) s", out)
    return wall, float(m.group(2)), int(m.group(1))



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--model", default=str(ROOT / "bench" / "out" / "gpt2-small"))
    ap.add_argument("--examples", type=int, default=128)
    ap.add_argument("--seq", type=int, default=24)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    cvene = str(Path(a.build) / "cvene")
    cfg = json.load(open(Path(a.model) / "config.json"))
    V = cfg["vocab_size"]
    rng = random.Random(0)
    tmp = tempfile.mkdtemp()
    data = f"{tmp}/train.jsonl"
    with open(data, "w") as f:  # random ids; the intervened position half-way, the label at the last
        for _ in range(a.examples):
            base = [rng.randrange(V) for _ in range(a.seq)]
            src = [rng.randrange(V) for _ in range(a.seq)]
            f.write(json.dumps({"base": base, "source": src, "base_pos": a.seq // 2, "source_pos": a.seq // 2,
                                "label": rng.randrange(V)}) + "\n")
    env = ranks_env()
    load = os.getloadavg()[0]
    cpu = cpu_name()
    args = ["train", "--model", a.model, "--data", data, "--type", "LowRankRotatedSpace", "--layer", str(a.layer),
            "--rank", "4", "--batch", str(a.batch), "--epochs", "1", "--lr", "1e-2", "--seed", "1", "--threads", "1",
            "--eval-fraction", "0"]
    n = a.ranks
    setups = [("1 process, whole batches", [], []), (f"1 process, --shards {n}", [], ["--shards", str(n)]),
              (f"{n} ranks, --shards {n} (mpirun -np {n})", MPI + ["-np", str(n)], ["--shards", str(n)])]
    res = {}
    for k_setup, (name, pre, extra) in enumerate(setups):
        walls, own = [], []
        for k in range(a.repeat):
            w, s, steps = run(pre + [cvene] + args + extra + ["--out", f"{tmp}/s{k_setup}_{k}"], env)
            walls.append(w), own.append(s)
        res[name] = (statistics.median(walls), statistics.median(own), steps)
        print(f"{name}: wall {res[name][0]:.2f} s, training {res[name][1]:.2f} s ({steps} steps)", flush=True)
    same = filecmp.dircmp(f"{tmp}/s1_0", f"{tmp}/s2_0")
    if same.diff_files or same.left_only or same.right_only:
        sys.exit("the ranks' weights differ from 1 process with the same shards")
    _, t_whole, _ = res[setups[0][0]]
    _, t_shard, _ = res[setups[1][0]]
    rows = [f"| {name} | {w:.2f} | {s:.2f} | {t_whole / s:.2f}x | {t_shard / s:.2f}x |" for name, (w, s, _) in res.items()]
    L = cfg.get("n_layer", cfg.get("num_hidden_layers"))
    body = (f"## Ranks: data-parallel training (`mpirun -np N cvene train --shards S`)\n\n"
            f"Machine: {cpu}, {os.cpu_count()} CPUs, every process on 1 thread (OMP_NUM_THREADS=1, --threads 1), "
            f"load average {load:.2f} before; OpenMPI shared-memory transport; {time.strftime('%Y-%m-%d')}. Command: "
            f"`python3 bench/bench_ranks_train.py`. Training: {Path(a.model).name} ({L} layers, random weights), "
            f"LowRankRotatedSpace rank 4 at block_output of layer {a.layer}, {a.examples} random examples of {a.seq} "
            f"tokens (intervened at position {a.seq // 2}), batch {a.batch}, 1 epoch ({res[setups[0][0]][2]} steps), "
            f"Adam lr 1e-2. The ranks' weights equal 1 process's with the same --shards byte for byte. Median of "
            f"{a.repeat}. Training s: cvene's own \"steps in\" time, the frozen caches included (a forward of "
            f"the whole dataset: on ranks each computes its chunks of 32 examples and they are shared over MPI, so "
            f"they dominate a one-epoch run like this one); wall: the whole command (model load and MPI start "
            f"included). No held-out split (--eval-fraction 0).\n\n"
            "| setup | wall s | training s | vs whole batches | vs the same shards |\n|---|---|---|---|---|\n"
            + "\n".join(rows))
    print(body)
    if not a.no_write:
        write_section(ROOT / "bench" / "RESULTS.md", "ranks-train", body)


if __name__ == "__main__":
    main()
