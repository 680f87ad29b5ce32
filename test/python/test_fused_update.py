"""qcc-fuse-weight-update: a full-weight training step compiled with the
fused qcc.weight_update (the default) gives the same weights, carry,
optimizer state and (lsq) block-scale gradients as the same step compiled
unfused
(`--fuse-weight-update=false`: the whole f32 gradient, elementwise ops,
then carry_update), for every estimator, carry kind and optimizer; and the
optimizer arithmetic agrees with numpy.

Shapes: W is 320 x 256, so the fused lowering's 128-row tiles end in a
partial one (64 rows); 8 tokens."""

import subprocess

import numpy as np
import pytest

from qcc_step import compile_step, find_tool

import qcc.optim as optim

N, K, M = 320, 256, 8
BLOCK = {"q4_K": 256, "q6_K": 256, "q8_0": 32, "iq4_nl": 32}
JL = (16, 256, 7)  # dim, chunk, seed


def bf16_to_f32(a):
    return (a.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(a):
    """Round to nearest even, as the compiled code does."""
    b = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    return b.astype(np.uint16)


def step_text(fmt, ste, carry, opt):
    """The MLIR of one training step of a Linear layer's weight."""
    w_t = f"!qcc.qtensor<{N}x{K}x{fmt}>"
    c_dtype = "bf16" if carry == "bf16" else "f32"
    c_cols = K if carry != "jl" else K // JL[1] * JL[0]
    c_t = f"tensor<{N}x{c_cols}x{c_dtype}>"
    g_t = f"tensor<{N}x{K}xf32>"
    state_dtype = "bf16"
    s_t = f"tensor<{N}x{K}x{state_dtype}>"
    args = [f"%w: {w_t}", f"%c: {c_t}"]
    results, returns = [w_t, c_t], ["%w2", "%c2"]
    if opt in ("momentum", "adamw"):
        args.append(f"%m: {s_t}")
        results.append(s_t)
    if opt == "adamw":
        args.append(f"%v: {s_t}")
        results.append(s_t)
    args += [f"%gy: tensor<{M}x{N}xf32>", f"%x: tensor<{M}x{K}xf32>",
             "%lr: f32"]
    if opt == "adamw":
        args += ["%bc1: f32", "%bc2: f32"]

    em = optim.Emitter()
    zero = em.constant(0.0, "zero")
    em.emit(f"%ge = tensor.empty() : {g_t}")
    em.emit(f"%g0 = linalg.fill ins({zero} : f32) outs(%ge : {g_t}) -> {g_t}")
    em.emit("%g = linalg.matmul indexing_maps = [affine_map<(n, k, m) -> (m, n)>, "
            "affine_map<(n, k, m) -> (m, k)>, affine_map<(n, k, m) -> (n, k)>] "
            f"ins(%gy, %x : tensor<{M}x{N}xf32>, tensor<{M}x{K}xf32>) "
            f"outs(%g0 : {g_t}) -> {g_t}")
    residual = f" residual(%c : {c_t})" if carry != "jl" else ""
    if ste == "lsq":
        blocks = K // BLOCK[fmt]
        sg_t = f"tensor<{N}x{blocks}xf32>"
        em.emit(f"%s, %sg = qcc.ste_grad lsq %g, %w : {g_t}, {w_t} -> {g_t}, {sg_t}")
    elif ste == "identity":
        em.emit(f"%s = qcc.ste_grad identity %g, %w : {g_t}, {w_t} -> {g_t}")
    elif ste == "clipped":
        em.emit(f"%s = qcc.ste_grad clipped %g, %w{residual} "
                f"{{threshold = 0.03 : f32}} : {g_t}, {w_t} -> {g_t}")
    else:
        em.emit(f"%s = qcc.ste_grad ewgs %g, %w{residual} "
                f"{{lambda = 2.0e+01 : f32}} : {g_t}, {w_t} -> {g_t}")
    shape = (N, K)
    if opt == "sgd":
        d = optim.sgd(em, "%s", "%lr", shape)
    elif opt == "momentum":
        d, m2 = optim.momentum(em, "%s", "%m", "%lr", 0.9, shape, state_dtype)
        returns.append(m2)
    else:
        em.emit(f"%wf = qcc.dequant %w : {w_t} -> {g_t}")
        d, m2, v2 = optim.adamw(em, "%s", "%m", "%v", "%lr", shape, "%bc1",
                                "%bc2", weight_decay=0.1, w="%wf",
                                state_dtype=state_dtype)
        returns += [m2, v2]
    jl = (f" {{jl = #qcc.jl<dim = {JL[0]}, chunk = {JL[1]}, seed = {JL[2]}>}}"
          if carry == "jl" else "")
    em.emit(f"%w2, %c2 = qcc.carry_update %w, %c, {d}{jl} : {w_t}, {c_t}, {g_t}")
    if ste == "lsq":
        returns.append("%sg")
        results.append(sg_t)
    ret_types = ", ".join(results)
    em.emit(f"return {', '.join(returns)} : {ret_types}")
    body = "\n".join(em.lines)
    return f"""
func.func @train({', '.join(args)}) -> ({ret_types}) {{
{body}
}}
func.func @encode(%x: {g_t}) -> {w_t} {{
  %q = qcc.requant %x : {g_t} -> {w_t}
  return %q : {w_t}
}}
func.func @decode(%w: {w_t}) -> {g_t} {{
  %d = qcc.dequant %w : {w_t} -> {g_t}
  return %d : {g_t}
}}
"""


def fused_ir(text, tmp_path):
    src = tmp_path / "check.mlir"
    src.write_text(text)
    return subprocess.run([find_tool("qcc-opt"), str(src), "-qcc-lower-ste",
                           "-canonicalize", "-qcc-fuse-weight-update"],
                          check=True, capture_output=True, text=True).stdout


CASES = [
    # (format, estimator, carry, optimizer): every estimator with every
    # carry kind, the optimizers spread over them, and other formats.
    ("q4_K", "identity", "f32", "sgd"),
    ("q4_K", "identity", "bf16", "momentum"),
    ("q4_K", "identity", "jl", "adamw"),
    ("q4_K", "clipped", "f32", "momentum"),
    ("q4_K", "clipped", "bf16", "adamw"),
    ("q4_K", "clipped", "jl", "sgd"),
    ("q4_K", "ewgs", "f32", "adamw"),
    ("q4_K", "ewgs", "bf16", "sgd"),
    ("q4_K", "ewgs", "jl", "momentum"),
    ("q8_0", "identity", "bf16", "adamw"),
    ("q6_K", "clipped", "f32", "sgd"),
    ("iq4_nl", "ewgs", "bf16", "momentum"),
    ("q4_K", "lsq", "f32", "sgd"),
    ("q4_K", "lsq", "bf16", "adamw"),
    ("q8_0", "lsq", "jl", "momentum"),
]


@pytest.mark.parametrize("fmt,ste,carry,opt", CASES)
def test_fused_equals_unfused(tmp_path, fmt, ste, carry, opt):
    text = step_text(fmt, ste, carry, opt)
    assert "qcc.weight_update" in fused_ir(text, tmp_path), \
        "the pass must fuse this step"
    fused = compile_step(text, tmp_path / "fused")
    unfused = compile_step(text, tmp_path / "unfused",
                           "--fuse-weight-update=false")

    rng = np.random.default_rng(11)
    w = fused.call("encode", rng.normal(0, 0.02, (N, K)).astype(np.float32))
    c_cols = K if carry != "jl" else K // JL[1] * JL[0]
    c = np.zeros((N, c_cols), np.uint16 if carry == "bf16" else np.float32)
    state = []
    if opt in ("momentum", "adamw"):
        state.append(np.zeros((N, K), np.uint16))
    if opt == "adamw":
        state.append(np.zeros((N, K), np.uint16))
    a = b = [w, c, *state]
    moved = False
    for t in range(3):
        gy = rng.normal(0, 1, (M, N)).astype(np.float32)
        x = rng.normal(0, 1, (M, K)).astype(np.float32)
        scalars = [np.float32(3e-3)]
        if opt == "adamw":
            scalars += [np.float32(v) for v in optim.adam_bias_corrections(t)]
        ra = fused.call("train", *a, gy, x, *scalars)
        rb = unfused.call("train", *b, gy, x, *scalars)
        for i, (va, vb) in enumerate(zip(ra, rb)):
            assert np.array_equal(va, vb), \
                f"step {t}, result {i}: fused and unfused differ"
        moved |= not np.array_equal(ra[0], a[0])
        if ste == "lsq":  # the scale gradient is an output, not state
            assert np.abs(ra[-1]).max() > 0
            ra, rb = ra[:-1], rb[:-1]
        a, b = list(ra), list(rb)
    assert moved, "the steps should move some codes"
    assert fused.take_error() is None and unfused.take_error() is None


def test_momentum_matches_numpy(tmp_path):
    """The fused step's momentum and the update it applies against numpy:
    m' = bf16(0.9·m + gyᵀ·x), and decode(w') + c' = decode(w) + c - lr·m'
    (the carry's conservation law, dense f32 carry)."""
    step = compile_step(step_text("q4_K", "identity", "f32", "momentum"),
                        tmp_path)
    rng = np.random.default_rng(5)
    w = step.call("encode", rng.normal(0, 0.02, (N, K)).astype(np.float32))
    c = np.zeros((N, K), np.float32)
    m = f32_to_bf16(rng.normal(0, 0.1, (N, K)))
    gy = rng.normal(0, 1, (M, N)).astype(np.float32)
    x = rng.normal(0, 1, (M, K)).astype(np.float32)
    lr = np.float32(1e-3)
    w2, c2, m2 = step.call("train", w, c, m, gy, x, lr)
    g = gy.astype(np.float64).T @ x.astype(np.float64)
    expect_m = 0.9 * bf16_to_f32(m).astype(np.float64) + g
    # bf16 keeps 8 significant bits: relative rounding 2^-9, plus f32 noise.
    np.testing.assert_allclose(bf16_to_f32(m2), expect_m, rtol=2 ** -8,
                               atol=1e-6)
    delta = -np.float64(lr) * bf16_to_f32(m2)
    before = step.call("decode", w).astype(np.float64) + c + delta
    after = step.call("decode", w2).astype(np.float64) + c2
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)


