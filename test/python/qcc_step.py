"""Test helpers: the golden file's tensors, and the step binding of the qcc
Python package (imported from the source tree when it is not installed)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))

from qcc.step import Step, compile_step, find_tool  # noqa: E402,F401

GOLDEN = os.environ.get(
    "QCC_GOLDEN", os.path.join(ROOT, "test", "data", "golden", "ggml-golden.gguf"))


def golden_tensors():
    """name -> (type name, ne, raw bytes) of the golden file, located with
    `qcc-gguf info --json` (the gguf package cannot read every type in it)."""
    info = json.loads(subprocess.run([find_tool("qcc-gguf"), "info", "--json",
                                      GOLDEN], check=True, capture_output=True,
                                     text=True).stdout)
    data = open(GOLDEN, "rb").read()
    out = {}
    for t in info["tensors"]:
        start = t["file_offset"]
        out[t["name"]] = (t["type"], t["ne"], data[start:start + t["nbytes"]])
    return out
