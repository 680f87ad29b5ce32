"""Optimizers as IR: the update rules of a training step, written as
elementwise `linalg.generic` text that `qcc-fuse-weight-update` folds into
`qcc.weight_update` for quantized weights (docs/training.md).

Every rule works on tensors of one shape and returns the update `delta` to
add to the parameter (for a quantized weight: the `delta` of
`qcc.carry_update`), plus the new optimizer state. Scalars (learning rate,
bias corrections, clip factor) are SSA values of type f32 passed in by the
caller, so schedules are inputs of the step (see `warmup_cosine`).

    em = Emitter()
    d, m2 = momentum(em, g="%g", m="%m", lr="%lr", beta=0.9,
                     shape=(256, 512), state_dtype="bf16")
    text = "\\n".join(em.lines)
"""

import math


def f32_literal(value):
    """An f32 literal MLIR parses (it needs a decimal point)."""
    return f"{float(value):.9e}"


def tensor_type(shape, dtype="f32"):
    dims = "x".join(str(d) for d in shape)
    return f"tensor<{dims}x{dtype}>" if dims else f"tensor<{dtype}>"


class Emitter:
    """Collects lines of MLIR and hands out fresh SSA names."""

    def __init__(self, prefix="o"):
        self.lines = []
        self.prefix = prefix
        self.count = 0

    def fresh(self, hint="v"):
        self.count += 1
        return f"%{self.prefix}{self.count}_{hint}"

    def emit(self, line):
        self.lines.append("  " + line)

    def constant(self, value, hint="c"):
        name = self.fresh(hint)
        self.emit(f"{name} = arith.constant {f32_literal(value)} : f32")
        return name

    def elementwise(self, ins, shape, out_dtypes, body, hint="e"):
        """One linalg.generic over `shape`. `ins` is a list of (name, dtype);
        a dtype of None marks an f32 scalar SSA value, captured by the body.
        `body(args)` gets the block argument names of the tensor inputs, in
        order, (scalars by their own names) and returns (lines, results)
        with one result per `out_dtypes`. Returns the result tensor names."""
        rank = len(shape)
        idx = ", ".join(f"d{i}" for i in range(rank))
        identity = f"affine_map<({idx}) -> ({idx})>"
        tensors = [(n, t) for n, t in ins if t is not None]
        args, bb = [], []
        for i, (n, t) in enumerate(ins):
            if t is None:
                args.append(n)
            else:
                a = f"%{hint}_in{i}"
                args.append(a)
                bb.append(f"{a}: {t}")
        lines, results = body(args)
        assert len(results) == len(out_dtypes)
        outs = []
        for dt in out_dtypes:
            e = self.fresh("empty")
            self.emit(f"{e} = tensor.empty() : {tensor_type(shape, dt)}")
            outs.append(e)
        for j, dt in enumerate(out_dtypes):
            bb.append(f"%{hint}_out{j}: {dt}")
        names = [self.fresh(hint) for _ in out_dtypes]
        maps = ", ".join([identity] * (len(tensors) + len(out_dtypes)))
        its = ", ".join(['"parallel"'] * rank)
        in_list = ", ".join(n for n, _ in tensors)
        in_types = ", ".join(tensor_type(shape, t) for _, t in tensors)
        out_list = ", ".join(outs)
        out_types = ", ".join(tensor_type(shape, dt) for dt in out_dtypes)
        lhs = ", ".join(names)
        self.emit(f"{lhs} = linalg.generic {{indexing_maps = [{maps}], "
                  f"iterator_types = [{its}]}} ins({in_list} : {in_types}) "
                  f"outs({out_list} : {out_types}) {{")
        self.emit(f"^bb0({', '.join(bb)}):")
        for line in lines:
            self.emit("  " + line)
        self.emit(f"  linalg.yield {', '.join(results)} : "
                  f"{', '.join(out_dtypes)}")
        self.emit(f"}} -> ({out_types})" if len(out_dtypes) > 1
                  else f"}} -> {out_types}")
        return names


class _Body:
    """Scalar arithmetic inside a generic's body."""

    def __init__(self, tag):
        self.lines, self.tag, self.n = [], tag, 0

    def _v(self):
        self.n += 1
        return f"%{self.tag}{self.n}"

    def op(self, name, *operands, ty="f32"):
        v = self._v()
        self.lines.append(f"{v} = {name} {', '.join(operands)} : {ty}")
        return v

    def const(self, value):
        v = self._v()
        self.lines.append(f"{v} = arith.constant {f32_literal(value)} : f32")
        return v

    def to_f32(self, x, dtype):
        if dtype == "f32":
            return x
        v = self._v()
        self.lines.append(f"{v} = arith.extf {x} : {dtype} to f32")
        return v

    def from_f32(self, x, dtype):
        if dtype == "f32":
            return x
        v = self._v()
        self.lines.append(f"{v} = arith.truncf {x} : f32 to {dtype}")
        return v


