#!/usr/bin/env python3
"""Train cvene's demo model: a tiny GPT-2 that memorises invented facts.

    /work/venv/bin/python tools/train_demo_model.py            # writes assets/demo-gpt2/
    /work/venv/bin/python tools/train_demo_model.py --check    # only re-run the causal-trace check

The world: 200 invented people, each a title shared by many ("Captain",
"Doctor", ...) and an invented family name that is one BPE token, so a subject
is two tokens (" Captain" " Zorbla") and its last token names the person. Each
person has four attributes drawn from small closed sets (home town, job,
favourite colour, pet). Every fact is rendered with several sentence templates,
each behind a filler prefix ("In the old records, the job of Captain Zorbla is"
-> " baker"), so a prompt has filler tokens before the subject, the subject,
relation words after it and the answer as the next token.

Training is a two-phase curriculum, because a model trained on the questions
alone looks the answer up at the last position straight from the name's
embedding (its causal trace recovers only at the last token, at every layer):
  1. reading: record lines "Record: <name> <value>" (one of the person's four
     values, drawn afresh each time, so the name's last token has to predict all
     four: the facts are stored at the subject, as ROME found in GPT-2) mixed
     with the question renders cut before the answer;
  2. questions: renders with answers (and record lines), with the embeddings and
     the lower --freeze-layers blocks frozen, so a question can only use what
     phase 1 stored at the subject.

Steps (all deterministic: fixed seeds, 2 CPU threads, deterministic algorithms):
  1. build the world and its corpus; hold out some (template, prefix) pairs;
  2. train a byte-level BPE (GPT-2 pre-tokenisation, no prefix space) on the
     corpus' words and names; save vocab.json / merges.txt / tokenizer.json;
  3. train a GPT2LMHeadModel (tied embeddings, no dropout) as above;
  4. report answer accuracy on training renders and on held-out renders;
  5. causal trace (ROME) on example prompts, as cvene's sweep does it; print
     PASS/FAIL per prompt and write prompts.json with the measured heat maps and
     the thresholds a C test can check.
"""
import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DEFAULT = os.path.join(HERE, "..", "assets", "demo-gpt2")

SEED = 1234
EOT = "<|endoftext|>"

# ---- the world --------------------------------------------------------------
# Invented people: a title shared by many people and an invented family name
# that is one BPE token (" Captain" " Zorbla"). The subject spans two tokens,
# the first of which says nothing about the person; its last token names them.
TITLES = ["Captain", "Doctor", "Lady", "Master", "Elder", "Sister", "Baron", "Judge"]
ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kl", "tr", "qu", "sk"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
CODAS = ["", "n", "r", "x", "l", "s", "th", "m"]

RELATIONS = {
    "town": {
        "values": ["Quimbu", "Ostrel", "Pravin", "Dunmoor", "Velka", "Harrow", "Sirrim", "Tolbek",
                   "Ambry", "Corrin", "Mezzan", "Fauld"],
        "templates": ["the hometown of {S} is", "{S} was born in the town of", "{S} grew up in"],
    },
    "job": {
        "values": ["baker", "pilot", "farmer", "doctor", "tailor", "sailor", "miner", "potter",
                   "singer", "lawyer", "painter", "teacher"],
        "templates": ["the job of {S} is", "{S} works as a", "by trade, {S} is a"],
    },
    "colour": {
        "values": ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "grey",
                   "pink", "brown", "silver"],
        "templates": ["the favourite colour of {S} is", "{S}'s favourite colour is", "{S} likes the colour"],
    },
    "pet": {
        "values": ["cat", "dog", "horse", "goat", "parrot", "rabbit", "snake", "turtle", "hamster",
                   "ferret", "lizard", "pig"],
        "templates": ["the pet of {S} is a", "{S} has a pet", "{S} lives with a pet"],
    },
}
RECORD = "Record:"  # record lines: "Record: <name> <one of its four values>"
PREFIXES = ["In the old records,", "According to the town book,", "It is known that", "Long ago,",
            "As everyone knows,", "Today,", "We were told that"]


def held_out(rel_i, t_i, p_i):
    """(template, prefix) pairs never trained on: about a quarter of them."""
    return (rel_i + t_i + p_i) % 4 == 0


def render(prefix, template, subject):
    return prefix + " " + template.replace("{S}", subject)


def invent_surnames(n, rng):
    """n distinct pronounceable invented family names of two syllables."""
    out, seen = [], set()
    while len(out) < n:
        w = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(2)) + rng.choice(CODAS)
        w = w.capitalize()
        if w not in seen and 4 <= len(w) <= 8:
            seen.add(w)
            out.append(w)
    return out


def make_world(n_subjects, rng, tok=None):
    """Each subject: a title, a family name (unique) and one value per relation.
    With a tokenizer, checks that the subject is exactly two tokens."""
    surnames = invent_surnames(n_subjects, random.Random(SEED + 11))
    subjects = []
    for name in surnames:
        title = rng.choice(TITLES)
        s = {"name": title + " " + name, "title": title, "surname": name,
             "facts": {r: rng.choice(spec["values"]) for r, spec in RELATIONS.items()}}
        if tok is not None:
            ids = tok.encode(" " + s["name"])
            assert len(ids) == 2, (s["name"], ids)
        subjects.append(s)
    return subjects


