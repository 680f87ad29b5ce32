"""qcc-perplexity: a GGUF model's perplexity on a text, by llama-perplexity's
protocol, with qcc's compiled forward pass over the quantized weights.

    qcc-perplexity --model M.gguf [--lora ADAPTER.gguf] --data F [--ctx N]
                   [--batch B] [--chunks K] [--threads T] [--gemm G] [--json]

The protocol is llama.cpp's (tools/perplexity): the whole text is tokenized
with BOS; it is cut into chunks of N tokens (the rest dropped); each chunk's
first token is replaced by BOS; the second half of each chunk is scored,
token j + 1 under the logits of position j for j = N/2 .. N-2. The result
is exp(mean negative log-likelihood), so the numbers compare with
llama-perplexity's "Final estimate". B chunks run per call of the step.
With --lora, the adapter (llama.cpp's layout, as qcc-train writes it) is
applied to the frozen base, as llama-perplexity --lora does. --gemm bf16
(the default where the CPU has AVX512-BF16) rounds the operands of the
matrix products to bf16 and sums their products in f32; --gemm f32 keeps
them exact.
Exit status: 0, 1 for an error (one line `qcc-perplexity: error: ...`),
2 for a usage error."""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

from . import GEMM_CHOICES, check_chunk_args, gemm_flags, release_memory
from .. import lora_adapter, models
from ..compiler import compile_mlir
from ..models.llama import ModelError
from ..tokenizer import Tokenizer, TokenizerError


class CliError(Exception):
    pass


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="qcc-perplexity",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--model", "-m", required=True, help="GGUF model (never modified)")
    ap.add_argument("--lora", metavar="ADAPTER",
                    help="LoRA adapter (GGUF, llama.cpp's layout) on the model")
    ap.add_argument("--data", "-f", required=True, help="UTF-8 text file")
    ap.add_argument("--ctx", "-c", type=int, default=512,
                    help="tokens per chunk (default 512, llama-perplexity's)")
    ap.add_argument("--batch", "-b", type=int, default=1,
                    help="chunks per run of the compiled step (default 1)")
    ap.add_argument("--chunks", type=int, default=-1,
                    help="score at most this many chunks (default: all)")
    ap.add_argument("--threads", "-t", type=int, default=0,
                    help="threads of the compiled step (0: all cores)")
    ap.add_argument("-O", dest="opt", type=int, default=1, choices=[0, 1, 2, 3],
                    help="LLVM optimization level of the step (default 1)")
    ap.add_argument("--gemm", choices=GEMM_CHOICES, default="auto",
                    help="matrix products in f32 or with their operands "
                         "rounded to bf16 (AVX512-BF16's vdpbf16ps); auto "
                         "(default): bf16 where the CPU has AVX512-BF16")
    ap.add_argument("--json", action="store_true",
                    help='print one JSON object: {"ppl": ..., "tokens": ..., '
                         '"seconds": ...}')
    a = ap.parse_args(argv)
    check_chunk_args(ap, a, min_ctx=4)
    return a


def chunks_of(ids, ctx, bos, limit=-1):
    """The [n, ctx] chunks llama-perplexity scores, BOS first in each."""
    n = len(ids) // ctx
    if limit > 0:
        n = min(n, limit)
    x = np.asarray(ids[:n * ctx], np.int32).reshape(n, ctx).copy()
    targets = np.asarray(ids[1:n * ctx + 1] + [0], np.int32)[:n * ctx]
    targets = targets.reshape(n, ctx).copy()
    if bos is not None:
        x[:, 0] = bos
    return x, targets


def tokenized_chunks(metadata, text, ctx, limit=-1):
    """The [n, ctx] inputs and targets of `text` by llama.cpp's chunk
    protocol (the tokenizer of the model's `metadata`, BOS first in each
    chunk), and the tokenizer; CliError for a text shorter than two chunks
    (llama-perplexity's and llama-imatrix's bound)."""
    tok = Tokenizer.from_metadata(metadata)
    ids = tok.encode(text, add_special=True)
    if len(ids) < 2 * ctx:
        raise CliError(f"the text tokenizes to {len(ids)} tokens; --ctx {ctx} "
                       f"needs at least {2 * ctx}")
    x, y = chunks_of(ids, ctx, tok.bos_id if tok.add_bos else None, limit)
    return x, y, tok


