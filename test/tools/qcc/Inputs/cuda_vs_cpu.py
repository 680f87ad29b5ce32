"""Runs Inputs/grad_step.mlir compiled for the CPU and for CUDA on the same
weights and inputs and compares every result (lit test cuda-run.test, which
needs a GPU). Usage: cuda_vs_cpu.py QCC_SRC_ROOT WORKDIR"""

import os
import subprocess
import sys

import numpy as np

src_root, work = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(src_root, "python"))
sys.path.insert(0, os.path.join(src_root, "test", "python"))
import gguf  # noqa: E402
from qcc.runtime import Session  # noqa: E402
from qcc_step import find_tool, golden_tensors  # noqa: E402

os.makedirs(work, exist_ok=True)
step = os.path.join(src_root, "test", "tools", "qcc", "Inputs", "grad_step.mlir")
for target in ("cpu", "cuda"):
    subprocess.run([find_tool("qcc"), step, f"--target={target}", "-o",
                    os.path.join(work, f"{target}.so")], check=True)

# 64 x 256 q4_K weights: ggml's golden blocks, repeated.
q = np.resize(np.frombuffer(golden_tensors()["q4_K.q"][2], np.uint8), 64 * 144)
model = os.path.join(work, "model.gguf")
w = gguf.GGUFWriter(model, "llama")
w.add_tensor("w", q.reshape(64, 144), raw_shape=(64, 144),
             raw_dtype=gguf.GGMLQuantizationType.Q4_K)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()

rng = np.random.default_rng(4)
x = rng.standard_normal((4, 256)).astype(np.float32)
t = rng.standard_normal((4, 64)).astype(np.float32)
results = {}
for device in ("cpu", "cuda"):
    s = Session(os.path.join(work, f"{device}.so"), model, device=device)
    s.set_input("x", x)
    s.set_input("t", t)
    s.run()
    results[device] = {name: s.result(name) for name in ("loss", "dx", "dw")}
    s.close()
worst = 0.0
for name in ("loss", "dx", "dw"):
    a, b = results["cuda"][name], results["cpu"][name]
    err = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
    print(f"{name}: max relative difference {err:.2e}")
    worst = max(worst, err)
# The same f32 products summed in another order (and FMA contraction on
# the GPU): 1e-5 relative.
sys.exit(0 if worst < 1e-5 else 1)
