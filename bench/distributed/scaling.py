#!/usr/bin/env python3
"""Data-parallel qcc-train on Gemma 3 270M Q4_K_M: one process against
`mpirun -np N` on the same machine, same global batch, same data, in one run
(docs/distributed.md).

For each mode (lora: rank --rank on every linear layer; full: every weight
but the tied Q8_0 embedding/head, which stays frozen so that the step uses
the fused head) it runs qcc-train for --steps steps with B x T tokens per
step, first as one process with every core, then as N ranks with
cores / N threads each, and reports per run: tokens/s (median of the steps
after the first), the largest peak RSS of a rank (GNU time; the model's
pages are one shared mapping, counted in each rank's RSS), the bytes each
rank received per step (qcc-train's summary, the collectives and the
replica checks), and the largest difference between the two runs' losses.

Usage: bench/distributed/scaling.py [--modes lora,full] [--ranks 2]
       [--batch 4] [--seq 128] [--steps 8] [--rank 16] [--json]"""

import argparse
import csv
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "train"))
from gemma3 import ALL, DATA, MODEL, ROOT  # noqa: E402  (one home for them)
MPI_FLAGS = ["--oversubscribe", "--mca", "btl", "self,vader,tcp",
             "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo"]


def cpu_name():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def run(mode, ranks, a, tmp):
    out = os.path.join(tmp, f"{mode}-{ranks}.gguf")
    threads = max(1, (os.cpu_count() or 1) // ranks)
    args = [sys.executable, "-m", "qcc.cli.train", "--model", MODEL, "--data",
            DATA, "--steps", str(a.steps), "--batch", str(a.batch), "--seq",
            str(a.seq), "--threads", str(threads), "--out", out]
    if mode == "lora":
        args += ["--lora-rank", str(a.rank), "--lora-targets", ALL]
    else:
        args += ["--full", "--freeze", "^token_embd"]
    cmd = ["/usr/bin/time", "-v", *args]
    if ranks > 1:
        cmd = [shutil.which("mpirun"), *MPI_FLAGS, "-np", str(ranks), *cmd]
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"),
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        tail = (p.stdout + p.stderr).strip().splitlines()[-5:]
        return {"mode": mode, "ranks": ranks, "error": " | ".join(tail)}
    rss = max(int(k) for k in re.findall(
        r"Maximum resident set size \(kbytes\): (\d+)", p.stderr))
    with open(out + ".loss.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["loss"]]
    rates = sorted(float(r["tokens_per_s"]) for r in rows[1:])
    recv = re.search(r"([0-9.]+) MiB received", p.stdout)
    return {"mode": mode, "ranks": ranks, "threads": threads,
            "tok_s": rates[len(rates) // 2],
            "peak_rss_gib": rss / 2**20,
            "mib_received_per_step": float(recv[1]) if recv else 0.0,
            "losses": [float(r["loss"]) for r in rows]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modes", default="lora,full")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not os.path.exists(MODEL):
        sys.exit(f"scaling: {MODEL} is missing: run scripts/fetch-assets")
    if not shutil.which("mpirun"):
        sys.exit("scaling: mpirun is missing: run scripts/setup")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; B={a.batch} T={a.seq}, "
          f"{a.steps} steps", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="qcc-dp-bench-") as tmp:
        for mode in a.modes.split(","):
            pair = []
            for ranks in (1, a.ranks):
                r = run(mode, ranks, a, tmp)
                pair.append(r)
                if "error" in r:
                    print(f"{mode:5} {ranks} rank(s): FAILED: {r['error']}", flush=True)
                    continue
                print(f"{mode:5} {ranks} rank(s) x {r['threads']} thread(s): "
                      f"{r['tok_s']:7.1f} tokens/s, peak RSS {r['peak_rss_gib']:.2f} "
                      f"GiB per rank, {r['mib_received_per_step']:.2f} MiB "
                      f"received per rank and step", flush=True)
            if all("error" not in r for r in pair):
                d = max(abs(x - y) / abs(x) for x, y in
                        zip(pair[0]["losses"], pair[1]["losses"]))
                pair[1]["max_rel_loss_diff"] = d
                print(f"{mode:5} speed {pair[1]['tok_s'] / pair[0]['tok_s']:.2f}x "
                      f"of one process; losses agree within {d:.1e} (relative)",
                      flush=True)
            results += pair
    if a.json:
        print(json.dumps({"cpu": cpu_name(), "batch": a.batch, "seq": a.seq,
                          "runs": [{k: v for k, v in r.items() if k != "losses"}
                                   for r in results]}))


if __name__ == "__main__":
    main()