def perplexity(model_path, text, ctx=512, batch=1, chunks=-1, threads=0, opt=1,
               progress=None, lora=None, gemm="auto"):
    """(ppl, scored tokens, seconds of evaluation) of the model, with the
    LoRA adapter at path `lora` when given."""
    from .. import train
    from ..runtime import Session
    cfg, model, info = models.load(model_path)
    adapter = None
    if lora:
        adapter = lora_adapter.read(lora)
        if adapter.architecture and adapter.architecture != cfg.arch:
            raise CliError(f"--lora {lora}: an adapter for "
                           f"'{adapter.architecture}', the model is '{cfg.arch}'")
        lora_adapter.attach(model, adapter)
    if Tokenizer.from_metadata(info.metadata).add_eos:
        raise CliError(f"{model_path}: the tokenizer adds EOS to every text, "
                       "which llama-perplexity's protocol does not allow")
    x, y, tok = tokenized_chunks(info.metadata, text, ctx, chunks)
    # The tokenizer (~165 MB for a 262144-token vocabulary) and the parsed
    # metadata are not needed past this point; the session reads the file.
    del tok, info
    release_memory()
    n = x.shape[0]
    batch = min(batch, n)
    first = ctx // 2
    # Only positions first..ctx-1 reach the LM head; the last one's target
    # lies past the chunk, so it is computed and dropped.
    step = train.build_token_nll(model, batch, ctx, first=first)
    so, _ = compile_mlir(step, [f"-O{opt}", f"--threads={threads}",
                                *gemm_flags(gemm)])
    total, count = 0.0, 0
    t0 = time.monotonic()
    with Session(so, model_path, "token_nll") as s:
        if adapter is not None:
            for base, (la, lb) in adapter.pairs.items():
                s.set_input(base + ".lora_a", la)
                s.set_input(base + ".lora_b", lb)
        s.set_input("rows", train.scored_rows(batch, ctx, first))
        for i in range(0, n, batch):
            xb = np.zeros((batch, ctx), np.int32)
            yb = np.zeros((batch, ctx - first), np.int32)
            m = min(batch, n - i)
            xb[:m], yb[:m] = x[i:i + m], y[i:i + m, first:]
            s.set_input("tokens", xb)
            s.set_input("targets", yb)
            s.run()
            nll = s.result("nll", np.float32, (batch, ctx - first))
            total += float(nll[:m, :-1].astype(np.float64).sum())
            count += m * (ctx - 1 - first)
            if progress:
                progress(i + m, n, math.exp(total / count))
    return math.exp(total / count), count, time.monotonic() - t0


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        from ..data import DataError, read_text
        try:
            text = read_text(a.data)
        except DataError as e:
            raise CliError(str(e)) from None
        bar = None
        if sys.stderr.isatty() and not a.json:
            from tqdm import tqdm
            bar = tqdm(total=None, unit="chunk", file=sys.stderr)

        def progress(done, total, ppl):
            if bar is not None:
                bar.total = total
                bar.update(done - bar.n)
                bar.set_postfix(ppl=f"{ppl:.4f}")
            elif not a.json:
                print(f"[{done}/{total}] ppl {ppl:.4f}", file=sys.stderr, flush=True)

        ppl, tokens, seconds = perplexity(a.model, text, a.ctx, a.batch, a.chunks,
                                          a.threads, a.opt, progress, a.lora,
                                          a.gemm)
        if bar is not None:
            bar.close()
    except (CliError, ModelError, TokenizerError, lora_adapter.AdapterError) as e:
        print(f"qcc-perplexity: error: {e}", file=sys.stderr)
        return 1
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        print(f"qcc-perplexity: error: {first[0] if first else e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("qcc-perplexity: interrupted", file=sys.stderr)
        return 130
    if a.json:
        print(json.dumps({"ppl": ppl, "tokens": tokens, "seconds": round(seconds, 3),
                          "ctx": a.ctx, "model": os.path.basename(a.model)}))
    else:
        print(f"Final estimate: PPL = {ppl:.4f} ({tokens} tokens scored, "
              f"{seconds:.1f} s, {tokens / seconds:.1f} tokens/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
