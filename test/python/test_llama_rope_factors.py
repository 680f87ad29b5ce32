"""Llama 3's RoPE frequency scaling (`rope_freqs.weight`) against llama.cpp:
a small f32 llama with llama.cpp's SPM vocabulary fixture and per-frequency
factors, evaluated by qcc-perplexity and llama-perplexity on the same text."""

import json
import os
import re
import subprocess

import numpy as np
import pytest

from assets import VOCAB_FIXTURES, llama_tool, require
from qcc_step import ROOT

from qcc import models
from qcc.gguf_header import read_header

TEXT = os.path.join(ROOT, "data", "bierce-heldout.txt")
CTX, CHUNKS = 128, 3
D, HEADS, KV, FF, LAYERS, THETA = 64, 4, 2, 128, 2, 100.0
HEAD_DIM = D // HEADS


def write_model(path, factors):
    """A 2-layer llama in f32, random weights with sharp attention (q and k
    large, so the scores depend strongly on the rotation), the vocabulary of
    llama.cpp's `ggml-vocab-llama-spm.gguf`, and `rope_freqs.weight` =
    `factors` (none: no tensor)."""
    import gguf
    meta, _, _ = read_header(require(os.path.join(VOCAB_FIXTURES,
                                                  "ggml-vocab-llama-spm.gguf")))
    tokens = list(meta["tokenizer.ggml.tokens"])
    vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(2048)
    w.add_embedding_length(D)
    w.add_feed_forward_length(FF)
    w.add_block_count(LAYERS)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(THETA)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([float(s) for s in meta["tokenizer.ggml.scores"]])
    w.add_token_types([int(t) for t in meta["tokenizer.ggml.token_type"]])
    for key, add in (("bos_token_id", w.add_bos_token_id),
                     ("eos_token_id", w.add_eos_token_id),
                     ("unknown_token_id", w.add_unk_token_id)):
        if f"tokenizer.ggml.{key}" in meta:
            add(int(meta[f"tokenizer.ggml.{key}"]))
    rng = np.random.default_rng(7)

    def t(name, rows, cols, std):
        w.add_tensor(name, (rng.standard_normal((rows, cols)) * std).astype(np.float32))

    t("token_embd.weight", vocab, D, 0.5)
    if factors is not None:
        w.add_tensor("rope_freqs.weight", np.asarray(factors, np.float32))
    for i in range(LAYERS):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(D, np.float32))
        t(p + "attn_q.weight", HEADS * HEAD_DIM, D, 0.4)
        t(p + "attn_k.weight", KV * HEAD_DIM, D, 0.4)
        t(p + "attn_v.weight", KV * HEAD_DIM, D, 0.2)
        t(p + "attn_output.weight", D, HEADS * HEAD_DIM, 0.2)
        w.add_tensor(p + "ffn_norm.weight", np.ones(D, np.float32))
        t(p + "ffn_gate.weight", FF, D, 0.2)
        t(p + "ffn_up.weight", FF, D, 0.2)
        t(p + "ffn_down.weight", D, FF, 0.1)
    w.add_tensor("output_norm.weight", np.ones(D, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# llama 3.1's shape of factors (1 for the fast pairs, the scale factor for
# the slow ones, smooth between), with a large factor so that it shows at
# these short contexts.
FACTORS = np.concatenate([np.ones(3), np.linspace(1.0, 16.0, 3), np.full(2, 16.0)])


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("rope")
    with_factors, without = d / "factors.gguf", d / "plain.gguf"
    write_model(with_factors, FACTORS)
    write_model(without, None)
    return str(with_factors), str(without)


def llama_chunks(model):
    p = subprocess.run([llama_tool("llama-perplexity"), "-m", model, "-f", TEXT,
                        "-c", str(CTX), "--chunks", str(CHUNKS), "-t",
                        str(os.cpu_count()), "--no-repack", "-fa", "off",
                        "-ctk", "f32", "-ctv", "f32"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    vals = [float(v) for v in re.findall(r"\[\d+\]([0-9.]+),", p.stdout + p.stderr)]
    assert len(vals) == CHUNKS, (p.stdout + p.stderr)[-2000:]
    return vals


def qcc_ppl(model):
    p = subprocess.run([os.path.join(ROOT, "scripts", "qcc-perplexity"), "--model",
                        model, "--data", TEXT, "--ctx", str(CTX), "--chunks",
                        str(CHUNKS), "--gemm", "f32", "--json"],
                       capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])["ppl"]


def test_the_factors_are_read(model_files):
    cfg, _, _ = models.load(model_files[0])
    np.testing.assert_array_equal(cfg.rope_freq_factors, FACTORS.astype(np.float32))
    assert models.load(model_files[1])[0].rope_freq_factors == ()


# Tolerance: both tools compute this f32 model in f32 (llama.cpp with an f32
# KV cache and no flash attention, qcc with --gemm f32); they differ by
# summation order, ~1e-5.
# The factors move the perplexity by far more than the tolerance (asserted).
TOL = 1e-3


def test_perplexity_with_rope_factors_matches_llama_cpp(model_files):
    with_factors, without = model_files
    ref, ref_plain = llama_chunks(with_factors)[-1], llama_chunks(without)[-1]
    assert abs(ref / ref_plain - 1) > 20 * TOL, (ref, ref_plain)
    ours, ours_plain = qcc_ppl(with_factors), qcc_ppl(without)
    assert abs(ours / ref - 1) < TOL, (ours, ref)
    assert abs(ours_plain / ref_plain - 1) < TOL, (ours_plain, ref_plain)


def test_factors_of_the_wrong_size_are_refused(tmp_path):
    path = tmp_path / "bad.gguf"
    write_model(path, np.ones(5))
    p = subprocess.run([os.path.join(ROOT, "scripts", "qcc-perplexity"), "--model",
                        str(path), "--data", TEXT, "--ctx", str(CTX)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 1, p.stderr
    assert "rope_freqs.weight' has shape [5]" in p.stderr
    assert "Traceback" not in p.stderr
