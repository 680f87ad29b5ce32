"""LoRA on a frozen q4_K base (examples/train_lora.mlir): the step's
gradients, dx and AdamW update against numpy, the runtime's seeded
initialization, training through qcc-run, the llama.cpp adapter and the
merged model, each read back with the gguf package."""

import ctypes
import hashlib
import os
import subprocess

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize

from qcc_step import ROOT, compile_step, find_tool
from test_qcc_run import K, N, q4k_model
from test_runtime_capi import capi, message  # noqa: F401 (fixture)

QCC_RUN = find_tool("qcc-run")
PY = os.path.join(ROOT, ".venv", "bin", "python")
BASE = "blk.0.ffn_up.weight"
R, ALPHA = 8, 16.0
SCALE = ALPHA / R
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


@pytest.fixture(scope="module")
def lora_so(tmp_path_factory):
    with open(os.path.join(ROOT, "examples", "train_lora.mlir")) as f:
        return compile_step(f.read(), tmp_path_factory.mktemp("lora")).path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return q4k_model(tmp_path_factory.mktemp("model"), BASE, (N, K), seed=0)


def base_weight(model):
    """The base's q4_K blocks decoded by the gguf package, [N, K] f64."""
    t = next(t for t in gguf.GGUFReader(str(model)).tensors if t.name == BASE)
    return dequantize(t.data, t.tensor_type).reshape(N, K).astype(np.float64)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


class Session:
    """A qcc_session through the C API, with numpy in and out."""

    def __init__(self, lib, step, model):
        self.lib, self.err = lib, ctypes.c_void_p()
        self.s = lib.qcc_session_open(step.encode(), None, str(model).encode(),
                                      ctypes.byref(self.err))
        assert self.s, message(lib, self.err)

    def set(self, name, arr):
        arr = np.ascontiguousarray(arr)
        assert self.lib.qcc_session_set_input(
            self.s, name.encode(), arr.ctypes.data, arr.nbytes,
            ctypes.byref(self.err)) == 0, message(self.lib, self.err)

    def get(self, name, dtype=np.float32, shape=None):
        size = ctypes.c_size_t()
        ptr = self.lib.qcc_session_argument(self.s, name.encode(),
                                            ctypes.byref(size))
        if not ptr:
            return None
        buf = ctypes.string_at(ptr, size.value)
        arr = np.frombuffer(buf, dtype=dtype).copy()
        return arr.reshape(shape) if shape else arr

    def result(self, name, shape):
        size = ctypes.c_size_t()
        ptr = self.lib.qcc_session_result(self.s, name.encode(),
                                          ctypes.byref(size))
        return np.frombuffer(ctypes.string_at(ptr, size.value),
                             np.float32).reshape(shape).copy()

    def run(self):
        assert self.lib.qcc_session_run(self.s, ctypes.byref(self.err)) == 0, \
            message(self.lib, self.err)

    def call(self, fn, path):
        rc = getattr(self.lib, "qcc_session_" + fn)(self.s, str(path).encode(),
                                                     ctypes.byref(self.err))
        return None if rc == 0 else message(self.lib, self.err)

    def close(self):
        self.lib.qcc_session_close(self.s)


def splitmix_stream(seed, n):
    """The runtime's SplitMix64Stream (runtime/include/qcc/Runtime/
    SplitMix64.h), in Python integers."""
    mask, gamma = (1 << 64) - 1, 0x9E3779B97F4A7C15
    out, state = [], seed
    for _ in range(n):
        z = (state + gamma) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append(z ^ (z >> 31))
        state = (state + gamma) & mask
    return out, state


