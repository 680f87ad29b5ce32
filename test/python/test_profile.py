"""qcc --profile (qcc-profile-kernels) with qcc-run --profile and qcc-train
--profile: the counters count every kernel call, the work per call matches
the shapes, the trace holds one event per call in order, and a profiled
step computes the same bits as the plain one."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import qcc_step  # noqa: F401  (source-tree imports)
from qcc_step import ROOT, compile_step, find_tool
from test_qcc_run import K, N, q4k_model
from test_qcc_train import env, model  # noqa: F401  (fixtures)

QCC = find_tool("qcc")
QCC_RUN = find_tool("qcc-run")
PY = os.path.join(ROOT, ".venv", "bin", "python")
STEPS = 5


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    """examples/train_linear.mlir compiled plain and with --profile, its
    q4_K model and its inputs."""
    d = tmp_path_factory.mktemp("profile")
    with open(os.path.join(ROOT, "examples", "train_linear.mlir")) as f:
        text = f.read()
    plain = compile_step(text, d / "plain").path
    src = d / "train_linear.mlir"
    src.write_text(text)
    profiled = d / "profiled.so"
    subprocess.run([QCC, str(src), "-o", str(profiled), "--profile"], check=True)
    weights = q4k_model(d, "blk.0.ffn_up.weight", (N, K), seed=0)
    inputs = d / "inputs.gguf"
    subprocess.run([PY, os.path.join(ROOT, "examples", "make_regression_inputs.py"),
                    str(weights), str(inputs)], check=True)
    return dict(plain=plain, profiled=str(profiled), weights=weights,
                inputs=inputs)


def run(*args):
    return subprocess.run([QCC_RUN, *map(str, args)], capture_output=True,
                          text=True)


def table_rows(stderr):
    """{op: (calls, ms)} of the table qcc-run prints."""
    rows = {}
    for line in stderr.splitlines():
        m = re.match(r"^(\d+)\s+(\S+)\s+(\d+)\s+([0-9.]+)\s", line)
        if m:
            rows.setdefault(m[2], []).append((int(m[3]), float(m[4])))
    return rows


def test_qcc_run_profile_counts_every_call(linear, tmp_path):
    trace = tmp_path / "trace.json"
    r = run(linear["profiled"], "--weights", linear["weights"], "--inputs",
            linear["inputs"], "--steps", STEPS, "--profile-trace", trace)
    assert r.returncode == 0, r.stderr
    assert f"qcc-run: profile of {STEPS} step(s)" in r.stderr
    rows = table_rows(r.stderr)
    # The step's qmatmul and its fused weight update, once per step each.
    assert [c for c, _ in rows["qcc.qmatmul"]] == [STEPS]
    assert [c for c, _ in rows["qcc.weight_update"]] == [STEPS]
    m = re.search(r"kernels: ([0-9.]+) ms in all of (\d+) ms of steps", r.stderr)
    assert m and float(m[1]) <= float(m[2]) + 1.0
    # One complete event per kernel call, in call order, none overlapping.
    events = json.loads(trace.read_text())["traceEvents"]
    total_calls = sum(c for v in rows.values() for c, _ in v)
    assert len(events) == total_calls
    assert all(e["ph"] == "X" and e["dur"] >= 0 for e in events)
    for a, b in zip(events, events[1:]):
        assert a["ts"] + a["dur"] <= b["ts"] + 1e-3
    assert any(e["name"].startswith("qcc.qmatmul ") for e in events)


def test_profile_work_per_call_matches_the_shapes(linear):
    """Through the runtime API: the qmatmul of x [8, K] by W [N, K] does
    2·8·N·K flops and moves x, W's q4_K blocks (144 bytes per 256) and y."""
    from qcc.runtime import Session
    gguf_in = __import__("gguf").GGUFReader(str(linear["inputs"]))
    with Session(linear["profiled"], linear["weights"]) as s:
        for t in gguf_in.tensors:
            try:
                s.set_input(t.name, np.array(t.data))
            except RuntimeError:
                pass  # not an argument of this step (the LoRA step's)
        s.run()
        prof = {k["op"]: k for k in s.profile()}
    mm = prof["qcc.qmatmul"]
    assert mm["calls"] == 1 and mm["ns"] > 0
    assert mm["flops"] == 2 * 8 * N * K
    assert mm["bytes"] == 8 * K * 4 + N * K // 256 * 144 + 8 * N * 4
    assert mm["loc"].endswith("train_linear.mlir:24:8")
    with Session(linear["plain"], linear["weights"]) as s:
        assert s.profile() is None and s.profile_table() is None


def test_profiled_step_computes_the_same_bits(linear, tmp_path):
    outs = []
    for step in (linear["plain"], linear["profiled"]):
        out = tmp_path / (os.path.basename(step) + ".gguf")
        r = run(step, "--weights", linear["weights"], "--inputs",
                linear["inputs"], "--steps", STEPS, "--save", out)
        assert r.returncode == 0, r.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_profile_errors(linear, tmp_path):
    r = run(linear["plain"], "--weights", linear["weights"], "--inputs",
            linear["inputs"], "--profile")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"qcc-run: error: {linear['plain']} was not compiled with qcc --profile: "
        "recompile it with that flag to time its kernels"]
    src = os.path.join(ROOT, "examples", "train_linear.mlir")
    r = subprocess.run([QCC, src, "-o", str(tmp_path / "x.so"), "--profile",
                        "--target=cuda"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "--profile times CPU steps" in r.stderr
    assert not (tmp_path / "x.so").exists()


def test_qcc_train_profile(env, model, tmp_path):  # noqa: F811
    out = tmp_path / "p.gguf"
    r = subprocess.run([sys.executable, "-m", "qcc.cli.train", "--model", model,
                        "--data", os.path.join(ROOT, "data", "devils-dictionary.txt"),
                        "--full", "--steps", "3", "--batch", "2", "--seq", "16",
                        "--out", str(out), "-O", "0", "--profile"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "profile of 3 step(s)" in r.stdout
    # The fused update of the embedding, by the tensor's name; its kernel is
    # shared with the same-shaped output projection's: 2 calls a step.
    line = next(l for l in r.stdout.splitlines()
                if "update token_embd.weight" in l)
    assert re.match(r"^\d+\s+qcc.weight_update\s+6\s", line), line
    events = json.loads(open(str(out) + ".trace.json").read())["traceEvents"]
    assert len(events) > 0