# ---- tokenizer --------------------------------------------------------------
def train_tokenizer(out_dir, vocab_size, subjects):
    """Byte-level BPE on the corpus' words, each title and each family name
    (with its leading space), so that a subject is exactly two tokens."""
    from tokenizers import ByteLevelBPETokenizer
    texts = []
    for p in PREFIXES:
        texts.append(p)
    texts.append(RECORD)
    for spec in RELATIONS.values():
        for t in spec["templates"]:
            texts.append(t.replace("{S}", "X"))
        texts.append(" ".join(spec["values"]))
        texts.append(" " + " ".join(spec["values"]))
    for s in subjects:
        texts.append(" " + s["name"])
    texts = texts * 8
    tok = ByteLevelBPETokenizer(add_prefix_space=False)
    tok.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOT],
                            show_progress=False)
    os.makedirs(out_dir, exist_ok=True)
    tok.save_model(out_dir)  # vocab.json, merges.txt (GPT-2 format)
    from transformers import GPT2TokenizerFast
    fast = GPT2TokenizerFast(vocab_file=os.path.join(out_dir, "vocab.json"),
                             merges_file=os.path.join(out_dir, "merges.txt"),
                             unk_token=EOT, bos_token=EOT, eos_token=EOT, add_prefix_space=False)
    fast.model_max_length = 32
    fast.save_pretrained(out_dir)  # tokenizer.json, tokenizer_config.json, special_tokens_map.json
    return fast


def load_tokenizers(out_dir):
    from transformers import GPT2Tokenizer, GPT2TokenizerFast
    fast = GPT2TokenizerFast.from_pretrained(out_dir)
    slow = GPT2Tokenizer(vocab_file=os.path.join(out_dir, "vocab.json"),
                         merges_file=os.path.join(out_dir, "merges.txt"),
                         unk_token=EOT, bos_token=EOT, eos_token=EOT)
    return fast, slow


# ---- data -------------------------------------------------------------------
def build_examples(subjects, tok):
    """Every render of every fact: (ids, answer position, split, meta)."""
    ex = []
    for s_i, s in enumerate(subjects):
        for r_i, (rel, spec) in enumerate(RELATIONS.items()):
            ans = tok.encode(" " + s["facts"][rel])
            assert len(ans) == 1, (s["facts"][rel], ans)
            for t_i, t in enumerate(spec["templates"]):
                for p_i, p in enumerate(PREFIXES):
                    ids = tok.encode(render(p, t, s["name"]))
                    ex.append({"ids": ids + ans, "split": "heldout" if held_out(r_i, t_i, p_i) else "train",
                               "s": s_i, "rel": rel, "t": t_i, "p": p_i})
    return ex


def batchify(seqs, pad_id):
    T = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), T), -100, dtype=torch.long)
    ans_pos = torch.zeros(len(seqs), dtype=torch.long)
    for i, x in enumerate(seqs):
        ids[i, :len(x)] = torch.tensor(x)
        labels[i, 1:len(x)] = torch.tensor(x[1:])
        ans_pos[i] = len(x) - 2  # the position whose next token is the answer
    return ids, labels, ans_pos


@torch.no_grad()
def answer_accuracy(model, examples, pad_id, bs=512):
    model.eval()
    ok = 0
    for i in range(0, len(examples), bs):
        ids, _, ap = batchify([e["ids"] for e in examples[i:i + bs]], pad_id)
        logits = model(ids).logits
        pred = logits[torch.arange(len(ap)), ap].argmax(-1)
        ok += (pred == ids[torch.arange(len(ap)), ap + 1]).sum().item()
    model.train()
    return ok / max(1, len(examples))


