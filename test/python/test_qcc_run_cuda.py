"""qcc-run --device cuda without a GPU: a clear error without a driver, and
the same training as on the CPU over the fake driver (test/runtime/cuda:
libfake_cuda_driver.so, and the hand-written step libfake_cuda_step.so with
its CPU twin libfake_cpu_step.so)."""

import ctypes
import os
import subprocess

import gguf
import numpy as np
import pytest

from qcc_step import ROOT, find_tool

QCC_RUN = find_tool("qcc-run")
BUILD = os.environ.get("QCC_BUILD_DIR", os.path.join(ROOT, "build"))
FAKES = os.path.join(BUILD, "test", "runtime", "cuda")
FAKE_DRIVER = os.path.join(FAKES, "libfake_cuda_driver.so")
CUDA_STEP = os.path.join(FAKES, "libfake_cuda_step.so")
CPU_STEP = os.path.join(FAKES, "libfake_cpu_step.so")
MISSING = "/nonexistent/qcc-test/libcuda.so.1"
WEIGHT = "blk.0.ffn_up.weight"

pytestmark = pytest.mark.skipif(
    not all(os.path.exists(p) for p in (FAKE_DRIVER, CUDA_STEP, CPU_STEP)),
    reason="the fake CUDA driver and steps are not built")


def blocks():
    b = bytearray(68)
    for k in range(2):
        b[34 * k:34 * k + 2] = b"\x00\x3c"  # f16 1.0
        for i in range(32):
            b[34 * k + 2 + i] = (i - 16 + k) & 0xFF
    return bytes(b)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cuda")
    model = d / "model.gguf"
    w = gguf.GGUFWriter(str(model), "llama")
    data = np.frombuffer(blocks(), np.uint8).reshape(2, 34)
    w.add_tensor(WEIGHT, data, raw_shape=data.shape,
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("output_norm.weight", np.ones(4, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    inputs = d / "inputs.gguf"
    w = gguf.GGUFWriter(str(inputs), "llama")
    w.add_tensor("x", np.array([1, 2, 3, 4], np.float32))
    w.add_tensor("lr", np.array([0.5], np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return d, model, inputs


def qcc_run(step, model, *args, driver=FAKE_DRIVER):
    env = dict(os.environ)
    if driver is None:
        env.pop("QCC_CUDA_DRIVER", None)
    else:
        env["QCC_CUDA_DRIVER"] = driver
    return subprocess.run([QCC_RUN, step, "--weights", str(model), *args],
                          capture_output=True, text=True, env=env)


def weight_bytes(path):
    r = gguf.GGUFReader(str(path))
    t = next(t for t in r.tensors if t.name == WEIGHT)
    return bytes(np.asarray(t.data).tobytes())


def test_no_driver_is_a_clear_error(files):
    d, model, inputs = files
    r = qcc_run(CUDA_STEP, model, "--inputs", str(inputs), "--device", "cuda",
                driver=MISSING)
    assert r.returncode == 1
    assert r.stderr.startswith("qcc-run: error: no CUDA driver found: " +
                               MISSING + ": cannot open shared object file")
    assert len(r.stderr.splitlines()) == 1


def test_default_loader_without_libcuda(files):
    try:
        ctypes.CDLL("libcuda.so.1")
        pytest.skip("libcuda.so.1 is installed here")
    except OSError:
        pass
    d, model, inputs = files
    r = qcc_run(CUDA_STEP, model, "--inputs", str(inputs), "--device", "cuda",
                driver=None)
    assert r.returncode == 1
    assert r.stderr.startswith(
        "qcc-run: error: no CUDA driver found: libcuda.so.1"), r.stderr


def test_target_mismatches(files):
    d, model, inputs = files
    r = qcc_run(CUDA_STEP, model, "--inputs", str(inputs))
    assert r.returncode == 1
    assert r.stderr == ("qcc-run: error: the step library was compiled for "
                        "CUDA (gpu_arch sm_80): run it with --device cuda\n")
    r = qcc_run(CPU_STEP, model, "--inputs", str(inputs), "--device", "cuda")
    assert r.returncode == 1
    assert r.stderr == ("qcc-run: error: the step library was compiled for "
                        "the CPU: --device cuda needs a step compiled with "
                        "qcc --target=cuda\n")


def test_bad_device_is_a_usage_error(files):
    d, model, inputs = files
    r = qcc_run(CUDA_STEP, model, "--device", "gpu")
    assert r.returncode == 2
    assert "--device expects cpu or cuda, got 'gpu'" in r.stderr


def losses(stderr):
    return [line.split("loss ")[1].split()[0] for line in stderr.splitlines()
            if line.startswith("step ")]


def test_cuda_trains_like_the_cpu(files):
    d, model, inputs = files
    cpu = qcc_run(CPU_STEP, model, "--inputs", str(inputs), "--steps", "3",
                  "--save", str(d / "cpu.gguf"))
    gpu = qcc_run(CUDA_STEP, model, "--inputs", str(inputs), "--steps", "3",
                  "--device", "cuda", "--save", str(d / "gpu.gguf"))
    assert cpu.returncode == 0, cpu.stderr
    assert gpu.returncode == 0, gpu.stderr
    assert "entry 'train_step' on cuda" in gpu.stderr
    assert "CUDA device 0: qcc fake CUDA device (sm_80), step built for " \
        "sm_80" in gpu.stderr
    assert losses(gpu.stderr) == losses(cpu.stderr) == \
        ["5.00000", "10.00000", "15.00000"]
    trained = bytearray(blocks())
    trained[2] = (trained[2] + 3) & 0xFF
    assert weight_bytes(d / "gpu.gguf") == weight_bytes(d / "cpu.gguf") == \
        bytes(trained)


def test_cuda_checkpoint_and_resume(files):
    d, model, inputs = files
    ckpt = d / "ckpt.gguf"
    full = qcc_run(CUDA_STEP, model, "--inputs", str(inputs), "--steps", "4",
                   "--device", "cuda", "--save", str(d / "full.gguf"))
    half = qcc_run(CUDA_STEP, model, "--inputs", str(inputs), "--steps", "2",
                   "--device", "cuda", "--checkpoint", str(ckpt))
    rest = qcc_run(CUDA_STEP, model, "--inputs", str(inputs), "--steps", "2",
                   "--device", "cuda", "--resume", str(ckpt),
                   "--save", str(d / "resumed.gguf"))
    for r in (full, half, rest):
        assert r.returncode == 0, r.stderr
    assert losses(half.stderr) + losses(rest.stderr) == losses(full.stderr)
    assert weight_bytes(d / "resumed.gguf") == weight_bytes(d / "full.gguf")
    # Checkpoints hold host bytes and the manifest's fingerprint, which does
    # not include the target: the CPU build of the same step resumes one.
    r = qcc_run(CPU_STEP, model, "--inputs", str(inputs), "--resume",
                str(ckpt), "--steps", "2", "--save", str(d / "on-cpu.gguf"))
    assert r.returncode == 0, r.stderr
    assert losses(r.stderr) == losses(rest.stderr)
    assert weight_bytes(d / "on-cpu.gguf") == weight_bytes(d / "full.gguf")


def test_python_runtime_binding(files, monkeypatch):
    from qcc.runtime import Session  # qcc_step put python/ on the path
    d, model, inputs = files
    with pytest.raises(RuntimeError, match="unknown device 'tpu'"):
        Session(CUDA_STEP, model, device="tpu")
    monkeypatch.setenv("QCC_CUDA_DRIVER", FAKE_DRIVER)
    s = Session(CUDA_STEP, model, device="cuda")
    assert s.device == "cuda"
