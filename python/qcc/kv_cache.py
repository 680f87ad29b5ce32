"""A KV cache for decoding: each new token runs the model once, attending to
the keys and values of the tokens before it instead of recomputing them.

    text = kv_cache.build_decode(model, length=512)
    with Session(compile(text), model_path, "decode") as s:
        dec = kv_cache.Decoder(s, model, length=512)
        logits = dec.feed(token_id)         # [V] after that token

A prompt runs through a second entry of the same module, "prefill"
(build_decode(..., prefill=C), Decoder(..., prefill=(session, C)),
Decoder.feed_prompt): C tokens per call instead of one.

The compiled step `decode(tokens [1, C], positions [C], last [1], one mask
[C, L + C] per attention window, and per layer its cache k/v [1, L, Hkv, D])
-> logits [1, V] of row `last`, and per layer the new tokens' keys and
values [1, C, Hkv, D]`. Every CausalSelfAttention of the model is traced
with a LayerCache (nn.CausalSelfAttention.cache): queries and keys are
rotated at the given absolute positions, and the new tokens attend to the
L cached slots and to each other through an additive mask.

The cache is a ring of L slots (Decoder): the token at position p goes to
slot p mod L, and a query at position p sees the keys at positions
p - L < q <= p (and p - window < q on sliding-window layers), so every
prediction sees the last L tokens. Until the ring wraps that is exactly a
forward pass over the tokens so far; after it, a cached token's keys and
values are the ones computed when it came (with the context it had then),
as in llama.cpp's cache, where a forward pass over the window would
recompute them from the window alone (the same only for one layer: RoPE
makes the scores depend on relative positions only)."""

import numpy as np

from . import emit, ir
from . import functional as F
from . import nn

# An additive score that drops a key: exp underflows to exactly 0 and,
# unlike -inf, it cannot turn a max-subtraction into NaN.
DROP = -1e30


class LayerCache:
    """The cache inputs and outputs of one attention layer while tracing."""

    def __init__(self, graph, prefix, length, n_kv, head_dim, positions, mask):
        self.prefix, self.positions, self.mask = prefix, positions, mask
        self.k = graph.input(prefix + "k_cache", (1, length, n_kv, head_dim))
        self.v = graph.input(prefix + "v_cache", (1, length, n_kv, head_dim))
        self.k_new = self.v_new = None

    def attend(self, q, k, v, scale, window):
        del window  # in the mask
        self.k_new, self.v_new = k, v
        keys = ir.concat([self.k, k], axis=1)
        values = ir.concat([self.v, v], axis=1)
        return F.attention(q, keys, values, causal=False, scale=scale,
                           mask=self.mask)


def attention_layers(model):
    """(prefix, CausalSelfAttention) of every attention layer, in order;
    the prefix is that of its GGUF tensors, e.g. "blk.3."."""
    out = []
    for m in model.modules():
        if isinstance(m, nn.CausalSelfAttention):
            out.append((m.q.weight.name[: -len("attn_q.weight")], m))
    return out


def mask_name(window):
    return "mask" if not window else f"mask.window{window}"


def build_decode(model, length, chunk=1, entry="decode", prefill=0):
    """MLIR text of the decoding step over a cache of `length` slots, for
    `chunk` new tokens per call (weights frozen); with `prefill` > 0 the
    module also has the entry "prefill", the same step for `prefill` tokens
    per call (a prompt's tokens in one pass each chunk)."""
    if not 0 < chunk <= length or not 0 <= prefill <= length:
        raise ValueError(f"kv_cache: steps of {chunk} and {prefill} tokens do "
                         f"not fit a cache of {length}")
    functions = [_decode_function(model, length, chunk, entry)]
    if prefill:
        functions.append(_decode_function(model, length, prefill, "prefill"))
    return emit.module(functions)


