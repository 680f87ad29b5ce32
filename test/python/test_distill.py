"""qcc-train --teacher (knowledge distillation) on small models: the loss
of the first step equals α·CE + β·τ²·KL computed in numpy from the two
models' logits (each from its own compiled forward pass), for a teacher
with its own LM head (q8_0 or f32) and for one that shares the student's;
LoRA-QAT's merged model keeps the low-bit base's types; a model
distilled from itself starts at KL 0; and the errors. The op's gradient is
checked against finite differences in test_frontend_grad.py."""

import csv
import os

import numpy as np
import pytest

import qcc_step  # noqa: F401  (source-tree imports)
from qcc_step import ROOT
from qcc import data as textdata
from qcc import models, train
from qcc.compiler import compile_mlir
from qcc.models import tiny
from qcc.runtime import Session
from qcc.tokenizer import for_model
from test_qcc_train import env  # noqa: F401  (the fixture)
from test_qcc_train import qcc_train as _qcc_train

CORPUS = os.path.join(ROOT, "data", "devils-dictionary.txt")
BATCH, SEQ = 2, 32


def qcc_train(env, *args):
    return _qcc_train(env, *map(str, args))


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    p = str(tmp_path_factory.mktemp("model") / "student-q4_0.gguf")
    tiny.make_model(p, "q4_0", d_model=64, n_layer=1, n_head=2, n_head_kv=1,
                    d_ff=128)
    return p


@pytest.fixture(scope="module", params=["q8_0", "f32"])
def teacher(request, tmp_path_factory, env):
    """The same architecture in q8_0 or f32, trained for 30 steps on the
    corpus: a teacher with its own head (quantized, or float) whose
    distributions are far from the untrained student's (near uniform)."""
    fmt = request.param
    d = tmp_path_factory.mktemp("model")
    init = str(d / f"init-{fmt}.gguf")
    tiny.make_model(init, fmt, d_model=64, n_layer=1, n_head=2, n_head_kv=1,
                    d_ff=128, seed=1)
    p = str(d / f"teacher-{fmt}.gguf")
    r = qcc_train(env, "--model", init, "--data", CORPUS, "--full", "--steps", 30,
                  "--batch", 8, "--seq", 32, "--lr", 1e-2, "-O", 0, "--out", p)
    assert r.returncode == 0, r.stderr
    return p


def first_loss(out):
    with open(str(out) + ".loss.csv") as f:
        return float(next(csv.DictReader(f))["loss"])


def logits_of(path, x):
    cfg, model, _ = models.load(path)
    so, _ = compile_mlir(train.build_forward(model, BATCH, SEQ), ["-O0"])
    with Session(so, path, "forward") as s:
        s.set_input("tokens", x)
        s.run()
        return s.result("logits", np.float32, (BATCH, SEQ, cfg.vocab)).astype(np.float64)


def reference(student, teacher, alpha, beta, tau):
    """The first step's loss, from the two models' logits on its batch."""
    cfg, _, info = models.load(student)
    tok = for_model(info.metadata, cfg.vocab)
    stream = textdata.pack(textdata.read_documents(CORPUS), tok)
    bos = tok.bos_id if getattr(tok, "add_bos", False) else None
    x, y = textdata.windows_at(stream, 0, BATCH, SEQ, 0, bos)

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))
    ys, zt = logits_of(student, x), logits_of(teacher, x)
    ce = -np.take_along_axis(log_softmax(ys), y[..., None].astype(np.int64), -1)[..., 0]
    lp, lq = log_softmax(zt / tau), log_softmax(ys / tau)
    kl = (np.exp(lp) * (lp - lq)).sum(-1)
    return float((alpha * ce + beta * tau * tau * kl).mean()), float(kl.mean())


COMMON = ["--data", CORPUS, "--steps", 1, "--batch", BATCH, "--seq", SEQ,
          "-O", 0, "--lora-rank", 4, "--lr", 1e-3]


