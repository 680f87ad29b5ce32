"""Layers with parameters, PyTorch-style.

A `Parameter` describes a tensor the step receives as an argument: its name
(the GGUF tensor name for model weights), shape, element type ("float", or
a GGUF block format such as "q8_0" for a quantized weight), role and
whether it trains. A `Module` holds parameters and sub-modules; calling it
inside a trace (`with qcc.Graph():`) records its forward pass, each
parameter becoming an argument of the traced function.

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.Linear(64, 256, name="up.weight", dtype="q8_0")
            self.down = nn.Linear(256, 64, name="down.weight")
        def forward(self, x):
            return self.down(F.gelu(self.up(x)))
"""

import contextlib

from . import functional as F
from . import ir

ir.internal_module(__file__)


class Parameter:
    """`role`: "weight" (bound by name to a GGUF tensor of the model) or
    "param" (not in the model: initialized by the runtime, e.g. LoRA)."""

    def __init__(self, name, shape, dtype="float", role="weight",
                 trainable=True, **attrs):
        self.name = name
        self.shape = tuple(shape)
        self.dtype = dtype
        self.role = role
        self.trainable = trainable
        self.attrs = attrs

    @property
    def quantized(self):
        return self.dtype not in ("float",) + ir.FLOAT_TYPES

    def __repr__(self):
        return (f"Parameter({self.name!r}, {list(self.shape)}, {self.dtype}, "
                f"{self.role}{'' if self.trainable else ', frozen'})")

    def traced(self):
        return ir.current_graph().param_leaf(self)


class Module:
    def __init__(self):
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_modules", {})

    def __setattr__(self, key, value):
        if isinstance(value, Parameter):
            self._params[key] = value
        elif isinstance(value, Module):
            self._modules[key] = value
        object.__setattr__(self, key, value)

    def named_parameters(self, prefix=""):
        for k, p in self._params.items():
            yield prefix + k, p
        for k, m in self._modules.items():
            yield from m.named_parameters(prefix + k + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def modules(self):
        yield self
        for m in self._modules.values():
            yield from m.modules()

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError


class ModuleList(Module):
    def __init__(self, items=()):
        super().__init__()
        self._items = []
        for m in items:
            self.append(m)

    def append(self, m):
        self._modules[str(len(self._items))] = m
        self._items.append(m)

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)

    def __getitem__(self, i):
        return self._items[i]


_linear_input_observers = []


@contextlib.contextmanager
def observe_linear_inputs():
    """Within the block, every `Linear` called appends (its weight's name,
    its traced input) to the yielded list: how calibration (qcc.imatrix)
    reads the activations that reach each matrix."""
    seen = []
    _linear_input_observers.append(seen)
    try:
        yield seen
    finally:
        _linear_input_observers.remove(seen)


