"""Compiled qcc ops against independent numpy references.

Each test writes a small module in the qcc dialect, compiles it with the
`qcc` driver (the full qcc-lower-to-cpu pipeline, LLVM, link) and calls it
through the step ABI. References: ggml's golden dequantization (`T.deq` in
the golden file) for the weights, and float64 numpy for the arithmetic.
"""

import json
import os
import subprocess

import numpy as np
import pytest

from qcc_step import GOLDEN as GOLDEN_PATH, compile_step, find_tool, golden_tensors

GOLDEN = golden_tensors()


def golden(fmt):
    ttype, ne, q = GOLDEN[f"{fmt}.q"]
    _, _, deq = GOLDEN[f"{fmt}.deq"]
    rows, cols = ne[1], ne[0]
    w = np.frombuffer(deq, dtype=np.float32).reshape(rows, cols)
    return np.frombuffer(q, dtype=np.uint8), w, rows, cols


# Every format of the golden file (all 28 GGUF formats qcc knows).
MATMUL_FORMATS = sorted({name[:-2] for name in GOLDEN if name.endswith(".q")})


@pytest.mark.parametrize("fmt", ["q8_0", "q4_K", "f16"])
def test_dequant_through_driver_is_bit_exact(tmp_path, fmt):
    """qcc.dequant compiled by the driver reproduces ggml's f32 bits."""
    q, w, rows, cols = golden(fmt)
    step = compile_step(f"""
func.func @deq(%w: !qcc.qtensor<{rows}x{cols}x{fmt}>) -> tensor<{rows}x{cols}xf32> {{
  %0 = qcc.dequant %w : !qcc.qtensor<{rows}x{cols}x{fmt}> -> tensor<{rows}x{cols}xf32>
  return %0 : tensor<{rows}x{cols}xf32>
}}""", tmp_path)
    out = step.call("deq", q)
    assert out.view(np.uint32).tolist() == w.view(np.uint32).tolist()


def relative_error(got, ref):
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


@pytest.mark.parametrize("fmt", MATMUL_FORMATS)
@pytest.mark.parametrize("orientation", ["fwd", "bwd"])
def test_qmatmul_matches_float64_reference(tmp_path, fmt, orientation):
    """y = x·Ŵᵀ (fwd) or y = g·Ŵ (bwd) on ggml's golden weights (N = 16 rows,
    K = 512 columns), with M = 5 activation rows."""
    q, w, n, k = golden(fmt)
    m = 5
    rng = np.random.default_rng(7)
    if orientation == "fwd":
        x = rng.standard_normal((m, k)).astype(np.float32)
        ref = x.astype(np.float64) @ w.astype(np.float64).T
        lhs_t, out_t = f"{m}x{k}", f"{m}x{n}"
    else:
        x = rng.standard_normal((m, n)).astype(np.float32)
        ref = x.astype(np.float64) @ w.astype(np.float64)
        lhs_t, out_t = f"{m}x{n}", f"{m}x{k}"
    step = compile_step(f"""
func.func @mm(%x: tensor<{lhs_t}xf32>, %w: !qcc.qtensor<{n}x{k}x{fmt}>) -> tensor<{out_t}xf32> {{
  %0 = qcc.qmatmul {orientation} %x, %w : tensor<{lhs_t}xf32>, !qcc.qtensor<{n}x{k}x{fmt}> -> tensor<{out_t}xf32>
  return %0 : tensor<{out_t}xf32>
}}""", tmp_path)
    got = step.call("mm", x, q)
    # f32 accumulation over at most 512 terms: well inside 1e-5 relative.
    assert relative_error(got, ref) < 1e-5


