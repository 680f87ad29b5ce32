"""One training step of a model as one MLIR function.

`build_train_step(model, batch, seq, options)` traces the model's forward
pass on a batch of token ids, the mean cross-entropy of the next tokens,
its backward pass (qcc.autodiff) and, for every trainable tensor, the
update:

- a quantized weight W (any GGUF block format): the gradient with respect
  to Ŵ (a contraction gyᵀ·x), the straight-through estimator
  `qcc.ste_grad MODE`, the optimizer rule as elementwise linalg (qcc.optim,
  moments in bf16 by default), and `qcc.carry_update` with a dense (bf16 or
  f32) or Johnson-Lindenstrauss carry; the compiler fuses the chain into one
  `qcc.weight_update` that never materializes the f32 gradient. With
  carry "none" the update is `qcc.requant(Ŵ + delta)` (plain requantization,
  for comparison: updates smaller than a quantization step are lost);
- a float tensor (norm weights, biases, f32 weights, LoRA matrices): the
  optimizer rule with f32 moments, W + delta.

Entry `train_step` (docs/runtime.md roles):

| argument | role | |
|---|---|---|
| tokens, targets | input | i32 [B, T]: targets[b, t] = tokens[b, t + 1] of the text |
| lr, adam.bc1, adam.bc2 | input | f32 scalars: learning rate; 1 - β1ᵗ, 1 - β2ᵗ (AdamW) |
| the model's weights | weight | by GGUF name; trainable ones come back as results |
| NAME.carry, NAME.adam_m, NAME.adam_v, NAME.momentum | state | zero at the start |
| NAME.lora_a, NAME.lora_b | param | LoRA (qcc.init, qcc.lora.* attributes) |

Results: `loss` (tensor<f32>, mean nats per token) first, then every
updated weight, param and state under its argument's name.
"""

import math
import re
from dataclasses import dataclass, field

import numpy as np

from . import autodiff, emit, ir, optim
from . import functional as F
from .ir import Location


@dataclass
class TrainOptions:
    method: str = "full"            # "full" or "lora"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple = ("attn_q", "attn_k", "attn_v", "attn_output")
    optimizer: str = "adamw"        # "adamw", "momentum" or "sgd"
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0       # on 2-D weights only
    momentum: float = 0.9
    ste: str = "identity"           # "identity", "clipped" or "ewgs"
    ste_threshold: float = 1.0
    ste_lambda: float = 0.1
    carry: str = "bf16"             # "bf16", "f32", "jl" or "none"
    jl_dim: int = 16
    jl_chunk: int = 256
    jl_seed: int = 0
    state_dtype: str = "bf16"       # optimizer moments of quantized weights
    train_norms: bool = True
    # Regular expressions over GGUF tensor names (re.search): only tensors
    # matching `train` (all when None) and not matching `freeze` train; with
    # LoRA they choose which targeted layers get an adapter, by weight name.
    train: str = None
    freeze: str = None

    def selects(self, name):
        """Whether the tensor `name` is chosen by --train / --freeze."""
        if self.train is not None and not re.search(self.train, name):
            return False
        return self.freeze is None or not re.search(self.freeze, name)

    def validate(self):
        checks = [
            (self.method in ("full", "lora"), f"method {self.method!r}"),
            (self.optimizer in ("adamw", "momentum", "sgd"),
             f"optimizer {self.optimizer!r}"),
            (self.ste in ("identity", "clipped", "ewgs"), f"ste {self.ste!r}"),
            (self.carry in ("bf16", "f32", "jl", "none"), f"carry {self.carry!r}"),
            (self.state_dtype in ("bf16", "f32"),
             f"state dtype {self.state_dtype!r}"),
            (self.lora_rank > 0, f"LoRA rank {self.lora_rank}"),
        ]
        if self.ste == "lsq":
            raise ValueError(
                "unsupported training option: ste 'lsq' (the dialect computes "
                "block-scale gradients, but a stable scale optimizer needs each "
                "block's scale, which the IR cannot read; use identity, clipped "
                "or ewgs)")
        for ok, what in checks:
            if not ok:
                raise ValueError(f"unsupported training option: {what}")
        for flag, pattern in (("--train", self.train), ("--freeze", self.freeze)):
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise ValueError(f"{flag} {pattern!r}: not a regular "
                                     f"expression ({e})") from None


