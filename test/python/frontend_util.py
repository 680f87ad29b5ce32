"""Helpers of the frontend tests: compile traced functions, check gradients
against finite differences through the compiled code, FileCheck text."""

import os
import subprocess

import numpy as np

import qcc_step  # noqa: F401  (puts the source tree's python/ first)
import qcc

FILECHECK = os.environ.get("FILECHECK", "/usr/lib/llvm-22/bin/FileCheck")


def filecheck(text, checks):
    """Runs FileCheck with `checks` (the CHECK lines) on `text`."""
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"),
                        f"qcc-fc-{os.getpid()}-{abs(hash(checks))}.txt")
    with open(path, "w") as f:
        f.write(checks)
    try:
        proc = subprocess.run([FILECHECK, path, "--dump-input=fail"],
                              input=text, capture_output=True, text=True)
    finally:
        os.unlink(path)
    assert proc.returncode == 0, proc.stderr[-6000:]


def _np_dtype(dtype):
    return {"f32": np.float32, "f64": np.float64, "i32": np.int32}[dtype]


def check_grads(tmp_path, build, inputs, float_type="f64", h=None, rtol=None,
                directions=2, seed=0):
    """`inputs`: name -> (value, kind) with kind "float" (differentiated),
    "int" (i32 ids), "const" (a float input not differentiated) or a GGUF
    format "f32" for a weight stored as a qtensor of f32 blocks (its
    gradient is the one with respect to Ŵ). `build(leaves)` returns the
    traced output y; the checked scalar is L = Σ y ⊙ R for a fixed random R.
    The compiled gradient is compared with central differences of the
    compiled L along random directions. Returns the compiled gradients."""
    h = h or (1e-6 if float_type == "f64" else 2e-3)
    rtol = rtol or (1e-6 if float_type == "f64" else 2e-2)
    rng = np.random.default_rng(seed)
    with qcc.Graph(float_type) as g:
        leaves, diff = {}, []
        for name, (value, kind) in inputs.items():
            value = np.asarray(value)
            if kind == "int":
                leaves[name] = g.input(name, value.shape, "i32")
            elif kind in ("float", "const"):
                leaves[name] = g.input(name, value.shape)
            else:
                leaves[name] = g.arg(name, value.shape, kind, role="weight")
            if kind not in ("int", "const"):
                diff.append(name)
        y = build(leaves)
        r = g.input("R", y.shape)
        loss = (y * r).sum()
        grads = qcc.grad(loss, [leaves[n] for n in diff])
        assert all(gr is not None for gr in grads), diff
        args = list(leaves.values()) + [r]
        text = qcc.module([qcc.Function("f", [loss], args=args),
                           qcc.Function("g", [loss] + grads, args=args)])
    step = qcc.compile_step(text, tmp_path)
    fdt = _np_dtype(float_type)
    values = {}
    for name, (value, kind) in inputs.items():
        if kind == "int":
            values[name] = np.asarray(value, np.int32)
        elif kind in ("float", "const"):
            values[name] = np.asarray(value, fdt)
        else:
            values[name] = np.asarray(value, np.float32)
    rv = rng.standard_normal(y.shape).astype(fdt)

    def call(fn, vals):
        args = []
        for name, (_, kind) in inputs.items():
            v = vals[name]
            args.append(v.view(np.uint8) if kind not in ("int", "float", "const")
                        else v)
        return step.call(fn, *args, rv)

    res = call("g", values)
    grads_v = res[1:] if isinstance(res, list) else []
    for k in range(directions):
        dirs = {n: rng.standard_normal(values[n].shape).astype(values[n].dtype)
                for n in diff}
        plus = {n: (values[n] + h * dirs[n]).astype(values[n].dtype)
                if n in dirs else values[n] for n in values}
        minus = {n: (values[n] - h * dirs[n]).astype(values[n].dtype)
                 if n in dirs else values[n] for n in values}
        fd = (float(call("f", plus)) - float(call("f", minus))) / (2 * h)
        an = sum(float(np.sum(gv.astype(np.float64) * dirs[n]))
                 for n, gv in zip(diff, grads_v))
        scale = max(abs(fd), abs(an), 1e-3)
        assert abs(fd - an) <= rtol * scale, (
            f"direction {k}: finite difference {fd!r}, autodiff {an!r}")
    return dict(zip(diff, grads_v)), text