def test_params_are_drawn_from_the_seeded_rng(capi, lora_so, model):
    """A is Kaiming-uniform, U(-1/√in, 1/√in) with in = 256, drawn element
    by element from splitmix64(seed) (top 24 bits): equal, bit for bit, to
    a Python re-implementation; B is zero; the host's next draw continues
    the same stream; re-seeding redraws A, and is refused after a run."""
    s = Session(capi, lora_so, model)
    assert capi.qcc_session_seed(s.s, 1234, ctypes.byref(s.err)) == 0
    draws, state = splitmix_stream(1234, R * K + 1)
    u = np.array([d >> 40 for d in draws[:R * K]], np.float32) / np.float32(1 << 24)
    expected = ((np.float32(2) * u - np.float32(1)) * np.float32(1 / 16)
                ).reshape(R, K)
    a = s.get(BASE + ".lora_a", shape=(R, K))
    assert np.array_equal(a, expected)
    assert np.abs(a).max() <= 1 / 16 and np.abs(a).max() > 0.06
    assert np.array_equal(s.get(BASE + ".lora_b", shape=(N, R)),
                          np.zeros((N, R), np.float32))
    assert capi.qcc_session_random(s.s) == draws[R * K]
    # The base weight is frozen: the session holds no copy of it.
    assert s.get(BASE) is None

    assert capi.qcc_session_seed(s.s, 99, ctypes.byref(s.err)) == 0
    assert not np.array_equal(s.get(BASE + ".lora_a", shape=(R, K)), a)
    rng = np.random.default_rng(0)
    s.set("x", rng.standard_normal((8, K)).astype(np.float32))
    s.set("target", rng.standard_normal((8, N)).astype(np.float32))
    s.set("lr", np.float32([0.01]))
    s.set("weight_decay", np.float32([0.0]))
    s.run()
    assert capi.qcc_session_seed(s.s, 5, ctypes.byref(s.err)) != 0
    assert "cannot re-seed a session that has run" in message(capi, s.err)
    s.close()


def reference_grads(w, a, b, x, t):
    """numpy (f64) forward and backward of the step: loss, dA, dB, dx."""
    h = x @ a.T
    y = x @ w.T + SCALE * h @ b.T
    loss = ((y - t) ** 2).sum() / 16
    gy = (y - t) / 8
    db = SCALE * gy.T @ h
    dh = SCALE * gy @ b
    da = dh.T @ x
    dx = gy @ w + dh @ a
    return loss, da, db, dx


def adamw(p, g, m, v, t, lr, wd):
    m = BETA1 * m + (1 - BETA1) * g
    v = BETA2 * v + (1 - BETA2) * g * g
    mh, vh = m / (1 - BETA1 ** t), v / (1 - BETA2 ** t)
    return p * (1 - lr * wd) - lr * mh / (np.sqrt(vh) + EPS), m, v


def test_gradients_and_adamw_match_numpy(capi, lora_so, model):
    """Two steps from random A and B (B non-zero, so both gradients are):
    after the first, m = (1-β₁)·g exposes the step's gradients, which match
    numpy's f64 backward within 1e-4 of their largest magnitude, and so do
    the loss and dx (through qcc.qmatmul bwd); after the second, A and B
    match numpy's AdamW (bias correction at t = 2, weight decay 0.1) within
    1e-4·lr, and the step counter is 2."""
    s = Session(capi, lora_so, model)
    rng = np.random.default_rng(7)
    a0 = rng.uniform(-1 / 16, 1 / 16, (R, K)).astype(np.float32)
    b0 = rng.normal(0, 0.01, (N, R)).astype(np.float32)
    x = rng.standard_normal((8, K)).astype(np.float32)
    t = rng.normal(0, 0.3, (8, N)).astype(np.float32)
    lr, wd = 0.01, 0.1
    s.set(BASE + ".lora_a", a0)
    s.set(BASE + ".lora_b", b0)
    s.set("x", x)
    s.set("target", t)
    s.set("lr", np.float32([lr]))
    s.set("weight_decay", np.float32([wd]))
    w = base_weight(model)
    f64 = lambda v: v.astype(np.float64)

    s.run()
    loss, da, db, dx = reference_grads(w, f64(a0), f64(b0), f64(x), f64(t))
    ga = s.get("lora_a.adam_m", shape=(R, K)) / np.float32(1 - BETA1)
    gb = s.get("lora_b.adam_m", shape=(N, R)) / np.float32(1 - BETA1)
    assert np.abs(ga - da).max() <= 1e-4 * np.abs(da).max()
    assert np.abs(gb - db).max() <= 1e-4 * np.abs(db).max()
    assert np.abs(s.get("lora_a.adam_v", shape=(R, K)) - (1 - BETA2) * da ** 2
                  ).max() <= 1e-3 * (1 - BETA2) * (da ** 2).max()
    assert abs(float(s.result("loss", ())) - loss) <= 1e-5 * loss
    dx_step = s.result("dx", (8, K))
    assert np.abs(dx_step - dx).max() <= 1e-4 * np.abs(dx).max()
    a1, _, _ = adamw(f64(a0), da, 0, 0, 1, lr, wd)
    assert np.abs(s.get(BASE + ".lora_a", shape=(R, K)) - a1).max() <= 1e-4 * lr

    # Step 2 from the step's own state after step 1.
    a1 = f64(s.get(BASE + ".lora_a", shape=(R, K)))
    b1 = f64(s.get(BASE + ".lora_b", shape=(N, R)))
    ma, va = f64(s.get("lora_a.adam_m")).reshape(R, K), f64(s.get("lora_a.adam_v")).reshape(R, K)
    mb, vb = f64(s.get("lora_b.adam_m")).reshape(N, R), f64(s.get("lora_b.adam_v")).reshape(N, R)
    s.run()
    _, da, db, _ = reference_grads(w, a1, b1, f64(x), f64(t))
    a2, _, _ = adamw(a1, da, ma, va, 2, lr, wd)
    b2, _, _ = adamw(b1, db, mb, vb, 2, lr, wd)
    err_a = np.abs(s.get(BASE + ".lora_a", shape=(R, K)) - a2).max()
    err_b = np.abs(s.get(BASE + ".lora_b", shape=(N, R)) - b2).max()
    assert err_a <= 1e-4 * lr and err_b <= 1e-4 * lr, (err_a, err_b)
    # The reference is sensitive to what it checks: without the decay, or
    # with the bias correction of t = 1, it would be far off.
    a2_nodecay, _, _ = adamw(a1, da, ma, va, 2, lr, 0.0)
    a2_t1, _, _ = adamw(a1, da, ma, va, 1, lr, wd)
    assert np.abs(a2_nodecay - a2).max() > 20 * 1e-4 * lr
    assert np.abs(a2_t1 - a2).max() > 20 * 1e-4 * lr
    assert s.get("adam.t", np.int32)[0] == 2
    s.close()