@dataclass
class StepProgram:
    """The MLIR of a step and what the host needs to drive it."""
    text: str
    entry: str
    batch: int
    seq: int
    vocab: int
    scalars: list
    trainable: list = field(default_factory=list)
    options: TrainOptions = None


LORA_KEYS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate",
             "ffn_up", "ffn_down", "output")


def _here(name):
    loc = ir.user_location()
    return Location(*loc, name=name)


class _Updater:
    """Emits the update of one trainable tensor through ir.custom."""

    def __init__(self, g, opts, lr, bc1, bc2):
        self.g, self.o, self.lr, self.bc1, self.bc2 = g, opts, lr, bc1, bc2

    def scalars(self):
        return [s for s in (self.lr, self.bc1, self.bc2) if s is not None]

    def states(self, leaf, dtype):
        o, g, n, s = self.o, self.g, leaf.attrs["name"], leaf.shape
        if o.optimizer == "adamw":
            return [g.arg(n + ".adam_m", s, dtype, role="state"),
                    g.arg(n + ".adam_v", s, dtype, role="state")]
        if o.optimizer == "momentum":
            return [g.arg(n + ".momentum", s, dtype, role="state")]
        return []

    def rule(self, em, grad, states, w_f32, shape, state_dtype, decay):
        """delta and new states from the optimizer (qcc.optim)."""
        o = self.o
        lr = em.name(self.lr)
        if o.optimizer == "adamw":
            d, m2, v2 = optim.adamw(
                em, grad, states[0], states[1], lr, shape, em.name(self.bc1),
                em.name(self.bc2), o.beta1, o.beta2, o.eps,
                weight_decay=o.weight_decay if decay else 0.0,
                w=w_f32 if decay and o.weight_decay else None,
                state_dtype=state_dtype)
            return d, [m2, v2]
        if o.optimizer == "momentum":
            d, m2 = optim.momentum(em, grad, states[0], lr, o.momentum, shape,
                                   state_dtype)
            return d, [m2]
        return optim.sgd(em, grad, lr, shape), []

    def quantized(self, w, grad):
        o, g, name = self.o, self.g, w.attrs["name"]
        shape, qty = w.shape, emit.type_str(w.shape, w.dtype)
        fty = emit.type_str(shape, "f32")
        carry_shape, jl = shape, ""
        if o.carry == "jl":
            k = shape[-1]
            if k % o.jl_chunk:
                raise ValueError(f"{name}: {k} columns are not a multiple of "
                                 f"the JL chunk {o.jl_chunk}")
            carry_shape = shape[:-1] + ((k // o.jl_chunk) * o.jl_dim,)
            jl = (f" {{jl = #qcc.jl<dim = {o.jl_dim}, chunk = {o.jl_chunk}, "
                  f"seed = {o.jl_seed}>}}")
        carry_dtype = "f32" if o.carry == "f32" else "bf16"
        ins = [grad, w]
        carry = None
        if o.carry != "none":
            carry = g.arg(name + ".carry", carry_shape, carry_dtype, role="state")
            ins.append(carry)
        states = self.states(w, o.state_dtype)
        base = len(ins)
        ins += states + self.scalars()
        decay = len(shape) == 2
        n_states = len(states)
        loc = _here(f"update {name}")

        def write(em, names):
            gname, wname = names[0], names[1]
            cname = names[2] if carry is not None else None
            snames = names[base:base + n_states]
            lc = em.loc_text(loc)
            d = em.fresh("ste")
            attrs, residual = "", ""
            if o.ste == "clipped":
                attrs = f" {{threshold = {emit.float_literal(o.ste_threshold, 'f32')} : f32}}"
            elif o.ste == "ewgs":
                attrs = f" {{lambda = {emit.float_literal(o.ste_lambda, 'f32')} : f32}}"
            if o.ste != "identity" and cname and not jl:
                residual = (f" residual({cname} : "
                            f"{emit.type_str(carry_shape, carry_dtype)})")
            em.emit(f"{d} = qcc.ste_grad {o.ste} {gname}, {wname}{residual}{attrs} "
                    f": {fty}, {qty} -> {fty}{lc}")
            wf = em.fresh("w")
            em.emit(f"{wf} = qcc.dequant {wname} : {qty} -> {fty}{lc}")
            delta, new_states = self.rule(em, d, snames, wf, shape,
                                          o.state_dtype, decay)
            if cname is None:
                def add(a):
                    b = optim._Body("lat")
                    return b.lines, [b.op("arith.addf", a[0], a[1])]
                latent = em.elementwise([(wf, "f32"), (delta, "f32")], shape,
                                        ["f32"], add, hint="latent")[0]
                w2 = em.fresh("requant")
                em.emit(f"{w2} = qcc.requant {latent} : {fty} -> {qty}{lc}")
                return [w2] + new_states
            w2, c2 = em.fresh("w"), em.fresh("carry")
            em.emit(f"{w2}, {c2} = qcc.carry_update {wname}, {cname}, {delta}{jl} "
                    f": {qty}, {emit.type_str(carry_shape, carry_dtype)}, {fty}{lc}")
            return [w2, c2] + new_states
        outs = [(shape, w.dtype)]
        results = [(name, None)]
        if carry is not None:
            outs.append((carry_shape, carry_dtype))
            results.append((carry.attrs["name"], "state"))
        for s in states:
            outs.append((s.shape, s.dtype))
            results.append((s.attrs["name"], "state"))
        vals = ir.custom(ins, outs, write, loc)
        return list(zip(vals, results))

    def float(self, p, grad):
        name, shape = p.attrs["name"], p.shape
        states = self.states(p, "f32")
        decay = len(shape) == 2
        loc = _here(f"update {name}")

        def write(em, names):
            gname, pname = names[0], names[1]
            delta, new_states = self.rule(em, gname, names[2:2 + len(states)],
                                          pname, shape, "f32", decay)

            def add(a):
                b = optim._Body("upd")
                return b.lines, [b.op("arith.addf", a[0], a[1])]
            p2 = em.elementwise([(pname, "f32"), (delta, "f32")], shape, ["f32"],
                                add, hint="upd")[0]
            return [p2] + new_states
        outs = [(shape, "f32")] + [(s.shape, s.dtype) for s in states]
        results = [(name, None)] + [(s.attrs["name"], "state") for s in states]
        vals = ir.custom([grad, p] + states + self.scalars(), outs, write, loc)
        return list(zip(vals, results))


def lora_layers(model, opts):
    """The (GGUF suffix, Linear) pairs that get a LoRA adapter: those of
    opts.lora_targets whose weight --train / --freeze select."""
    if not hasattr(model, "linear_layers"):
        raise ValueError("LoRA needs a model with linear_layers() (e.g. "
                         "qcc.models.llama.Llama)")
    keys = set(opts.lora_targets)
    bad = keys - set(LORA_KEYS)
    if bad:
        raise ValueError(f"unknown LoRA target(s) {sorted(bad)}; choose from "
                         f"{', '.join(LORA_KEYS)}")
    chosen = [(key, lin) for key, lin in model.linear_layers()
              if key in keys and opts.selects(lin.weight.name)]
    if not chosen:
        raise ValueError("no layer matches the LoRA targets"
                         + (" and --train / --freeze"
                            if opts.train is not None or opts.freeze is not None
                            else ""))
    return chosen


def _mark_lora(model, opts):
    chosen = lora_layers(model, opts)
    for p in model.parameters():
        p.trainable = False
    for _, lin in chosen:
        lin.lora(opts.lora_rank, opts.lora_alpha)


def _mark_full(model, opts):
    n = 0
    for p in model.parameters():
        if p.trainable and not opts.selects(p.name):
            p.trainable = False
        if p.trainable and len(p.shape) == 1 and not opts.train_norms:
            p.trainable = False
        n += p.trainable
    if not n:
        raise ValueError("no tensor of the model matches --train / --freeze")


def fused_head(model, grad):
    """Whether the LM head and cross-entropy of `model` can be the fused,
    chunked `linear_nll` (ir.linear_nll): the model exposes hidden() and
    head(), and the head's weight neither trains nor carries a LoRA."""
    if not (hasattr(model, "hidden") and hasattr(model, "head")):
        return False
    w, _ = model.head()
    out = getattr(model, "output", None)
    if out is not None and getattr(out, "lora_a", None) is not None:
        return False
    return not (grad and w.trainable)


@dataclass
class Distill:
    """Knowledge distillation from a teacher (qcc-train --teacher): the
    loss per position becomes α·CE + β·τ²·KL(teacher/τ ‖ student/τ) over
    the vocabulary, through ir.linear_distill. The teacher's final hidden
    states come in as the step's input `teacher.hidden` [B·T, Dt] (from
    build_teacher_hidden's step on the teacher's file); its LM head weight
    is the student's own when `shared_head` (the same tensor bytes: a
    student requantized from the teacher keeps the tied Q8_0 embedding),
    else the input `teacher.head` [V, Dt] of type `head_type`."""
    d_model: int
    head_type: str = "f32"
    shared_head: bool = True
    softcap: float = 0.0
    temperature: float = 2.0
    alpha: float = 0.5      # the cross-entropy's weight
    beta: float = 0.5       # the KL term's weight (times τ²)

    def validate(self):
        if not (self.temperature > 0 and self.alpha >= 0 and self.beta >= 0
                and self.alpha + self.beta > 0):
            raise ValueError("distillation: the temperature must be positive, "
                             "the weights non-negative and not both zero")


def build_teacher_hidden(model, batch, seq, entry="teacher_hidden"):
    """`teacher_hidden(tokens [B, T]) -> hidden [B·T, D]`: the final normed
    hidden states that the model's LM head reads, weights frozen (the
    teacher's half of distillation)."""
    with ir.Graph("f32") as g:
        tokens = g.input("tokens", (batch, seq), "i32")
        h = model.hidden(tokens)
        h = ir.reshape(h, (batch * seq, h.shape[-1]))
        text = emit.module([emit.Function(entry, [(h, "hidden")], graph=g)])
    return text


def token_nll(model, tokens, targets, vocab, grad, rows=None, distill=None):
    """nll [N] of each target: through the fused chunked head where
    fused_head() allows (the [N, V] logits never exist), otherwise from
    the model's logits. N = B·T, or with `rows` (i32 [N] indices into the
    B·T flattened positions) only those positions reach the head, and
    `targets` holds their N targets."""
    b, t = tokens.shape
    flat = ir.reshape(targets, (math.prod(targets.shape),))
    if fused_head(model, grad):
        w, cap = model.head()
        h = model.hidden(tokens)
        h = ir.reshape(h, (b * t, h.shape[-1]))
        if rows is not None:
            h = ir.gather(h, rows)
        if distill is not None:
            g = h.graph
            ht = g.input("teacher.hidden", (b * t, distill.d_model))
            wt = (w.traced() if distill.shared_head else
                  g.arg("teacher.head", (vocab, distill.d_model),
                        "f32" if distill.head_type == "float"
                        else distill.head_type, role="input"))
            return ir.linear_distill(h, w.traced(), flat, ht, wt, softcap=cap,
                                     teacher_softcap=distill.softcap,
                                     temperature=distill.temperature,
                                     alpha=distill.alpha, beta=distill.beta,
                                     grad=grad)
        return ir.linear_nll(h, w.traced(), flat, softcap=cap, grad=grad)
    if distill is not None:
        raise ValueError("distillation needs the fused LM head: the head "
                         "weight (the tied token_embd.weight) must be frozen "
                         "(--freeze token_embd) and carry no LoRA")
    logits = ir.reshape(model(tokens), (b * t, vocab))
    if rows is not None:
        logits = ir.gather(logits, rows)
    return F.logsumexp(logits) - ir.take_last(logits, flat)


def _gathered_rows(x, ranks, memo):
    """Every rank's rows of `x`, an operand of a weight-gradient
    contraction gyᵀ·x: a one-hot matrix is rebuilt from the gathered ids
    (V times fewer bytes), a concatenation of several uses gathers part by
    part (the rows of gy and x stay paired), and an operand that several
    weights share (the input of q, k and v) is gathered once (`memo`)."""
    # Each use flattens its operand anew: a reshape is known by its input.
    key = (x.inputs[0].index, x.shape) if x.op == "reshape" else (x.index,)
    if key in memo:
        return memo[key]
    if x.op == "one_hot":
        r = ir.one_hot(_gathered_rows(x.inputs[0], ranks, memo), x.attrs["n"],
                       x.dtype)
    elif x.op == "concat" and x.attrs["axis"] == 0:
        r = ir.concat([_gathered_rows(p, ranks, memo) for p in x.inputs], 0)
    else:
        r = ir.all_gather(x, ranks)
    memo[key] = r
    return r


def data_parallel_grad(leaf, grad, ranks, memo=None):
    """The gradient of `leaf` over the global batch, the same on every rank
    of a data-parallel job (docs/distributed.md), from this rank's `grad`
    (already scaled by 1/ranks). A quantized weight's gradient gyᵀ·x is
    never materialized (the compiler fuses it into the weight's update), so
    the rows of gy and x are gathered and contracted on every rank; any
    other gradient (LoRA matrices, norms) is summed over the ranks."""
    if leaf.quantized and autodiff._is_outer(grad):
        memo = {} if memo is None else memo
        gy, x = grad.inputs
        return ir.einsum("mn,mk->nk", _gathered_rows(gy, ranks, memo),
                         _gathered_rows(x, ranks, memo))
    return ir.all_reduce(grad, ranks)


def build_train_step(model, batch, seq, opts=None, entry="train_step",
                     vocab=None, distill=None, ranks=1):
    """The training step of `model` (a qcc.models.llama.Llama, or any
    nn.Module mapping i32 tokens [B, T] to logits [B, T, V]; V is
    model.cfg.vocab unless `vocab` is given) as a StepProgram; with
    `distill` (a Distill) its loss is distillation's. With `ranks` > 1 it
    is one rank's step of a data-parallel job: `batch` is this rank's share
    of the global batch, and its loss and updates are the global batch's
    (data_parallel_grad)."""
    opts = opts or TrainOptions()
    opts.validate()
    if distill is not None:
        distill.validate()
    if opts.method == "lora":
        _mark_lora(model, opts)
    else:
        _mark_full(model, opts)
    vocab = vocab or model.cfg.vocab
    with ir.Graph("f32") as g:
        tokens = g.input("tokens", (batch, seq), "i32")
        targets = g.input("targets", (batch, seq), "i32")
        loss = token_nll(model, tokens, targets, vocab, grad=True,
                         distill=distill).mean()
        lr = g.scalar("lr", "f32")
        scalars = ["lr"]
        bc1 = bc2 = None
        if opts.optimizer == "adamw":
            bc1, bc2 = g.scalar("adam.bc1", "f32"), g.scalar("adam.bc2", "f32")
            scalars += ["adam.bc1", "adam.bc2"]
        leaves = [g._param_leaves[id(p)] for p in model.parameters()
                  if p.trainable and id(p) in g._param_leaves]
        if ranks > 1:
            # The global loss is the mean of the ranks' means.
            grads = autodiff.grad(loss, leaves, seed=g.full((), 1.0 / ranks, loss.dtype))
            loss = ir.all_reduce(loss, ranks) * (1.0 / ranks)
        else:
            grads = autodiff.grad(loss, leaves)
        up = _Updater(g, opts, lr, bc1, bc2)
        gathered = {}  # data parallelism: operands gathered so far, by node
        results = [(loss, "loss", None)]
        trainable = []
        for leaf, gr in zip(leaves, grads):
            if gr is None:
                continue
            if ranks > 1:
                # Made next to the update that consumes it, so that each
                # weight's gathered rows live only until its update.
                gr = data_parallel_grad(leaf, gr, ranks, gathered)
            if leaf.quantized:
                pairs = up.quantized(leaf, gr)
            else:
                pairs = up.float(leaf, gr)
            trainable.append(leaf.attrs["name"])
            for val, (name, role) in pairs:
                results.append((val, name, role))
        fn = emit.Function(entry, results, graph=g)
        text = emit.module([fn])
    return StepProgram(text, entry, batch, seq, vocab, scalars, trainable, opts)


def build_token_nll(model, batch, seq, entry="token_nll", first=0):
    """`token_nll(tokens [B, T], targets [B, T - first]) -> nll [B, T - first]`:
    the negative log-likelihood (nats) of the targets of positions
    first..T-1 under the model, weights frozen; only those rows go through
    the LM head (llama-perplexity scores the second half of each chunk, so
    the head, most of this model's work, runs on half the rows). With
    `first` > 0 the step also takes `rows` (i32 [B·(T - first)]: b·T + t
    for each scored position, set it with scored_rows())."""
    if not 0 <= first < seq:
        raise ValueError(f"build_token_nll: first {first} outside [0, {seq})")
    with ir.Graph("f32") as g:
        tokens = g.input("tokens", (batch, seq), "i32")
        targets = g.input("targets", (batch, seq - first), "i32")
        rows = g.input("rows", (batch * (seq - first),), "i32") if first else None
        nll = token_nll(model, tokens, targets, model.cfg.vocab, grad=False,
                        rows=rows)
        nll = ir.reshape(nll, (batch, seq - first))
        text = emit.module([emit.Function(entry, [(nll, "nll")], graph=g)])
    return text


def scored_rows(batch, seq, first):
    """The `rows` input of build_token_nll(..., first): b·seq + t for
    t = first..seq-1 of each of the batch rows."""
    t = np.arange(first, seq, dtype=np.int32)
    return (np.arange(batch, dtype=np.int32)[:, None] * seq + t).reshape(-1)


def build_forward(model, batch, seq, entry="forward"):
    """`forward(tokens [B, T]) -> logits [B, T, V]`, weights frozen (bound
    zero-copy by the runtime): for evaluation and sampling."""
    with ir.Graph("f32") as g:
        tokens = g.input("tokens", (batch, seq), "i32")
        logits = model(tokens)
        text = emit.module([emit.Function(entry, [(logits, "logits")], graph=g)])
    return text


def build_next_logits(model, seq, entry="next_logits"):
    """`next_logits(tokens [1, T], last [1]) -> logits [1, V]`: the logits
    at position `last` only (the head runs on one row, not T), weights
    frozen: for sampling."""
    with ir.Graph("f32") as g:
        tokens = g.input("tokens", (1, seq), "i32")
        last = g.input("last", (1,), "i32")
        h = model.hidden(tokens)
        row = ir.gather(ir.reshape(h, (seq, h.shape[-1])), last)
        y = head_logits(model, row)
        text = emit.module([emit.Function(entry, [(y, "logits")], graph=g)])
    return text


def head_logits(model, rows):
    """The LM head on hidden rows [N, D] -> logits [N, V] (its own output
    projection or the tied embedding table, then the softcap if any)."""
    w, cap = model.head()
    out = getattr(model, "output", None)
    y = out(rows) if out is not None else F.linear(rows, w.traced())
    if cap:
        y = F.tanh(y * (1.0 / cap)) * cap
    return y
