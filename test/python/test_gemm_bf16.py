"""`qcc --gemm-bf16`: every micro-GEMM call of a compiled step (qmatmul
tiles forward and backward, f32 contractions) rounds its operands to bf16
(runtime/lib/step/GemmBf16.cpp), against float64.

Bound: bf16 keeps 8 significant bits, so rounding to nearest moves each
operand by at most 2^-8 of itself and each product by at most
(1 + 2^-8)^2 - 1 = 2^-7 + 2^-16 of |x||w|; with the f32 sums,
|y - x·Wᵀ| <= (2^-7 + 2^-16 + 1e-5) · (|x|·|W|ᵀ) per output. A wrong
pair order, a dropped odd column of k or a missing row costs a whole
product, far outside it; and since the mode must round, the error must
also exceed the f32 path's 1e-5. Sharper: the result equals the products of
the operands rounded to bf16 here (numpy, ties to even) summed in float64,
within the f32 path's 1e-5 of sum |x||w|.

The weights are ggml's golden blocks rebuilt into 37 x K matrices (37 W
rows, 19 or 33 activation rows: neither a multiple of the kernel's 8 x 32
block), so the tiles' edges are covered too.
"""

import numpy as np
import pytest

from qcc_step import compile_step
from test_qmatmul_int8 import rebuilt_weight

N_ROWS = 37
FORMATS = ["q4_K", "q6_K", "q4_0", "q8_0"]
WEIGHTS = {fmt: rebuilt_weight(fmt, N_ROWS, seed=i)
           for i, fmt in enumerate(FORMATS)}
M = {"fwd": 19, "bwd": 33}
BOUND = 2.0 ** -7 + 2.0 ** -16 + 1e-5


def module():
    funcs = []
    for fmt in FORMATS:
        k = WEIGHTS[fmt][1].shape[1]
        w_t = f"!qcc.qtensor<{N_ROWS}x{k}x{fmt}>"
        for o, m in M.items():
            lhs, out = (k, N_ROWS) if o == "fwd" else (N_ROWS, k)
            funcs.append(f"""
func.func @{fmt}_{o}(%x: tensor<{m}x{lhs}xf32>, %w: {w_t}) -> tensor<{m}x{out}xf32> {{
  %0 = qcc.qmatmul {o} %x, %w : tensor<{m}x{lhs}xf32>, {w_t} -> tensor<{m}x{out}xf32>
  return %0 : tensor<{m}x{out}xf32>
}}""")
    funcs.append("""
func.func @matmul(%a: tensor<21x75xf32>, %b: tensor<75x40xf32>) -> tensor<21x40xf32> {
  %z = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<21x40xf32>
  %c = linalg.fill ins(%z : f32) outs(%e : tensor<21x40xf32>) -> tensor<21x40xf32>
  %0 = linalg.matmul ins(%a, %b : tensor<21x75xf32>, tensor<75x40xf32>)
      outs(%c : tensor<21x40xf32>) -> tensor<21x40xf32>
  return %0 : tensor<21x40xf32>
}""")
    return "\n".join(funcs)


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    src = module()
    return (compile_step(src, tmp_path_factory.mktemp("bf16"), "--gemm-bf16"),
            compile_step(src, tmp_path_factory.mktemp("f32")))


def to_bf16(v):
    """Nearest bf16 (ties to even) of each f32 (normal, finite), as float64."""
    u = np.asarray(v, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


def check(got, a, b):
    """got against a @ b (float64): within 1e-5 of the sums of the rounded
    operands' products (what the kernel computes, to f32 sums), within the
    bf16 bound of the unrounded ones, and not exact."""
    ref_rounded = to_bf16(a) @ to_bf16(b)
    err_rounded = np.abs(got.astype(np.float64) - ref_rounded)
    assert (err_rounded <= 1e-5 * (np.abs(a) @ np.abs(b)) + 1e-30).all(), \
        "differs from the products of the bf16-rounded operands"
    ref = a @ b
    scale = np.abs(a) @ np.abs(b)
    err = np.abs(got.astype(np.float64) - ref)
    assert (err <= BOUND * scale + 1e-30).all(), \
        f"error {(err / np.maximum(scale, 1e-30)).max():.2e} of sum |a||b|"
    assert err.max() > 1e-5 * np.abs(ref).max(), "not rounded to bf16"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("orientation", ["fwd", "bwd"])
def test_qmatmul_bf16_against_float64(steps, fmt, orientation):
    bf16, f32 = steps
    wq, w = WEIGHTS[fmt]
    w64 = w.astype(np.float64)
    m = M[orientation]
    k = w.shape[1]
    x = np.random.default_rng(m).standard_normal(
        (m, k if orientation == "fwd" else N_ROWS)).astype(np.float32)
    got = bf16.call(f"{fmt}_{orientation}", x, wq)
    b = w64.T if orientation == "fwd" else w64
    check(got, x.astype(np.float64), b)
    # The f32 step of the same module stays exact to f32 rounding.
    exact = f32.call(f"{fmt}_{orientation}", x, wq).astype(np.float64)
    ref = x.astype(np.float64) @ b
    assert np.abs(exact - ref).max() <= 1e-5 * (np.abs(x) @ np.abs(b)).max()


def test_contraction_bf16_against_float64(steps):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((21, 75)).astype(np.float32)
    b = rng.standard_normal((75, 40)).astype(np.float32)
    got = steps[0].call("matmul", a, b)
    check(got, a.astype(np.float64), b.astype(np.float64))
