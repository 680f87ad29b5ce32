//===- StepABI.h - The C ABI of a compiled step (step.so) -------*- C++ -*-===//
//
// A step library exports, for every public function `f` of the input:
//
//   void qcc_entry_f(void **args);   // args[i] -> argument i, then results
//   const char *qcc_step_manifest(void);   // JSON, see docs/runtime.md
//
// Argument i of the entry is a pointer to the i-th argument's data: the
// contiguous bytes of a tensor or qtensor (GGUF blocks, row-major), or a
// scalar. Results follow the arguments as caller-allocated out-buffers. The
// manifest describes each entry's arguments and results (name, role, kind,
// format or dtype, shape, bytes) so that a runtime can bind them to GGUF
// tensors without knowing the IR.
//
//===----------------------------------------------------------------------===//

#ifndef QCC_TARGET_STEPABI_H
#define QCC_TARGET_STEPABI_H

#include "mlir/IR/BuiltinOps.h"

#include <string>

namespace llvm {
class Module;
} // namespace llvm

namespace mlir::qcc {

/// The ABI version written into manifests; bumped on any incompatible change.
inline constexpr int kStepAbiVersion = 1;

/// Builds the JSON manifest of `module`'s public functions (before
/// lowering, while qtensor types and argument attributes are still there;
/// after the tensor-level passes, whose fused, guarded updates decide
/// which results can be marked `inplace`),
/// and removes the `qcc.*` argument and result attributes it consumed
/// (`qcc.name`, `qcc.role`, `qcc.init`, `qcc.lora.*`). Fails with a
/// diagnostic on an argument the ABI cannot pass (a dynamic shape, an
/// unsupported element type) and on role and param attributes the runtime
/// could not honour (docs/runtime.md).
FailureOr<std::string> buildStepManifest(ModuleOp module);

/// Adds `qcc_entry_<f>` for every entry named in `manifestJson` and the
/// `qcc_step_manifest` accessor to the translated module. The lowered
/// functions must use the bare-pointer calling convention.
LogicalResult emitStepEntryPoints(llvm::Module &module,
                                  const std::string &manifestJson,
                                  std::string &error);

} // namespace mlir::qcc

#endif // QCC_TARGET_STEPABI_H
