"""qcc-imatrix: an importance matrix of a GGUF model on a calibration text,
with qcc's compiled forward pass, in llama.cpp's imatrix GGUF layout.

    qcc-imatrix --model M.gguf --data F [--ctx N] [--chunks K] [--batch B]
                [--threads T] [--gemm G] -o imatrix.gguf

(`qcc-gguf imatrix ...` runs this.) The protocol is llama-imatrix's: the
text is tokenized with BOS and cut into chunks of N tokens (the rest
dropped), each chunk's first token replaced by BOS; for every matrix of
every block the squares of its input activations are summed per column
over all positions. The output is what `llama-quantize --imatrix` and
`qcc-gguf quantize --imatrix` read. --gemm f32 (the default) keeps the
matrix products exact; bf16 rounds their operands to bf16.
Exit status: 0, 1 for an error (one line `qcc-imatrix: error: ...`), 2 for
a usage error."""

import argparse
import os
import sys
import time

import numpy as np

from . import GEMM_CHOICES, check_chunk_args, gemm_flags, release_memory
from .perplexity import CliError, tokenized_chunks
from .. import imatrix, models
from ..compiler import compile_mlir
from ..models.llama import ModelError
from ..tokenizer import TokenizerError


def parse_args(argv, prog="qcc-imatrix"):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--model", "-m", required=True, help="GGUF model (never modified)")
    ap.add_argument("--data", "-f", required=True, help="UTF-8 calibration text")
    ap.add_argument("--output", "-o", required=True, help="imatrix GGUF to write")
    ap.add_argument("--ctx", "-c", type=int, default=512,
                    help="tokens per chunk (default 512, llama-imatrix's)")
    ap.add_argument("--chunks", type=int, default=-1,
                    help="use at most this many chunks (default: all)")
    ap.add_argument("--batch", "-b", type=int, default=1,
                    help="chunks per run of the compiled step (default 1)")
    ap.add_argument("--threads", "-t", type=int, default=0,
                    help="threads of the compiled step (0: all cores)")
    ap.add_argument("--gemm", choices=GEMM_CHOICES, default="f32",
                    help="matrix products in f32 (default) or with their "
                         "operands rounded to bf16; auto: bf16 where the CPU "
                         "has AVX512-BF16")
    a = ap.parse_args(argv)
    check_chunk_args(ap, a, min_ctx=16)
    return a


def compute(model_path, text, ctx=512, chunks=-1, batch=1, threads=0,
            gemm="f32", progress=None):
    """The ImatrixStats of the model on `text` (llama-imatrix's protocol)."""
    from ..runtime import Session
    cfg, model, info = models.load(model_path)
    x, _, tok = tokenized_chunks(info.metadata, text, ctx, chunks)
    del tok, info
    release_memory()
    n = x.shape[0]
    batch = min(batch, n)
    stats = None
    done = 0
    # Full batches with one step; a shorter last batch with a step of its
    # own size (every result is a sum over rows, so no padding may enter).
    for size in sorted({batch, n % batch} - {0}, reverse=True):
        count = (n // batch) * batch if size == batch else n % batch
        step, names = imatrix.build_linear_input_stats(model, size, ctx)
        so, _ = compile_mlir(step, ["-O1", f"--threads={threads}",
                                    *gemm_flags(gemm)])
        if stats is None:
            stats = imatrix.ImatrixStats(names)
        results = sorted(set(names.values()))
        with Session(so, model_path, "linear_input_stats") as s:
            for i in range(done, done + count, size):
                s.set_input("tokens", x[i:i + size])
                s.run()
                got = {r: s.result(r, np.float32) for r in results}
                for name, r in names.items():
                    stats.add(name, got[r], size * ctx)
                stats.chunks += size
                if progress:
                    progress(i + size, n)
        done += count
    return stats


def main(argv=None, prog=None):
    # `qcc-gguf imatrix` runs this under its own name.
    prog = prog or os.environ.get("QCC_IMATRIX_PROG", "qcc-imatrix")
    a = parse_args(sys.argv[1:] if argv is None else argv, prog)
    try:
        from ..data import DataError, read_text
        try:
            text = read_text(a.data)
        except DataError as e:
            raise CliError(str(e)) from None
        out_dir = os.path.dirname(os.path.abspath(a.output))
        if not os.path.isdir(out_dir):
            raise CliError(f"-o {a.output}: folder {out_dir} does not exist")
        if os.path.abspath(a.output) == os.path.abspath(a.model):
            raise CliError("-o would overwrite the model")
        bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm
            bar = tqdm(total=None, unit="chunk", file=sys.stderr)

        def progress(done, total):
            if bar is not None:
                bar.total = total
                bar.update(done - bar.n)
            else:
                print(f"[{done}/{total}] chunks", file=sys.stderr, flush=True)

        t0 = time.monotonic()
        stats = compute(a.model, text, a.ctx, a.chunks, a.batch, a.threads,
                        a.gemm, progress)
        if bar is not None:
            bar.close()
        imatrix.write(a.output, stats, datasets=[a.data], chunk_size=a.ctx)
    except (CliError, ModelError, TokenizerError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except (RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()
        print(f"{prog}: error: {first[0] if first else e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    print(f"{a.output}: {len(stats.sums)} matrices, {stats.chunks} chunks of "
          f"{a.ctx} tokens, {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
