"""Every buffer of a compiled step comes from the step runtime's checked
allocator (_mlir_memref_to_llvm_alloc): a step whose buffer cannot be had
ends with one line naming the bytes and status 3, not a segfault on a null
pointer."""

import os
import subprocess
import sys
import textwrap

import pytest

from qcc_step import ROOT

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from qcc import emit, ir
    from qcc.compiler import compile_mlir
    from qcc.models import tiny
    from qcc.runtime import Session
    model = sys.argv[1]
    tiny.make_model(model, "q8_0", d_model=64, n_layer=1, n_head=2,
                    n_head_kv=1, d_ff=128)
    rows = int(sys.argv[2])
    with ir.Graph("f32") as g:
        x = g.input("x", (1, 8192), "f32")
        w = g.input("w", (8192, 1), "f32")
        # The broadcast is materialized for the matmul: rows x 8192 f32.
        r = (ir.broadcast_to(x, (rows, 8192)) @ w).sum()
        text = emit.module([emit.Function("big", [(r, "r", None)], graph=g)])
    so, _ = compile_mlir(text, ["-O1"])
    s = Session(so, model, "big")
    s.set_input("x", np.full((1, 8192), 0.5, np.float32))
    s.set_input("w", np.ones((8192, 1), np.float32))
    s.run()
    print(float(s.result("r", np.float32, ())))
""")


def run(tmp_path, rows):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"),
               QCC_CACHE_DIR=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "m.gguf"),
                           str(rows)], capture_output=True, text=True, env=env,
                          timeout=600)


def test_a_buffer_that_fits_is_computed(tmp_path):
    r = run(tmp_path, 64)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) == 64 * 8192 * 0.5


def _overcommits():
    try:
        with open("/proc/sys/vm/overcommit_memory") as f:
            return f.read().strip() == "1"
    except OSError:
        return True


@pytest.mark.skipif(_overcommits(), reason="malloc never fails with "
                    "vm.overcommit_memory = 1 (or unknown)")
def test_a_buffer_that_cannot_fit_is_one_line(tmp_path):
    # 2^22 x 8192 f32 = 128 GiB: more than this machine's memory and swap.
    r = run(tmp_path, 1 << 22)
    assert r.returncode == 3, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "could not allocate 137438953472 bytes (128.0 GiB)" in lines[0]


@pytest.mark.skipif(_overcommits(), reason="malloc never fails with "
                    "vm.overcommit_memory = 1 (or unknown)")
def test_a_result_that_cannot_fit_is_refused_when_the_session_opens(tmp_path):
    """The runtime's own buffers (here a 128 GiB result) are checked too:
    the C API turns the failed allocation into an error, not an abort."""
    import numpy as np
    from qcc import emit, ir
    from qcc.compiler import compile_mlir
    from qcc.models import tiny
    from qcc.runtime import Session
    model = str(tmp_path / "m.gguf")
    tiny.make_model(model, "q8_0", d_model=64, n_layer=1, n_head=2,
                    n_head_kv=1, d_ff=128)
    with ir.Graph("f32") as g:
        x = g.input("x", (1, 8192), "f32")
        y = ir.broadcast_to(x, (1 << 22, 8192)) * 2.0
        text = emit.module([emit.Function("big", [(y, "y", None)], graph=g)])
    so, _ = compile_mlir(text, ["-O1"])
    with pytest.raises(RuntimeError, match="qcc_session_open: out of memory"):
        Session(so, model, "big")
