"""The IR the frontend emits, layer by layer (FileCheck), and the forward
values of the traced ops against numpy references of their definitions
(llama.cpp's conventions for RoPE, grouped-query attention, RMSNorm)."""

import inspect
import math
import os

import numpy as np
import pytest

import frontend_util as fu
from qcc import F, nn, ir
import qcc

HERE = os.path.basename(__file__)


def trace(build, inputs, float_type="f32"):
    with qcc.Graph(float_type) as g:
        leaves = {}
        for name, (shape, dtype) in inputs.items():
            if dtype in ("f32", "f64", "i32"):
                leaves[name] = g.input(name, shape, dtype)
            else:
                leaves[name] = g.arg(name, shape, dtype, role="weight")
        y = build(leaves)
        return g, y, qcc.module([qcc.Function("f", [y], args=list(leaves.values()))])


def layer_ir(layer, x_shape, x_dtype="f32"):
    with qcc.Graph() as g:
        x = g.input("x", x_shape, x_dtype)
        y = layer(x)  # the line every forward op points at
        return qcc.module([qcc.Function("f", [y])])


def test_linear_quantized_ir():
    text = layer_ir(nn.Linear(64, 32, name="blk.0.ffn_up.weight", dtype="q8_0"),
                    (2, 3, 64))
    fu.filecheck(text, f"""
CHECK: #[[L:loc[0-9]+]] = loc("{{{{.*}}}}{HERE}":{{{{[0-9]+}}}}:{{{{[0-9]+}}}})
CHECK: func.func @f(%arg0: tensor<2x3x64xf32> {{qcc.name = "x", qcc.role = "input"}}, %arg1: !qcc.qtensor<32x64xq8_0> {{qcc.name = "blk.0.ffn_up.weight", qcc.role = "weight"}}) -> (tensor<2x3x32xf32>)
CHECK: tensor.collapse_shape %arg0 {{{{\\[\\[}}}}0, 1], [2]] : tensor<2x3x64xf32> into tensor<6x64xf32> loc(#[[L]])
CHECK: qcc.qmatmul fwd %{{{{.*}}}}, %arg1 : tensor<6x64xf32>, !qcc.qtensor<32x64xq8_0> -> tensor<6x32xf32> loc(#[[L]])
CHECK: tensor.expand_shape {{{{.*}}}} into tensor<2x3x32xf32>
""")


def test_linear_float_ir_is_a_gemm():
    text = layer_ir(nn.Linear(64, 32, bias=True, name="l.weight"), (4, 64))
    fu.filecheck(text, """
CHECK: linalg.matmul indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d2)>, affine_map<(d0, d1, d2) -> (d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1)>] ins(%arg0, %arg1 : tensor<4x64xf32>, tensor<32x64xf32>)
CHECK: linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d1)>, affine_map<(d0, d1) -> (d0, d1)>]
CHECK: arith.addf
""")


def test_embedding_quantized_ir():
    text = layer_ir(nn.Embedding(256, 64, name="token_embd.weight", dtype="q4_K"),
                    (2, 8), "i32")
    fu.filecheck(text, """
CHECK: %arg1: !qcc.qtensor<256x64xq4_K> {qcc.name = "token_embd.weight", qcc.role = "weight"}
CHECK-NOT: qcc.dequant
CHECK: %[[IDS:.+]] = tensor.collapse_shape %arg0 {{\[}}[0, 1]] : tensor<2x8xi32> into tensor<16xi32>
CHECK: %[[ROWS:.+]] = qcc.gather %arg1[%[[IDS]]] : !qcc.qtensor<256x64xq4_K>, tensor<16xi32> -> tensor<16x64xf32>
CHECK: tensor.expand_shape %[[ROWS]] {{\[}}[0, 1], [2]] output_shape [2, 8, 64]
""")


def test_rmsnorm_ir():
    text = layer_ir(nn.RMSNorm(64, 1e-5, name="n.weight"), (4, 64))
    fu.filecheck(text, """
CHECK: iterator_types = ["parallel", "reduction"]
CHECK: arith.mulf %in0, %in0
CHECK: arith.constant 1.562500000e-02 : f32
CHECK: arith.constant 1.000000000e-05 : f32
CHECK: math.rsqrt
CHECK: linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d0, 0)>, affine_map<(d0, d1) -> (d1)>, affine_map<(d0, d1) -> (d0, d1)>]
CHECK-NEXT: ^bb0
CHECK-NEXT: arith.mulf
CHECK-NEXT: arith.mulf
""")