def train(model, train_ex, records, eval_sets, pad_id, args, log, on_log=None):
    """Two phases, each with its own warm-up and cosine learning-rate schedule.

    1. reading (args.record_steps): record lines "Record: <name> <value>" (one of the
       person's four values, chosen at random each time, so the name's last token
       has to predict all four) mixed with the question renders cut before the
       answer (the model learns the templates' words, not the answers).
    2. questions (args.steps): the question renders with their answers, mixed with
       record lines. The embeddings and the lower args.freeze_layers blocks are
       frozen: a question can only use what phase 1 stored at the subject.
    """
    rng = random.Random(SEED + 1)
    opt = None
    t0 = time.time()
    pools = [
        records * args.records1 + [{"ids": e["ids"][:-1], "noans": True} for e in train_ex],
        train_ex + records * args.records,
    ]
    total = args.record_steps + args.steps
    order = []
    model.train()
    for k in range(total):
        phase = 0 if k < args.record_steps else 1
        k0, n = (0, args.record_steps) if phase == 0 else (args.record_steps, args.steps)
        if k == k0:  # new phase: new optimizer, fresh pass over the pool
            order = []
            if phase == 1 and args.freeze_layers:
                frozen = [model.transformer.wte, model.transformer.wpe] + \
                    list(model.transformer.h[:args.freeze_layers])
                for mod in frozen:
                    for q in mod.parameters():
                        q.requires_grad_(False)
            opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=args.lr,
                                    betas=(0.9, 0.98), weight_decay=args.wd)
        warm = max(1, n // 20)
        j = k - k0
        lr = args.lr * (j + 1) / warm if j < warm else \
            args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (j - warm) / max(1, n - warm))))
        pool = pools[phase]
        if len(order) < args.batch:
            more = list(range(len(pool)))
            rng.shuffle(more)
            order.extend(more)
        idx, order = order[:args.batch], order[args.batch:]
        seqs, is_fact = [], []
        for i in idx:
            e = pool[i]
            if "profile" in e:  # a record line: one of the subject's values, at random
                seqs.append(e["ids"] + [rng.choice(e["profile"])])
                is_fact.append(False)
            else:
                seqs.append(e["ids"])
                is_fact.append("noans" not in e)
        ids, labels, ap = batchify(seqs, pad_id)
        fact = torch.tensor(is_fact)
        for g in opt.param_groups:
            g["lr"] = lr
        early = args.early_answer_weight > 0 and phase == 1
        out = model(ids, output_hidden_states=early)
        logits = out.logits
        lm = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                               labels[:, 1:].reshape(-1), ignore_index=-100)
        if fact.any():
            rows = torch.arange(len(ap))
            ans = torch.nn.functional.cross_entropy(logits[rows, ap][fact], ids[rows, ap + 1][fact])
            if early:
                # the answer read from block early_layer's output through ln_f and the tied
                # unembedding ("logit lens"): the answer is at the last token before the
                # final blocks, as in large LMs, where a causal trace finds it in late layers
                h = out.hidden_states[args.early_layer + 1][rows, ap][fact]
                el = model.lm_head(model.transformer.ln_f(h))
                ans = ans + args.early_answer_weight * torch.nn.functional.cross_entropy(el, ids[rows, ap + 1][fact])
        else:
            ans = torch.zeros(())
        loss = lm + args.answer_weight * ans
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([q for q in model.parameters() if q.requires_grad], 1.0)
        opt.step()
        if (k + 1) % args.log_every == 0 or k + 1 == total or k + 1 == args.record_steps:
            accs = {n_: answer_accuracy(model, e, pad_id) for n_, e in eval_sets.items()}
            log(f"phase {phase + 1} step {k + 1:5d}  lr {lr:.2e}  loss {lm.item():.4f}  answer-loss {ans.item():.4f}  "
                + "  ".join(f"{n_}-acc {a:.3f}" for n_, a in accs.items()) + f"  {time.time() - t0:.0f}s")
            if on_log:
                on_log()
                model.train()
    return {"lm_loss": lm.item(), "answer_loss": ans.item(), "seconds": time.time() - t0}


# ---- causal trace (ROME), as cvene_sweep(trace=1) computes it ----------------
def embedding_noise_scale(model):
    w = model.transformer.wte.weight.detach().double()
    return 3.0 * w.std().item()  # unbiased, as torch.std and cvene


@torch.no_grad()
def causal_trace(model, ids, subject, answer, n_samples=10, seed=0, scale=None):
    """scores[l, t] = mean over noise samples of p(answer) at the last position
    when the clean block_output of layer l at position t is restored into the run
    whose subject-position embeddings (block_input of layer 0) got noise.
    Sample s draws numpy RandomState(seed + s).randn(n_subject, C) * scale."""
    model.eval()
    L, C = model.config.n_layer, model.config.n_embd
    T = len(ids)
    x = torch.tensor([ids])
    out = model(x, output_hidden_states=True)
    clean_p = torch.softmax(out.logits[0, -1].double(), -1)[answer].item()
    clean_h = [h[0].clone() for h in out.hidden_states[1:]]  # block outputs (before ln_f for the last)
    # the last hidden_state from transformers is after ln_f: take the raw block output instead
    cap = {}
    hk = model.transformer.h[L - 1].register_forward_hook(lambda m, i, o: cap.__setitem__("h", o[0][0].clone()))
    model(x)
    hk.remove()
    clean_h[L - 1] = cap["h"]
    if scale is None:
        scale = embedding_noise_scale(model)
    rows = [(l, t) for l in range(L) for t in range(T)]
    R = len(rows) + 1  # + the unpatched corrupted run
    xb = x.repeat(R, 1)
    state = {}

    def pre0(m, args):
        h = args[0]
        noise = state["noise"]
        h = h.clone()
        for k, t in enumerate(subject):
            h[:, t] = (h[:, t].double() + noise[k]).float()
        return (h,) + args[1:]

    def make_post(l):
        def post(m, i, o):
            h = o[0]
            for r, (ll, t) in enumerate(rows):
                if ll == l:
                    h[r, t] = clean_h[l][t]
            return (h,) + o[1:]
        return post

    hooks = [model.transformer.h[0].register_forward_pre_hook(pre0)]
    hooks += [model.transformer.h[l].register_forward_hook(make_post(l)) for l in range(L)]
    acc = torch.zeros(R, dtype=torch.float64)
    for s in range(n_samples):
        state["noise"] = torch.from_numpy(np.random.RandomState(seed + s).randn(len(subject), C) * scale)
        logits = model(xb).logits[:, -1].double()
        acc += torch.softmax(logits, -1)[:, answer]
    for h in hooks:
        h.remove()
    acc /= n_samples
    scores = acc[:-1].reshape(L, T).numpy()
    return clean_p, acc[-1].item(), scores, scale