def test_adamw_matches_numpy(tmp_path):
    """One fused AdamW step (bf16 moments, decoupled weight decay on the
    decoded weight) against numpy's AdamW in float64."""
    step = compile_step(step_text("q8_0", "identity", "f32", "adamw"),
                        tmp_path)
    rng = np.random.default_rng(6)
    w = step.call("encode", rng.normal(0, 0.02, (N, K)).astype(np.float32))
    c = np.zeros((N, K), np.float32)
    m = f32_to_bf16(rng.normal(0, 0.1, (N, K)))
    v = f32_to_bf16(np.abs(rng.normal(0, 0.1, (N, K))))
    gy = rng.normal(0, 1, (M, N)).astype(np.float32)
    x = rng.normal(0, 1, (M, K)).astype(np.float32)
    lr = 1e-3
    bc1, bc2 = optim.adam_bias_corrections(4)
    w2, c2, m2, v2 = step.call("train", w, c, m, v, gy, x, np.float32(lr),
                               np.float32(bc1), np.float32(bc2))
    g = gy.astype(np.float64).T @ x.astype(np.float64)
    em = 0.9 * bf16_to_f32(m) + 0.1 * g
    ev = 0.999 * bf16_to_f32(v) + 0.001 * g * g
    np.testing.assert_allclose(bf16_to_f32(m2), em, rtol=2 ** -8, atol=1e-6)
    np.testing.assert_allclose(bf16_to_f32(v2), ev, rtol=2 ** -8, atol=1e-6)
    wf = step.call("decode", w).astype(np.float64)
    mr, vr = bf16_to_f32(m2).astype(np.float64), bf16_to_f32(v2).astype(np.float64)
    delta = -lr * ((mr / bc1) / (np.sqrt(vr / bc2) + 1e-8) + 0.1 * wf)
    after = step.call("decode", w2).astype(np.float64) + c2
    np.testing.assert_allclose(after, wf + delta, rtol=0, atol=2e-6)


