"""qcc-train: train a GGUF model through its quantized weights on a text.

    qcc-train --model M.gguf --data corpus.txt|docs.jsonl [--lora-rank R | --full]
              [--val FILE | --val-split F] [--val-every K]
              [--steps N] [--seq L] [--batch B] [--lr X] [--save-every K]
              [--resume CKPT] --out OUT.gguf

See docs/qcc-train.md. Exit status: 0 on success, 1 for an error (one line
`qcc-train: error: ...` on stderr), 2 for a usage error."""

import argparse
import csv
import ctypes
import json
import math
import os
import re
import struct
import sys
import time

import numpy as np

from .. import data as textdata
from .. import distributed, models, optim
from ..compiler import compile_mlir
from ..distributed import JobError, job
from ..models.llama import ModelError
from ..progress import Progress, fmt_duration
from . import GEMM_CHOICES, gemm_flags, release_memory
from ..tokenizer import ByteTokenizer, TokenizerError, for_model


class CliError(Exception):
    pass


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="qcc-train",
        description="Train a GGUF model (llama family, Gemma 3) through its "
                    "quantized weights on text, with the model's tokenizer.")
    ap.add_argument("--model", required=True, help="input GGUF model (never modified)")
    ap.add_argument("--data", required=True,
                    help="training text: a UTF-8 file (one document) or .jsonl "
                         '(one {"text": ...} document per line)')
    val = ap.add_mutually_exclusive_group()
    val.add_argument("--val", metavar="FILE",
                     help="validation text (.txt or .jsonl), scored every --val-every steps")
    val.add_argument("--val-split", type=float, metavar="F",
                     help="validate on the last fraction F of --data instead")
    ap.add_argument("--val-every", type=int, metavar="K", default=0,
                    help="validation perplexity every K steps (default: 10 "
                         "times per run) and before the first step")
    ap.add_argument("--val-tokens", type=int, metavar="N", default=8192,
                    help="score at most N validation tokens each time (default 8192)")
    ap.add_argument("--out", required=True,
                    help="trained model (full) or LoRA adapter (--lora-rank)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true",
                      help="train every weight through its blocks (default)")
    mode.add_argument("--lora-rank", type=int, metavar="R",
                      help="train a rank-R LoRA on a frozen base instead")
    ap.add_argument("--lora-alpha", type=float, default=None,
                    help="LoRA alpha (default 2·R)")
    ap.add_argument("--lora-targets", default="attn_q,attn_k,attn_v,attn_output",
                    help="comma-separated layers to adapt (attn_q, attn_k, "
                         "attn_v, attn_output, ffn_gate, ffn_up, ffn_down, output)")
    ap.add_argument("--train", dest="train_re", metavar="REGEX",
                    help="train only the tensors whose GGUF name matches "
                         "(Python regular expression, searched; with LoRA: "
                         "the layers whose weight matches get adapters)")
    ap.add_argument("--freeze", dest="freeze_re", metavar="REGEX",
                    help="keep the tensors whose GGUF name matches frozen "
                         "(applied after --train)")
    ap.add_argument("--merged", metavar="PATH",
                    help="with --lora-rank: also write the merged, re-quantized model")
    ap.add_argument("--steps", type=int, default=200,
                    help="total optimizer steps (with --resume: up to this many)")
    ap.add_argument("--seq", type=int, default=64, help="tokens per sequence")
    ap.add_argument("--batch", type=int, default=16, help="sequences per step")
    ap.add_argument("--lr", type=float, default=None,
                    help="peak learning rate (default 1e-4 full, 3e-4 LoRA, for "
                         "pretrained models; one trained from scratch wants ~1e-2)")
    ap.add_argument("--min-lr", type=float, default=None,
                    help="final learning rate of the cosine decay (default lr/10)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="linear warmup steps (default min(20, steps/10))")
    ap.add_argument("--optimizer", choices=["adamw", "momentum", "sgd"], default="adamw")
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--ste", choices=["identity", "clipped", "ewgs"], default="identity",
                    help="straight-through estimator of quantized weights")
    ap.add_argument("--carry", choices=["bf16", "f32", "jl", "none"], default="bf16",
                    help="carry of quantized weights (none: plain requantization)")
    ap.add_argument("--save-every", type=int, metavar="K", default=0,
                    help="write a checkpoint every K steps")
    ap.add_argument("--checkpoint", metavar="PATH",
                    help="checkpoint file (default OUT.ckpt.gguf)")
    ap.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint")
    ap.add_argument("--stop-after", type=int, metavar="K", default=None,
                    help="stop after step K of the --steps schedule (checkpointed; "
                         "--resume continues it)")
    ap.add_argument("--time-limit", type=float, metavar="SECONDS", default=None,
                    help="fit the run into this much training time: after a few "
                         "steps, the schedule is shortened to the steps that fit "
                         "(at most --steps), and training stops at the limit")
    ap.add_argument("--log", metavar="CSV", help="loss log (default OUT.loss.csv)")
    ap.add_argument("--plot", metavar="PNG", help="loss curve (default OUT.loss.png)")
    ap.add_argument("--target-loss", type=float, default=None,
                    help="draw this loss on the plot and report whether it was reached")
    ap.add_argument("--seed", type=int, default=0, help="data order and LoRA init")
    ap.add_argument("--sample", type=int, default=0, metavar="N",
                    help="after training, generate N tokens from the trained model (qcc-generate)")
    ap.add_argument("--prompt", default="", help="prompt of --sample")
    ap.add_argument("--profile", action="store_true",
                    help="time every kernel of the step (qcc --profile): print "
                         "the table at the end and write OUT.trace.json, a "
                         "Chrome trace of the calls")
    ap.add_argument("--threads", type=int, default=0,
                    help="threads of the compiled step (0: all cores; under "
                         "mpirun, the cores divided by the ranks on this machine)")
    ap.add_argument("-O", dest="opt", type=int, default=1, choices=[0, 1, 2, 3],
                    help="LLVM optimization level of the step (default 1)")
    ap.add_argument("--gemm", choices=GEMM_CHOICES, default="f32",
                    help="matrix products in f32 (default) or with operands "
                         "rounded to bf16, as torch's bf16 autocast (AVX512-BF16 "
                         "where the CPU has it); auto: bf16 where it has "
                         "AVX512-BF16")
    kd = ap.add_argument_group(
        "distillation", "loss = α·CE(student, data) + β·τ²·KL(softmax(teacher/τ) "
        "‖ softmax(student/τ)), both LM heads chunked over the vocabulary")
    kd.add_argument("--teacher", metavar="T.gguf",
                    help="teacher model (same vocabulary and tokenizer; any "
                         "tensor types), run in this process; needs the "
                         "student's LM head frozen (--freeze token_embd for a "
                         "tied embedding)")
    kd.add_argument("--kd-temperature", type=float, default=2.0, metavar="τ",
                    help="softmax temperature of both distributions (default 2)")
    kd.add_argument("--kd-weight", type=float, default=0.5, metavar="β",
                    help="weight of the KL term (default 0.5)")
    kd.add_argument("--task-weight", type=float, default=0.5, metavar="α",
                    help="weight of the cross-entropy on the data (default 0.5)")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    if not (a.kd_temperature > 0 and math.isfinite(a.kd_temperature)):
        ap.error(f"--kd-temperature must be a positive number (got {a.kd_temperature:g})")
    for flag, v in (("--kd-weight", a.kd_weight), ("--task-weight", a.task_weight)):
        if not (v >= 0 and math.isfinite(v)):
            ap.error(f"{flag} must be zero or positive (got {v:g})")
    if a.teacher and a.kd_weight + a.task_weight == 0:
        ap.error("--kd-weight and --task-weight cannot both be 0")
    for name in ("steps", "seq", "batch", "val_tokens"):
        if getattr(a, name) <= 0:
            ap.error(f"--{name.replace('_', '-')} must be a positive integer")
    if a.val_every < 0:
        ap.error("--val-every must be a positive integer")
    if a.val_split is not None and not 0 < a.val_split < 1:
        ap.error(f"--val-split must be a fraction between 0 and 1 (got {a.val_split:g})")
    if a.save_every < 0:
        ap.error("--save-every must be a positive integer")
    if a.lora_rank is not None and a.lora_rank <= 0:
        ap.error("--lora-rank must be a positive integer")
    if a.merged and a.lora_rank is None:
        ap.error("--merged needs --lora-rank")
    for flag, pattern in (("--train", a.train_re), ("--freeze", a.freeze_re)):
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as e:
                ap.error(f"{flag} {pattern!r}: not a regular expression ({e})")
    positive = {"--lr": a.lr, "--lora-alpha": a.lora_alpha,
                "--time-limit": a.time_limit, "--stop-after": a.stop_after}
    for flag, v in positive.items():
        if v is not None and not (v > 0 and math.isfinite(v)):
            ap.error(f"{flag} must be a positive number (got {v:g})")
    at_least_zero = {"--min-lr": a.min_lr, "--warmup": a.warmup,
                     "--weight-decay": a.weight_decay, "--threads": a.threads,
                     "--sample": a.sample}
    for flag, v in at_least_zero.items():
        if v is not None and not (v >= 0 and math.isfinite(v)):
            ap.error(f"{flag} must be zero or positive (got {v:g})")
    for flag, p in (("--out", a.out), ("--checkpoint", a.checkpoint),
                    ("--log", a.log), ("--plot", a.plot), ("--merged", a.merged)):
        if p is None:
            continue
        d = os.path.dirname(os.path.abspath(p))
        if os.path.isdir(p):
            ap.error(f"{flag} {p}: is a directory")
        if not os.path.isdir(d):
            ap.error(f"{flag} {p}: directory {d} does not exist")
        if not os.access(d, os.W_OK):
            ap.error(f"{flag} {p}: directory {d} is not writable")
    return a


