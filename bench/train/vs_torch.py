#!/usr/bin/env python3
"""qcc-train against PyTorch + transformers + PEFT on the same machine, in
one run: the Gemma 3 270M Q4_K_M GGUF, the same text, batch, sequence
length and thread count.

Configurations, each a fresh process:
  qcc_lora     qcc-train --lora-rank R on every projection (AdamW)
  qcc_full     qcc-train --full (every weight through its own blocks)
  qcc_lora_2ranks  qcc_lora as `mpirun -np 2` on this machine, one thread
               per rank (docs/distributed.md)
  qcc_lora_exact  qcc_lora with --gemm f32: the loss after the same steps
               is compared with qcc_lora's (the issue's 1% check)
  torch_lora   transformers (GGUF dequantized to fp32) + peft LoRA r=R, f32
  torch_lora_bf16  the same under torch.autocast(bfloat16)
  torch_full   full fine-tuning in f32 (AdamW)
Each prints tokens/s (median of the steps after the first), peak RSS and
the time from process start to the end of the first step; then the ratios
the issue asks for (qcc LoRA against torch's fastest LoRA, qcc full against
torch full). With --json the last line is one JSON object.

torch, transformers and peft live in their own virtualenv under the cache
(TORCH_VENV, pinned below), created on first use; never in .venv.

Usage: bench/train/vs-torch [--batch 4] [--seq 128] [--steps 6] [--rank 16]
       [--configs qcc_lora,qcc_full,torch_lora,torch_lora_bf16,torch_full]
       [--gemm auto|f32|bf16] [--json]"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gemma3 as qcc_side  # noqa: E402  (bench/train/gemma3.py)

ROOT = qcc_side.ROOT
sys.path.insert(0, os.path.join(ROOT, "python"))
TORCH_VENV = os.environ.get("QCC_TORCH_VENV") or os.path.join(qcc_side.CACHE, "torch-venv")
TORCH_PINS = ["torch==2.15.0", "transformers==5.23.0", "peft==0.21.2",
              "gguf==0.19.0", "numpy==2.4.6", "sentencepiece==0.2.3"]
CONFIGS = ["qcc_lora", "qcc_full", "torch_lora", "torch_lora_bf16", "torch_full",
           "qcc_lora_2ranks", "qcc_lora_exact"]
DEFAULT_CONFIGS = CONFIGS[:5]


def torch_python():
    """The benchmark virtualenv's python, created (pinned) on first use."""
    py = os.path.join(TORCH_VENV, "bin", "python")
    stamp = os.path.join(TORCH_VENV, ".qcc-pins")
    want = " ".join(TORCH_PINS)
    if os.path.exists(stamp) and open(stamp).read() == want:
        return py
    print(f"# creating {TORCH_VENV} ({want}); once, several minutes", flush=True)
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", TORCH_VENV], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", *TORCH_PINS], check=True)
    with open(stamp, "w") as f:
        f.write(want)
    return py


