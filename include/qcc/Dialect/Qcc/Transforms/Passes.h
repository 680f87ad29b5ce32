//===- Passes.h - qcc dialect passes ----------------------------*- C++ -*-===//

#ifndef QCC_DIALECT_QCC_TRANSFORMS_PASSES_H
#define QCC_DIALECT_QCC_TRANSFORMS_PASSES_H

#include "mlir/Pass/Pass.h"

namespace mlir {
namespace arith {
class ArithDialect;
} // namespace arith
namespace func {
class FuncOp;
} // namespace func
namespace linalg {
class LinalgDialect;
} // namespace linalg
namespace math {
class MathDialect;
} // namespace math
namespace tensor {
class TensorDialect;
} // namespace tensor
namespace qcc {
class QccDialect;

#define GEN_PASS_DECL
#include "qcc/Dialect/Qcc/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "qcc/Dialect/Qcc/Transforms/Passes.h.inc"

} // namespace qcc
} // namespace mlir

#endif // QCC_DIALECT_QCC_TRANSFORMS_PASSES_H
