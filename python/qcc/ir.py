"""The traced graph: symbolic tensors and the primitive ops they record.

A `Graph` records every operation applied to its `Tensor`s as a node
(primitive op, inputs, attributes, shape, element type, and the location of
the user's Python line that made it). Autodiff (`qcc.autodiff`) adds nodes
for the backward pass to the same graph; `qcc.emit` writes the nodes a set
of outputs needs as MLIR text.

Element types: "f32" (or "f64", the float type of the graph, used by the
gradient tests), "i32" for token ids, "bf16" for optimizer state, and for
quantized weights the GGUF format name ("q8_0", "q4_K", "f16", ...): such a
tensor is a `!qcc.qtensor` and only `dequant`, `qlinear` and the update ops
read it.
"""

import os
import sys
import threading

FLOAT_TYPES = ("f32", "f64", "bf16", "f16")
INT_TYPES = ("i32", "i64")

_INTERNAL_FILES = set()


def internal_module(path):
    """Marks a source file as part of qcc's tracing machinery: locations
    point past its frames, at the code that called it."""
    _INTERNAL_FILES.add(os.path.normcase(os.path.abspath(path)))


internal_module(__file__)


def _frame_location(frame):
    code = frame.f_code
    line, col = frame.f_lineno, 0
    try:
        index = frame.f_lasti // 2
        for i, pos in enumerate(code.co_positions()):
            if i == index:
                if pos[0] is not None:
                    line = pos[0]
                if pos[2] is not None:
                    col = pos[2]
                break
    except (AttributeError, ValueError):
        pass
    return (code.co_filename, line, col + 1)


def user_location():
    """(file, line, column) of the innermost frame outside qcc's tracing
    machinery (layers, functional ops, autodiff, emission)."""
    frame = sys._getframe(1)
    while frame is not None:
        path = os.path.normcase(os.path.abspath(frame.f_code.co_filename))
        if path not in _INTERNAL_FILES:
            return _frame_location(frame)
        frame = frame.f_back
    return ("<unknown>", 0, 0)


class Location:
    """A source location; `backward_of` marks the nodes autodiff made for
    the op at `site`, `name` names a generated region (optimizer, update)."""

    __slots__ = ("file", "line", "col", "name")

    def __init__(self, file, line, col, name=None):
        self.file, self.line, self.col, self.name = file, line, col, name

    def mlir(self):
        path = self.file.replace("\\", "\\\\").replace('"', '\\"')
        inner = f'"{path}":{self.line}:{self.col}'
        if self.name:
            return f'"{self.name}"({inner})'
        return inner

    def named(self, name):
        return Location(self.file, self.line, self.col, name)


_state = threading.local()


def current_graph():
    g = getattr(_state, "graph", None)
    if g is None:
        raise RuntimeError("no graph is being traced: use `with qcc.Graph():` "
                           "or build tensors from a Graph")
    return g