@pytest.mark.parametrize("mode", ["normal", "neox"])
def test_rope_ir(mode):
    text = layer_ir(nn.RoPE(mode, 10000.0), (1, 4, 2, 8))
    checks = {"normal": "CHECK: arith.xori", "neox": "CHECK: arith.cmpi uge"}
    fu.filecheck(text, f"""
CHECK: linalg.index 1 : index
CHECK: linalg.index 3 : index
{checks[mode]}
CHECK: tensor.extract %arg0
CHECK: math.cos
CHECK: math.sin
""")


def test_attention_ir_gqa():
    layer = nn.CausalSelfAttention(32, 4, 2, prefix="blk.0.",
                                   dtypes={k: "q8_0" for k in
                                           ("attn_q", "attn_k", "attn_v", "attn_output")})
    text = layer_ir(layer, (2, 8, 32))
    fu.filecheck(text, """
CHECK-COUNT-3: qcc.qmatmul fwd
CHECK: linalg.transpose ins(%{{.*}} : tensor<2x8x2x2x8xf32>) outs(%{{.*}} : tensor<2x2x8x2x8xf32>) permutation = [0, 2, 1, 3, 4]
CHECK: scf.for {{.*}} -> (tensor<2x2x16x8xf32>)
CHECK: scf.for {{.*}} -> (tensor<2x2x16xf32>, tensor<2x2x16xf32>, tensor<2x2x16x8xf32>)
CHECK: iterator_types = ["parallel", "parallel", "parallel", "parallel", "reduction"]
CHECK: arith.cmpi ugt
CHECK: math.exp
CHECK: iterator_types = ["parallel", "parallel", "parallel", "reduction", "parallel"]
CHECK: qcc.qmatmul fwd %{{.*}}, %{{.*}} : tensor<16x32xf32>, !qcc.qtensor<32x32xq8_0>
""")


def test_swiglu_ir():
    text = layer_ir(nn.SwiGLU(32, 64, dtype="q4_K"), (4, 32))
    fu.filecheck(text, """
CHECK: qcc.qmatmul fwd {{.*}} !qcc.qtensor<64x32xq4_K>
CHECK: qcc.qmatmul fwd {{.*}} !qcc.qtensor<64x32xq4_K>
CHECK: math.exp
CHECK: qcc.qmatmul fwd {{.*}} : tensor<4x64xf32>, !qcc.qtensor<32x64xq4_K> -> tensor<4x32xf32>
""")


def test_cross_entropy_and_backward_ir():
    with qcc.Graph() as g:
        x = g.input("x", (4, 64))
        w = g.arg("blk.0.ffn_up.weight", (16, 64), "q8_0", role="weight")
        t = g.input("t", (4,), "i32")
        y = F.linear(x, w)
        line = inspect.currentframe().f_lineno - 1
        loss = F.cross_entropy(y, t)
        gx, gw = qcc.grad(loss, [x, w])
        text = qcc.module([qcc.Function("f", [loss, gx, gw])])
    fu.filecheck(text, """
CHECK-DAG: #[[BW:loc[0-9]+]] = loc("backward"("{{.*}}test_frontend_ir.py":%LINE%:13))
CHECK: qcc.qmatmul fwd
CHECK: math.log
CHECK: tensor.extract
CHECK: qcc.qmatmul bwd %{{.*}}, %arg1 : tensor<4x16xf32>, !qcc.qtensor<16x64xq8_0> -> tensor<4x64xf32> loc(#[[BW]])
CHECK: linalg.matmul indexing_maps = [affine_map<(d0, d1, d2) -> (d2, d0)>, affine_map<(d0, d1, d2) -> (d2, d1)>, affine_map<(d0, d1, d2) -> (d0, d1)>] ins(%{{.*}}, %arg0 : tensor<4x16xf32>, tensor<4x64xf32>) outs(%{{.*}} : tensor<16x64xf32>)
""".replace("%LINE%", str(line)))


# Forward values against numpy ----------------------------------------------

