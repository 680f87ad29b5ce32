"""The body of bench/models/vs-llama-cpp (see there)."""

import json
import os
import subprocess
import sys
import tempfile
import time

chunks = int(sys.argv[1]) if len(sys.argv) > 1 else 8
model = os.environ["QCC_GEMMA3"]
llama = os.environ["QCC_LLAMA_CPP_BIN"]
threads = os.cpu_count()
tmp = tempfile.mkdtemp()
text = open("data/devils-dictionary.txt", encoding="utf-8").read()
mb = (text * (1 + (1 << 20) // len(text)))[: 1 << 20]
while len(mb.encode()) > 1 << 20:
    mb = mb[:-1]
path = os.path.join(tmp, "1mb.txt")
open(path, "w", encoding="utf-8").write(mb)
cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
           if l.startswith("model name"))
print(f"cpu: {cpu}, {threads} threads; text {len(mb.encode())} bytes")


def timed(cmd):
    t = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return time.monotonic() - t, p.stdout


best_q = best_l = float("inf")
for _ in range(3):
    tq, q = timed(["scripts/qcc-tokenize", "-m", model, "-f", path, "--ids"])
    tl, l = timed([f"{llama}/llama-tokenize", "-m", model, "-f", path, "--ids",
                   "--log-disable"])
    best_q, best_l = min(best_q, tq), min(best_l, tl)
same = "identical" if q.strip() == l.strip() else "DIFFERENT"
print(f"tokenize 1 MB ({len(json.loads(q))} tokens): qcc-tokenize {best_q:.2f} s, "
      f"llama-tokenize {best_l:.2f} s: qcc throughput {best_l / best_q:.2f}x "
      f"llama.cpp's; ids {same}")
if chunks:
    p60 = os.path.join(tmp, "60k.txt")
    open(p60, "w", encoding="utf-8").write(text[:60000])
    tl, _ = timed([f"{llama}/llama-perplexity", "-m", model, "-f", p60, "-c", "512",
                   "--chunks", str(chunks), "-t", str(threads), "--no-repack",
                   "--log-file", os.path.join(tmp, "ppl.log")])
    lp = [x for x in open(os.path.join(tmp, "ppl.log")) if "Final estimate" in x]
    lppl = lp[-1].split("PPL = ")[1].split()[0] if lp else "?"
    print(f"perplexity ctx 512, {chunks} chunks: llama.cpp {lppl} in {tl:.1f} s")
    for gemm in ("f32", "bf16"):
        qppl = ["scripts/qcc-perplexity", "-m", model, "-f", p60, "-c", "512",
                "-t", str(threads), "--json", "--gemm", gemm]
        timed(qppl + ["--chunks", "1"])  # compiles the step into the cache
        tq, q = timed(qppl + ["--chunks", str(chunks)])
        r = json.loads(q.strip().splitlines()[-1])
        print(f"  qcc --gemm {gemm}: {r['ppl']:.4f} in {tq:.1f} s (whole process, "
              f"step cached; {r['seconds']:.1f} s evaluating): qcc throughput "
              f"{tl / tq:.2f}x llama.cpp's")
