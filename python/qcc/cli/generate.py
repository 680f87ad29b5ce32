"""qcc-generate: sample text from a GGUF model with qcc's compiled forward
pass (byte-level tokens).

    qcc-generate --model M.gguf [--prompt TEXT] [--tokens N] [--seq L]
                 [--temperature T] [--top-k K] [--seed S]

The forward pass is traced from the model's metadata like qcc-train's step
(tokens [1, L] -> logits), compiled once (cached) and bound by the runtime
to the model's weights, read in place; each new byte re-runs the window of
the last L bytes."""

import argparse
import sys

import numpy as np

from ..compiler import compile_mlir
from ..models import llama
from ..tokenizer import ByteTokenizer


def generate(model_path, prompt, n, seq=64, temperature=0.8, top_k=40, seed=0,
             opt=1):
    from .. import train
    from ..runtime import Session
    cfg, model, info = llama.load(model_path)
    tok = ByteTokenizer.from_metadata(info.metadata, cfg.vocab)
    text = train.build_forward(model, 1, seq)
    so, _ = compile_mlir(text, [f"-O{opt}"])
    rng = np.random.default_rng(seed)
    ids = list(tok.encode(prompt or b"\n"))
    out = []
    with Session(so, model_path, "forward") as s:
        for _ in range(n):
            window = ids[-seq:]
            x = np.zeros((1, seq), np.int32)
            x[0, :len(window)] = window
            s.set_input("tokens", x)
            s.run()
            logits = s.result("logits", np.float32, (seq, cfg.vocab))[len(window) - 1]
            allowed = np.full(cfg.vocab, -np.inf)
            allowed[tok.byte_to_id] = 0.0  # only byte tokens
            z = logits.astype(np.float64) / max(temperature, 1e-6) + allowed
            if top_k and top_k < cfg.vocab:
                kth = np.sort(z)[-top_k]
                z = np.where(z >= kth, z, -np.inf)
            p = np.exp(z - z.max())
            p /= p.sum()
            t = int(rng.choice(cfg.vocab, p=p))
            ids.append(t)
            out.append(t)
    return (prompt or b"") + tok.decode(out)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="qcc-generate", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", default="")
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-k", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        text = generate(a.model, a.prompt.encode(), a.tokens, a.seq,
                        a.temperature, a.top_k, a.seed)
    except (llama.ModelError, RuntimeError) as e:
        print(f"qcc-generate: error: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(text.decode("utf-8", "replace") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
