"""Reverse-mode automatic differentiation of a traced graph, op by op.

`grad(y, wrt)` walks the graph backward from `y` and, for every primitive
on a path to one of `wrt`, adds the nodes of its vector-Jacobian product to
the same graph, so that the backward pass is emitted with (and optimized
alongside) the forward pass. Each VJP is written with the primitives of
`qcc.ir` (the backward of `qlinear` is `qlinear_bwd`: `qcc.qmatmul bwd`,
decoding the blocks again rather than keeping an f32 copy of the weight).

The gradient of a quantized weight is the gradient with respect to its
decoded value Ŵ, as an f32 tensor of its shape. When a weight is used
several times (a tied embedding is a gather and an output projection), the
contributions of the form gyᵀ·x are merged into one contraction over the
concatenated rows, which is the single weight-gradient contraction the
compiler fuses with the update (`qcc.weight_update`).
"""

from . import ir
from .ir import Location, Tensor

ir.internal_module(__file__)


def sum_to(g, shape):
    """Sums `g` over the axes numpy broadcasting added to reach g.shape."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = list(range(lead))
    for i, d in enumerate(shape):
        if d == 1 and g.shape[lead + i] != 1:
            axes.append(lead + i)
    r = ir.reduce_sum(g, axes) if axes else g
    return ir.reshape(r, shape)


def _ew(fn, *inputs, consts=()):
    return ir.elementwise(fn, inputs, consts)


def _vjp_ew(t, g):
    fn = t.attrs["fn"]
    c = t.attrs["consts"]
    x = t.inputs
    if fn == "copy":
        return [g]
    if fn == "add":
        return [g, g]
    if fn == "sub":
        return [g, -g]
    if fn == "mul":
        if x[0] is x[1]:
            return [(g * x[0]) * 2.0, None]
        return [g * x[1], g * x[0]]
    if fn == "div":
        return [g / x[1], -(g * t) / x[1]]
    if fn == "neg":
        return [-g]
    if fn == "addc":
        return [g]
    if fn == "mulc":
        return [g * c[0]]
    if fn == "rsubc":
        return [-g]
    if fn == "rdivc":
        return [-(g * t) / x[0]]
    if fn == "exp":
        return [g * t]
    if fn == "log":
        return [g / x[0]]
    if fn == "sqrt":
        return [(g / t) * 0.5]
    if fn == "rsqrt":
        return [_ew("rsqrt_grad", t, g)]
    if fn == "tanh":
        return [_ew("tanh_grad", t, g)]
    if fn == "sigmoid":
        return [_ew("sigmoid_grad", t, g)]
    if fn == "square":
        return [(g * x[0]) * 2.0]
    if fn == "silu":
        return [_ew("silu_grad", x[0], g)]
    if fn == "gelu":
        return [_ew("gelu_grad", x[0], g)]
    raise NotImplementedError(f"no gradient for elementwise '{fn}'")


def _vjp_einsum(t, g):
    a, b = t.inputs
    sa, sb, so = t.attrs["spec"]

    def part(s_out, s_other, other, first_is_g, target_spec, target):
        # The gradient of one operand: contract g with the other operand over
        # everything but the target's indices; indices the target has alone
        # (summed away in the forward pass) are broadcast back.
        have = set(s_out) | set(s_other)
        kept = "".join(c for c in target_spec if c in have)
        spec = (f"{s_out},{s_other}->{kept}" if first_is_g
                else f"{s_other},{s_out}->{kept}")
        r = (ir.einsum(spec, g, other) if first_is_g
             else ir.einsum(spec, other, g))
        if kept != target_spec:
            shape = tuple(target.shape[i] if c in have else 1
                          for i, c in enumerate(target_spec))
            r = ir.broadcast_to(ir.reshape(r, shape), target.shape)
        return r
    # ga = g ⋅ b, gb = gᵀ ⋅ a in the einsum sense; gb puts g first so that a
    # weight gradient reads (gy, x) in the order qcc.weight_update takes.
    ga = part(so, sb, b, True, sa, a)
    gb = part(so, sa, a, True, sb, b)
    return [ga, gb]


def _flat2(x):
    return ir.reshape(x, (-1, x.shape[-1]))


def vjp(t, g):
    """Gradients of t's inputs given g = ∂L/∂t (None where not defined)."""
    op = t.op
    if op == "ew":
        grads = _vjp_ew(t, g)
        return [None if gi is None or ir_is_scalar(x) else sum_to(gi, x.shape)
                for x, gi in zip(t.inputs, grads)]
    if op == "sum":
        x = t.inputs[0]
        axes = t.attrs["axes"]
        kd = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        return [ir.broadcast_to(ir.reshape(g, kd), x.shape)]
    if op == "max":
        raise NotImplementedError(
            "max is not differentiable here; use .detach() on it (softmax and "
            "logsumexp have their own gradients)")
    if op == "reshape":
        return [ir.reshape(g, t.inputs[0].shape)]
    if op == "permute":
        perm = t.attrs["perm"]
        inv = [perm.index(i) for i in range(len(perm))]
        return [ir.permute(g, inv)]
    if op == "einsum":
        return _vjp_einsum(t, g)
    if op == "dequant":
        return [g]
    if op == "qlinear":
        x, w = t.inputs
        gx = ir.qlinear_bwd(g, w)
        gw = ir.einsum("mn,mk->nk", _flat2(g), _flat2(x))
        return [gx, gw]
    if op == "gather":
        table, ids = t.inputs
        flat_ids = ir.reshape(ids, (-1,))
        oh = ir.one_hot(flat_ids, table.shape[0], g.dtype)
        return [ir.einsum("mv,md->vd", oh, _flat2(g)), None]
    if op == "take_last":
        x, ids = t.inputs
        oh = ir.one_hot(ids, x.shape[-1], x.dtype)
        return [oh * ir.reshape(g, g.shape + (1,)), None]
    if op in ("linear_nll", "linear_distill"):
        if not t.attrs["grad"]:
            raise NotImplementedError(f"{op} was built without its "
                                      "gradient (grad=False)")
        return [ir.linear_nll_grad(t, g)] + [None] * (len(t.inputs) - 1)
    if op == "logsumexp":
        x = t.inputs[0]
        keep = x.shape[:-1] + (1,)
        return [ir.elementwise("lse_grad", (x, ir.reshape(t, keep),
                                            ir.reshape(g, keep)))]
    if op == "flash_attention":
        if t.attrs["k_tile"] < t.inputs[1].shape[2]:
            return ir.flash_attention_grad(t, g)
        # One tile of keys: the whole scores are that tile, and recomputing
        # them as einsums is faster than the tiled loops (and keeps no
        # copy of the output in the tiles' layout).
        return _one_tile_attention_grad(t, g)
    if op == "softmax":
        dot = ir.reduce_sum(g * t, -1, keepdims=True)
        return [ir.elementwise("softmax_grad", (t, g, dot))]
    if op == "rope":
        a = dict(t.attrs)
        pos = t.inputs[1] if len(t.inputs) > 1 else None
        return [ir.rope(g, a["mode"], a["theta"], a["freq_scale"], -a["sign"],
                        a["n_rot"], pos, a["factors"])] + [None] * (len(t.inputs) - 1)
    if op == "concat":
        raise NotImplementedError("concat is not differentiable here")
    if op in ("stop_gradient", "full", "one_hot", "arg"):
        return [None] * len(t.inputs)
    raise NotImplementedError(f"no gradient for '{op}'")


