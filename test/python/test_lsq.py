"""LSQ end to end: `qcc.ste_grad lsq` gives each block's scale gradient,
`qcc.scale_update` writes the moved scale back into the block header in the
format's own encoding. Checked against numpy on the raw block bytes (field
positions from the GGUF block layouts, docs/formats.md), the PyPI gguf
package's dequantizer, and by learning the scales of a toy regression."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType, quants

from qcc_step import compile_step

ROWS, COLS = 4, 512

# format -> (block elements, block bytes, gguf type)
LAYOUT = {
    "q8_0": (32, 34, GGMLQuantizationType.Q8_0),
    "q4_K": (256, 144, GGMLQuantizationType.Q4_K),
    "mxfp4": (32, 17, GGMLQuantizationType.MXFP4),
    "iq1_m": (256, 56, GGMLQuantizationType.IQ1_M),
}


def update_step(tmp_path, fmt):
    be = LAYOUT[fmt][0]
    w_t = f"!qcc.qtensor<{ROWS}x{COLS}x{fmt}>"
    d_t = f"tensor<{ROWS}x{COLS // be}xf32>"
    f_t = f"tensor<{ROWS}x{COLS}xf32>"
    return compile_step(f"""
func.func @update(%w: {w_t}, %d: {d_t}) -> {w_t} {{
  %r = qcc.scale_update %w, %d : {w_t}, {d_t}
  return %r : {w_t}
}}
func.func @encode(%x: {f_t}, %imp: tensor<{COLS}xf32>) -> {w_t} {{
  %q = qcc.requant %x importance(%imp : tensor<{COLS}xf32>) : {f_t} -> {w_t}
  return %q : {w_t}
}}""", tmp_path)


def blocks(w, fmt):
    return w.reshape(-1, LAYOUT[fmt][1])


def f16(bytes2):
    return bytes2.copy().view(np.float16).astype(np.float32).ravel()


@pytest.mark.parametrize("fmt", ["q8_0", "q4_K"])
def test_f16_scale_field(tmp_path, fmt):
    """The f16 d (bytes 0-1) becomes f16(d + delta); every other byte stays;
    the gguf package decodes the result as (old − offset)·d'/d + offset,
    offset being the block decoded with d = 0 (q4_K's dmin·m term)."""
    step = update_step(tmp_path, fmt)
    rng = np.random.default_rng(1)
    w = step.call("encode", rng.normal(0, 0.05, (ROWS, COLS)).astype(np.float32),
                  np.ones(COLS, np.float32))
    old = blocks(w, fmt)
    d_old = f16(old[:, 0:2])
    delta = (d_old * rng.uniform(-0.3, 0.3, d_old.shape)).astype(np.float32)
    new = blocks(step.call("update", w, delta.reshape(ROWS, -1)), fmt)
    expect = (d_old + delta).astype(np.float16)
    np.testing.assert_array_equal(new[:, 0:2].copy().view(np.float16).ravel(),
                                  expect)
    np.testing.assert_array_equal(new[:, 2:], old[:, 2:])
    gtype = LAYOUT[fmt][2]
    zeroed = old.copy()
    zeroed[:, 0:2] = 0
    off = quants.dequantize(zeroed, gtype).reshape(len(old), -1).astype(np.float64)
    before = quants.dequantize(old, gtype).reshape(len(old), -1).astype(np.float64)
    after = quants.dequantize(new, gtype).reshape(len(old), -1).astype(np.float64)
    ratio = expect.astype(np.float64) / d_old.astype(np.float64)
    np.testing.assert_allclose(after, (before - off) * ratio[:, None] + off,
                               rtol=1e-6, atol=1e-9)


def test_e8m0_scale_moves_by_octaves(tmp_path):
    """mxfp4's e8m0 exponent (byte 0) takes the power of two nearest by log2:
    a small delta leaves it, one past half an octave moves it by one."""
    step = update_step(tmp_path, "mxfp4")
    rng = np.random.default_rng(2)
    w = step.call("encode", rng.normal(0, 0.05, (ROWS, COLS)).astype(np.float32),
                  np.ones(COLS, np.float32))
    old = blocks(w, "mxfp4")
    e = old[:, 0].astype(np.int32)
    d = np.ldexp(1.0, e - 127)
    small = (0.2 * d).astype(np.float32)      # log2(1.2) = 0.26 < 0.5
    large = (0.5 * d).astype(np.float32)      # log2(1.5) = 0.58 > 0.5
    kept = blocks(step.call("update", w, small.reshape(ROWS, -1)), "mxfp4")
    moved = blocks(step.call("update", w, large.reshape(ROWS, -1)), "mxfp4")
    np.testing.assert_array_equal(kept, old)
    np.testing.assert_array_equal(moved[:, 0].astype(np.int32), e + 1)
    np.testing.assert_array_equal(moved[:, 1:], old[:, 1:])


def test_iq1_m_spread_scale(tmp_path):
    """iq1_m keeps its f16 d in the top nibbles of four u16 scale words
    (bytes 48-55); the update re-spreads f16(d + delta) and keeps the low
    12 bits of each word."""
    step = update_step(tmp_path, "iq1_m")
    rng = np.random.default_rng(3)
    w = step.call("encode", rng.normal(0, 0.05, (ROWS, COLS)).astype(np.float32),
                  np.ones(COLS, np.float32))
    old = blocks(w, "iq1_m")
    sc = old[:, 48:56].copy().view(np.uint16)
    bits = ((sc[:, 0] >> 12) | ((sc[:, 1] >> 8) & 0xF0) | ((sc[:, 2] >> 4) & 0xF00)
            | (sc[:, 3] & 0xF000)).astype(np.uint16)
    d_old = bits.view(np.float16).astype(np.float32)
    delta = (0.25 * d_old).astype(np.float32)
    new = blocks(step.call("update", w, delta.reshape(ROWS, -1)), "iq1_m")
    nsc = new[:, 48:56].copy().view(np.uint16)
    nbits = ((nsc[:, 0] >> 12) | ((nsc[:, 1] >> 8) & 0xF0) | ((nsc[:, 2] >> 4) & 0xF00)
             | (nsc[:, 3] & 0xF000)).astype(np.uint16)
    np.testing.assert_array_equal(nbits.view(np.float16),
                                  (d_old + delta).astype(np.float16))
    np.testing.assert_array_equal(nsc & 0x0FFF, sc & 0x0FFF)
    np.testing.assert_array_equal(new[:, :48], old[:, :48])


def test_negative_scale_is_refused(tmp_path):
    step = update_step(tmp_path, "q8_0")
    rng = np.random.default_rng(4)
    w = step.call("encode", rng.normal(0, 0.05, (ROWS, COLS)).astype(np.float32),
                  np.ones(COLS, np.float32))
    d_old = f16(blocks(w, "q8_0")[:, 0:2])
    delta = np.zeros_like(d_old)
    delta[3] = -2 * d_old[3]
    new = step.call("update", w, delta.reshape(ROWS, -1))
    np.testing.assert_array_equal(new, w)
    assert "block 3" in step.take_error()


def test_lsq_learns_block_scales(tmp_path):
    """Only the scales train: a q8_0 layer must learn y = x·(1.25·Ŵ₀)ᵀ. The
    LSQ step (scale gradient from ste_grad lsq, SGD, scale_update) brings
    the loss below 1% of its start within 40 steps, while the codes stay
    exactly as they were."""
    n, k, m = 64, 256, 16
    w_t = f"!qcc.qtensor<{n}x{k}xq8_0>"
    s_t = f"tensor<{n}x{k // 32}xf32>"
    step = compile_step(f"""
func.func @train(%w: {w_t}, %x: tensor<{m}x{k}xf32>, %t: tensor<{m}x{n}xf32>, %lr: f32)
    -> ({w_t}, tensor<f32>) {{
  %zero = arith.constant 0.0 : f32
  %inv = arith.constant {1.0 / m:.9e} : f32
  %half = arith.constant {0.5 / m:.9e} : f32
  %y = qcc.qmatmul fwd %x, %w : tensor<{m}x{k}xf32>, {w_t} -> tensor<{m}x{n}xf32>
  %l0 = tensor.empty() : tensor<f32>
  %lacc = linalg.fill ins(%zero : f32) outs(%l0 : tensor<f32>) -> tensor<f32>
  %loss = linalg.generic {{indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> ()>],
      iterator_types = ["reduction", "reduction"]}}
      ins(%y, %t : tensor<{m}x{n}xf32>, tensor<{m}x{n}xf32>) outs(%lacc : tensor<f32>) {{
  ^bb0(%a: f32, %b: f32, %acc: f32):
    %d = arith.subf %a, %b : f32
    %sq = arith.mulf %d, %d : f32
    %s = arith.mulf %sq, %half : f32
    %r = arith.addf %acc, %s : f32
    linalg.yield %r : f32
  }} -> tensor<f32>
  %e = tensor.empty() : tensor<{m}x{n}xf32>
  %gy = linalg.generic {{indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>],
      iterator_types = ["parallel", "parallel"]}}
      ins(%y, %t : tensor<{m}x{n}xf32>, tensor<{m}x{n}xf32>) outs(%e : tensor<{m}x{n}xf32>) {{
  ^bb0(%a: f32, %b: f32, %o: f32):
    %d = arith.subf %a, %b : f32
    %s = arith.mulf %d, %inv : f32
    linalg.yield %s : f32
  }} -> tensor<{m}x{n}xf32>
  %ge = tensor.empty() : tensor<{n}x{k}xf32>
  %g0 = linalg.fill ins(%zero : f32) outs(%ge : tensor<{n}x{k}xf32>) -> tensor<{n}x{k}xf32>
  %gw = linalg.matmul indexing_maps = [affine_map<(a, b, c) -> (c, a)>, affine_map<(a, b, c) -> (c, b)>, affine_map<(a, b, c) -> (a, b)>]
      ins(%gy, %x : tensor<{m}x{n}xf32>, tensor<{m}x{k}xf32>) outs(%g0 : tensor<{n}x{k}xf32>) -> tensor<{n}x{k}xf32>
  %dir, %sg = qcc.ste_grad lsq %gw, %w : tensor<{n}x{k}xf32>, {w_t} -> tensor<{n}x{k}xf32>, {s_t}
  %se = tensor.empty() : {s_t}
  %ds = linalg.generic {{indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>],
      iterator_types = ["parallel", "parallel"]}} ins(%sg : {s_t}) outs(%se : {s_t}) {{
  ^bb0(%a: f32, %o: f32):
    %nl = arith.negf %lr : f32
    %s = arith.mulf %a, %nl : f32
    linalg.yield %s : f32
  }} -> {s_t}
  %w2 = qcc.scale_update %w, %ds : {w_t}, {s_t}
  return %w2, %loss : {w_t}, tensor<f32>
}}
func.func @encode(%x: tensor<{n}x{k}xf32>) -> {w_t} {{
  %q = qcc.requant %x : tensor<{n}x{k}xf32> -> {w_t}
  return %q : {w_t}
}}
func.func @decode(%w: {w_t}) -> tensor<{n}x{k}xf32> {{
  %d = qcc.dequant %w : {w_t} -> tensor<{n}x{k}xf32>
  return %d : tensor<{n}x{k}xf32>
}}""", tmp_path)
    rng = np.random.default_rng(9)
    w0 = step.call("encode", rng.normal(0, 0.05, (n, k)).astype(np.float32))
    x = rng.normal(0, 1, (m, k)).astype(np.float32)
    t = (x.astype(np.float64) @ (1.25 * step.call("decode", w0).astype(np.float64)).T
         ).astype(np.float32)
    w, losses = w0, []
    for _ in range(40):
        w, loss = step.call("train", w, x, t, np.float32(3e-6))
        losses.append(float(loss))
    assert losses[-1] < 0.01 * losses[0], losses[::8]
    np.testing.assert_array_equal(blocks(w, "q8_0")[:, 2:], blocks(w0, "q8_0")[:, 2:])
    assert step.take_error() is None
