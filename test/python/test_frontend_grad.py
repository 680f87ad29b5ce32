"""Gradients of every traced op and layer against finite differences of the
compiled code (docs/frontend.md).

Each case traces y = f(inputs), differentiates L = Σ y ⊙ R (R fixed and
random) with qcc.grad, compiles both L and its gradient with the `qcc`
driver and compares the gradient, along two random directions, with central
differences of the compiled L. Float cases run in f64 (h = 1e-6, relative
tolerance 1e-6); cases through quantized weights run in f32, the only type
qcc.qmatmul computes in (h = 2e-3, relative tolerance 2e-2)."""

import numpy as np
import pytest

import frontend_util as fu
import qcc
from qcc import F, nn
from qcc import ir

R = np.random.default_rng(42)


def normal(*shape):
    return R.standard_normal(shape)


UNARY = {
    "exp": lambda x: x.exp(),
    "log": lambda x: (x * x + 0.5).log(),
    "sqrt": lambda x: (x * x + 0.5).sqrt(),
    "rsqrt": lambda x: (x * x + 0.5).rsqrt(),
    "tanh": lambda x: x.tanh(),
    "sigmoid": lambda x: x.sigmoid(),
    "square": lambda x: x.square(),
    "neg": lambda x: -x,
    "silu": F.silu,
    "gelu": F.gelu,
    "scalar_ops": lambda x: 2.0 - (3.0 / (x * x + 1.0)) * 0.5 + 1.5,
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(tmp_path, name):
    fu.check_grads(tmp_path, lambda a: UNARY[name](a["x"]),
                   {"x": (normal(3, 5), "float")})


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("shapes", [((3, 4), (4,)), ((3, 1), (1, 4)),
                                    ((2, 3, 4), (3, 1))])
def test_binary_broadcast(tmp_path, op, shapes):
    def build(a):
        x, y = a["x"], a["y"]
        if op == "div":
            y = y * y + 1.0
        return {"add": x + y, "sub": x - y, "mul": x * y, "div": x / y}[op]
    fu.check_grads(tmp_path, build, {"x": (normal(*shapes[0]), "float"),
                                     "y": (normal(*shapes[1]), "float")})


@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False),
                                           (1, True), ((0, 2), False),
                                           (-1, True)])
def test_sum_mean(tmp_path, axis, keepdims):
    fu.check_grads(tmp_path, lambda a: a["x"].sum(axis, keepdims) +
                   a["x"].mean(axis, keepdims) * 3.0,
                   {"x": (normal(2, 3, 4), "float")})


@pytest.mark.parametrize("axis", [None, 2, (0, 2)])
def test_sum_of_a_broadcast(tmp_path, axis):
    """A reduction over an axis that only a broadcast spans: the fused
    loop must still have an operand that gives that axis its extent."""
    fu.check_grads(tmp_path, lambda a: (ir.broadcast_to(a["x"], (3, 4, 5)) * 2.0
                                        + 1.0).sum(axis),
                   {"x": (normal(3, 4, 1), "float")})


def test_reshape_permute_transpose(tmp_path):
    def build(a):
        x = a["x"].reshape(6, 4).T.reshape(2, 2, 6)
        return x.permute(2, 0, 1) * a["x"].reshape(6, 2, 2)
    fu.check_grads(tmp_path, build, {"x": (normal(2, 3, 4), "float")})


@pytest.mark.parametrize("spec,sa,sb", [
    ("mk,nk->mn", (3, 5), (4, 5)),
    ("mk,kn->mn", (3, 5), (5, 4)),
    ("km,kn->mn", (5, 3), (5, 4)),
    ("bik,bkj->bij", (2, 3, 5), (2, 5, 4)),
    ("bhid,bhjd->bhij", (2, 3, 4, 5), (2, 3, 6, 5)),
    ("bhij,bhjd->bhid", (2, 3, 4, 6), (2, 3, 6, 5)),
    ("ij,j->i", (3, 4), (4,)),
    ("ik,jk->", (3, 4), (2, 4)),
])
def test_einsum(tmp_path, spec, sa, sb):
    fu.check_grads(tmp_path, lambda a: F.einsum(spec, a["a"], a["b"]),
                   {"a": (normal(*sa), "float"), "b": (normal(*sb), "float")})


