"""LoRA adapters in llama.cpp's GGUF layout, read back for evaluation.

    adapter = read("adapter.gguf")        # LoraAdapter
    adapter.alpha, adapter.pairs["blk.0.attn_q.weight"]  # (A [r, in], B [out, r])

The layout (docs/qcc-run.md#lora, the one qcc-train writes and llama.cpp's
`--lora` loads): `general.type` "adapter", `adapter.type` "lora",
`adapter.lora.alpha`, and per adapted weight W the tensors `W.lora_a`
(ne [in, r], so A [r, in] row-major) and `W.lora_b` (ne [r, out]: B
[out, r]) in F32, F16 or BF16. Raises AdapterError (one line) for anything
else."""

from dataclasses import dataclass, field

import numpy as np

from .gguf_header import HeaderError, read_header

_DTYPES = {"F32": np.float32, "F16": np.float16}


class AdapterError(Exception):
    pass


@dataclass
class LoraAdapter:
    path: str
    alpha: float
    architecture: str
    pairs: dict = field(default_factory=dict)  # base weight -> (A, B) f32

    def rank(self, base):
        return self.pairs[base][0].shape[0]


def read(path):
    try:
        meta, tensors, start = read_header(path)
    except (HeaderError, OSError) as e:
        raise AdapterError(f"{path}: {e}") from None
    if meta.get("general.type") != "adapter" or meta.get("adapter.type") != "lora":
        raise AdapterError(f"{path}: not a LoRA adapter (general.type "
                           f"{meta.get('general.type')!r}, adapter.type "
                           f"{meta.get('adapter.type')!r})")
    alpha = meta.get("adapter.lora.alpha")
    if not isinstance(alpha, (int, float)) or not alpha > 0:
        raise AdapterError(f"{path}: adapter.lora.alpha is missing or not positive")
    data = np.memmap(path, np.uint8, mode="r")
    found = {}
    for name, tname, ne, offset in tensors:
        for part in ("lora_a", "lora_b"):
            if name.endswith("." + part):
                break
        else:
            raise AdapterError(f"{path}: tensor {name} is not a LoRA matrix "
                               "(NAME.lora_a / NAME.lora_b)")
        if len(ne) != 2:
            raise AdapterError(f"{path}: {name} is not 2-D")
        n = int(ne[0]) * int(ne[1])
        if tname == "BF16":
            size = 2 * n
        elif tname in _DTYPES:
            size = np.dtype(_DTYPES[tname]).itemsize * n
        else:
            raise AdapterError(f"{path}: {name} has type {tname}; LoRA "
                               "matrices must be F32, F16 or BF16")
        lo = start + int(offset)
        if lo + size > len(data):
            raise AdapterError(f"{path}: {name} runs past the end of the file")
        raw = np.asarray(data[lo:lo + size])
        if tname == "BF16":
            v = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            v = raw.view(_DTYPES[tname]).astype(np.float32)
        found.setdefault(name[: -len(part) - 1], {})[part] = \
            v.reshape(int(ne[1]), int(ne[0]))
    pairs = {}
    for base, parts in found.items():
        if set(parts) != {"lora_a", "lora_b"}:
            raise AdapterError(f"{path}: {base} has only "
                               f"{', '.join(sorted(parts))}")
        a, b = parts["lora_a"], parts["lora_b"]
        if a.shape[0] != b.shape[1]:
            raise AdapterError(f"{path}: {base}: lora_a rank {a.shape[0]} and "
                               f"lora_b rank {b.shape[1]} differ")
        pairs[base] = (np.ascontiguousarray(a), np.ascontiguousarray(b))
    if not pairs:
        raise AdapterError(f"{path}: the adapter has no LoRA matrices")
    return LoraAdapter(path, float(alpha),
                       str(meta.get("general.architecture", "")), pairs)


def attach(model, adapter):
    """Gives each Linear of `model` that `adapter` adapts a LoRA branch
    whose A and B are step inputs (named BASE.lora_a / BASE.lora_b, to be
    set from adapter.pairs). Raises AdapterError for a weight the model
    does not have or a shape that does not fit."""
    linears = {lin.weight.name: lin for _, lin in model.linear_layers()}
    for base, (a, b) in adapter.pairs.items():
        lin = linears.get(base)
        if lin is None:
            raise AdapterError(f"{adapter.path}: adapts {base}, which is not a "
                               "projection of this model")
        if a.shape[1] != lin.in_features or b.shape[0] != lin.out_features:
            raise AdapterError(
                f"{adapter.path}: {base}: A {list(a.shape)} and B "
                f"{list(b.shape)} do not fit the weight "
                f"[{lin.out_features}, {lin.in_features}]")
        lin.lora(a.shape[0], adapter.alpha, role="input")