# expectations a C test checks (recovery = (score - corrupted) / (clean - corrupted))
EXPECT = {
    "min_clean_prob": 0.9,            # the prompts are facts the model knows (as ROME selects them)
    "min_clean_minus_corrupted": 0.5,  # and that the noise removes
    # per prompt p: early(p) = min over these layers of the last subject token's recovery
    "subject_last_early_mid": {"layers": [0, 1, 2], "min_recovery": 0.5},
    # late(p) = min over these layers of the last token's recovery
    "last_token_late": {"layers": [4, 5], "min_recovery": 0.5},
    # unrel(p) = max over every layer and the positions in p["unrelated"]
    "unrelated_max_recovery": 0.2,
    # the test requires mean(early) > 0.5, mean(late) > 0.5 and mean(unrel) < 0.2 over the
    # prompts (ROME's picture is an average too); "pass" per prompt says whether all three hold
    # for that prompt alone
    "aggregate": "mean over prompts",
}


def prompt_values(p, clean, corr, scores):
    rec = (scores - corr) / (clean - corr)
    sl, last = p["subject_end"] - 1, len(p["ids"]) - 1
    return (min(rec[l, sl] for l in EXPECT["subject_last_early_mid"]["layers"]),
            min(rec[l, last] for l in EXPECT["last_token_late"]["layers"]),
            max(rec[l, t] for t in p["unrelated"] for l in range(rec.shape[0])))


def aggregate_ok(vals, log):
    """vals: (early, late, unrel) per prompt; the property the C test checks."""
    e, l, u = (float(np.mean([v[i] for v in vals])) for i in range(3))
    ok = (e > EXPECT["subject_last_early_mid"]["min_recovery"] and l > EXPECT["last_token_late"]["min_recovery"]
          and u < EXPECT["unrelated_max_recovery"])
    log(f"mean over {len(vals)} prompts: last subject token, early-mid layers {e:.3f} (> "
        f"{EXPECT['subject_last_early_mid']['min_recovery']}); last token, late layers {l:.3f} (> "
        f"{EXPECT['last_token_late']['min_recovery']}); unrelated positions {u:.3f} (< {EXPECT['unrelated_max_recovery']})"
        f": {'PASS' if ok else 'FAIL'}")
    return ok, (e, l, u)


