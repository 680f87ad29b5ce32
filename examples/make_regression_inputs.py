#!/usr/bin/env python3
"""Inputs for examples/train_linear.mlir and train_lora.mlir: a batch x and
targets t = x · W_teacherᵀ, where W_teacher is the model's
blk.0.ffn_up.weight (decoded by the gguf package) plus a random
perturbation (of rank R with --rank, which a LoRA of rank R can learn), so
that training has something to learn; and the learning rate (and, with
--weight-decay, AdamW's weight decay). Written as a GGUF file whose tensor
names are the step's input names (qcc-run --inputs).

Usage: make_regression_inputs.py MODEL.gguf OUT.gguf [--lr X] [--seed N]
           [--rank R] [--weight-decay X]"""

import argparse

import gguf
import numpy as np
from gguf.quants import dequantize


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rank", type=int, default=0,
                    help="rank of the teacher's perturbation (0: full)")
    ap.add_argument("--weight-decay", type=float, default=None)
    args = ap.parse_args()

    reader = gguf.GGUFReader(args.model)
    t = next(t for t in reader.tensors if t.name == "blk.0.ffn_up.weight")
    w = dequantize(t.data, t.tensor_type).reshape(512, 256).astype(np.float64)
    rng = np.random.default_rng(args.seed)
    if args.rank:
        u = rng.standard_normal((w.shape[0], args.rank))
        v = rng.standard_normal((args.rank, w.shape[1]))
        teacher = w + (u @ v) * (0.5 * w.std() / np.sqrt(args.rank))
    else:
        teacher = w + rng.normal(0, 0.5 * w.std(), w.shape)
    x = rng.standard_normal((8, 256))
    target = x @ teacher.T

    out = gguf.GGUFWriter(args.out, "qcc-inputs")
    out.add_tensor("x", x.astype(np.float32))
    out.add_tensor("target", target.astype(np.float32))
    out.add_tensor("lr", np.array([args.lr], dtype=np.float32))
    if args.weight_decay is not None:
        out.add_tensor("weight_decay",
                       np.array([args.weight_decay], dtype=np.float32))
    out.write_header_to_file()
    out.write_kv_data_to_file()
    out.write_tensors_to_file()
    out.close()


if __name__ == "__main__":
    main()
