"""The compiler's block decoders equal the runtime's, bit for bit.

Two routes: mlir-runner on `-qcc-lower-to-loops` plus the upstream
lowering (the emitters alone), and the `qcc` driver's compiled step library
(qcc-lower-to-cpu: OpenMP, host-CPU code generation, the step ABI).

For every GGUF format, a `qcc.dequant` is lowered with `-qcc-lower-to-loops`,
compiled through the upstream MLIR pipeline and run with mlir-runner on
  * the golden file's blocks (`T.q` in test/data/golden/ggml-golden.gguf),
    compared with ggml's own dequantization `T.deq`, and
  * random blocks (every byte uniform, so NaN/Inf/subnormal scales, every
    code and every sign pattern occur), compared with `qcc-gguf dequant`,
    i.e. the runtime's reference decoders.
The decoded f32 values are bitcast to i32 before printing, so the comparison
is on bits (NaN payloads and signed zeros included), not on printed decimals.

Needs build/bin/qcc-opt and build/bin/qcc-gguf (set QCC_BUILD_DIR to another
build folder) and mlir-runner from LLVM 22; skipped where they are missing.
"""

import os
import re
import shutil
import struct
import subprocess
import tempfile

import numpy as np
import pytest

from qcc_step import GOLDEN, compile_step, find_tool, golden_tensors

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("QCC_BUILD_DIR", os.path.join(ROOT, "build"))
QCC_OPT = os.path.join(BUILD, "bin", "qcc-opt")
QCC_GGUF = os.path.join(BUILD, "bin", "qcc-gguf")
LLVM_BIN = "/usr/lib/llvm-22/bin"
LLVM_LIB = "/usr/lib/llvm-22/lib"
MLIR_RUNNER = os.path.join(LLVM_BIN, "mlir-runner")

# The MLIR pipeline after qcc-lower-to-loops down to the LLVM dialect.
PIPELINE = [
    "-one-shot-bufferize=bufferize-function-boundaries",
    "-convert-linalg-to-loops", "-convert-scf-to-cf", "-expand-strided-metadata",
    "-finalize-memref-to-llvm", "-convert-arith-to-llvm", "-convert-math-to-llvm",
    "-convert-func-to-llvm", "-convert-cf-to-llvm", "-reconcile-unrealized-casts",
]


def read_formats():
    """name -> (ggml id, block elements, block bytes), from Formats.def."""
    path = os.path.join(ROOT, "runtime", "include", "qcc", "Runtime", "Formats.def")
    pat = re.compile(r'^QCC_FORMAT\(\s*\w+,\s*"(\w+)",\s*(\d+),\s*(\d+),\s*(\d+)\)')
    out = {}
    with open(path) as f:
        for line in f:
            m = pat.match(line)
            if m:
                out[m.group(1)] = tuple(int(m.group(i)) for i in (2, 3, 4))
    return out


FORMATS = read_formats()

# --- A minimal GGUF writer (one tensor, no metadata) ---------------------

def write_gguf(path, name, fmt, cols, rows, raw):
    """One tensor of `rows` x `cols` elements (cols contiguous), no metadata."""
    ggml_id = FORMATS[fmt][0]
    header = b"GGUF" + struct.pack("<IQQ", 3, 1, 0)
    nb = name.encode()
    info = struct.pack("<Q", len(nb)) + nb + struct.pack("<I", 2)
    info += struct.pack("<QQ", cols, rows) + struct.pack("<IQ", ggml_id, 0)
    head = header + info
    pad = (-len(head)) % 32
    with open(path, "wb") as f:
        f.write(head + b"\0" * pad + raw)


# --- Compile and run a qcc.dequant ----------------------------------------

def _run(cmd, **kw):
    """subprocess.run that fails the test with the tool's stderr."""
    r = subprocess.run(cmd, capture_output=True, **kw)
    if r.returncode:
        err = r.stderr if isinstance(r.stderr, str) else r.stderr.decode()
        pytest.fail(f"{' '.join(cmd[:2])} failed ({r.returncode}):\n{err[-4000:]}")
    return r.stdout


