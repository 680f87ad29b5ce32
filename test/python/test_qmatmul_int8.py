"""`qcc --gemv-int8`: forward qmatmuls of at most 8 rows on q4_0, q8_0,
q4_K and q6_K quantize the activations to int8 blocks and take integer dot
products (lib/Conversion/QccToLoops/QMatmulInt8.cpp), against float64.

The weights are ggml's golden blocks rebuilt into 37 x K matrices (37 W
rows: not a multiple of the 16 rows per parallel task) with K = 27 blocks
for q4_0 / q8_0 (the loop takes 8 blocks per iteration, then a pair, then a
single zero-padded block) and 3 super-blocks for the K-quants.

Two references, two tolerances:

- x̂, the activations quantized as the compiled code does (per block of A
  elements, A = 32 for q4_0 / q8_0 and 256 for the K-quants: d = max|x| /
  127 in f32, codes = roundeven(x · (1 / d)) in f32, x̂ = d · codes). Then
  x̂ · Wᵀ in float64 differs from the result only by f32 rounding (the
  integer dot products are exact; scales, conversions and the accumulation
  are f32): |y - x̂·Wᵀ| <= 1e-5 · (|x̂|·|W|ᵀ) per output. A wrong code,
  scale or offset anywhere costs about 1/K of that sum, 100x more.
- x itself: |x - x̂| <= d / 2 per element, so |y - x·Wᵀ| <= Σ_t |W[j, t]| ·
  d(t) / 2 (+ the f32 slack above) per output: the bound that the accuracy
  trade-off of the mode guarantees, whatever the data.
"""

import os
import re

import numpy as np
import pytest

from qcc_step import compile_step, golden_tensors

GOLDEN = golden_tensors()
INT8_FORMATS = ["q4_0", "q8_0", "q4_K", "q6_K"]
BLOCK = {"q4_0": 32, "q8_0": 32, "q4_K": 256, "q6_K": 256, "q4_1": 32,
         "q5_K": 256}
N_ROWS = 37
ROW_COUNTS = (1, 2, 3, 8)


def rebuilt_weight(fmt, n, seed):
    """(bytes, f32 values) of an n x K weight drawn from the golden blocks."""
    _, ne, q = GOLDEN[f"{fmt}.q"]
    _, _, deq = GOLDEN[f"{fmt}.deq"]
    be = BLOCK[fmt]
    count = ne[0] * ne[1] // be
    blocks = np.frombuffer(q, dtype=np.uint8).reshape(count, -1)
    values = np.frombuffer(deq, dtype=np.float32).reshape(count, be)
    nb = 27 if be == 32 else 3
    pick = np.random.default_rng(seed).integers(0, count, size=(n, nb))
    return blocks[pick].reshape(-1), values[pick].reshape(n, nb * be)


def quantize_like_qcc(x, block):
    """(x̂ in float64, d per element) of the int8 activations."""
    rows, k = x.shape
    xb = x.reshape(rows, k // block, block).astype(np.float32)
    amax = np.abs(xb).max(axis=2, keepdims=True)
    d = amax / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d)
    codes = np.rint(xb * inv.astype(np.float32))
    assert np.abs(codes).max() <= 127
    xq = (d.astype(np.float64) * codes).reshape(rows, k)
    return xq, np.broadcast_to(d, xb.shape).reshape(rows, k).astype(np.float64)


def activations(m, k, block, seed):
    """Normal activations with the edge cases of the quantizer: in row 1
    (if any) a block of zeros (d = 0) and a block 1e-3 smaller than the
    rest, in row 2 a block with one large outlier."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k)).astype(np.float32)
    if m > 1:
        x[1, :block] = 0
        x[1, block:2 * block] *= 1e-3
    if m > 2:
        x[2, 5] = 40.0
    return x


def gemv_module(fmts, counts):
    funcs = []
    for fmt in fmts:
        wq, w = WEIGHTS[fmt]
        k = w.shape[1]
        w_t = f"!qcc.qtensor<{N_ROWS}x{k}x{fmt}>"
        for m in counts:
            funcs.append(f"""
