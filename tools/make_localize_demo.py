"""Write the demo model's binary localisation task (issue #14's experiment, the analogue of the pyvene
paper's "<name> walked because" -> he / she on Pythia-6.9B): assets/demo-gpt2/localize_binary/
{train,eval,probe}.jsonl.

The binary attribute: among the demo world's people whose favourite colour is white or pink (the two
commonest colours), which of the two. A DAS example is an interchange between two such people of
different colours in "PREFIX, the favourite colour of NAME is": the label is the source person's
colour. The probe file labels one prompt per person and prefix with the colour. Positions are left
to the grid (`cvene train --grid-positions`, `cvene probe --positions`): -1 is "is", -2 the family
name, -3 and -4 the title and "of" for one-token titles.

    python3 tools/make_localize_demo.py     # standard library only; deterministic

Only (template, prefix) pairs the model was trained on are used; train and eval use disjoint people.
"""
import json
import os
import random

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "assets", "demo-gpt2")
TEMPLATE = "the favourite colour of {S} is"
COLOURS = ("white", "pink")
N_TRAIN, N_EVAL = 256, 64


def main():
    world = json.load(open(os.path.join(DEMO, "world.json")))
    rel_i = list(world["relations"]).index("colour")
    t_i = world["relations"]["colour"]["templates"].index(TEMPLATE)
    prefixes = [p for p_i, p in enumerate(world["prefixes"]) if (rel_i + t_i + p_i) % 4 != 0]  # trained pairs
    people = [s for s in world["subjects"] if s["colour"] in COLOURS]
    rng = random.Random(20261207)
    rng.shuffle(people)
    split = {"train": people[: len(people) * 3 // 4], "eval": people[len(people) * 3 // 4:]}
    out_dir = os.path.join(DEMO, "localize_binary")
    os.makedirs(out_dir, exist_ok=True)
    text = lambda prefix, who: prefix + " " + TEMPLATE.replace("{S}", who["name"])  # noqa: E731
    for name, n in (("train", N_TRAIN), ("eval", N_EVAL)):
        lines = []
        while len(lines) < n:
            b, s = rng.choice(split[name]), rng.choice(split[name])
            if b["colour"] == s["colour"]:
                continue
            prefix = rng.choice(prefixes)
            lines.append(json.dumps({"base": text(prefix, b), "source": text(prefix, s), "base_pos": -2,
                                     "source_pos": -2, "label": " " + s["colour"]}))
        with open(os.path.join(out_dir, name + ".jsonl"), "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"{name}: {len(lines)} examples")
    lines = [json.dumps({"text": text(p, who), "label": who["colour"]}) for who in people for p in prefixes[:4]]
    with open(os.path.join(out_dir, "probe.jsonl"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"probe: {len(lines)} examples ({len(people)} people)")


if __name__ == "__main__":
    main()
