"""A whole training step over a layer stack (bench/compile/gen_layer_stack.py:
forward qmatmuls, the backward pass, weight gradients, carry updates),
compiled with its ops outlined into shared kernels (qcc-outline-kernels, the
default) and with every op lowered in place (--outline-kernels=false): both
must compute the same bits, and the layers must share their kernels."""

import os
import re
import subprocess
import sys

import numpy as np

from qcc_step import ROOT, compile_step, find_tool

GEN = os.path.join(ROOT, "bench", "compile", "gen_layer_stack.py")
DIM, FFN, TOKENS = 256, 512, 4
SHAPES = {"attn_q": (DIM, DIM), "attn_k": (DIM, DIM), "attn_v": (DIM, DIM),
          "attn_output": (DIM, DIM), "ffn_gate": (FFN, DIM),
          "ffn_up": (FFN, DIM), "ffn_down": (DIM, FFN)}


def layer_stack(tmp_path, layers):
    out = tmp_path / f"stack{layers}.mlir"
    subprocess.run([sys.executable, GEN, str(out), "--layers", str(layers),
                    "--dim", str(DIM), "--ffn", str(FFN),
                    "--tokens", str(TOKENS)], check=True)
    return out.read_text()


def q4_k_weight(rng, rows, cols):
    """Valid q4_K blocks (144 bytes per 256 values) of zero-mean weights, so
    that activations and gradients stay in range through the layers: every
    scale byte 0x11 gives sub-block scales and mins sc = m (17 for the first
    four sub-blocks, 1 for the others), and dmin = 7.5 d centres the 4-bit
    codes: w = d·sc·(q - 7.5)."""
    blocks = rows * cols // 256
    b = rng.integers(0, 256, (blocks, 144), dtype=np.uint8)
    d = rng.uniform(2e-4, 6e-4, blocks).astype(np.float16)
    dmin = (d.astype(np.float32) * 7.5).astype(np.float16)
    b[:, 0:2] = d.view(np.uint8).reshape(blocks, 2)
    b[:, 2:4] = dmin.view(np.uint8).reshape(blocks, 2)
    b[:, 4:16] = 0x11
    return b.reshape(-1)


def step_inputs(step, seed=0):
    rng = np.random.default_rng(seed)
    args = []
    for desc in step.entries["train_step"]["args"]:
        name = desc["name"]
        if desc["kind"] == "qtensor":
            args.append(q4_k_weight(rng, *desc["shape"]))
        elif desc["kind"] == "scalar":
            args.append(0.05)
        elif desc["dtype"] == "bf16":
            c = rng.normal(0, 1e-4, desc["shape"]).astype(np.float32)
            args.append((c.view(np.uint32) >> 16).astype(np.uint16))
        else:
            assert name in ("x", "target"), name
            args.append(rng.normal(0, 0.1, desc["shape"]).astype(np.float32))
    return args


def test_outlined_step_computes_the_same_bits(tmp_path):
    text = layer_stack(tmp_path, 2)
    outlined = compile_step(text, tmp_path / "outlined")
    inplace = compile_step(text, tmp_path / "inplace", "--outline-kernels=false")
    args = step_inputs(outlined)
    got = outlined.call("train_step", *args)
    ref = inplace.call("train_step", *args)
    assert outlined.take_error() is None and inplace.take_error() is None
    assert len(got) == len(ref) == 2 * 2 * len(SHAPES)
    for g, r, desc in zip(got, ref, outlined.entries["train_step"]["results"]):
        assert g.tobytes() == r.tobytes(), desc["name"]
    # Not vacuous: the step moved weights (re-encoded blocks) and carries.
    old = {d["name"]: a for d, a in
           zip(outlined.entries["train_step"]["args"], args)}
    changed = [d["name"] for d, g in
               zip(outlined.entries["train_step"]["results"], got)
               if g.tobytes() != np.asarray(old[d["name"]]).tobytes()]
    assert any(n.startswith("blk.") for n in changed)
    assert any(n.startswith("carry.") for n in changed)


def kernels(tmp_path, layers):
    src = tmp_path / f"stack{layers}.mlir"
    src.write_text(layer_stack(tmp_path, layers))
    text = subprocess.run([find_tool("qcc-opt"), str(src),
                           "-qcc-fuse-dequant-into-matmul", "-qcc-lower-ste",
                           "-qcc-outline-kernels"], check=True,
                          capture_output=True, text=True).stdout
    defined = set(re.findall(r"func\.func private @(__qcc_kernel_\w+)", text))
    called = re.findall(r"call @(__qcc_kernel_\w+)", text)
    return defined, called


def test_layers_share_kernels(tmp_path):
    """A second and a fourth layer of the same shapes add calls, not
    kernels."""
    one, calls1 = kernels(tmp_path, 1)
    four, calls4 = kernels(tmp_path, 4)
    assert len(four) == len(one)
    assert len(calls4) > 3 * len(calls1)
    assert set(calls4) == four