def test_qmatmul_batched_activations_and_ragged_tiles(tmp_path):
    """Batch dimensions fold into M; N = 40 and K = 768 are not multiples of
    the 16 x 512 tile, so edge tiles are partial in both directions."""
    rng = np.random.default_rng(3)
    n, k = 40, 768
    # Exact q8_0 blocks built by hand: d = 1/64, codes in [-127, 127].
    codes = rng.integers(-127, 128, size=(n, k)).astype(np.int8)
    d = np.float16(1.0 / 64)
    blocks = np.zeros((n, k // 32, 34), dtype=np.uint8)
    blocks[:, :, 0:2] = np.frombuffer(d.tobytes(), dtype=np.uint8)
    blocks[:, :, 2:] = codes.reshape(n, k // 32, 32).view(np.uint8)
    w = codes.astype(np.float64) * float(d)
    x = rng.standard_normal((2, 3, k)).astype(np.float32)
    step = compile_step(f"""
func.func @mm(%x: tensor<2x3x{k}xf32>, %w: !qcc.qtensor<{n}x{k}xq8_0>) -> tensor<2x3x{n}xf32> {{
  %0 = qcc.qmatmul fwd %x, %w : tensor<2x3x{k}xf32>, !qcc.qtensor<{n}x{k}xq8_0> -> tensor<2x3x{n}xf32>
  return %0 : tensor<2x3x{n}xf32>
}}""", tmp_path)
    got = step.call("mm", x, blocks.reshape(-1))
    ref = x.astype(np.float64) @ w.T
    assert relative_error(got, ref) < 1e-5


def test_qmatmul_serial_tiles_do_not_grow_the_stack(tmp_path):
    """With --threads=1 the tile loop runs serially; each iteration's 256 KiB
    tile must be freed at its end (N = 4224 rows are 33 tiles, 8.4 MiB of
    stack otherwise, past the default 8 MiB). Run in a child process, since
    the failure is a crash."""
    import subprocess
    import sys
    import textwrap
    n, k, m = 4224, 512, 9
    step = compile_step(f"""
func.func @mm(%x: tensor<{m}x{k}xf32>, %w: !qcc.qtensor<{n}x{k}xq8_0>) -> tensor<{m}x{n}xf32> {{
  %0 = qcc.qmatmul fwd %x, %w : tensor<{m}x{k}xf32>, !qcc.qtensor<{n}x{k}xq8_0> -> tensor<{m}x{n}xf32>
  return %0 : tensor<{m}x{n}xf32>
}}""", tmp_path, "--threads=1")
    script = textwrap.dedent(f"""
        import numpy as np, sys
        from qcc.step import Step
        rng = np.random.default_rng(0)
        codes = rng.integers(-127, 128, size=({n}, {k} // 32, 32)).astype(np.int8)
        blocks = np.zeros(({n}, {k} // 32, 34), dtype=np.uint8)
        blocks[:, :, 0:2] = np.frombuffer(np.float16(1 / 64).tobytes(), np.uint8)
        blocks[:, :, 2:] = codes.view(np.uint8)
        x = rng.standard_normal(({m}, {k})).astype(np.float32)
        y = Step({repr(step.path)}).call("mm", x, blocks.reshape(-1))
        ref = x.astype(np.float64) @ (codes.reshape({n}, {k}) / 64.0).T
        err = np.abs(y - ref).max() / np.abs(ref).max()
        sys.exit(0 if err < 1e-5 else 3)
    """)
    import qcc.step
    env_path = os.path.dirname(os.path.dirname(qcc.step.__file__))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": env_path})
    assert proc.returncode == 0, (proc.returncode, proc.stderr)


def hadamard_reference(x, n, seed, inverse):
    """O(n²) definition of docs/spec.md §3.6 in float64."""
    def splitmix64(v):
        m = (1 << 64) - 1
        z = (v + 0x9E3779B97F4A7C15) & m
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        return z ^ (z >> 31)
    s = np.ones(n)
    if seed is not None:
        s = np.array([-1.0 if splitmix64(seed + j) >> 63 else 1.0 for j in range(n)])
    h = np.array([[(-1) ** bin(i & j).count("1") for j in range(n)] for i in range(n)],
                 dtype=np.float64) / np.sqrt(n)
    blocks = x.astype(np.float64).reshape(-1, n)
    if inverse:
        out = (blocks @ h.T) * s
    else:
        out = (blocks * s) @ h.T
    return out.reshape(x.shape)


@pytest.mark.parametrize("n,seed,inverse", [(8, None, False), (64, 17, False),
                                            (64, 17, True), (256, 5, False)])
def test_hadamard_matches_quadratic_reference(tmp_path, n, seed, inverse):
    """The fast transform equals the O(n²) matrix definition."""
    x = np.random.default_rng(n).standard_normal((3, 512)).astype(np.float32)
    attrs = f"block {n}" + (f" seed {seed}" if seed is not None else "") + \
        (" inverse" if inverse else "")
    step = compile_step(f"""
func.func @h(%x: tensor<3x512xf32>) -> tensor<3x512xf32> {{
  %0 = qcc.hadamard %x {attrs} : tensor<3x512xf32>
  return %0 : tensor<3x512xf32>
}}""", tmp_path)
    got = step.call("h", x)
    np.testing.assert_allclose(got, hadamard_reference(x, n, seed, inverse),
                               rtol=0, atol=2e-6 * np.sqrt(n))


def test_hadamard_inverse_undoes_forward(tmp_path):
    """Compiled separately (so the canonicalizer cannot fold the pair), the
    inverse rotation recovers the input to f32 rounding."""
    x = np.random.default_rng(1).standard_normal((4, 256)).astype(np.float32)
    step = compile_step("""
func.func @fwd(%x: tensor<4x256xf32>) -> tensor<4x256xf32> {
  %0 = qcc.hadamard %x block 128 seed 9 : tensor<4x256xf32>
  return %0 : tensor<4x256xf32>
}
func.func @inv(%x: tensor<4x256xf32>) -> tensor<4x256xf32> {
  %0 = qcc.hadamard %x block 128 seed 9 inverse : tensor<4x256xf32>
  return %0 : tensor<4x256xf32>
}""", tmp_path)
    y = step.call("fwd", x)
    assert not np.allclose(y, x)
    np.testing.assert_allclose(step.call("inv", y), x, rtol=0, atol=1e-5)


def golden_src(fmt):
    _, ne, src = GOLDEN[f"{fmt}.src"]
    return np.frombuffer(src, dtype=np.float32).reshape(ne[1], ne[0])


def golden_rel_rmse(fmt):
    info = json.loads(subprocess.run([find_tool("qcc-gguf"), "info", "--json",
                                      GOLDEN_PATH], check=True,
                                     capture_output=True, text=True).stdout)
    return next(m["value"] for m in info["metadata"]
                if m["key"] == f"golden.{fmt}.rel_rmse")


def rel_rmse(deq, src):
    """The golden file's metric: mean over non-zero rows of ||deq-src||/||src||."""
    norms = np.linalg.norm(src.astype(np.float64), axis=1)
    err = np.linalg.norm(deq.astype(np.float64) - src, axis=1)
    keep = norms > 0
    return float(np.mean(err[keep] / norms[keep]))


@pytest.mark.parametrize("fmt,importance", [("q8_0", False), ("q4_K", False),
                                            ("iq4_xs", False), ("q6_K", True),
                                            ("iq2_xxs", True)])
def test_requant_then_dequant_is_no_worse_than_ggml(tmp_path, fmt, importance):
    """qcc.requant (the runtime encoder called from compiled code) followed by
    qcc.dequant: the round trip of ggml's golden input loses no more than
    ggml's own quantizer did (`golden.T.rel_rmse`)."""
    src = golden_src(fmt)
    rows, cols = src.shape
    imp_arg = f", %imp: tensor<{cols}xf32>" if importance else ""
    imp_use = f" importance(%imp : tensor<{cols}xf32>)" if importance else ""
    step = compile_step(f"""
func.func @roundtrip(%x: tensor<{rows}x{cols}xf32>{imp_arg}) -> tensor<{rows}x{cols}xf32> {{
  %q = qcc.requant %x{imp_use} : tensor<{rows}x{cols}xf32> -> !qcc.qtensor<{rows}x{cols}x{fmt}>
  %d = qcc.dequant %q : !qcc.qtensor<{rows}x{cols}x{fmt}> -> tensor<{rows}x{cols}xf32>
  return %d : tensor<{rows}x{cols}xf32>
}}""", tmp_path)
    args = [src]
    if importance:
        args.append((1 + (np.arange(cols) % 7) / 7).astype(np.float32))
    deq = step.call("roundtrip", *args)
    assert rel_rmse(deq, src) <= golden_rel_rmse(fmt) + 1e-6
    assert step.take_error() is None


def test_requant_reports_nan_input(tmp_path):
    """A NaN cannot be encoded: the blocks come back zeroed and the error is
    kept for the host, which reads it with qcc_step_take_error()."""
    step = compile_step("""
func.func @rq(%x: tensor<1x32xf32>) -> !qcc.qtensor<1x32xq8_0> {
  %q = qcc.requant %x : tensor<1x32xf32> -> !qcc.qtensor<1x32xq8_0>
  return %q : !qcc.qtensor<1x32xq8_0>
}""", tmp_path)
    x = np.ones((1, 32), dtype=np.float32)
    x[0, 5] = np.nan
    out = step.call("rq", x)
    assert not out.any()
    message = step.take_error()
    assert message is not None and "qcc.requant" in message
    assert step.take_error() is None


def test_every_format_is_covered():
    assert len(MATMUL_FORMATS) == 28


@pytest.mark.parametrize("mode,attrs,residual", [
    ("identity", "", False), ("clipped", "{threshold = 0.02 : f32}", True),
    ("ewgs", "{lambda = 40.0 : f32}", True), ("ewgs", "{lambda = 40.0 : f32}", False)])
def test_ste_grad_modes_match_their_formulas(tmp_path, mode, attrs, residual):
    """qcc.ste_grad compiled (qcc-lower-ste, then the CPU pipeline) against
    the formulas of docs/spec.md §3.4 in numpy, on ggml's q4_K golden
    weight: identity passes g; clipped zeroes g where |Ŵ + res| > t; ewgs
    scales g by 1 + λ·sign(g)·res (and is g without a residual)."""
    q, w, rows, cols = golden("q4_K")
    rng = np.random.default_rng(5)
    g = rng.standard_normal((rows, cols)).astype(np.float32)
    r = rng.normal(0, 0.01, (rows, cols)).astype(np.float32)
    t = f"tensor<{rows}x{cols}xf32>"
    w_t = f"!qcc.qtensor<{rows}x{cols}xq4_K>"
    res_arg = f", %r: {t}" if residual else ""
    res_use = f" residual(%r : {t})" if residual else ""
    step = compile_step(f"""
func.func @ste(%g: {t}, %w: {w_t}{res_arg}) -> {t} {{
  %d = qcc.ste_grad {mode} %g, %w{res_use} {attrs} : {t}, {w_t} -> {t}
  return %d : {t}
}}""", tmp_path)
    got = step.call("ste", g, q, *([r] if residual else []))
    res = r.astype(np.float64) if residual else 0.0
    if mode == "identity":
        ref = g.astype(np.float64)
    elif mode == "clipped":
        ref = np.where(np.abs(w.astype(np.float64) + res) <= 0.02, g, 0.0)
    else:
        ref = g * (1 + 40.0 * np.sign(g) * res)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)


def bf16_reference(x):
    """Round-to-nearest-even f32 -> bf16 bits, NaNs quieted (the rule of the
    runtime and of ggml), written independently in numpy."""
    u = x.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, (u >> 16) | 64, rounded).astype(np.uint16)


def test_dequant_to_bf16_and_f16_rounds_every_f32_pattern(tmp_path):
    """An f32 qtensor of 65536 random bit patterns (subnormals, infinities
    and NaNs included) decoded to bf16 and to f16: bf16 bits equal the
    round-to-nearest-even reference (subnormals are kept, not flushed), f16
    equals numpy's IEEE conversion for every non-NaN value."""
    bits = np.random.default_rng(11).integers(0, 2 ** 32, 65536, dtype=np.uint64)
    bits[:256] = np.arange(256) * 0x8001  # a run of subnormals of both signs
    x = bits.astype(np.uint32).view(np.float32).reshape(1, -1)
    step = compile_step("""
func.func @to_bf16(%w: !qcc.qtensor<1x65536xf32>) -> tensor<1x65536xbf16> {
  %0 = qcc.dequant %w : !qcc.qtensor<1x65536xf32> -> tensor<1x65536xbf16>
  return %0 : tensor<1x65536xbf16>
}
func.func @to_f16(%w: !qcc.qtensor<1x65536xf32> ) -> tensor<1x65536xf16> {
  %0 = qcc.dequant %w : !qcc.qtensor<1x65536xf32> -> tensor<1x65536xf16>
  return %0 : tensor<1x65536xf16>
}""", tmp_path)
    raw = x.view(np.uint8).reshape(-1)
    assert np.array_equal(step.call("to_bf16", raw).reshape(-1),
                          bf16_reference(x.reshape(-1)))
    got16 = step.call("to_f16", raw).reshape(-1)
    with np.errstate(over="ignore"):
        ref16 = x.reshape(-1).astype(np.float16)
    finite = ~np.isnan(ref16)
    assert np.array_equal(got16[finite].view(np.uint16), ref16[finite].view(np.uint16))
    assert np.isnan(got16[~finite]).all()


def f16_scale_offset(fmt):
    """Byte offset of the f16 block scale d (docs/formats.md), for the
    formats the finite-difference check below perturbs."""
    return {"q4_0": 0, "q4_1": 0, "q8_0": 0, "q4_K": 0, "q5_K": 0,
            "q2_K": 80, "q6_K": 208, "iq4_xs": 0, "tq2_0": 64}[fmt]


@pytest.mark.parametrize("fmt", ["q4_0", "q4_1", "q8_0", "q2_K", "q4_K", "q5_K",
                                 "q6_K", "iq4_xs", "tq2_0"])
def test_ste_lsq_scale_gradient_matches_finite_differences(tmp_path, fmt):
    """The lsq block-scale gradient equals the derivative of Σ g·Ŵ with
    respect to each block's f16 scale d, measured independently: decode the
    golden blocks (ggml's own bytes) with d scaled by (1 ± 2^-6) through
    qcc.dequant and take the central difference (exact, as Ŵ is affine in
    d). The direction equals the gradient."""
    q, w, rows, cols = golden(fmt)
    B = 32 if fmt in ("q4_0", "q4_1", "q8_0") else 256  # block length
    S = len(q) // (rows * cols // B)
    t = f"tensor<{rows}x{cols}xf32>"
    w_t = f"!qcc.qtensor<{rows}x{cols}x{fmt}>"
    grid = f"tensor<{rows}x{cols // B}xf32>"
    step = compile_step(f"""
func.func @lsq(%g: {t}, %w: {w_t}) -> ({t}, {grid}) {{
  %d, %s = qcc.ste_grad lsq %g, %w : {t}, {w_t} -> {t}, {grid}
  return %d, %s : {t}, {grid}
}}
func.func @deq(%w: {w_t}) -> {t} {{
  %0 = qcc.dequant %w : {w_t} -> {t}
  return %0 : {t}
}}""", tmp_path)
    g = np.random.default_rng(8).standard_normal((rows, cols)).astype(np.float32)
    direction, scale_grad = step.call("lsq", g, q)
    assert np.array_equal(direction, g)

    blocks = q.reshape(-1, S).copy()
    off = f16_scale_offset(fmt)
    d = blocks[:, off:off + 2].copy().view(np.float16).astype(np.float64).reshape(-1)
    h = 2.0 ** -6
    def with_d(factor):
        b = blocks.copy()
        b[:, off:off + 2] = (d * factor).astype(np.float16).view(np.uint8).reshape(-1, 2)
        return step.call("deq", b.reshape(-1)).astype(np.float64)
    d_plus = (d * (1 + h)).astype(np.float16).astype(np.float64)
    d_minus = (d * (1 - h)).astype(np.float16).astype(np.float64)
    diff = (with_d(1 + h) - with_d(1 - h)).reshape(-1, B)
    gb = g.astype(np.float64).reshape(-1, B)
    ok = (d != 0) & np.isfinite(d) & (d_plus != d_minus)
    fd = np.zeros(len(d))
    fd[ok] = (gb[ok] * diff[ok]).sum(axis=1) / (d_plus[ok] - d_minus[ok])
    got = scale_grad.reshape(-1).astype(np.float64)
    assert ok.sum() >= len(d) // 2
    np.testing.assert_allclose(got[ok], fd[ok], rtol=1e-4,
                               atol=1e-4 * np.abs(fd[ok]).max())


@pytest.mark.parametrize("orientation", ["fwd", "bwd"])
def test_qmatmul_batched_weight(tmp_path, orientation):
    """A weight with a batch dimension (one [N, K] matrix per batch): each
    batch of activations meets its own matrix. W is encoded by the compiled
    requant and decoded by dequant; the product is checked against float64
    numpy on those decoded values. N = 40 and K = 768 leave partial tiles."""
    bsz, m, n, k = 3, 5, 40, 768
    rng = np.random.default_rng(21)
    lhs_cols, out_cols = (k, n) if orientation == "fwd" else (n, k)
    w_t = f"!qcc.qtensor<{bsz}x{n}x{k}xq4_K>"
    step = compile_step(f"""
func.func @enc(%w: tensor<{bsz}x{n}x{k}xf32>) -> {w_t} {{
  %q = qcc.requant %w : tensor<{bsz}x{n}x{k}xf32> -> {w_t}
  return %q : {w_t}
}}
func.func @deq(%w: {w_t}) -> tensor<{bsz}x{n}x{k}xf32> {{
  %d = qcc.dequant %w : {w_t} -> tensor<{bsz}x{n}x{k}xf32>
  return %d : tensor<{bsz}x{n}x{k}xf32>
}}
func.func @mm(%x: tensor<{bsz}x{m}x{lhs_cols}xf32>, %w: {w_t}) -> tensor<{bsz}x{m}x{out_cols}xf32> {{
  %y = qcc.qmatmul {orientation} %x, %w : tensor<{bsz}x{m}x{lhs_cols}xf32>, {w_t} -> tensor<{bsz}x{m}x{out_cols}xf32>
  return %y : tensor<{bsz}x{m}x{out_cols}xf32>
}}""", tmp_path)
    q = step.call("enc", rng.normal(0, 0.02, (bsz, n, k)).astype(np.float32))
    w = step.call("deq", q).astype(np.float64)
    x = rng.standard_normal((bsz, m, lhs_cols)).astype(np.float32)
    got = step.call("mm", x, q)
    ref = np.stack([x[b].astype(np.float64) @ (w[b].T if orientation == "fwd" else w[b])
                    for b in range(bsz)])
    assert relative_error(got, ref) < 1e-5
