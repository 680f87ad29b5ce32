"""The C API of the runtime (libqcc_runtime.so, qcc/Runtime/qcc_runtime.h)
through ctypes: the same training as qcc-run, and its errors."""

import ctypes
import os

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize

from qcc_step import ROOT, compile_step
from test_qcc_run import q4k_model

BUILD = os.environ.get("QCC_BUILD_DIR", os.path.join(ROOT, "build"))


@pytest.fixture(scope="module")
def capi():
    lib = ctypes.CDLL(os.path.join(BUILD, "lib", "libqcc_runtime.so"))
    lib.qcc_session_open.restype = ctypes.c_void_p
    lib.qcc_session_open.argtypes = [ctypes.c_char_p, ctypes.c_char_p,
                                     ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.qcc_session_set_input.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                          ctypes.c_void_p, ctypes.c_size_t,
                                          ctypes.POINTER(ctypes.c_void_p)]
    lib.qcc_session_run.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.qcc_session_result.restype = ctypes.c_void_p
    lib.qcc_session_result.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                       ctypes.POINTER(ctypes.c_size_t)]
    lib.qcc_session_steps.restype = ctypes.c_uint64
    lib.qcc_session_steps.argtypes = [ctypes.c_void_p]
    lib.qcc_session_save.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                     ctypes.POINTER(ctypes.c_void_p)]
    lib.qcc_session_argument.restype = ctypes.c_void_p
    lib.qcc_session_argument.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                         ctypes.POINTER(ctypes.c_size_t)]
    lib.qcc_session_runs.restype = ctypes.c_uint64
    lib.qcc_session_runs.argtypes = [ctypes.c_void_p]
    lib.qcc_session_seed.argtypes = [ctypes.c_void_p, ctypes.c_uint64,
                                     ctypes.POINTER(ctypes.c_void_p)]
    lib.qcc_session_random.restype = ctypes.c_uint64
    lib.qcc_session_random.argtypes = [ctypes.c_void_p]
    for name in ("save_checkpoint", "load_checkpoint", "save_lora",
                 "save_merged"):
        getattr(lib, "qcc_session_" + name).argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.qcc_session_close.argtypes = [ctypes.c_void_p]
    lib.qcc_free_error.argtypes = [ctypes.c_void_p]
    return lib


def message(lib, ptr):
    text = ctypes.cast(ptr, ctypes.c_char_p).value.decode()
    lib.qcc_free_error(ptr)
    return text


def test_train_through_the_c_api(capi, tmp_path):
    """Open, feed inputs, run 30 steps (loss falls 20x), save a GGUF."""
    with open(os.path.join(ROOT, "examples", "train_linear.mlir")) as f:
        step = compile_step(f.read(), tmp_path / "step").path
    model = q4k_model(tmp_path, "blk.0.ffn_up.weight", (512, 256), seed=1)
    err = ctypes.c_void_p()
    s = capi.qcc_session_open(step.encode(), None, str(model).encode(),
                              ctypes.byref(err))
    assert s, message(capi, err)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 256)).astype(np.float32)
    target = (x @ rng.normal(0, 0.02, (512, 256)).T).astype(np.float32)
    lr = np.array([0.02], np.float32)
    for name, arr in (("x", x), ("target", target), ("lr", lr)):
        assert capi.qcc_session_set_input(s, name.encode(), arr.ctypes.data,
                                          arr.nbytes, ctypes.byref(err)) == 0
    losses = []
    for _ in range(30):
        assert capi.qcc_session_run(s, ctypes.byref(err)) == 0, message(capi, err)
        size = ctypes.c_size_t()
        ptr = capi.qcc_session_result(s, b"loss", ctypes.byref(size))
        assert size.value == 4
        losses.append(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float))[0])
    assert capi.qcc_session_steps(s) == 30
    assert losses[-1] < losses[0] / 20, losses
    out = tmp_path / "trained.gguf"
    assert capi.qcc_session_save(s, str(out).encode(), ctypes.byref(err)) == 0
    assert out.stat().st_size > 0
    capi.qcc_session_close(s)


def test_c_api_errors(capi, tmp_path):
    """A missing model and a wrongly sized input come back as messages."""
    with open(os.path.join(ROOT, "examples", "train_linear.mlir")) as f:
        step = compile_step(f.read(), tmp_path / "step").path
    err = ctypes.c_void_p()
    s = capi.qcc_session_open(step.encode(), None, b"/nonexistent.gguf",
                              ctypes.byref(err))
    assert not s and "/nonexistent.gguf" in message(capi, err)
    model = q4k_model(tmp_path, "blk.0.ffn_up.weight", (512, 256), seed=2)
    s = capi.qcc_session_open(step.encode(), None, str(model).encode(),
                              ctypes.byref(err))
    assert s
    x = np.zeros(3, np.float32)
    assert capi.qcc_session_set_input(s, b"x", x.ctypes.data, x.nbytes,
                                      ctypes.byref(err)) != 0
    assert "'x' expects 8192 bytes" in message(capi, err)
    assert capi.qcc_session_run(s, ctypes.byref(err)) != 0
    assert "argument 'x' has no value" in message(capi, err)
    capi.qcc_session_close(s)


