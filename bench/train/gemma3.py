#!/usr/bin/env python3
"""qcc-train on Gemma 3 270M Q4_K_M: tokens/s, peak RSS, compile time and
time to the first step, per training mode, each in a fresh process.

Each mode runs `qcc-train` (B x T tokens per step, all cores) for a few
steps under GNU time: tokens/s is the median of the steps after the first
(the CSV log's per-step rate), peak RSS is the process's maximum resident
set, the compile time is the step's first (uncached) compile and the time
to first step is from process start until the first step has finished.

Modes: lora, full, full-frozen-embd (full with --freeze ^token_embd); each
with every --gemm given (qcc-train --gemm: f32, bf16).

Usage: bench/train/gemma3.py [--modes lora,full] [--gemm f32,bf16]
       [--batch 4] [--seq 128] [--steps 6] [--rank 8]"""

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("QCC_CACHE") or os.path.expanduser("~/.cache/qcc")
MODEL = os.environ.get("QCC_GEMMA3") or os.path.join(
    CACHE, "models", "gemma-3-270m-q4_k_m.gguf")
DATA = os.path.join(ROOT, "data", "bierce-train.txt")
ALL = "attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down"


# Loopback-only data parallelism (docs/distributed.md) for `ranks` > 1.
MPI_FLAGS = ["--oversubscribe", "--mca", "btl", "self,vader,tcp",
             "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo"]


def run(mode, gemm, a, tmp, ranks=1):
    """One qcc-train process, or with `ranks` > 1 an `mpirun -np ranks` job
    on this machine (each rank cores / ranks threads; peak RSS: the largest
    rank's)."""
    out = os.path.join(tmp, f"{mode}-{gemm}-{ranks}.gguf")
    args = [os.path.join(ROOT, "scripts", "qcc-train"), "--model", MODEL,
            "--data", DATA, "--steps", str(a.steps), "--batch", str(a.batch),
            "--seq", str(a.seq), "--gemm", gemm, "--out", out]
    if mode == "lora":
        args += ["--lora-rank", str(a.rank), "--lora-targets", ALL]
    elif mode == "full-frozen-embd":
        # The tied Q8_0 embedding/head frozen: the step uses the fused head.
        args += ["--full", "--freeze", "^token_embd"]
    else:
        args += ["--full"]
    env = dict(os.environ, QCC_CACHE_DIR=os.path.join(tmp, f"cache-{mode}-{gemm}"))
    cmd = ["/usr/bin/time", "-v", *args]
    if ranks > 1:
        cmd = ["mpirun", *MPI_FLAGS, "-np", str(ranks), *cmd]
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    if p.returncode:
        # qcc-train's own last line, before GNU time's report.
        own = p.stderr.split("\tCommand being timed")[0].strip().splitlines()
        return {"mode": mode, "error": own[-1] if own else f"exit {p.returncode}"}
    rss = max(int(k) for k in re.findall(
        r"Maximum resident set size \(kbytes\): (\d+)", p.stderr))
    comp = re.search(r"compiled in ([0-9.]+) s", p.stdout)
    with open(out + ".loss.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["loss"]]
    rates = sorted(float(r["tokens_per_s"]) for r in rows[1:])
    first_done = float(rows[0]["elapsed_s"])
    train_start = wall - float(rows[-1]["elapsed_s"])
    return {"mode": mode, "tokens_per_s": rates[len(rates) // 2],
            "final_loss": float(rows[-1]["loss"]),
            "peak_rss_gib": rss / 2**20, "compile_s": float(comp[1]) if comp else None,
            "first_step_s": train_start + first_done, "wall_s": wall}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="lora,full")
    ap.add_argument("--gemm", default="f32")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rank", type=int, default=8)
    a = ap.parse_args()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    print(f"# {cpu}, {os.cpu_count()} cores; B={a.batch} T={a.seq}, {a.steps} steps")
    print("| mode | --gemm | tokens/s | peak RSS | compile | time to first step |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for mode in a.modes.split(","):
            for gemm in a.gemm.split(","):
                r = run(mode, gemm, a, tmp)
                if "error" in r:
                    print(f"| {mode} | {gemm} | error: {r['error']} | | | |")
                    continue
                print(f"| {mode} | {gemm} | {r['tokens_per_s']:.1f} | "
                      f"{r['peak_rss_gib']:.2f} GiB | {r['compile_s']} s | "
                      f"{r['first_step_s']:.1f} s |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
