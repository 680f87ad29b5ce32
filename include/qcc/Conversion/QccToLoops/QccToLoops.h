//===- QccToLoops.h - Lower qcc ops to loops over block bytes ---*- C++ -*-===//

#ifndef QCC_CONVERSION_QCCTOLOOPS_QCCTOLOOPS_H
#define QCC_CONVERSION_QCCTOLOOPS_QCCTOLOOPS_H

#include "qcc/Dialect/Qcc/IR/QccTypes.h"

#include "mlir/IR/BuiltinTypes.h"
#include "mlir/Transforms/DialectConversion.h"

namespace mlir::qcc {

/// The buffer a qtensor lowers to: its GGUF block bytes, shaped like the
/// qtensor with the innermost dimension counted in bytes
/// (`!qcc.qtensor<256x512xq4_K>` -> `memref<256x288xi8>`).
MemRefType getStorageType(QTensorType type);

/// The patterns of qcc-lower-to-loops (qcc ops to loops over block bytes and
/// runtime calls; 2-D f32 matmuls to the micro-GEMM), for pipelines that
/// compose them with their own.
void populateQccToLoopsPatterns(TypeConverter &converter,
                                RewritePatternSet &patterns);

} // namespace mlir::qcc

#endif // QCC_CONVERSION_QCCTOLOOPS_QCCTOLOOPS_H
