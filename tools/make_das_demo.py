"""Write the demo model's DAS task, assets/demo-gpt2/das_colour/{train,eval}.jsonl, and its probe
twin, assets/demo-gpt2/das_colour/probe.jsonl.

Question: does a low-rank subspace of the last subject token's residual stream carry the person's
favourite colour? Each example is an interchange: the base prompt is about one person, the source
prompt (same prefix, same template) about another with a different favourite colour; the
intervention writes the source's subspace into the base at the last subject token, and the label is
the source person's colour, which the intervened model should then say (interchange intervention
accuracy, IIA).

    python tools/make_das_demo.py        # standard library only; deterministic

Template "the favourite colour of {S} is" puts the subject's family name (one token, as the
demo's tokenizer was trained to make it) second from the end: position -2 in base and source.
The probe file asks the same question of a linear classifier: one prompt per person and trained
prefix, the activation at the family name (pos -2), the person's colour as the label (`cvene probe`).
Only (template, prefix) pairs the model was trained on are used (the world's held-out quarter is
left out); train and eval use disjoint people as bases.
"""
import json
import os
import random

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "assets", "demo-gpt2")
TEMPLATE = "the favourite colour of {S} is"
N_TRAIN, N_EVAL = 512, 128


def main():
    world = json.load(open(os.path.join(DEMO, "world.json")))
    rel_i = list(world["relations"]).index("colour")
    t_i = world["relations"]["colour"]["templates"].index(TEMPLATE)
    prefixes = [p for p_i, p in enumerate(world["prefixes"]) if (rel_i + t_i + p_i) % 4 != 0]  # trained pairs
    people = world["subjects"]
    rng = random.Random(20261207)
    order = list(range(len(people)))
    rng.shuffle(order)
    split = {"train": order[: len(order) * 3 // 4], "eval": order[len(order) * 3 // 4:]}
    out_dir = os.path.join(DEMO, "das_colour")
    os.makedirs(out_dir, exist_ok=True)
    for name, n in (("train", N_TRAIN), ("eval", N_EVAL)):
        lines = []
        while len(lines) < n:
            b = people[rng.choice(split[name])]
            s = people[rng.choice(split[name])]
            if b["colour"] == s["colour"]:
                continue  # the label must tell an interchange from no intervention
            prefix = rng.choice(prefixes)
            text = lambda who: prefix + " " + TEMPLATE.replace("{S}", who["name"])  # noqa: E731
            lines.append(json.dumps({"base": text(b), "source": text(s), "base_pos": -2, "source_pos": -2,
                                     "label": " " + s["colour"]}))
        with open(os.path.join(out_dir, name + ".jsonl"), "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"{name}: {len(lines)} examples")
    lines = [json.dumps({"text": p + " " + TEMPLATE.replace("{S}", who["name"]), "pos": -2, "label": who["colour"]})
             for who in people for p in prefixes[:2]]
    with open(os.path.join(out_dir, "probe.jsonl"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"probe: {len(lines)} examples")


if __name__ == "__main__":
    main()
