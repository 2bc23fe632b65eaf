"""Write tests/fixtures/probe/: a colour probe on the demo model, with torch as the reference.

The question a researcher would ask of assets/demo-gpt2: at which layer does the last subject
token's residual stream linearly encode the person's favourite colour? Examples: the prompt
"<prefix> the favourite colour of <person> is", position -2 (the person's family name), label =
the colour's index among the 12. Activations are read with forward hooks on transformers'
GPT2LMHeadModel (block_output = the output of transformer.h[l], before ln_f for the last layer;
mlp_activation = the input of mlp.c_proj). Probes are trained by torch exactly as
cvene_probe_fit documents: z-scored features (numpy float64 mean/std of the training rows,
ddof 0, a std at most 1e-5 of the features' rms read as 1, rounded to float32), W and b from zero, full-batch Adam
(torch.optim.Adam, foreach=False; weight decay on W only) on the mean cross-entropy.

    python tools/make_probe_fixtures.py        # deterministic; a few seconds on one core

Writes probe.safetensors (examples, split, activations, and per site the trained weight, bias,
mean, std, accuracies and losses, plus the same run with gradients perturbed by 1e-6 relative
noise, to show how closely a trajectory can be followed) and manifest.json.
"""
import json
import os
import random

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "assets", "demo-gpt2")
OUT = os.path.join(REPO, "tests", "fixtures", "probe")
TEMPLATE = "the favourite colour of {S} is"
SITES = [("block_output", layer) for layer in range(8)] + [("mlp_activation", 2)]
PARAMS = dict(steps=300, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-3)
HELD_OUT = 0.25


def examples(tok):
    world = json.load(open(os.path.join(DEMO, "world.json")))
    colours = world["relations"]["colour"]["values"]
    rng = random.Random(7)
    out = []
    for s in world["subjects"]:
        prefix = rng.choice(world["prefixes"])
        text = prefix + " " + TEMPLATE.replace("{S}", s["name"])
        out.append((tok(text, add_special_tokens=False)["input_ids"], -2, colours.index(s["colour"])))
    return out, colours


def collect(model, ex):
    acts = {site: [] for site in SITES}
    with torch.no_grad():
        for ids, pos, _ in ex:
            cap = {}
            hooks = []
            for (comp, layer) in SITES:
                blk = model.transformer.h[layer]
                if comp == "block_output":
                    hooks.append(blk.register_forward_hook(lambda m, a, o, k=(comp, layer): cap.__setitem__(k, o[0])))
                else:
                    hooks.append(blk.mlp.c_proj.register_forward_pre_hook(
                        lambda m, a, k=(comp, layer): cap.__setitem__(k, a[0])))
            model(input_ids=torch.tensor([ids]), use_cache=False)
            for h in hooks:
                h.remove()
            for site in SITES:
                acts[site].append(cap[site][0, pos].clone())
    return {site: torch.stack(v) for site, v in acts.items()}


def train_probe(X, y, C, noise=0.0, seed=0):
    Xn = X.numpy().astype(np.float64)
    mean = Xn.mean(0)
    std = Xn.std(0)
    rms = np.sqrt((Xn * Xn).mean())
    std[std <= 1e-5 * rms] = 1.0  # constant up to f32 noise (cvene_probe_params.standardize)
    mean, std = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
    z = (X - mean) / std
    W = torch.zeros(C, X.shape[1], requires_grad=True)
    b = torch.zeros(C, requires_grad=True)
    opt = torch.optim.Adam([{"params": [W], "weight_decay": PARAMS["weight_decay"]},
                            {"params": [b], "weight_decay": 0.0}],
                           lr=PARAMS["lr"], betas=PARAMS["betas"], eps=PARAMS["eps"], foreach=False)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(PARAMS["steps"]):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ W.T + b, y)
        loss.backward()
        if noise:
            for p in (W, b):
                p.grad.mul_(1 + noise * torch.randn(p.grad.shape, generator=gen))
        opt.step()
    return W.detach(), b.detach(), mean, std


def evaluate(W, b, mean, std, X, y):
    with torch.no_grad():
        logits = ((X - mean) / std) @ W.T + b
        return (logits.argmax(-1) == y).float().mean().item(), torch.nn.functional.cross_entropy(logits, y).item()


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = GPT2LMHeadModel.from_pretrained(DEMO, attn_implementation="eager", torch_dtype=torch.float32).eval()
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(DEMO, "tokenizer.json"))
    ex, colours = examples(tok)
    N = len(ex)
    order = list(range(N))
    random.Random(11).shuffle(order)
    n_held = int(round(HELD_OUT * N))
    held, train = sorted(order[:n_held]), sorted(order[n_held:])
    acts = collect(model, ex)
    y = torch.tensor([e[2] for e in ex])
    T = max(len(e[0]) for e in ex)
    ids = torch.zeros(N, T, dtype=torch.int32)
    lens = torch.tensor([len(e[0]) for e in ex], dtype=torch.int32)
    for i, e in enumerate(ex):
        ids[i, :len(e[0])] = torch.tensor(e[0])
    tensors = {"ids": ids, "lens": lens, "pos": torch.tensor([e[1] for e in ex], dtype=torch.int32),
               "labels": y.to(torch.int32), "train": torch.tensor(train, dtype=torch.int32),
               "held_out": torch.tensor(held, dtype=torch.int32)}
    sites = []
    C = len(colours)
    for (comp, layer) in SITES:
        key = f"{comp}.{layer}"
        X = acts[(comp, layer)]
        W, b, mean, std = train_probe(X[train], y[train], C)
        acc_tr, loss_tr = evaluate(W, b, mean, std, X[train], y[train])
        acc_ho, loss_ho = evaluate(W, b, mean, std, X[held], y[held])
        spread = 0.0
        for seed in range(3):
            Wn, bn, _, _ = train_probe(X[train], y[train], C, noise=1e-6, seed=seed)
            spread = max(spread, ((Wn - W).abs().max() / W.abs().max()).item(),
                         ((bn - b).abs().max() / b.abs().max()).item())
        tensors.update({f"{key}.activations": X.contiguous(), f"{key}.weight": W, f"{key}.bias": b,
                        f"{key}.mean": mean, f"{key}.std": std})
        sites.append({"component": comp, "layer": layer, "width": X.shape[1], "train_accuracy": acc_tr,
                      "train_loss": loss_tr, "held_out_accuracy": acc_ho, "held_out_loss": loss_ho,
                      "noise_spread": spread})
        print(f"{key:18} train {acc_tr:.3f}  held-out {acc_ho:.3f}  (torch's own spread under 1e-6 gradient noise: "
              f"{spread:.1e})")
    os.makedirs(OUT, exist_ok=True)
    save_file(tensors, os.path.join(OUT, "probe.safetensors"),
              metadata={"torch": torch.__version__, "generator": "tools/make_probe_fixtures.py"})
    manifest = {"model": "assets/demo-gpt2", "template": TEMPLATE, "position": -2, "classes": colours,
                "n_examples": N, "n_train": len(train), "n_held_out": len(held),
                "params": dict(PARAMS, betas=list(PARAMS["betas"]), standardize=True), "sites": sites,
                "versions": {"torch": torch.__version__, "numpy": np.__version__}}
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
