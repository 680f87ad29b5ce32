"""Llama-family decoders (llama, mistral, qwen2, qwen3) built from a GGUF
file's metadata, with every weight bound by its GGUF tensor name and kept
in its own format (quantized weights stay quantized).

    info = read_gguf("model.gguf")          # metadata + tensor table
    cfg = LlamaConfig.from_gguf(info)       # sizes, heads, RoPE, eps, ...
    model = Llama(cfg, info.tensor_types)   # nn.Module
    with qcc.Graph():
        logits = model(tokens)              # tokens: i32 [B, T]

What is read (`ARCH` the value of general.architecture):

| key | use |
|---|---|
| ARCH.block_count, ARCH.embedding_length, ARCH.feed_forward_length, ARCH.attention.head_count | required |
| ARCH.attention.head_count_kv | grouped-query heads (default: head_count) |
| ARCH.attention.key_length / value_length | head size (default: embedding_length / head_count) |
| ARCH.attention.layer_norm_rms_epsilon | RMSNorm epsilon (required) |
| ARCH.rope.freq_base, ARCH.rope.dimension_count | RoPE theta (default 10000) and rotated dimensions (default: head size) |
| ARCH.rope.scaling.type / .factor | "none" or "linear" (positions divided by the factor) |
| rope_freqs.weight (tensor, F32 [n_rot/2]) | llama 3 frequency scaling: pair i's frequency divided by factor i (llama.cpp's freq_factors) |
| ARCH.vocab_size, tokenizer.ggml.tokens | vocabulary size (else token_embd's rows) |

RoPE follows llama.cpp: "normal" (pairs 2i, 2i+1) for llama and mistral,
NeoX-style (pairs i, i + n/2) for qwen2 and qwen3. Without output.weight
the output projection is tied to token_embd.weight. qwen2's q/k/v biases
and qwen3's per-head q/k norms are used when their tensors are present.
"""

import math
import os
from dataclasses import dataclass, field

from .. import functional as F
from .. import ir, nn


ROPE_MODES = {"llama": "normal", "mistral": "normal", "qwen2": "neox",
              "qwen3": "neox"}


class ModelError(Exception):
    """A model qcc cannot train: the message names what is missing or
    unsupported."""


def format_name(ggml_type_name):
    """GGUF type name (gguf package: "Q4_K", "IQ2_XS", "F32") -> qcc's."""
    n = ggml_type_name.lower()
    if n.endswith("_k"):
        n = n[:-2] + "_K"
    return n


@dataclass
class GGUFInfo:
    path: str
    metadata: dict
    tensor_types: dict      # name -> qcc format name
    tensor_shapes: dict     # name -> MLIR shape (ne reversed)
    reader: object = None


def read_gguf(path):
    """Metadata and tensor table of a GGUF file (qcc.gguf_header). Raises
    ModelError for a missing or malformed file."""
    if not os.path.exists(path):
        raise ModelError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelError(f"{path}: is a directory, not a GGUF file")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ModelError(f"{path}: cannot read: {e.strerror}") from None
    if magic != b"GGUF":
        raise ModelError(f"{path}: not a GGUF file (magic {magic!r}, "
                         "expected b'GGUF')")
    from ..gguf_header import HeaderError, read_header
    try:
        meta, tensors, _ = read_header(path)
    except HeaderError as e:
        raise ModelError(f"{path}: malformed GGUF: {e}") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read: {e.strerror}") from None
    types, shapes = {}, {}
    for name, type_name, ne, _ in tensors:
        types[name] = format_name(type_name)
        shapes[name] = tuple(int(d) for d in reversed(ne))
    return GGUFInfo(path, meta, types, shapes)


