"""Test helpers: compile MLIR with the `qcc` driver and call the step
library's C entry points from numpy through ctypes (the ABI of
docs/runtime.md: `qcc_entry_<f>(void **args)`, arguments then results as
out-buffers, and the JSON manifest from `qcc_step_manifest()`)."""

import ctypes
import json
import os
import subprocess

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("QCC_BUILD_DIR", os.path.join(ROOT, "build"))
QCC = os.path.join(BUILD, "bin", "qcc")
QCC_GGUF = os.path.join(BUILD, "bin", "qcc-gguf")
GOLDEN = os.environ.get(
    "QCC_GOLDEN", os.path.join(ROOT, "..", "shared", "golden", "ggml-golden.gguf"))

DTYPES = {"f32": np.float32, "f16": np.float16, "i32": np.int32, "i8": np.int8,
          "i64": np.int64, "f64": np.float64}


class Step:
    """A compiled step library."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.qcc_step_manifest.restype = ctypes.c_char_p
        self.manifest = json.loads(self.lib.qcc_step_manifest().decode())
        self.entries = {e["name"]: e for e in self.manifest["entries"]}

    def call(self, name, *args):
        """Calls entry `name` with numpy arrays / scalars (qtensors as uint8
        arrays of their block bytes); returns the results as numpy arrays
        (qtensor results as uint8 arrays)."""
        entry = self.entries[name]
        if len(args) != len(entry["args"]):
            raise TypeError(f"{name} takes {len(entry['args'])} arguments")
        keep = []
        for desc, value in zip(entry["args"], args):
            if desc["kind"] == "scalar":
                arr = np.array([value], dtype=DTYPES[desc["dtype"]])
            else:
                arr = np.ascontiguousarray(value)
                if arr.nbytes != desc["bytes"]:
                    raise ValueError(f"argument {desc['index']}: {arr.nbytes} "
                                     f"bytes, expected {desc['bytes']}")
            keep.append(arr)
        results = []
        for desc in entry["results"]:
            if desc["kind"] == "qtensor":
                out = np.zeros(desc["bytes"], dtype=np.uint8)
            elif desc["dtype"] == "bf16":
                out = np.zeros(desc["shape"], dtype=np.uint16)
            else:
                out = np.zeros(desc["shape"], dtype=DTYPES[desc["dtype"]])
            results.append(out)
        ptrs = (ctypes.c_void_p * (len(keep) + len(results)))(
            *[a.ctypes.data for a in keep + results])
        getattr(self.lib, entry["symbol"])(ptrs)
        return results[0] if len(results) == 1 else results


def compile_step(mlir_text, tmp_path, *flags):
    """Compiles `mlir_text` with qcc into tmp_path/step.so and loads it."""
    src = tmp_path / "step.mlir"
    src.write_text(mlir_text)
    out = tmp_path / "step.so"
    proc = subprocess.run([QCC, str(src), "-o", str(out), *flags],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"qcc failed:\n{proc.stderr}")
    return Step(str(out))


def golden_tensors():
    """name -> (ggml type, ne, raw bytes) of the golden file, located with
    `qcc-gguf info --json` (the gguf package cannot read every type in it)."""
    info = json.loads(subprocess.run([QCC_GGUF, "info", "--json", GOLDEN],
                                     check=True, capture_output=True,
                                     text=True).stdout)
    data = open(GOLDEN, "rb").read()
    out = {}
    for t in info["tensors"]:
        start = t["file_offset"]
        out[t["name"]] = (t["type"], t["ne"], data[start:start + t["nbytes"]])
    return out
