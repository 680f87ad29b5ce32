//===- QccDialect.td - The qcc dialect definition ----------*- tablegen -*-===//
//
// Training through quantized GGUF weights: the dialect and its base classes.
//
//===----------------------------------------------------------------------===//

#ifndef QCC_DIALECT_QCC_IR_QCCDIALECT_TD
#define QCC_DIALECT_QCC_IR_QCCDIALECT_TD

include "mlir/IR/OpBase.td"

def Qcc_Dialect : Dialect {
  let name = "qcc";
  let cppNamespace = "::mlir::qcc";
  let summary = "Training through quantized GGUF weights.";
  let description = [{
    The `qcc` dialect models tensors stored as GGUF quantization blocks
    (`!qcc.qtensor`) and the operations a training step needs on them:
    decoding (`qcc.dequant`), encoding (`qcc.requant`), matrix products that
    decode on the fly (`qcc.qmatmul`), straight-through gradient estimators
    (`qcc.ste_grad`), accumulation of sub-step updates in a carry buffer
    (`qcc.carry_update`) and randomized Walsh-Hadamard rotations
    (`qcc.hadamard`). The block formats are exactly GGUF's; their facts
    (ggml type id, block length, block bytes) come from the runtime's
    `Formats.def`, shared with the GGUF tools. See docs/spec.md.
  }];
  let useDefaultTypePrinterParser = 1;
  let useDefaultAttributePrinterParser = 1;
  let extraClassDeclaration = [{
    void registerTypes();
    void registerAttributes();
  }];
}

class Qcc_Op<string mnemonic, list<Trait> traits = []>
    : Op<Qcc_Dialect, mnemonic, traits>;

#endif // QCC_DIALECT_QCC_IR_QCCDIALECT_TD
