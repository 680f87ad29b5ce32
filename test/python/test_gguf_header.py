"""qcc.gguf_header (the frontend's fast header reader) against the `gguf`
package, llama.cpp's own reader and the oracle for file layout: the same
metadata and tensor table for the Gemma 3 model and a tokenizer fixture
(ggml's golden file holds types the package does not know); malformed headers give HeaderError, never a crash."""

import os

import gguf
import numpy as np
import pytest

from assets import VOCAB_FIXTURES, gemma3, require
from qcc_step import GOLDEN

from qcc.gguf_header import HeaderError, read_header, read_tensor_bytes


def reference(path):
    r = gguf.GGUFReader(path)
    meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    tensors = [(t.name, t.tensor_type.name, tuple(int(d) for d in t.shape),
                int(t.data_offset)) for t in r.tensors]
    return meta, tensors, r


def same_value(a, b):
    if isinstance(b, float) or (isinstance(b, list) and b and isinstance(b[0], float)):
        return np.array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))
    return a == b


@pytest.mark.parametrize("which", ["gemma3", "fixture"])
def test_header_equals_gguf_package(which):
    path = {"gemma3": gemma3,
            "fixture": lambda: require(os.path.join(VOCAB_FIXTURES,
                                                    "ggml-vocab-llama-spm.gguf"))}[which]()
    meta, tensors, start = read_header(path)
    want_meta, want_tensors, r = reference(path)
    assert set(meta) == set(want_meta)
    for k, v in want_meta.items():
        assert same_value(meta[k], v), k
    assert len(tensors) == len(want_tensors)
    for (n, ty, ne, off), (wn, wty, wne, woff) in zip(tensors, want_tensors):
        assert (n, ty, ne) == (wn, wty, wne)
        assert start + off == woff


def test_malformed_headers(tmp_path):
    good = open(GOLDEN, "rb").read()
    cases = {"empty": b"", "magic": b"GGUX" + good[4:], "truncated": good[:200],
             "version": good[:4] + (9).to_bytes(4, "little") + good[8:],
             "huge-count": good[:8] + (2 ** 62).to_bytes(8, "little") + good[16:]}
    for name, data in cases.items():
        p = tmp_path / f"{name}.gguf"
        p.write_bytes(data)
        with pytest.raises(HeaderError):
            read_header(str(p))


def test_tensor_bytes_equal_gguf_package():
    """read_tensor_bytes (a view of the mapped file) against gguf-py's
    tensor data, for a q8_0, a q4_K, a q6_K and an f32 tensor of Gemma 3."""
    path = gemma3()
    theirs = {t.name: t for t in gguf.GGUFReader(path).tensors}
    names = ["token_embd.weight", "blk.0.attn_norm.weight"]
    names += [n for n, t in theirs.items() if t.tensor_type.name in ("Q4_K", "Q6_K")][:2]
    for name in names:
        type_name, data = read_tensor_bytes(path, name)
        t = theirs[name]
        assert type_name == t.tensor_type.name
        assert data.nbytes == t.n_bytes
        assert np.array_equal(data, np.asarray(t.data).view(np.uint8).reshape(-1)), name
    with pytest.raises(HeaderError, match="no tensor 'nope'"):
        read_tensor_bytes(path, "nope")
