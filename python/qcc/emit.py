"""MLIR text for a traced graph.

`Function(name, results=[...])` collects the nodes the results need (in
trace order, which is a topological order) and writes one `func.func` in
the func/linalg/tensor/arith/math and qcc dialects, every op carrying the
location of the Python line that traced it (`loc("model.py":12:9)`; ops of
the backward pass `loc("backward"("model.py":12:9))`). `module([...])`
joins functions into a module for the `qcc` driver.

Lowering notes that shape the emitted IR:
- 2-D f32 contractions are `linalg.matmul` with explicit indexing maps,
  which the compiler turns into calls of the runtime's micro-GEMM (and a
  weight gradient gyᵀ·x feeding an update into `qcc.weight_update`);
- other contractions are `linalg.generic`s whose innermost loop runs over
  the output's last (contiguous) dimension, operands transposed first where
  needed, so the loop vectorizes without reassociating a reduction;
- elementwise ops are `linalg.generic`s over the output shape, broadcast
  operands read through maps with constant-0 or dropped dimensions.
"""

import math
import re

from . import ir
from .ir import Tensor
from .optim import Emitter

ir.internal_module(__file__)

_QTYPE_ALIASES = {}


def type_str(shape, dtype):
    dims = "x".join(str(d) for d in shape)
    if dtype in ir.FLOAT_TYPES or dtype in ir.INT_TYPES:
        return f"tensor<{dims}x{dtype}>" if dims else f"tensor<{dtype}>"
    return f"!qcc.qtensor<{dims}x{dtype}>"


def is_bare_scalar(t):
    """A scalar function argument (f32, not a 0-d tensor)."""
    return t.op == "arg" and bool(t.attrs.get("extra", {}).get("scalar"))


def tensor_type(t):
    if is_bare_scalar(t):
        return t.dtype
    return type_str(t.shape, t.dtype)


def float_literal(value, dtype):
    if math.isinf(value):
        bits = {"f32": "0xFF800000", "f64": "0xFFF0000000000000"}[dtype]
        if value > 0:
            bits = {"f32": "0x7F800000", "f64": "0x7FF0000000000000"}[dtype]
        return bits
    return f"{float(value):.17e}" if dtype == "f64" else f"{float(value):.9e}"


class Body:
    """Scalar code inside a linalg.generic region."""

    def __init__(self, dtype, tag="b"):
        self.dtype, self.tag, self.n, self.lines = dtype, tag, 0, []

    def v(self):
        self.n += 1
        return f"%{self.tag}{self.n}"

    def op(self, name, *operands, ty=None):
        r = self.v()
        self.lines.append(f"{r} = {name} {', '.join(operands)} : {ty or self.dtype}")
        return r

    def const(self, value, ty=None):
        r = self.v()
        ty = ty or self.dtype
        if ty in ("index", "i32", "i64", "i1"):
            self.lines.append(f"{r} = arith.constant {int(value)} : {ty}")
        else:
            self.lines.append(f"{r} = arith.constant {float_literal(value, ty)} : {ty}")
        return r

    def raw(self, text_fn):
        r = self.v()
        self.lines.append(text_fn(r))
        return r

    def index(self, dim):
        return self.raw(lambda r: f"{r} = linalg.index {dim} : index")

    def add(self, a, b):
        return self.op("arith.addf", a, b)

    def sub(self, a, b):
        return self.op("arith.subf", a, b)

    def mul(self, a, b):
        return self.op("arith.mulf", a, b)

    def div(self, a, b):
        return self.op("arith.divf", a, b)

    def neg(self, a):
        return self.op("arith.negf", a)

    def math(self, fn, a):
        return self.op(f"math.{fn}", a)

    def sigmoid(self, a):
        one = self.const(1.0)
        return self.div(one, self.add(one, self.math("exp", self.neg(a))))

    def select(self, c, a, b, ty=None):
        return self.raw(lambda r: f"{r} = arith.select {c}, {a}, {b} : {ty or self.dtype}")

    def cmpi(self, pred, a, b, ty="index"):
        return self.raw(lambda r: f"{r} = arith.cmpi {pred}, {a}, {b} : {ty}")

    def iop(self, name, a, b, ty="index"):
        return self.raw(lambda r: f"{r} = arith.{name} {a}, {b} : {ty}")

    def index_to_float(self, i):
        i64 = self.raw(lambda r: f"{r} = arith.index_cast {i} : index to i64")
        return self.raw(lambda r: f"{r} = arith.sitofp {i64} : i64 to {self.dtype}")


_GELU_K = math.sqrt(2.0 / math.pi)
# Masked attention scores (finite, so that a row with every key of a tile
# masked gives exp(0)·0 terms rather than NaN).
_FA_NEG = -1e30


def _gelu(b, x):
    """0.5·x·(1 + tanh(u)) as x·sigmoid(2u), the same function: one exp
    instead of libm's tanh (several times the cost; GELU is a large share
    of a Gemma forward pass)."""
    x3 = b.mul(b.mul(x, x), x)
    u = b.mul(b.const(_GELU_K), b.add(x, b.mul(b.const(0.044715), x3)))
    return b.mul(x, b.sigmoid(b.mul(b.const(2.0), u)))


def _gelu_grad(b, x, g):
    """With s = sigmoid(2u) = (1 + tanh(u)) / 2: d/dx = s + 2·x·s·(1 - s)·u'."""
    x2 = b.mul(x, x)
    u = b.mul(b.const(_GELU_K), b.add(x, b.mul(b.const(0.044715), b.mul(x2, x))))
    s = b.sigmoid(b.mul(b.const(2.0), u))
    one = b.const(1.0)
    du = b.mul(b.const(_GELU_K), b.add(one, b.mul(b.const(3 * 0.044715), x2)))
    right = b.mul(b.mul(b.mul(b.const(2.0), x), b.mul(s, b.sub(one, s))), du)
    return b.mul(g, b.add(s, right))


def _silu_grad(b, x, g):
    s = b.sigmoid(x)
    one = b.const(1.0)
    return b.mul(g, b.mul(s, b.add(one, b.mul(x, b.sub(one, s)))))


# name -> (arity, body(b, args, consts) -> value)
SCALAR_FNS = {
    "copy": (1, lambda b, a, c: a[0]),
    "add": (2, lambda b, a, c: b.add(a[0], a[1])),
    "sub": (2, lambda b, a, c: b.sub(a[0], a[1])),
    "mul": (2, lambda b, a, c: b.mul(a[0], a[1])),
    "div": (2, lambda b, a, c: b.div(a[0], a[1])),
    "neg": (1, lambda b, a, c: b.neg(a[0])),
    "addc": (1, lambda b, a, c: b.add(a[0], b.const(c[0]))),
    "mulc": (1, lambda b, a, c: b.mul(a[0], b.const(c[0]))),
    "rsubc": (1, lambda b, a, c: b.sub(b.const(c[0]), a[0])),
    "rdivc": (1, lambda b, a, c: b.div(b.const(c[0]), a[0])),
    "exp": (1, lambda b, a, c: b.math("exp", a[0])),
    "log": (1, lambda b, a, c: b.math("log", a[0])),
    "sqrt": (1, lambda b, a, c: b.math("sqrt", a[0])),
    "rsqrt": (1, lambda b, a, c: b.math("rsqrt", a[0])),
    "tanh": (1, lambda b, a, c: b.math("tanh", a[0])),
    "sigmoid": (1, lambda b, a, c: b.sigmoid(a[0])),
    "square": (1, lambda b, a, c: b.mul(a[0], a[0])),
    "silu": (1, lambda b, a, c: b.mul(a[0], b.sigmoid(a[0]))),
    "gelu": (1, lambda b, a, c: _gelu(b, a[0])),
    # Fused pieces of backward passes (not differentiable themselves).
    "silu_grad": (2, lambda b, a, c: _silu_grad(b, a[0], a[1])),
    "gelu_grad": (2, lambda b, a, c: _gelu_grad(b, a[0], a[1])),
    # -0.5 · g · y³ for y = rsqrt(x)
    "rsqrt_grad": (2, lambda b, a, c: b.mul(
        b.mul(b.const(-0.5), a[1]), b.mul(b.mul(a[0], a[0]), a[0]))),
    "tanh_grad": (2, lambda b, a, c: b.mul(
        a[1], b.sub(b.const(1.0), b.mul(a[0], a[0])))),
    "sigmoid_grad": (2, lambda b, a, c: b.mul(
        a[1], b.mul(a[0], b.sub(b.const(1.0), a[0])))),
    # y · (g - dot): the softmax backward
    "softmax_grad": (3, lambda b, a, c: b.mul(a[0], b.sub(a[1], a[2]))),
    # g · exp(x - lse): the logsumexp backward
    "lse_grad": (3, lambda b, a, c: b.mul(
        a[2], b.math("exp", b.sub(a[0], a[1])))),
}