def sgd(em, g, lr, shape, scale=None):
    """delta = -lr · g (· scale, e.g. a clip factor)."""
    def body(a):
        b = _Body("sgd")
        x = a[0] if scale is None else b.op("arith.mulf", a[0], a[2])
        return b.lines, [b.op("arith.mulf", b.op("arith.negf", a[1]), x)]
    ins = [(g, "f32"), (lr, None)] + ([(scale, None)] if scale else [])
    return em.elementwise(ins, shape, ["f32"], body, hint="sgd")[0]


def momentum(em, g, m, lr, beta, shape, state_dtype="bf16", scale=None):
    """Heavy-ball SGD: m' = β·m + g, delta = -lr · m'. The momentum is kept
    in `state_dtype` (bf16 halves its memory); returns (delta, m')."""
    def body(a):
        b = _Body("mom")
        gi = a[0] if scale is None else b.op("arith.mulf", a[0], a[3])
        mf = b.to_f32(a[1], state_dtype)
        mn = b.op("arith.addf", b.op("arith.mulf", mf, b.const(beta)), gi)
        mo = b.from_f32(mn, state_dtype)
        # The step uses the stored (rounded) momentum, so that a resumed run
        # and the state agree.
        mr = b.to_f32(mo, state_dtype)
        d = b.op("arith.mulf", b.op("arith.negf", a[2]), mr)
        return b.lines, [d, mo]
    ins = [(g, "f32"), (m, state_dtype), (lr, None)]
    if scale:
        ins.append((scale, None))
    d, m2 = em.elementwise(ins, shape, ["f32", state_dtype], body, hint="mom")
    return d, m2


def adamw(em, g, m, v, lr, shape, bc1, bc2, beta1=0.9, beta2=0.999, eps=1e-8,
          weight_decay=0.0, w=None, state_dtype="f32", scale=None):
    """AdamW (decoupled weight decay):
        m' = β1·m + (1-β1)·g,  v' = β2·v + (1-β2)·g²
        delta = -lr · ((m'/bc1) / (sqrt(v'/bc2) + ε) + λ·w)
    with bc1 = 1 - β1^t, bc2 = 1 - β2^t passed in (scalars, so the step
    count lives with the host). `w` is the parameter (for a quantized weight
    `qcc.dequant` of it, which the fused update decodes tile by tile); the
    moments are kept in `state_dtype` (f32, or bf16 for quantized weights).
    Returns (delta, m', v')."""
    def body(a):
        b = _Body("adam")
        gi = a[0] if scale is None else b.op("arith.mulf", a[0], a[idx_scale])
        mf, vf = b.to_f32(a[1], state_dtype), b.to_f32(a[2], state_dtype)
        mn = b.op("arith.addf", b.op("arith.mulf", mf, b.const(beta1)),
                  b.op("arith.mulf", gi, b.const(1 - beta1)))
        vn = b.op("arith.addf", b.op("arith.mulf", vf, b.const(beta2)),
                  b.op("arith.mulf", b.op("arith.mulf", gi, gi),
                       b.const(1 - beta2)))
        mo, vo = b.from_f32(mn, state_dtype), b.from_f32(vn, state_dtype)
        mr, vr = b.to_f32(mo, state_dtype), b.to_f32(vo, state_dtype)
        mhat = b.op("arith.divf", mr, a[idx_bc1])
        vhat = b.op("arith.divf", vr, a[idx_bc2])
        den = b.op("arith.addf", b.op("math.sqrt", vhat), b.const(eps))
        upd = b.op("arith.divf", mhat, den)
        if w is not None and weight_decay:
            upd = b.op("arith.addf", upd,
                       b.op("arith.mulf", a[idx_w], b.const(weight_decay)))
        d = b.op("arith.mulf", b.op("arith.negf", a[idx_lr]), upd)
        return b.lines, [d, mo, vo]
    ins = [(g, "f32"), (m, state_dtype), (v, state_dtype)]
    if w is not None:
        ins.append((w, "f32"))
    idx_w = 3
    ins += [(lr, None), (bc1, None), (bc2, None)]
    idx_lr = len(ins) - 3
    idx_bc1, idx_bc2 = idx_lr + 1, idx_lr + 2
    idx_scale = len(ins)
    if scale:
        ins.append((scale, None))
    d, m2, v2 = em.elementwise(ins, shape, ["f32", state_dtype, state_dtype],
                               body, hint="adam")
    return d, m2, v2