def check_fits(cfg, batch, seq, vocab):
    """Refuses up front a batch whose largest intermediates (the attention
    scores of one layer, the logits) cannot fit in this machine's memory,
    naming the bytes they need."""
    scores = 4 * batch * cfg.n_head * seq * seq
    logits = 4 * batch * seq * vocab
    need = scores + logits
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return
    if need > have:
        raise CliError(f"--batch {batch} --seq {seq} needs at least "
                       f"{need / 2**30:,.1f} GiB for one layer's attention "
                       f"scores and the logits; this machine has "
                       f"{have / 2**30:,.1f} GiB: use a smaller --seq or --batch")


def _same_file(a, b):
    if not os.path.exists(b):
        return os.path.realpath(a) == os.path.realpath(b)
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _malloc_keep_memory():
    """A step allocates and frees the same large buffers every call; keep
    them in the heap rather than returning them to the kernel each time
    (glibc's mallopt: M_TRIM_THRESHOLD, M_MMAP_THRESHOLD)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD
        libc.mallopt(-3, 1 << 30)   # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def read_log(path):
    """(steps, losses, validation steps, validation perplexities)."""
    steps, losses, vsteps, vppl = [], [], [], []
    if os.path.exists(path):
        with open(path) as f:
            for row in csv.DictReader(f):
                try:
                    step = int(row["step"])
                    if row.get("loss"):
                        steps.append(step)
                        losses.append(float(row["loss"]))
                    if row.get("val_ppl"):
                        vsteps.append(step)
                        vppl.append(float(row["val_ppl"]))
                except (KeyError, ValueError):
                    continue
    return steps, losses, vsteps, vppl


class Validator:
    """Validation perplexity during training: a second compiled step,
    token_nll, over consecutive windows of the validation stream. LoRA runs
    give it the training session's current A and B as inputs; full-weight
    runs save the trained weights to a temporary GGUF beside --out and bind
    the evaluation to it."""

    def __init__(self, a, prog, opts, val, bos, lora, say):
        from .. import train
        self.a, self.lora, self.say = a, lora, say
        cfg, model, _ = models.load(a.model)
        release_memory()
        self.pairs = []
        if lora:
            for _, lin in train.lora_layers(model, opts):
                lin.lora(opts.lora_rank, opts.lora_alpha, role="input")
                for p in (lin.lora_a, lin.lora_b):
                    self.pairs.append((p.name, p.shape))
        self.x, self.y = textdata.eval_windows(val, a.seq, a.val_tokens, bos)
        self.batch = min(a.batch, len(self.x))
        text = train.build_token_nll(model, self.batch, a.seq)
        t0 = time.monotonic()
        try:
            self.so, _ = compile_mlir(text, [f"-O{a.opt}", f"--threads={a.threads}",
                                             *gemm_flags(a.gemm)])
        except RuntimeError as e:
            raise CliError(f"validation step: {e}") from None
        say(f"validation: {len(self.x)} windows of {a.seq} tokens every "
            f"{a.val_every or max(1, a.steps // 10)} steps (step compiled in "
            f"{time.monotonic() - t0:.1f} s)")
        self.tmp = a.out + ".val.tmp.gguf"
        self.session = None

    def _session(self, s):
        from ..runtime import Session
        if self.lora:
            if self.session is None:
                self.session = Session(self.so, self.a.model, "token_nll")
            for name, shape in self.pairs:
                self.session.set_input(name, s.argument(name, np.float32).reshape(shape))
            return self.session
        s.save(self.tmp)
        return Session(self.so, self.tmp, "token_nll")

    def run(self, s, step, bar, log):
        t0 = time.monotonic()
        ev = self._session(s)
        total, count = 0.0, 0
        b, seq = self.batch, self.a.seq
        try:
            for i in range(0, len(self.x), b):
                m = min(b, len(self.x) - i)
                xb = np.zeros((b, seq), np.int32)
                yb = np.zeros((b, seq), np.int32)
                xb[:m], yb[:m] = self.x[i:i + m], self.y[i:i + m]
                ev.set_input("tokens", xb)
                ev.set_input("targets", yb)
                ev.run()
                nll = ev.result("nll", np.float32, (b, seq)).astype(np.float64)
                total += float(nll[:m].sum())
                count += m * seq
        finally:
            if not self.lora:
                ev.close()
                if os.path.exists(self.tmp):
                    os.remove(self.tmp)
        ppl = math.exp(total / count)
        log.write(f"{step},,,,,{ppl:.6f}\n")
        log.flush()
        bar.message(f"validation after step {step}: perplexity {ppl:.3f} "
                    f"({count} tokens, {time.monotonic() - t0:.1f} s)")
        return ppl

    def close(self):
        if self.session is not None:
            self.session.close()
            self.session = None


class Teacher:
    """The teacher of distillation: its compiled forward to the final
    hidden states, run on each batch before the student's step."""

    def __init__(self, a, model, head_bytes):
        from .. import train
        self.path, self.head_bytes = a.teacher, head_bytes
        text = train.build_teacher_hidden(model, a.rank_batch, a.seq)
        try:
            self.so, _ = compile_mlir(text, [f"-O{a.opt}", f"--threads={a.threads}",
                                             *gemm_flags(a.gemm)])
        except RuntimeError as e:
            raise CliError(f"teacher step: {e}") from None
        self.session = None

    def bind(self, student):
        from ..runtime import Session
        try:
            self.session = Session(self.so, self.path, "teacher_hidden")
        except RuntimeError as e:
            raise CliError(f"cannot bind the teacher's step to {self.path}: "
                           f"{e}") from None
        if self.head_bytes is not None:
            student.set_input("teacher.head", self.head_bytes)
            self.head_bytes = None

    def hidden(self, tokens):
        self.session.set_input("tokens", tokens)
        self.session.run()
        return self.session.result("hidden")

    def close(self):
        if self.session is not None:
            self.session.close()


