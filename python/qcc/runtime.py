"""The qcc runtime's C API (libqcc_runtime.so, docs/qcc-run.md) from Python.

    with Session("step.so", "model.gguf") as s:
        s.set_input("tokens", tokens)
        s.run()
        loss = s.result("loss", np.float32)
        s.save("trained.gguf")

A session binds a step library's entry to a GGUF model: weights by name
(trainable ones copied, frozen ones mapped zero-copy), state at zero, params
drawn from the seeded RNG; each run feeds results back into the arguments
of the same name. Errors raise RuntimeError with the runtime's message."""

import ctypes
import os

import numpy as np

from .step import find_tool

_LIB = None


def find_library():
    """libqcc_runtime.so: $QCC_RUNTIME_LIB, $QCC_BUILD_DIR/lib, the source
    tree's build/lib, or beside the qcc tools found on PATH."""
    if os.environ.get("QCC_RUNTIME_LIB"):
        return os.environ["QCC_RUNTIME_LIB"]
    cands = []
    if os.environ.get("QCC_BUILD_DIR"):
        cands.append(os.path.join(os.environ["QCC_BUILD_DIR"], "lib"))
    here = os.path.dirname(os.path.abspath(__file__))
    cands.append(os.path.join(here, "..", "..", "build", "lib"))
    try:
        cands.append(os.path.join(os.path.dirname(find_tool("qcc")), "..", "lib"))
    except FileNotFoundError:
        pass
    for d in cands:
        p = os.path.normpath(os.path.join(d, "libqcc_runtime.so"))
        if os.path.exists(p):
            return p
    raise FileNotFoundError("cannot find libqcc_runtime.so; build qcc or set "
                            "QCC_BUILD_DIR")


def library():
    global _LIB
    if _LIB is None:
        # Global, so that the MPI library it links can load its plugins
        # (Open MPI's components resolve symbols of libmpi at dlopen).
        lib = ctypes.CDLL(find_library(), mode=ctypes.RTLD_GLOBAL)
        P, C = ctypes.c_void_p, ctypes.c_char_p
        sz = ctypes.c_size_t
        sigs = {
            "qcc_session_open": (P, [C, C, C, ctypes.POINTER(P)]),
            "qcc_session_open_device": (P, [C, C, C, C, ctypes.POINTER(P)]),
            "qcc_session_device": (C, [P]),
            "qcc_session_set_input": (ctypes.c_int, [P, C, P, sz, ctypes.POINTER(P)]),
            "qcc_session_run": (ctypes.c_int, [P, ctypes.POINTER(P)]),
            "qcc_session_result": (P, [P, C, ctypes.POINTER(sz)]),
            "qcc_session_argument": (P, [P, C, ctypes.POINTER(sz)]),
            "qcc_session_steps": (ctypes.c_uint64, [P]),
            "qcc_session_runs": (ctypes.c_uint64, [P]),
            "qcc_session_seed": (ctypes.c_int, [P, ctypes.c_uint64, ctypes.POINTER(P)]),
            "qcc_session_random": (ctypes.c_uint64, [P]),
            "qcc_session_save": (ctypes.c_int, [P, C, ctypes.POINTER(P)]),
            "qcc_session_save_checkpoint": (ctypes.c_int, [P, C, ctypes.POINTER(P)]),
            "qcc_session_load_checkpoint": (ctypes.c_int, [P, C, ctypes.POINTER(P)]),
            "qcc_session_save_lora": (ctypes.c_int, [P, C, ctypes.POINTER(P)]),
            "qcc_session_save_merged": (ctypes.c_int, [P, C, ctypes.POINTER(P)]),
            "qcc_session_close": (None, [P]),
            "qcc_session_check_replicas": (ctypes.c_int, [P, ctypes.POINTER(P)]),
            "qcc_session_profile": (C, [P, ctypes.c_int]),
            "qcc_session_profile_table": (C, [P, ctypes.c_double]),
            "qcc_session_profile_trace": (None, [P, ctypes.c_int64]),
            "qcc_session_write_profile_trace": (ctypes.c_int, [P, C, ctypes.POINTER(P)]),
            "qcc_session_model_fingerprint": (C, [P]),
            "qcc_dist_init": (ctypes.c_int, [ctypes.POINTER(ctypes.c_int),
                                             ctypes.POINTER(ctypes.c_int),
                                             ctypes.POINTER(P)]),
            "qcc_dist_all_gather": (ctypes.c_int, [P, P, sz, ctypes.POINTER(P)]),
            "qcc_dist_bytes_received": (ctypes.c_uint64, []),
            "qcc_dist_abort": (None, [ctypes.c_int]),
            "qcc_dist_finalize": (None, []),
            "qcc_free_error": (None, [P]),
        }
        for name, (res, args) in sigs.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        _LIB = lib
    return _LIB