def write_batches(path, steps, batch, seq):
    """Consecutive windows of the training text, tokenized by qcc's tokenizer
    from the model's metadata: [steps, batch, seq + 1] int32."""
    from qcc import models
    from qcc.tokenizer import Tokenizer
    _, _, info = models.load(qcc_side.MODEL)
    tok = Tokenizer.from_metadata(info.metadata)
    with open(qcc_side.DATA, encoding="utf-8") as f:
        ids = tok.encode(f.read(), add_special=True)
    need = steps * batch * (seq + 1)
    reps = -(-need // len(ids))
    arr = np.array((ids * reps)[:need], np.int32).reshape(steps, batch, seq + 1)
    np.save(path, arr)


def run_torch(config, a, tokens):
    args = [torch_python(), os.path.join(HERE, "torch_side.py"), "--model",
            qcc_side.MODEL, "--tokens", tokens, "--steps", str(a.steps),
            "--rank", str(a.rank), "--threads", str(os.cpu_count()),
            "--mode", "full" if config == "torch_full" else "lora",
            "--t0", repr(time.time())]
    if config == "torch_lora_bf16":
        args.append("--bf16")
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode:
        tail = (p.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": tail}
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_qcc(config, a, tmp):
    mode = "full" if config == "qcc_full" else "lora"
    gemm = "f32" if config == "qcc_lora_exact" else a.gemm
    return qcc_side.run(mode, gemm, a, tmp,
                        ranks=2 if config == "qcc_lora_2ranks" else 1)


def cpu_facts():
    model, flags = "?", set()
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    units = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni",
                         "amx_tile", "amx_bf16", "amx_int8") if f in flags]
    return model, units


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
    ap.add_argument("--gemm", default="auto", choices=["auto", "f32", "bf16"],
                    help="qcc-train --gemm (default auto: bf16 where the CPU "
                         "has AVX512-BF16, as torch's autocast uses it)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    configs = a.configs.split(",")
    bad = [c for c in configs if c not in CONFIGS]
    if bad:
        ap.error(f"unknown configuration {bad[0]!r} (choose from {', '.join(CONFIGS)})")
    model, units = cpu_facts()
    print(f"# {model}, {os.cpu_count()} cores ({' '.join(units)}); B={a.batch} "
          f"T={a.seq}, {a.steps} steps, LoRA rank {a.rank}, qcc --gemm {a.gemm}",
          flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tokens = os.path.join(tmp, "batches.npy")
        if any(c.startswith("torch") for c in configs):
            torch_python()
            write_batches(tokens, a.steps, a.batch, a.seq)
        print("| configuration | tokens/s | peak RSS | time to first step |")
        print("|---|---|---|---|", flush=True)
        for c in configs:
            r = run_qcc(c, a, tmp) if c.startswith("qcc") else run_torch(c, a, tokens)
            results[c] = r
            if "error" in r:
                print(f"| {c} | error: {r['error']} | | |", flush=True)
                continue
            print(f"| {c} | {r['tokens_per_s']:.1f} | {r['peak_rss_gib']:.2f} GiB | "
                  f"{r['first_step_s']:.1f} s |", flush=True)

    def rate(c):
        r = results.get(c)
        return r["tokens_per_s"] if r and "error" not in r else None

    torch_lora = [x for x in (rate("torch_lora"), rate("torch_lora_bf16")) if x]
    best = max(torch_lora) if torch_lora else None
    summary = {
        "cpu": model, "cpu_units": units, "batch": a.batch, "seq": a.seq,
        "steps": a.steps, "rank": a.rank, "qcc_gemm": a.gemm,
        "qcc_lora_tok_s": rate("qcc_lora"), "qcc_full_tok_s": rate("qcc_full"),
        "torch_lora_tok_s": rate("torch_lora"),
        "torch_lora_bf16_tok_s": rate("torch_lora_bf16"),
        "torch_lora_best_tok_s": best, "torch_full_tok_s": rate("torch_full"),
        "qcc_lora_peak_rss_gib": results.get("qcc_lora", {}).get("peak_rss_gib"),
        "qcc_full_peak_rss_gib": results.get("qcc_full", {}).get("peak_rss_gib"),
        "torch_lora_peak_rss_gib": results.get("torch_lora", {}).get("peak_rss_gib"),
        "torch_full_peak_rss_gib": results.get("torch_full", {}).get("peak_rss_gib"),
        "qcc_lora_2ranks_tok_s": rate("qcc_lora_2ranks"),
    }
    if summary["qcc_lora_tok_s"] and best:
        summary["lora_ratio"] = summary["qcc_lora_tok_s"] / best
        print(f"qcc LoRA / torch's fastest LoRA: {summary['lora_ratio']:.2f}x (goal 2x)")
    if summary["qcc_lora_2ranks_tok_s"] and best:
        summary["lora_2ranks_ratio"] = summary["qcc_lora_2ranks_tok_s"] / best
        print(f"qcc LoRA on 2 ranks / torch's fastest LoRA: "
              f"{summary['lora_2ranks_ratio']:.2f}x")
    exact, fast = results.get("qcc_lora_exact"), results.get("qcc_lora")
    if exact and fast and "error" not in exact and "error" not in fast:
        d = fast["final_loss"] / exact["final_loss"] - 1
        summary["lora_loss_vs_exact"] = d
        print(f"qcc LoRA loss after {a.steps} steps: {fast['final_loss']:.4f} "
              f"(--gemm {a.gemm}) against {exact['final_loss']:.4f} (--gemm f32): "
              f"{100 * d:+.2f}% (goal: within 1%)")
    if summary["qcc_full_tok_s"] and summary["torch_full_tok_s"]:
        summary["full_ratio"] = summary["qcc_full_tok_s"] / summary["torch_full_tok_s"]
        print(f"qcc full / torch full: {summary['full_ratio']:.2f}x (goal 2x)")
    if a.json:
        print(json.dumps(summary))
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
