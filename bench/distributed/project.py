#!/usr/bin/env python3
"""The cost model of a data-parallel step (docs/distributed.md), projected
to many ranks from one machine's measured numbers.

Per rank and step, with R ranks, n rows (tokens) per rank, f32 values:

  LoRA (gradients summed by all-gather then added in rank order):
      bytes = (R - 1) * 4 * P_lora
  LoRA, ring (a fixed-order ring reduce-scatter + all-gather, as
  deterministic; not implemented):
      bytes = 2 * (R - 1) / R * 4 * P_lora
  full, design A (implemented; gather the rows of x and gy, every rank
  computes the same fused update):
      bytes = (R - 1) * 4 * n * S,   S = sum of the widths of the distinct
      operands of the weight-gradient contractions (x shared by q/k/v and
      by gate/up counted once)
  full, design G (materialize the f32 gradient, ring all-reduce; breaks
  the fused update and needs 4 * P bytes of gradient):
      bytes = 2 * (R - 1) / R * 4 * P
  full, design B (ZeRO-style: each rank updates 1/R of every weight's rows
  from gathered x and its share of gy, then all-gathers the new blocks):
      bytes = (R - 1) * 4 * n * (S_x + S_gy / R) + (R - 1) / R * Q
      (Q = the trained weights' quantized bytes)

Time: each collective is a ring of R - 1 transfers, alpha latency each,
at beta bytes/s. Compute: one rank's tokens/s, from the job tokens/s that
bench/distributed/scaling.py measured with M ranks on one machine (LoRA:
divided by M; full: also undoing design A's repeated weight-gradient
contractions, a third of the matrix FLOPs done M times), scaled by forward
FLOPs per token for the 7B model. Design A repeats those contractions on
every rank for the global batch; B and G split them.

Usage: bench/distributed/project.py --lora-job TOK_S --full-job TOK_S
       [--measured-ranks 2] [--alpha 10e-6] [--gbps 100] [--rows 512]"""

import argparse


def llama_like(name, n_layer, d, d_q, d_kv, f, vocab, bits, lora_r):
    # The weights of one block: (name, in, out).
    mats = [("q", d, d_q), ("k", d, d_kv), ("v", d, d_kv), ("o", d_q, d),
            ("gate", d, f), ("up", d, f), ("down", f, d)]
    p = n_layer * sum(i * o for _, i, o in mats)
    # Distinct operands: x of q/k/v, x of o, x of gate/up, x of down; one gy
    # per weight.
    s_x = n_layer * (d + d_q + d + f)
    s_gy = n_layer * sum(o for _, _, o in mats)
    p_lora = n_layer * sum(lora_r * (i + o) for _, i, o in mats)
    flops_tok = 2 * (p + vocab * d)  # forward matmuls per token
    return dict(name=name, n_layer=n_layer, P=p, S_x=s_x, S_gy=s_gy,
                P_lora=p_lora, Q=p * bits / 8, flops_tok=flops_tok)


GEMMA3 = llama_like("Gemma 3 270M", 18, 640, 1024, 256, 2048, 262144, 4.9, 16)
LLAMA7B = llama_like("llama 7B", 32, 4096, 4096, 4096, 11008, 32000, 4.9, 16)


def collective_time(nbytes_in, ranks, calls, alpha, beta):
    return calls * (ranks - 1) * alpha + nbytes_in / beta


def project(m, mode, design, ranks, rows, rate, alpha, beta, gemma_flops):
    """(bytes per rank, compute s, comm s) of one step."""
    t_tok = (1.0 / rate) * m["flops_tok"] / gemma_flops  # s per token, 1 rank
    n = rows
    L = m["n_layer"]
    if mode == "lora":
        # all-gather: implemented (R - 1 copies in); ring: a fixed-order
        # ring reduce-scatter + all-gather, as deterministic, 2 copies in.
        b = (ranks - 1) * 4 * m["P_lora"] if design == "all-gather" else \
            2 * (ranks - 1) / ranks * 4 * m["P_lora"]
        calls = 7 * 2 * L + 2
        return b, n * t_tok, collective_time(b, ranks, calls, alpha, beta)
    S = m["S_x"] + m["S_gy"]
    if design == "A":
        b = (ranks - 1) * 4 * n * S
        compute = n * t_tok * (2 / 3) + ranks * n * t_tok * (1 / 3)
        calls = 11 * L
    elif design == "G":
        b = 2 * (ranks - 1) / ranks * 4 * m["P"]
        compute = n * t_tok
        calls = 2 * 7 * L
    else:  # B
        b = (ranks - 1) * 4 * n * (m["S_x"] + m["S_gy"] / ranks) \
            + (ranks - 1) / ranks * m["Q"]
        compute = n * t_tok
        calls = 3 * 7 * L
    return b, compute, collective_time(b, ranks, calls, alpha, beta)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lora-job", type=float, required=True,
                    help="measured tokens/s of the M-rank LoRA job (Gemma 3)")
    ap.add_argument("--full-job", type=float, required=True,
                    help="measured tokens/s of the M-rank full job (Gemma 3)")
    ap.add_argument("--measured-ranks", type=int, default=2, metavar="M")
    ap.add_argument("--alpha", type=float, default=10e-6)
    ap.add_argument("--gbps", type=float, default=100)
    ap.add_argument("--rows", type=int, default=512, help="tokens per rank")
    a = ap.parse_args()
    beta = a.gbps / 8 * 1e9
    m_ = a.measured_ranks
    lora_rate = a.lora_job / m_
    full_rate = a.full_job / m_ * (2 / 3 + m_ / 3)
    print(f"one rank (measured with {m_}): LoRA {lora_rate:.1f} tokens/s, full "
          f"{full_rate:.1f} tokens/s without design A's repeated contractions")
    print(f"{a.rows} tokens per rank and step, {a.gbps:g} Gb/s, "
          f"{a.alpha * 1e6:g} us per transfer\n")
    print("| model | mode | design | ranks | MB in per rank | compute s | "
          "comm s | step s | tokens/s (job) | efficiency |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for m in (GEMMA3, LLAMA7B):
        for mode, designs, rate in (("lora", ["all-gather", "ring"], lora_rate),
                                    ("full", ["A", "B", "G"], full_rate)):
            for design in designs:
                base = None
                for ranks in (1, 8, 64, 512):
                    b, c, t = project(m, mode, design, ranks, a.rows, rate,
                                      a.alpha, beta, GEMMA3["flops_tok"])
                    step = c + t
                    job = ranks * a.rows / step
                    base = base or a.rows / step
                    if ranks == 1:
                        continue
                    print(f"| {m['name']} | {mode} | {design} | {ranks} | "
                          f"{b / 1e6:,.1f} | {c:.2f} | {t:.3f} | {step:.2f} | "
                          f"{job:,.0f} | {job / (ranks * base):.0%} |")


if __name__ == "__main__":
    main()
