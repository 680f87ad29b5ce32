#!/usr/bin/env python3
"""A model written in Python, trained through its quantized weights.

A small byte-level language model that is not a llama: token embedding,
a causal "bag of the last K bytes" mixer (each position adds the
embeddings of the K previous bytes, weighted per offset), a GELU MLP and
an output projection. Its weights are written as a GGUF file (the `gguf`
package), the 2-D ones quantized to q8_0 by qcc-gguf; the frontend traces
the model, differentiates it and builds one training step (qcc.train:
STE + AdamW + carry update per quantized weight), which the runtime binds to
the file and runs.

    examples/custom_model.py OUT_DIR [--steps 60] [-O 1]
"""

import argparse
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

import qcc  # noqa: E402
from qcc import F, nn, optim, train  # noqa: E402
from qcc.compiler import compile_mlir  # noqa: E402
from qcc.runtime import Session  # noqa: E402

VOCAB, DIM, HIDDEN, K = 256, 64, 256, 4


class BytesMLP(nn.Module):
    def __init__(self, fmt):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM, "embed.weight", fmt)
        self.mix = nn.Parameter("mix.weight", (K, DIM))        # f32, per offset
        self.up = nn.Linear(DIM, HIDDEN, name="up.weight", dtype=fmt)
        self.down = nn.Linear(HIDDEN, DIM, name="down.weight", dtype=fmt)
        self.norm = nn.RMSNorm(DIM, 1e-5, "norm.weight")
        self.out = nn.Linear(DIM, VOCAB, name="out.weight", dtype=fmt)

    def forward(self, tokens):
        b, t = tokens.shape
        e = self.embed(tokens)                                  # [B, T, D]
        # h[t] = Σ_k mix[k] · e[t - k]: K shifts as [T, T] matrices with ones
        # at [i, i - k], and row k of mix by a one-hot; both are inputs the
        # host sets once.
        g = qcc.ir.current_graph()
        mix = self.mix.traced()
        h = None
        for k in range(K):
            shift = g.input(f"shift{k}", (t, t))
            select = g.input(f"select{k}", (K,))
            term = F.einsum("ij,bjd->bid", shift, e) * F.einsum("kd,k->d", mix, select)
            h = term if h is None else h + term
        h = h + self.down(F.gelu(self.up(h)))
        return self.out(self.norm(h))


def write_model(path, fmt, seed=0):
    import gguf
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path + ".f32", "bytes-mlp")
    w.add_tensor("embed.weight", (rng.standard_normal((VOCAB, DIM)) * 0.1).astype(np.float32))
    w.add_tensor("mix.weight", np.full((K, DIM), 1.0 / K, np.float32))
    w.add_tensor("up.weight", (rng.standard_normal((HIDDEN, DIM)) / np.sqrt(DIM)).astype(np.float32))
    w.add_tensor("down.weight", (rng.standard_normal((DIM, HIDDEN)) * 0.02).astype(np.float32))
    w.add_tensor("norm.weight", np.ones(DIM, np.float32))
    w.add_tensor("out.weight", (rng.standard_normal((VOCAB, DIM)) * 0.02).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    subprocess.run([qcc.find_tool("qcc-gguf"), "quantize", path + ".f32", path,
                    "--type", fmt, "--tensors", r"^(embed|up|down|out)\.weight$"],
                   check=True, capture_output=True)
    os.unlink(path + ".f32")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--format", default="q8_0")
    ap.add_argument("-O", dest="opt", type=int, default=1)
    a = ap.parse_args(argv)
    os.makedirs(a.out_dir, exist_ok=True)
    path = os.path.join(a.out_dir, f"bytes-mlp-{a.format}.gguf")
    write_model(path, a.format)

    B, T = 8, 32
    model = BytesMLP(a.format)
    prog = train.build_train_step(model, B, T, train.TrainOptions(), vocab=VOCAB)
    so, _ = compile_mlir(prog.text, [f"-O{a.opt}"])
    corpus = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data",
                          "devils-dictionary.txt")
    data = np.frombuffer(open(corpus, "rb").read(), np.uint8).astype(np.int32)
    rng = np.random.default_rng(0)
    losses = []
    with Session(so, path) as s:
        for k in range(K):
            s.set_input(f"shift{k}", np.eye(T, k=-k, dtype=np.float32))
            s.set_input(f"select{k}", np.eye(K, dtype=np.float32)[k])
        for step in range(a.steps):
            st = rng.integers(0, len(data) - T - 1, B)
            win = np.stack([data[i:i + T + 1] for i in st])
            s.set_input("tokens", np.ascontiguousarray(win[:, :-1]))
            s.set_input("targets", np.ascontiguousarray(win[:, 1:]))
            s.set_input("lr", np.float32(optim.warmup_cosine(step, 1e-2, 5, a.steps, 1e-3)))
            b1, b2 = optim.adam_bias_corrections(step)
            s.set_input("adam.bc1", np.float32(b1))
            s.set_input("adam.bc2", np.float32(b2))
            s.run()
            losses.append(float(s.result("loss")[0]))
            if step % 10 == 0 or step == a.steps - 1:
                print(f"step {step + 1:3d}  loss {losses[-1]:.4f}", flush=True)
        s.save(os.path.join(a.out_dir, f"bytes-mlp-{a.format}.trained.gguf"))
    print(f"{', '.join(prog.trainable)} trained; loss {losses[0]:.3f} -> "
          f"{np.mean(losses[-10:]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
