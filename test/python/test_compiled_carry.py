"""qcc.carry_update compiled by the driver, checked against the invariants
of docs/spec.md §3.5 with numpy as the reference arithmetic:
conservation (nothing of an update is lost), stability (no update, no
change), accumulation (sub-step updates add up until they move codes, which
plain requantization never does), non-finite updates leave blocks alone, and
the JL sketch's read-back error against its documented bound."""

import numpy as np
import pytest

from qcc_step import compile_step

ROWS, COLS = 8, 256


def carry_step(tmp_path, fmt, carry_dtype="f32", jl=None):
    carry_cols = COLS if jl is None else COLS // jl[1] * jl[0]
    attr = "" if jl is None else \
        f" {{jl = #qcc.jl<dim = {jl[0]}, chunk = {jl[1]}, seed = {jl[2]}>}}"
    w_t = f"!qcc.qtensor<{ROWS}x{COLS}x{fmt}>"
    c_t = f"tensor<{ROWS}x{carry_cols}x{carry_dtype}>"
    d_t = f"tensor<{ROWS}x{COLS}xf32>"
    return compile_step(f"""
func.func @update(%w: {w_t}, %c: {c_t}, %d: {d_t}) -> ({w_t}, {c_t}) {{
  %w2, %c2 = qcc.carry_update %w, %c, %d{attr} : {w_t}, {c_t}, {d_t}
  return %w2, %c2 : {w_t}, {c_t}
}}
func.func @encode(%x: tensor<{ROWS}x{COLS}xf32>) -> {w_t} {{
  %q = qcc.requant %x : tensor<{ROWS}x{COLS}xf32> -> {w_t}
  return %q : {w_t}
}}
func.func @decode(%w: {w_t}) -> tensor<{ROWS}x{COLS}xf32> {{
  %d = qcc.dequant %w : {w_t} -> tensor<{ROWS}x{COLS}xf32>
  return %d : tensor<{ROWS}x{COLS}xf32>
}}
func.func @plain(%w: {w_t}, %d: {d_t}) -> {w_t} {{
  %f = qcc.dequant %w : {w_t} -> tensor<{ROWS}x{COLS}xf32>
  %e = tensor.empty() : tensor<{ROWS}x{COLS}xf32>
  %s = linalg.add ins(%f, %d : {d_t}, {d_t}) outs(%e : {d_t}) -> {d_t}
  %q = qcc.requant %s : {d_t} -> {w_t}
  return %q : {w_t}
}}""", tmp_path)


def start(step, seed=0):
    x = np.random.default_rng(seed).normal(0, 0.02, (ROWS, COLS)).astype(np.float32)
    return step.call("encode", x)


FORMATS = ["q8_0", "q4_0", "q4_K", "q6_K", "iq4_nl", "mxfp4"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_conservation_dense_f32(tmp_path, fmt):
    """decode(w2) + c2 = decode(w) + c + delta, to f32 rounding."""
    step = carry_step(tmp_path, fmt)
    w = start(step)
    rng = np.random.default_rng(1)
    c = rng.normal(0, 1e-4, (ROWS, COLS)).astype(np.float32)
    d = rng.normal(0, 3e-3, (ROWS, COLS)).astype(np.float32)
    w2, c2 = step.call("update", w, c, d)
    before = step.call("decode", w).astype(np.float64) + c + d
    after = step.call("decode", w2).astype(np.float64) + c2
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-7)
    assert not np.array_equal(w2, w), "an update of this size moves some code"
    assert step.take_error() is None