def test_global_norm_clip_matches_numpy(tmp_path):
    """Global-norm clipping without materializing the weight gradients: the
    squared norm of gyᵀ·x from two M x M Gram matrices, over two weights,
    and the clip factor min(1, max / (norm + 1e-6))."""
    em = optim.Emitter()
    s1 = optim.outer_grad_norm_sq(em, "%gy1", "%x", M, N, K)
    s2 = optim.outer_grad_norm_sq(em, "%gy2", "%x", M, 64, K)
    fac, norm = optim.clip_factor(em, [s1, s2], 5.0)
    em.emit(f"%r = tensor.from_elements {fac}, {norm} : tensor<2xf32>")
    em.emit("return %r : tensor<2xf32>")
    body = "\n".join(em.lines)
    step = compile_step(f"""
func.func @clip(%gy1: tensor<{M}x{N}xf32>, %gy2: tensor<{M}x64xf32>,
                %x: tensor<{M}x{K}xf32>) -> tensor<2xf32> {{
{body}
}}""", tmp_path)
    rng = np.random.default_rng(8)
    gy1 = rng.normal(0, 1, (M, N)).astype(np.float32)
    gy2 = rng.normal(0, 1, (M, 64)).astype(np.float32)
    x = rng.normal(0, 1, (M, K)).astype(np.float32)
    fac, norm = step.call("clip", gy1, gy2, x)
    g1 = gy1.astype(np.float64).T @ x
    g2 = gy2.astype(np.float64).T @ x
    expect = np.sqrt((g1 ** 2).sum() + (g2 ** 2).sum())
    np.testing.assert_allclose(norm, expect, rtol=1e-5)
    np.testing.assert_allclose(fac, min(1.0, 5.0 / (expect + 1e-6)), rtol=1e-5)


def test_warmup_cosine():
    """The schedule the host feeds in as `lr`: linear warmup, cosine decay."""
    lrs = [optim.warmup_cosine(s, 1.0, 10, 110) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert optim.warmup_cosine(200, 1.0, 10, 110, min_lr=0.1) == pytest.approx(0.1)