def test_first_loss_matches_numpy_own_head(tmp_path, env, student, teacher):
    """LoRA's B starts at zero, so step 1 sees the base model: its loss is
    the formula's on the student's and the teacher's logits (q4_0 and q8_0
    heads: the teacher's is an input of the step)."""
    out, merged = tmp_path / "a.gguf", tmp_path / "merged.gguf"
    r = qcc_train(env, "--model", student, "--teacher", teacher, *COMMON,
                  "--task-weight", 0.3, "--kd-weight", 0.7,
                  "--kd-temperature", 2.0, "--out", out, "--merged", merged)
    assert r.returncode == 0, r.stderr
    assert "its own (" in r.stdout
    # LoRA-QAT: the adapter merged and requantized into the base's types.
    import gguf
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(student).tensors}
    assert {t.name: t.tensor_type for t in gguf.GGUFReader(str(merged)).tensors} == types
    want, kl = reference(student, teacher, 0.3, 0.7, 2.0)
    assert kl > 0.3  # the KL term weighs in (~10^4 times the tolerance)
    # f32 logits over a 256-byte vocabulary against float64.
    assert first_loss(out) == pytest.approx(want, rel=2e-5)


def test_self_distillation_starts_at_zero(tmp_path, env, student):
    """Teacher = student: the shared head (no copy), and KL 0 at step 1."""
    out = tmp_path / "b.gguf"
    r = qcc_train(env, "--model", student, "--teacher", student, *COMMON,
                  "--task-weight", 0, "--kd-weight", 1, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "the student's own" in r.stdout
    assert abs(first_loss(out)) < 1e-5


def test_full_weight_needs_a_frozen_head(tmp_path, env, student, teacher):
    args = ["--model", student, "--teacher", teacher, "--data", CORPUS,
            "--steps", 1, "--batch", BATCH, "--seq", SEQ, "-O", 0, "--full"]
    r = qcc_train(env, *args, "--out", tmp_path / "c.gguf")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "qcc-train: error: distillation needs the fused LM head: the head "
        "weight (the tied token_embd.weight) must be frozen (--freeze "
        "token_embd) and carry no LoRA"]
    out = tmp_path / "d.gguf"
    r = qcc_train(env, *args, "--freeze", "^output\\.", "--out", out)
    assert r.returncode == 0, r.stderr
    want, _ = reference(student, teacher, 0.5, 0.5, 2.0)  # the defaults
    assert first_loss(out) == pytest.approx(want, rel=2e-5)


@pytest.mark.parametrize("flags,code,message", [
    (["--teacher", "/no/such.gguf"], 1, "--teacher /no/such.gguf: no such file"),
    (["--kd-temperature", "0"], 2, "--kd-temperature must be a positive number"),
    (["--kd-weight", "-1"], 2, "--kd-weight must be zero or positive"),
    (["--kd-weight", "0", "--task-weight", "0", "--teacher", "X"], 2,
     "cannot both be 0"),
])
def test_errors(tmp_path, env, student, flags, code, message):
    r = qcc_train(env, "--model", student, *COMMON, *flags,
                  "--out", tmp_path / "e.gguf")
    assert r.returncode == code, r.stderr
    assert message in r.stderr.strip().splitlines()[-1]


def test_other_vocabulary_is_refused(tmp_path, env, student):
    from assets import gemma3
    r = qcc_train(env, "--model", student, "--teacher", gemma3(), *COMMON,
                  "--out", tmp_path / "f.gguf")
    assert r.returncode == 1
    assert "its vocabulary differs from the model's" in r.stderr


def test_output_over_the_teacher_is_refused(tmp_path, env, student):
    import shutil
    t = tmp_path / "teacher.gguf"
    shutil.copy(student, t)
    before = t.read_bytes()
    r = qcc_train(env, "--model", student, "--teacher", t, *COMMON, "--out", t)
    assert r.returncode == 1
    assert "refusing to overwrite the teacher" in r.stderr.strip().splitlines()[-1]
    assert t.read_bytes() == before
