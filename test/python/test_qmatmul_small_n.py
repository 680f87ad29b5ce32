"""The few-rows qmatmul (at most 8 activation rows forward, 4 backward; see
lib/Conversion/QccToLoops/QMatmulSmallN.cpp), which decodes W into vector
registers instead of tiles, against float64 numpy on ggml's dequantized
weights, for every format, both orientations and 1, 2, 3, 4, 5, 8 and 9
rows (both sides of both thresholds).

The weights are rebuilt from the golden file's blocks (16 x 512 per format)
into shapes that hit every edge of the loops: N = 37 W rows (not a
multiple of the 16 rows per forward task), and K an odd number of blocks
that is not a multiple of 512 (for the one-element formats f32/f16/bf16,
K = 533: 33 vectors of 16 and a tail of 5). Since blocks are independent,
the bytes and the golden f32 values of a rebuilt weight are the golden
ones, block for block.

Tolerance: the f32 accumulation (reassociated into vector lanes) over at
most 896 terms against float64, 1e-5 of the largest output; a wrong decoded
element, block or row is off by far more.
"""

import numpy as np
import pytest

from qcc_step import compile_step, golden_tensors

GOLDEN = golden_tensors()
FORMATS = sorted({name[:-2] for name in GOLDEN if name.endswith(".q")})
N_ROWS = 37

# Block lengths other than 256.
BLOCK_ELEMS = {"f32": 1, "f16": 1, "bf16": 1, "q4_0": 32, "q4_1": 32,
               "q5_0": 32, "q5_1": 32, "q8_0": 32, "iq4_nl": 32, "mxfp4": 32,
               "nvfp4": 64, "q2_0": 64, "q1_0": 128}


def rebuilt_weight(fmt, n, seed):
    """(bytes, f32 values) of an n x K weight whose blocks are drawn from
    the golden ones; K as described in the module docstring."""
    _, ne, q = GOLDEN[f"{fmt}.q"]
    _, _, deq = GOLDEN[f"{fmt}.deq"]
    rows, cols = ne[1], ne[0]
    be = BLOCK_ELEMS.get(fmt, 256)
    bb = len(q) // (rows * cols // be)
    blocks = np.frombuffer(q, dtype=np.uint8).reshape(rows * cols // be, bb)
    values = np.frombuffer(deq, dtype=np.float32).reshape(rows * cols // be, be)
    nb = {1: 533, 32: 25, 64: 13, 128: 7, 256: 3}[be]
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(blocks), size=(n, nb))
    return blocks[pick].reshape(-1), values[pick].reshape(n, nb * be)


def relative_error(got, ref):
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("orientation", ["fwd", "bwd"])
def test_small_n_qmatmul_matches_float64(tmp_path, fmt, orientation):
    n = N_ROWS
    wq, w = rebuilt_weight(fmt, n, seed=len(fmt) + (orientation == "bwd"))
    k = w.shape[1]
    w_t = f"!qcc.qtensor<{n}x{k}x{fmt}>"
    funcs, cases = [], []
    for m in (1, 2, 3, 4, 5, 8, 9):
        lhs_cols, out_cols = (k, n) if orientation == "fwd" else (n, k)
        funcs.append(f"""
func.func @mm{m}(%x: tensor<{m}x{lhs_cols}xf32>, %w: {w_t}) -> tensor<{m}x{out_cols}xf32> {{
  %0 = qcc.qmatmul {orientation} %x, %w : tensor<{m}x{lhs_cols}xf32>, {w_t} -> tensor<{m}x{out_cols}xf32>
  return %0 : tensor<{m}x{out_cols}xf32>
}}""")
        cases.append((m, lhs_cols))
    step = compile_step("\n".join(funcs), tmp_path)
    rng = np.random.default_rng(11)
    w64 = w.astype(np.float64)
    for m, lhs_cols in cases:
        x = rng.standard_normal((m, lhs_cols)).astype(np.float32)
        got = step.call(f"mm{m}", x, wq)
        ref = x.astype(np.float64) @ (w64.T if orientation == "fwd" else w64)
        assert got.shape == ref.shape
        err = relative_error(got, ref)
        assert err < 1e-5, f"{fmt} {orientation} m={m}: {err:.2e}"


@pytest.mark.parametrize("orientation", ["fwd", "bwd"])
@pytest.mark.parametrize("out_type", ["f32", "bf16"])
def test_small_n_batched_weight_and_narrow_output(tmp_path, orientation,
                                                  out_type):
    """A batched weight (one matrix per batch, each with its own 2 rows of
    activations) and a bf16 result rounded from the f32 accumulation."""
    fmt, bsz, m, n = "q4_K", 3, 2, N_ROWS
    parts = [rebuilt_weight(fmt, n, seed=b) for b in range(bsz)]
    wq = np.concatenate([p[0] for p in parts])
    w = np.stack([p[1] for p in parts]).astype(np.float64)
    k = w.shape[2]
    lhs_cols, out_cols = (k, n) if orientation == "fwd" else (n, k)
    w_t = f"!qcc.qtensor<{bsz}x{n}x{k}x{fmt}>"
    step = compile_step(f"""
func.func @mm(%x: tensor<{bsz}x{m}x{lhs_cols}xf32>, %w: {w_t}) -> tensor<{bsz}x{m}x{out_cols}x{out_type}> {{
  %y = qcc.qmatmul {orientation} %x, %w : tensor<{bsz}x{m}x{lhs_cols}xf32>, {w_t} -> tensor<{bsz}x{m}x{out_cols}x{out_type}>
  return %y : tensor<{bsz}x{m}x{out_cols}x{out_type}>
}}""", tmp_path)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((bsz, m, lhs_cols)).astype(np.float32)
    got = step.call("mm", x, wq)
    if out_type == "bf16":  # returned as the raw bf16 bits
        got = (got.astype(np.uint32) << 16).view(np.float32)
    ref = np.stack([x[b].astype(np.float64) @ (w[b].T if orientation == "fwd" else w[b])
                    for b in range(bsz)])
    # bf16 keeps 8 significant bits: half an ulp is 2^-9 relative.
    tol = 1e-5 if out_type == "f32" else 2.0 ** -8
    assert relative_error(got, ref) < tol
