"""The Python package's overhead per call: a one-site interchange (pyvene case 001: Vanilla on
block_output of layer 1, B = 2, T = 6, the tiny fixture model) through cvene.IntervenableModel
against the same request through the C API in `cvene bench run` (its cvene_run median), in one
run on one machine, one thread. Target (issue #17): at most 20 us more per call. Writes the table
into bench/RESULTS.md.

    python3 bench/bench_python_overhead.py [--build build] [--calls 2000]

Needs numpy and a built cvene (tools/build.sh).
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bindings" / "python"))
os.environ.setdefault("OMP_NUM_THREADS", "1")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    os.environ["CVENE_LIBRARY"] = str(Path(args.build) / "libcvene.so")
    import numpy as np
    import cvene
    case = ROOT / "tests/fixtures/pyvene/cases/001_vanilla_pos_block_output_small"
    inputs = json.loads((case / "inputs.json").read_text())
    model_dir = ROOT / "tests/fixtures/gpt2" / inputs.pop("model") / "model"
    rows = []
    for rnd in range(args.rounds):  # alternate the two sides so load changes hit both
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump(inputs, f)
            f.flush()
            r = subprocess.run([f"{args.build}/cvene", "bench", "run", "--model", str(model_dir), "--config",
                                str(case / "config.json"), "--inputs", f.name, "--threads", "1", "--warmup", "50",
                                "--repeat", str(args.calls), "--json", "-"], capture_output=True, text=True, check=True)
        doc = json.loads(r.stdout)
        c_us = 1e6 * doc["measurements"][0]["seconds"]["median"]
        m = cvene.load(model_dir, threads=1)
        pv = cvene.IntervenableModel(case / "config.json", m)
        loc = inputs["unit_locations"]
        py = []
        for dt in (np.int32, np.int64):  # int64: what np.asarray of a Python list gives (converted per call)
            base = {k: np.asarray(v, dtype=dt) for k, v in inputs["base"].items()}
            sources = [{k: np.asarray(v, dtype=dt) for k, v in s.items()} for s in inputs["sources"]]
            for _ in range(50):
                pv(base, sources, unit_locations=loc)
            t = []
            for _ in range(args.calls):
                t0 = time.perf_counter()
                pv(base, sources, unit_locations=loc)
                t.append(time.perf_counter() - t0)
            py.append(1e6 * statistics.median(t))
        rows.append((c_us, py[0], py[1]))
        print(f"round {rnd}: C {c_us:.1f} us, Python {py[0]:.1f} us (int32 ids) / {py[1]:.1f} us (int64 ids): "
              f"overhead {py[0] - c_us:.1f} / {py[1] - c_us:.1f} us")
        pv.close()
        m.close()
    over32 = statistics.median(p - c for c, p, _ in rows)
    over64 = statistics.median(q - c for c, _, q in rows)
    dev = doc["device"]
    table = [
        "## Python package overhead: one-site interchange, Python against C",
        "",
        f"Machine: {dev['name']}, 1 thread, load average {doc['machine']['load_avg_before'][0]:.2f}; "
        f"{time.strftime('%Y-%m-%d')}. Command: `python3 bench/bench_python_overhead.py` (pyvene case 001: Vanilla "
        f"on block_output of layer 1 of the tiny fixture model, B = 2, T = 6, base and one source; the median of "
        f"{args.calls} calls after 50 warm-up calls, each side, {args.rounds} rounds alternating; C: `cvene bench "
        f"run`'s cvene_run median (the request built once); Python: `cvene.IntervenableModel(...)(base, sources, "
        f"unit_locations=...)` - a new request per call from numpy ids (int32, or int64 converted per call), "
        f"unit_locations as JSON, logits copied out as numpy). Target: at most 20 us more per call.",
        "",
        "| round | C us/call | Python us/call (int32 ids) | overhead | Python us/call (int64 ids) | overhead |",
        "|---|---|---|---|---|---|",
    ] + [f"| {i} | {c:.1f} | {p:.1f} | {p - c:.1f} | {q:.1f} | {q - c:.1f} |" for i, (c, p, q) in enumerate(rows)] + [
        "", f"Median overhead: {over32:.1f} us per call with int32 ids, {over64:.1f} us with int64 ids "
        f"({'meets' if over32 <= 20 else 'misses'} / {'meets' if over64 <= 20 else 'misses'} the 20 us target)."]
    sys.path.insert(0, str(ROOT / "bench"))
    from results import write_section
    write_section(ROOT / "bench" / "RESULTS.md", "python-overhead", "\n".join(table))


if __name__ == "__main__":
    sys.exit(main())
