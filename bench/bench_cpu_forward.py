"""CPU forward throughput: cvene native GPT-2 and GPT-NeoX vs transformers on
torch, one run, same machine, same thread count. Writes the table into
bench/RESULTS.md.

    /work/venv/bin/python bench/bench_cpu_forward.py [--build build] [--iters 10]

Needs the pinned packages of tools/requirements.txt (torch, transformers) and a
built cvene (tools/build.sh). The models are GPT-2-small's shape (124M) and
Pythia-160M's shape (GPT-NeoX), random weights, saved once under bench/out/.
"""
import argparse, json, os, platform, statistics, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_section  # noqa: E402  (re-exported: the other bench scripts import it from here)

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

ROOT = Path(__file__).resolve().parent.parent
SHAPES = [(1, 16), (8, 128)]


PYTHIA_160M = dict(vocab_size=50304, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                   intermediate_size=3072, rotary_pct=0.25, max_position_embeddings=2048,
                   use_parallel_residual=True, tie_word_embeddings=False)
MODELS = {"gpt2-small": (GPT2LMHeadModel, lambda: GPT2Config()),  # 124M: 12 layers, 12 heads, n_embd 768
          "pythia-160m": (GPTNeoXForCausalLM, lambda: GPTNeoXConfig(**PYTHIA_160M))}


def make_model(name: str, out: Path):
    if (out / "model.safetensors").exists():
        return
    torch.manual_seed(0)
    cls, cfg = MODELS[name]
    cls(cfg()).save_pretrained(out, safe_serialization=True)


def torch_tok_s(model, B, T, iters, vocab):
    g = torch.Generator().manual_seed(1234)
    ids = torch.randint(0, vocab, (B, T), generator=g)
    with torch.no_grad():
        model(ids)  # warm-up
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            model(ids).logits
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)  # as `cvene bench` reports
    return B * T / med, 1e3 * med


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in MODELS:
        out = ROOT / "bench" / "out" / name
        make_model(name, out)
        model = MODELS[name][0].from_pretrained(out).eval()
        rows += bench_model(name, out, model, args)
        del model
    write_table(rows, args)


def bench_model(name, out, model, args):
    rows = []
    for B, T in SHAPES:
        # the cvene side is `cvene bench forward` (one timing code path with the CLI): one warm-up,
        # --repeat timed passes, the median; the row with every position's logits copied to the host
        r = subprocess.run([f"{args.build}/cvene", "bench", "forward", "--model", str(out), "--batch", str(B),
                            "--seq", str(T), "--repeat", str(args.iters), "--threads", str(args.threads),
                            "--json", "-"],
                           capture_output=True, text=True, check=True,
                           env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        doc = json.loads(r.stdout)
        m = next(m for m in doc["measurements"] if m["name"] == "forward, every position's logits to host")
        c = {"tok_s": m["rate"], "ms_mean": 1e3 * m["seconds"]["median"]}
        t_tok, t_ms = torch_tok_s(model, B, T, args.iters, model.config.vocab_size)
        rows.append((name, B, T, c["tok_s"], c["ms_mean"], t_tok, t_ms, c["tok_s"] / t_tok))
        print(f"{name} B={B} T={T}: cvene {c['tok_s']:.0f} tok/s ({c['ms_mean']:.1f} ms), "
              f"torch {t_tok:.0f} tok/s ({t_ms:.1f} ms), speed-up {c['tok_s'] / t_tok:.2f}x")
    return rows


def write_table(rows, args):
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    table = [
        "## CPU forward: GPT-2-small (124M) and Pythia-160M shapes, random weights, full logits",
        "",
        f"Machine: {cpu}, {args.threads} threads for both; torch {torch.__version__}, "
        f"transformers {transformers.__version__}; the median of {args.iters} timed passes after one warm-up "
        f"(cvene: `cvene bench forward`); "
        f"{time.strftime('%Y-%m-%d')}.",
        f"Command: `python bench/bench_cpu_forward.py` (targets: >= 3x at 1x16, >= 1.0x at 8x128).",
        "",
        "| model | batch x seq | cvene tok/s | cvene ms/pass (median) | transformers tok/s | transformers ms/pass (median) | speed-up |",
        "|---|---|---|---|---|---|---|",
    ] + [f"| {n} | {B} x {T} | {c:.0f} | {cm:.1f} | {t:.0f} | {tm:.1f} | {s:.2f}x |" for n, B, T, c, cm, t, tm, s in rows]
    write_section(ROOT / "bench" / "RESULTS.md", "cpu-forward-gpt2", "\n".join(table))


if __name__ == "__main__":
    sys.exit(main())
