"""qcc-run: binding a compiled step to a GGUF model, training, saving.

Fixtures are written with the PyPI gguf package; the checks use it (and
numpy) as the independent reader. Every manifest/model mismatch has its
documented error (docs/qcc-run.md)."""

import hashlib
import os
import subprocess

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize, quantize

from qcc_step import ROOT, compile_step, find_tool

QCC_RUN = find_tool("qcc-run")
N, K = 512, 256


def write_gguf(path, tensors, arch="llama"):
    w = gguf.GGUFWriter(str(path), arch)
    for name, (data, qtype) in tensors.items():
        if qtype is None:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def train_so(tmp_path_factory):
    with open(os.path.join(ROOT, "examples", "train_linear.mlir")) as f:
        return compile_step(f.read(), tmp_path_factory.mktemp("step")).path


def q4k_model(directory, name, shape, seed):
    """A GGUF with tensor `name` in q4_K (quantized by qcc-gguf: the gguf
    package cannot encode q4_K) and an f32 norm that must stay untouched."""
    w = np.random.default_rng(seed).normal(0, 0.02, shape).astype(np.float32)
    f32 = directory / "f32.gguf"
    write_gguf(f32, {name: (w, None),
                     "output_norm.weight": (np.ones(K, np.float32), None)})
    path = directory / "model.gguf"
    subprocess.run([find_tool("qcc-gguf"), "quantize", str(f32), str(path),
                    "--type", "q4_K", "--tensors", "^blk"], check=True,
                   capture_output=True)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return q4k_model(tmp_path_factory.mktemp("model"), "blk.0.ffn_up.weight",
                     (N, K), seed=0)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("inputs") / "inputs.gguf"
    subprocess.run([os.path.join(ROOT, ".venv", "bin", "python"),
                    os.path.join(ROOT, "examples", "make_regression_inputs.py"),
                    str(model), str(path)], check=True)
    return path


def run(*args):
    return subprocess.run([QCC_RUN, *map(str, args)], capture_output=True,
                          text=True)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_training_lowers_the_loss_and_saves(train_so, model, inputs, tmp_path):
    """Forty steps through the q4_K blocks: the loss falls from its first
    value by more than 20x; the saved model reads back in the gguf package
    with the trained tensor changed (still q4_K) and everything else equal;
    the input model is unchanged."""
    before = sha(model)
    out = tmp_path / "trained.gguf"
    proc = run(train_so, "--weights", model, "--inputs", inputs,
               "--steps", 40, "--save", out)
    assert proc.returncode == 0, proc.stderr
    losses = [float(line.split("loss")[1].split()[0])
              for line in proc.stderr.splitlines() if line.startswith("step ")]
    assert len(losses) == 40
    assert losses[-1] < losses[0] / 20, losses
    assert sha(model) == before

    old = {t.name: t for t in gguf.GGUFReader(str(model)).tensors}
    new = {t.name: t for t in gguf.GGUFReader(str(out)).tensors}
    assert set(new) == set(old)
    trained = new["blk.0.ffn_up.weight"]
    assert trained.tensor_type == gguf.GGMLQuantizationType.Q4_K
    assert not np.array_equal(trained.data, old["blk.0.ffn_up.weight"].data)
    assert np.array_equal(new["output_norm.weight"].data,
                          old["output_norm.weight"].data)
    # Every metadata key of the model is there with its value (qcc adds
    # qcc.train.steps).
    def kv(path):
        fields = gguf.GGUFReader(str(path)).fields
        return {k: [bytes(p) for p in f.parts] for k, f in fields.items()
                if not k.startswith("GGUF.")}
    old_kv, new_kv = kv(model), kv(out)
    for key, value in old_kv.items():
        assert new_kv.get(key) == value, key
    assert set(new_kv) - set(old_kv) == {"qcc.train.steps"}
    # The saved weights fit the targets better than the original ones.
    ins = {t.name: t for t in gguf.GGUFReader(str(inputs)).tensors}
    x = np.asarray(ins["x"].data).reshape(8, K)
    target = np.asarray(ins["target"].data).reshape(8, N)
    def loss(t):
        w = dequantize(t.data, t.tensor_type).reshape(N, K)
        return ((x @ w.T - target) ** 2).sum() / 16
    assert loss(trained) < loss(old["blk.0.ffn_up.weight"]) / 20


def test_frozen_forward_binds_weights_from_the_file(tmp_path, model):
    """An entry that only reads the weight (no result of its name) runs with
    the weight bound read-only from the mapping (its output is checked
    against numpy in test_runtime_capi.py, where results are readable)."""
    so = compile_step(f"""
func.func @forward(%x: tensor<2x{K}xf32> {{qcc.name = "x"}},
                   %w: !qcc.qtensor<{N}x{K}xq4_K> {{qcc.name = "blk.0.ffn_up.weight"}})
    -> (tensor<2x{N}xf32> {{qcc.name = "y"}}) {{
  %y = qcc.qmatmul fwd %x, %w : tensor<2x{K}xf32>, !qcc.qtensor<{N}x{K}xq4_K> -> tensor<2x{N}xf32>
  return %y : tensor<2x{N}xf32>
}}""", tmp_path).path
    x = np.random.default_rng(1).standard_normal((2, K)).astype(np.float32)
    inp = tmp_path / "in.gguf"
    write_gguf(inp, {"x": (x, None)})
    proc = run(so, "--weights", model, "--inputs", inp, "--steps", 1)
    assert proc.returncode == 0, proc.stderr
    assert "0 trainable weight(s)" in proc.stderr