def _tensor_bytes(path, name):
    """The raw bytes of a GGUF tensor (a uint8 array over the mapped file)."""
    from ..gguf_header import HeaderError, read_tensor_bytes
    try:
        return read_tensor_bytes(path, name)[1]
    except HeaderError as e:
        raise CliError(f"{path}: {e}") from None


def load_teacher(a, model, cfg, info):
    """(Teacher, train.Distill) for --teacher: the same vocabulary and
    tokenizer as the student; the teacher's LM head is the student's own
    tensor when their bytes agree, else an input of the student's step."""
    from .. import train
    try:
        tcfg, tmodel, tinfo = models.load(a.teacher)
    except ModelError as e:
        raise CliError(f"--teacher: {e}") from None
    key = "tokenizer.ggml.tokens"
    if tcfg.vocab != cfg.vocab or tinfo.metadata.get(key) != info.metadata.get(key):
        raise CliError(f"--teacher {a.teacher}: its vocabulary differs from the "
                       f"model's ({tcfg.vocab} and {cfg.vocab} tokens, or other "
                       "token strings): distillation compares the two over the "
                       "same tokens")
    sw, tw = model.head()[0], tmodel.head()[0]
    tcap = float(tmodel.head()[1] or 0.0)
    s_bytes = _tensor_bytes(a.model, sw.name)
    t_bytes = _tensor_bytes(a.teacher, tw.name)
    shared = (sw.name == tw.name and sw.dtype == tw.dtype and sw.shape == tw.shape
              and np.array_equal(s_bytes, t_bytes))
    del s_bytes, tinfo
    release_memory()
    distill = train.Distill(d_model=tcfg.d_model, head_type=tw.dtype,
                            shared_head=shared, softcap=tcap,
                            temperature=a.kd_temperature, alpha=a.task_weight,
                            beta=a.kd_weight)
    teacher = Teacher(a, tmodel, None if shared else t_bytes)
    return teacher, distill