def emitted_decode_bits(fmt, rows, cols, raw, workdir):
    """Runs the lowered qcc.dequant of a rows x cols `fmt` tensor stored as
    `raw` and returns the decoded values' bits as a uint32 array."""
    _, be, bb = FORMATS[fmt]
    row_bytes = cols // be * bb
    assert len(raw) == rows * row_bytes
    qt = f"!qcc.qtensor<{rows}x{cols}x{fmt}>"
    src = (f"func.func @decode(%w: {qt}) -> tensor<{rows}x{cols}xf32> {{\n"
           f"  %0 = qcc.dequant %w : {qt} -> tensor<{rows}x{cols}xf32>\n"
           f"  return %0 : tensor<{rows}x{cols}xf32>\n}}\n")
    lowered = _run([QCC_OPT, "-", "-qcc-lower-to-loops"], input=src, text=True)
    assert "qcc." not in lowered.replace("qcc_", "")
    mem = f"memref<{rows}x{row_bytes}xi8>"
    out = f"{rows}x{cols}"
    main = (
        f'  memref.global "private" constant @blob : {mem} = '
        f'dense<"0x{raw.hex().upper()}">\n'
        f"  func.func private @printMemrefI32(memref<*xi32>)\n"
        f"  func.func @main() {{\n"
        f"    %m = memref.get_global @blob : {mem}\n"
        f"    %r = call @decode(%m) : ({mem}) -> tensor<{out}xf32>\n"
        f"    %f = bufferization.to_buffer %r : tensor<{out}xf32> to memref<{out}xf32>\n"
        f"    %b = memref.alloc() : memref<{out}xi32>\n"
        f"    %c0 = arith.constant 0 : index\n"
        f"    %c1 = arith.constant 1 : index\n"
        f"    %nr = arith.constant {rows} : index\n"
        f"    %nc = arith.constant {cols} : index\n"
        f"    scf.for %i = %c0 to %nr step %c1 {{\n"
        f"      scf.for %j = %c0 to %nc step %c1 {{\n"
        f"        %v = memref.load %f[%i, %j] : memref<{out}xf32>\n"
        f"        %w = arith.bitcast %v : f32 to i32\n"
        f"        memref.store %w, %b[%i, %j] : memref<{out}xi32>\n"
        f"      }}\n    }}\n"
        f"    %u = memref.cast %b : memref<{out}xi32> to memref<*xi32>\n"
        f"    call @printMemrefI32(%u) : (memref<*xi32>) -> ()\n"
        f"    return\n  }}\n")
    end = lowered.rstrip().rfind("}")
    module = lowered[:end] + main + "}\n"
    path = os.path.join(workdir, f"{fmt}.mlir")
    with open(path, "w") as f:
        f.write(module)
    llvm = _run([QCC_OPT, path] + PIPELINE, text=True)
    libs = ",".join(os.path.join(LLVM_LIB, l) for l in
                    ("libmlir_c_runner_utils.so", "libmlir_runner_utils.so"))
    run = _run([MLIR_RUNNER, "-e", "main", "-entry-point-result=void",
                f"-shared-libs={libs}"], input=llvm, text=True)
    data = run[run.index("data =") + len("data ="):]
    vals = np.array([int(t) for t in re.findall(r"-?\d+", data)], dtype=np.int64)
    assert vals.size == rows * cols, (vals.size, rows * cols)
    return vals.astype(np.uint32)


def runtime_decode_bits(fmt, rows, cols, raw, workdir):
    """The runtime's decode (qcc-gguf dequant) of the same tensor."""
    gguf = os.path.join(workdir, f"{fmt}.gguf")
    write_gguf(gguf, "t", fmt, cols, rows, raw)
    outp = os.path.join(workdir, f"{fmt}.f32")
    _run([QCC_GGUF, "dequant", gguf, "t", "-o", outp])
    return np.fromfile(outp, dtype="<u4")


def _missing_tools():
    for tool in (QCC_OPT, QCC_GGUF, MLIR_RUNNER):
        if not os.path.exists(tool):
            return tool
    return None


pytestmark = pytest.mark.skipif(_missing_tools() is not None,
                                reason=f"missing {_missing_tools()}")

ALL = sorted(FORMATS, key=lambda k: FORMATS[k][0])


@pytest.fixture(scope="module")
def golden():
    """name -> (type, ne, bytes) of the golden file (read by qcc-gguf)."""
    if not os.path.exists(GOLDEN):
        pytest.skip(f"no golden file at {GOLDEN}")
    return golden_tensors()


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="qcc-decode-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _report(fmt, got, want):
    bad = np.flatnonzero(got != want)
    if bad.size:
        i = bad[0]
        g = struct.unpack("<f", struct.pack("<I", int(got[i])))[0]
        w = struct.unpack("<f", struct.pack("<I", int(want[i])))[0]
        return (f"{fmt}: {bad.size} of {got.size} elements differ; first at "
                f"{i}: got {got[i]:#010x} ({g!r}), want {want[i]:#010x} ({w!r})")
    return None


@pytest.mark.parametrize("fmt", ALL)
def test_golden_blocks(fmt, golden, workdir):
    """ggml's blocks of `fmt` decode to ggml's own T.deq, bit for bit."""
    qfmt, dims, raw = golden[f"{fmt}.q"]
    assert qfmt == fmt
    cols, rows = dims
    want = np.frombuffer(golden[f"{fmt}.deq"][2], dtype="<u4")
    got = emitted_decode_bits(fmt, rows, cols, raw, workdir)
    assert _report(fmt, got, want) is None, _report(fmt, got, want)


