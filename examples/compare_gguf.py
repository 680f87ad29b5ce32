#!/usr/bin/env python3
"""Reads a quantized GGUF written by qcc with the PyPI `gguf` package and
reports, per tensor, its type and the relative RMS error of its decoded
values (decoded by `qcc-gguf dequant`) against the f32 original.

Usage: compare_gguf.py ORIGINAL.gguf QUANTIZED.gguf QCC_GGUF_BINARY"""

import subprocess
import sys
import tempfile

import gguf
import numpy as np


def main():
    orig_path, quant_path, qcc_gguf = sys.argv[1:4]
    orig = {t.name: t for t in gguf.GGUFReader(orig_path).tensors}
    quant = gguf.GGUFReader(quant_path)
    ftype = quant.fields["general.file_type"].parts[-1][0]
    print(f"  gguf package reads {quant_path}: {len(quant.tensors)} tensors, "
          f"general.file_type={ftype}")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for t in quant.tensors:
            out = f"{tmp}/{t.name}.f32"
            subprocess.run([qcc_gguf, "dequant", quant_path, t.name, "-o", out],
                           check=True, stderr=subprocess.DEVNULL)
            got = np.fromfile(out, dtype=np.float32)
            ref = np.asarray(orig[t.name].data, dtype=np.float32).reshape(-1)
            rel = float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))
            worst = max(worst, rel)
            if t.name.startswith(("blk.0.", "token_embd", "output.")):
                print(f"  {t.name:28s} {t.tensor_type.name:6s} "
                      f"{t.n_bytes:8d} bytes  rel. RMS error {rel:.4f}")
    print(f"  worst relative RMS error over all tensors: {worst:.4f}")


if __name__ == "__main__":
    main()