def test_conservation_bf16_carry(tmp_path):
    """With a bf16 carry the only loss is the carry's own rounding
    (relative 2^-8 of the residual)."""
    step = carry_step(tmp_path, "q4_K", "bf16")
    w = start(step)
    rng = np.random.default_rng(2)
    d = rng.normal(0, 1e-3, (ROWS, COLS)).astype(np.float32)
    w2, c2 = step.call("update", w, np.zeros((ROWS, COLS), np.uint16), d)
    c2f = (c2.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    residual = step.call("decode", w).astype(np.float64) + d - step.call("decode", w2)
    np.testing.assert_allclose(c2f, residual, rtol=2 ** -8, atol=1e-12)


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_update_changes_nothing(tmp_path, fmt):
    """Zero carry and zero delta: every block stays, the carry stays zero."""
    step = carry_step(tmp_path, fmt)
    w = start(step, seed=3)
    zero = np.zeros((ROWS, COLS), np.float32)
    w2, c2 = step.call("update", w, zero, zero)
    assert np.array_equal(w2, w)
    assert not c2.any()


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "q4_K"])
def test_sub_step_updates_accumulate_only_with_a_carry(tmp_path, fmt):
    """Forty updates of 0.1 quantization step per element: through the carry
    the weights move by the full amount (what was applied plus what the
    carry still holds equals the total); through plain requantization,
    requant(dequant(w) + delta), most of the update is lost."""
    step = carry_step(tmp_path, fmt)
    w0 = start(step, seed=4)
    w0f = step.call("decode", w0).astype(np.float64)
    # The smallest step between representable values per block, from the
    # decoded block: a delta of 0.1 of it never crosses half a step at once.
    deq = w0f.reshape(ROWS, -1, 32)
    gaps = []
    for block in deq.reshape(-1, 32):
        u = np.unique(block)
        gaps.append(np.diff(u).min() if len(u) > 1 else 1.0)
    step_size = float(np.min(gaps))
    # Random directions, fixed across steps: a uniform shift would be
    # absorbed by the min offset of q4_1-like formats even without a carry.
    signs = np.where(np.random.default_rng(9).random((ROWS, COLS)) < 0.5, -1, 1)
    d = (0.1 * step_size * signs).astype(np.float32)
    w, c = w0, np.zeros((ROWS, COLS), np.float32)
    plain = w0
    for _ in range(40):
        w, c = step.call("update", w, c, d)
        plain = step.call("plain", plain, d)
    applied = step.call("decode", w).astype(np.float64) - w0f
    total = 40 * d.astype(np.float64)
    # Each step rounds the latent value to f32 once: 40 roundings of values
    # no larger than max|W| + total bound the drift.
    ulp = np.finfo(np.float32).eps * (np.abs(w0f).max() + total.max())
    np.testing.assert_allclose(applied + c, total, rtol=0, atol=40 * ulp)
    # The fraction of the total update that reached the weights.
    def reached(wq):
        moved = step.call("decode", wq).astype(np.float64) - w0f
        return float((moved * total).sum() / (total * total).sum())
    print(f"{fmt}: the carry applied {reached(w):.2f} of the update, plain "
          f"requantization {reached(plain):.2f}")
    assert reached(w) > 0.5, "through the carry the weights move"
    assert reached(plain) < 0.2, "plain requantization loses the update"


def test_nan_update_leaves_block_and_reports(tmp_path):
    """A NaN in delta: its block keeps weights and carry; the others update;
    the error names the row and column."""
    step = carry_step(tmp_path, "q8_0")
    w = start(step, seed=5)
    c = np.zeros((ROWS, COLS), np.float32)
    d = np.full((ROWS, COLS), 0.05, np.float32)
    d[2, 40] = np.nan
    w2, c2 = step.call("update", w, c, d)
    blocks, blocks2 = w.reshape(ROWS, -1, 34), w2.reshape(ROWS, -1, 34)
    assert np.array_equal(blocks2[2, 1], blocks[2, 1])
    assert not c2[2, 32:64].any()
    assert not np.array_equal(blocks2[0, 0], blocks[0, 0])
    message = step.take_error()
    assert message is not None and "row 2, column 32" in message


def splitmix64(v):
    m = (1 << 64) - 1
    z = (v + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def jl_matrix(dim, chunk, seed):
    """P of docs/spec.md §4, computed independently of the runtime."""
    signs = np.array([[-1.0 if splitmix64(seed + k * chunk + j) >> 63 else 1.0
                       for j in range(chunk)] for k in range(dim)])
    return signs / np.sqrt(dim)


def test_jl_sketch_and_readback_error(tmp_path):
    """With a delta too small to move any code, the op stores exactly the
    sketch z = P·e of docs/spec.md §4 (P rebuilt here from splitmix64), and
    the read-back ê = Pᵀz has the documented mean squared error
    (c - 1)/d·||e||²: measured over 8 rows x 6 seeds, within 25%."""
    dim, chunk = 32, 256
    ratios = []
    for seed in range(6):
        step = carry_step(tmp_path / f"s{seed}", "q8_0", jl=(dim, chunk, seed))
        w = start(step, seed=seed)
        e = np.random.default_rng(100 + seed).normal(0, 1e-7, (ROWS, COLS)).astype(np.float32)
        zero = np.zeros((ROWS, COLS // chunk * dim), np.float32)
        w2, z = step.call("update", w, zero, e)
        assert np.array_equal(w2, w), "nothing may move for this check"
        p = jl_matrix(dim, chunk, seed)
        # The op forms the latent value in f32, so the residual it sketches
        # is e as it survives fl(Ŵ + e) - Ŵ.
        wf = step.call("decode", w)
        e = (wf + e) - wf
        ref = e.astype(np.float64) @ p.T
        np.testing.assert_allclose(z, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
        readback = z.astype(np.float64) @ p
        err = ((readback - e) ** 2).sum(axis=1)
        bound = (chunk - 1) / dim * (e.astype(np.float64) ** 2).sum(axis=1)
        ratios.extend(err / bound)
    assert 0.75 < np.mean(ratios) < 1.25, np.mean(ratios)
