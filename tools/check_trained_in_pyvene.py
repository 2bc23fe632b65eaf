"""Load what `cvene train` wrote into pyvene and evaluate it there: the same IIA and loss?

    python tools/check_trained_in_pyvene.py --model assets/demo-gpt2 --trained OUT \
        --data assets/demo-gpt2/das_colour/eval.jsonl [--expect-iia 0.6094 --expect-loss 2.4103]

Copies OUT to a temporary directory, converts its intkey_*.safetensors to pyvene's .bin
(tools/convert_pyvene_weights.py), loads it with pyvene.IntervenableModel.load onto the model
(transformers' GPT2LMHeadModel, eager attention, f32), and runs every example of the JSONL file
(the `cvene train` format; text is tokenised with the model directory's tokenizer.json) one by one
through pyvene. It prints pyvene's IIA (argmax at the label position equals the label) and mean
cross-entropy; with --expect-* it exits 1 unless they match cvene's (IIA exactly, loss within 1e-4
relative: f32 forward passes of two implementations). pyvene types only (pyreft is not installed
here: LoReFT's files load with pyreft's ReftModel instead).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import torch
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_pyvene_weights  # noqa: E402


def ids_of(tok, x):
    return list(x) if isinstance(x, list) else tok(x, add_special_tokens=False)["input_ids"]


def position(p, n, field, line):
    if p == "last":
        p = -1
    if isinstance(p, list):
        if len(p) != 1:
            raise SystemExit(f"line {line}: {field}: one position per example here")
        p = p[0]
    p = p + n if p < 0 else p
    if not 0 <= p < n:
        raise SystemExit(f"line {line}: {field} {p} outside the {n} tokens")
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--trained", required=True, help="the --out directory of cvene train")
    ap.add_argument("--data", required=True, help="JSONL examples (cvene train's format)")
    ap.add_argument("--expect-iia", type=float)
    ap.add_argument("--expect-loss", type=float)
    args = ap.parse_args()
    import pyvene as pv  # noqa: E402  (after argparse: pyvene prints on import)

    torch.set_num_threads(1)
    model = GPT2LMHeadModel.from_pretrained(args.model, attn_implementation="eager", torch_dtype=torch.float32).eval()
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(args.model, "tokenizer.json"))
    with tempfile.TemporaryDirectory() as td:
        d = os.path.join(td, "trained")
        shutil.copytree(args.trained, d)
        for f in sorted(os.listdir(d)):
            if f.startswith("intkey_") and f.endswith(".safetensors"):
                convert_pyvene_weights.to_bin(os.path.join(d, f))
                os.remove(os.path.join(d, f))
        ivm = pv.IntervenableModel.load(d, model)
    ivm.disable_model_gradients()
    right, total, loss_sum = 0, 0, 0.0
    with torch.no_grad(), open(args.data) as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            ex = json.loads(line)
            base, src = ids_of(tok, ex["base"]), ids_of(tok, ex["source"])
            bpos = position(ex.get("base_pos", "last"), len(base), "base_pos", line_no)
            spos = position(ex.get("source_pos", "last"), len(src), "source_pos", line_no)
            lpos = position(ex.get("label_pos", -1), len(base), "label_pos", line_no)
            label = ex["label"]
            label = label if isinstance(label, int) else ids_of(tok, label)
            if isinstance(label, list):
                if len(label) != 1:
                    raise SystemExit(f"line {line_no}: label {ex['label']!r} is {len(label)} tokens")
                label = label[0]
            n_iv = len(ivm.interventions)
            _, out = ivm({"input_ids": torch.tensor([base])}, [{"input_ids": torch.tensor([src])}] * n_iv,
                         {"sources->base": ([[[spos]]] * n_iv, [[[bpos]]] * n_iv)})
            logits = out.logits[0, lpos]
            loss_sum += torch.nn.functional.cross_entropy(logits[None], torch.tensor([label])).item()
            right += int(logits.argmax().item() == label)
            total += 1
    iia, loss = right / total, loss_sum / total
    print(f"pyvene {pv.__version__ if hasattr(pv, '__version__') else ''} on {total} examples: IIA {iia:.4f}, "
          f"loss {loss:.4f}")
    ok = True
    if args.expect_iia is not None and round(iia, 4) != round(args.expect_iia, 4):
        print(f"IIA differs: cvene {args.expect_iia:.4f}, pyvene {iia:.4f}")
        ok = False
    if args.expect_loss is not None and abs(loss - args.expect_loss) > 1e-4 * abs(loss) + 5e-5:
        print(f"loss differs: cvene {args.expect_loss:.4f}, pyvene {loss:.4f}")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
