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
class FuncDialect;
} // namespace func
namespace LLVM {
class LLVMDialect;
} // namespace LLVM
namespace linalg {
class LinalgDialect;
} // namespace linalg
namespace memref {
class MemRefDialect;
} // namespace memref
namespace math {
class MathDialect;
} // namespace math
namespace scf {
class SCFDialect;
} // namespace scf
namespace tensor {
class TensorDialect;
} // namespace tensor
namespace qcc {
class QccDialect;

/// The unit attribute that marks the private functions qcc-outline-kernels
/// creates.
constexpr llvm::StringLiteral kKernelAttrName = "qcc.kernel";

#define GEN_PASS_DECL
#include "qcc/Dialect/Qcc/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "qcc/Dialect/Qcc/Transforms/Passes.h.inc"

} // namespace qcc
} // namespace mlir

#endif // QCC_DIALECT_QCC_TRANSFORMS_PASSES_H