class Linear(Module):
    """y = x · Wᵀ (+ b), W [out, in]. `dtype` "float" or a GGUF block
    format (the weight stays quantized: qcc.qmatmul forward and backward).
    `lora(rank, alpha)` adds a low-rank branch y += (α/r)·x·Aᵀ·Bᵀ whose A
    and B are params (the base weight is then frozen)."""

    def __init__(self, in_features, out_features, bias=False, name="weight",
                 dtype="float", bias_name=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(name, (out_features, in_features), dtype)
        self.bias = None
        if bias:
            self.bias = Parameter(bias_name or name.replace("weight", "bias"),
                                  (out_features,), "float")
        self.lora_a = self.lora_b = None
        self.lora_scale = 0.0

    def lora(self, rank, alpha, role="param"):
        """`role` "param": A and B trained from the runtime's init; "input":
        given to the step by the host (an adapter being evaluated)."""
        base = self.weight.name
        if role == "input":
            self.lora_a = Parameter(base + ".lora_a", (rank, self.in_features),
                                    "float", role="input", trainable=False)
            self.lora_b = Parameter(base + ".lora_b", (self.out_features, rank),
                                    "float", role="input", trainable=False)
            self.lora_scale = float(alpha) / rank
            return self
        attrs = {"qcc.lora.base": base, "qcc.lora.alpha": float(alpha)}
        self.lora_a = Parameter(base + ".lora_a", (rank, self.in_features),
                                "float", role="param",
                                **{"qcc.init": "kaiming_uniform",
                                   "qcc.lora.part": "a", **attrs})
        self.lora_b = Parameter(base + ".lora_b", (self.out_features, rank),
                                "float", role="param",
                                **{"qcc.init": "zeros", "qcc.lora.part": "b",
                                   **attrs})
        self.lora_scale = float(alpha) / rank
        self.weight.trainable = False
        if self.bias is not None:
            self.bias.trainable = False
        return self

    def forward(self, x):
        for seen in _linear_input_observers:
            seen.append((self.weight.name, x))
        w = self.weight.traced()
        b = self.bias.traced() if self.bias is not None else None
        y = F.linear(x, w, b)
        if self.lora_a is not None:
            a, bm = self.lora_a.traced(), self.lora_b.traced()
            h = F.linear(x, a)
            y = y + F.linear(h, bm) * self.lora_scale
        return y


class Embedding(Module):
    """Rows of a [num, dim] table for integer ids; `dtype` "float" or a GGUF
    block format (decoded, then gathered)."""

    def __init__(self, num, dim, name="weight", dtype="float"):
        super().__init__()
        self.weight = Parameter(name, (num, dim), dtype)

    def forward(self, ids):
        return F.embedding(ids, self.weight.traced())


class RMSNorm(Module):
    def __init__(self, dim, eps=1e-6, name="weight"):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(name, (dim,), "float")

    def forward(self, x):
        return F.rms_norm(x, self.weight.traced(), self.eps)


class RoPE(Module):
    """Rotary position embedding: mode "normal" (llama) or "neox" (Qwen,
    GPT-NeoX)."""

    def __init__(self, mode="normal", theta=10000.0, freq_scale=1.0,
                 n_rot=None, factors=()):
        super().__init__()
        self.mode, self.theta, self.freq_scale, self.n_rot = (
            mode, theta, freq_scale, n_rot)
        self.factors = tuple(factors)

    def forward(self, x, positions=None):
        return F.rope(x, self.mode, self.theta, self.freq_scale, self.n_rot,
                      positions, self.factors)


class SiLU(Module):
    def forward(self, x):
        return F.silu(x)


class GELU(Module):
    def forward(self, x):
        return F.gelu(x)


class GatedMLP(Module):
    """down(act(gate(x)) · up(x)), the gated feed-forward block; `gated` is
    the unit act(gate) · up (F.swiglu, F.geglu)."""

    gated = staticmethod(F.swiglu)

    def __init__(self, dim, hidden, names=("ffn_gate.weight", "ffn_up.weight",
                                           "ffn_down.weight"), dtype="float"):
        super().__init__()
        dt = dtype if isinstance(dtype, (tuple, list)) else (dtype,) * 3
        self.gate = Linear(dim, hidden, name=names[0], dtype=dt[0])
        self.up = Linear(dim, hidden, name=names[1], dtype=dt[1])
        self.down = Linear(hidden, dim, name=names[2], dtype=dt[2])

    def forward(self, x):
        return self.down(self.gated(self.gate(x), self.up(x)))


class SwiGLU(GatedMLP):
    """down(silu(gate(x)) · up(x)): llama's feed-forward block."""
    gated = staticmethod(F.swiglu)


class GeGLU(GatedMLP):
    """down(gelu(gate(x)) · up(x)): Gemma's feed-forward block."""
    gated = staticmethod(F.geglu)


class CausalSelfAttention(Module):
    """Multi-head causal self-attention with grouped-query heads (n_head_kv
    key/value heads shared by n_head / n_head_kv query heads each), RoPE on
    queries and keys, optional q/k/v biases (Qwen2) and per-head RMS norms of
    queries and keys (Qwen3, Gemma 3). `scale` is the score scale (default
    1/sqrt(head_dim)); `window` > 0 makes it sliding-window attention.

    While `cache` is set (qcc.kv_cache traces a decoding step), the new
    tokens attend to the cached keys and values too, at the cache's
    positions, and the cache records their keys and values."""

    def __init__(self, dim, n_head, n_head_kv=None, head_dim=None, rope=None,
                 prefix="", dtypes=None, qkv_bias=False, qk_norm=False,
                 norm_eps=1e-6, scale=None, window=0):
        super().__init__()
        self.scale, self.window = scale, window
        n_head_kv = n_head_kv or n_head
        head_dim = head_dim or dim // n_head
        self.n_head, self.n_head_kv, self.head_dim = n_head, n_head_kv, head_dim
        dt = dtypes or {}
        self.q = Linear(dim, n_head * head_dim, qkv_bias, prefix + "attn_q.weight",
                        dt.get("attn_q", "float"))
        self.k = Linear(dim, n_head_kv * head_dim, qkv_bias,
                        prefix + "attn_k.weight", dt.get("attn_k", "float"))
        self.v = Linear(dim, n_head_kv * head_dim, qkv_bias,
                        prefix + "attn_v.weight", dt.get("attn_v", "float"))
        self.o = Linear(n_head * head_dim, dim, False,
                        prefix + "attn_output.weight",
                        dt.get("attn_output", "float"))
        self.rope = rope or RoPE()
        self.q_norm = self.k_norm = None
        if qk_norm:
            self.q_norm = RMSNorm(head_dim, norm_eps, prefix + "attn_q_norm.weight")
            self.k_norm = RMSNorm(head_dim, norm_eps, prefix + "attn_k_norm.weight")
        self.cache = None

    def forward(self, x):
        b, t, _ = x.shape
        q = self.q(x).reshape(b, t, self.n_head, self.head_dim)
        k = self.k(x).reshape(b, t, self.n_head_kv, self.head_dim)
        v = self.v(x).reshape(b, t, self.n_head_kv, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.cache is None:
            q, k = self.rope(q), self.rope(k)
            o = F.attention(q, k, v, causal=True, scale=self.scale,
                            window=self.window)
        else:
            pos = self.cache.positions
            q, k = self.rope(q, pos), self.rope(k, pos)
            o = self.cache.attend(q, k, v, self.scale, self.window)
        return self.o(o.reshape(b, t, self.n_head * self.head_dim))
