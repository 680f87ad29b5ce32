"""qcc: train through quantized GGUF weights.

- `qcc.Graph`, `qcc.Tensor`, `qcc.functional` (F), `qcc.nn`: a PyTorch-like
  tracer that records a model's forward pass;
- `qcc.grad`: reverse-mode autodiff of the trace, op by op;
- `qcc.Function`, `qcc.module`: the trace as MLIR text (func/linalg/tensor/
  arith/math + qcc), with locations pointing at the Python that traced it;
- `qcc.compile_step`, `qcc.Step`: compile with the `qcc` driver and call the
  step library from numpy; `qcc.runtime.Session`: the runtime's sessions
  (bind a GGUF model, train, checkpoint, save) through its C API;
- `qcc.train`: one training step of a model (forward, backward, optimizer,
  carry update) as one function; `qcc.models.llama`: llama-family models
  built from GGUF metadata; `qcc.cli.train`: the `qcc-train` command.
"""

from . import functional, nn  # noqa: F401
from . import functional as F  # noqa: F401
from .autodiff import grad
from .emit import Function, module
from .ir import Graph, Tensor
from .step import Step, compile_step, find_tool

__all__ = ["Graph", "Tensor", "grad", "Function", "module", "nn", "F",
           "functional", "Step", "compile_step", "find_tool"]
