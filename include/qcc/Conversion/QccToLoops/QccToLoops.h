//===- QccToLoops.h - Lower qcc ops to loops over block bytes ---*- C++ -*-===//

#ifndef QCC_CONVERSION_QCCTOLOOPS_QCCTOLOOPS_H
#define QCC_CONVERSION_QCCTOLOOPS_QCCTOLOOPS_H

#include "qcc/Dialect/Qcc/IR/QccTypes.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/Transforms/DialectConversion.h"

namespace mlir::qcc {

/// The buffer a qtensor lowers to: its GGUF block bytes, shaped like the
/// qtensor with the innermost dimension counted in bytes
/// (`!qcc.qtensor<256x512xq4_K>` -> `memref<256x288xi8>`).
MemRefType getStorageType(QTensorType type);

/// How the int8 GEMV path emits its byte dot products (all exact, so all
/// give bit-identical results): portable vector-dialect integer ops, AVX2's
/// pmaddubsw + pmaddwd, or AVX-512 VNNI's vpdpbusd (llvm.call_intrinsic).
enum class Int8Dot { Generic, Avx2, Avx512Vnni };

/// "generic" / "avx2" / "avx512vnni" (the `int8-dot` option's values).
std::optional<Int8Dot> parseInt8Dot(llvm::StringRef name);

/// Options of qcc-lower-to-loops that change the code of the lowerings.
struct QccToLoopsOptions {
  /// Forward few-rows qmatmuls on q4_0 / q8_0 / q4_K / q6_K quantize the
  /// activations to int8 blocks and take integer dot products (inexact:
  /// see the `int8-activations` pass option). False: the exact f32 path.
  bool int8Activations = false;
  Int8Dot int8Dot = Int8Dot::Generic;
  /// Every micro-GEMM call (qmatmul tiles, f32 contractions, weight
  /// gradients) goes to qcc_rt_gemm_bf16, which rounds its operands to bf16
  /// (inexact: see the `gemm-bf16` pass option). False: qcc_rt_gemm_f32.
  bool bf16Gemm = false;
  /// The threads the step runs on (0: unknown): qmatmul balances its
  /// parallel iterations for them.
  unsigned threads = 0;
};

/// Gives the functions that the int8 GEMV path declares for its avx2 /
/// avx512vnni dot products (`__qcc_i8dot_*`, vector<64xi8> x2 ->
/// vector<16xi32>) their bodies: llvm.call_intrinsic of pmaddubsw +
/// pmaddwd, or vpdpbusd. Runs after buffer deallocation, which rejects ops
/// with unknown memory effects such as llvm.call_intrinsic.
void defineInt8DotFunctions(ModuleOp module);

/// The patterns of qcc-lower-to-loops (qcc ops to loops over block bytes and
/// runtime calls; 2-D f32 matmuls to the micro-GEMM), for pipelines that
/// compose them with their own.
void populateQccToLoopsPatterns(TypeConverter &converter,
                                RewritePatternSet &patterns,
                                const QccToLoopsOptions &options = {});

} // namespace mlir::qcc

#endif // QCC_CONVERSION_QCCTOLOOPS_QCCTOLOOPS_H
