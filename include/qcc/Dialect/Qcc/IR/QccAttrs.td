//===- QccAttrs.td - qcc enums and attributes --------------*- tablegen -*-===//
//
// The GGUF block-format enum, the straight-through-estimator modes, the
// qmatmul orientations (stored as op properties) and the JL carry layout.
//
//===----------------------------------------------------------------------===//

#ifndef QCC_DIALECT_QCC_IR_QCCATTRS_TD
#define QCC_DIALECT_QCC_IR_QCCATTRS_TD

include "qcc/Dialect/Qcc/IR/QccDialect.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

// The enumerator values are ggml type ids. The list must match the runtime's
// Formats.def; QccAttrs.cpp static_asserts that it does, case by case.
def Qcc_QuantFormat : I32EnumAttr<"QuantFormat", "GGUF tensor block format", [
    I32EnumAttrCase<"F32",     0,  "f32">,
    I32EnumAttrCase<"F16",     1,  "f16">,
    I32EnumAttrCase<"Q4_0",    2,  "q4_0">,
    I32EnumAttrCase<"Q4_1",    3,  "q4_1">,
    I32EnumAttrCase<"Q5_0",    6,  "q5_0">,
    I32EnumAttrCase<"Q5_1",    7,  "q5_1">,
    I32EnumAttrCase<"Q8_0",    8,  "q8_0">,
    I32EnumAttrCase<"Q2_K",    10, "q2_K">,
    I32EnumAttrCase<"Q3_K",    11, "q3_K">,
    I32EnumAttrCase<"Q4_K",    12, "q4_K">,
    I32EnumAttrCase<"Q5_K",    13, "q5_K">,
    I32EnumAttrCase<"Q6_K",    14, "q6_K">,
    I32EnumAttrCase<"IQ2_XXS", 16, "iq2_xxs">,
    I32EnumAttrCase<"IQ2_XS",  17, "iq2_xs">,
    I32EnumAttrCase<"IQ3_XXS", 18, "iq3_xxs">,
    I32EnumAttrCase<"IQ1_S",   19, "iq1_s">,
    I32EnumAttrCase<"IQ4_NL",  20, "iq4_nl">,
    I32EnumAttrCase<"IQ3_S",   21, "iq3_s">,
    I32EnumAttrCase<"IQ2_S",   22, "iq2_s">,
    I32EnumAttrCase<"IQ4_XS",  23, "iq4_xs">,
    I32EnumAttrCase<"IQ1_M",   29, "iq1_m">,
    I32EnumAttrCase<"BF16",    30, "bf16">,
    I32EnumAttrCase<"TQ1_0",   34, "tq1_0">,
    I32EnumAttrCase<"TQ2_0",   35, "tq2_0">,
    I32EnumAttrCase<"MXFP4",   39, "mxfp4">,
    I32EnumAttrCase<"NVFP4",   40, "nvfp4">,
    I32EnumAttrCase<"Q1_0",    41, "q1_0">,
    I32EnumAttrCase<"Q2_0",    42, "q2_0">
  ]> {
  let cppNamespace = "::mlir::qcc";
  let genSpecializedAttr = 0;
}

def Qcc_SteMode : I32EnumAttr<"SteMode", "straight-through estimator", [
    I32EnumAttrCase<"Identity", 0, "identity">,
    I32EnumAttrCase<"Clipped",  1, "clipped">,
    I32EnumAttrCase<"Ewgs",     2, "ewgs">,
    I32EnumAttrCase<"Lsq",      3, "lsq">
  ]> {
  let cppNamespace = "::mlir::qcc";
  let genSpecializedAttr = 0;
}

def Qcc_MatmulOrientation : I32EnumAttr<"MatmulOrientation",
    "which product qcc.qmatmul computes", [
    I32EnumAttrCase<"Fwd", 0, "fwd">,
    I32EnumAttrCase<"Bwd", 1, "bwd">
  ]> {
  let cppNamespace = "::mlir::qcc";
  let genSpecializedAttr = 0;
}

def Qcc_JLCarryAttr : AttrDef<Qcc_Dialect, "JLCarry"> {
  let mnemonic = "jl";
  let summary = "a Johnson-Lindenstrauss-compressed carry layout";
  let description = [{
    `#qcc.jl<dim = d, chunk = c, seed = s>` says that a carry buffer does not
    hold one value per weight but, for every run of `c` consecutive weights
    along the innermost dimension (a *chunk*), the projection `P·r` of the
    chunk's residual `r` (length `c`) onto `d` dimensions. `P` is the `d x c`
    matrix with entries `±1/sqrt(d)`, entry `P[k][j]` taking its sign from
    bit 63 of `splitmix64(seed + k*c + j)` (set means negative). The same `P`
    serves every chunk. The residual is read back as `Pᵀ·(P·r)`, an unbiased
    estimate of `r`; docs/spec.md states its error.
  }];
  let parameters = (ins "int64_t":$dim, "int64_t":$chunk, "int64_t":$seed);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

#endif // QCC_DIALECT_QCC_IR_QCCATTRS_TD
