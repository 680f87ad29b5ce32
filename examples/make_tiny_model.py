#!/usr/bin/env python3
"""Writes a small llama-shaped GGUF with f32 weights (random, seeded), the
bundled default that `make demo` quantizes and inspects.

Usage: make_tiny_model.py OUT.gguf [--seed N]

It is written with the PyPI `gguf` package (llama.cpp's own writer), so the
demo also shows that qcc reads files it did not write itself."""

import argparse

import gguf
import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    d_model, d_ff, vocab, n_layer = 256, 512, 256, 2
    w = gguf.GGUFWriter(args.out, "llama")
    w.add_name("qcc-tiny-demo")
    w.add_context_length(256)
    w.add_embedding_length(d_model)
    w.add_feed_forward_length(d_ff)
    w.add_block_count(n_layer)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    def weight(name, rows, cols):
        # Gaussian at typical LLM scale, with a few outliers per row.
        t = rng.normal(0, 0.02, size=(rows, cols)).astype(np.float32)
        idx = rng.integers(0, cols, size=rows)
        t[np.arange(rows), idx] *= 20
        w.add_tensor(name, t)

    weight("token_embd.weight", vocab, d_model)
    for i in range(n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(d_model, np.float32))
        for n in ("attn_q", "attn_k", "attn_v", "attn_output"):
            weight(p + n + ".weight", d_model, d_model)
        w.add_tensor(p + "ffn_norm.weight", np.ones(d_model, np.float32))
        weight(p + "ffn_gate.weight", d_ff, d_model)
        weight(p + "ffn_up.weight", d_ff, d_model)
        weight(p + "ffn_down.weight", d_model, d_ff)
    w.add_tensor("output_norm.weight", np.ones(d_model, np.float32))
    weight("output.weight", vocab, d_model)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
