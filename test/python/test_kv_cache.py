"""qcc.kv_cache: a decoding step with a KV cache gives, token after token,
the logits that a forward pass over the tokens so far gives (the
independent reference: train.build_next_logits, no cache, positions from
0), on sliding-window layers whose window is smaller than the cache too;
and after the ring of L slots has wrapped, for one layer (where cached keys
do not depend on older context), those of a forward pass over the last L
tokens."""

import copy

import numpy as np
import pytest

from qcc import kv_cache, models, train
from qcc.compiler import compile_mlir
from qcc.models import gemma3
from qcc.models.tiny import make_model
from qcc.runtime import Session
from qcc.tokenizer import for_model

# f32 sums in another order, and RoPE at absolute rather than window-relative
# positions (the angles' rounding differs): a few ulps of the logits' scale.
RTOL = 2e-4


def _compare(path, model, length, ids):
    """Feeds ids through the cache; after each, the logits against the
    forward pass over the window of the last `length` tokens."""
    dec_so, _ = compile_mlir(kv_cache.build_decode(model, length), ["-O1"])
    ref_so, _ = compile_mlir(train.build_next_logits(model, length), ["-O1"])
    worst = 0.0
    with Session(dec_so, path, "decode") as s, \
            Session(ref_so, path, "next_logits") as r:
        dec = kv_cache.Decoder(s, model, length)
        for n in range(1, len(ids) + 1):
            got = dec.feed(ids[n - 1])
            window = ids[max(0, n - length):n]
            x = np.zeros((1, length), np.int32)
            x[0, :len(window)] = window
            r.set_input("tokens", x)
            r.set_input("last", np.array([len(window) - 1], np.int32))
            r.run()
            want = r.result("logits", np.float32, got.shape)
            scale = float(np.abs(want).max())
            err = float(np.abs(got - want).max()) / scale
            assert err < RTOL, f"token {n}: max error {err:.2e} of {scale:.3g}"
            worst = max(worst, err)
    return worst


def _compare_prefill(path, model, length, chunk, ids, split):
    """ids[:split] through the prefill step (chunks of `chunk`), the rest
    token by token: the logits after the prompt and after each later token
    against a cache fed one token at a time."""
    so, _ = compile_mlir(kv_cache.build_decode(model, length, prefill=chunk), ["-O1"])
    with Session(so, path, "decode") as s, Session(so, path, "prefill") as p, \
            Session(so, path, "decode") as r:
        fast = kv_cache.Decoder(s, model, length, prefill=(p, chunk))
        slow = kv_cache.Decoder(r, model, length)
        got = fast.feed_prompt(ids[:split])
        for t in ids[:split]:
            want = slow.feed(t)
        pairs = [(got, want)]
        for t in ids[split:]:
            pairs.append((fast.feed(t), slow.feed(t)))
        for i, (got, want) in enumerate(pairs):
            scale = float(np.abs(want).max())
            err = float(np.abs(got - want).max()) / scale
            assert err < RTOL, f"prediction {i}: max error {err:.2e} of {scale:.3g}"


def _tiny(tmp_path, layers):
    path = str(tmp_path / "tiny.gguf")
    make_model(path, "q8_0", d_model=64, n_layer=layers, n_head=4, n_head_kv=2,
               d_ff=96, seed=3)
    return path, models.load(path)[1]


def test_tiny_llama(tmp_path):
    """A q8_0 llama (normal RoPE, grouped-query heads), 3 layers: 9 tokens
    into a cache of 9 slots."""
    path, model = _tiny(tmp_path, 3)
    ids = [int(i) for i in np.random.default_rng(0).integers(0, 256, 9)]
    _compare(path, model, 9, ids)


def test_tiny_llama_through_the_ring(tmp_path):
    """One layer: 19 tokens through a cache of 6 slots, which wraps three
    times."""
    path, model = _tiny(tmp_path, 1)
    ids = [int(i) for i in np.random.default_rng(1).integers(0, 256, 19)]
    _compare(path, model, 6, ids)


def test_prefill_in_chunks(tmp_path):
    """A 7-token prompt in chunks of 3 (3 + 3 + 1) into a cache of 9, then
    2 tokens one by one: the logits of a cache fed token by token."""
    path, model = _tiny(tmp_path, 3)
    ids = [int(i) for i in np.random.default_rng(2).integers(0, 256, 9)]
    _compare_prefill(path, model, 9, 3, ids, 7)


def test_prefill_through_the_ring(tmp_path):
    """One layer, a cache of 6: a 14-token prompt in chunks of 4 wraps the
    ring twice (a chunk overwrites the slots of tokens it no longer sees)."""
    path, model = _tiny(tmp_path, 1)
    ids = [int(i) for i in np.random.default_rng(3).integers(0, 256, 17)]
    _compare_prefill(path, model, 6, 4, ids, 14)


def test_gemma3_windowed_layers(tmp_path):
    """The real Gemma 3 270M with its sliding window cut to 4 tokens (its
    windowed layers mask by the window, the global ones see everything):
    11 tokens of real text into a cache of 11 slots."""
    from assets import gemma3 as gemma3_path
    path = gemma3_path()
    cfg, _, info = gemma3.load(path)
    cfg = copy.copy(cfg)
    cfg.window = 4
    assert cfg.swa_layers and len(cfg.swa_layers) < cfg.n_layer
    model = gemma3.Gemma3(cfg, info.tensor_types)
    tok = for_model(info.metadata, cfg.vocab)
    ids = tok.encode("The Devil's Dictionary was written by Ambrose Bierce, a",
                     add_special=True)[:11]
    assert len(ids) == 11
    _compare(path, model, 11, ids)


def test_decoder_refuses_too_many_tokens(tmp_path):
    path = str(tmp_path / "tiny.gguf")
    make_model(path, "f32", d_model=32, n_layer=1, n_head=2, n_head_kv=1,
               d_ff=48)
    _, model, _ = models.load(path)
    so, _ = compile_mlir(kv_cache.build_decode(model, 4), ["-O1"])
    with Session(so, path, "decode") as s:
        dec = kv_cache.Decoder(s, model, 4)
        with pytest.raises(ValueError, match="2 tokens for a step of 1"):
            dec.feed([1, 2])
    with pytest.raises(ValueError, match="steps of 1 and 5 tokens do not fit a "
                       "cache of 4"):
        kv_cache.build_decode(model, 4, prefill=5)