def broadcast_shapes(*shapes):
    """numpy's broadcasting of shapes."""
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise ValueError(f"shapes {list(shapes)} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


class Graph:
    """A trace. Use as a context manager (`with Graph() as g:`) so that
    layers and functional ops record into it."""

    def __init__(self, float_type="f32"):
        assert float_type in ("f32", "f64")
        self.float_type = float_type
        self.nodes = []
        self.args = []          # leaves, in declaration order
        self._param_leaves = {}  # Parameter -> leaf
        self._loc_stack = []
        self._prev = None

    # Context management ---------------------------------------------------
    def __enter__(self):
        self._prev = getattr(_state, "graph", None)
        _state.graph = self
        return self

    def __exit__(self, *exc):
        _state.graph = self._prev
        return False

    def location(self):
        if self._loc_stack:
            return self._loc_stack[-1]
        return Location(*user_location())

    def push_location(self, loc):
        self._loc_stack.append(loc)

    def pop_location(self):
        self._loc_stack.pop()

    # Nodes ----------------------------------------------------------------
    def add(self, op, inputs, shape, dtype, loc=None, **attrs):
        t = Tensor(self, len(self.nodes), op, tuple(inputs), tuple(shape),
                   dtype, attrs, loc or self.location())
        self.nodes.append(t)
        return t

    def arg(self, name, shape, dtype=None, role="input", **attrs):
        """An argument of the traced function: `role` is input, weight,
        state or param (docs/runtime.md); `attrs` become argument
        attributes (qcc.init, qcc.lora.*)."""
        dtype = dtype or self.float_type
        for a in self.args:
            if a.attrs["name"] == name:
                raise ValueError(f"two arguments named '{name}'")
        t = self.add("arg", (), shape, dtype, name=name, role=role,
                     extra=dict(attrs))
        self.args.append(t)
        return t

    def input(self, name, shape, dtype=None):
        return self.arg(name, shape, dtype, role="input")

    def scalar(self, name, dtype=None):
        """A scalar argument (an f32 learning rate, say)."""
        return self.arg(name, (), dtype, role="input", scalar=True)

    def param_leaf(self, p):
        """The leaf of a `qcc.nn.Parameter` in this graph (one per graph)."""
        leaf = self._param_leaves.get(id(p))
        if leaf is None:
            dtype = p.dtype if p.dtype != "float" else self.float_type
            extra = dict(p.attrs)
            leaf = self.arg(p.name, p.shape, dtype, role=p.role, **extra)
            leaf.parameter = p
            self._param_leaves[id(p)] = leaf
        return leaf

    def full(self, shape, value, dtype=None):
        return self.add("full", (), shape, dtype or self.float_type,
                        value=float(value))


def _as_tensor(x, like):
    if isinstance(x, Tensor):
        return x
    return float(x)


class Tensor:
    """A symbolic tensor: one value of the trace."""

    __array_priority__ = 1000

    def __init__(self, graph, index, op, inputs, shape, dtype, attrs, loc):
        self.graph = graph
        self.index = index
        self.op = op
        self.inputs = inputs
        self.shape = shape
        self.dtype = dtype
        self.attrs = attrs
        self.loc = loc
        self.parameter = None

    def __repr__(self):
        return (f"Tensor(%{self.index} = {self.op}, shape={list(self.shape)}, "
                f"dtype={self.dtype})")

    __hash__ = object.__hash__

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def quantized(self):
        return self.dtype not in FLOAT_TYPES and self.dtype not in INT_TYPES

    @property
    def name(self):
        return self.attrs.get("name")

    def numel(self):
        n = 1
        for d in self.shape:
            n *= d
        return n

    # Arithmetic -----------------------------------------------------------
    def __add__(self, o):
        return binary("add", self, o)

    def __radd__(self, o):
        return binary("add", o, self)

    def __sub__(self, o):
        return binary("sub", self, o)

    def __rsub__(self, o):
        return binary("sub", o, self)

    def __mul__(self, o):
        return binary("mul", self, o)

    def __rmul__(self, o):
        return binary("mul", o, self)

    def __truediv__(self, o):
        return binary("div", self, o)

    def __rtruediv__(self, o):
        return binary("div", o, self)

    def __neg__(self):
        return unary("neg", self)

    def __matmul__(self, o):
        return matmul(self, o)

    def exp(self):
        return unary("exp", self)

    def log(self):
        return unary("log", self)

    def sqrt(self):
        return unary("sqrt", self)

    def rsqrt(self):
        return unary("rsqrt", self)

    def tanh(self):
        return unary("tanh", self)

    def sigmoid(self):
        return unary("sigmoid", self)

    def square(self):
        return unary("square", self)

    def sum(self, axis=None, keepdims=False):
        return reduce_sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        axes = _axes(axis, self.ndim)
        n = 1
        for a in axes:
            n *= self.shape[a]
        return reduce_sum(self, axes, keepdims) * (1.0 / n)

    def max(self, axis=None, keepdims=False):
        return reduce_max(self, axis, keepdims)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return reshape(self, shape)

    view = reshape

    def permute(self, *perm):
        if len(perm) == 1 and isinstance(perm[0], (tuple, list)):
            perm = tuple(perm[0])
        return permute(self, perm)

    def transpose(self, a, b):
        perm = list(range(self.ndim))
        perm[a], perm[b] = perm[b], perm[a]
        return permute(self, perm)

    @property
    def T(self):
        return self.transpose(-2 % self.ndim, -1 % self.ndim)

    def detach(self):
        return self.graph.add("stop_gradient", (self,), self.shape, self.dtype)


# Primitive constructors -------------------------------------------------------

def _graph_of(*xs):
    for x in xs:
        if isinstance(x, Tensor):
            return x.graph
    return current_graph()


def _check_float(x, what):
    if x.dtype not in FLOAT_TYPES:
        raise TypeError(f"{what} needs a float tensor, got {x.dtype}")


def elementwise(fn, inputs, consts=(), shape=None, dtype=None):
    """An elementwise op `fn` (see qcc.emit.SCALAR_FNS) over `inputs`,
    broadcast numpy-style to `shape` (their broadcast shape by default)."""
    g = _graph_of(*inputs)
    for x in inputs:
        _check_float(x, fn)
    out = broadcast_shapes(*[x.shape for x in inputs], *( [shape] if shape else []))
    if shape is not None and tuple(shape) != out:
        raise ValueError(f"{fn}: cannot broadcast to {shape}")
    return g.add("ew", inputs, out, dtype or inputs[0].dtype, fn=fn,
                 consts=tuple(float(c) for c in consts))


def recompute(t):
    """Marks the elementwise result `t` to be recomputed from its inputs
    where the backward needs it (qcc.autodiff), instead of being kept from
    the forward pass to the backward: it costs one elementwise op and saves
    a tensor of t's size for the whole of the forward pass. Worth it when
    the inputs are kept for the backward anyway. Returns t."""
    if t.op != "ew":
        raise ValueError(f"recompute: {t.op} is not an elementwise result")
    t.attrs["recompute"] = True
    return t


def unary(fn, x, *consts):
    return elementwise(fn, (x,), consts)


def binary(fn, a, b):
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return elementwise(fn, (a, b))
    if isinstance(a, Tensor):
        c = float(b)
        if fn == "add":
            return elementwise("addc", (a,), (c,))
        if fn == "sub":
            return elementwise("addc", (a,), (-c,))
        if fn == "mul":
            return elementwise("mulc", (a,), (c,))
        if fn == "div":
            return elementwise("mulc", (a,), (1.0 / c,))
    else:
        c = float(a)
        if fn == "add":
            return elementwise("addc", (b,), (c,))
        if fn == "sub":
            return elementwise("rsubc", (b,), (c,))
        if fn == "mul":
            return elementwise("mulc", (b,), (c,))
        if fn == "div":
            return elementwise("rdivc", (b,), (c,))
    raise ValueError(fn)


def broadcast_to(x, shape):
    if tuple(x.shape) == tuple(shape):
        return x
    return elementwise("copy", (x,), shape=tuple(shape))


def _axes(axis, rank):
    if axis is None:
        return tuple(range(rank))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(sorted(a % rank for a in axis))


def reduce_sum(x, axis=None, keepdims=False):
    _check_float(x, "sum")
    axes = _axes(axis, x.ndim)
    if not axes:
        return x
    shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    r = x.graph.add("sum", (x,), shape, x.dtype, axes=axes)
    if keepdims:
        r = reshape(r, tuple(1 if i in axes else d for i, d in enumerate(x.shape)))
    return r


def reduce_max(x, axis=None, keepdims=False):
    """Maximum over `axis`; not differentiable (used as a stabilizing shift
    whose gradient cancels, e.g. in softmax)."""
    _check_float(x, "max")
    axes = _axes(axis, x.ndim)
    shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    r = x.graph.add("max", (x,), shape, x.dtype, axes=axes)
    if keepdims:
        r = reshape(r, tuple(1 if i in axes else d for i, d in enumerate(x.shape)))
    return r


def reshape(x, shape):
    shape = list(shape)
    if -1 in shape:
        known = 1
        for d in shape:
            if d != -1:
                known *= d
        shape[shape.index(-1)] = x.numel() // known
    shape = tuple(shape)
    n = 1
    for d in shape:
        n *= d
    if n != x.numel():
        raise ValueError(f"cannot reshape {list(x.shape)} to {list(shape)}")
    if shape == x.shape:
        return x
    return x.graph.add("reshape", (x,), shape, x.dtype)


def permute(x, perm):
    perm = tuple(p % x.ndim for p in perm)
    if sorted(perm) != list(range(x.ndim)):
        raise ValueError(f"bad permutation {perm}")
    if perm == tuple(range(x.ndim)):
        return x
    return x.graph.add("permute", (x,), tuple(x.shape[p] for p in perm),
                       x.dtype, perm=perm)


def einsum(spec, a, b):
    """Two-operand einsum, e.g. "bhid,bhjd->bhij" (no repeated index within
    an operand, every output index in an operand)."""
    lhs, out = spec.replace(" ", "").split("->")
    sa, sb = lhs.split(",")
    for x, s in ((a, sa), (b, sb)):
        if len(s) != x.ndim or len(set(s)) != len(s):
            raise ValueError(f"einsum '{spec}': operand of shape "
                             f"{list(x.shape)} does not fit '{s}'")
        _check_float(x, "einsum")
    sizes = {}
    for x, s in ((a, sa), (b, sb)):
        for c, d in zip(s, x.shape):
            if sizes.setdefault(c, d) != d:
                raise ValueError(f"einsum '{spec}': index {c} is {sizes[c]} "
                                 f"and {d}")
    for c in out:
        if c not in sizes:
            raise ValueError(f"einsum '{spec}': output index {c} unknown")
    shape = tuple(sizes[c] for c in out)
    return a.graph.add("einsum", (a, b), shape, a.dtype, spec=(sa, sb, out))


def matmul(a, b):
    """a @ b with numpy's rules for rank >= 2 (batch dims must agree)."""
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError("matmul needs rank >= 2")
    letters = "abcdefgh"
    batch = letters[: max(a.ndim, b.ndim) - 2]
    sa = batch[len(batch) - (a.ndim - 2):] + "mk"
    sb = batch[len(batch) - (b.ndim - 2):] + "kn"
    return einsum(f"{sa},{sb}->{batch}mn", a, b)


def dequant(w, dtype=None):
    if not w.quantized:
        return w
    g = w.graph
    return g.add("dequant", (w,), w.shape, dtype or g.float_type)


def qlinear(x, w):
    """y = x · Ŵᵀ through the blocks (qcc.qmatmul fwd): x [..., K], W [N, K]."""
    if not w.quantized or w.ndim != 2:
        raise TypeError("qlinear needs a 2-D quantized weight")
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"qlinear: x has {x.shape[-1]} features, the weight "
                         f"{list(w.shape)} takes {w.shape[1]}")
    if x.dtype != "f32":
        raise TypeError("qlinear computes in f32")
    return x.graph.add("qlinear", (x, w), x.shape[:-1] + (w.shape[0],), "f32")


