"""Shared helpers: the repository's fixtures (written by transformers / pyvene, tools/make_*.py) and
a safetensors reader in numpy (the format is an 8-byte header length, a JSON header, raw data)."""
import json
import struct
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures"
DEMO = ROOT / "assets" / "demo-gpt2"
_DT = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I32": np.int32, "I64": np.int64, "BF16": np.uint16}


def read_safetensors(path):
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=_DT[v["dtype"]]).reshape(v["shape"])
    return out


def rel_err(got, want):
    """max |got - want| over the reference's largest magnitude"""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


@pytest.fixture(scope="session")
def small():
    import cvene
    m = cvene.load(FIXTURES / "gpt2" / "small" / "model")
    yield m
    m.close()


@pytest.fixture(scope="session")
def demo():
    import cvene
    m = cvene.load(DEMO)
    yield m
    m.close()


def write_safetensors(path, tensors):
    """{name: float32 array} as a safetensors file"""
    header, blobs, off = {}, [], 0
    for k, v in tensors.items():
        b = np.ascontiguousarray(v, dtype=np.float32).tobytes()
        header[k] = {"dtype": "F32", "shape": list(np.shape(v)), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))
