//===- QccTypes.td - The quantized tensor type -------------*- tablegen -*-===//

#ifndef QCC_DIALECT_QCC_IR_QCCTYPES_TD
#define QCC_DIALECT_QCC_IR_QCCTYPES_TD

include "qcc/Dialect/Qcc/IR/QccAttrs.td"
include "mlir/IR/AttrTypeBase.td"

class Qcc_Type<string name, string typeMnemonic, list<Trait> traits = []>
    : TypeDef<Qcc_Dialect, name, traits> {
  let mnemonic = typeMnemonic;
}

def Qcc_QTensorType : Qcc_Type<"QTensor", "qtensor"> {
  let summary = "a logical float tensor stored as GGUF blocks";
  let description = [{
    `!qcc.qtensor<D0x...xDn x FORMAT>` is a tensor of real numbers whose
    storage is GGUF blocks of `FORMAT` laid out along the innermost
    (contiguous) dimension `Dn`: element `[i0, ..., in]` is element
    `in mod B` of block `in / B` of row `[i0, ..., i(n-1)]`, where `B` is the
    format's block length. The bytes are exactly those of a GGUF tensor whose
    `ne[]` is the shape reversed (`ne[0] = Dn`).

    ```mlir
    !qcc.qtensor<4096x14336xq4_K>   // ggml ne = [14336, 4096]
    !qcc.qtensor<?x512xq8_0>        // outer dimension dynamic
    ```

    The verifier rejects:
    - a rank outside 1..4 (GGUF tensors have at most four dimensions);
    - a static innermost dimension not divisible by the block length;
    - a dynamic innermost dimension for a format whose blocks hold more
      than one element (the block count of a row must be known);
    - a negative static dimension.
  }];
  let parameters = (ins
    ArrayRefParameter<"int64_t", "shape">:$shape,
    EnumParameter<Qcc_QuantFormat>:$format
  );
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    int64_t getRank() const { return getShape().size(); }
    /// Logical elements per block and bytes per block, from Formats.def.
    int64_t getBlockElems() const;
    int64_t getBlockBytes() const;
    bool hasStaticShape() const;
    /// Bytes of block storage; only valid for a static shape.
    int64_t getStorageBytes() const;
    /// The same storage reinterpreted with another shape or format.
    QTensorType clone(::llvm::ArrayRef<int64_t> shape) const;
  }];
}

#endif // QCC_DIALECT_QCC_IR_QCCTYPES_TD