def qlinear_bwd(g, w):
    """dx = g · Ŵ through the blocks (qcc.qmatmul bwd)."""
    return g.graph.add("qlinear_bwd", (g, w), g.shape[:-1] + (w.shape[1],),
                       "f32")


def gather(table, ids):
    """table[ids]: rows of a [V, D] table for integer ids of any shape. A
    quantized table (1-D ids) decodes only the rows it picks (qcc.gather)."""
    if table.ndim != 2 or ids.dtype not in INT_TYPES:
        raise TypeError("gather needs a 2-D table and integer ids")
    if table.quantized:
        if ids.ndim != 1:
            raise TypeError("gather from a quantized table takes 1-D ids")
        dtype = "f32"
    else:
        _check_float(table, "gather")
        dtype = table.dtype
    return table.graph.add("gather", (table, ids), ids.shape + (table.shape[1],),
                           dtype)


def one_hot(ids, n, dtype=None):
    g = ids.graph
    return g.add("one_hot", (ids,), ids.shape + (n,), dtype or g.float_type,
                 n=n)


def take_last(x, ids):
    """x[..., ids[...]]: one element of the last axis per row."""
    if x.shape[:-1] != ids.shape:
        raise ValueError("take_last: ids must have x's shape without its "
                         "last axis")
    return x.graph.add("take_last", (x, ids), ids.shape, x.dtype)