@pytest.mark.parametrize("fmt", ALL)
def test_random_blocks(fmt, workdir):
    """Uniformly random bytes (NaN/Inf/subnormal scales, every code) decode
    like the runtime's reference decoders, bit for bit."""
    _, be, bb = FORMATS[fmt]
    rows, cols = 8, 1024 if be <= 256 else be * 4
    rng = np.random.default_rng(FORMATS[fmt][0] * 7919 + 17)
    raw = rng.integers(0, 256, size=rows * cols // be * bb, dtype=np.uint8).tobytes()
    want = runtime_decode_bits(fmt, rows, cols, raw, workdir)
    got = emitted_decode_bits(fmt, rows, cols, raw, workdir)
    assert _report(fmt, got, want) is None, _report(fmt, got, want)


def _exhaustive_blocks(fmt):
    """(rows, cols, raw): blocks whose scale bytes take every value."""
    rng = np.random.default_rng(5)
    if fmt in ("f16", "bf16"):
        return 64, 1024, np.arange(65536, dtype="<u2").tobytes()
    _, be, bb = FORMATS[fmt]
    if fmt == "mxfp4":  # byte 0 of each block is the e8m0 exponent
        blocks = rng.integers(0, 256, size=(256, bb), dtype=np.uint8)
        blocks[:, 0] = np.arange(256)
    else:  # nvfp4: bytes 0-3 of each block are the ue4m3 sub-block scales
        blocks = rng.integers(0, 256, size=(64, bb), dtype=np.uint8)
        blocks[:, :4] = np.arange(256).reshape(64, 4)
    n = blocks.shape[0] * be
    return n // 1024, 1024, blocks.tobytes()


@pytest.mark.parametrize("fmt", ["f16", "bf16", "mxfp4", "nvfp4"])
def test_every_scale_value(fmt, workdir):
    """Every 16-bit pattern of f16 / bf16 (NaN payloads, subnormals, -0) and
    every e8m0 / ue4m3 scale byte (e < 2 subnormals, 0 and 0x7f, bit 7)
    decodes like the runtime."""
    rows, cols, raw = _exhaustive_blocks(fmt)
    want = runtime_decode_bits(fmt, rows, cols, raw, workdir)
    got = emitted_decode_bits(fmt, rows, cols, raw, workdir)
    assert _report(fmt, got, want) is None, _report(fmt, got, want)


def _dequant_module(fmt, rows, cols):
    qt = f"!qcc.qtensor<{rows}x{cols}x{fmt}>"
    return (f"func.func @deq(%w: {qt}) -> tensor<{rows}x{cols}xf32> {{\n"
            f"  %0 = qcc.dequant %w : {qt} -> tensor<{rows}x{cols}xf32>\n"
            f"  return %0 : tensor<{rows}x{cols}xf32>\n}}\n")


def _have_driver():
    try:
        return bool(find_tool("qcc"))
    except Exception:  # noqa: BLE001 - any failure to locate it means skip
        return False


@pytest.mark.skipif(not _have_driver(), reason="the qcc driver is not built")
@pytest.mark.parametrize("fmt", ALL)
def test_driver_compiled_dequant(fmt, golden, workdir, tmp_path):
    """The driver-compiled qcc.dequant reproduces ggml's T.deq on the golden
    blocks and the runtime's decode on random blocks, bit for bit."""
    _, ne, raw = golden[f"{fmt}.q"]
    cols, rows = ne
    want = np.frombuffer(golden[f"{fmt}.deq"][2], dtype="<u4")
    step = compile_step(_dequant_module(fmt, rows, cols), tmp_path / "golden")
    got = step.call("deq", np.frombuffer(raw, dtype=np.uint8))
    got = got.view(np.uint32).ravel()
    assert _report(fmt, got, want) is None, _report(fmt, got, want)

    _, be, bb = FORMATS[fmt]
    rows, cols = 8, 1024 if be <= 256 else be * 4
    rng = np.random.default_rng(FORMATS[fmt][0] * 104729 + 3)
    raw = rng.integers(0, 256, size=rows * cols // be * bb, dtype=np.uint8)
    want = runtime_decode_bits(fmt, rows, cols, raw.tobytes(), workdir)
    step = compile_step(_dequant_module(fmt, rows, cols), tmp_path / "random")
    got = step.call("deq", raw).view(np.uint32).ravel()
    assert _report(fmt, got, want) is None, _report(fmt, got, want)