def outer_grad_norm_sq(em, gy, x, m, n, k):
    """‖gyᵀ·x‖²_F for gy [m, n] and x [m, k] without forming gyᵀ·x:
    Σ_{i,j} (gy·gyᵀ)[i, j] · (x·xᵀ)[i, j], two m×m Gram matrices. This is
    how global-norm clipping reads the norm of a weight gradient that the
    fused update never materializes. Returns an f32 SSA scalar."""
    zero = em.constant(0.0, "zero")
    grams = []
    for src, cols in ((gy, n), (x, k)):
        e = em.fresh("gram_empty")
        em.emit(f"{e} = tensor.empty() : {tensor_type((m, m))}")
        f = em.fresh("gram_init")
        em.emit(f"{f} = linalg.fill ins({zero} : f32) outs({e} : "
                f"{tensor_type((m, m))}) -> {tensor_type((m, m))}")
        gname = em.fresh("gram")
        em.emit(f"{gname} = linalg.matmul indexing_maps = ["
                "affine_map<(i, j, c) -> (i, c)>, "
                "affine_map<(i, j, c) -> (j, c)>, "
                "affine_map<(i, j, c) -> (i, j)>] "
                f"ins({src}, {src} : {tensor_type((m, cols))}, "
                f"{tensor_type((m, cols))}) outs({f} : {tensor_type((m, m))}) "
                f"-> {tensor_type((m, m))}")
        grams.append(gname)
    return sum_of_products(em, grams[0], grams[1], (m, m))


def sum_of_products(em, a, b, shape):
    """Σ a·b over all elements of two f32 tensors of `shape`, as a scalar."""
    zero = em.constant(0.0, "zero")
    e = em.fresh("acc_empty")
    em.emit(f"{e} = tensor.empty() : tensor<f32>")
    f = em.fresh("acc_init")
    em.emit(f"{f} = linalg.fill ins({zero} : f32) outs({e} : tensor<f32>) "
            "-> tensor<f32>")
    rank = len(shape)
    idx = ", ".join(f"d{i}" for i in range(rank))
    r = em.fresh("sumprod")
    its = ", ".join(['"reduction"'] * rank)
    ty = tensor_type(shape)
    em.emit(f"{r} = linalg.generic {{indexing_maps = [affine_map<({idx}) -> "
            f"({idx})>, affine_map<({idx}) -> ({idx})>, affine_map<({idx}) -> "
            f"()>], iterator_types = [{its}]}} ins({a}, {b} : {ty}, {ty}) "
            f"outs({f} : tensor<f32>) {{")
    em.emit("^bb0(%sp_a: f32, %sp_b: f32, %sp_acc: f32):")
    em.emit("  %sp_p = arith.mulf %sp_a, %sp_b : f32")
    em.emit("  %sp_s = arith.addf %sp_acc, %sp_p : f32")
    em.emit("  linalg.yield %sp_s : f32")
    em.emit("} -> tensor<f32>")
    s = em.fresh("sumprod_s")
    em.emit(f"{s} = tensor.extract {r}[] : tensor<f32>")
    return s


def clip_factor(em, norm_sqs, max_norm):
    """min(1, max_norm / (sqrt(Σ norm_sqs) + 1e-6)): the factor that scales
    every gradient of the step so that their global L2 norm is at most
    `max_norm` (torch.nn.utils.clip_grad_norm_'s rule). Returns (factor,
    global norm) as f32 SSA scalars."""
    total = norm_sqs[0]
    for s in norm_sqs[1:]:
        t = em.fresh("normsq")
        em.emit(f"{t} = arith.addf {total}, {s} : f32")
        total = t
    norm = em.fresh("norm")
    em.emit(f"{norm} = math.sqrt {total} : f32")
    eps = em.constant(1e-6, "eps")
    den = em.fresh("den")
    em.emit(f"{den} = arith.addf {norm}, {eps} : f32")
    mx = em.constant(max_norm, "max_norm")
    q = em.fresh("ratio")
    em.emit(f"{q} = arith.divf {mx}, {den} : f32")
    one = em.constant(1.0, "one")
    fac = em.fresh("clip")
    em.emit(f"{fac} = arith.minimumf {q}, {one} : f32")
    return fac, norm


def warmup_cosine(step, peak_lr, warmup, total, min_lr=0.0):
    """The learning rate of 0-based `step`: linear warmup from peak/warmup to
    `peak_lr` over `warmup` steps, then a cosine decay to `min_lr` at
    `total`. Computed by the host and passed to the step as its `lr` input."""
    if warmup > 0 and step < warmup:
        return peak_lr * (step + 1) / warmup
    if total <= warmup:
        return peak_lr
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (peak_lr - min_lr) * (1 + math.cos(math.pi * t))


def adam_bias_corrections(step, beta1=0.9, beta2=0.999):
    """(1 - β1^t, 1 - β2^t) for 0-based `step` (t = step + 1)."""
    t = step + 1
    return 1 - beta1 ** t, 1 - beta2 ** t
