"""One PyTorch training configuration on a GGUF model, for vs_torch.py: it
runs inside the benchmark's own virtualenv (torch, transformers, peft), never
the project's .venv, and prints one JSON line.

transformers loads the GGUF by dequantizing it to fp32 (its only way to
train one); LoRA comes from peft on every linear projection of the blocks;
AdamW; `bf16` runs the forward under torch.autocast(bfloat16) (oneDNN uses
AMX or AVX512-BF16 where the CPU has them). The batches are the token ids
vs_torch.py wrote (qcc's tokenizer, the same text qcc-train reads).

Usage: torch_side.py --model M.gguf --tokens ids.npy --mode lora|full
       [--bf16] [--rank 16] [--steps 6] [--threads N] [--t0 UNIX_TIME]"""

import argparse
import json
import os
import resource
import sys
import time

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
               "down_proj"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--mode", choices=("lora", "full"), required=True)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--t0", type=float, default=time.time())
    a = ap.parse_args()

    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(a.model)),
        gguf_file=os.path.basename(a.model), dtype=torch.float32)
    model.config.use_cache = False
    if a.mode == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(
            r=a.rank, lora_alpha=a.rank, lora_dropout=0.0,
            target_modules=PROJECTIONS))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr)
    ids = np.load(a.tokens)                      # [steps, B, T + 1]
    if ids.shape[0] < a.steps:
        sys.exit(f"{a.tokens}: {ids.shape[0]} batches for {a.steps} steps")
    model.train()
    times, losses, first = [], [], None
    for s in range(a.steps):
        batch = torch.from_numpy(ids[s].astype(np.int64))
        x, y = batch[:, :-1], batch[:, 1:]
        t = time.monotonic()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.monotonic() - t)
        losses.append(float(loss.detach()))
        if first is None:
            first = time.time() - a.t0
    rest = sorted(times[1:]) or times
    tokens = ids.shape[1] * (ids.shape[2] - 1)
    print(json.dumps({
        "tokens_per_s": tokens / rest[len(rest) // 2],
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "first_step_s": first, "losses": losses,
        "trainable": sum(p.numel() for p in params),
        "torch": torch.__version__}))


if __name__ == "__main__":
    main()