def _options_digest(a):
    """What every rank of a data-parallel job must have alike: the options,
    less the paths (which may differ between hosts) and --threads."""
    skip = {"model", "data", "val", "out", "log", "plot", "checkpoint",
            "resume", "merged", "teacher", "quiet", "threads"}
    return json.dumps({k: v for k, v in sorted(vars(a).items()) if k not in skip},
                      default=str)


def run(a, out=sys.stdout):
    try:
        j = job()
    except RuntimeError as e:
        raise CliError(f"cannot join the MPI job: {e}") from None
    say = ((lambda *x: None) if a.quiet or not j.root else
           (lambda *x: print(*x, file=out, flush=True)))
    lora = a.lora_rank is not None
    # Data parallelism (docs/distributed.md): each rank takes its share of
    # every global batch of --batch sequences.
    if a.batch % j.size:
        raise CliError(f"--batch {a.batch} does not split over {j.size} ranks: "
                       "the global batch must be a multiple of the rank count")
    a.rank_batch = a.batch // j.size
    if j.parallel and a.threads == 0:
        a.threads = max(1, (os.cpu_count() or 1) // j.local_size())
    # Paths first: nothing is written over the model.
    for p, what in ((a.model, "--model"), (a.data, "--data"),
                    (a.teacher, "--teacher")):
        if p is None:
            continue
        if not os.path.exists(p):
            raise CliError(f"{what} {p}: no such file")
    ckpt = a.checkpoint or a.out + ".ckpt.gguf"
    log_path = a.log or a.out + ".loss.csv"
    plot_path = a.plot or a.out + ".loss.png"
    outputs = [("--out", a.out), ("checkpoint", ckpt), ("--log", log_path),
               ("--plot", plot_path)] + ([("--merged", a.merged)] if a.merged else [])
    for what, p in outputs:
        if _same_file(a.model, p):
            raise CliError(f"refusing to overwrite the input model {a.model} "
                           f"with {what} {p}: choose another path")
        if _same_file(a.data, p):
            raise CliError(f"refusing to overwrite the training data {a.data} "
                           f"with {what} {p}")
        if a.teacher and _same_file(a.teacher, p):
            raise CliError(f"refusing to overwrite the teacher {a.teacher} "
                           f"with {what} {p}")
    if a.resume and not os.path.exists(a.resume):
        raise CliError(f"--resume {a.resume}: no such file")

    try:
        cfg, model, info = models.load(a.model)
    except ModelError as e:
        raise CliError(str(e)) from None
    try:
        tok = for_model(info.metadata, cfg.vocab)
    except TokenizerError as e:
        raise CliError(f"{a.model}: {e}") from None
    check_fits(cfg, a.rank_batch, a.seq, cfg.vocab)
    try:
        docs = textdata.read_documents(a.data)
        data = textdata.pack(docs, tok)
        val = None
        if a.val:
            val = textdata.pack(textdata.read_documents(a.val), tok)
        elif a.val_split:
            data, val = textdata.split(data, a.val_split)
    except textdata.DataError as e:
        raise CliError(str(e)) from None
    if len(data) < a.seq + 2:
        raise CliError(f"--data {a.data}: {len(data)} tokens"
                       + (" after the validation split" if a.val_split else "")
                       + f", fewer than one sequence of {a.seq} + 1")
    if val is not None and len(val) < a.seq + 1:
        raise CliError(f"validation text: {len(val)} tokens, fewer than one "
                       f"sequence of {a.seq} + 1")
    bos = tok.bos_id if getattr(tok, "add_bos", False) else None
    raw_bytes = sum(len(d.encode("utf-8")) for d in docs)

    from .. import train
    opts = train.TrainOptions(
        method="lora" if lora else "full", optimizer=a.optimizer,
        weight_decay=a.weight_decay, ste=a.ste, carry=a.carry,
        train=a.train_re, freeze=a.freeze_re)
    if lora:
        opts.lora_rank = a.lora_rank
        opts.lora_alpha = a.lora_alpha if a.lora_alpha else 2.0 * a.lora_rank
        opts.lora_targets = tuple(t for t in a.lora_targets.split(",") if t)
    teacher = distill = None
    if a.teacher:
        teacher, distill = load_teacher(a, model, cfg, info)
    try:
        prog = train.build_train_step(model, a.rank_batch, a.seq, opts,
                                      distill=distill, ranks=j.size)
    except ValueError as e:
        raise CliError(str(e)) from None
    j.settle()
    formats = sorted({info.tensor_types[n] for n in cfg.expected_tensors()})
    say(f"model {a.model}: {cfg.arch}, {cfg.n_layer} layers, d_model "
        f"{cfg.d_model}, {cfg.n_head} heads ({cfg.n_head_kv} kv), vocabulary "
        f"{cfg.vocab}, {cfg.num_parameters() / 1e6:.2f}M parameters "
        f"({', '.join(formats)})")
    say(f"data {a.data}: {len(docs)} document(s), {raw_bytes:,} bytes, "
        f"{len(data):,} tokens ({tok.describe()}); {a.batch} x {a.seq} tokens "
        f"per step" + (f"; validation {len(val):,} tokens" if val is not None else ""))
    if j.parallel:
        say(f"data parallel: {j.size} ranks, {a.rank_batch} sequence(s) of each "
            f"batch per rank, {a.threads} thread(s) each")
    unit = "byte" if isinstance(tok, ByteTokenizer) else "token"
    # The tokenizer and the metadata (262,144 token strings for Gemma 3) are
    # ~170 MB of Python objects that training no longer needs.
    del tok, info
    release_memory()
    quantized = [f for f in formats if f != "f32"]
    what = (f"LoRA rank {opts.lora_rank} (alpha {opts.lora_alpha:g}) on "
            f"{', '.join(opts.lora_targets)}" if lora else
            f"full-weight, {opts.optimizer}, STE {opts.ste}, carry {opts.carry}"
            if quantized else f"full-weight, {opts.optimizer} (float weights)")
    say(f"training: {what}; {len(prog.trainable)} tensors train")
    if distill is not None:
        say(f"distillation from {a.teacher}: loss = {distill.alpha:g}·CE + "
            f"{distill.beta:g}·τ²·KL at τ = {distill.temperature:g}; the "
            f"teacher's LM head is "
            + ("the student's own (the same tensor)" if distill.shared_head
               else "its own (" + distill.head_type.replace("float", "f32") + ")"))

    t0 = time.monotonic()
    flags = [f"-O{a.opt}", f"--threads={a.threads}", *gemm_flags(a.gemm)]
    if a.profile:
        flags.append("--profile")
    # Rank 0 compiles first; the others then find the step in the cache
    # (on other hosts they compile their own).
    for turn in (0, 1) if j.parallel else (None,):
        if turn is None or (turn == 0) == j.root:
            try:
                so, cached = compile_mlir(prog.text, flags)
            except RuntimeError as e:
                raise CliError(str(e)) from None
        if turn is not None:
            j.settle()
    say(f"step: {len(prog.text.splitlines())} lines of MLIR, "
        + ("compiled earlier (cache)" if cached else
           f"compiled in {time.monotonic() - t0:.1f} s") + f" -> {so}")
    compile_s = time.monotonic() - t0

    from ..runtime import Session, SkippedStep
    _malloc_keep_memory()
    # OpenMP workers spin 5 ms after a parallel loop, long enough to bridge
    # the short serial gaps between a step's loops without a futex wake-up
    # each time, short enough to sleep through the host's work between
    # steps. Gemma 3 LoRA, 4 x 128 tokens, 2 threads of a Zen 5 EPYC: 172,
    # 195, 193 tokens/s against 172, 170, 164 with 0 (sleep at once) and
    # 181 with libomp's default of 200 ms.
    os.environ.setdefault("KMP_BLOCKTIME", "5")
    try:
        s = Session(so, a.model, prog.entry)
    except RuntimeError as e:
        raise CliError(f"cannot bind the step to {a.model}: {e}") from None
    if lora:
        s.seed(a.seed)
    if teacher is not None:
        teacher.bind(s)
    start = 0
    if a.resume:
        try:
            s.load_checkpoint(a.resume)
        except RuntimeError as e:
            raise CliError(str(e)) from None
        start = s.steps
        say(f"resumed from {a.resume} after step {start}")
        if start >= a.steps:
            say(f"the checkpoint is already at step {start} of {a.steps}")
    j.settle(last=True)
    if j.parallel:
        j.agree("models", s.model_fingerprint)
        j.agree("training data", np.asarray(data).tobytes())
        j.agree("validation data", b"" if val is None else np.asarray(val).tobytes())
        j.agree("options", _options_digest(a))
        try:
            s.check_replicas()
        except RuntimeError as e:
            raise JobError(str(e)) from None
    lr = a.lr if a.lr is not None else (3e-4 if lora else 1e-4)
    min_lr = a.min_lr if a.min_lr is not None else lr / 10
    warmup = a.warmup if a.warmup is not None else min(20, a.steps // 10)
    warmup0 = warmup

    validator = None
    if val is not None and j.root:
        validator = Validator(a, prog, opts, val, bos, lora, say)
    val_every = a.val_every or max(1, a.steps // 10)
    header = ("step,loss,lr,tokens_per_s,elapsed_s,val_ppl"
              + (",rank_step_s" if j.parallel else "") + "\n")
    if not j.root:
        log_path = os.devnull
    elif start == 0 or not os.path.exists(log_path):
        with open(log_path, "w") as f:
            f.write(header)
    else:
        # Resuming: keep the log up to the checkpoint's step (a run that
        # went on past its last checkpoint logged steps that are redone).
        with open(log_path) as f:
            rows = f.read().splitlines()[1:]
        with open(log_path, "w") as f:
            f.write(header)
            for row in rows:
                try:
                    if int(row.split(",")[0]) <= start:
                        f.write(row + "\n")
                except ValueError:
                    pass
    tokens_per_step = a.batch * a.seq
    prog_bar = Progress(a.steps, start, tokens_per_step,
                        stream=open(os.devnull, "w") if a.quiet or not j.root
                        else sys.stderr)
    lo, hi = j.rank * a.rank_batch, (j.rank + 1) * a.rank_batch
    step_seconds = 0.0
    if a.profile:
        s.profile(reset=True)
        s.trace_profile()
    rank_seconds = [0.0] * j.size
    received0 = j.bytes_received()
    first = last = None
    skipped = 0
    t_train = time.monotonic()
    with open(log_path, "a") as log:
        total = a.steps  # the schedule's length
        stop = min(a.steps, a.stop_after) if a.stop_after else a.steps
        step = start
        while step < stop:
            if validator is not None and (step == start or step % val_every == 0):
                validator.run(s, step, prog_bar, log)
            x, y = textdata.windows_at(data, step, a.batch, a.seq, a.seed, bos)
            x, y = x[lo:hi], y[lo:hi]
            s.set_input("tokens", x)
            s.set_input("targets", y)
            if teacher is not None:
                s.set_input("teacher.hidden", teacher.hidden(x))
            lr_t = optim.warmup_cosine(step, lr, warmup, total, min_lr)
            s.set_input("lr", np.float32(lr_t))
            if opts.optimizer == "adamw":
                bc1, bc2 = optim.adam_bias_corrections(s.steps)
                s.set_input("adam.bc1", np.float32(bc1))
                s.set_input("adam.bc2", np.float32(bc2))
            ts = time.monotonic()
            try:
                s.run()
                loss = float(s.result("loss")[0])
            except SkippedStep as e:
                skipped += 1
                prog_bar.message(f"qcc-train: warning: step {step + 1} was "
                                 f"skipped: {e}")
                loss = float("nan")
            dt = time.monotonic() - ts
            step_seconds += dt
            now = time.monotonic() - t_train
            per_rank = ""
            if j.parallel:
                # One clock for the job (rank 0's), so that every rank makes
                # the same --time-limit decisions; each rank's step time goes
                # into the log.
                got = [struct.unpack("<dd", b) for b in
                       j.all_gather(struct.pack("<dd", dt, now))]
                now = got[0][1]
                dt = max(d for d, _ in got)
                for r, (d, _) in enumerate(got):
                    rank_seconds[r] += d
                per_rank = "," + ";".join(f"{d:.3f}" for d, _ in got)
                try:
                    s.check_replicas()
                except RuntimeError as e:
                    raise JobError(str(e)) from None
            if first is None:
                first = loss
            last = loss
            log.write(f"{step + 1},{loss:.6f},{lr_t:.6g},"
                      f"{tokens_per_step / dt if dt > 0 else 0:.1f},"
                      f"{now:.3f},{per_rank}\n")
            log.flush()
            prog_bar.update(step + 1, loss)
            if a.save_every and (step + 1) % a.save_every == 0 and step + 1 < a.steps \
                    and j.root:
                s.save_checkpoint(ckpt)
                prog_bar.message(f"checkpoint after step {step + 1}: {ckpt}")
            step += 1
            if a.time_limit and step - start >= 4 and (step - start) % 5 == 4 \
                    and step < stop:
                # The pace so far (from the second step: the first one warms
                # caches up) sets how many steps fit; refit every 5 steps, as
                # a shared machine's pace changes.
                per = (now - t_second) / (step - start - 1)
                left = a.time_limit - now
                fit = min(a.steps, step + max(1, int(left / per)))
                if fit != total:
                    first_fit = total == a.steps
                    total = stop = fit
                    warmup = min(warmup0, max(1, total // 10))
                    prog_bar.total = total
                    if first_fit:
                        prog_bar.message(
                            f"time limit {a.time_limit:g} s: {per:.2f} s per "
                            f"step, so the schedule is {total} steps (of at "
                            f"most {a.steps}); refitted as the pace changes")
            if step - start == 1:
                t_second = now
            if a.time_limit and now >= a.time_limit and step < stop:
                prog_bar.message(f"time limit of {a.time_limit:g} s reached "
                                 f"after step {step} of {total}")
                break
        if validator is not None and step > start:
            validator.run(s, step, prog_bar, log)
    prog_bar.close()
    train_s = time.monotonic() - t_train
    if validator is not None:
        validator.close()
    if j.parallel:
        done_steps = max(1, step - start)
        received = j.all_gather(struct.pack("<Q", j.bytes_received() - received0))
        per_step = [struct.unpack("<Q", b)[0] / done_steps for b in received]
        say(f"data parallel: {j.size} ranks; per rank and step "
            f"{max(per_step) / 2**20:.2f} MiB received, step time "
            + ", ".join(f"rank {r} {t / done_steps:.2f} s"
                        for r, t in enumerate(rank_seconds)))
    if not j.root:
        s.close()
        if teacher is not None:
            teacher.close()
        return 0
    if a.profile:
        trace = a.out + ".trace.json"
        say(f"profile of {step - start} step(s) (the step's kernels; "
            f"docs/qcc-run.md#profiling):\n" + s.profile_table(step_seconds).rstrip())
        try:
            s.write_profile_trace(trace)
        except RuntimeError as e:
            raise CliError(str(e)) from None
        say(f"trace of the kernel calls: {trace}")
    if a.save_every or a.resume or a.checkpoint or a.stop_after:
        s.save_checkpoint(ckpt)
        say(f"checkpoint: {ckpt} (step {s.steps})")
    if lora:
        s.save_lora(a.out)
        say(f"LoRA adapter: {a.out}")
        if a.merged:
            s.save_merged(a.merged)
            say(f"merged model: {a.merged}")
    else:
        s.save(a.out)
        say(f"trained model: {a.out}")
    steps_l, losses_l, vsteps, vppl = read_log(log_path)
    from ..plot import loss_curve_png
    loss_curve_png(plot_path, steps_l, losses_l,
                   title=f"{os.path.basename(a.model)}: "
                         + (f"LoRA rank {opts.lora_rank}" if lora else "full-weight"),
                   target=a.target_loss, val_steps=vsteps, val_ppl=vppl,
                   ylabel=f"loss (nats per {unit})")
    say(f"loss log: {log_path}; loss curve: {plot_path}")
    done = [v for v in losses_l if math.isfinite(v)]
    if done:
        tail = done[-min(10, len(done)):]
        say(f"loss: {done[0]:.3f} at the first step -> {sum(tail) / len(tail):.3f} "
            f"(mean of the last {len(tail)}) after {steps_l[-1]} steps; "
            f"training {fmt_duration(train_s)}, compile {fmt_duration(compile_s)}"
            + (f"; {skipped} step(s) skipped" if skipped else ""))
        if a.target_loss is not None:
            reached = sum(tail) / len(tail) < a.target_loss
            say(f"target {a.target_loss}: " + ("reached" if reached else
                f"NOT reached (gap {sum(tail) / len(tail) - a.target_loss:.3f})"))
    if len(vppl) >= 2:
        say(f"validation perplexity: {vppl[0]:.3f} at step {vsteps[0]} -> "
            f"{vppl[-1]:.3f} at step {vsteps[-1]} "
            f"({100 * (vppl[-1] / vppl[0] - 1):+.1f}%)")
    s.close()
    if teacher is not None:
        teacher.close()
    release_memory()
    if a.sample:
        from .generate import generate
        if lora:
            text = generate(a.model, a.prompt, a.sample, seq=a.seq, seed=a.seed,
                            opt=a.opt, lora=a.out)
        else:
            text = generate(a.out, a.prompt, a.sample, seq=a.seq, seed=a.seed,
                            opt=a.opt)
        say("sample from the trained model:")
        say("  " + text.replace("\n", "\n  "))
    return 0


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        rc = run(a)
        job().finalize()
        return rc
    except JobError as e:
        # Every rank found it alike (or learnt it at a settle point).
        if job().root:
            print(f"qcc-train: error: {e}", file=sys.stderr)
        job().finalize()
        return 1
    except CliError as e:
        j = job() if distributed.joined() else None
        if j is None or not j.parallel:
            print(f"qcc-train: error: {e}", file=sys.stderr)
            return 1
        if j.starting:
            # The other ranks are on their way to the next settle point.
            try:
                j.settle(str(e))
            except JobError as je:
                if j.root:
                    print(f"qcc-train: error: {je}", file=sys.stderr)
            j.finalize()
            return 1
        print(f"qcc-train: rank {j.rank}: error: {e}", file=sys.stderr)
        j.abort(1)
    except KeyboardInterrupt:
        print("qcc-train: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