def _one_tile_attention_grad(t, g):
    """∂q, ∂k, ∂v of a flash_attention with a single tile of keys, through
    the scores and probabilities recomputed as einsums ([B, H, G, T, S])."""
    q, k, v = t.inputs
    a = t.attrs
    b, h, r, d = q.shape
    grp = a["group"]
    n = r // grp

    def split(x):   # [B, H, T·G, D] -> [B, H, G, T, D]
        return ir.permute(ir.reshape(x, (b, h, n, grp, d)), (0, 1, 3, 2, 4))
    q5, g5 = split(q), split(g)
    s = ir.einsum("bhgid,bhjd->bhgij", q5, k) * a["scale"]
    p = ir.softmax(s, causal=a["causal"], window=a["window"])
    dv = ir.einsum("bhgij,bhgid->bhjd", p, g5)
    dp = ir.einsum("bhgid,bhjd->bhgij", g5, v)
    dot = ir.reduce_sum(dp * p, -1, keepdims=True)
    ds = ir.elementwise("softmax_grad", (p, dp, dot)) * a["scale"]
    dq = ir.reshape(ir.permute(ir.einsum("bhgij,bhjd->bhgid", ds, k), (0, 1, 3, 2, 4)),
                    (b, h, r, d))
    return [dq, ir.einsum("bhgij,bhgid->bhjd", ds, q5), dv]