def rope_ref(x, mode, theta, n_rot=None, factors=None):
    b, t, h, d = x.shape
    n_rot = n_rot or d
    y = x.copy()
    for p in range(t):
        for i in range(n_rot // 2):
            ang = p * theta ** (-2.0 * i / n_rot)
            if factors is not None:
                ang /= factors[i]
            c, s = math.cos(ang), math.sin(ang)
            i0, i1 = (2 * i, 2 * i + 1) if mode == "normal" else (i, i + n_rot // 2)
            a0, a1 = x[:, p, :, i0], x[:, p, :, i1]
            y[:, p, :, i0] = a0 * c - a1 * s
            y[:, p, :, i1] = a0 * s + a1 * c
    return y


def attention_ref(q, k, v):
    b, t, hq, d = q.shape
    grp = hq // k.shape[2]
    out = np.zeros_like(q)
    for h in range(hq):
        kh, vh = k[:, :, h // grp], v[:, :, h // grp]
        s = np.einsum("bid,bjd->bij", q[:, :, h], kh) / math.sqrt(d)
        s = s + np.triu(np.full((t, t), -np.inf), 1)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out[:, :, h] = np.einsum("bij,bjd->bid", p, vh)
    return out


def run(build, inputs, values):
    _, _, text = trace(build, inputs, "f64")
    step = qcc.compile_step(text)
    return step.call("f", *values)


@pytest.mark.parametrize("mode,n_rot", [("normal", None), ("neox", None),
                                        ("neox", 4)])
def test_rope_matches_llama_cpp_conventions(mode, n_rot):
    x = np.random.default_rng(1).standard_normal((2, 6, 3, 8))
    got = run(lambda a: F.rope(a["x"], mode, 500.0, n_rot=n_rot),
              {"x": ((2, 6, 3, 8), "f64")}, [x])
    np.testing.assert_allclose(got, rope_ref(x, mode, 500.0, n_rot), atol=1e-12)


@pytest.mark.parametrize("mode,n_rot", [("normal", None), ("neox", None),
                                        ("neox", 4)])
def test_rope_frequency_factors(mode, n_rot):
    """llama 3's rope_freqs: pair i's angle divided by factors[i]."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 3, 8))
    factors = rng.uniform(1.0, 8.0, (n_rot or 8) // 2)
    got = run(lambda a: F.rope(a["x"], mode, 500.0, n_rot=n_rot,
                               factors=factors),
              {"x": ((2, 6, 3, 8), "f64")}, [x])
    want = rope_ref(x, mode, 500.0, n_rot, factors)
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert np.abs(want - rope_ref(x, mode, 500.0, n_rot)).max() > 0.1


def test_rope_rejects_factors_that_do_not_fit():
    with qcc.Graph() as g:
        x = g.input("x", (1, 2, 1, 8), "f32")
        with pytest.raises(ValueError, match="3 factors for 4 rotated pairs"):
            F.rope(x, "normal", factors=(1.0, 2.0, 3.0))


def test_attention_matches_reference():
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal(s) for s in ((2, 5, 6, 4), (2, 5, 2, 4),
                                                (2, 5, 2, 4)))
    got = run(lambda a: F.attention(a["q"], a["k"], a["v"]),
              {"q": (q.shape, "f64"), "k": (k.shape, "f64"), "v": (v.shape, "f64")},
              [q, k, v])
    np.testing.assert_allclose(got, attention_ref(q, k, v), atol=1e-12)


def masked_attention_ref(q, k, v, causal, window):
    """numpy attention, q [B, T, Hq, D], k and v [B, S, Hkv, D]."""
    b, t, hq, d = q.shape
    grp = hq // k.shape[2]
    i, j = np.arange(t)[:, None], np.arange(k.shape[1])[None, :]
    drop = np.zeros((t, k.shape[1]), bool)
    if causal:
        drop |= j > i
    if window:
        drop |= i - j >= window
    out = np.zeros_like(q)
    for h in range(hq):
        kh, vh = k[:, :, h // grp], v[:, :, h // grp]
        s = np.einsum("bid,bjd->bij", q[:, :, h], kh) / math.sqrt(d)
        s = np.where(drop, -np.inf, s)
        p = np.exp(s - s.max(-1, keepdims=True))
        out[:, :, h] = np.einsum("bij,bjd->bid", p / p.sum(-1, keepdims=True), vh)
    return out


@pytest.mark.parametrize("dtype,atol", [("f64", 1e-12), ("f32", 2e-6)])
@pytest.mark.parametrize("t,hq,hkv,causal,window,q_tile,k_tile", [
    (12, 4, 2, True, 0, 4, 3),     # several query and key tiles, GQA
    (12, 4, 2, True, 5, 4, 3),     # a window: tiles before its reach skipped
    (12, 2, 1, True, 3, 3, 2),     # rows whose first key tile is all masked
    (10, 2, 2, False, 0, 5, 5),    # no mask: every key tile
    (7, 3, 1, True, 0, 7, 7),      # one tile each way
])
def test_tiled_attention_matches_reference(dtype, atol, t, hq, hkv, causal, window,
                                           q_tile, k_tile):
    """ir.flash_attention (online softmax over key tiles) against numpy's
    whole-matrix attention; f32 runs its tiles' products on the micro-GEMM."""
    rng = np.random.default_rng(4)
    b, d, grp = 2, 8, hq // hkv
    q = rng.standard_normal((b, t, hq, d)) * 2
    k, v = (rng.standard_normal((b, t, hkv, d)) for _ in range(2))
    rows = lambda x: x.reshape(b, t, hkv, grp, d).transpose(0, 2, 1, 3, 4).reshape(
        b, hkv, t * grp, d)
    kv = lambda x: x.transpose(0, 2, 1, 3)
    np_t = np.float64 if dtype == "f64" else np.float32
    inputs = [np.ascontiguousarray(x, np_t) for x in (rows(q), kv(k), kv(v))]
    _, _, text = trace(lambda a: ir.flash_attention(
        a["q"], a["k"], a["v"], grp, 1 / math.sqrt(d), causal, window, q_tile, k_tile),
        {n: (x.shape, dtype) for n, x in zip("qkv", inputs)}, dtype)
    assert text.count("scf.for") >= 2
    got = qcc.compile_step(text, None, "--threads=2").call("f", *inputs)
    want = rows(masked_attention_ref(q, k, v, causal, window))
    np.testing.assert_allclose(got, want, atol=atol, rtol=atol)


@pytest.mark.parametrize("threads", ["--threads=1", "--threads=2"])
@pytest.mark.parametrize("spec,sa,sb", [
    # grouped-query scores and weighted values: K and V lack the head axis h
    ("bghid,bgdj->bghij", (1, 2, 3, 7, 16), (1, 2, 16, 9)),
    ("bghij,bgjd->bghid", (2, 1, 4, 5, 9), (2, 1, 9, 8)),
    # one batch of 300 rows: blocks of rows across the threads
    ("mk,nk->mn", (300, 24), (40, 24)),
    ("km,kn->mn", (24, 300), (24, 40)),
])
def test_f32_contractions_on_the_gemm_match_numpy(spec, sa, sb, threads):
    """f32 einsums that lower to the runtime micro-GEMM (batched, broadcast
    over a missing batch axis, transposed operands, split into row blocks)
    against numpy in float64, serial and threaded."""
    rng = np.random.default_rng(5)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in (sa, sb))
    _, _, text = trace(lambda v: F.einsum(spec, v["a"], v["b"]),
                       {"a": (sa, "f32"), "b": (sb, "f32")})
    got = qcc.compile_step(text, None, threads).call("f", a, b)
    ref = np.einsum(spec, a.astype(np.float64), b.astype(np.float64))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_norm_activations_cross_entropy_match_reference():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 8))
    w = rng.standard_normal(8)
    t = np.array([1, 7, 0], np.int32)

    def build(a):
        h = F.rms_norm(a["x"], a["w"], 1e-5)
        return F.cross_entropy(F.gelu(h) + F.silu(h), a["t"])
    got = run(build, {"x": ((3, 8), "f64"), "w": ((8,), "f64"), "t": ((3,), "i32")},
              [x, w, t])
    h = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * w
    gelu = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))
    z = gelu + h / (1 + np.exp(-h))
    lse = np.log(np.exp(z).sum(-1))
    ref = np.mean(lse - z[np.arange(3), t])
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_locations_point_at_the_tracing_line():
    with qcc.Graph() as g:
        x = g.input("x", (2, 4))
        y = F.silu(x)  # traced here
        text = qcc.module([qcc.Function("f", [y])])
    line = inspect.currentframe().f_lineno - 2
    assert f'{HERE}":{line}:' in text


def test_recompute_moves_the_value_into_the_backward():
    """geglu marks gelu(gate) and the product ir.recompute: the backward
    reads clones made after the loss, so the forward values die with their
    last forward use (nothing after the loss reads them)."""
    with qcc.Graph() as g:
        a = g.input("a", (4, 8))
        b = g.input("b", (4, 8))
        y = F.geglu(a, b)
        loss = (y * y).sum()
        ga, gb = qcc.grad(loss, [a, b])
    act = y.inputs[0]
    assert y.attrs.get("recompute") and act.attrs.get("recompute")
    backward = g.nodes[loss.index + 1:]
    assert all(y not in t.inputs and act not in t.inputs for t in backward)
    clones = [t for t in backward if t.op == "ew" and t.attrs["fn"] == "mul"
              and t.inputs[1] is b and t.inputs[0].op == "ew"
              and t.inputs[0].attrs["fn"] == "gelu"]
    assert len(clones) == 1 and clones[0].inputs[0].inputs[0] is a
    with pytest.raises(ValueError, match="not an elementwise result"):
        ir.recompute(loss)
