"""qcc: compile training steps over quantized GGUF weights and run them.

Today this package holds the binding of compiled step libraries
(`qcc.step`); the model tracer and `qcc-train` build on it."""

from .step import Step, compile_step, find_tool

__all__ = ["Step", "compile_step", "find_tool"]
