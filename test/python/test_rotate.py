"""`qcc-gguf rotate`: the randomized Hadamard rotation folded into each
layer's value and output projections leaves the model's function
unchanged (Gemma 3's perplexity through qcc's exact f32 forward pass, and
a tiny llama's logits), is orthogonal (row norms kept), and refuses what it
cannot rotate with one line."""

import os
import subprocess

import numpy as np
import pytest

from assets import gemma3
from qcc_step import ROOT

from qcc import models, train
from qcc.cli import perplexity as ppl_cli
from qcc.compiler import compile_mlir
from qcc.models import tiny
from qcc.runtime import Session

BUILD = os.environ.get("QCC_BUILD_DIR", os.path.join(ROOT, "build"))
QCC_GGUF = os.path.join(BUILD, "bin", "qcc-gguf")
TEXT = os.path.join(ROOT, "data", "bierce-heldout.txt")


def qcc_gguf(*args):
    return subprocess.run([QCC_GGUF, *map(str, args)], capture_output=True,
                          text=True, timeout=600)


def decoded(path):
    import gguf
    from gguf.quants import dequantize
    return {t.name: dequantize(t.data, t.tensor_type).reshape(
        [int(d) for d in reversed(t.shape)]).astype(np.float64)
        for t in gguf.GGUFReader(path).tensors if "attn_" in t.name}


def test_gemma3_function_unchanged(tmp_path):
    out = tmp_path / "rot.gguf"
    p = qcc_gguf("rotate", gemma3(), out, "--seed", 7)
    assert p.returncode == 0, p.stderr
    with open(TEXT, encoding="utf-8") as f:
        text = f.read()
    # --gemm f32: exact products, so the two files differ only by float
    # rounding of the rotation (measured: equal to 4 decimals).
    a, _, _ = ppl_cli.perplexity(gemma3(), text, 128, 1, 3, gemm="f32")
    b, _, _ = ppl_cli.perplexity(str(out), text, 128, 1, 3, gemm="f32")
    assert b == pytest.approx(a, rel=1e-4)
    before, after = decoded(gemma3()), decoded(str(out))
    for name in ("blk.0.attn_output.weight", "blk.17.attn_v.weight"):
        assert not np.allclose(after[name], before[name], atol=1e-3), name
    # W_o' = W_o·Hᵀ keeps each row's norm; W_v' = H·W_v each column's.
    o0, o1 = before["blk.3.attn_output.weight"], after["blk.3.attn_output.weight"]
    np.testing.assert_allclose(np.linalg.norm(o1, axis=1),
                               np.linalg.norm(o0, axis=1), rtol=1e-5)
    v0, v1 = before["blk.3.attn_v.weight"], after["blk.3.attn_v.weight"]
    np.testing.assert_allclose(np.linalg.norm(v1, axis=0),
                               np.linalg.norm(v0, axis=0), rtol=1e-5)
    # Everything else is copied: the q projections, byte for byte.
    np.testing.assert_array_equal(after["blk.3.attn_q.weight"],
                                  before["blk.3.attn_q.weight"])


def logits(path, x):
    cfg, model, _ = models.load(path)
    so, _ = compile_mlir(train.build_forward(model, 1, x.shape[1]), ["-O0"])
    with Session(so, path, "forward") as s:
        s.set_input("tokens", x)
        s.run()
        return s.result("logits", np.float32)


def test_tiny_llama_grouped_heads(tmp_path):
    """4 query heads over 2 key/value heads of 16: the same logits."""
    src = str(tmp_path / "tiny.gguf")
    tiny.make_model(src, "q8_0", d_model=64, n_layer=2, n_head=4, n_head_kv=2,
                    d_ff=128)
    out = tmp_path / "rot.gguf"
    p = qcc_gguf("rotate", src, out)
    assert p.returncode == 0, p.stderr
    x = np.arange(1, 17, dtype=np.int32).reshape(1, 16) * 7 % 256
    np.testing.assert_allclose(logits(str(out), x), logits(src, x),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", ["head_size", "same_file", "no_file", "seed"])
def test_errors(tmp_path, case):
    src = str(tmp_path / "tiny.gguf")
    # Heads of 24: no Hadamard matrix of that size.
    tiny.make_model(src, "f32", d_model=48, n_layer=1, n_head=2, n_head_kv=1,
                    d_ff=64)
    out = tmp_path / "out.gguf"
    args, code, want = {
        "head_size": ([src, out], 1, "is not a power of two"),
        "same_file": ([src, src], 1, "it is the input file"),
        "no_file": ([tmp_path / "none.gguf", out], 1, "none.gguf"),
        "seed": ([src, out, "--seed", "x"], 2, "non-negative integer"),
    }[case]
    p = qcc_gguf("rotate", *args)
    assert p.returncode == code, p.stderr
    assert want in p.stderr.splitlines()[0]
    assert not out.exists()