@pytest.fixture(scope="module")
def trained(lora_so, model, tmp_path_factory):
    """40 steps of LoRA training through qcc-run, saving the adapter and the
    merged model."""
    d = tmp_path_factory.mktemp("trained")
    inputs = d / "inputs.gguf"
    subprocess.run([PY, os.path.join(ROOT, "examples",
                                     "make_regression_inputs.py"),
                    str(model), str(inputs), "--rank", "4", "--lr", "0.01",
                    "--weight-decay", "0.01"], check=True)
    before = sha(model)
    proc = subprocess.run([QCC_RUN, lora_so, "--weights", str(model),
                           "--inputs", str(inputs), "--steps", "40",
                           "--seed", "1", "--save-lora", str(d / "adapter.gguf"),
                           "--save-merged", str(d / "merged.gguf")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sha(model) == before
    return proc.stderr, d / "adapter.gguf", d / "merged.gguf"


def test_lora_training_lowers_the_loss(trained):
    """The frozen base is bound zero-copy (0 trainable weights), A and B are
    the two params, and the loss falls by more than 20x in 40 steps."""
    stderr, _, _ = trained
    assert "0 trainable weight(s), 2 param(s), 40 step(s)" in stderr
    losses = [float(line.split("loss")[1].split()[0])
              for line in stderr.splitlines() if line.startswith("step ")]
    assert len(losses) == 40
    assert losses[-1] < losses[0] / 20, losses


def test_adapter_has_llama_cpp_layout(trained, model):
    """The adapter as llama.cpp's loader checks it (llama-adapter.cpp):
    general.type "adapter", adapter.type "lora", adapter.lora.alpha, the
    base's general.architecture; tensors <base>.lora_a with ne [n_in, r] and
    <base>.lora_b with ne [r, n_out] (a.ne[0] == W.ne[0], b.ne[1] ==
    W.ne[1], a.ne[1] == b.ne[0]), f32."""
    _, adapter, _ = trained
    r = gguf.GGUFReader(str(adapter))
    f = {k: v.contents() for k, v in r.fields.items() if not k.startswith("GGUF.")}
    assert f["general.type"] == "adapter"
    assert f["adapter.type"] == "lora"
    assert f["adapter.lora.alpha"] == ALPHA
    assert r.fields["adapter.lora.alpha"].types == [gguf.GGUFValueType.FLOAT32]
    base = gguf.GGUFReader(str(model))
    assert f["general.architecture"] == base.fields["general.architecture"].contents()
    tensors = {t.name: t for t in r.tensors}
    assert set(tensors) == {BASE + ".lora_a", BASE + ".lora_b"}
    w_ne = [int(d) for d in next(t for t in base.tensors if t.name == BASE).shape]
    a, b = tensors[BASE + ".lora_a"], tensors[BASE + ".lora_b"]
    a_ne, b_ne = [int(d) for d in a.shape], [int(d) for d in b.shape]
    assert a_ne == [K, R] and b_ne == [R, N]
    assert a_ne[0] == w_ne[0] and b_ne[1] == w_ne[1] and a_ne[1] == b_ne[0]
    assert a.tensor_type == b.tensor_type == gguf.GGMLQuantizationType.F32
    assert np.any(np.asarray(b.data) != 0)


def check_merged(model, merged, a, b, f32_model):
    """W' in the merged file decodes (gguf package) to dequant(W) +
    (α/r)·B·A within q4_K's own error: at most 1.5x the RMS error of
    quantizing the original f32 W. Every other tensor and every metadata
    value is unchanged."""
    old, new = gguf.GGUFReader(str(model)), gguf.GGUFReader(str(merged))
    assert [k for k in old.fields] == [k for k in new.fields]
    for key, field in old.fields.items():
        if not key.startswith("GGUF."):
            assert new.fields[key].contents() == field.contents(), key
    ot, nt = {t.name: t for t in old.tensors}, {t.name: t for t in new.tensors}
    assert list(ot) == list(nt)
    for name, t in ot.items():
        assert nt[name].tensor_type == t.tensor_type
        if name != BASE:
            assert np.array_equal(np.asarray(nt[name].data), np.asarray(t.data))
    w = base_weight(model)
    expected = w + SCALE * b.astype(np.float64) @ a.astype(np.float64)
    got = dequantize(nt[BASE].data, nt[BASE].tensor_type).reshape(N, K)
    orig = next(t for t in gguf.GGUFReader(str(f32_model)).tensors
                if t.name == BASE).data.reshape(N, K)
    rms = lambda d: float(np.sqrt(np.mean(np.square(d))))
    quant_error = rms(w - orig)
    merge_error = rms(got - expected)
    assert merge_error <= 1.5 * quant_error, (merge_error, quant_error)
    return rms(expected - w), quant_error


def test_merged_model_from_qcc_run(trained, model):
    """--save-merged after training: the merge of the adapter's own A and B
    (as read back from the adapter file)."""
    _, adapter, merged = trained
    t = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(adapter)).tensors}
    check_merged(model, merged, t[BASE + ".lora_a"].reshape(R, K),
                 t[BASE + ".lora_b"].reshape(N, R),
                 os.path.join(os.path.dirname(model), "f32.gguf"))


