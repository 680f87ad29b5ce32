#!/usr/bin/env python3
"""Compiles examples/linear_q4k.mlir with qcc, binds its weight argument to
the GGUF tensor its manifest names, runs forward and backward-data, and
compares with numpy on the weight decoded by `qcc-gguf dequant`.

Usage: run_linear.py MODEL.gguf"""

import os
import subprocess
import sys
import tempfile

import gguf
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
from qcc import compile_step, find_tool  # noqa: E402


def main():
    with tempfile.TemporaryDirectory() as tmp:
        run(sys.argv[1], tmp)


def run(model, tmp):
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "linear_q4k.mlir")) as f:
        step = compile_step(f.read(), tmp)
    print(f"  compiled examples/linear_q4k.mlir: entries "
          f"{', '.join(step.entries)}")
    desc = step.entries["forward"]["args"][1]
    reader = gguf.GGUFReader(model)
    tensor = next(t for t in reader.tensors if t.name == desc["name"])
    blocks = np.asarray(tensor.data).reshape(-1).view(np.uint8)
    print(f"  bound '{desc['name']}' ({desc['format']}, {desc['bytes']} bytes,"
          f" straight from the file)")

    out = os.path.join(tmp, "w.f32")
    subprocess.run([find_tool("qcc-gguf"), "dequant", model, desc["name"],
                    "-o", out], check=True, stderr=subprocess.DEVNULL)
    w = np.fromfile(out, dtype=np.float32).reshape(desc["shape"])

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 256)).astype(np.float32)
    g = rng.standard_normal((8, 512)).astype(np.float32)
    y = step.call("forward", x, blocks)
    dx = step.call("backward_data", g, blocks)
    for what, got, ref in (("forward  y = x·Wᵀ", y, x.astype(np.float64) @ w.T),
                           ("backward dx = g·W", dx, g.astype(np.float64) @ w)):
        err = np.abs(got - ref).max() / np.abs(ref).max()
        print(f"  {what}: max relative error vs numpy {err:.2e}")
        if err > 1e-5:
            sys.exit(f"error {err} above 1e-5")


if __name__ == "__main__":
    main()
