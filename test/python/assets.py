"""Where the real parts the tests compare against live: the cache that
scripts/fetch-assets and scripts/build-llama-cpp fill (scripts/paths has the
same defaults). A missing part fails the test that needs it, naming the
script that installs it: these tests never skip for want of set-up."""

import os
import subprocess

import pytest

CACHE = os.environ.get("QCC_CACHE") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "qcc")
GEMMA3 = os.environ.get("QCC_GEMMA3") or os.path.join(
    CACHE, "models", "gemma-3-270m-q4_k_m.gguf")
LLAMA_CPP_SRC = os.environ.get("QCC_LLAMA_CPP_SRC") or os.path.join(CACHE, "llama.cpp")
LLAMA_CPP_BIN = os.environ.get("QCC_LLAMA_CPP_BIN") or os.path.join(
    CACHE, "llama.cpp-build", "bin")
VOCAB_FIXTURES = os.path.join(LLAMA_CPP_SRC, "models")


def require(path, script="scripts/fetch-assets"):
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: run {script} (make check runs it)")
    return path


def gemma3():
    return require(GEMMA3)


def llama_tool(name):
    return require(os.path.join(LLAMA_CPP_BIN, name), "scripts/build-llama-cpp")


def run_llama(name, *args, timeout=600):
    """stdout of a llama.cpp tool (stderr logs dropped); asserts rc 0."""
    p = subprocess.run([llama_tool(name), *map(str, args)], capture_output=True,
                       text=True, timeout=timeout)
    assert p.returncode == 0, f"{name} failed ({p.returncode}): {p.stderr[-2000:]}"
    return p.stdout
