"""The body of bench/qat/recover (see there)."""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ap = argparse.ArgumentParser(prog="bench/qat/recover")
ap.add_argument("--targets", default="Q2_K", help="llama-quantize types, comma-separated")
ap.add_argument("--minutes", type=float, default=8.0, help="training time per target")
ap.add_argument("--lr", type=float, default=1e-4)
ap.add_argument("--calib", default="data/bierce-train.txt")
ap.add_argument("--eval", default="data/bierce-heldout.txt,data/jargon-unrelated.txt")
ap.add_argument("--work", default=None, help="folder for the files (default: a temporary one)")
a = ap.parse_args()

teacher = os.environ["QCC_GEMMA3"]
llama = os.environ["QCC_LLAMA_CPP_BIN"]
threads = str(os.cpu_count())
work = a.work or tempfile.mkdtemp(prefix="qcc-qat-")
os.makedirs(work, exist_ok=True)
evals = a.eval.split(",")
cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
           if l.startswith("model name"))
print(f"cpu: {cpu}, {threads} threads; files in {work}", flush=True)


def run(cmd, log):
    t = time.monotonic()
    with open(os.path.join(work, log), "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True)
    if p.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}); see {work}/{log}")
    return time.monotonic() - t


def ppl(model, text):
    out = subprocess.run([f"{llama}/llama-perplexity", "-m", model, "-f", text,
                          "-c", "512", "-t", threads, "--no-repack"],
                         capture_output=True, text=True)
    m = re.search(r"Final estimate: PPL = ([0-9.]+)", out.stdout + out.stderr)
    if not m:
        sys.exit(f"llama-perplexity could not run {model}: "
                 f"{(out.stdout + out.stderr)[-500:]}")
    return float(m.group(1))


rows = []


def types_of(path):
    import gguf
    return {t.name: (t.tensor_type, t.n_bytes) for t in gguf.GGUFReader(path).tensors}


def measure(name, path, seconds=None):
    r = [ppl(path, t) for t in evals]
    rows.append((name, os.path.getsize(path), r, seconds))
    print(f"  {name}: {os.path.getsize(path) / 1e6:.2f} MB, "
          + ", ".join(f"{os.path.basename(t)} {v:.3f}" for t, v in zip(evals, r)),
          flush=True)


measure("(1) teacher: Q4_K_M", teacher)
li, qi = os.path.join(work, "llama.imatrix.gguf"), os.path.join(work, "qcc.imatrix.gguf")
t_li = run([f"{llama}/llama-imatrix", "-m", teacher, "-f", a.calib, "-c", "512",
            "-o", li, "--no-ppl", "--no-repack", "-t", threads], "llama-imatrix.log")
t_qi = run(["build/bin/qcc-gguf", "imatrix", "--model", teacher, "--data", a.calib,
            "--ctx", "512", "-o", qi], "qcc-imatrix.log")
print(f"imatrix on {a.calib}: llama-imatrix {t_li:.1f} s, qcc-gguf imatrix {t_qi:.1f} s")
for target in a.targets.split(","):
    print(f"{target}:", flush=True)
    lq = os.path.join(work, f"llama-{target}.gguf")
    run([f"{llama}/llama-quantize", "--allow-requantize", "--imatrix", li, teacher,
         lq, target, threads], f"llama-quantize-{target}.log")
    measure(f"(2) llama.cpp imatrix + llama-quantize {target}", lq)
    qq = os.path.join(work, f"qcc-{target}.gguf")
    run(["build/bin/qcc-gguf", "quantize", teacher, qq, "--types-from", lq,
         "--imatrix", qi], f"qcc-quantize-{target}.log")
    measure(f"(3) qcc imatrix + qcc-gguf quantize, {target}'s types", qq)
    # Incoherence: the V/O Hadamard rotation before (3)'s imatrix and
    # quantization (the function is unchanged; test_rotate.py).
    rot = os.path.join(work, "rotated.gguf")
    rqi = os.path.join(work, "rotated.imatrix.gguf")
    if not os.path.exists(rqi):
        run(["build/bin/qcc-gguf", "rotate", teacher, rot], "qcc-rotate.log")
        run(["build/bin/qcc-gguf", "imatrix", "--model", rot, "--data", a.calib,
             "--ctx", "512", "-o", rqi], "qcc-imatrix-rotated.log")
    rq = os.path.join(work, f"qcc-{target}-rotated.gguf")
    run(["build/bin/qcc-gguf", "quantize", rot, rq, "--types-from", lq,
         "--imatrix", rqi], f"qcc-quantize-{target}-rotated.log")
    measure(f"(3h) (3) after qcc-gguf rotate (V/O Hadamard)", rq)
    kd = os.path.join(work, f"qcc-{target}-kd.gguf")
    t = run(["scripts/qcc-train", "--model", qq, "--teacher", teacher,
             "--data", a.calib, "--full", "--freeze", "token_embd",
             "--task-weight", "0", "--kd-weight", "1", "--kd-temperature", "1",
             "--batch", "4", "--seq", "128", "--steps", "1000", "--lr", str(a.lr),
             "--gemm", "auto", "--time-limit", str(a.minutes * 60), "--out", kd],
            f"qcc-train-{target}.log")
    measure(f"(4) (3) + qcc-train distillation from (1), {a.minutes:g} min", kd, t)
    ref = types_of(lq)
    for what, path in (("(3)", qq), ("(3h)", rq), ("(4)", kd)):
        same = types_of(path) == ref
        print(f"  {what}: every tensor of (2)'s type and byte size: "
              f"{'yes' if same else 'NO'}")
        if not same:
            sys.exit(f"{path}: its tensor types differ from {lq}'s")
    base, low, rec = rows[0][2], rows[-4][2], rows[-1][2]
    for t_, b, l, r in zip(evals, base, low, rec):
        print(f"  {os.path.basename(t_)}: (4) recovers "
              f"{100 * (l - r) / (l - b):.1f}% of the gap (2) - (1)")

print()
print("| model | size (MB) | " + " | ".join(f"PPL {os.path.basename(t)}" for t in evals) + " |")
print("|---|---|" + "---|" * len(evals))
for name, size, r, _ in rows:
    print(f"| {name} | {size / 1e6:.2f} | " + " | ".join(f"{v:.3f}" for v in r) + " |")