def linear_nll(h, w, targets, softcap=0.0, grad=True, chunk=64):
    """nll[m] = logsumexp(y[m]) - y[m, targets[m]] for the logits
    y = x · Wᵀ (through W's blocks when quantized; with `softcap` c > 0,
    y = c·tanh(x·Wᵀ / c)) of h [M, D] and W [V, D], computed `chunk` rows at
    a time so that only a [chunk, V] slice of the logits ever exists: the LM
    head and cross-entropy of a large vocabulary in a fraction of the memory.
    With `grad`, each chunk also computes ∂nll[m]/∂h[m] while its logits are
    at hand (row m's nll depends on row m of h only), which the backward
    pass then scales by the incoming gradient: no logits are kept or
    recomputed. W gets no gradient (it is frozen, e.g. in LoRA training)."""
    _check_float(h, "linear_nll")
    if h.ndim != 2 or w.ndim != 2 or h.shape[1] != w.shape[1]:
        raise ValueError(f"linear_nll: h {list(h.shape)} and W {list(w.shape)} "
                         "must be [M, D] and [V, D]")
    if targets.shape != h.shape[:1] or targets.dtype not in INT_TYPES:
        raise ValueError("linear_nll: targets must be [M] integers")
    m = h.shape[0]
    c = max(d for d in range(1, min(chunk, m) + 1) if m % d == 0)
    return h.graph.add("linear_nll", (h, w, targets), (m,), h.dtype,
                       softcap=float(softcap), grad=bool(grad), chunk=c)