def test_matmul_operator(tmp_path):
    fu.check_grads(tmp_path, lambda a: a["a"] @ a["b"],
                   {"a": (normal(2, 3, 4), "float"), "b": (normal(2, 4, 5), "float")})


@pytest.mark.parametrize("causal", [False, True])
def test_softmax(tmp_path, causal):
    fu.check_grads(tmp_path, lambda a: F.softmax(a["x"], causal=causal),
                   {"x": (normal(2, 5, 5) * 2, "float")})


def test_softmax_window_gradient(tmp_path):
    fu.check_grads(tmp_path, lambda a: F.softmax(a["x"], causal=True, window=2),
                   {"x": (normal(2, 6, 6) * 2, "float")})


@pytest.mark.parametrize("window", [1, 3, 5])
def test_softmax_window_values(tmp_path, window):
    """Sliding-window softmax against numpy: query i sees keys
    i - window < j <= i (llama.cpp's LLAMA_SWA_TYPE_STANDARD)."""
    x = normal(2, 7, 7) * 2
    with qcc.Graph("f64") as g:
        xi = g.input("x", x.shape)
        y = F.softmax(xi, causal=True, window=window)
        text = qcc.module([qcc.Function("f", [y], args=[xi])])
    got = qcc.compile_step(text, tmp_path).call("f", x)
    i, j = np.indices((7, 7))
    keep = (j <= i) & (i - j < window)
    z = np.where(keep, x, -np.inf)
    want = np.exp(z - z.max(-1, keepdims=True))
    want /= want.sum(-1, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_logsumexp_log_softmax(tmp_path):
    fu.check_grads(tmp_path, lambda a: F.log_softmax(a["x"]) +
                   ir.reshape(ir.logsumexp(a["x"]), (3, 1)),
                   {"x": (normal(3, 7) * 3, "float")})


def test_cross_entropy(tmp_path):
    fu.check_grads(tmp_path, lambda a: F.cross_entropy(a["x"], a["t"]),
                   {"x": (normal(2, 4, 9) * 2, "float"),
                    "t": (R.integers(0, 9, (2, 4)), "int")})


@pytest.mark.parametrize("softcap", [0.0, 3.0])
def test_linear_nll_float(tmp_path, softcap):
    """The fused, chunked head + cross-entropy (6 rows in chunks of 3)
    against finite differences; W is frozen (no gradient by design)."""
    def build(a):
        return ir.linear_nll(a["h"], a["w"], a["t"], softcap=softcap, chunk=4)
    fu.check_grads(tmp_path, build,
                   {"h": (normal(6, 8), "float"), "w": (normal(11, 8), "const"),
                    "t": (R.integers(0, 11, 6), "int")})


def q8_0_matrix(rows, blocks_per_row, scale=1 / 64):
    """(q8_0 blocks [rows, blocks, 34] of random codes under one f16 scale,
    the matrix they decode to [rows, 32·blocks] in f32)."""
    blocks = np.zeros((rows, blocks_per_row, 34), np.uint8)
    codes = R.integers(-127, 128, (rows, blocks_per_row, 32)).astype(np.int8)
    d = np.float16(scale)
    blocks[:, :, :2] = np.frombuffer(d.tobytes(), np.uint8)
    blocks[:, :, 2:] = codes.view(np.uint8)
    w = (codes.astype(np.float32) * np.float32(d)).reshape(rows, -1)
    return blocks, w


@pytest.mark.parametrize("softcap", [0.0, 2.5])
def test_linear_nll_quantized(tmp_path, softcap):
    """Through q8_0 blocks: nll and ∂L/∂h equal those of the unfused
    qcc.qmatmul + logsumexp - take_last path, and a numpy reference."""
    blocks, w = q8_0_matrix(10, 2)
    hv = normal(8, 64).astype(np.float32)
    tv = R.integers(0, 10, 8).astype(np.int32)
    gv = normal(8).astype(np.float32)
    outs = {}
    for fused in (True, False):
        with ir.Graph("f32") as g:
            h = g.input("h", (8, 64))
            wq = g.arg("w", (10, 64), "q8_0", role="weight")
            t = g.input("t", (8,), "i32")
            r = g.input("r", (8,))
            if fused:
                nll = ir.linear_nll(h, wq, t, softcap=softcap, chunk=4)
            else:
                y = F.linear(h, wq)
                if softcap:
                    y = F.tanh(y * (1.0 / softcap)) * softcap
                nll = F.logsumexp(y) - ir.take_last(y, t)
            loss = (nll * r).sum()
            (gh,) = fu.qcc.grad(loss, [h])
            text = fu.qcc.module([fu.qcc.Function("g", [nll, gh],
                                                  args=[h, wq, t, r])])
        assert ("scf.for" in text) == fused
        step = fu.qcc.compile_step(text, tmp_path / str(fused))
        outs[fused] = step.call("g", hv, blocks.reshape(-1), tv, gv)
    y = hv.astype(np.float64) @ w.T
    dy = np.ones_like(y)
    if softcap:
        y = np.tanh(y / softcap) * softcap
        dy = 1 - (y / softcap) ** 2
    lse = np.log(np.exp(y - y.max(1, keepdims=True)).sum(1)) + y.max(1)
    ref = lse - y[np.arange(8), tv]
    p = np.exp(y - lse[:, None])
    p[np.arange(8), tv] -= 1
    ref_gh = ((p * dy) * gv[:, None]) @ w
    for fused in (True, False):
        np.testing.assert_allclose(outs[fused][0], ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(outs[fused][1], ref_gh, rtol=1e-4, atol=1e-5)


def test_quantized_gather_out_of_range(tmp_path):
    """qcc.gather decodes the picked rows of a q8_0 table exactly, and ids
    outside the table give rows of zeros."""
    blocks = np.zeros((5, 1, 34), np.uint8)
    codes = R.integers(-127, 128, (5, 1, 32)).astype(np.int8)
    d = np.float16(1 / 32)
    blocks[:, :, :2] = np.frombuffer(d.tobytes(), np.uint8)
    blocks[:, :, 2:] = codes.view(np.uint8)
    w = (codes.astype(np.float32) * np.float32(d)).reshape(5, 32)
    with ir.Graph("f32") as g:
        wq = g.arg("w", (5, 32), "q8_0", role="weight")
        ids = g.input("ids", (6,), "i32")
        e = F.embedding(ids, wq)
        text = fu.qcc.module([fu.qcc.Function("f", [e], args=[wq, ids])])
    assert "qcc.gather" in text and "qcc.dequant" not in text
    step = fu.qcc.compile_step(text, tmp_path)
    iv = np.array([4, 0, -1, 5, 2, 2], np.int32)
    out = step.call("f", blocks.reshape(-1), iv)
    ref = np.stack([w[i] if 0 <= i < 5 else np.zeros(32, np.float32) for i in iv])
    np.testing.assert_array_equal(out, ref)


def test_embedding_float(tmp_path):
    fu.check_grads(tmp_path, lambda a: F.embedding(a["ids"], a["table"]),
                   {"table": (normal(7, 5), "float"),
                    "ids": (np.array([[1, 3, 1], [6, 0, 3]]), "int")})


def test_rms_norm(tmp_path):
    fu.check_grads(tmp_path, lambda a: F.rms_norm(a["x"], a["w"], 1e-5),
                   {"x": (normal(2, 3, 8), "float"), "w": (normal(8), "float")})


@pytest.mark.parametrize("mode", ["normal", "neox"])
@pytest.mark.parametrize("n_rot", [None, 4])
def test_rope(tmp_path, mode, n_rot):
    out, _ = fu.check_grads(
        tmp_path, lambda a: F.rope(a["x"], mode, 100.0, 0.5, n_rot),
        {"x": (normal(2, 5, 3, 8), "float")})


def test_rope_with_frequency_factors(tmp_path):
    fu.check_grads(
        tmp_path, lambda a: F.rope(a["x"], "normal", 100.0, 1.0, None,
                                   factors=(1.0, 2.5, 4.0, 8.0)),
        {"x": (normal(2, 5, 3, 8), "float")})


@pytest.mark.parametrize("causal,window,q_tile,k_tile", [
    (True, 0, 2, 3),    # several query and key tiles
    (True, 3, 2, 2),    # a window: key tiles skipped, rows fully masked in a tile
    (False, 0, 3, 2),
    (True, 3, 6, 6),    # one key tile: the einsum backward
])
def test_tiled_attention_gradient(tmp_path, causal, window, q_tile, k_tile):
    """flash_attention's backward (tiled, flash_attention_grad, or with one
    key tile the einsum form) against finite differences: 2 query heads per
    key/value head, 6 queries, 6 keys."""
    fu.check_grads(
        tmp_path, lambda a: ir.flash_attention(a["q"], a["k"], a["v"], 2, 0.5, causal,
                                               window, q_tile, k_tile),
        {"q": (normal(1, 2, 12, 4), "float"), "k": (normal(1, 2, 6, 4), "float"),
         "v": (normal(1, 2, 6, 4), "float")})


def test_attention_gqa(tmp_path):
    fu.check_grads(tmp_path, lambda a: F.attention(a["q"], a["k"], a["v"]),
                   {"q": (normal(2, 5, 4, 3), "float"),
                    "k": (normal(2, 5, 2, 3), "float"),
                    "v": (normal(2, 5, 2, 3), "float")})


def _layer_case(tmp_path, make, x_shape, float_type="f64", int_input=False,
                extra=None):
    """A layer's gradient with respect to its input and every parameter:
    parameters become inputs of the check under their own names."""
    layer = make()
    params = layer.parameters()
    inputs = {}
    if int_input:
        inputs["x"] = (R.integers(0, 7, x_shape), "int")
    else:
        inputs["x"] = (normal(*x_shape), "float")
    for p in params:
        kind = "float" if p.dtype == "float" else p.dtype
        inputs[p.name] = (normal(*p.shape) * 0.5, kind)
    inputs.update(extra or {})

    def build(a):
        g = ir.current_graph()
        for p in params:
            leaf = a[p.name]
            g._param_leaves[id(p)] = leaf
        return layer(a["x"])
    return fu.check_grads(tmp_path, build, inputs, float_type)


def test_layer_linear_bias(tmp_path):
    _layer_case(tmp_path, lambda: nn.Linear(6, 4, bias=True, name="l.weight"),
                (2, 3, 6))


def test_layer_linear_lora(tmp_path):
    _layer_case(tmp_path, lambda: nn.Linear(6, 4, name="l.weight").lora(2, 4.0),
                (2, 3, 6))


def test_layer_embedding(tmp_path):
    _layer_case(tmp_path, lambda: nn.Embedding(7, 5, name="e.weight"), (2, 3),
                int_input=True)


def test_layer_rmsnorm(tmp_path):
    _layer_case(tmp_path, lambda: nn.RMSNorm(6, 1e-6, name="n.weight"), (2, 3, 6))


def test_layer_swiglu(tmp_path):
    _layer_case(tmp_path, lambda: nn.SwiGLU(6, 10), (2, 3, 6))


def test_layer_geglu(tmp_path):
    _layer_case(tmp_path, lambda: nn.GeGLU(6, 10), (2, 3, 6))


def test_layer_gemma3_block(tmp_path):
    """A whole Gemma 3 block (QK-norm, post-norms, GeGLU, a sliding window
    smaller than the sequence, NeoX RoPE with the local base)."""
    from qcc.models.gemma3 import Block, Gemma3Config
    cfg = Gemma3Config(arch="gemma3", n_layer=2, d_model=8, d_ff=12, n_head=2,
                       n_head_kv=1, head_dim=4, vocab=16, norm_eps=1e-6,
                       rope_theta=1e6, rope_freq_scale=1.0, rope_theta_swa=1e4,
                       window=2, swa_layers=(0,), attn_scale=0.5)
    _layer_case(tmp_path, lambda: Block(cfg, 0, _FloatTypes()), (2, 4, 8))


class _FloatTypes(dict):
    def __missing__(self, key):
        return "f32"


def test_layer_gelu_silu(tmp_path):
    class M(nn.Module):
        def forward(self, x):
            return nn.GELU()(x) * nn.SiLU()(x)
    _layer_case(tmp_path, M, (3, 4))


@pytest.mark.parametrize("variant", ["llama", "qwen2", "qwen3"])
def test_layer_attention(tmp_path, variant):
    rope = nn.RoPE("normal" if variant == "llama" else "neox", 1000.0)
    _layer_case(tmp_path, lambda: nn.CausalSelfAttention(
        8, 4, 2, rope=rope, qkv_bias=variant == "qwen2",
        qk_norm=variant == "qwen3", prefix="blk.0."), (2, 4, 8))


# Through quantized weights (f32 arithmetic) --------------------------------

def test_qlinear_f32_blocks(tmp_path):
    """x·Ŵᵀ with Ŵ stored as f32 blocks: the gradients with respect to x and
    to Ŵ (the tensor the estimator and optimizer see)."""
    fu.check_grads(tmp_path, lambda a: F.linear(a["x"], a["w"]),
                   {"x": (normal(2, 3, 64), "float"),
                    "w": (normal(5, 64) * 0.5, "f32")}, float_type="f32")


def test_qlinear_q8_0_input_gradient(tmp_path):
    """dx = g·Ŵ through q8_0 blocks (qcc.qmatmul bwd)."""
    w = np.zeros((4, 32), np.float32)
    blocks = np.zeros((4, 34), np.uint8)
    codes = R.integers(-127, 128, (4, 32)).astype(np.int8)
    d = np.float16(1 / 64)
    blocks[:, :2] = np.frombuffer(d.tobytes(), np.uint8)
    blocks[:, 2:] = codes.view(np.uint8)
    w[:] = codes.astype(np.float32) * np.float32(d)
    with ir.Graph("f32") as g:
        x = g.input("x", (3, 32))
        wq = g.arg("w", (4, 32), "q8_0", role="weight")
        y = F.linear(x, wq)
        r = g.input("r", (3, 4))
        loss = (y * r).sum()
        gx, gw = fu.qcc.grad(loss, [x, wq])
        text = fu.qcc.module([fu.qcc.Function("g", [loss, gx, gw],
                                              args=[x, wq, r])])
    assert "qcc.qmatmul bwd" in text
    step = fu.qcc.compile_step(text, tmp_path)
    xv = normal(3, 32).astype(np.float32)
    rv = normal(3, 4).astype(np.float32)
    loss_v, gx_v, gw_v = step.call("g", xv, blocks.reshape(-1), rv)
    np.testing.assert_allclose(loss_v, np.sum((xv @ w.T) * rv), rtol=1e-5)
    np.testing.assert_allclose(gx_v, rv @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gw_v, rv.T @ xv, rtol=1e-5, atol=1e-5)


def test_quantized_embedding_tied(tmp_path):
    """A table used twice (token embedding and tied output projection): the
    two weight-gradient contributions are merged into one contraction."""
    def build(a):
        h = F.embedding(a["ids"], a["w"]) * a["s"]
        return F.linear(h, a["w"])
    grads, text = fu.check_grads(
        tmp_path, build,
        {"w": (normal(6, 32) * 0.5, "f32"), "s": (normal(32), "float"),
         "ids": (np.array([[1, 5, 2], [0, 2, 2]]), "int")}, float_type="f32")
    assert "tensor.insert_slice" in text  # the concatenated rows


def distill_reference(hs, w, tv, ht, wt, cap, tcap, tau, alpha, beta):
    """loss [M] and ∂loss/∂y (per logit) of linear_distill, in float64."""
    def capped(x, c):
        return (np.tanh(x / c) * c, 1 - np.tanh(x / c) ** 2) if c else (x, 1.0)

    def log_softmax(x):
        x = x - x.max(1, keepdims=True)
        return x - np.log(np.exp(x).sum(1, keepdims=True))
    y, dy = capped(hs.astype(np.float64) @ w.T.astype(np.float64), cap)
    z, _ = capped(ht.astype(np.float64) @ wt.T.astype(np.float64), tcap)
    rows = np.arange(len(tv))
    lq, lp = log_softmax(y), log_softmax(z / tau)
    ls = log_softmax(y / tau)
    kl = (np.exp(lp) * (lp - ls)).sum(1)
    loss = alpha * -lq[rows, tv] + beta * tau * tau * kl
    d = alpha * np.exp(lq)
    d[rows, tv] -= alpha
    d += beta * tau * (np.exp(ls) - np.exp(lp))
    return loss, d * dy


@pytest.mark.parametrize("softcap", [0.0, 3.0])
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_linear_distill_float(tmp_path, softcap, tau):
    """CE + τ²·KL to a teacher through the fused, chunked head (6 rows in
    chunks of 3) against finite differences; the teacher's rows and both
    heads are constants."""
    def build(a):
        return ir.linear_distill(a["h"], a["w"], a["t"], a["ht"], a["wt"],
                                 softcap=softcap, teacher_softcap=2.0,
                                 temperature=tau, alpha=0.7, beta=0.9, chunk=4)
    fu.check_grads(tmp_path, build,
                   {"h": (normal(6, 8), "float"), "w": (normal(11, 8), "const"),
                    "t": (R.integers(0, 11, 6), "int"),
                    "ht": (normal(6, 5), "const"), "wt": (normal(11, 5), "const")})


@pytest.mark.parametrize("softcap", [0.0, 2.5])
def test_linear_distill_quantized_teacher(tmp_path, softcap):
    """A float student head and a q8_0 teacher head: the loss and ∂L/∂h
    against a float64 numpy reference of the formula (docs in ir.py)."""
    blocks, wt = q8_0_matrix(10, 2)
    ws = normal(10, 16).astype(np.float32) * 0.3
    hv = normal(8, 16).astype(np.float32)
    htv = normal(8, 64).astype(np.float32)
    tv = R.integers(0, 10, 8).astype(np.int32)
    gv = normal(8).astype(np.float32)
    tau, alpha, beta = 2.0, 0.5, 1.0
    with ir.Graph("f32") as g:
        h = g.input("h", (8, 16))
        w = g.input("w", (10, 16))
        t = g.input("t", (8,), "i32")
        ht = g.input("ht", (8, 64))
        wq = g.arg("wt", (10, 64), "q8_0", role="weight")
        r = g.input("r", (8,))
        loss = ir.linear_distill(h, w, t, ht, wq, softcap=softcap,
                                 teacher_softcap=softcap, temperature=tau,
                                 alpha=alpha, beta=beta, chunk=4)
        (gh,) = fu.qcc.grad((loss * r).sum(), [h])
        text = fu.qcc.module([fu.qcc.Function("g", [loss, gh],
                                              args=[h, w, t, ht, wq, r])])
    step = fu.qcc.compile_step(text, tmp_path)
    got, got_gh = step.call("g", hv, ws, tv, htv, blocks.reshape(-1), gv)
    ref, dref = distill_reference(hv, ws, tv, htv, wt, softcap, softcap,
                                  tau, alpha, beta)
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(got_gh, (dref * gv[:, None]) @ ws,
                               rtol=2e-3, atol=2e-5)
