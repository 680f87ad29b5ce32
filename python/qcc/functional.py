"""Functional ops on traced tensors (the `torch.nn.functional` of qcc).

Everything here composes the primitives of `qcc.ir`, so autodiff needs no
rule of its own for it. Shapes follow PyTorch: features last, a batch of
sequences as [B, T, ...]."""

import math

from . import ir
from .ir import (concat, dequant, einsum, gather, logsumexp, matmul,  # noqa: F401
                 one_hot, permute, reshape, softmax, stop_gradient)

ir.internal_module(__file__)


def silu(x):
    return ir.unary("silu", x)


def gelu(x):
    """GELU, tanh approximation (GPT-2's and ggml's gelu)."""
    return ir.unary("gelu", x)


def sigmoid(x):
    return ir.unary("sigmoid", x)


def tanh(x):
    return ir.unary("tanh", x)


def exp(x):
    return ir.unary("exp", x)


def log(x):
    return ir.unary("log", x)


def swiglu(gate, up):
    """silu(gate) · up: the gated unit of a SwiGLU MLP. The backward
    recomputes silu(gate) and the product from gate and up (which it keeps
    anyway) rather than keeping two more [tokens, d_ff] tensors."""
    return ir.recompute(ir.recompute(silu(gate)) * up)


def linear(x, weight, bias=None):
    """y = x · Wᵀ (+ b) for W [out, in] in GGUF's layout. A quantized W
    goes through its blocks (qcc.qmatmul); a float W is a GEMM."""
    k = weight.shape[1]
    if x.shape[-1] != k:
        raise ValueError(f"linear: input has {x.shape[-1]} features, weight "
                         f"{list(weight.shape)} takes {k}")
    lead = x.shape[:-1]
    x2 = reshape(x, (-1, k))
    if weight.quantized:
        y = ir.qlinear(x2, weight)
    else:
        y = einsum("mk,nk->mn", x2, weight)
    y = reshape(y, lead + (weight.shape[0],))
    if bias is not None:
        y = y + bias
    return y


def embedding(ids, table):
    """Rows of `table` [V, D] for integer `ids` of any shape; of a quantized
    table only the picked rows are decoded (qcc.gather)."""
    flat = reshape(ids, (-1,))
    return reshape(gather(table, flat), ids.shape + (table.shape[1],))


def rms_norm(x, weight=None, eps=1e-6):
    """x / sqrt(mean(x², last axis) + eps) (· weight). The backward keeps
    x and the per-row scale and recomputes the normalized values from them
    (ir.recompute) instead of keeping them too."""
    ms = (x * x).mean(-1, keepdims=True)
    y = ir.recompute(x * (ms + eps).rsqrt())
    return ir.recompute(y * weight) if weight is not None else y


def log_softmax(x):
    return x - reshape(logsumexp(x), x.shape[:-1] + (1,))


def cross_entropy(logits, targets):
    """Mean negative log-likelihood (nats) of integer `targets` under
    `logits` [..., V]."""
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"cross_entropy: logits {list(logits.shape)} and "
                         f"targets {list(targets.shape)} disagree")
    nll = logsumexp(logits) - ir.take_last(logits, targets)
    return nll.mean()


def rope(x, mode="normal", theta=10000.0, freq_scale=1.0, n_rot=None,
         positions=None, factors=()):
    """Rotary position embedding of x [B, T, H, D] (see qcc.ir.rope):
    "normal" is llama's (pairs 2i, 2i+1), "neox" GPT-NeoX's and Qwen's
    (pairs i, i + D/2); at positions 0..T-1, or `positions` [T] (i32);
    `factors` divide each pair's frequency (llama 3's rope_freqs)."""
    return ir.rope(x, mode, theta, freq_scale, 1.0, n_rot, positions, factors)


def geglu(gate, up):
    """gelu(gate) · up: the gated unit of Gemma's MLP (GELU, tanh form),
    recomputed in the backward like swiglu's."""
    return ir.recompute(ir.recompute(gelu(gate)) * up)


# Attention without a mask runs as ir.flash_attention (tiles of keys, an
# online softmax); False builds the whole [T, S] scores (tests compare both).
TILED_ATTENTION = True


def attention(q, k, v, causal=True, scale=None, window=0, mask=None):
    """Scaled dot-product attention with grouped-query heads.
    q [B, T, Hq, D], k and v [B, S, Hkv, D] with Hq a multiple of Hkv; query
    head h reads key/value head h // (Hq / Hkv) (llama.cpp's grouping).
    `causal` (S = T): query i sees keys j <= i, and with `window` > 0 only
    i - window < j (sliding-window layers). `mask` [T, S] is added to the
    scores instead (0 to keep, a large negative to drop: a KV-cache step).
    Returns [B, T, Hq, D]."""
    b, t, hq, d = q.shape
    hkv = k.shape[2]
    keys = k.shape[1] if mask is not None and not causal else t
    if mask is not None and (causal or mask.shape != (t, keys)):
        raise ValueError(f"attention: a mask {list(mask.shape)} needs "
                         f"causal=False and [T, S] = {[t, keys]}")
    if hq % hkv or k.shape != v.shape or k.shape[:2] != (b, keys) or k.shape[3] != d:
        raise ValueError(f"attention: q {list(q.shape)}, k {list(k.shape)}, "
                         f"v {list(v.shape)} do not fit")
    grp = hq // hkv
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    if mask is None and TILED_ATTENTION:
        # Query heads of a group interleaved as rows: [B, Hkv, T·G, D].
        qr = reshape(permute(reshape(q, (b, t, hkv, grp, d)), (0, 2, 1, 3, 4)),
                     (b, hkv, t * grp, d))
        o = ir.flash_attention(qr, permute(k, (0, 2, 1, 3)), permute(v, (0, 2, 1, 3)),
                               grp, scale, causal, window)
        return reshape(permute(reshape(o, (b, hkv, t, grp, d)), (0, 2, 1, 3, 4)),
                       (b, t, hq, d))
    q5 = permute(reshape(q, (b, t, hkv, grp, d)), (0, 2, 3, 1, 4))
    k4 = permute(k, (0, 2, 1, 3))
    v4 = permute(v, (0, 2, 1, 3))
    s = einsum("bhgid,bhjd->bhgij", q5, k4) * scale
    if mask is not None:
        s = s + mask
    p = softmax(s, causal=causal, window=window)
    o = einsum("bhgij,bhjd->bhgid", p, v4)
    return reshape(permute(o, (0, 3, 1, 2, 4)), (b, t, hq, d))
