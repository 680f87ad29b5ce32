"""qcc-generate: sample text from a GGUF model with qcc's compiled forward
pass and the model's tokenizer.

    qcc-generate --model M.gguf [--lora ADAPTER.gguf] [--prompt TEXT]
                 [--tokens N] [--seq L] [--temperature T] [--top-k K]
                 [--top-p P] [--seed S]

The prompt is tokenized as llama.cpp does (BOS first when the model adds
it). A decoding step is traced from the model's metadata (one token and
the KV cache of the last L tokens -> the logits after it, and the token's
keys and values: qcc.kv_cache), compiled once (cached) and bound by the
runtime to the model's weights, read in place; each token, of the prompt
and generated, runs the step once. Sampling: temperature (0: greedy), top-k, then top-p
(nucleus) on what is left; generation stops at an end-of-generation token
(EOS, end of turn) or after N tokens. Exit status: 0, 1 for an error (one
line `qcc-generate: error: ...`), 2 for a usage error."""

import argparse
import math
import sys

import numpy as np

from .. import kv_cache, lora_adapter, models
from ..compiler import compile_mlir
from ..models.llama import ModelError
from ..tokenizer import ByteTokenizer, TokenizerError, for_model


def _sample(logits, rng, temperature, top_k, top_p, allowed=None):
    z = logits.astype(np.float64)
    if allowed is not None:
        z = z + allowed
    if temperature <= 0:
        return int(np.argmax(z))
    z = z / temperature
    if top_k and top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= kth, z, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    if 0 < top_p < 1:
        order = np.argsort(-p)
        keep = np.cumsum(p[order]) - p[order] < top_p  # the smallest set reaching top_p
        mask = np.zeros_like(p, bool)
        mask[order[keep]] = True
        p = np.where(mask, p, 0.0)
        p /= p.sum()
    return int(rng.choice(p.size, p=p))


def _end_ids(tok):
    ends = set()
    if getattr(tok, "eos_id", None) is not None:
        ends.add(tok.eos_id)
    for name in ("<end_of_turn>", "<|eot_id|>", "<|im_end|>", "<|endoftext|>"):
        i = tok.index.get(name)
        if i is not None:
            ends.add(i)
    return ends


# Prompt tokens per call of the prefill step (one pass over a chunk, where
# decoding runs one token per call).
PREFILL = 64


def generate(model_path, prompt, n, seq=512, temperature=0.8, top_k=40, seed=0,
             opt=1, top_p=0.95, lora=None):
    """The prompt (str, or bytes for a byte-level model) followed by up to n
    sampled tokens, decoded (str); each prediction sees the last `seq`
    tokens."""
    from ..runtime import Session
    cfg, model, info = models.load(model_path)
    tok = for_model(info.metadata, cfg.vocab)
    adapter = None
    if lora:
        adapter = lora_adapter.read(lora)
        lora_adapter.attach(model, adapter)
    text = kv_cache.build_decode(model, seq, prefill=min(PREFILL, seq))
    so, _ = compile_mlir(text, [f"-O{opt}"])
    rng = np.random.default_rng(seed)
    allowed = None
    if isinstance(tok, ByteTokenizer):
        if isinstance(prompt, str):
            prompt = prompt.encode("utf-8")
        ids = list(tok.encode(prompt or b"\n"))
        allowed = np.full(cfg.vocab, -np.inf)
        allowed[tok.byte_to_id] = 0.0  # only byte tokens
    else:
        if isinstance(prompt, bytes):
            prompt = prompt.decode("utf-8")
        ids = list(tok.encode(prompt, add_special=True))
    start = len(ids)
    ends = set() if isinstance(tok, ByteTokenizer) else _end_ids(tok)
    with Session(so, model_path, "decode") as s, \
            Session(so, model_path, "prefill") as p:
        if adapter is not None:
            for session in (s, p):
                for base, (a, b) in adapter.pairs.items():
                    session.set_input(base + ".lora_a", a)
                    session.set_input(base + ".lora_b", b)
        dec = kv_cache.Decoder(s, model, seq, prefill=(p, min(PREFILL, seq)))
        logits = dec.feed_prompt(ids)
        for i in range(n):
            t = _sample(logits, rng, temperature, top_k, top_p, allowed)
            if t in ends:
                break
            ids.append(t)
            if i + 1 < n:
                logits = dec.feed(t)
    new = ids[start:]
    if isinstance(tok, ByteTokenizer):
        return ((prompt or b"") + tok.decode(new)).decode("utf-8", "replace")
    return prompt + tok.decode(new)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="qcc-generate", description=__doc__.splitlines()[0])
    ap.add_argument("--model", "-m", required=True, help="GGUF model (never modified)")
    ap.add_argument("--lora", metavar="ADAPTER", help="LoRA adapter on the model")
    ap.add_argument("--prompt", "-p", default="")
    ap.add_argument("--tokens", "-n", type=int, default=200,
                    help="at most this many new tokens (default 200)")
    ap.add_argument("--seq", type=int, default=512,
                    help="tokens of context each prediction sees: the KV "
                         "cache's length (default 512)")
    ap.add_argument("--temperature", type=float, default=0.8,
                    help="0 picks the most likely token (default 0.8)")
    ap.add_argument("--top-k", type=int, default=40, help="0: no limit (default 40)")
    ap.add_argument("--top-p", type=float, default=0.95,
                    help="nucleus sampling mass, 1: off (default 0.95)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.tokens <= 0 or a.seq < 2:
        ap.error("--tokens must be positive and --seq at least 2")
    if not (a.temperature >= 0 and math.isfinite(a.temperature)):
        ap.error("--temperature must be zero or positive")
    if a.top_k < 0 or not 0 < a.top_p <= 1:
        ap.error("--top-k must be >= 0 and --top-p in (0, 1]")
    try:
        text = generate(a.model, a.prompt, a.tokens, a.seq, a.temperature,
                        a.top_k, a.seed, top_p=a.top_p, lora=a.lora)
    except (ModelError, TokenizerError, lora_adapter.AdapterError, RuntimeError,
            OSError) as e:
        first = str(e).strip().splitlines()
        print(f"qcc-generate: error: {first[0] if first else e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("qcc-generate: interrupted", file=sys.stderr)
        return 130
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