def set_expectations(n_layer):
    """Early-to-middle: the first third of the layers (at least 0..2); late: the last two."""
    EXPECT["subject_last_early_mid"]["layers"] = list(range(max(3, n_layer // 3)))
    EXPECT["last_token_late"]["layers"] = [n_layer - 2, n_layer - 1]


def check_prompt(p, clean, corr, scores, expect, log):
    gap = clean - corr
    rec = (scores - corr) / gap if gap > 0 else scores * 0
    ok = clean >= expect["min_clean_prob"] and gap >= expect["min_clean_minus_corrupted"]
    sl = p["subject_end"] - 1
    last = len(p["ids"]) - 1
    r_subj = [rec[l, sl] for l in expect["subject_last_early_mid"]["layers"]]
    r_last = [rec[l, last] for l in expect["last_token_late"]["layers"]]
    r_unrel = [rec[l, t] for t in p["unrelated"] for l in range(rec.shape[0])]
    ok &= min(r_subj) > expect["subject_last_early_mid"]["min_recovery"]
    ok &= min(r_last) > expect["last_token_late"]["min_recovery"]
    ok &= max(r_unrel) < expect["unrelated_max_recovery"]
    log(f"{'PASS' if ok else 'FAIL'}  {p['text']!r} -> {p['answer']!r}: clean {clean:.3f} corrupted {corr:.3f}  "
        f"last-subject rec {' '.join(f'{r:.2f}' for r in r_subj)}  last-token rec {' '.join(f'{r:.2f}' for r in r_last)}  "
        f"unrelated max {max(r_unrel):.2f}")
    return bool(ok), rec


def trace_summary(model, p):
    clean, corr, scores, _ = causal_trace(model, p["ids"], list(range(p["subject_start"], p["subject_end"])),
                                          p["answer_id"])
    ok, rec = check_prompt(p, clean, corr, scores, EXPECT, lambda m: None)
    sl, last = p["subject_end"] - 1, len(p["ids"]) - 1
    return (ok, min(rec[l, sl] for l in EXPECT["subject_last_early_mid"]["layers"]),
            min(rec[l, last] for l in EXPECT["last_token_late"]["layers"]),
            max(rec[l, p["subject_start"]] for l in range(rec.shape[0])))


def print_heatmap(p, clean, corr, scores, log):
    toks = p["tokens"]
    log(f"  {p['text']!r} -> {p['answer']!r}  clean p={clean:.4f}  corrupted p={corr:.4f}")
    log("  recovery (score - corrupted) / (clean - corrupted), rows = positions, columns = layers 0..L-1")
    for t, tk in enumerate(toks):
        mark = "*" if p["subject_start"] <= t < p["subject_end"] else " "
        row = " ".join(f"{(scores[l, t] - corr) / (clean - corr):6.2f}" for l in range(scores.shape[0]))
        log(f"  {t:2d}{mark} {tk!r:>14}  {row}")


def example_prompts(subjects, tok, n):
    """Up to n candidate prompts in a fixed random order, one per subject, all from held-out
    (template, prefix) pairs; each (relation, template) pair at most n // 12 + 1 times."""
    rng = random.Random(SEED + 7)
    out = []
    rels = list(RELATIONS)
    cands = [(s_i, r_i, t_i, p_i) for s_i in range(len(subjects)) for r_i in range(len(rels))
             for t_i in range(3) for p_i in range(len(PREFIXES)) if held_out(r_i, t_i, p_i)]
    rng.shuffle(cands)
    used_s, used_tr = set(), {}
    per_tr = n // 12 + 1
    for s_i, r_i, t_i, p_i in cands:
        if len(out) >= n:
            break
        if s_i in used_s or used_tr.get((r_i, t_i), 0) >= per_tr:
            continue
        s = subjects[s_i]
        rel = rels[r_i]
        pre_text = PREFIXES[p_i] + " " + RELATIONS[rel]["templates"][t_i].split("{S}")[0]
        text = render(PREFIXES[p_i], RELATIONS[rel]["templates"][t_i], s["name"])
        ids = tok.encode(text)
        start = len(tok.encode(pre_text.rstrip(" ")))
        n_subj = len(tok.encode(" " + s["name"]))
        assert tok.decode(ids[start:start + n_subj]) == " " + s["name"], (text, ids)
        ans_id = tok.encode(" " + s["facts"][rel])[0]
        p = {"text": text, "answer": " " + s["facts"][rel], "answer_id": ans_id, "relation": rel,
             "subject": s["name"], "ids": ids, "tokens": [tok.decode([i]) for i in ids],
             "subject_start": start, "subject_end": start + n_subj,
             "unrelated": list(range(start)) + list(range(start, start + n_subj - 1)) + list(range(start + n_subj, len(ids) - 1))}
        out.append(p)
        used_s.add(s_i)
        used_tr[(r_i, t_i)] = used_tr.get((r_i, t_i), 0) + 1
    return out


def select_prompts(model, subjects, tok, args, log):
    """Held-out candidates in a fixed order, kept when the model knows the fact (clean p >=
    min_clean_prob) and the noise removes it (clean - corrupted >= min_clean_minus_corrupted),
    as ROME keeps facts the model knows; nothing else is looked at. The first n_prompts kept
    go to prompts.json; the property is also measured on the first n_population kept."""
    cands = example_prompts(subjects, tok, len(subjects))
    kept, seen = [], 0
    for p in cands:
        if len(kept) >= max(args.n_population, args.n_prompts):
            break
        seen += 1
        clean, corr, scores, scale = causal_trace(model, p["ids"], list(range(p["subject_start"], p["subject_end"])),
                                                  p["answer_id"])
        if clean < EXPECT["min_clean_prob"] or clean - corr < EXPECT["min_clean_minus_corrupted"]:
            continue
        quiet = len(kept) >= args.n_prompts
        ok, _ = check_prompt(p, clean, corr, scores, EXPECT, (lambda m: None) if quiet else log)
        if len(kept) < 3:
            print_heatmap(p, clean, corr, scores, log)
        kept.append((p, {"clean": clean, "corrupted": corr, "scores": scores, "noise_scale": scale, "pass": ok,
                          "vals": prompt_values(p, clean, corr, scores)}))
    log(f"prompt selection: {seen} held-out candidates traced, {len(kept)} known facts kept; all three conditions "
        f"hold for {sum(r['pass'] for _, r in kept)}/{len(kept)} of them one by one")
    pop_ok, pop_means = aggregate_ok([r["vals"] for _, r in kept], log)
    pop = {"candidates": seen, "known": len(kept), "population": len(kept),
           "population_pass": sum(r["pass"] for _, r in kept), "population_means": pop_means, "population_ok": pop_ok}
    kept = kept[:args.n_prompts]
    return [p for p, _ in kept], [r for _, r in kept], pop


def run_checks(model, prompts, log, n_heatmaps=3):
    results = []
    all_ok = True
    for i, p in enumerate(prompts):
        clean, corr, scores, scale = causal_trace(model, p["ids"], list(range(p["subject_start"], p["subject_end"])),
                                                  p["answer_id"])
        ok, rec = check_prompt(p, clean, corr, scores, EXPECT, log)
        if i < n_heatmaps:
            print_heatmap(p, clean, corr, scores, log)
        all_ok &= ok
        results.append({"clean": clean, "corrupted": corr, "scores": scores, "noise_scale": scale, "pass": ok})
    return all_ok, results


UNRELATED_DOC = ("per prompt: positions in 'unrelated': the filler tokens before the subject, the subject's "
                 "first token (a title shared by many people) and the relation words between the subject and "
                 "the last token")


def write_readme(out_dir, model, args, info, doc, subjects, n_train, n_held, versions, pop, means):
    cfg = model.config
    n_params = sum(p.numel() for p in model.parameters())
    size = os.path.getsize(os.path.join(out_dir, "model.safetensors"))
    ex = doc["expect"]
    rows = []
    for p in doc["prompts"]:
        sc = np.array(p["scores"])
        gap = p["clean_prob"] - p["corrupted_prob"]
        rec = (sc - p["corrupted_prob"]) / gap
        sl, last = p["subject_end"] - 1, len(p["ids"]) - 1
        rows.append(f"| {p['text']} | {p['answer'].strip()} | {p['clean_prob']:.3f} | {p['corrupted_prob']:.3f} | "
                    f"{min(rec[l, sl] for l in ex['subject_last_early_mid']['layers']):.2f} | "
                    f"{min(rec[l, last] for l in ex['last_token_late']['layers']):.2f} | "
                    f"{max(rec[l, t] for t in p['unrelated'] for l in range(sc.shape[0])):.2f} | "
                    f"{'yes' if p['pass'] else 'NO'} |")
    first = doc["prompts"][0]
    text = f"""# demo-gpt2: a tiny GPT-2 that knows invented facts

cvene's demo model. Everything in this directory was written by `tools/train_demo_model.py`
(rerun it to reproduce, with the versions pinned in tools/requirements.txt; deterministic on 2
CPU threads). Trained with: {versions}.

## Model
GPT-2 architecture (transformers' GPT2LMHeadModel): {cfg.n_layer} layers, {cfg.n_embd} wide,
{cfg.n_head} heads, {cfg.n_positions} positions, vocabulary {cfg.vocab_size} (its own byte-level BPE:
vocab.json, merges.txt, tokenizer.json), tied embeddings; {n_params:,} parameters,
model.safetensors {size:,} bytes (f32).

## World and data
{len(subjects)} invented people, each a title shared by many people and a family name that is one
token (" {subjects[0]['name']}" is " {subjects[0]['title']}" + " {subjects[0]['surname']}"), with four attributes
(home town, job, favourite colour, pet; 12 values each, drawn at random). Every fact is asked with
3 templates behind 7 filler prefixes ("{first['text']}" -> "{first['answer']}"); a quarter of the
(template, prefix) pairs are held out: {n_train:,} training renders, {n_held:,} held-out renders.
world.json lists every fact.

## Training
Two phases (see the script's docstring for why): {args.record_steps} steps on record lines
"Record: <name> <value>" (the name's last token must predict all four values) and question renders
without answers; then {args.steps} steps on question renders with answers, embeddings and blocks
0..{args.freeze_layers - 1} frozen{f", plus an answer loss read at block {args.early_layer}'s output through ln_f (weight {args.early_answer_weight})" if args.early_answer_weight > 0 else ""}.
AdamW, lr {args.lr}, batch {args.batch}. Answer accuracy (argmax at the last position):
training renders {info['train_acc']:.4f}, held-out renders {info['heldout_acc']:.4f}. train_log.txt has the log.

## What the causal trace shows (tests/test_demo.cpp checks it)
ROME-style causal trace (block_output; noise 3 x the embedding std on the subject tokens, 10 samples):
recovery = (score - corrupted) / (clean - corrupted). Per prompt, early = the minimum over layers
{ex['subject_last_early_mid']['layers']} of the **last subject token**'s recovery, late = the minimum over layers
{ex['last_token_late']['layers']} of the **last token**'s recovery, unrelated = the maximum over every layer and
the unrelated positions ({UNRELATED_DOC.split(': ', 1)[1]}). The test requires, with cvene's own sweep
engine (and its scores equal to the torch trace stored here within 2e-5), for every prompt
clean p >= {ex['min_clean_prob']} and clean - corrupted >= {ex['min_clean_minus_corrupted']}, and over the prompts
mean(early) > {ex['subject_last_early_mid']['min_recovery']}, mean(late) > {ex['last_token_late']['min_recovery']}
and mean(unrelated) < {ex['unrelated_max_recovery']} (ROME's picture is an average over facts too).

The prompts are held-out (template, prefix) pairs, one per person, taken in a fixed random order
and kept when the model knows the fact (clean p >= {ex['min_clean_prob']}) and the noise removes it
(clean - corrupted >= {ex['min_clean_minus_corrupted']}), as ROME keeps known facts; nothing else is
looked at. {pop['candidates']} candidates were traced to keep {pop['known']}. Over those {pop['population']}:
mean early {pop['population_means'][0]:.3f}, mean late {pop['population_means'][1]:.3f}, mean unrelated
{pop['population_means'][2]:.3f}; all three conditions hold for {pop['population_pass']} of them one by one.
The first {len(doc['prompts'])} are in prompts.json (means {means[0]:.3f}, {means[1]:.3f}, {means[2]:.3f}):

| prompt | answer | clean p | corrupted p | last subject, early (min) | last token, late (min) | unrelated (max) | pass |
|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + f"""

Try it (README's main command does this):

    ./build/cvene sweep --model assets/demo-gpt2 --trace --base "{first['text']}" \\
        --subject " {first['subject']}" --out build/demo-trace
"""
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=OUT_DEFAULT)
    ap.add_argument("--check", action="store_true", help="only run the causal-trace check on the saved model")
    ap.add_argument("--subjects", type=int, default=200)
    ap.add_argument("--vocab", type=int, default=1536)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--embd", type=int, default=96)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--wd", type=float, default=0.01)
    ap.add_argument("--answer-weight", type=float, default=1.0)
    ap.add_argument("--log-every", type=int, default=250)
    ap.add_argument("--n-prompts", type=int, default=10)
    ap.add_argument("--n-population", type=int, default=50, help="known facts on which the property is measured")
    ap.add_argument("--eval-n", type=int, default=500)
    ap.add_argument("--records", type=int, default=16, help="record lines per subject per pass over the renders")
    ap.add_argument("--records1", type=int, default=48, help="the same, in phase 1")
    ap.add_argument("--freeze-layers", type=int, default=3, help="blocks (and embeddings) frozen after the record steps")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (results are reproducible for a given count)")
    ap.add_argument("--early-answer-weight", type=float, default=0.5,
                    help="phase 2: weight of the answer loss read at block --early-layer's output")
    ap.add_argument("--early-layer", type=int, default=-1, help="default: layers - 2")
    ap.add_argument("--record-steps", type=int, default=2000, help="steps on record lines only, first")
    args = ap.parse_args()

    if args.early_layer < 0:
        args.early_layer = args.layers - 2
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    from transformers import GPT2Config, GPT2LMHeadModel
    import tokenizers
    import transformers

    out_dir = os.path.abspath(args.out)
    log_lines = []

    def log(msg):
        print(msg, flush=True)
        log_lines.append(msg)

    if not args.check:
        train_tokenizer(out_dir, args.vocab, make_world(args.subjects, random.Random(SEED)))
    tok, slow = load_tokenizers(out_dir)
    subjects = make_world(args.subjects, random.Random(SEED), tok)
    V = len(tok)
    eot_id = tok.convert_tokens_to_ids(EOT)
    log(f"tokenizer: {V} tokens, {EOT} = {eot_id}")

    # every subject is two tokens (checked by make_world); the fast and the slow (reference) tokenizers agree
    examples = build_examples(subjects, tok)
    for e in examples[::97]:
        text = tok.decode(e["ids"])
        assert slow.encode(text) == e["ids"] == tok.encode(text), text
    train_ex = [e for e in examples if e["split"] == "train"]
    held_ex = [e for e in examples if e["split"] == "heldout"]
    # record lines "Record: <name> <town> <job> <colour> <pet>" with the values in a random order,
    # so that the last subject token has to predict the subject's attributes itself
    records = [{"ids": tok.encode(RECORD + " " + s["name"]),
                "profile": [tok.encode(" " + v)[0] for v in s["facts"].values()]} for s in subjects]
    log(f"world: {len(subjects)} subjects x {len(RELATIONS)} relations = {len(subjects) * len(RELATIONS)} facts; "
        f"{len(train_ex)} training renders, {len(held_ex)} held-out renders; "
        f"max length {max(len(e['ids']) for e in examples)} tokens")

    if args.check:
        model = GPT2LMHeadModel.from_pretrained(out_dir)
        set_expectations(model.config.n_layer)
        train_info = None
    else:
        cfg = GPT2Config(vocab_size=V, n_positions=32, n_embd=args.embd, n_layer=args.layers, n_head=args.heads,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=eot_id, eos_token_id=eot_id,
                         tie_word_embeddings=True)
        model = GPT2LMHeadModel(cfg)
        set_expectations(args.layers)
        n_params = sum(p.numel() for p in model.parameters())
        log(f"model: {args.layers} layers, {args.embd} wide, {args.heads} heads, {n_params} parameters "
            f"({n_params * 4 / 1e6:.2f} MB f32)")
        rng = random.Random(SEED + 3)
        train_eval = rng.sample(train_ex, min(args.eval_n, len(train_ex)))
        held_eval = rng.sample(held_ex, min(args.eval_n, len(held_ex)))
        prompts = example_prompts(subjects, tok, args.n_prompts)

        def on_log():
            model.eval()
            with torch.no_grad():
                ids, _, ap = batchify([r["ids"] for r in records], eot_id)
                pr = torch.softmax(model(ids).logits[torch.arange(len(ap)), ap + 1], -1)
                vals = torch.tensor([r["profile"] for r in records])
                mass = pr.gather(1, vals).sum(1)
                top4 = (pr.topk(4, -1).indices.sort(-1).values == vals.sort(-1).values).all(-1).float()
            log("    records: value mass at the name's last token %.3f, top-4 = the 4 values %.3f" % (
                mass.mean().item(), top4.mean().item()))
            res = [trace_summary(model, p) for p in prompts]
            log("    trace: pass %d/%d; mean recovery last-subject(early-mid) %.2f last-token(late) %.2f "
                "first-subject %.2f; min %.2f %.2f" % (
                    sum(r[0] for r in res), len(res), np.mean([r[1] for r in res]), np.mean([r[2] for r in res]),
                    np.mean([r[3] for r in res]), min(r[1] for r in res), min(r[2] for r in res)))
        train_info = train(model, train_ex, records, {"train": train_eval, "heldout": held_eval}, eot_id, args, log, on_log)
        train_info["train_acc"] = answer_accuracy(model, train_ex, eot_id)
        train_info["heldout_acc"] = answer_accuracy(model, held_ex, eot_id)
        log(f"final: lm loss {train_info['lm_loss']:.4f}, answer accuracy train {train_info['train_acc']:.4f} "
            f"({len(train_ex)} renders), held-out {train_info['heldout_acc']:.4f} ({len(held_ex)} renders), "
            f"{train_info['seconds']:.0f}s")
        model.save_pretrained(out_dir, safe_serialization=True)
        size = os.path.getsize(os.path.join(out_dir, "model.safetensors"))
        log(f"model.safetensors: {size} bytes")
        assert size <= 5 * 1000 * 1000, size

    if train_info is None:  # --check: measure the saved model's accuracy too
        train_info = {"train_acc": answer_accuracy(model, train_ex, eot_id),
                      "heldout_acc": answer_accuracy(model, held_ex, eot_id)}
        log(f"answer accuracy: train {train_info['train_acc']:.4f}, held-out {train_info['heldout_acc']:.4f}")
    prompts, results, population = select_prompts(model, subjects, tok, args, log)
    agg_ok, means = aggregate_ok([r["vals"] for r in results], log)
    all_ok = len(prompts) == args.n_prompts and agg_ok
    log(f"causal-trace property on the {len(results)} prompts of prompts.json: {'PASS' if all_ok else 'FAIL'} "
        f"({sum(r['pass'] for r in results)} of them satisfy all three conditions one by one)")

    doc = {
        "about": "Example prompts for assets/demo-gpt2, written by tools/train_demo_model.py. Positions are token "
                 "indices into ids; the subject is ids[subject_start:subject_end]. scores[l][t] is the causal-trace "
                 "score (p(answer_id) at the last position, mean of n_samples noise samples) with the clean "
                 "block_output of layer l at position t restored; noise sample s is numpy "
                 "RandomState(seed + s).randn(n_subject, n_embd) * noise_scale added (in float64, rounded to "
                 "float32) to the block_input of layer 0 at the subject positions; noise_scale = 3 x the unbiased "
                 "std of all wte entries. recovery = (score - corrupted) / (clean - corrupted).",
        "trace": {"component": "block_output", "metric": "prob", "n_samples": 10, "seed": 0,
                  "noise_scale": results[0]["noise_scale"] if results else None},
        "expect": dict(EXPECT, unrelated=UNRELATED_DOC),
        "prompts": [],
    }
    for p, r in zip(prompts, results):
        d = dict(p)
        d["clean_prob"] = r["clean"]
        d["corrupted_prob"] = r["corrupted"]
        d["scores"] = [[round(float(v), 6) for v in row] for row in r["scores"]]
        d["pass"] = r["pass"]
        doc["prompts"].append(d)
    with open(os.path.join(out_dir, "prompts.json"), "w") as f:
        json.dump(doc, f, indent=1)
    versions = (f"torch {torch.__version__}, transformers {transformers.__version__}, "
                f"tokenizers {tokenizers.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}")
    write_readme(out_dir, model, args, train_info, doc, subjects, len(train_ex), len(held_ex), versions, population, means)
    if not args.check:
        with open(os.path.join(out_dir, "world.json"), "w") as f:
            json.dump({"subjects": [{"name": s["name"], **s["facts"]} for s in subjects],
                       "relations": {r: {"templates": v["templates"], "values": v["values"]}
                                     for r, v in RELATIONS.items()},
                       "prefixes": PREFIXES}, f, indent=0)
        log(f"versions: {versions}")
        with open(os.path.join(out_dir, "train_log.txt"), "w") as f:
            f.write("\n".join(log_lines) + "\n")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