def read_rope_factors(info, n_rot):
    """Llama 3's RoPE frequency scaling as GGUF stores it: `rope_freqs.weight`,
    one F32 factor per rotated pair, dividing that pair's frequency (the
    converter computes them from rope_scaling's low/high frequency factors;
    llama.cpp passes them to ggml_rope_ext). () when the model has none."""
    if "rope_freqs.weight" not in info.tensor_types:
        return ()
    path = info.path
    shape = tuple(info.tensor_shapes["rope_freqs.weight"])
    if shape != (n_rot // 2,):
        raise ModelError(f"{path}: tensor 'rope_freqs.weight' has shape "
                         f"{list(shape)}; {n_rot} rotated dimensions need "
                         f"[{n_rot // 2}]")
    from ..gguf_header import HeaderError, read_f32_tensor
    try:
        values = read_f32_tensor(path, "rope_freqs.weight")
    except HeaderError as e:
        raise ModelError(f"{path}: {e}") from None
    if not all(math.isfinite(v) and v > 0 for v in values.tolist()):
        raise ModelError(f"{path}: tensor 'rope_freqs.weight' holds a factor "
                         "that is not a positive finite number")
    return tuple(float(v) for v in values)


@dataclass
class LlamaConfig:
    arch: str
    n_layer: int
    d_model: int
    d_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    vocab: int
    norm_eps: float
    rope_mode: str
    rope_theta: float = 10000.0
    rope_freq_scale: float = 1.0
    n_rot: int = 0
    rope_freq_factors: tuple = ()
    context_length: int = 0
    tied: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False
    name: str = ""
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_gguf(cls, info):
        m, path = info.metadata, info.path
        arch = m.get("general.architecture")
        if arch is None:
            raise ModelError(f"{path}: no general.architecture in the metadata")
        if arch not in ROPE_MODES:
            raise ModelError(
                f"{path}: architecture '{arch}' is not supported (qcc-train "
                f"supports {', '.join(sorted(ROPE_MODES))})")

        def get(key, default=None, required=False):
            v = m.get(f"{arch}.{key}", default)
            if v is None and required:
                raise ModelError(f"{path}: missing metadata key '{arch}.{key}' "
                                 f"(required for {arch} models)")
            if isinstance(v, list):
                if len(set(v)) != 1:
                    raise ModelError(f"{path}: '{arch}.{key}' differs between "
                                     "layers, which qcc does not support")
                v = v[0]
            return v

        n_layer = int(get("block_count", required=True))
        d = int(get("embedding_length", required=True))
        d_ff = int(get("feed_forward_length", required=True))
        n_head = int(get("attention.head_count", required=True))
        n_head_kv = int(get("attention.head_count_kv", n_head))
        eps = get("attention.layer_norm_rms_epsilon", required=True)
        head_dim = int(get("attention.key_length", d // n_head))
        if int(get("attention.value_length", head_dim)) != head_dim:
            raise ModelError(f"{path}: key and value head sizes differ, which "
                             "qcc does not support")
        if n_head % n_head_kv:
            raise ModelError(f"{path}: {n_head} heads are not a multiple of "
                             f"{n_head_kv} key/value heads")
        if get("expert_count", 0):
            raise ModelError(f"{path}: mixture-of-experts models "
                             f"('{arch}.expert_count') are not supported")
        scaling = get("rope.scaling.type", "none")
        freq_scale = 1.0
        if scaling == "linear":
            freq_scale = 1.0 / float(get("rope.scaling.factor", 1.0))
        elif scaling not in ("none", None):
            raise ModelError(f"{path}: RoPE scaling '{scaling}' "
                             f"('{arch}.rope.scaling.type') is not supported "
                             "(none, linear)")
        n_rot = int(get("rope.dimension_count", head_dim))
        factors = read_rope_factors(info, n_rot)
        vocab = get("vocab_size")
        if vocab is None:
            toks = m.get("tokenizer.ggml.tokens")
            vocab = len(toks) if toks else None
        emb = info.tensor_shapes.get("token_embd.weight")
        if emb is None:
            raise ModelError(f"{path}: missing tensor 'token_embd.weight'")
        vocab = int(vocab or emb[0])
        cfg = cls(arch=arch, n_layer=n_layer, d_model=d, d_ff=d_ff,
                  n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim,
                  vocab=vocab, norm_eps=float(eps), rope_mode=ROPE_MODES[arch],
                  rope_theta=float(get("rope.freq_base", 10000.0)),
                  rope_freq_scale=freq_scale,
                  n_rot=n_rot, rope_freq_factors=factors,
                  context_length=int(get("context_length", 0) or 0),
                  tied="output.weight" not in info.tensor_types,
                  qkv_bias="blk.0.attn_q.bias" in info.tensor_types,
                  qk_norm="blk.0.attn_q_norm.weight" in info.tensor_types,
                  name=str(m.get("general.name", "")))
        cfg.check_tensors(info)
        return cfg

    def expected_tensors(self):
        """name -> MLIR shape of every tensor the model reads."""
        d, hd = self.d_model, self.head_dim
        t = {"token_embd.weight": (self.vocab, d), "output_norm.weight": (d,)}
        if not self.tied:
            t["output.weight"] = (self.vocab, d)
        for i in range(self.n_layer):
            p = f"blk.{i}."
            t[p + "attn_norm.weight"] = (d,)
            t[p + "attn_q.weight"] = (self.n_head * hd, d)
            t[p + "attn_k.weight"] = (self.n_head_kv * hd, d)
            t[p + "attn_v.weight"] = (self.n_head_kv * hd, d)
            t[p + "attn_output.weight"] = (d, self.n_head * hd)
            if self.qkv_bias:
                t[p + "attn_q.bias"] = (self.n_head * hd,)
                t[p + "attn_k.bias"] = (self.n_head_kv * hd,)
                t[p + "attn_v.bias"] = (self.n_head_kv * hd,)
            if self.qk_norm:
                t[p + "attn_q_norm.weight"] = (hd,)
                t[p + "attn_k_norm.weight"] = (hd,)
            t[p + "ffn_norm.weight"] = (d,)
            t[p + "ffn_gate.weight"] = (self.d_ff, d)
            t[p + "ffn_up.weight"] = (self.d_ff, d)
            t[p + "ffn_down.weight"] = (d, self.d_ff)
        return t

    def check_tensors(self, info):
        for name, shape in self.expected_tensors().items():
            have = info.tensor_shapes.get(name)
            if have is None:
                raise ModelError(f"{info.path}: missing tensor '{name}' "
                                 f"({self.arch}, {self.n_layer} layers)")
            if tuple(have) != tuple(shape):
                raise ModelError(
                    f"{info.path}: tensor '{name}' has shape {list(have)}; the "
                    f"metadata implies {list(shape)}")
            fmt = info.tensor_types[name]
            if len(shape) == 1 and fmt != "f32":
                raise ModelError(f"{info.path}: 1-D tensor '{name}' is {fmt}; "
                                 "qcc trains 1-D tensors stored as f32")

    def num_parameters(self):
        n = 0
        for shape in self.expected_tensors().values():
            k = 1
            for s in shape:
                k *= s
            n += k
        return n


def _dtype(fmt):
    return "float" if fmt == "f32" else fmt


class Block(nn.Module):
    def __init__(self, cfg, i, types):
        super().__init__()
        p = f"blk.{i}."
        rope = nn.RoPE(cfg.rope_mode, cfg.rope_theta, cfg.rope_freq_scale,
                       cfg.n_rot, cfg.rope_freq_factors)
        self.attn_norm = nn.RMSNorm(cfg.d_model, cfg.norm_eps, p + "attn_norm.weight")
        self.attn = nn.CausalSelfAttention(
            cfg.d_model, cfg.n_head, cfg.n_head_kv, cfg.head_dim, rope, p,
            {k: _dtype(types[p + k + ".weight"])
             for k in ("attn_q", "attn_k", "attn_v", "attn_output")},
            qkv_bias=cfg.qkv_bias, qk_norm=cfg.qk_norm, norm_eps=cfg.norm_eps)
        self.ffn_norm = nn.RMSNorm(cfg.d_model, cfg.norm_eps, p + "ffn_norm.weight")
        self.ffn = nn.SwiGLU(cfg.d_model, cfg.d_ff,
                             (p + "ffn_gate.weight", p + "ffn_up.weight",
                              p + "ffn_down.weight"),
                             tuple(_dtype(types[p + n]) for n in
                                   ("ffn_gate.weight", "ffn_up.weight",
                                    "ffn_down.weight")))

    def forward(self, h):
        h = h + self.attn(self.attn_norm(h))
        return h + self.ffn(self.ffn_norm(h))


class Llama(nn.Module):
    """A llama-family decoder: tokens [B, T] (i32) -> logits [B, T, V]."""

    def __init__(self, cfg, types):
        super().__init__()
        self.cfg = cfg
        self.token_embd = nn.Embedding(cfg.vocab, cfg.d_model, "token_embd.weight",
                                       _dtype(types["token_embd.weight"]))
        self.blocks = nn.ModuleList(Block(cfg, i, types) for i in range(cfg.n_layer))
        self.output_norm = nn.RMSNorm(cfg.d_model, cfg.norm_eps, "output_norm.weight")
        self.output = None
        if not cfg.tied:
            self.output = nn.Linear(cfg.d_model, cfg.vocab, name="output.weight",
                                    dtype=_dtype(types["output.weight"]))

    def linear_layers(self):
        """(GGUF suffix, Linear) of every projection, e.g. ("attn_q", ...)."""
        for b in self.blocks:
            for key, lin in (("attn_q", b.attn.q), ("attn_k", b.attn.k),
                             ("attn_v", b.attn.v), ("attn_output", b.attn.o),
                             ("ffn_gate", b.ffn.gate), ("ffn_up", b.ffn.up),
                             ("ffn_down", b.ffn.down)):
                yield key, lin
        if self.output is not None:
            yield "output", self.output

    def hidden(self, tokens):
        """The final normed hidden states [B, T, D] that the head reads."""
        h = self.token_embd(tokens)
        for block in self.blocks:
            h = block(h)
        return self.output_norm(h)

    def head(self):
        """(output projection Parameter, logit softcap) of the LM head."""
        w = self.output.weight if self.output is not None else self.token_embd.weight
        return w, 0.0

    def forward(self, tokens):
        h = self.hidden(tokens)
        if self.output is not None:
            return self.output(h)
        return F.linear(h, self.token_embd.weight.traced())


def load(path):
    """(config, model, info) of the llama-family GGUF model at `path`."""
    info = read_gguf(path)
    cfg = LlamaConfig.from_gguf(info)
    return cfg, Llama(cfg, info.tensor_types), info