def _decode_function(model, length, chunk, entry):
    from .train import head_logits
    layers = attention_layers(model)
    if not layers:
        raise ValueError("kv_cache: the model has no attention layers")
    with ir.Graph("f32") as g:
        tokens = g.input("tokens", (1, chunk), "i32")
        positions = g.input("positions", (chunk,), "i32")
        last = g.input("last", (1,), "i32")
        masks = {}
        for prefix, attn in layers:
            w = attn.window
            if w not in masks:
                masks[w] = g.input(mask_name(w), (chunk, length + chunk))
            attn.cache = LayerCache(g, prefix, length, attn.n_head_kv,
                                    attn.head_dim, positions, masks[w])
        try:
            h = model.hidden(tokens)
            row = ir.gather(ir.reshape(h, (chunk, h.shape[-1])), last)
            outs = [(head_logits(model, row), "logits")]
            for prefix, attn in layers:
                outs += [(attn.cache.k_new, prefix + "k_new"),
                         (attn.cache.v_new, prefix + "v_new")]
        finally:
            for _, attn in layers:
                attn.cache = None
        return emit.Function(entry, outs, graph=g)


class Decoder:
    """Feeds tokens through a bound decoding step (build_decode with the
    same model, length and chunk) and keeps the ring of cached keys and
    values. `prefill` (a session bound to the module's "prefill" entry, and
    its chunk) lets feed_prompt run a prompt that many tokens at a time."""

    def __init__(self, session, model, length, chunk=1, prefill=None):
        self.s, self.length, self.chunk = session, length, chunk
        self.prefill = prefill
        self.layers = attention_layers(model)
        self.windows = sorted({a.window for _, a in self.layers})
        self.vocab = model.head()[0].shape[0]
        self.k = {p: np.zeros((1, length, a.n_head_kv, a.head_dim), np.float32)
                  for p, a in self.layers}
        self.v = {p: np.zeros_like(self.k[p]) for p, _ in self.layers}
        self.slot_pos = np.full(length, -1, np.int64)  # -1: empty
        self.next = 0  # the position of the next token

    def masks(self, n, chunk=None):
        """{window: [chunk, L + chunk] additive mask} for n new tokens at
        positions next .. next + n - 1 (rows and keys past n unused)."""
        chunk = chunk or self.chunk
        pos = self.next + np.arange(chunk)
        new = np.where(np.arange(chunk) < n, pos, -1)
        kpos = np.concatenate([self.slot_pos, new])
        d = pos[:, None] - kpos[None, :]
        seen = (kpos[None, :] >= 0) & (d >= 0) & (d < self.length)
        return {w: np.where(seen & (d < w) if w else seen, 0.0,
                            DROP).astype(np.float32) for w in self.windows}

    def feed(self, ids):
        """Runs the tokens `ids` (at most `chunk`; one int is one token) at
        the next positions and caches them; returns the logits [V] after
        the last one."""
        ids = [ids] if isinstance(ids, (int, np.integer)) else list(ids)
        return self._run(self.s, self.chunk, ids)

    def feed_prompt(self, ids):
        """Runs any number of tokens, through the prefill step in chunks of
        its size where there is one (the rest token by token otherwise);
        returns the logits [V] after the last one."""
        ids = list(ids)
        if not ids:
            raise ValueError("Decoder.feed_prompt: no tokens")
        session, chunk = self.prefill or (self.s, self.chunk)
        logits = None
        for i in range(0, len(ids), chunk):
            logits = self._run(session, chunk, ids[i:i + chunk])
        return logits

    def _run(self, s, chunk, ids):
        n = len(ids)
        if not 0 < n <= chunk:
            raise ValueError(f"Decoder.feed: {n} tokens for a step of {chunk}")
        x = np.zeros((1, chunk), np.int32)
        x[0, :n] = ids
        pos = (self.next + np.arange(chunk)).astype(np.int32)
        s.set_input("tokens", x)
        s.set_input("positions", pos)
        s.set_input("last", np.array([n - 1], np.int32))
        for w, m in self.masks(n, chunk).items():
            s.set_input(mask_name(w), m)
        for p, _ in self.layers:
            s.set_input(p + "k_cache", self.k[p])
            s.set_input(p + "v_cache", self.v[p])
        s.run()
        slots = (self.next + np.arange(n)) % self.length
        for p, _ in self.layers:
            kv = self.k[p].shape[2:]
            k = s.result(p + "k_new", np.float32, (1, chunk) + kv)
            v = s.result(p + "v_new", np.float32, (1, chunk) + kv)
            self.k[p][0, slots] = k[0, :n]
            self.v[p][0, slots] = v[0, :n]
        self.slot_pos[slots] = self.next + np.arange(n)
        self.next += n
        return s.result("logits", np.float32, (self.vocab,))