def _dims(n, prefix="d"):
    return [f"{prefix}{i}" for i in range(n)]


def _map(domain, results):
    return f"affine_map<({', '.join(domain)}) -> ({', '.join(results)})>"


def _broadcast_map(domain, out_shape, in_shape):
    """Map from the output's loops to an operand broadcast numpy-style."""
    off = len(out_shape) - len(in_shape)
    res = []
    for i, d in enumerate(in_shape):
        if d == 1 and out_shape[off + i] != 1:
            res.append("0")
        else:
            res.append(domain[off + i])
    return _map(domain, res)


def collapse_groups(src, dst):
    """Reassociation that collapses shape `src` into `dst`, or None."""
    if not dst:
        return [] if all(d == 1 for d in src) else None
    groups, i = [], 0
    for d in dst:
        g, p = [], 1
        while i < len(src) and (p < d or not g):
            p *= src[i]
            g.append(i)
            i += 1
            if p > d:
                return None
        if p != d or not g:
            return None
        groups.append(g)
    while i < len(src):
        if src[i] != 1:
            return None
        groups[-1].append(i)
        i += 1
    return groups


def _reassoc(groups):
    return "[" + ", ".join("[" + ", ".join(str(i) for i in g) + "]"
                           for g in groups) + "]"


class FunctionEmitter(Emitter):
    """Writes the ops of one function. Subclasses optim.Emitter so that the
    update rules of qcc.optim write into the same body."""

    def __init__(self, locs, inlined=()):
        super().__init__(prefix="u")
        self.names = {}
        self.locs = locs  # Location text -> alias
        # Elementwise nodes computed inside their single consumer's generic.
        self.inlined = set(inlined)

    def loc(self, t):
        if t is None or t.loc is None:
            return ""
        return self.loc_text(t.loc)

    def loc_text(self, location):
        text = location.mlir()
        alias = self.locs.get(text)
        if alias is None:
            alias = f"#loc{len(self.locs)}"
            self.locs[text] = alias
        return f" loc({alias})"

    def name(self, t):
        return self.names[t.index]

    def new(self, hint="v"):
        return self.fresh(hint)

    def empty(self, shape, dtype):
        e = self.new("empty")
        self.emit(f"{e} = tensor.empty() : {type_str(shape, dtype)}")
        return e

    def filled(self, shape, dtype, value, loc=""):
        e = self.empty(shape, dtype)
        c = self.new("cst")
        self.emit(f"{c} = arith.constant {float_literal(value, dtype)} : {dtype}{loc}")
        f = self.new("fill")
        ty = type_str(shape, dtype)
        self.emit(f"{f} = linalg.fill ins({c} : {dtype}) outs({e} : {ty}) -> {ty}{loc}")
        return f

    def generic(self, domain_size, iterators, ins, outs, body_fn, loc,
                captures=(), hint="g"):
        """ins: [(name, type, map)], outs: [(init name, type, map, dtype)];
        body_fn(body, in_args, out_args) -> list of yielded values."""
        dtype = outs[0][3]
        b = Body(dtype)
        in_args = [f"%in{i}" for i in range(len(ins))]
        out_args = [f"%out{i}" for i in range(len(outs))]
        results = body_fn(b, in_args, out_args)
        maps = ", ".join([m for _, _, m in ins] + [m for _, _, m, _ in outs])
        its = ", ".join(f'"{it}"' for it in iterators)
        names = [self.new(hint) for _ in outs]
        ins_txt = (f" ins({', '.join(n for n, _, _ in ins)} : "
                   f"{', '.join(t for _, t, _ in ins)})") if ins else ""
        out_types = [t for _, t, _, _ in outs]
        self.emit(f"{', '.join(names)} = linalg.generic {{indexing_maps = [{maps}], "
                  f"iterator_types = [{its}]}}{ins_txt} outs("
                  f"{', '.join(n for n, _, _, _ in outs)} : {', '.join(out_types)}) {{")
        bb = []
        for a, (_, t, _) in zip(in_args, ins):
            bb.append(f"{a}: {_elem(t)}")
        for a, (_, t, _, _) in zip(out_args, outs):
            bb.append(f"{a}: {_elem(t)}")
        self.emit(f"^bb0({', '.join(bb)}):")
        for line in b.lines:
            self.emit("  " + line)
        ys = ", ".join(results)
        self.emit(f"  linalg.yield {ys} : {', '.join(_elem(t) for t in out_types)}")
        tail = out_types[0] if len(out_types) == 1 else f"({', '.join(out_types)})"
        self.emit(f"}} -> {tail}{loc}")
        return names

    # Nodes ----------------------------------------------------------------
    def node(self, t):
        if t.index in self.inlined:
            return
        fn = getattr(self, "_" + t.op)
        r = fn(t, self.loc(t))
        if r is not None:
            self.names[t.index] = r

    def _arg(self, t, loc):
        raise AssertionError("arguments are named by the function")

    def _stop_gradient(self, t, loc):
        return self.name(t.inputs[0])

    def _tuple_get(self, t, loc):
        return self.names[t.inputs[0].index][t.attrs["index"]]

    def _custom(self, t, loc):
        return t.attrs["emit"](self, [self.name(x) for x in t.inputs])

    def _full(self, t, loc):
        return self.filled(t.shape, t.dtype, t.attrs["value"], loc)

    def _fused_operands(self, roots, shape):
        """Operands of a generic over `shape` that computes `roots`, with
        the elementwise producers marked for inlining (self.inlined)
        computed in its body: returns (ins, value) where ins are the
        (name, type, map) operands and value(b, in_args, node) the body's
        value of a node."""
        dom = _dims(len(shape))
        leaves, order = {}, []

        def collect(x):
            if x.index in self.inlined:
                for y in x.inputs:
                    collect(y)
            elif not is_bare_scalar(x) and x.index not in leaves:
                leaves[x.index] = len(order)
                order.append(x)
        for r in roots:
            collect(r)
        ins = [(self.name(x), tensor_type(x), _broadcast_map(dom, shape, x.shape))
               for x in order]

        def value(b, in_args, x, memo):
            if x.index in memo:
                return memo[x.index]
            if x.index in self.inlined:
                _, fn = SCALAR_FNS[x.attrs["fn"]]
                v = fn(b, [value(b, in_args, y, memo) for y in x.inputs],
                       x.attrs["consts"])
            elif is_bare_scalar(x):
                v = self.name(x)
            else:
                v = in_args[leaves[x.index]]
            memo[x.index] = v
            return v
        return ins, value

    def _ew(self, t, loc):
        arity, fn = SCALAR_FNS[t.attrs["fn"]]
        assert arity == len(t.inputs), t.attrs["fn"]
        shape = t.shape
        dom = _dims(len(shape))
        ins, value = self._fused_operands(t.inputs, shape)
        out = self.empty(shape, t.dtype)
        ty = type_str(shape, t.dtype)

        def body(b, in_args, out_args):
            memo = {}
            args = [value(b, in_args, x, memo) for x in t.inputs]
            return [fn(b, args, t.attrs["consts"])]
        return self.generic(len(shape), ["parallel"] * len(shape), ins,
                            [(out, ty, _map(dom, dom), t.dtype)], body, loc)[0]

    def _reduce(self, t, loc, kind):
        x = t.inputs[0]
        axes = t.attrs["axes"]
        dom = _dims(x.ndim)
        init_value = 0.0 if kind == "sum" else -math.inf
        init = self.filled(t.shape, t.dtype, init_value, loc)
        its = ["reduction" if i in axes else "parallel" for i in range(x.ndim)]
        out_map = _map(dom, [d for i, d in enumerate(dom) if i not in axes])
        ins, value = self._fused_operands([x], x.shape)
        reached = {d for _, _, m in ins for d in re.findall(r"d\d+", m.split("->")[1])}
        if any(d not in reached for d in dom):
            # A reduced axis that only a fused broadcast spans: no operand
            # would give that loop its extent. Compute x itself first.
            ins = [(self._ew(x, loc), tensor_type(x), _map(dom, dom))]
            value = lambda b, ia, y, memo: ia[0]  # noqa: E731

        def body(b, ia, oa):
            v = value(b, ia, x, {})
            if kind == "sum":
                return [b.add(oa[0], v)]
            return [b.op("arith.maximumf", oa[0], v)]
        return self.generic(x.ndim, its, ins,
                            [(init, tensor_type(t), out_map, t.dtype)], body, loc)[0]

    def _sum(self, t, loc):
        return self._reduce(t, loc, "sum")

    def _max(self, t, loc):
        return self._reduce(t, loc, "max")

    def reshape_value(self, name, src, dst, dtype, loc=""):
        if tuple(src) == tuple(dst):
            return name
        g = collapse_groups(list(src), list(dst))
        r = self.new("reshape")
        if g is not None:
            self.emit(f"{r} = tensor.collapse_shape {name} {_reassoc(g)} : "
                      f"{type_str(src, dtype)} into {type_str(dst, dtype)}{loc}")
            return r
        g = collapse_groups(list(dst), list(src))
        if g is not None:
            self.emit(f"{r} = tensor.expand_shape {name} {_reassoc(g)} output_shape "
                      f"[{', '.join(str(d) for d in dst)}] : {type_str(src, dtype)} "
                      f"into {type_str(dst, dtype)}{loc}")
            return r
        n = 1
        for d in src:
            n *= d
        flat = self.reshape_value(name, src, (n,), dtype, loc)
        return self.reshape_value(flat, (n,), dst, dtype, loc)

    def _reshape(self, t, loc):
        x = t.inputs[0]
        return self.reshape_value(self.name(x), x.shape, t.shape, t.dtype, loc)

    def transpose_value(self, name, shape, perm, dtype, loc=""):
        out_shape = tuple(shape[p] for p in perm)
        e = self.empty(out_shape, dtype)
        r = self.new("transpose")
        self.emit(f"{r} = linalg.transpose ins({name} : {type_str(shape, dtype)}) "
                  f"outs({e} : {type_str(out_shape, dtype)}) permutation = "
                  f"[{', '.join(str(p) for p in perm)}]{loc}")
        return r

    def _permute(self, t, loc):
        x = t.inputs[0]
        return self.transpose_value(self.name(x), x.shape, t.attrs["perm"],
                                    t.dtype, loc)

    def _einsum(self, t, loc):
        a, b = t.inputs
        sa, sb, so = t.attrs["spec"]
        letters = []
        for c in sa + sb:
            if c not in letters:
                letters.append(c)
        reds = [c for c in letters if c not in so]
        size = {}
        for s, x in ((sa, a), (sb, b)):
            for c, d in zip(s, x.shape):
                size[c] = d
        init = self.filled(t.shape, t.dtype, 0.0, loc)
        oty = tensor_type(t)
        if (len(sa) == len(sb) == len(so) == 2 and len(reds) == 1):
            if so[0] not in sa:  # linalg.matmul reads the output's rows from A
                a, b, sa, sb = b, a, sb, sa
            dom = [so[0], so[1], reds[0]]
            idx = {c: f"d{i}" for i, c in enumerate(dom)}
            dd = ["d0", "d1", "d2"]
            maps = [_map(dd, [idx[c] for c in s]) for s in (sa, sb, so)]
            r = self.new("matmul")
            self.emit(f"{r} = linalg.matmul indexing_maps = [{', '.join(maps)}] "
                      f"ins({self.name(a)}, {self.name(b)} : {tensor_type(a)}, "
                      f"{tensor_type(b)}) outs({init} : {oty}) -> {oty}{loc}")
            return r
        inner = so[-1] if so else None
        operands = []
        for s, x in ((sa, a), (sb, b)):
            name, shape = self.name(x), x.shape
            if inner and inner in s and s[-1] != inner:
                perm = [i for i, c in enumerate(s) if c != inner] + [s.index(inner)]
                name = self.transpose_value(name, shape, perm, x.dtype, loc)
                s = "".join(s[p] for p in perm)
                shape = tuple(shape[p] for p in perm)
            operands.append((name, s, shape))
        order = (list(so[:-1]) + reds + ([inner] if inner else []))
        idx = {c: f"d{i}" for i, c in enumerate(order)}
        dom = [idx[c] for c in order]
        ins = [(n, type_str(shape, t.dtype), _map(dom, [idx[c] for c in s]))
               for n, s, shape in operands]
        its = ["reduction" if c in reds else "parallel" for c in order]

        def body(bd, ia, oa):
            return [bd.add(oa[0], bd.mul(ia[0], ia[1]))]
        return self.generic(len(order), its, ins,
                            [(init, oty, _map(dom, [idx[c] for c in so]), t.dtype)],
                            body, loc)[0]

    def _dequant(self, t, loc):
        w = t.inputs[0]
        r = self.new("dequant")
        self.emit(f"{r} = qcc.dequant {self.name(w)} : {tensor_type(w)} -> "
                  f"{tensor_type(t)}{loc}")
        return r

    def _qmatmul(self, t, loc, orientation):
        x, w = t.inputs
        r = self.new("qmatmul")
        self.emit(f"{r} = qcc.qmatmul {orientation} {self.name(x)}, {self.name(w)} : "
                  f"{tensor_type(x)}, {tensor_type(w)} -> {tensor_type(t)}{loc}")
        return r

    def _qlinear(self, t, loc):
        return self._qmatmul(t, loc, "fwd")

    def _qlinear_bwd(self, t, loc):
        return self._qmatmul(t, loc, "bwd")

    def _gather(self, t, loc):
        table, ids = t.inputs
        if table.quantized:
            r = self.new("gather")
            self.emit(f"{r} = qcc.gather {self.name(table)}[{self.name(ids)}] : "
                      f"{tensor_type(table)}, {tensor_type(ids)} -> "
                      f"{tensor_type(t)}{loc}")
            return r
        dom = _dims(t.ndim)
        out = self.empty(t.shape, t.dtype)
        tname = self.name(table)
        tty = tensor_type(table)

        def body(b, ia, oa):
            i = b.raw(lambda r: f"{r} = arith.index_cast {ia[0]} : {ids.dtype} to index")
            j = b.index(t.ndim - 1)
            return [b.raw(lambda r: f"{r} = tensor.extract {tname}[{i}, {j}] : {tty}")]
        return self.generic(t.ndim, ["parallel"] * t.ndim,
                            [(self.name(ids), tensor_type(ids), _map(dom, dom[:-1]))],
                            [(out, tensor_type(t), _map(dom, dom), t.dtype)], body, loc)[0]

    def _one_hot(self, t, loc):
        ids = t.inputs[0]
        dom = _dims(t.ndim)
        out = self.empty(t.shape, t.dtype)

        def body(b, ia, oa):
            i = b.raw(lambda r: f"{r} = arith.index_cast {ia[0]} : {ids.dtype} to index")
            j = b.index(t.ndim - 1)
            eq = b.cmpi("eq", i, j)
            return [b.select(eq, b.const(1.0), b.const(0.0))]
        return self.generic(t.ndim, ["parallel"] * t.ndim,
                            [(self.name(ids), tensor_type(ids), _map(dom, dom[:-1]))],
                            [(out, tensor_type(t), _map(dom, dom), t.dtype)], body, loc)[0]

    def _take_last(self, t, loc):
        x, ids = t.inputs
        dom = _dims(t.ndim)
        out = self.empty(t.shape, t.dtype)
        xname, xty = self.name(x), tensor_type(x)

        def body(b, ia, oa):
            i = b.raw(lambda r: f"{r} = arith.index_cast {ia[0]} : {ids.dtype} to index")
            idx = [b.index(k) for k in range(t.ndim)] + [i]
            return [b.raw(lambda r: f"{r} = tensor.extract {xname}[{', '.join(idx)}] : {xty}")]
        return self.generic(max(t.ndim, 0), ["parallel"] * t.ndim,
                            [(self.name(ids), tensor_type(ids), _map(dom, dom))],
                            [(out, tensor_type(t), _map(dom, dom), t.dtype)], body, loc)[0]

    def _matmul(self, res, a, aty, b, bty, shape, dtype, b_dims, loc):
        """res = a · b as linalg.matmul into a zero-filled `shape` of `dtype`;
        b is read through the indexing dims `b_dims` (["d1", "d2"]: b
        transposed)."""
        init = self.filled(shape, dtype, 0.0, loc)
        out = type_str(shape, dtype)
        dd = ["d0", "d1", "d2"]
        maps = ", ".join(_map(dd, r) for r in (["d0", "d2"], b_dims, ["d0", "d1"]))
        self.emit(f"{res} = linalg.matmul indexing_maps = [{maps}] "
                  f"ins({a}, {b} : {aty}, {bty}) outs({init} : {out}) -> {out}{loc}")

    def _linear_nll(self, t, loc):
        """An scf.for over chunks of rows: logits of the chunk (qcc.qmatmul
        fwd, or a matmul for a float W), their row max and Σexp, the nll;
        with the gradient, softmax - onehot (times the softcap's derivative)
        written over the logits in place, and qcc.qmatmul bwd to ∂nll/∂h.
        linear_distill adds the teacher's logits of the chunk and the KL
        term (and its gradient) to the same loop."""
        kd = t.op == "linear_distill"
        h, w, tg = t.inputs[:3]
        (m, d), v = h.shape, w.shape[0]
        c, cap, grad = t.attrs["chunk"], t.attrs["softcap"], t.attrs["grad"]
        f = h.dtype
        hty, cty = type_str((m, d), f), type_str((c, d), f)
        tty, ctty = type_str((m,), tg.dtype), type_str((c,), tg.dtype)
        lty, rty, nty = type_str((c, v), f), type_str((c,), f), type_str((m,), f)
        i0, step, end = self.new("c0"), self.new("chunk"), self.new("rows")
        self.emit(f"{i0} = arith.constant 0 : index{loc}")
        self.emit(f"{step} = arith.constant {c} : index{loc}")
        self.emit(f"{end} = arith.constant {m} : index{loc}")
        nll0 = self.empty((m,), f)
        carried = [(nll0, nty)]
        if grad:
            carried.append((self.empty((m, d), f), hty))
        res, it = self.new("ce"), self.new("row")
        accs = [self.new("acc") for _ in carried]
        self.emit(f"{res}:{len(carried)} = scf.for {it} = {i0} to {end} step {step} "
                  f"iter_args({', '.join(f'{a} = {n}' for a, (n, _) in zip(accs, carried))}) "
                  f"-> ({', '.join(ty for _, ty in carried)}) {{")
        tc = self.new("t")
        self.emit(f"{tc} = tensor.extract_slice {self.name(tg)}[{it}] [{c}] [1] : "
                  f"{tty} to {ctty}{loc}")
        dom2, dom1 = _dims(2), _dims(1)
        id2, row2 = _map(dom2, dom2), _map(dom2, ["d0"])
        red = ["parallel", "reduction"]

        def head(x, wt, softcap):
            """Capped logits [c, V] of rows it..it+c of x through wt."""
            dx = x.shape[1]
            xty, xcty = type_str((m, dx), f), type_str((c, dx), f)
            xc = self.new("h")
            self.emit(f"{xc} = tensor.extract_slice {self.name(x)}[{it}, 0] "
                      f"[{c}, {dx}] [1, 1] : {xty} to {xcty}{loc}")
            y = self.new("logits")
            if wt.quantized:
                self.emit(f"{y} = qcc.qmatmul fwd {xc}, {self.name(wt)} : {xcty}, "
                          f"{tensor_type(wt)} -> {lty}{loc}")
            else:   # logits = x · Wᵀ
                self._matmul(y, xc, xcty, self.name(wt), tensor_type(wt), (c, v),
                             f, ["d1", "d2"], loc)
            if softcap:
                def capped(b, ia, oa):
                    z = b.mul(oa[0], b.const(1.0 / softcap))
                    return [b.mul(b.math("tanh", z), b.const(softcap))]
                y = self.generic(2, ["parallel"] * 2, [], [(y, lty, id2, f)],
                                 capped, loc, hint="capped")[0]
            return y

        def row_max(y):
            return self.generic(2, red, [(y, lty, id2)],
                                [(self.filled((c,), f, -math.inf, loc), rty, row2, f)],
                                lambda b, ia, oa: [b.op("arith.maximumf", oa[0], ia[0])],
                                loc, hint="max")[0]

        def sum_exp(y, mx, scale=1.0):
            """Σ exp((y - max)·scale) per row."""
            def body(b, ia, oa):
                e = b.sub(ia[0], ia[1])
                if scale != 1.0:
                    e = b.mul(e, b.const(scale))
                return [b.add(oa[0], b.math("exp", e))]
            return self.generic(2, red, [(y, lty, id2), (mx, rty, row2)],
                                [(self.filled((c,), f, 0.0, loc), rty, row2, f)],
                                body, loc, hint="sumexp")[0]

        logits = head(h, w, cap)
        mx = row_max(logits)
        se = sum_exp(logits, mx)
        if kd:
            ht, wt = t.inputs[3:]
            tau = t.attrs["temperature"]
            alpha, beta = t.attrs["alpha"], t.attrs["beta"]
            zt = head(ht, wt, t.attrs["teacher_softcap"])
            mxt = row_max(zt)
            set_ = sum_exp(zt, mxt, 1.0 / tau)
            ses = sum_exp(logits, mx, 1.0 / tau) if tau != 1.0 else se

            # Σ_j exp((z_j - max z)/τ)·(z_j - y_j): with the two Σexp, the
            # row's KL = Σ p_j (log p_j - log q_j) without [c, V] scratch.
            def cross(b, ia, oa):
                e = b.mul(b.sub(ia[0], ia[2]), b.const(1.0 / tau))
                return [b.add(oa[0], b.mul(b.math("exp", e), b.sub(ia[0], ia[1])))]
            r = self.generic(2, red, [(zt, lty, id2), (logits, lty, id2),
                                      (mxt, rty, row2)],
                             [(self.filled((c,), f, 0.0, loc), rty, row2, f)],
                             cross, loc, hint="cross")[0]

        def nll_body(b, ia, oa):
            j = b.raw(lambda r: f"{r} = arith.index_cast {ia[2]} : {tg.dtype} to index")
            i = b.index(0)
            y = b.raw(lambda r: f"{r} = tensor.extract {logits}[{i}, {j}] : {lty}")
            nll = b.sub(b.add(b.math("log", ia[1]), ia[0]), y)
            if not kd:
                return [nll]
            # ia: 3 mx_t, 4 Σexp_t/τ, 5 Σexp_s/τ, 6 cross
            kl = b.add(b.sub(b.div(ia[6], b.mul(ia[4], b.const(tau))),
                             b.mul(b.sub(ia[3], ia[0]), b.const(1.0 / tau))),
                       b.sub(b.math("log", ia[5]), b.math("log", ia[4])))
            return [b.add(b.mul(nll, b.const(alpha)),
                          b.mul(kl, b.const(beta * tau * tau)))]
        idm = _map(dom1, dom1)
        rows_in = [(mx, rty, idm), (se, rty, idm), (tc, ctty, idm)]
        if kd:
            rows_in += [(mxt, rty, idm), (set_, rty, idm), (ses, rty, idm),
                        (r, rty, idm)]
        nllc = self.generic(1, ["parallel"], rows_in,
                            [(self.empty((c,), f), rty, idm, f)], nll_body, loc,
                            hint="nll")[0]
        outs = []
        n2 = self.new("nll")
        self.emit(f"{n2} = tensor.insert_slice {nllc} into {accs[0]}[{it}] [{c}] [1] "
                  f": {rty} into {nty}{loc}")
        outs.append(n2)
        if grad:
            def dlogit(b, ia, oa):
                p = b.div(b.math("exp", b.sub(oa[0], ia[0])), ia[1])
                j = b.raw(lambda r: f"{r} = arith.index_cast {ia[2]} : {tg.dtype} to index")
                hit = b.cmpi("eq", b.index(1), j)
                dl = b.sub(p, b.select(hit, b.const(1.0), b.const(0.0)))
                if kd:
                    # ia: 3 z, 4 mx_t, 5 Σexp_t/τ, 6 Σexp_s/τ
                    k = 1.0 / tau
                    ps = b.div(b.math("exp", b.mul(b.sub(oa[0], ia[0]), b.const(k))),
                               ia[6])
                    pt = b.div(b.math("exp", b.mul(b.sub(ia[3], ia[4]), b.const(k))),
                               ia[5])
                    dl = b.add(b.mul(dl, b.const(alpha)),
                               b.mul(b.sub(ps, pt), b.const(beta * tau)))
                if cap:
                    yc = b.mul(oa[0], b.const(1.0 / cap))
                    dl = b.mul(dl, b.sub(b.const(1.0), b.mul(yc, yc)))
                return [dl]
            g_in = [(mx, rty, row2), (se, rty, row2), (tc, ctty, row2)]
            if kd:
                g_in += [(zt, lty, id2), (mxt, rty, row2), (set_, rty, row2),
                         (ses, rty, row2)]
            dl = self.generic(2, ["parallel"] * 2, g_in,
                              [(logits, lty, id2, f)], dlogit, loc, hint="dlogits")[0]
            dhc = self.new("dh")
            wname, wty = self.name(w), tensor_type(w)
            if w.quantized:
                self.emit(f"{dhc} = qcc.qmatmul bwd {dl}, {wname} : {lty}, {wty} "
                          f"-> {cty}{loc}")
            else:   # dh = dlogits · W
                self._matmul(dhc, dl, lty, wname, wty, (c, d), f, ["d2", "d1"], loc)
            d2 = self.new("dhs")
            self.emit(f"{d2} = tensor.insert_slice {dhc} into {accs[1]}[{it}, 0] "
                      f"[{c}, {d}] [1, 1] : {cty} into {hty}{loc}")
            outs.append(d2)
        self.emit(f"scf.yield {', '.join(outs)} : "
                  f"{', '.join(ty for _, ty in carried)}{loc}")
        self.emit(f"}}{loc}")
        self.aux = getattr(self, "aux", {})
        if grad:
            self.aux[t.index] = f"{res}#1"
        return f"{res}#0"

    _linear_distill = _linear_nll

    def _linear_nll_grad(self, t, loc):
        nll, g = t.inputs
        unit = self.aux[nll.index]
        dom = _dims(2)
        ty = tensor_type(t)
        return self.generic(2, ["parallel"] * 2,
                            [(unit, ty, _map(dom, dom)),
                             (self.name(g), tensor_type(g), _map(dom, ["d0"]))],
                            [(self.empty(t.shape, t.dtype), ty, _map(dom, dom),
                              t.dtype)],
                            lambda b, ia, oa: [b.mul(ia[0], ia[1])], loc,
                            hint="dh")[0]

    def _index(self, value, loc):
        c = self.new("c")
        self.emit(f"{c} = arith.constant {int(value)} : index{loc}")
        return c

    def _iop(self, name, a, b, loc, hint="i"):
        r = self.new(hint)
        self.emit(f"{r} = arith.{name} {a}, {b} : index{loc}")
        return r

    def _copy(self, src, ty, shape, dtype, loc):
        """A contiguous copy of `src` (a slice), for the micro-GEMM."""
        dom = _dims(len(shape))
        return self.generic(len(shape), ["parallel"] * len(shape),
                            [(src, ty, _map(dom, dom))],
                            [(self.empty(shape, dtype), ty, _map(dom, dom), dtype)],
                            lambda b, ia, oa: [ia[0]], loc, hint="tile")[0]

    def _fa_setup(self, t, q, k, loc):
        """Shapes, types and constants the tiled attention loops share."""
        a = t.attrs
        (nb, nh, rows, d), keys = q.shape, k.shape[2]
        z = dict(a, nb=nb, nh=nh, d=d, keys=keys, f=q.dtype, n=rows // a["group"],
                 rq=a["q_tile"] * a["group"], tk=a["k_tile"], loc=loc,
                 qty=tensor_type(q), kty=tensor_type(k))
        z["qt_shape"] = (nb, nh, z["rq"], d)
        z["kt_shape"] = (nb, nh, z["tk"], d)
        z["s_shape"], z["r_shape"] = (nb, nh, z["rq"], z["tk"]), (nb, nh, z["rq"])
        for key in ("qt", "kt", "s", "r"):
            z[key + "ty"] = type_str(z[key + "_shape"], z["f"])
        z["c0"], z["c1"] = self._index(0, loc), self._index(1, loc)
        z["ctq"], z["ctk"] = self._index(a["q_tile"], loc), self._index(z["tk"], loc)
        z["cn"], z["cg"] = self._index(z["n"], loc), self._index(a["group"], loc)
        return z

    def _fa_tile(self, z, x, at, rows, ty, xty, shape):
        """A contiguous copy of rows [at, at + rows) of x [B, H, ·, D]."""
        xs = self.new("ts")
        self.emit(f"{xs} = tensor.extract_slice {x}[0, 0, {at}, 0] "
                  f"[{z['nb']}, {z['nh']}, {rows}, {z['d']}] [1, 1, 1, 1] : {xty} to "
                  f"{ty}{z['loc']}")
        return self._copy(xs, ty, shape, z["f"], z["loc"])

    def _fa_key_range(self, z, qi):
        """[lo, hi): the whole key tiles query tile qi's rows can see."""
        loc, ctk = z["loc"], z["ctk"]
        hi = self._index(z["keys"], loc)
        if z["causal"]:
            up = self._iop("ceildivui", self._iop("addi", qi, z["ctq"], loc), ctk, loc)
            hi = self._iop("minui", self._iop("muli", up, ctk, loc), hi, loc)
        lo = z["c0"]
        if z["window"]:
            cw = self._index(z["window"], loc)
            reach = self._iop("subi", self._iop(
                "maxui", self._iop("addi", qi, z["c1"], loc), cw, loc), cw, loc)
            lo = self._iop("muli", self._iop("divui", reach, ctk, loc), ctk, loc)
        return lo, hi

    def _fa_masked(self, z, b, qi, kj):
        """i1: key kj + j is outside query qi + r // group's reach."""
        i = b.iop("addi", b.iop("divui", b.index(2), b.const(z["group"], "index")), qi)
        j = b.iop("addi", b.index(3), kj)
        out = b.cmpi("ugt", j, i)
        if z["window"]:
            far = b.cmpi("ule", b.iop("addi", j, b.const(z["window"], "index")), i)
            out = b.iop("ori", out, far, "i1")
        return out

    def _fa_contract(self, z, x, xdims, y, ydims, out, odims, init=None, hint="mm"):
        """out[odims] = Σ x[xdims]·y[ydims] (+ init) over the one index the
        output lacks: letters b h r j e (batch, head, query row, key, feature)."""
        letters = "bhrje"
        d5 = _dims(5)
        pick = lambda s: [d5[letters.index(c)] for c in s]
        red = next(c for c in letters if c not in odims)
        its = ["reduction" if c == red else "parallel" for c in letters]
        f = z["f"]
        shape = tuple({"b": z["nb"], "h": z["nh"], "r": z["rq"], "j": z["tk"],
                       "e": z["d"]}[c] for c in odims)
        ty = type_str(shape, f)
        return self.generic(5, its, [(x[0], x[1], _map(d5, pick(xdims))),
                                     (y[0], y[1], _map(d5, pick(ydims)))],
                            [(init or self.filled(shape, f, 0.0, z["loc"]), ty,
                              _map(d5, pick(odims)), f)],
                            lambda b, ia, oa: [b.add(oa[0], b.mul(ia[0], ia[1]))],
                            z["loc"], hint=hint)[0]

    def _fa_scores(self, z, qt, kt, qi, kj):
        """s = q·kᵀ·scale of a tile pair, masked entries -1e30."""
        s = self._fa_contract(z, (qt, z["qtty"]), "bhre", (kt, z["ktty"]), "bhje",
                              None, "bhrj", hint="scores")
        d4 = _dims(4)

        def scaled(b, ia, oa):
            y = b.mul(oa[0], b.const(z["scale"]))
            return [b.select(self._fa_masked(z, b, qi, kj), b.const(_FA_NEG), y)
                    if z["causal"] else y]
        return self.generic(4, ["parallel"] * 4, [], [(s, z["sty"], _map(d4, d4), z["f"])],
                            scaled, z["loc"], hint="scaled")[0]

    def _fa_rows(self, z, fn, ins, out=None, hint="row"):
        """A [B, H, rows] elementwise op: fn(body, ins, out) (out: in place)."""
        d3 = _dims(3)
        id3 = _map(d3, d3)
        init = out or self.empty(z["r_shape"], z["f"])
        return self.generic(3, ["parallel"] * 3, [(x, z["rty"], id3) for x in ins],
                            [(init, z["rty"], id3, z["f"])],
                            lambda b, ia, oa: [fn(b, ia, oa)], z["loc"], hint=hint)[0]

    def _fa_row_reduce(self, z, x, init, fn, hint):
        d4 = _dims(4)
        return self.generic(4, ["parallel"] * 3 + ["reduction"],
                            [(x, z["sty"], _map(d4, d4))],
                            [(init, z["rty"], _map(d4, d4[:3]), z["f"])],
                            lambda b, ia, oa: [fn(b, oa[0], ia[0])], z["loc"], hint=hint)[0]

    def _fa_stats(self, z, qt, k, qi, with_acc, v=None):
        """The key-tile loop of query tile qi: (m, l) and, `with_acc`, the
        unnormalized output Σ exp(s - m)·v, by the online softmax."""
        loc, f = z["loc"], z["f"]
        lo, hi = self._fa_key_range(z, qi)
        carried = [(self.filled(z["r_shape"], f, _FA_NEG, loc), z["rty"]),
                   (self.filled(z["r_shape"], f, 0.0, loc), z["rty"])]
        if with_acc:
            carried.append((self.filled(z["qt_shape"], f, 0.0, loc), z["qtty"]))
        res, kj = self.new("kv"), self.new("kj")
        accs = [self.new("c") for _ in carried]
        self.emit(f"{res}:{len(carried)} = scf.for {kj} = {lo} to {hi} step {z['ctk']} "
                  f"iter_args({', '.join(f'{a} = {n}' for a, (n, _) in zip(accs, carried))}) "
                  f"-> ({', '.join(ty for _, ty in carried)}) {{")
        m, l = accs[0], accs[1]
        kt = self._fa_tile(z, self.name(k), kj, z["tk"], z["ktty"], z["kty"], z["kt_shape"])
        s = self._fa_scores(z, qt, kt, qi, kj)
        # Each carried value is updated in its own buffer, its old value read
        # first (scf.for needs the yielded buffers to be the carried ones).
        mx = lambda b, a, c: b.op("arith.maximumf", a, c)
        tmax = self._fa_row_reduce(z, s, self.filled(z["r_shape"], f, _FA_NEG, loc),
                                   mx, "rowmax")
        corr = self._fa_rows(z, lambda b, ia, oa: b.math("exp", b.sub(
            ia[0], mx(b, ia[0], ia[1]))), [m, tmax], hint="corr")
        mnew = self._fa_rows(z, lambda b, ia, oa: mx(b, oa[0], ia[0]), [tmax], m, "m")
        p = self._fa_probs(z, s, mnew, qi, kj)
        lsc = self._fa_rows(z, lambda b, ia, oa: b.mul(oa[0], ia[0]), [corr], l, "l")
        lnew = self._fa_row_reduce(z, p, lsc, lambda b, a, c: b.add(a, c), "rowsum")
        outs = [mnew, lnew]
        if with_acc:   # acc' = acc·corr + p·v (the product on the micro-GEMM)
            vt = self._fa_tile(z, self.name(v), kj, z["tk"], z["ktty"], z["kty"],
                               z["kt_shape"])
            pv = self._fa_contract(z, (p, z["sty"]), "bhrj", (vt, z["ktty"]), "bhje",
                                   None, "bhre", hint="pv")
            d4 = _dims(4)
            outs.append(self.generic(
                4, ["parallel"] * 4, [(pv, z["qtty"], _map(d4, d4)),
                                      (corr, z["rty"], _map(d4, d4[:3]))],
                [(accs[2], z["qtty"], _map(d4, d4), f)],
                lambda b, ia, oa: [b.add(b.mul(oa[0], ia[1]), ia[0])], loc, hint="acc")[0])
        self.emit(f"scf.yield {', '.join(outs)} : "
                  f"{', '.join(ty for _, ty in carried)}{loc}")
        self.emit(f"}}{loc}")
        return [f"{res}#{i}" for i in range(len(carried))]

    def _fa_probs(self, z, s, row, qi, kj):
        """exp(s - row) over a score tile in place, masked entries 0."""
        d4 = _dims(4)

        def prob(b, ia, oa):
            e = b.math("exp", b.sub(oa[0], ia[0]))
            return [b.select(self._fa_masked(z, b, qi, kj), b.const(0.0), e)
                    if z["causal"] else e]
        return self.generic(4, ["parallel"] * 4, [(row, z["rty"], _map(d4, d4[:3]))],
                            [(s, z["sty"], _map(d4, d4), z["f"])], prob, z["loc"],
                            hint="p")[0]

    def _fa_query_loop(self, z, results, body):
        """scf.for over query tiles carrying `results` ([(init, type)]);
        body(qi, r0, carried) emits the tile and returns the yielded names."""
        res, qi = self.new("fa"), self.new("qi")
        accs = [self.new("o") for _ in results]
        self.emit(f"{res}:{len(results)} = scf.for {qi} = {z['c0']} to {z['cn']} step "
                  f"{z['ctq']} iter_args({', '.join(f'{a} = {n}' for a, (n, _) in zip(accs, results))}) "
                  f"-> ({', '.join(ty for _, ty in results)}) {{")
        r0 = self._iop("muli", qi, z["cg"], z["loc"])
        outs = body(qi, r0, accs)
        self.emit(f"scf.yield {', '.join(outs)} : "
                  f"{', '.join(ty for _, ty in results)}{z['loc']}")
        self.emit(f"}}{z['loc']}")
        return [f"{res}#{i}" for i in range(len(results))]

    def _fa_update_rows(self, z, full, fty, at, rows, ty, fn, ins, hint):
        """full[:, :, at:at+rows] = fn(body, ins, old) written in place
        through a slice and its insertion (one subview, no copy)."""
        dst = self.new("dst")
        self.emit(f"{dst} = tensor.extract_slice {full}[0, 0, {at}, 0] "
                  f"[{z['nb']}, {z['nh']}, {rows}, {z['d']}] [1, 1, 1, 1] : {fty} to "
                  f"{ty}{z['loc']}")
        d4 = _dims(4)
        upd = self.generic(4, ["parallel"] * 4, [(n, t, _map(d4, m)) for n, t, m in ins],
                           [(dst, ty, _map(d4, d4), z["f"])],
                           lambda b, ia, oa: [fn(b, ia, oa)], z["loc"], hint=hint)[0]
        r = self.new("ins")
        self.emit(f"{r} = tensor.insert_slice {upd} into {full}[0, 0, {at}, 0] "
                  f"[{z['nb']}, {z['nh']}, {rows}, {z['d']}] [1, 1, 1, 1] : {ty} into "
                  f"{fty}{z['loc']}")
        return r

    def _flash_attention(self, t, loc):
        """scf.for over tiles of queries (rows q_tile·group), inside it an
        scf.for over the tiles of keys the mask leaves (causal: none past the
        tile's last query; a window: none before its first query's reach),
        carrying the row max m, the row sum l and the unnormalized output:
        s = q·kᵀ·scale (masked to -1e30), m' = max(m, max s), p = exp(s - m'),
        l' = l·exp(m - m') + Σ p, acc' = acc·exp(m - m') + p·v; o = acc / l."""
        q, k, v = t.inputs
        z = self._fa_setup(t, q, k, loc)
        d4 = _dims(4)

        def tile(qi, r0, accs):
            qt = self._fa_tile(z, self.name(q), r0, z["rq"], z["qtty"], z["qty"],
                               z["qt_shape"])
            _, l, acc = self._fa_stats(z, qt, k, qi, True, v)
            return [self._fa_update_rows(
                z, accs[0], z["qty"], r0, z["rq"], z["qtty"],
                lambda b, ia, oa: b.div(ia[0], ia[1]),
                [(acc, z["qtty"], d4), (l, z["rty"], d4[:3])], "out")]
        return self._fa_query_loop(z, [(self.empty(q.shape, z["f"]), z["qty"])], tile)[0]

    def _flash_attention_grad(self, t, loc):
        """∂q, ∂k, ∂v of flash_attention from o and ∂o, tile by tile
        (FlashAttention-2's backward): per query tile, the key-tile loop
        again for lse = m + log l and D = Σ_e ∂o·o, then per key tile
        p = exp(s - lse), ∂v += pᵀ·∂o, ∂p = ∂o·vᵀ, ∂s = p·(∂p - D)·scale,
        ∂q += ∂s·k, ∂k += ∂sᵀ·q. No [T, S] tensor exists."""
        fwd, g = t.inputs
        q, k, v = fwd.inputs
        z = self._fa_setup(fwd, q, k, loc)
        f, d4 = z["f"], _dims(4)
        ktile = lambda x, kj: self._fa_tile(z, self.name(x), kj, z["tk"], z["ktty"],
                                            z["kty"], z["kt_shape"])

        def tile(qi, r0, accs):
            dq, dk, dv = accs
            qt, ot, gt = (self._fa_tile(z, self.name(x), r0, z["rq"], z["qtty"], z["qty"],
                                        z["qt_shape"]) for x in (q, fwd, g))
            m, l = self._fa_stats(z, qt, k, qi, False)
            lse = self._fa_rows(z, lambda b, ia, oa: b.add(ia[0], b.math("log", ia[1])),
                                [m, l], hint="lse")
            dsum = self.generic(4, ["parallel"] * 3 + ["reduction"],
                                [(gt, z["qtty"], _map(d4, d4)), (ot, z["qtty"], _map(d4, d4))],
                                [(self.filled(z["r_shape"], f, 0.0, loc), z["rty"],
                                  _map(d4, d4[:3]), f)],
                                lambda b, ia, oa: [b.add(oa[0], b.mul(ia[0], ia[1]))],
                                loc, hint="dsum")[0]
            lo, hi = self._fa_key_range(z, qi)
            res, kj = self.new("bw"), self.new("kj")
            dqt0 = self.filled(z["qt_shape"], f, 0.0, loc)
            c = [self.new("c") for _ in range(3)]
            types = f"{z['qtty']}, {z['kty']}, {z['kty']}"
            self.emit(f"{res}:3 = scf.for {kj} = {lo} to {hi} step {z['ctk']} iter_args("
                      f"{c[0]} = {dqt0}, {c[1]} = {dk}, {c[2]} = {dv}) -> ({types}) {{")
            kt, vt = ktile(k, kj), ktile(v, kj)
            p = self._fa_probs(z, self._fa_scores(z, qt, kt, qi, kj), lse, qi, kj)
            pdo = self._fa_contract(z, (p, z["sty"]), "bhrj", (gt, z["qtty"]), "bhre",
                                    None, "bhje", hint="dv")
            dp = self._fa_contract(z, (gt, z["qtty"]), "bhre", (vt, z["ktty"]), "bhje",
                                   None, "bhrj", hint="dp")

            def dscore(b, ia, oa):   # p·(∂p - D)·scale, over ∂p in place
                return [b.mul(b.mul(ia[0], b.sub(oa[0], ia[1])), b.const(z["scale"]))]
            ds = self.generic(4, ["parallel"] * 4, [(p, z["sty"], _map(d4, d4)),
                                                    (dsum, z["rty"], _map(d4, d4[:3]))],
                              [(dp, z["sty"], _map(d4, d4), f)], dscore, loc, hint="ds")[0]
            dq2 = self._fa_contract(z, (ds, z["sty"]), "bhrj", (kt, z["ktty"]), "bhje",
                                    None, "bhre", hint="dq")
            dq2 = self.generic(4, ["parallel"] * 4, [(dq2, z["qtty"], _map(d4, d4))],
                               [(c[0], z["qtty"], _map(d4, d4), f)],
                               lambda b, ia, oa: [b.add(oa[0], ia[0])], loc, hint="dqacc")[0]
            dsq = self._fa_contract(z, (ds, z["sty"]), "bhrj", (qt, z["qtty"]), "bhre",
                                    None, "bhje", hint="dk")
            add = lambda b, ia, oa: b.add(oa[0], ia[0])
            dk2 = self._fa_update_rows(z, c[1], z["kty"], kj, z["tk"], z["ktty"], add,
                                       [(dsq, z["ktty"], d4)], "dkacc")
            dv2 = self._fa_update_rows(z, c[2], z["kty"], kj, z["tk"], z["ktty"], add,
                                       [(pdo, z["ktty"], d4)], "dvacc")
            self.emit(f"scf.yield {dq2}, {dk2}, {dv2} : {types}{loc}")
            self.emit(f"}}{loc}")
            dq2 = self._fa_update_rows(z, dq, z["qty"], r0, z["rq"], z["qtty"],
                                       lambda b, ia, oa: ia[0],
                                       [(f"{res}#0", z["qtty"], d4)], "dq")
            return [dq2, f"{res}#1", f"{res}#2"]
        return self._fa_query_loop(
            z, [(self.empty(q.shape, f), z["qty"]),
                (self.filled(k.shape, f, 0.0, loc), z["kty"]),
                (self.filled(v.shape, f, 0.0, loc), z["kty"])], tile)

    def _mask(self, b, ndim, window):
        """i1: is element [..., i, j] masked (j > i, or i - j >= window)."""
        i, j = b.index(ndim - 2), b.index(ndim - 1)
        m = b.cmpi("ugt", j, i)
        if window:
            reach = b.iop("addi", j, b.const(window, "index"))
            m = b.iop("ori", m, b.cmpi("ule", reach, i), "i1")
        return m

    def _row_stats(self, x, loc, causal=False, window=0):
        """(max, Σ exp(x - max)) over the last axis, masked when causal."""
        dom = _dims(x.ndim)
        rows = x.shape[:-1]
        its = ["parallel"] * (x.ndim - 1) + ["reduction"]
        row_map = _map(dom, dom[:-1])
        xty = tensor_type(x)
        mty = type_str(rows, x.dtype)

        def masked(b):
            return self._mask(b, x.ndim, window)

        def max_body(b, ia, oa):
            m = b.op("arith.maximumf", oa[0], ia[0])
            if causal:
                m = b.select(masked(b), oa[0], m)
            return [m]
        m_init = self.filled(rows, x.dtype, -math.inf, loc)
        m = self.generic(x.ndim, its, [(self.name(x), xty, _map(dom, dom))],
                         [(m_init, mty, row_map, x.dtype)], max_body, loc)[0]

        def sum_body(b, ia, oa):
            e = b.math("exp", b.sub(ia[0], ia[1]))
            if causal:
                e = b.select(masked(b), b.const(0.0), e)
            return [b.add(oa[0], e)]
        s_init = self.filled(rows, x.dtype, 0.0, loc)
        s = self.generic(x.ndim, its, [(self.name(x), xty, _map(dom, dom)),
                                       (m, mty, row_map)],
                         [(s_init, mty, row_map, x.dtype)], sum_body, loc)[0]
        return m, s

    def _logsumexp(self, t, loc):
        x = t.inputs[0]
        m, s = self._row_stats(x, loc)
        dom = _dims(t.ndim)
        out = self.empty(t.shape, t.dtype)
        ty = tensor_type(t)
        return self.generic(t.ndim, ["parallel"] * t.ndim,
                            [(m, ty, _map(dom, dom)), (s, ty, _map(dom, dom))],
                            [(out, ty, _map(dom, dom), t.dtype)],
                            lambda b, ia, oa: [b.add(ia[0], b.math("log", ia[1]))],
                            loc)[0]

    def _softmax(self, t, loc):
        x = t.inputs[0]
        causal, window = t.attrs["causal"], t.attrs.get("window", 0)
        m, s = self._row_stats(x, loc, causal, window)
        dom = _dims(t.ndim)
        ty = tensor_type(t)
        rty = type_str(x.shape[:-1], x.dtype)
        row_map = _map(dom, dom[:-1])

        # The probabilities overwrite the scores (read through the output
        # operand): attention's [B, H, T, T] exists once, not twice
        # (bufferization copies first where the scores are used again). Not
        # into a function argument: bufferization would write the caller's
        # buffer.
        in_place = x.op != "arg"
        stats = [(m, rty, row_map), (s, rty, row_map)]
        ins = stats if in_place else [(self.name(x), ty, _map(dom, dom))] + stats
        out = self.name(x) if in_place else self.empty(t.shape, t.dtype)

        def body(b, ia, oa):
            xv, mv, sv = (oa[0], *ia) if in_place else ia
            y = b.div(b.math("exp", b.sub(xv, mv)), sv)
            if causal:
                y = b.select(self._mask(b, t.ndim, window), b.const(0.0), y)
            return [y]
        return self.generic(t.ndim, ["parallel"] * t.ndim, ins,
                            [(out, ty, _map(dom, dom), t.dtype)], body, loc)[0]

    def _rope(self, t, loc):
        x = t.inputs[0]
        a = t.attrs
        n_rot, head = a["n_rot"], x.shape[3]
        positions = t.inputs[1] if len(t.inputs) > 1 else None
        dom = _dims(4)
        out = self.empty(t.shape, t.dtype)
        xname, xty = self.name(x), tensor_type(x)
        log_theta = math.log(a["theta"])
        factors = a.get("factors", ())
        if factors:
            fname, fty = self.new("rope_factors"), type_str((len(factors),), t.dtype)
            values = ", ".join(float_literal(f, t.dtype) for f in factors)
            self.emit(f"{fname} = arith.constant dense<[{values}]> : {fty}{loc}")

        def body(b, ia, oa):
            bi, ti, hi, di = (b.index(k) for k in range(4))
            c = lambda v: b.const(v, "index")
            if a["mode"] == "normal":
                pair = b.iop("divui", di, c(2))
                partner = b.iop("xori", di, c(1))
                second = b.cmpi("eq", b.iop("andi", di, c(1)), c(1))
            else:
                half = n_rot // 2
                second = b.cmpi("uge", di, c(half))
                pair = b.select(second, b.iop("subi", di, c(half)), di, "index")
                partner = b.select(second, b.iop("subi", di, c(half)),
                                   b.iop("addi", di, c(half)), "index")
            rotated = b.cmpi("ult", di, c(n_rot))
            partner = b.select(rotated, partner, di, "index")
            xp = b.raw(lambda r: f"{r} = tensor.extract {xname}[{bi}, {ti}, {hi}, "
                                 f"{partner}] : {xty}")
            # angle = p · freq_scale · theta^(-2i/n_rot)
            pf = (b.raw(lambda r: f"{r} = arith.sitofp {ia[1]} : i32 to {b.dtype}")
                  if positions else b.index_to_float(ti))
            jf = b.index_to_float(pair)
            inv = b.math("exp", b.mul(jf, b.const(-2.0 * log_theta / n_rot)))
            ang = b.mul(b.mul(pf, b.const(a["freq_scale"])), inv)
            if factors:  # llama.cpp divides the angle by the pair's factor
                fi = b.select(rotated, pair, c(0), "index")
                ang = b.div(ang, b.raw(lambda r: f"{r} = tensor.extract "
                                                 f"{fname}[{fi}] : {fty}"))
            cs, sn = b.math("cos", ang), b.math("sin", ang)
            sgn = b.select(second, b.const(a["sign"]), b.const(-a["sign"]))
            y = b.add(b.mul(ia[0], cs), b.mul(b.mul(sgn, sn), xp))
            return [b.select(rotated, y, ia[0])]
        del head
        ins = [(xname, xty, _map(dom, dom))]
        if positions:
            ins.append((self.name(positions), tensor_type(positions),
                        _map(dom, [dom[1]])))
        return self.generic(4, ["parallel"] * 4, ins,
                            [(out, tensor_type(t), _map(dom, dom), t.dtype)], body, loc)[0]

    def _all_reduce(self, t, loc):
        r = self.new("allreduce")
        self.emit(f"{r} = qcc.all_reduce {self.name(t.inputs[0])} ranks "
                  f"{t.attrs['ranks']} : {tensor_type(t)}{loc}")
        return r

    def _all_gather(self, t, loc):
        r = self.new("allgather")
        x = t.inputs[0]
        self.emit(f"{r} = qcc.all_gather {self.name(x)} ranks {t.attrs['ranks']}"
                  f" : {tensor_type(x)} -> {tensor_type(t)}{loc}")
        return r

    def _concat(self, t, loc):
        axis = t.attrs["axis"]
        cur = self.empty(t.shape, t.dtype)
        off = 0
        for x in t.inputs:
            offs = ["0"] * t.ndim
            offs[axis] = str(off)
            r = self.new("concat")
            self.emit(f"{r} = tensor.insert_slice {self.name(x)} into {cur}"
                      f"[{', '.join(offs)}] [{', '.join(str(d) for d in x.shape)}] "
                      f"[{', '.join('1' for _ in x.shape)}] : {tensor_type(x)} into "
                      f"{tensor_type(t)}{loc}")
            cur = r
            off += x.shape[axis]
        return cur