def test_merge_of_a_large_update(capi, lora_so, model, tmp_path):
    """A and B set through the C API so that (α/r)·B·A is several times the
    quantization error: the merged W' follows it (a merge that dropped the
    update would be off by its full size), the model file is unchanged, and
    the adapter and merged files come back through the C API too."""
    s = Session(capi, lora_so, model)
    rng = np.random.default_rng(3)
    a = rng.normal(0, 0.1, (R, K)).astype(np.float32)
    b = rng.normal(0, 0.02, (N, R)).astype(np.float32)
    s.set(BASE + ".lora_a", a)
    s.set(BASE + ".lora_b", b)
    before = sha(model)
    assert s.call("save_merged", tmp_path / "merged.gguf") is None
    assert s.call("save_lora", tmp_path / "adapter.gguf") is None
    assert "refusing to replace" in s.call("save_merged", model)
    s.close()
    assert sha(model) == before
    update, quant_error = check_merged(
        model, tmp_path / "merged.gguf", a, b,
        os.path.join(os.path.dirname(model), "f32.gguf"))
    assert update > 5 * quant_error, (update, quant_error)
    t = {t.name: np.asarray(t.data) for t in
         gguf.GGUFReader(str(tmp_path / "adapter.gguf")).tensors}
    assert np.array_equal(t[BASE + ".lora_a"].reshape(R, K), a)
    assert np.array_equal(t[BASE + ".lora_b"].reshape(N, R), b)


def test_lora_outputs_need_lora_params(model, tmp_path):
    """--save-lora and --save-merged on a step without LoRA params fail with
    the reason (after training, whose --save still works)."""
    with open(os.path.join(ROOT, "examples", "train_linear.mlir")) as f:
        so = compile_step(f.read(), tmp_path / "linear").path
    inputs = tmp_path / "in.gguf"
    subprocess.run([PY, os.path.join(ROOT, "examples",
                                     "make_regression_inputs.py"),
                    str(model), str(inputs)], check=True)
    for flag in ("--save-lora", "--save-merged"):
        proc = subprocess.run([QCC_RUN, so, "--weights", str(model),
                               "--inputs", str(inputs), flag,
                               str(tmp_path / "out.gguf")],
                              capture_output=True, text=True)
        assert proc.returncode == 1
        assert ("error: the entry 'train_step' has no LoRA params (qcc.lora.*)"
                in proc.stderr), proc.stderr
        assert not (tmp_path / "out.gguf").exists()
