"""Checkpoints through qcc-run: --checkpoint / --save-every / --resume.

A checkpoint holds the trainable weights (q4_K blocks), the carry, params,
optimizer state, the RNG state and the step counters; resuming from one in a
new process continues bit for bit like an uninterrupted run, a process
killed while it saves one leaves the previous one intact, and a checkpoint
that does not belong to the step or model is refused with one line."""

import glob
import hashlib
import os
import signal
import subprocess

import gguf
import numpy as np
import pytest

from qcc_step import ROOT, compile_step, find_tool
from test_qcc_run import K, N, q4k_model, write_gguf

QCC_RUN = find_tool("qcc-run")
PY = os.path.join(ROOT, ".venv", "bin", "python")


def run(*args, env=None):
    return subprocess.run([QCC_RUN, *map(str, args)], capture_output=True,
                          text=True, env=env)


def data(path):
    with open(path, "rb") as f:
        return f.read()


def losses(stderr):
    return [line.split("  ")[1] for line in stderr.splitlines()
            if line.startswith("step ")]


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    """The SGD step with a q4_K weight and a bf16 carry, and the LoRA step
    with f32 params, AdamW moments and an i32 step counter."""
    d = tmp_path_factory.mktemp("steps")
    out = {}
    for name in ("train_linear", "train_lora"):
        with open(os.path.join(ROOT, "examples", name + ".mlir")) as f:
            out[name] = compile_step(f.read(), d / name).path
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return q4k_model(tmp_path_factory.mktemp("model"), "blk.0.ffn_up.weight",
                     (N, K), seed=0)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("inputs") / "inputs.gguf"
    subprocess.run([PY, os.path.join(ROOT, "examples",
                                     "make_regression_inputs.py"),
                    str(model), str(path), "--rank", "4", "--lr", "0.01",
                    "--weight-decay", "0.01"], check=True)
    return path