def _elem(ty):
    if ty.startswith("tensor<"):
        inner = ty[len("tensor<"):-1]
        return inner.split("x")[-1]
    return ty


def _attr_text(key, value):
    if isinstance(value, bool):
        return f"{key}" if value else ""
    if isinstance(value, str):
        return f'{key} = "{value}"'
    if isinstance(value, float):
        return f"{key} = {float_literal(value, 'f32')} : f32"
    if isinstance(value, int):
        return f"{key} = {value} : i64"
    raise TypeError(f"attribute {key}: {value!r}")


def _arg_attrs(t):
    attrs = {"qcc.name": t.attrs["name"], "qcc.role": t.attrs["role"]}
    for k, v in t.attrs.get("extra", {}).items():
        if k == "scalar":
            continue
        attrs[k] = v
    return "{" + ", ".join(_attr_text(k, v) for k, v in attrs.items()) + "}"


def live_nodes(outputs):
    """Indices of the nodes `outputs` depend on."""
    live, stack = set(), list(outputs)
    while stack:
        t = stack.pop()
        if t.index in live:
            continue
        live.add(t.index)
        stack.extend(t.inputs)
    return live


FUSE_ELEMENTWISE = True


class Function:
    """One func.func: `args` (leaves, in order; by default every live
    argument of the graph in declaration order) and `results`, a list of
    tensors or (tensor, name[, role]) tuples."""

    def __init__(self, name, results, args=None, graph=None):
        self.name = name
        self.results = []
        for r in results:
            if isinstance(r, Tensor):
                r = (r, None, None)
            elif len(r) == 2:
                r = (r[0], r[1], None)
            self.results.append(r)
        outs = [r[0] for r in self.results]
        self.graph = graph or outs[0].graph
        self.live = live_nodes(outs)
        if args is None:
            args = [a for a in self.graph.args if a.index in self.live]
        self.args = list(args)

    def fusion(self):
        """Elementwise nodes to compute inside their consumer: used once, by
        an elementwise op of the same shape or a sum over their shape, and
        not a result. Fewer loops and fewer tensors in memory."""
        uses = {}
        for t in self.graph.nodes:
            if t.index in self.live:
                for x in t.inputs:
                    uses[x.index] = uses.get(x.index, 0) + 1
        for t, _, _ in self.results:
            uses[t.index] = uses.get(t.index, 0) + 2
        inlined = set()
        for t in self.graph.nodes:
            if t.index not in self.live or t.op not in ("ew", "sum", "max"):
                continue
            inputs = t.inputs
            for x in inputs:
                if (x.op == "ew" and uses.get(x.index) == 1 and x.dtype == t.dtype
                        and x.shape == (t.shape if t.op == "ew" else t.inputs[0].shape)):
                    inlined.add(x.index)
        return inlined

    def text(self, locs):
        em = FunctionEmitter(locs, self.fusion() if FUSE_ELEMENTWISE else ())
        sig = []
        for i, a in enumerate(self.args):
            em.names[a.index] = f"%arg{i}"
            sig.append(f"%arg{i}: {tensor_type(a)} {_arg_attrs(a)}")
        for t in self.graph.nodes:
            if t.index in self.live and t.index not in em.names:
                if t.op == "arg":
                    raise ValueError(f"function {self.name} uses argument "
                                     f"'{t.attrs['name']}' it does not declare")
                em.node(t)
        rtypes = []
        for t, name, role in self.results:
            attrs = []
            if name:
                attrs.append(f'qcc.name = "{name}"')
            if role:
                attrs.append(f'qcc.role = "{role}"')
            rt = type_str(t.shape, t.dtype)
            rtypes.append(rt + (" {" + ", ".join(attrs) + "}" if attrs else ""))
        lines = [f"func.func @{self.name}({', '.join(sig)})"
                 f" -> ({', '.join(rtypes)}) {{"]
        lines += em.lines
        rets = ", ".join(em.name(t) for t, _, _ in self.results)
        types = ", ".join(type_str(t.shape, t.dtype) for t, _, _ in self.results)
        lines.append(f"  return {rets} : {types}")
        lines.append("}")
        return "\n".join(lines)


def module(functions):
    """The MLIR text of a module holding `functions`, location aliases
    first."""
    locs = {}
    bodies = [f.text(locs) for f in functions]
    head = [f"{alias} = loc({text})" for text, alias in locs.items()]
    return "\n".join(head + [""] + bodies) + "\n"