def test_frozen_weight_forward_matches_numpy(capi, tmp_path):
    """A forward-only entry: the q4_K weight is bound zero-copy from the
    model, and y equals x·Wᵀ with W decoded by the gguf package (float64
    reference, relative tolerance 1e-5)."""
    step = compile_step("""
func.func @forward(%x: tensor<2x256xf32> {qcc.name = "x"},
                   %w: !qcc.qtensor<512x256xq4_K> {qcc.name = "blk.0.ffn_up.weight"})
    -> (tensor<2x512xf32> {qcc.name = "y"}) {
  %y = qcc.qmatmul fwd %x, %w : tensor<2x256xf32>, !qcc.qtensor<512x256xq4_K> -> tensor<2x512xf32>
  return %y : tensor<2x512xf32>
}""", tmp_path / "step").path
    model = q4k_model(tmp_path, "blk.0.ffn_up.weight", (512, 256), seed=4)
    err = ctypes.c_void_p()
    s = capi.qcc_session_open(step.encode(), None, str(model).encode(),
                              ctypes.byref(err))
    assert s, message(capi, err)
    x = np.random.default_rng(3).standard_normal((2, 256)).astype(np.float32)
    assert capi.qcc_session_set_input(s, b"x", x.ctypes.data, x.nbytes,
                                      ctypes.byref(err)) == 0
    assert capi.qcc_session_run(s, ctypes.byref(err)) == 0, message(capi, err)
    size = ctypes.c_size_t()
    ptr = capi.qcc_session_result(s, b"y", ctypes.byref(size))
    assert size.value == 2 * 512 * 4
    y = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)),
                              shape=(2, 512)).copy()
    capi.qcc_session_close(s)
    t = next(t for t in gguf.GGUFReader(str(model)).tensors
             if t.name == "blk.0.ffn_up.weight")
    w = dequantize(t.data, t.tensor_type).reshape(512, 256).astype(np.float64)
    ref = x.astype(np.float64) @ w.T
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


def test_checkpoint_through_the_c_api(capi, tmp_path):
    """save/load_checkpoint: a second session that loads the first one's
    checkpoint has its step and run counters and RNG state (the host's next
    draw is the same) and, one run later, the same loss and carry bit for
    bit; a failed load leaves it unchanged."""
    with open(os.path.join(ROOT, "examples", "train_linear.mlir")) as f:
        step = compile_step(f.read(), tmp_path / "step").path
    model = q4k_model(tmp_path, "blk.0.ffn_up.weight", (512, 256), seed=5)
    rng = np.random.default_rng(1)
    inputs = {"x": rng.standard_normal((8, 256)).astype(np.float32),
              "target": rng.normal(0, 0.3, (8, 512)).astype(np.float32),
              "lr": np.array([0.02], np.float32)}
    err = ctypes.c_void_p()

    def open_session():
        s = capi.qcc_session_open(step.encode(), None, str(model).encode(),
                                  ctypes.byref(err))
        assert s, message(capi, err)
        for name, arr in inputs.items():
            assert capi.qcc_session_set_input(s, name.encode(), arr.ctypes.data,
                                              arr.nbytes, ctypes.byref(err)) == 0
        return s

    def value(s, fn, name):
        size = ctypes.c_size_t()
        ptr = fn(s, name.encode(), ctypes.byref(size))
        return ctypes.string_at(ptr, size.value)

    first = open_session()
    assert capi.qcc_session_seed(first, 42, ctypes.byref(err)) == 0
    capi.qcc_session_random(first)
    for _ in range(3):
        assert capi.qcc_session_run(first, ctypes.byref(err)) == 0
    ckpt = str(tmp_path / "c.ckpt").encode()
    assert capi.qcc_session_save_checkpoint(first, ckpt, ctypes.byref(err)) == 0

    second = open_session()
    assert capi.qcc_session_load_checkpoint(
        second, b"/nonexistent.ckpt", ctypes.byref(err)) != 0
    assert "cannot read checkpoint /nonexistent.ckpt" in message(capi, err)
    assert capi.qcc_session_steps(second) == 0
    assert capi.qcc_session_load_checkpoint(second, ckpt, ctypes.byref(err)) == 0
    assert capi.qcc_session_steps(second) == 3
    assert capi.qcc_session_runs(second) == 3
    assert capi.qcc_session_random(second) == capi.qcc_session_random(first)
    for s in (first, second):
        assert capi.qcc_session_run(s, ctypes.byref(err)) == 0
    assert (value(first, capi.qcc_session_result, "loss")
            == value(second, capi.qcc_session_result, "loss"))
    assert (value(first, capi.qcc_session_argument, "carry")
            == value(second, capi.qcc_session_argument, "carry"))
    assert (value(first, capi.qcc_session_argument, "blk.0.ffn_up.weight")
            == value(second, capi.qcc_session_argument, "blk.0.ffn_up.weight"))
    capi.qcc_session_close(first)
    capi.qcc_session_close(second)