def _take(err):
    if not err.value:
        return "unknown error"
    msg = ctypes.string_at(err.value).decode("utf-8", "replace")
    library().qcc_free_error(err)
    return msg


class SkippedStep(RuntimeError):
    """A step whose values were not finite: nothing of it was applied."""


class Session:
    def __init__(self, step_path, model_path, entry=None, device="cpu"):
        """`device`: "cpu" or "cuda" (a step compiled with --target=cuda,
        run on device 0 of the CUDA driver; docs/runtime.md#cuda)."""
        lib = library()
        err = ctypes.c_void_p()
        self._s = lib.qcc_session_open_device(str(step_path).encode(),
                                              entry.encode() if entry else None,
                                              str(model_path).encode(),
                                              device.encode(),
                                              ctypes.byref(err))
        if not self._s:
            raise RuntimeError(_take(err))

    @property
    def device(self):
        return library().qcc_session_device(self._s).decode()

    def _check(self, rc, err):
        if rc == 2:
            raise SkippedStep(_take(err))
        if rc:
            raise RuntimeError(_take(err))

    def _call(self, fn, *args):
        err = ctypes.c_void_p()
        self._check(getattr(library(), fn)(self._s, *args, ctypes.byref(err)), err)

    def set_input(self, name, value):
        arr = np.ascontiguousarray(value)
        self._call("qcc_session_set_input", name.encode(),
                   arr.ctypes.data_as(ctypes.c_void_p), arr.nbytes)

    def run(self):
        """One step; raises SkippedStep when it was skipped for non-finite
        values (weights and state unchanged)."""
        self._call("qcc_session_run")

    def _bytes(self, fn, name):
        n = ctypes.c_size_t()
        p = getattr(library(), fn)(self._s, name.encode(), ctypes.byref(n))
        if not p:
            return None
        return ctypes.string_at(p, n.value)

    def result(self, name, dtype=np.float32, shape=None):
        data = self._bytes("qcc_session_result", name)
        if data is None:
            raise KeyError(f"no result '{name}'")
        a = np.frombuffer(data, dtype=dtype).copy()
        return a.reshape(shape) if shape is not None else a

    def argument(self, name, dtype=np.uint8):
        data = self._bytes("qcc_session_argument", name)
        return None if data is None else np.frombuffer(data, dtype=dtype).copy()

    @property
    def steps(self):
        return int(library().qcc_session_steps(self._s))

    @property
    def runs(self):
        return int(library().qcc_session_runs(self._s))

    def seed(self, seed):
        self._call("qcc_session_seed", ctypes.c_uint64(seed))

    def random(self):
        return int(library().qcc_session_random(self._s))

    def save(self, path):
        self._call("qcc_session_save", str(path).encode())

    def check_replicas(self):
        """Data parallelism: raises RuntimeError naming the first tensor
        whose bytes differ between the ranks (every rank must call it)."""
        self._call("qcc_session_check_replicas")

    def profile(self, reset=False):
        """Per-kernel counters of a step compiled with qcc --profile (a list
        of dicts: id, kernel, op, type, loc, flops, bytes, calls, ns), or
        None for a step without them."""
        import json
        text = library().qcc_session_profile(self._s, int(reset))
        return None if text is None else json.loads(text.decode())

    def profile_table(self, wall_seconds=0.0):
        """The table qcc-run --profile prints (None: not profiled)."""
        text = library().qcc_session_profile_table(self._s, float(wall_seconds))
        return None if text is None else text.decode()

    def trace_profile(self, max_events=1 << 20):
        library().qcc_session_profile_trace(self._s, int(max_events))

    def write_profile_trace(self, path):
        self._call("qcc_session_write_profile_trace", str(path).encode())

    @property
    def model_fingerprint(self):
        return library().qcc_session_model_fingerprint(self._s).decode()

    def save_checkpoint(self, path):
        self._call("qcc_session_save_checkpoint", str(path).encode())

    def load_checkpoint(self, path):
        self._call("qcc_session_load_checkpoint", str(path).encode())

    def save_lora(self, path):
        self._call("qcc_session_save_lora", str(path).encode())

    def save_merged(self, path):
        self._call("qcc_session_save_merged", str(path).encode())

    def close(self):
        if getattr(self, "_s", None):
            library().qcc_session_close(self._s)
            self._s = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()
