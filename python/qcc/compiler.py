"""Compiling emitted MLIR with the `qcc` driver, with a cache: a step library
is reused when the same text is compiled with the same flags by the same
`qcc` binary (a model's step compiles in tens of seconds)."""

import hashlib
import os
import subprocess
import tempfile

from .step import find_tool


def cache_dir():
    d = os.environ.get("QCC_CACHE_DIR")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
            os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "qcc", "steps")
    return d


def compile_mlir(text, flags=(), cache=True, out=None):
    """Path of a step library compiled from `text`. Raises RuntimeError with
    qcc's diagnostics when it fails. Returns (path, was_cached)."""
    qcc = find_tool("qcc")
    st = os.stat(qcc)
    h = hashlib.sha256()
    h.update(text.encode())
    h.update(repr((list(flags), os.path.realpath(qcc), st.st_size,
                   st.st_mtime_ns)).encode())
    # The runtime archives qcc links into every step (a build tree's; an
    # installed qcc has them elsewhere and is keyed by its own stamp).
    build = os.path.dirname(os.path.dirname(os.path.realpath(qcc)))
    for lib in ("runtime/lib/step/libqcc_step_rt.a",
                "runtime/lib/formats/libqcc_codecs.a",
                "runtime/lib/cuda/libqcc_cuda_mgpu.a"):
        path = os.path.join(build, lib)
        if os.path.exists(path):
            ls = os.stat(path)
            h.update(repr((lib, ls.st_size, ls.st_mtime_ns)).encode())
    key = h.hexdigest()[:24]
    d = cache_dir() if cache else tempfile.mkdtemp(prefix="qcc-step-")
    os.makedirs(d, exist_ok=True)
    path = out or os.path.join(d, f"{key}.so")
    if cache and os.path.exists(path) and not out:
        return path, True
    # Private names until the rename: processes sharing the cache (the
    # ranks of a data-parallel job, two runs at once) may compile the same
    # step at the same time.
    tag = f"{os.getpid()}-{os.urandom(4).hex()}"
    src = os.path.join(d, f"{key}.{tag}.mlir")
    with open(src, "w") as f:
        f.write(text)
    target = path if out else os.path.join(d, f"{key}.{tag}.so")
    proc = subprocess.run([qcc, src, "-o", target, *flags], capture_output=True,
                          text=True)
    os.replace(src, os.path.join(d, f"{key}.mlir"))  # kept for reading
    if proc.returncode != 0:
        raise RuntimeError(f"qcc failed:\n{proc.stderr}")
    if target != path:
        os.replace(target, path)
    return path, False