def linear_distill(h, w, targets, ht, wt, softcap=0.0, teacher_softcap=0.0,
                   temperature=1.0, alpha=1.0, beta=1.0, grad=True, chunk=64):
    """Knowledge distillation through the LM head, chunked like linear_nll:
    loss[m] = α·(logsumexp(y[m]) - y[m, targets[m]])
              + β·τ²·KL(softmax(z[m]/τ) ‖ softmax(y[m]/τ))
    with the student's logits y = h·Wᵀ and the teacher's z = ht·Wtᵀ (each
    through its own blocks, each with its softcap), `chunk` rows at a time
    so that neither [M, V] logits exist. With `grad`, each chunk computes
    ∂loss[m]/∂h[m] = (α·(softmax(y) - onehot) + β·τ·(softmax(y/τ) -
    softmax(z/τ)))·W (through the softcap's derivative) while the logits are
    at hand; the teacher (ht, Wt) and W get no gradient."""
    _check_float(h, "linear_distill")
    _check_float(ht, "linear_distill")
    if h.ndim != 2 or w.ndim != 2 or h.shape[1] != w.shape[1]:
        raise ValueError(f"linear_distill: h {list(h.shape)} and W "
                         f"{list(w.shape)} must be [M, D] and [V, D]")
    if (ht.ndim != 2 or wt.ndim != 2 or ht.shape[0] != h.shape[0]
            or ht.shape[1] != wt.shape[1] or wt.shape[0] != w.shape[0]):
        raise ValueError(f"linear_distill: the teacher's ht {list(ht.shape)} "
                         f"and Wt {list(wt.shape)} must be [M, Dt] and [V, Dt] "
                         f"for the student's [M, D] {list(h.shape)} and [V, D]")
    if targets.shape != h.shape[:1] or targets.dtype not in INT_TYPES:
        raise ValueError("linear_distill: targets must be [M] integers")
    if not temperature > 0 or alpha < 0 or beta < 0:
        raise ValueError("linear_distill: the temperature must be positive "
                         "and the weights non-negative")
    m = h.shape[0]
    c = max(d for d in range(1, min(chunk, m) + 1) if m % d == 0)
    return h.graph.add("linear_distill", (h, w, targets, ht, wt), (m,), h.dtype,
                       softcap=float(softcap),
                       teacher_softcap=float(teacher_softcap),
                       temperature=float(temperature), alpha=float(alpha),
                       beta=float(beta), grad=bool(grad), chunk=c)


