"""Compile MLIR with the `qcc` driver and call a step library from numpy.

A step library (docs/runtime.md) exports `qcc_entry_<f>(void **args)` for
each public function and `qcc_step_manifest()`, a JSON description of every
argument and result. `Step` wraps one library with ctypes: arguments are
numpy arrays (qtensors as uint8 arrays of their GGUF block bytes) or Python
scalars; results come back as numpy arrays."""

import ctypes
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np

_DTYPES = {"f32": np.float32, "f16": np.float16, "f64": np.float64,
           "i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64,
           "bf16": np.uint16}


def find_tool(name):
    """Path of a qcc tool: $QCC_BUILD_DIR/bin, the source tree's build/bin,
    then PATH."""
    candidates = []
    if "QCC_BUILD_DIR" in os.environ:
        candidates.append(os.path.join(os.environ["QCC_BUILD_DIR"], "bin", name))
    here = os.path.dirname(os.path.abspath(__file__))
    candidates.append(os.path.join(here, "..", "..", "build", "bin", name))
    for path in candidates:
        if os.access(path, os.X_OK):
            return os.path.normpath(path)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"cannot find the '{name}' tool; build qcc or "
                                "set QCC_BUILD_DIR")
    return found


class Step:
    """A compiled step library."""

    def __init__(self, path):
        self.path = path
        self.lib = ctypes.CDLL(path)
        self.lib.qcc_step_manifest.restype = ctypes.c_char_p
        self.lib.qcc_step_take_error.restype = ctypes.c_char_p
        self.manifest = json.loads(self.lib.qcc_step_manifest().decode())
        self.entries = {e["name"]: e for e in self.manifest["entries"]}

    def take_error(self):
        """The first error a runtime function of the step recorded since the
        last call (e.g. a requant of NaN input), or None; clears it."""
        message = self.lib.qcc_step_take_error()
        return message.decode() if message is not None else None

    def call(self, name, *args):
        """Calls entry `name`; returns its result (or a list of results)."""
        if name not in self.entries:
            raise KeyError(f"no entry '{name}' in {self.path} "
                           f"(has: {', '.join(self.entries)})")
        entry = self.entries[name]
        if len(args) != len(entry["args"]):
            raise TypeError(f"{name} takes {len(entry['args'])} arguments, "
                            f"got {len(args)}")
        keep = []
        for desc, value in zip(entry["args"], args):
            if desc["kind"] == "scalar":
                arr = np.array([value], dtype=_DTYPES[desc["dtype"]])
            else:
                arr = np.ascontiguousarray(value)
                if arr.nbytes != desc["bytes"]:
                    raise ValueError(
                        f"{name}: argument {desc['index']} ('{desc['name']}') "
                        f"has {arr.nbytes} bytes, expected {desc['bytes']}")
            keep.append(arr)
        results = []
        for desc in entry["results"]:
            if desc["kind"] == "qtensor":
                results.append(np.zeros(desc["bytes"], dtype=np.uint8))
            else:
                results.append(np.zeros(desc["shape"],
                                        dtype=_DTYPES[desc["dtype"]]))
        ptrs = (ctypes.c_void_p * (len(keep) + len(results)))(
            *[a.ctypes.data for a in keep + results])
        getattr(self.lib, entry["symbol"])(ptrs)
        return results[0] if len(results) == 1 else results


def compile_step(mlir_text, out_dir=None, *flags):
    """Compiles `mlir_text` with qcc into OUT_DIR/step.so (a fresh temporary
    directory by default) and loads it. Raises RuntimeError with qcc's
    diagnostics when compilation fails."""
    out_dir = str(out_dir) if out_dir else tempfile.mkdtemp(prefix="qcc-step-")
    os.makedirs(out_dir, exist_ok=True)
    src = os.path.join(out_dir, "step.mlir")
    with open(src, "w") as f:
        f.write(mlir_text)
    out = os.path.join(out_dir, "step.so")
    proc = subprocess.run([find_tool("qcc"), src, "-o", out, *flags],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"qcc failed:\n{proc.stderr}")
    return Step(out)
