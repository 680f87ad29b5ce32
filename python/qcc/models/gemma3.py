"""Gemma 3 decoders built from a GGUF file's metadata, computed as
llama.cpp computes them (src/models/gemma3.cpp), every weight bound by its
GGUF tensor name in its own format.

    cfg, model, info = gemma3.load("gemma-3-270m-q4_k_m.gguf")

What differs from llama (each read from the metadata, `gemma3.` keys):

| fact | from |
|---|---|
| embeddings scaled by sqrt(embedding_length) | llama.cpp's gemma3 graph |
| RMSNorm weights used as stored (the converter already added Gemma's +1) | |
| per-head RMSNorm of q and k (attn_q_norm, attn_k_norm) before RoPE | tensors |
| post-attention and post-FFN RMSNorms (post_attention_norm, post_ffw_norm) | tensors |
| gated FFN with GELU (tanh form): down(gelu(gate) · up) | |
| sliding-window layers: il % pattern < pattern - 1, window attention.sliding_window | attention.sliding_window_pattern (default 6) |
| RoPE NeoX; global layers rope.freq_base (and rope.scaling), windowed layers rope.freq_base_swa (default 10000, scale 1) | |
| score scale 1/sqrt(key_length) (27B: 1/sqrt(embedding_length / head_count)) | |
| output tied to token_embd unless output.weight exists; final_logit_softcapping if given | |
"""

import math
from dataclasses import dataclass, field

from .. import functional as F
from .. import nn
from .llama import ModelError, _dtype, read_gguf


