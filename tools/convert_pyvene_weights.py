"""Convert trained intervention weights between pyvene's and cvene's files.

pyvene's IntervenableModel.save (and pyreft's) writes config.json plus one intkey_<key>.bin per
intervention: torch.save of the intervention's state_dict. cvene writes the same state_dict, under
the same names and dtypes (I64 buffers included), as intkey_<key>.safetensors, because the C
library does not read pickles. This tool turns one into the other, tensor for tensor:

    python tools/convert_pyvene_weights.py DIR                # every .bin in DIR -> .safetensors
    python tools/convert_pyvene_weights.py DIR --to-pyvene    # every .safetensors -> .bin

after which `IntervenableModel.load(DIR, model)` (pyvene; pyreft's ReftModel.load for LoReFT)
loads a cvene-trained directory, and `cvene train --init DIR/intkey_<key>.safetensors` (or the
C API's cvene_trainer_load) starts from a pyvene-trained one. config.json is the same file for
both and is left alone. Existing outputs are replaced; nothing else is touched.
Needs torch and safetensors (tools/requirements.txt).
"""
import argparse
import glob
import os
import sys

import torch
from safetensors.torch import load_file, save_file


def to_safetensors(path):
    sd = torch.load(path, map_location="cpu", weights_only=True)
    bad = [k for k, v in sd.items() if not torch.is_tensor(v)]
    if bad:
        raise SystemExit(f"{path}: entries that are not tensors: {bad}")
    out = path[: -len(".bin")] + ".safetensors"
    save_file({k: v.detach().contiguous() for k, v in sd.items()}, out, metadata={"producer": "convert_pyvene_weights"})
    return out, len(sd)


def to_bin(path):
    sd = load_file(path)
    out = path[: -len(".safetensors")] + ".bin"
    torch.save(dict(sd), out)
    return out, len(sd)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="a directory written by pyvene's save or by cvene train")
    ap.add_argument("--to-pyvene", action="store_true", help="safetensors -> .bin (default: .bin -> safetensors)")
    args = ap.parse_args()
    if not os.path.isdir(args.dir):
        raise SystemExit(f"{args.dir}: not a directory")
    pattern = "intkey_*.safetensors" if args.to_pyvene else "intkey_*.bin"
    files = sorted(glob.glob(os.path.join(glob.escape(args.dir), pattern)))
    if not files:
        raise SystemExit(f"{args.dir}: no {pattern} files")
    for f in files:
        out, n = (to_bin if args.to_pyvene else to_safetensors)(f)
        print(f"{os.path.basename(f)} -> {os.path.basename(out)} ({n} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
