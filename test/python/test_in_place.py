"""In-place results (docs/runtime.md): the compiler marks a result
`inplace` when a guarded, fused weight update writes it over its argument
safely; the runtime then keeps one buffer for both. Training in place gives
byte-identical models and checkpoints to training with separate result
buffers (--no-in-place), and a step whose loss is not finite still changes
nothing, because the guard stops the update before it writes."""

import os
import subprocess

import gguf
import numpy as np
import pytest

from qcc_step import ROOT, Step, compile_step, find_tool
from test_qcc_run import K, N, q4k_model, run, write_gguf

# examples/train_linear.mlir with an extra input added to the loss: a NaN
# there makes the loss non-finite while every gradient stays finite, which
# is exactly what only the guard can catch.
LOSS_BIAS = ('    %lr: f32 {qcc.name = "lr"})',
             '    %lr: f32 {qcc.name = "lr"},\n'
             '    %bias: tensor<f32> {qcc.name = "loss_bias"})')
BIASED = ("  %gy = linalg.generic {",
          "  %lb = tensor.extract %bias[] : tensor<f32>\n"
          "  %l = tensor.extract %loss[] : tensor<f32>\n"
          "  %ls = arith.addf %l, %lb : f32\n"
          "  %loss2 = tensor.from_elements %ls : tensor<f32>\n"
          "  %gy = linalg.generic {")
RETURN = ("  return %w2, %c2, %loss :", "  return %w2, %c2, %loss2 :")


def biased_step_text():
    text = open(os.path.join(ROOT, "examples", "train_linear.mlir")).read()
    assert LOSS_BIAS[0] in text and RETURN[0] in text and BIASED[0] in text
    return text.replace(*LOSS_BIAS).replace(*BIASED).replace(*RETURN)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("inplace")
    step = compile_step(biased_step_text(), d / "step")
    model = q4k_model(d, "blk.0.ffn_up.weight", (N, K), seed=4)
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (8, K)).astype(np.float32)
    target = rng.normal(0, 0.1, (8, N)).astype(np.float32)

    def inputs(name, bias):
        path = d / name
        write_gguf(path, {"x": (x, None), "target": (target, None),
                          "lr": (np.array([0.02], np.float32), None),
                          "loss_bias": (np.array([bias], np.float32), None)})
        return path
    return step, model, inputs("ok.gguf", 0.0), inputs("nan.gguf", np.nan)


def test_manifest_marks_guarded_updates_in_place(setup):
    step = setup[0]
    results = {r["name"]: r for r in step.entries["train_step"]["results"]}
    assert results["blk.0.ffn_up.weight"].get("inplace") is True
    assert results["carry"].get("inplace") is True
    assert "inplace" not in results["loss"]


def test_unfused_or_unsafe_results_are_not_in_place(tmp_path):
    """Without the fused (guarded) update, or when the weight is read after
    its update, nothing is marked."""
    text = biased_step_text()
    unfused = compile_step(text, tmp_path / "unfused",
                           "--fuse-weight-update=false")
    for r in unfused.entries["train_step"]["results"]:
        assert "inplace" not in r, r
    # Read the old weight after the update (as a second result): its
    # buffer must survive the update, so the weight is not in place.
    late = text.replace(
        'tensor<f32> {qcc.name = "loss"}) {',
        'tensor<f32> {qcc.name = "loss"}, tensor<f32> {qcc.name = "probe"}) {'
    ).replace(
        "  return %w2, %c2, %loss2 : !qcc.qtensor<512x256xq4_K>, "
        "tensor<512x256xbf16>, tensor<f32>",
        "  %late = qcc.dequant %w : !qcc.qtensor<512x256xq4_K> -> tensor<512x256xf32>\n"
        "  %c00 = arith.constant 0 : index\n"
        "  %lw = tensor.extract %late[%c00, %c00] : tensor<512x256xf32>\n"
        "  %probe = tensor.from_elements %lw : tensor<f32>\n"
        "  return %w2, %c2, %loss2, %probe : !qcc.qtensor<512x256xq4_K>, "
        "tensor<512x256xbf16>, tensor<f32>, tensor<f32>")
    assert "%probe" in late
    unsafe = compile_step(late, tmp_path / "late")
    results = {r["name"]: r for r in unsafe.entries["train_step"]["results"]}
    assert "inplace" not in results["blk.0.ffn_up.weight"]
    assert results["carry"].get("inplace") is True


def test_in_place_training_is_byte_identical(setup, tmp_path):
    step, model, ok, _ = setup
    outs = {}
    for mode in ("inplace", "separate"):
        out, ckpt = tmp_path / f"{mode}.gguf", tmp_path / f"{mode}.ckpt"
        extra = ["--no-in-place"] if mode == "separate" else []
        proc = run(step.path, "--weights", model, "--inputs", ok, "--steps", 5,
                   "--save", out, "--checkpoint", ckpt, *extra)
        assert proc.returncode == 0, proc.stderr
        outs[mode] = (open(out, "rb").read(), open(ckpt, "rb").read())
    assert outs["inplace"][0] == outs["separate"][0]
    assert outs["inplace"][1] == outs["separate"][1]
    old = {t.name: t for t in gguf.GGUFReader(str(model)).tensors}
    new = {t.name: t for t in gguf.GGUFReader(str(tmp_path / "inplace.gguf")).tensors}
    assert not np.array_equal(new["blk.0.ffn_up.weight"].data,
                              old["blk.0.ffn_up.weight"].data)


def test_non_finite_loss_leaves_in_place_state_unchanged(setup, tmp_path):
    """NaN only in the loss (gradients finite): every step is skipped and
    the weights and the carry (checkpointed) are exactly the starting ones."""
    step, model, _, nan = setup
    out, ckpt = tmp_path / "out.gguf", tmp_path / "c.ckpt"
    proc = run(step.path, "--weights", model, "--inputs", nan, "--steps", 3,
               "--save", out, "--checkpoint", ckpt)
    assert proc.returncode == 0, proc.stderr
    assert "3 of 3 step(s) skipped for non-finite values" in proc.stderr
    old = {t.name: t for t in gguf.GGUFReader(str(model)).tensors}
    new = {t.name: t for t in gguf.GGUFReader(str(out)).tensors}
    assert np.array_equal(new["blk.0.ffn_up.weight"].data,
                          old["blk.0.ffn_up.weight"].data)
    carry = {t.name: t for t in gguf.GGUFReader(str(ckpt)).tensors}["carry"]
    assert not np.asarray(carry.data).any()
