"""`qcc-gguf imatrix` (qcc-imatrix) on Gemma 3 270M against llama.cpp's
llama-imatrix on the same text and context: the same matrices, the same
counts, per-column importances that agree; the file it writes is one that
llama-quantize --imatrix and qcc-gguf quantize --imatrix accept; and the
one-line errors for input it cannot use."""

import os
import subprocess

import numpy as np
import pytest

from assets import gemma3, llama_tool, run_llama
from qcc_step import ROOT

from qcc import imatrix

TEXT = os.path.join(ROOT, "data", "devils-dictionary.txt")
BUILD = os.environ.get("QCC_BUILD_DIR", os.path.join(ROOT, "build"))
QCC_GGUF = os.path.join(BUILD, "bin", "qcc-gguf")
CTX, CHUNKS = 128, 6


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("imatrix") / "calib.txt"
    with open(TEXT, encoding="utf-8") as f:
        p.write_text(f.read()[:12000], encoding="utf-8")
    return str(p)


def qcc_gguf(*args, env=None):
    return subprocess.run([QCC_GGUF, *map(str, args)], capture_output=True,
                          text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def qcc_file(text_file, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("imatrix") / "qcc.imatrix.gguf")
    # --gemm f32: exact matrix products (the default).
    p = qcc_gguf("imatrix", "--model", gemma3(), "--data", text_file,
                 "--ctx", CTX, "--chunks", CHUNKS, "--batch", 2, "-o", out)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"{CHUNKS} chunks of {CTX} tokens" in p.stdout
    return out


@pytest.fixture(scope="module")
def llama_file(text_file, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("imatrix") / "llama.imatrix.gguf")
    run_llama("llama-imatrix", "-m", gemma3(), "-f", text_file, "-c", CTX,
              "--chunks", CHUNKS, "-o", out, "--no-ppl", "--no-repack",
              "-t", os.cpu_count())
    return out


# Tolerance. llama.cpp rounds the activations to 8-bit blocks before its
# quantized dot products and keeps K and V in f16, so the activations that
# reach each matrix differ from qcc's f32 ones by a fraction of a percent,
# and more in the last layers where those differences have accumulated.
# Over a matrix's columns the mean squares agree to REL_TOL (relative L2
# distance; measured at most 2.3%, in the attention outputs of the global
# layers, on this text), MEDIAN_TOL for the median matrix (measured 0.5%),
# and the first layer's q, k and v, which read the normed embeddings before
# any of llama.cpp's roundings, to FIRST_TOL (measured 1.2e-6). A wrong
# input (the pre-norm activations, another layer's, a missing BOS or
# embedding scale) is off by far more (tens of percent or more).
REL_TOL, MEDIAN_TOL, FIRST_TOL = 0.04, 0.01, 1e-4


def test_matches_llama_imatrix(qcc_file, llama_file):
    ours, theirs = imatrix.read(qcc_file), imatrix.read(llama_file)
    assert sorted(ours) == sorted(theirs)
    assert len(ours) == 18 * 7
    worst = []
    for name, (sums, counts) in theirs.items():
        q_sums, q_counts = ours[name]
        assert q_sums.shape == sums.shape, name
        np.testing.assert_array_equal(q_counts, counts, err_msg=name)
        assert counts[0] == CHUNKS * CTX
        a, b = q_sums[0] / q_counts[0], sums[0] / counts[0]
        rel = np.linalg.norm(a - b) / np.linalg.norm(b)
        worst.append((rel, name))
    worst.sort(reverse=True)
    assert worst[0][0] < REL_TOL, worst[:5]
    assert worst[len(worst) // 2][0] < MEDIAN_TOL, worst[len(worst) // 2]
    first = [r for r, n in worst if n.startswith("blk.0.attn_")
             and n[11:12] in "qkv"]
    assert len(first) == 3 and max(first) < FIRST_TOL, first


def test_metadata(qcc_file, text_file):
    import gguf
    r = gguf.GGUFReader(qcc_file)

    def value(key):
        f = r.fields[key]
        return f.contents()

    assert value("general.type") == "imatrix"
    assert value("imatrix.chunk_count") == CHUNKS
    assert value("imatrix.chunk_size") == CTX
    assert value("imatrix.datasets") == [text_file]


def test_llama_quantize_accepts_it(qcc_file, tmp_path):
    """llama-quantize --imatrix reads qcc's file: requantize to IQ2_XXS,
    a type llama.cpp refuses to make without an importance matrix, and the
    result loads (qcc-gguf verify)."""
    out = str(tmp_path / "iq2.gguf")
    p = subprocess.run([llama_tool("llama-quantize"), "--allow-requantize",
                        "--imatrix", qcc_file, gemma3(), out, "IQ2_XXS", "2"],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, (p.stdout + p.stderr)[-2000:]
    assert "imatrix" in p.stdout + p.stderr
    v = qcc_gguf("verify", out)
    assert v.returncode == 0, v.stderr
    # qcc-gguf quantize --types-from makes the same mix from the same model:
    # each tensor of llama.cpp's type and size.
    mine = str(tmp_path / "qcc-iq2.gguf")
    p = qcc_gguf("quantize", gemma3(), mine, "--types-from", out,
                 "--imatrix", qcc_file)
    assert p.returncode == 0, p.stderr[-2000:]
    import gguf
    theirs = {t.name: t for t in gguf.GGUFReader(out).tensors}
    ours = {t.name: t for t in gguf.GGUFReader(mine).tensors}
    assert sorted(ours) == sorted(theirs)
    for name, t in theirs.items():
        assert ours[name].tensor_type == t.tensor_type, name
        assert ours[name].n_bytes == t.n_bytes, name
    assert len({t.tensor_type for t in theirs.values()}) > 3  # a real mix


def test_qcc_gguf_quantize_accepts_it(qcc_file, tmp_path):
    out = tmp_path / "iq2.gguf"
    p = qcc_gguf("quantize", gemma3(), out, "--type", "iq2_xxs",
                 "--tensors", r"blk\.0\.ffn_down\.weight", "--imatrix", qcc_file)
    assert p.returncode == 0, p.stderr
    info = qcc_gguf("info", out, "--json")
    assert '"iq2_xxs"' in info.stdout.lower()


@pytest.mark.parametrize("case", ["short", "no_model", "no_folder", "onto_model"])
def test_errors(case, text_file, tmp_path):
    args = ["--model", gemma3(), "--data", text_file, "--ctx", CTX,
            "-o", tmp_path / "out.gguf"]
    want = {"short": "needs at least", "no_model": "no-such.gguf",
            "no_folder": "does not exist", "onto_model": "overwrite the model"}
    if case == "short":
        short = tmp_path / "short.txt"
        short.write_text("A few words.", encoding="utf-8")
        args[3] = short
    elif case == "no_model":
        args[1] = tmp_path / "no-such.gguf"
    elif case == "no_folder":
        args[-1] = tmp_path / "missing" / "out.gguf"
    else:
        args[-1] = gemma3()
    p = qcc_gguf("imatrix", *args)
    assert p.returncode == 1, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qcc-gguf imatrix: error:"), p.stderr
    assert want[case] in lines[0]
    assert not (tmp_path / "out.gguf").exists()
