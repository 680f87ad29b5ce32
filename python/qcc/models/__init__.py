"""Models built from GGUF metadata: `load(path)` picks the architecture.

| general.architecture | module |
|---|---|
| llama, mistral, qwen2, qwen3 | qcc.models.llama |
| gemma3 | qcc.models.gemma3 |
"""

from . import gemma3, llama
from .llama import ModelError, read_gguf

ARCHITECTURES = {**{a: (llama.LlamaConfig, llama.Llama) for a in llama.ROPE_MODES},
                 "gemma3": (gemma3.Gemma3Config, gemma3.Gemma3)}


def load(path):
    """(config, model, info) of the GGUF model at `path`; ModelError names
    the supported architectures for any other."""
    info = read_gguf(path)
    arch = info.metadata.get("general.architecture")
    if arch is None:
        raise ModelError(f"{path}: no general.architecture in the metadata")
    classes = ARCHITECTURES.get(arch)
    if classes is None:
        raise ModelError(f"{path}: architecture '{arch}' is not supported (qcc "
                         f"supports {', '.join(sorted(ARCHITECTURES))})")
    config, model = classes
    cfg = config.from_gguf(info)
    return cfg, model(cfg, info.tensor_types), info