def ir_is_scalar(x):
    return x.op == "arg" and bool(x.attrs.get("extra", {}).get("scalar"))


_NONDIFF = ("stop_gradient", "full", "one_hot", "max", "qlinear_bwd",
            "linear_nll_grad", "flash_attention_grad")


def _is_outer(t):
    """Whether t is a contraction gyᵀ·x: einsum "mn,mk->nk"-shaped."""
    if t.op != "einsum":
        return False
    sa, sb, so = t.attrs["spec"]
    return (len(sa) == len(sb) == len(so) == 2 and sa[0] == sb[0]
            and so == sa[1] + sb[1])


def accumulate(contribs):
    """The sum of gradient contributions; contractions gyᵀ·x are merged into
    one over concatenated rows."""
    if len(contribs) == 1:
        return contribs[0]
    outer = [c for c in contribs if _is_outer(c)]
    rest = [c for c in contribs if not _is_outer(c)]
    total = None
    if len(outer) > 1:
        gy = ir.concat([c.inputs[0] for c in outer], 0)
        x = ir.concat([c.inputs[1] for c in outer], 0)
        total = ir.einsum("mn,mk->nk", gy, x)
    elif outer:
        total = outer[0]
    for c in rest:
        total = c if total is None else total + c
    return total


def _recomputed(x, clones):
    """`x`, or for a value marked ir.recompute its clone in the backward
    (made once, its own marked inputs recomputed too), so that the forward
    value dies with its last forward use."""
    if not x.attrs.get("recompute"):
        return x
    c = clones.get(x.index)
    if c is None:
        c = ir.elementwise(x.attrs["fn"], [_recomputed(i, clones) for i in x.inputs],
                           x.attrs["consts"], shape=x.shape, dtype=x.dtype)
        clones[x.index] = c
    return c


def grad(y, wrt, seed=None):
    """∂y/∂w for each w in `wrt` (None where y does not depend on w). `y`
    is a scalar (0-d) unless `seed` (∂L/∂y) is given."""
    g = y.graph
    if seed is None:
        if y.shape != ():
            raise ValueError("grad of a non-scalar needs a seed")
        seed = g.full((), 1.0, y.dtype)
    wrt_ids = {w.index for w in wrt}
    depends = set(wrt_ids)
    for t in g.nodes[: y.index + 1]:
        if t.op in _NONDIFF or t.op == "arg":
            continue
        if any(x.index in depends for x in t.inputs):
            depends.add(t.index)
    contribs = {y.index: [seed]}
    clones = {}   # recomputed values (ir.recompute), by forward index
    for t in reversed(g.nodes[: y.index + 1]):
        if t.index not in contribs or t.op == "arg":
            continue
        if t.index not in depends:
            continue
        gt = accumulate(contribs.pop(t.index))
        base = t.loc
        g.push_location(Location(base.file, base.line, base.col, "backward"))
        saved = t.inputs
        try:
            t.inputs = [_recomputed(x, clones) for x in saved]
            grads = vjp(t, gt)
        finally:
            t.inputs = saved
            g.pop_location()
        for x, gx in zip(t.inputs, grads):
            if gx is not None and x.index in depends:
                contribs.setdefault(x.index, []).append(gx)
    out = []
    for w in wrt:
        c = contribs.get(w.index)
        if not c:
            out.append(None)
            continue
        g.push_location(Location(w.loc.file, w.loc.line, w.loc.col, "backward"))
        try:
            out.append(accumulate(c))
        finally:
            g.pop_location()
    return out
