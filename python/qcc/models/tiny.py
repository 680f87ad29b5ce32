"""A small llama-architecture model with a byte vocabulary, written as GGUF:
the bundled default that `make demo` trains.

    python -m qcc.models.tiny OUT.gguf [--format q8_0] [--d-model 256]
        [--layers 4] [--heads 4] [--kv-heads 2] [--ff 768] [--seed 0]

Weights are random (seeded): Gaussian with standard deviation 0.02, the
residual projections (attn_output, ffn_down) scaled by 1/√(2·layers) as in
GPT-2, norms at one. The file is written in f32 with the `gguf` package
(llama.cpp's writer), then every 2-D weight is quantized to `--format` by
`qcc-gguf quantize`; norms stay f32. The vocabulary is the 256 byte values,
named as GPT-2's byte-level tokens, so each byte of a text is one token."""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

from ..step import find_tool
from ..tokenizer import bytes_to_unicode

WEIGHTS_2D = (r"^(token_embd|output)\.weight$|"
              r"^blk\.[0-9]+\.(attn_(q|k|v|output)|ffn_(gate|up|down))\.weight$")


def write_f32(path, d_model=256, n_layer=4, n_head=4, n_head_kv=2, d_ff=768,
              vocab=256, context=512, seed=0, name="qcc-demo-bytes"):
    import gguf
    rng = np.random.default_rng(seed)
    head_dim = d_model // n_head
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(name)
    w.add_context_length(context)
    w.add_embedding_length(d_model)
    w.add_feed_forward_length(d_ff)
    w.add_block_count(n_layer)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    m = bytes_to_unicode()
    w.add_tokenizer_model("gpt2")
    w.add_token_list([m[b] for b in range(256)] +
                     [f"<extra_{i}>" for i in range(vocab - 256)])
    w.add_token_types([1] * vocab)

    resid = 0.02 / np.sqrt(2 * n_layer)

    def t(name, rows, cols, std=0.02):
        w.add_tensor(name, (rng.standard_normal((rows, cols)) * std).astype(np.float32))

    t("token_embd.weight", vocab, d_model)
    for i in range(n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(d_model, np.float32))
        t(p + "attn_q.weight", n_head * head_dim, d_model)
        t(p + "attn_k.weight", n_head_kv * head_dim, d_model)
        t(p + "attn_v.weight", n_head_kv * head_dim, d_model)
        t(p + "attn_output.weight", d_model, n_head * head_dim, resid)
        w.add_tensor(p + "ffn_norm.weight", np.ones(d_model, np.float32))
        t(p + "ffn_gate.weight", d_ff, d_model)
        t(p + "ffn_up.weight", d_ff, d_model)
        t(p + "ffn_down.weight", d_model, d_ff, resid)
    w.add_tensor("output_norm.weight", np.ones(d_model, np.float32))
    t("output.weight", vocab, d_model)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def make_model(path, fmt="q8_0", **kw):
    """Writes the model with its 2-D weights in `fmt` (f32: unquantized)."""
    if fmt == "f32":
        write_f32(path, **kw)
        return
    with tempfile.TemporaryDirectory(prefix="qcc-tiny-") as d:
        src = os.path.join(d, "f32.gguf")
        write_f32(src, **kw)
        proc = subprocess.run([find_tool("qcc-gguf"), "quantize", src, path,
                               "--type", fmt, "--tensors", WEIGHTS_2D],
                              capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"qcc-gguf quantize failed:\n{proc.stderr}")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m qcc.models.tiny",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--format", default="q8_0",
                    help="GGUF type of the 2-D weights (q8_0, q4_K, f32, ...)")
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ff", type=int, default=768)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    make_model(a.out, a.format, d_model=a.d_model, n_layer=a.layers,
               n_head=a.heads, n_head_kv=a.kv_heads, d_ff=a.ff, seed=a.seed)
    n = (2 * 256 * a.d_model + a.d_model +
         a.layers * (2 * a.d_model + 2 * a.d_model * a.d_model +
                     2 * a.d_model * (a.d_model // a.heads) * a.kv_heads +
                     3 * a.d_model * a.ff))
    print(f"wrote {a.out}: llama, {a.layers} layers, d_model {a.d_model}, "
          f"{a.heads} heads ({a.kv_heads} kv), ffn {a.ff}, byte vocabulary, "
          f"{n / 1e6:.2f}M parameters, 2-D weights in {a.format}")


if __name__ == "__main__":
    sys.exit(main())