def _tile(n, limit):
    """The largest divisor of n that is at most `limit`."""
    return max(d for d in range(1, min(limit, n) + 1) if n % d == 0)


def flash_attention(q, k, v, group=1, scale=1.0, causal=True, window=0,
                    q_tile=64, k_tile=128):
    """softmax(q·kᵀ·scale, masked)·v without the [rows, keys] scores: tiles
    of `q_tile` queries against tiles of `k_tile` keys, with an online
    softmax (a running row max and sum), the tiles past the causal edge or
    before the sliding window skipped. q [B, H, T·group, D] holds the
    `group` query heads of each key/value head interleaved (row r is query
    r // group), k and v [B, H, S, D]; `causal` (S = T): query i sees keys
    j <= i, and with `window` > 0 only i - window < j. Returns q's shape."""
    _check_float(q, "flash_attention")
    b, h, r, d = q.shape
    if (q.ndim != 4 or k.shape != v.shape or k.ndim != 4 or k.shape[:2] != (b, h)
            or k.shape[3] != d or r % group):
        raise ValueError(f"flash_attention: q {list(q.shape)}, k {list(k.shape)}, "
                         f"v {list(v.shape)} do not fit group {group}")
    t, s = r // group, k.shape[2]
    if (causal or window) and s != t:
        raise ValueError("flash_attention: a causal mask needs as many keys as queries")
    if window < 0 or (window and not causal):
        raise ValueError("flash_attention: a window needs causal=True and window > 0")
    if window >= t:
        window = 0
    return q.graph.add("flash_attention", (q, k, v), q.shape, q.dtype,
                       group=int(group), scale=float(scale), causal=bool(causal),
                       window=int(window), q_tile=_tile(t, q_tile),
                       k_tile=_tile(s, k_tile))


def flash_attention_grad(o, g):
    """(∂q, ∂k, ∂v) of the flash_attention `o` from g = ∂L/∂o, tile by tile
    (the scores are recomputed per tile pair; nothing [T, S] is built)."""
    if o.op != "flash_attention" or g.shape != o.shape:
        raise ValueError("flash_attention_grad needs a flash_attention and its "
                         "output's gradient")
    q, k, v = o.inputs
    node = o.graph.add("flash_attention_grad", (o, g), (), "tuple")
    return [o.graph.add("tuple_get", (node,), x.shape, x.dtype, index=i)
            for i, x in enumerate((q, k, v))]


def linear_nll_grad(nll, g):
    """∂L/∂h of linear_nll (or linear_distill) from g = ∂L/∂nll [M] (its
    backward pass)."""
    if nll.op not in ("linear_nll", "linear_distill") or not nll.attrs["grad"]:
        raise ValueError("linear_nll_grad needs a linear_nll or linear_distill "
                         "built with grad=True")
    h = nll.inputs[0]
    return nll.graph.add("linear_nll_grad", (nll, g), h.shape, h.dtype)


def logsumexp(x):
    """log Σ exp over the last axis."""
    _check_float(x, "logsumexp")
    return x.graph.add("logsumexp", (x,), x.shape[:-1], x.dtype)


def softmax(x, causal=False, window=0):
    """Softmax over the last axis; `causal` masks element [..., i, j] for
    j > i (the last two axes index queries and keys), and a `window` > 0
    also for i - j >= window (sliding-window attention, llama.cpp's
    LLAMA_SWA_TYPE_STANDARD)."""
    _check_float(x, "softmax")
    if (causal or window) and x.shape[-1] != x.shape[-2]:
        raise ValueError("a causal softmax needs square [..., T, T] scores")
    if window < 0 or (window and not causal):
        raise ValueError("softmax: a window needs causal=True and window > 0")
    if window >= x.shape[-1]:
        window = 0  # every key is in the window
    return x.graph.add("softmax", (x,), x.shape, x.dtype, causal=bool(causal),
                       window=int(window))