@dataclass
class Gemma3Config:
    arch: str
    n_layer: int
    d_model: int
    d_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    vocab: int
    norm_eps: float
    rope_theta: float
    rope_freq_scale: float
    rope_theta_swa: float
    window: int
    swa_layers: tuple
    attn_scale: float
    softcap: float = 0.0
    context_length: int = 0
    tied: bool = True
    name: str = ""
    rope_mode: str = "neox"
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_gguf(cls, info):
        m, path = info.metadata, info.path
        arch = m.get("general.architecture")
        if arch != "gemma3":
            raise ModelError(f"{path}: architecture '{arch}' is not gemma3")

        def get(key, default=None, required=False):
            v = m.get(f"{arch}.{key}", default)
            if v is None and required:
                raise ModelError(f"{path}: missing metadata key '{arch}.{key}' "
                                 f"(required for {arch} models)")
            return v

        def one(key, v):
            if isinstance(v, list):
                if len(set(v)) != 1:
                    raise ModelError(f"{path}: '{arch}.{key}' differs between "
                                     "layers, which qcc does not support")
                v = v[0]
            return v

        n_layer = int(get("block_count", required=True))
        d = int(get("embedding_length", required=True))
        d_ff = int(one("feed_forward_length", get("feed_forward_length", required=True)))
        n_head = int(one("attention.head_count", get("attention.head_count", required=True)))
        n_head_kv = int(one("attention.head_count_kv",
                            get("attention.head_count_kv", n_head)))
        head_dim = int(get("attention.key_length", d // n_head))
        if int(get("attention.value_length", head_dim)) != head_dim:
            raise ModelError(f"{path}: key and value head sizes differ, which "
                             "qcc does not support")
        if n_head % n_head_kv:
            raise ModelError(f"{path}: {n_head} heads are not a multiple of "
                             f"{n_head_kv} key/value heads")
        eps = float(get("attention.layer_norm_rms_epsilon", required=True))
        window = int(get("attention.sliding_window", 0) or 0)
        swa = ()
        if window > 0:
            pattern = get("attention.sliding_window_pattern", 6)
            if isinstance(pattern, list):
                if len(pattern) != n_layer:
                    raise ModelError(f"{path}: '{arch}.attention.sliding_window_"
                                     f"pattern' has {len(pattern)} entries for "
                                     f"{n_layer} layers")
                swa = tuple(i for i, p in enumerate(pattern) if p)
            else:
                pattern = int(pattern)
                swa = tuple(i for i in range(n_layer)
                            if pattern == 0 or i % pattern < pattern - 1)
        scaling = get("rope.scaling.type", "none")
        freq_scale = 1.0
        if scaling == "linear":
            freq_scale = 1.0 / float(get("rope.scaling.factor", 1.0))
        elif scaling not in ("none", None):
            raise ModelError(f"{path}: RoPE scaling '{scaling}' "
                             f"('{arch}.rope.scaling.type') is not supported "
                             "(none, linear)")
        big = n_layer == 62  # llama.cpp's LLM_TYPE_27B
        scale = 1.0 / math.sqrt(d / n_head if big else head_dim)
        emb = info.tensor_shapes.get("token_embd.weight")
        if emb is None:
            raise ModelError(f"{path}: missing tensor 'token_embd.weight'")
        toks = m.get("tokenizer.ggml.tokens")
        vocab = int(get("vocab_size", len(toks) if toks else emb[0]))
        cfg = cls(arch=arch, n_layer=n_layer, d_model=d, d_ff=d_ff,
                  n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim,
                  vocab=vocab, norm_eps=eps,
                  rope_theta=float(get("rope.freq_base", 10000.0)),
                  rope_freq_scale=freq_scale,
                  rope_theta_swa=float(get("rope.freq_base_swa", 10000.0)),
                  window=window, swa_layers=swa, attn_scale=scale,
                  softcap=float(get("final_logit_softcapping", 0.0) or 0.0),
                  context_length=int(get("context_length", 0) or 0),
                  tied="output.weight" not in info.tensor_types,
                  name=str(m.get("general.name", "")))
        cfg.check_tensors(info)
        return cfg

    def expected_tensors(self):
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
            t[p + "attn_q_norm.weight"] = (hd,)
            t[p + "attn_k_norm.weight"] = (hd,)
            t[p + "attn_output.weight"] = (d, self.n_head * hd)
            t[p + "post_attention_norm.weight"] = (d,)
            t[p + "ffn_norm.weight"] = (d,)
            t[p + "ffn_gate.weight"] = (self.d_ff, d)
            t[p + "ffn_up.weight"] = (self.d_ff, d)
            t[p + "ffn_down.weight"] = (d, self.d_ff)
            t[p + "post_ffw_norm.weight"] = (d,)
        return t

    def check_tensors(self, info):
        from .llama import LlamaConfig
        LlamaConfig.check_tensors(self, info)

    def num_parameters(self):
        n = 0
        for shape in self.expected_tensors().values():
            n += math.prod(shape)
        return n


class Block(nn.Module):
    def __init__(self, cfg, i, types):
        super().__init__()
        p = f"blk.{i}."
        swa = i in cfg.swa_layers
        rope = nn.RoPE("neox", cfg.rope_theta_swa if swa else cfg.rope_theta,
                       1.0 if swa else cfg.rope_freq_scale, cfg.head_dim)
        eps = cfg.norm_eps
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps, p + "attn_norm.weight")
        self.attn = nn.CausalSelfAttention(
            cfg.d_model, cfg.n_head, cfg.n_head_kv, cfg.head_dim, rope, p,
            {k: _dtype(types[p + k + ".weight"])
             for k in ("attn_q", "attn_k", "attn_v", "attn_output")},
            qk_norm=True, norm_eps=eps, scale=cfg.attn_scale,
            window=cfg.window if swa else 0)
        self.post_attn_norm = nn.RMSNorm(cfg.d_model, eps,
                                         p + "post_attention_norm.weight")
        self.ffn_norm = nn.RMSNorm(cfg.d_model, eps, p + "ffn_norm.weight")
        self.ffn = nn.GeGLU(cfg.d_model, cfg.d_ff,
                            (p + "ffn_gate.weight", p + "ffn_up.weight",
                             p + "ffn_down.weight"),
                            tuple(_dtype(types[p + n]) for n in
                                  ("ffn_gate.weight", "ffn_up.weight",
                                   "ffn_down.weight")))
        self.post_ffn_norm = nn.RMSNorm(cfg.d_model, eps, p + "post_ffw_norm.weight")

    def forward(self, h):
        h = h + self.post_attn_norm(self.attn(self.attn_norm(h)))
        return h + self.post_ffn_norm(self.ffn(self.ffn_norm(h)))


class Gemma3(nn.Module):
    """A Gemma 3 decoder: tokens [B, T] (i32) -> logits [B, T, V]."""

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
        h = self.token_embd(tokens) * math.sqrt(self.cfg.d_model)
        for block in self.blocks:
            h = block(h)
        return self.output_norm(h)

    def head(self):
        """(output projection Parameter, logit softcap) of the LM head."""
        w = self.output.weight if self.output is not None else self.token_embd.weight
        return w, self.cfg.softcap

    def forward(self, tokens):
        h = self.hidden(tokens)
        if self.output is not None:
            y = self.output(h)
        else:
            y = F.linear(h, self.token_embd.weight.traced())
        if self.cfg.softcap:
            c = self.cfg.softcap
            y = F.tanh(y * (1.0 / c)) * c
        return y


def load(path):
    """(config, model, info) of the Gemma 3 GGUF model at `path`."""
    info = read_gguf(path)
    cfg = Gemma3Config.from_gguf(info)
    return cfg, Gemma3(cfg, info.tensor_types), info