def mismatch_model(tmp_path, name, data, qtype):
    path = tmp_path / "bad.gguf"
    write_gguf(path, {name: (data, qtype)})
    return path


@pytest.mark.parametrize("case,expected", [
    ("missing", "error: weight 'blk.0.ffn_up.weight' is not in the model"),
    ("type", "error: weight 'blk.0.ffn_up.weight' is q8_0 in the model; the "
             "step expects q4_K"),
    ("shape", "error: weight 'blk.0.ffn_up.weight' has ne [512, 256] in the "
              "model; the step expects ne [256, 512] (shape [512, 256])"),
])
def test_manifest_mismatches(train_so, inputs, tmp_path, case, expected):
    """Each way a model can disagree with the step's manifest is named."""
    rng = np.random.default_rng(2)
    if case == "missing":
        path = mismatch_model(tmp_path, "other.weight",
                              np.zeros((N, K), np.float32), None)
    elif case == "type":
        w = rng.normal(0, 0.02, (N, K)).astype(np.float32)
        path = mismatch_model(tmp_path, "blk.0.ffn_up.weight",
                              quantize(w, gguf.GGMLQuantizationType.Q8_0),
                              gguf.GGMLQuantizationType.Q8_0)
    else:
        path = q4k_model(tmp_path, "blk.0.ffn_up.weight", (K, N), seed=3)
    proc = run(train_so, "--weights", path, "--inputs", inputs)
    assert proc.returncode == 1
    assert expected in proc.stderr, proc.stderr


def test_input_errors(train_so, model, tmp_path):
    """Missing inputs and wrongly sized inputs are named."""
    proc = run(train_so, "--weights", model)
    assert proc.returncode == 1
    assert "error: input 'x' has no value: give a tensor of that name in " \
           "--inputs" in proc.stderr
    bad = tmp_path / "bad_inputs.gguf"
    write_gguf(bad, {"x": (np.zeros((4, K), np.float32), None)})
    proc = run(train_so, "--weights", model, "--inputs", bad)
    assert proc.returncode == 1
    assert "error: 'x' expects 8192 bytes (f32 [8, 256]), got 4096" in proc.stderr


def test_cli_errors(train_so, model, tmp_path):
    """Bad flags exit 2; a file that is not a step library, a missing entry
    and a missing model exit 1 with the reason."""
    assert run(train_so, "--weights", model, "--steps", "0").returncode == 2
    assert run(train_so, "--weights", model, "--frobnicate").returncode == 2
    assert run("--weights", model).returncode == 2
    proc = run(model, "--weights", model)
    assert proc.returncode == 1 and "cannot load step library" in proc.stderr
    proc = run(train_so, "--weights", model, "--entry", "nope")
    assert proc.returncode == 1
    assert "the step has no entry 'nope' (entries: train_step)" in proc.stderr
    proc = run(train_so, "--weights", tmp_path / "absent.gguf")
    assert proc.returncode == 1 and "absent.gguf" in proc.stderr


def test_save_refuses_to_overwrite_the_model(train_so, model, inputs):
    """--save onto the model itself is refused and the model stays intact."""
    before = sha(model)
    proc = run(train_so, "--weights", model, "--inputs", inputs, "--save", model)
    assert proc.returncode == 1, proc.stderr
    assert sha(model) == before


@pytest.mark.parametrize("poison,expected", [
    ("target", "step 1 was skipped: the loss is not finite"),
    ("lr", "step 1 was skipped: qcc.carry_update: non-finite latent value"),
])
def test_non_finite_steps_are_skipped(train_so, model, inputs, tmp_path,
                                      poison, expected):
    """A NaN target (non-finite loss) or an infinite learning rate (non-finite
    update, refused by carry_update): every step is reported and skipped, the
    run finishes, and the saved weights are exactly the model's."""
    ins = {t.name: np.asarray(t.data).copy()
           for t in gguf.GGUFReader(str(inputs)).tensors}
    x = ins["x"].reshape(8, K).astype(np.float32)
    target = ins["target"].reshape(8, N).astype(np.float32)
    lr = np.array([0.02], np.float32)
    if poison == "target":
        target[3, 7] = np.nan
    else:
        lr[0] = np.inf
    bad = tmp_path / "bad_inputs.gguf"
    write_gguf(bad, {"x": (x, None), "target": (target, None), "lr": (lr, None)})
    out = tmp_path / "out.gguf"
    proc = run(train_so, "--weights", model, "--inputs", bad, "--steps", 3,
               "--save", out)
    assert proc.returncode == 0, proc.stderr
    assert expected in proc.stderr, proc.stderr
    assert "3 of 3 step(s) skipped for non-finite values" in proc.stderr
    old = {t.name: t for t in gguf.GGUFReader(str(model)).tensors}
    new = {t.name: t for t in gguf.GGUFReader(str(out)).tensors}
    assert np.array_equal(new["blk.0.ffn_up.weight"].data,
                          old["blk.0.ffn_up.weight"].data)