@pytest.mark.parametrize("step", ["train_linear", "train_lora"])
def test_resume_is_bit_exact(steps, model, inputs, tmp_path, step):
    """6 steps in one process vs 3 steps, a checkpoint, and 3 more steps in
    a new process with --resume: the saved models, the final checkpoints
    (and for LoRA the adapters) are byte-identical, and so are the losses
    the resumed process prints for steps 4..6."""
    so = steps[step]
    common = ["--weights", model, "--inputs", inputs, "--seed", 11]
    extra = lambda tag: (["--save-lora", tmp_path / f"{tag}.lora.gguf"]
                         if step == "train_lora" else [])
    full = run(so, *common, "--steps", 6, "--checkpoint",
               tmp_path / "full.ckpt", "--save", tmp_path / "full.gguf",
               *extra("full"))
    assert full.returncode == 0, full.stderr
    half = run(so, *common, "--steps", 3, "--checkpoint",
               tmp_path / "half.ckpt")
    assert half.returncode == 0, half.stderr
    # --steps counts the steps after the checkpoint's; numbering goes on.
    resumed = run(so, *common, "--steps", 3, "--resume",
                  tmp_path / "half.ckpt", "--checkpoint",
                  tmp_path / "resumed.ckpt", "--save",
                  tmp_path / "resumed.gguf", *extra("resumed"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr and "after step 3" in resumed.stderr
    assert [l.split()[1] for l in resumed.stderr.splitlines()
            if l.startswith("step ")] == ["4/6", "5/6", "6/6"]

    assert losses(resumed.stderr) == losses(full.stderr)[3:]
    assert data(tmp_path / "resumed.ckpt") == data(tmp_path / "full.ckpt")
    assert data(tmp_path / "resumed.gguf") == data(tmp_path / "full.gguf")
    if step == "train_lora":
        assert (data(tmp_path / "resumed.lora.gguf")
                == data(tmp_path / "full.lora.gguf"))
    # The checkpoint after step 3 is not the one after step 6: the
    # comparison above is not between two untouched states.
    assert data(tmp_path / "half.ckpt") != data(tmp_path / "full.ckpt")


def test_checkpoint_contents(steps, model, inputs, tmp_path):
    """What a checkpoint holds, read back with the gguf package: the q4_K
    weight and bf16 carry with their own types, the counters, the RNG state
    and the fingerprints; the weight equals the one --save wrote."""
    ckpt, saved = tmp_path / "c.ckpt", tmp_path / "m.gguf"
    proc = run(steps["train_linear"], "--weights", model, "--inputs", inputs,
               "--steps", 2, "--seed", 3, "--checkpoint", ckpt, "--save",
               saved)
    assert proc.returncode == 0, proc.stderr
    r = gguf.GGUFReader(str(ckpt))
    f = {k: v.contents() for k, v in r.fields.items()
         if k.startswith("qcc.checkpoint.")}
    assert f["qcc.checkpoint.version"] == 1
    assert f["qcc.checkpoint.entry"] == "train_step"
    assert f["qcc.checkpoint.steps"] == 2 and f["qcc.checkpoint.runs"] == 2
    # No params draw from the RNG here, so its state is still the seed.
    assert f["qcc.checkpoint.rng_state"] == 3
    assert len(f["qcc.checkpoint.step_fingerprint"]) == 16
    assert len(f["qcc.checkpoint.model_fingerprint"]) == 16
    assert f["qcc.checkpoint.roles"] == ["weight", "state"]
    t = {t.name: t for t in r.tensors}
    assert set(t) == {"blk.0.ffn_up.weight", "carry"}
    assert t["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.Q4_K
    assert t["carry"].tensor_type == gguf.GGMLQuantizationType.BF16
    assert [int(d) for d in t["carry"].shape] == [K, N]
    m = {t.name: t for t in gguf.GGUFReader(str(saved)).tensors}
    assert np.array_equal(t["blk.0.ffn_up.weight"].data,
                          m["blk.0.ffn_up.weight"].data)
    assert np.any(np.asarray(t["carry"].data) != 0)


def test_save_every(steps, model, inputs, tmp_path):
    """--save-every K saves after every K-th step (counted from the start of
    training) and at the end; the final checkpoint is the same as without
    the periodic saves."""
    ckpt = tmp_path / "every.ckpt"
    proc = run(steps["train_lora"], "--weights", model, "--inputs", inputs,
               "--steps", 5, "--checkpoint", ckpt, "--save-every", 2)
    assert proc.returncode == 0, proc.stderr
    saved = [l.split()[-1] for l in proc.stderr.splitlines()
             if l.startswith("qcc-run: checkpoint")]
    assert saved == ["2", "4", "5"], proc.stderr
    once = tmp_path / "once.ckpt"
    assert run(steps["train_lora"], "--weights", model, "--inputs", inputs,
               "--steps", 5, "--checkpoint", once).returncode == 0
    assert data(ckpt) == data(once)
    # Resumed after step 5 with --save-every 2: saves after 6 and at 7.
    proc = run(steps["train_lora"], "--weights", model, "--inputs", inputs,
               "--steps", 2, "--resume", ckpt, "--checkpoint", ckpt,
               "--save-every", 2)
    assert proc.returncode == 0, proc.stderr
    assert [l.split()[-1] for l in proc.stderr.splitlines()
            if l.startswith("qcc-run: checkpoint")] == ["6", "7"]


def test_kill_during_save_keeps_the_previous_checkpoint(steps, model, inputs,
                                                        tmp_path):
    """A process SIGKILLed while it saves a checkpoint over the previous one
    (its temporary written and fsynced, the rename not yet done) leaves the
    previous checkpoint byte-identical and loadable: resuming from it
    reproduces an uninterrupted run."""
    so = steps["train_lora"]
    common = ["--weights", model, "--inputs", inputs]
    ckpt = tmp_path / "ck.gguf"
    assert run(so, *common, "--steps", 2, "--checkpoint", ckpt).returncode == 0
    before = data(ckpt)

    env = dict(os.environ, QCC_TEST_SAVE_STALL_MS="60000")
    proc = subprocess.Popen([QCC_RUN, so, *map(str, common), "--steps", "3",
                             "--resume", str(ckpt), "--checkpoint", str(ckpt),
                             "--save-every", "1"],
                            stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if "stalling" in line:
                break
        # The new checkpoint is complete in its temporary, not yet renamed.
        temps = glob.glob(str(tmp_path / ".ck.gguf.tmp-*"))
        assert len(temps) == 1, lines
        assert os.path.getsize(temps[0]) == len(before)
        assert data(temps[0]) != before
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert "step 3/5" in "".join(lines)
    assert data(ckpt) == before

    # The surviving checkpoint resumes exactly like an uninterrupted run.
    resumed = tmp_path / "resumed.ckpt"
    assert run(so, *common, "--steps", 2, "--resume", ckpt, "--checkpoint",
               resumed).returncode == 0
    straight = tmp_path / "straight.ckpt"
    assert run(so, *common, "--steps", 4, "--checkpoint",
               straight).returncode == 0
    assert data(resumed) == data(straight)


def one_error(proc):
    """The single stderr line of a failed run."""
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_resume_errors(steps, model, inputs, tmp_path):
    """A checkpoint of another model, step library or entry, a file that is
    not a checkpoint, a truncated one and one with a tensor missing or of
    the wrong type: each is refused with one line naming the reason."""
    lora, linear = steps["train_lora"], steps["train_linear"]
    ckpt = tmp_path / "lora.ckpt"
    assert run(lora, "--weights", model, "--inputs", inputs, "--steps", 1,
               "--checkpoint", ckpt).returncode == 0

    # Another model with the same tensor names, types and shapes.
    other = q4k_model(tmp_path, "blk.0.ffn_up.weight", (N, K), seed=9)
    msg = one_error(run(lora, "--weights", other, "--inputs", inputs,
                        "--resume", ckpt))
    assert "it was trained on a different model" in msg, msg
    assert msg.startswith(f"qcc-run: error: checkpoint {ckpt}: ")

    msg = one_error(run(linear, "--weights", model, "--inputs", inputs,
                        "--resume", ckpt))
    assert "it was saved by a different step (manifest fingerprint" in msg
    assert "resume with the step library that wrote it" in msg

    with open(os.path.join(ROOT, "examples", "train_lora.mlir")) as f:
        renamed = compile_step(f.read().replace("@train_step", "@lora_step"),
                               tmp_path / "renamed").path
    msg = one_error(run(renamed, "--weights", model, "--inputs", inputs,
                        "--resume", ckpt))
    assert ("it was saved from entry 'train_step'; this session runs "
            "'lora_step'") in msg

    msg = one_error(run(lora, "--weights", model, "--inputs", inputs,
                        "--resume", model))
    assert "not a qcc checkpoint (no qcc.checkpoint.version)" in msg

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data(ckpt)[:1000])
    msg = one_error(run(lora, "--weights", model, "--inputs", inputs,
                        "--resume", truncated))
    assert msg.startswith(f"qcc-run: error: cannot read checkpoint "
                          f"{truncated}: rule "), msg

    # Rewritten with the gguf package: the same keys, one tensor dropped or
    # retyped.
    def rewrite(path, change):
        r = gguf.GGUFReader(str(ckpt))
        w = gguf.GGUFWriter(str(path), arch="unused")
        w.kv_data[0].clear()
        for key, field in r.fields.items():
            if key.startswith("qcc."):
                vtype = field.types[0]
                sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
                w.add_key_value(key, field.contents(), vtype, sub_type=sub)
        for t in r.tensors:
            arr = np.asarray(t.data).copy()
            arr = change(t.name, arr)
            if arr is not None:
                w.add_tensor(t.name, arr)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    missing = tmp_path / "missing.ckpt"
    rewrite(missing, lambda n, a: None if n == "lora_b.adam_v" else a)
    msg = one_error(run(lora, "--weights", model, "--inputs", inputs,
                        "--resume", missing))
    assert "malformed: it has no tensor 'lora_b.adam_v'" in msg, msg

    retyped = tmp_path / "retyped.ckpt"
    rewrite(retyped, lambda n, a: a.astype(np.float16)
            if n == "lora_a.adam_m" else a)
    msg = one_error(run(lora, "--weights", model, "--inputs", inputs,
                        "--resume", retyped))
    assert ("malformed: tensor 'lora_a.adam_m' is f16 ne [256, 8]; the step "
            "expects f32 ne [256, 8]") in msg, msg


def test_checkpoint_flag_errors(steps, model, inputs, tmp_path):
    """--save-every needs --checkpoint and a positive count (usage errors,
    status 2); a checkpoint onto the model is refused and the model stays
    as it was."""
    so = steps["train_lora"]
    assert run(so, "--weights", model, "--save-every", 2).returncode == 2
    assert run(so, "--weights", model, "--checkpoint", tmp_path / "c",
               "--save-every", 0).returncode == 2
    assert run(so, "--weights", model, "--seed", "-1").returncode == 2
    before = hashlib.sha256(data(model)).hexdigest()
    proc = run(so, "--weights", model, "--inputs", inputs, "--checkpoint",
               model)
    assert proc.returncode == 1
    msg = proc.stderr.strip().splitlines()[-1]
    assert "cannot save checkpoint" in msg and "refusing to replace" in msg
    assert hashlib.sha256(data(model)).hexdigest() == before