func.func @{fmt}_m{m}(%x: tensor<{m}x{k}xf32>, %w: {w_t}) -> tensor<{m}x{N_ROWS}xf32> {{
  %0 = qcc.qmatmul fwd %x, %w : tensor<{m}x{k}xf32>, {w_t} -> tensor<{m}x{N_ROWS}xf32>
  return %0 : tensor<{m}x{N_ROWS}xf32>
}}""")
    return "\n".join(funcs)


WEIGHTS = {fmt: rebuilt_weight(fmt, N_ROWS, seed=i)
           for i, fmt in enumerate(INT8_FORMATS + ["q4_1", "q5_K"])}


@pytest.fixture(scope="module")
def int8_step(tmp_path_factory):
    """All four formats and row counts, compiled with --gemv-int8 (the dot
    products' instructions chosen from the host)."""
    return compile_step(gemv_module(INT8_FORMATS, ROW_COUNTS),
                        tmp_path_factory.mktemp("int8"), "--gemv-int8")


@pytest.mark.parametrize("fmt", INT8_FORMATS)
def test_int8_gemv_against_float64(int8_step, fmt):
    wq, w = WEIGHTS[fmt]
    w64 = w.astype(np.float64)
    k = w.shape[1]
    for m in ROW_COUNTS:
        x = activations(m, k, BLOCK[fmt], seed=m)
        got = int8_step.call(f"{fmt}_m{m}", x, wq).astype(np.float64)
        xq, d = quantize_like_qcc(x, BLOCK[fmt])
        # The quantized activations, exactly: f32 rounding only.
        ref_q = xq @ w64.T
        scale_q = np.abs(xq) @ np.abs(w64).T
        err_q = np.abs(got - ref_q)
        assert (err_q <= 1e-5 * scale_q + 1e-30).all(), (
            f"{fmt} m={m}: {(err_q / np.maximum(scale_q, 1e-30)).max():.2e} "
            "of sum |x^||w| against the quantized activations")
        # The activations themselves: within the quantization bound.
        ref = x.astype(np.float64) @ w64.T
        bound = (d / 2) @ np.abs(w64).T + 1e-5 * (np.abs(x) @ np.abs(w64).T)
        err = np.abs(got - ref)
        assert (err <= bound).all(), (
            f"{fmt} m={m}: error {(err / bound).max():.2f}x the int8 bound")
        # The mode is not exact (else it would not be taking this path).
        assert err.max() > 1e-5 * np.abs(ref).max()


def host_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return set(re.search(r"^flags\s*:(.*)$", f.read(), re.M)
                       .group(1).split())
    except (OSError, AttributeError):
        return set()


def test_int8_gemv_bit_identical_across_rows_threads_and_dots(
        int8_step, tmp_path):
    """Each row's result depends only on its activations: the same bits
    whether it is computed alone or with 7 other rows, on one thread or
    two, and with any formulation of the dot products the host can run
    (all compute the same integer lanes)."""
    src = gemv_module(INT8_FORMATS, ROW_COUNTS)
    variants = {"auto": int8_step,
                "generic": compile_step(src, tmp_path / "generic",
                                        "--gemv-int8", "--int8-dot=generic"),
                "serial": compile_step(src, tmp_path / "serial",
                                       "--gemv-int8", "--threads=1")}
    flags = host_flags()
    if "avx2" in flags:
        variants["avx2"] = compile_step(src, tmp_path / "avx2", "--gemv-int8",
                                        "--int8-dot=avx2")
    if {"avx512_vnni", "avx512bw"} <= flags:
        variants["vnni"] = compile_step(src, tmp_path / "vnni", "--gemv-int8",
                                        "--int8-dot=avx512vnni")
    for fmt in INT8_FORMATS:
        wq, w = WEIGHTS[fmt]
        x = activations(8, w.shape[1], BLOCK[fmt], seed=3)
        base = int8_step.call(f"{fmt}_m8", x, wq)
        for name, step in variants.items():
            got = step.call(f"{fmt}_m8", x, wq)
            assert np.array_equal(got.view(np.uint32), base.view(np.uint32)), \
                f"{fmt}: {name} differs"
            for i in range(8):
                one = step.call(f"{fmt}_m1", x[i:i + 1], wq)
                assert np.array_equal(one.view(np.uint32),
                                      base[i:i + 1].view(np.uint32)), \
                    f"{fmt} {name}: row {i} alone differs"


def test_int8_flag_leaves_other_qmatmuls_unchanged(tmp_path):
    """Formats without the int8 path (q4_1, q5_K), the backward
    orientation, and 9 rows (the tiled GEMM) compile to the same code with
    and without --gemv-int8: bit-identical results."""
    cases = []  # (name, fmt, orientation, m)
    funcs = []
    for fmt, orientation, m in [("q4_1", "fwd", 1), ("q5_K", "fwd", 2),
                                ("q4_K", "bwd", 1), ("q6_K", "bwd", 4),
                                ("q4_K", "fwd", 9), ("q8_0", "fwd", 9)]:
        wq, w = WEIGHTS[fmt]
        k = w.shape[1]
        lhs, out = (k, N_ROWS) if orientation == "fwd" else (N_ROWS, k)
        w_t = f"!qcc.qtensor<{N_ROWS}x{k}x{fmt}>"
        name = f"{fmt}_{orientation}_m{m}"
        funcs.append(f"""
func.func @{name}(%x: tensor<{m}x{lhs}xf32>, %w: {w_t}) -> tensor<{m}x{out}xf32> {{
  %0 = qcc.qmatmul {orientation} %x, %w : tensor<{m}x{lhs}xf32>, {w_t} -> tensor<{m}x{out}xf32>
  return %0 : tensor<{m}x{out}xf32>
}}""")
        cases.append((name, fmt, orientation, m, lhs))
    src = "\n".join(funcs)
    exact = compile_step(src, tmp_path / "f32")
    int8 = compile_step(src, tmp_path / "int8", "--gemv-int8")
    rng = np.random.default_rng(7)
    for name, fmt, orientation, m, lhs in cases:
        wq, w = WEIGHTS[fmt]
        x = rng.standard_normal((m, lhs)).astype(np.float32)
        a, b = exact.call(name, x, wq), int8.call(name, x, wq)
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), name
        ref = x.astype(np.float64) @ (w.T if orientation == "fwd" else w)
        assert np.abs(a - ref).max() <= 1e-5 * np.abs(ref).max(), name


