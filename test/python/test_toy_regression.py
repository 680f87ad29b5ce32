"""The issue's toy regression with a q4_K weight: a Linear layer learns to
match a teacher whose weights differ from its own by less than a
quantization step. Every SGD update is about a tenth of a q4_K step.

- With a carry (the compiled, fused `qcc.weight_update` step) the updates
  accumulate until they move codes: the loss must fall below 30% of its
  start in 60 steps (measured: about 15%).
- With plain requantization (w <- requant(dequant(w) + delta)) each update
  rounds away. The first steps re-encode some blocks (re-quantizing an
  encoding does not return it exactly: the encoder's search settles on its
  own fixed point within a few steps); from step 10 on the stored blocks
  stay bit for bit the same for the remaining 50 updates, and the loss does
  not fall."""

import numpy as np

from qcc_step import compile_step

N, K, M = 128, 256, 32
W_T = f"!qcc.qtensor<{N}x{K}xq4_K>"
F_NK = f"tensor<{N}x{K}xf32>"


def common(name, update):
    """A step: forward, MSE loss, gradient gyᵀ·x, SGD delta, `update`."""
    return f"""
func.func @{name}(%w: {W_T}, %c: tensor<{N}x{K}xbf16>, %x: tensor<{M}x{K}xf32>,
                  %t: tensor<{M}x{N}xf32>, %lr: f32)
    -> ({W_T}, tensor<{N}x{K}xbf16>, tensor<f32>) {{
  %zero = arith.constant 0.0 : f32
  %inv = arith.constant {1.0 / M:.9e} : f32
  %half = arith.constant {0.5 / M:.9e} : f32
  %y = qcc.qmatmul fwd %x, %w : tensor<{M}x{K}xf32>, {W_T} -> tensor<{M}x{N}xf32>
  %l0 = tensor.empty() : tensor<f32>
  %lacc = linalg.fill ins(%zero : f32) outs(%l0 : tensor<f32>) -> tensor<f32>
  %loss = linalg.generic {{indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> ()>],
      iterator_types = ["reduction", "reduction"]}}
      ins(%y, %t : tensor<{M}x{N}xf32>, tensor<{M}x{N}xf32>) outs(%lacc : tensor<f32>) {{
  ^bb0(%a: f32, %b: f32, %acc: f32):
    %d = arith.subf %a, %b : f32
    %sq = arith.mulf %d, %d : f32
    %s = arith.mulf %sq, %half : f32
    %r = arith.addf %acc, %s : f32
    linalg.yield %r : f32
  }} -> tensor<f32>
  %e = tensor.empty() : tensor<{M}x{N}xf32>
  %gy = linalg.generic {{indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>],
      iterator_types = ["parallel", "parallel"]}}
      ins(%y, %t : tensor<{M}x{N}xf32>, tensor<{M}x{N}xf32>) outs(%e : tensor<{M}x{N}xf32>) {{
  ^bb0(%a: f32, %b: f32, %o: f32):
    %d = arith.subf %a, %b : f32
    %s = arith.mulf %d, %inv : f32
    linalg.yield %s : f32
  }} -> tensor<{M}x{N}xf32>
  %ge = tensor.empty() : {F_NK}
  %g0 = linalg.fill ins(%zero : f32) outs(%ge : {F_NK}) -> {F_NK}
  %gw = linalg.matmul indexing_maps = [affine_map<(a, b, c) -> (c, a)>, affine_map<(a, b, c) -> (c, b)>, affine_map<(a, b, c) -> (a, b)>]
      ins(%gy, %x : tensor<{M}x{N}xf32>, tensor<{M}x{K}xf32>) outs(%g0 : {F_NK}) -> {F_NK}
  %g = qcc.ste_grad identity %gw, %w : {F_NK}, {W_T} -> {F_NK}
  %delta = linalg.generic {{indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>],
      iterator_types = ["parallel", "parallel"]}} ins(%g : {F_NK}) outs(%ge : {F_NK}) {{
  ^bb0(%a: f32, %o: f32):
    %nl = arith.negf %lr : f32
    %s = arith.mulf %a, %nl : f32
    linalg.yield %s : f32
  }} -> {F_NK}
{update}
  return %w2, %c2, %loss : {W_T}, tensor<{N}x{K}xbf16>, tensor<f32>
}}"""


CARRY = common("with_carry", f"""
  %w2, %c2 = qcc.carry_update %w, %c, %delta : {W_T}, tensor<{N}x{K}xbf16>, {F_NK}""")

PLAIN = common("plain", f"""
  %wf = qcc.dequant %w : {W_T} -> {F_NK}
  %s = linalg.add ins(%wf, %delta : {F_NK}, {F_NK}) outs(%ge : {F_NK}) -> {F_NK}
  %w2 = qcc.requant %s : {F_NK} -> {W_T}
  %c2 = tensor.cast %c : tensor<{N}x{K}xbf16> to tensor<{N}x{K}xbf16>""")

HELPERS = f"""
func.func @encode(%x: {F_NK}) -> {W_T} {{
  %q = qcc.requant %x : {F_NK} -> {W_T}
  return %q : {W_T}
}}
func.func @decode(%w: {W_T}) -> {F_NK} {{
  %d = qcc.dequant %w : {W_T} -> {F_NK}
  return %d : {F_NK}
}}"""

STEPS = 60
BOUND = 0.30  # with a carry, final loss / initial loss must be below this
SETTLE = 10  # steps after which plain requantization stops changing codes


def setup(step):
    rng = np.random.default_rng(3)
    w0 = step.call("encode", rng.normal(0, 0.05, (N, K)).astype(np.float32))
    w0f = step.call("decode", w0).astype(np.float64)
    # The teacher: a third of a typical q4_K step away from the student.
    step_size = np.abs(np.diff(np.sort(np.unique(w0f[0, :32])))).mean()
    teacher = w0f + rng.normal(0, step_size / 3, (N, K))
    x = rng.normal(0, 1, (M, K)).astype(np.float32)
    t = (x @ teacher.T).astype(np.float32)
    return w0, x, t


def run(step, name, w0, x, t, lr):
    """Returns the weights after every step and the losses."""
    w, c = w0, np.zeros((N, K), np.uint16)
    weights, losses = [], []
    for _ in range(STEPS):
        w, c, loss = step.call(name, w, c, x, t, np.float32(lr))
        weights.append(w)
        losses.append(float(loss))
    return weights, losses


def test_carry_trains_and_plain_requant_does_not(tmp_path):
    step = compile_step(CARRY + PLAIN + HELPERS, tmp_path)
    w0, x, t = setup(step)
    lr = 0.003
    w_carry, carry_losses = run(step, "with_carry", w0, x, t, lr)
    w_plain, plain_losses = run(step, "plain", w0, x, t, lr)

    assert carry_losses[-1] < BOUND * carry_losses[0], carry_losses[::10]
    assert not np.array_equal(w_carry[-1], w0)
    for w in w_plain[SETTLE:]:
        np.testing.assert_array_equal(w, w_plain[SETTLE - 1])
    assert plain_losses[-1] == plain_losses[SETTLE]
    assert plain_losses[-1] >= 0.99 * plain_losses[0], plain_losses[::10]
    assert step.take_error() is None