def rope(x, mode="normal", theta=10000.0, freq_scale=1.0, sign=1.0,
         n_rot=None, positions=None, factors=()):
    """Rotary position embedding of x [B, T, H, D], positions 0..T-1 along
    axis 1, or `positions` [T] (i32) where given (a KV-cache step places
    its tokens after the cached ones). "normal" (llama) rotates pairs (2i, 2i+1), "neox" pairs
    (i, i + n_rot/2); the angle of pair i at position p is
    p · freq_scale · theta^(-2i/n_rot) / factors[i] (`factors`: n_rot/2
    positive numbers, llama 3's per-frequency scaling; none: all 1). `sign`
    -1 rotates backwards (the transpose, used by autodiff). Dimensions past
    `n_rot` pass through."""
    _check_float(x, "rope")
    if x.ndim != 4:
        raise ValueError("rope expects [batch, seq, heads, head_dim]")
    n_rot = n_rot or x.shape[-1]
    if mode not in ("normal", "neox") or n_rot % 2 or n_rot > x.shape[-1]:
        raise ValueError(f"rope: bad mode {mode!r} or n_rot {n_rot}")
    factors = tuple(float(f) for f in factors)
    if factors and (len(factors) != n_rot // 2 or min(factors) <= 0):
        raise ValueError(f"rope: {len(factors)} factors for {n_rot // 2} "
                         "rotated pairs (each must be positive)")
    inputs = (x,)
    if positions is not None:
        if positions.shape != (x.shape[1],) or positions.dtype != "i32":
            raise ValueError(f"rope: positions {list(positions.shape)} "
                             f"{positions.dtype} do not fit x {list(x.shape)}")
        inputs = (x, positions)
    return x.graph.add("rope", inputs, x.shape, x.dtype, mode=mode,
                       theta=float(theta), freq_scale=float(freq_scale),
                       sign=float(sign), n_rot=int(n_rot), factors=factors)


def concat(xs, axis=0):
    axis = axis % xs[0].ndim
    shape = list(xs[0].shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    for x in xs:
        if x.ndim != len(shape) or any(
                x.shape[i] != shape[i] for i in range(len(shape)) if i != axis):
            raise ValueError("concat: shapes differ off the axis")
    return xs[0].graph.add("concat", tuple(xs), tuple(shape), xs[0].dtype,
                           axis=axis)


def all_reduce(x, ranks):
    """`qcc.all_reduce`: the sum of f32 `x` over the `ranks` ranks of a
    data-parallel job, in rank order (docs/distributed.md). Not
    differentiated: data parallelism applies it to gradients."""
    if x.dtype != "f32":
        raise TypeError(f"all_reduce sums f32 tensors, not {x.dtype}")
    return x.graph.add("all_reduce", (x,), x.shape, x.dtype, ranks=int(ranks))


def all_gather(x, ranks):
    """`qcc.all_gather`: every rank's `x`, concatenated along axis 0 in rank
    order ([n, ...] -> [ranks * n, ...]). Not differentiated."""
    if x.ndim < 1:
        raise ValueError("all_gather needs a tensor of at least one axis")
    return x.graph.add("all_gather", (x,), (ranks * x.shape[0],) + x.shape[1:],
                       x.dtype, ranks=int(ranks))


def stop_gradient(x):
    return x.detach()


def custom(inputs, outs, emit, loc=None):
    """An op whose MLIR a Python function writes: `emit(emitter, names)`
    gets the SSA names of `inputs` and returns one name per entry of `outs`
    ((shape, dtype) pairs). Used for the parameter updates of a training
    step (optimizer rules from qcc.optim, qcc.ste_grad, qcc.carry_update),
    which are not differentiated. Returns the result tensors."""
    g = _graph_of(*inputs)
    node = g.add("custom", inputs, (), "tuple", loc=loc, emit=emit)
    return [g.add("tuple_get", (node,), shape, dtype, loc=loc, index=i)
            for i, (shape, dtype) in enumerate(outs)]