@pytest.mark.parametrize("out_type", ["f32", "bf16"])
def test_int8_gemv_batched_weight_and_narrow_output(tmp_path, out_type):
    """A batched weight (one matrix per batch, each with its own 2 rows of
    activations, quantized per batch) and a bf16 result rounded from the
    f32 accumulation."""
    fmt, bsz, m, n = "q6_K", 3, 2, N_ROWS
    parts = [rebuilt_weight(fmt, n, seed=10 + b) for b in range(bsz)]
    wq = np.concatenate([p[0] for p in parts])
    w = np.stack([p[1] for p in parts]).astype(np.float64)
    k = w.shape[2]
    w_t = f"!qcc.qtensor<{bsz}x{n}x{k}x{fmt}>"
    step = compile_step(f"""
func.func @mm(%x: tensor<{bsz}x{m}x{k}xf32>, %w: {w_t}) -> tensor<{bsz}x{m}x{n}x{out_type}> {{
  %y = qcc.qmatmul fwd %x, %w : tensor<{bsz}x{m}x{k}xf32>, {w_t} -> tensor<{bsz}x{m}x{n}x{out_type}>
  return %y : tensor<{bsz}x{m}x{n}x{out_type}>
}}""", tmp_path, "--gemv-int8")
    x = np.stack([activations(m, k, BLOCK[fmt], seed=20 + b) for b in range(bsz)])
    got = step.call("mm", x, wq)
    if out_type == "bf16":  # returned as the raw bf16 bits
        got = (got.astype(np.uint32) << 16).view(np.float32)
    for b in range(bsz):
        xq, _ = quantize_like_qcc(x[b], BLOCK[fmt])
        ref_q = xq @ w[b].T
        scale_q = np.abs(xq) @ np.abs(w[b]).T
        # bf16 keeps 8 significant bits: half an ulp is 2^-9 relative.
        tol = 1e-5 * scale_q if out_type == "f32" else 2.0 ** -8 * np.abs(ref_q) + 1e-5 * scale_q
        assert (np.abs(got[b] - ref_q) <= tol).all(), f"batch {b}"
