#!/usr/bin/env python3
"""Bytes of training state per parameter, measured from peak RSS.

For each mode it trains one q4_K weight of two sizes with `qcc-run` (two
steps) and reports (RSS_large - RSS_small) / (params_large - params_small):
the slope removes what does not grow with the model (the qcc-run process,
libraries, OpenMP threads). Activations do grow with N, so the full-weight
modes train on one token (LoRA on its example's eight).

Modes:
  dense  full-weight SGD through a dense bf16 carry (examples/train_linear.mlir)
  jl     the same with a JL carry (#qcc.jl<dim = 16, chunk = 256>)
  lora   rank-8 LoRA with AdamW on the frozen base (examples/train_lora.mlir)

Usage: bench/train/memory.py [--build build] [--modes dense,jl,lora]
       [--sizes 4096x4096,16384x4096]"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))


def retarget(text, n, k):
    """examples/*.mlir are written for a 512 x 256 weight; scale them."""
    text = re.sub(r"\b512x256\b", f"{n}x{k}", text)
    text = re.sub(r"(?<=[x<])512(?=x)", str(n), text)
    text = re.sub(r"(?<=x)512(?=x)", str(n), text)
    text = re.sub(r"(?<=x)256(?=x)", str(k), text)
    text = re.sub(r"(?<=[<x])8x512\b", f"8x{n}", text)
    text = re.sub(r"\b8x256\b", f"8x{k}", text)
    text = re.sub(r"\b512x8\b", f"{n}x8", text)
    text = re.sub(r"\b256x8\b", f"{k}x8", text)
    return text


def step_text(mode, n, k):
    name = "train_lora.mlir" if mode == "lora" else "train_linear.mlir"
    text = retarget(open(os.path.join(ROOT, "examples", name)).read(), n, k)
    if mode != "lora":
        # One token instead of eight: activations, which grow with N and K
        # too, then hardly show in the slope. (LoRA's rank is also 8, so
        # its example keeps its eight tokens.)
        text = text.replace("tensor<8x", "tensor<1x")
    if mode == "jl":
        sketch = k // 256 * 16
        text = text.replace(f"tensor<{n}x{k}xbf16>", f"tensor<{n}x{sketch}xbf16>")
        text = text.replace(
            f": !qcc.qtensor<{n}x{k}xq4_K>, tensor<{n}x{sketch}xbf16>, tensor<{n}x{k}xf32>",
            "{jl = #qcc.jl<dim = 16, chunk = 256, seed = 1>} "
            f": !qcc.qtensor<{n}x{k}xq4_K>, tensor<{n}x{sketch}xbf16>, tensor<{n}x{k}xf32>")
    return text


def write_model(path, n, k, build):
    import gguf
    rng = np.random.default_rng(0)
    f32 = path + ".f32.gguf"
    w = gguf.GGUFWriter(f32, "llama")
    w.add_tensor("blk.0.ffn_up.weight", rng.normal(0, 0.02, (n, k)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    subprocess.run([os.path.join(build, "bin", "qcc-gguf"), "quantize", f32, path,
                    "--type", "q4_K"], check=True, capture_output=True)
    os.remove(f32)


def write_inputs(path, n, k, lora):
    import gguf
    rng = np.random.default_rng(1)
    w = gguf.GGUFWriter(path, "qcc-inputs")
    tokens = 8 if lora else 1
    w.add_tensor("x", rng.normal(0, 1, (tokens, k)).astype(np.float32))
    w.add_tensor("target", rng.normal(0, 1, (tokens, n)).astype(np.float32))
    w.add_tensor("lr", np.array([1e-3], np.float32))
    if lora:
        w.add_tensor("weight_decay", np.array([0.0], np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def peak_rss(cmd):
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], check=True,
                         capture_output=True, text=True)
    return int(out.stderr.strip().splitlines()[-1]) * 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--modes", default="dense,jl,lora")
    ap.add_argument("--sizes", default="4096x4096,16384x4096")
    a = ap.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")]
    tmp = tempfile.mkdtemp(prefix="qcc-mem-")
    print(f"{'mode':6} {'N x K':>11} {'params':>10} {'file':>9} {'peak RSS':>10}")
    rows = {}
    for n, k in sizes:
        model = os.path.join(tmp, f"m{n}x{k}.gguf")
        write_model(model, n, k, a.build)
        for mode in a.modes.split(","):
            src = os.path.join(tmp, f"{mode}{n}x{k}.mlir")
            so = src[:-5] + ".so"
            open(src, "w").write(step_text(mode, n, k))
            subprocess.run([os.path.join(a.build, "bin", "qcc"), src, "-o", so],
                           check=True)
            inputs = os.path.join(tmp, f"in{mode}{n}x{k}.gguf")
            write_inputs(inputs, n, k, mode == "lora")
            rss = peak_rss([os.path.join(a.build, "bin", "qcc-run"), so,
                            "--weights", model, "--inputs", inputs,
                            "--steps", "2"])
            rows.setdefault(mode, []).append((n * k, os.path.getsize(model), rss))
            print(f"{mode:6} {f'{n}x{k}':>11} {n * k:>10} "
                  f"{os.path.getsize(model) / 2**20:>7.1f}Mi {rss / 2**20:>8.1f}Mi")
    print()
    print("bytes per parameter (slope between the sizes):")
    for mode, pts in rows.items():
        (p0, f0, r0), (p1, f1, r1) = pts[0], pts[-1]
        print(f"  {mode:6} {(r1 - r0) / (p1 - p0):.3f} B/param"
              f"   (file: {(f1 - f0) / (p1 - p0):.3f} B/param)")


if __name__ == "__main__":
    main()
