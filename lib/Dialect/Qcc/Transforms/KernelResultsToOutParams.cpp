//===- KernelResultsToOutParams.cpp - Kernels' buffer results first -------===//
//
// Kernel results become out-parameters before their callers' results do, so
// that a caller returning a kernel's result hoists the call's buffer into
// its own out-parameter instead of copying it (see Passes.td). A result that
// is one of the kernel's own arguments (an op bufferized in place) is
// dropped instead: the caller uses its operand.
//
//===----------------------------------------------------------------------===//

#include "qcc/Dialect/Qcc/Transforms/Passes.h"

#include "mlir/Dialect/Bufferization/Transforms/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "llvm/ADT/BitVector.h"
#include "llvm/ADT/DenseMap.h"

#define DEBUG_TYPE "qcc-kernel-results-to-out-params"

namespace mlir::qcc {
#define GEN_PASS_DEF_KERNELRESULTSTOOUTPARAMS
#include "qcc/Dialect/Qcc/Transforms/Passes.h.inc"
} // namespace mlir::qcc

using namespace mlir;
using namespace mlir::qcc;

namespace {

/// For each result of `kernel` that it returns as one of its arguments, the
/// argument's number (else -1).
SmallVector<int> argumentResults(func::FuncOp kernel) {
  SmallVector<int> argOf(kernel.getNumResults(), -1);
  if (kernel.isExternal() || !kernel.getBody().hasOneBlock())
    return argOf;
  auto ret = cast<func::ReturnOp>(kernel.getBody().front().getTerminator());
  for (auto [i, v] : llvm::enumerate(ret.getOperands()))
    if (auto arg = dyn_cast<BlockArgument>(v))
      if (arg.getOwner() == &kernel.getBody().front())
        argOf[i] = static_cast<int>(arg.getArgNumber());
  return argOf;
}

/// Drops the kernels' results that are their own arguments, each call's
/// result replaced by the call's operand. Without this, buffer results to
/// out-parameters would give such a kernel an out-parameter and a copy of
/// the argument into it: two buffers where one suffices (attention's
/// probabilities over its scores: [B, H, T, T] twice).
LogicalResult dropArgumentResults(ModuleOp module) {
  llvm::DenseMap<StringAttr, SmallVector<func::CallOp>> calls;
  module.walk([&](func::CallOp call) {
    calls[call.getCalleeAttr().getAttr()].push_back(call);
  });
  for (auto kernel : module.getOps<func::FuncOp>()) {
    if (!kernel->hasAttr(kKernelAttrName))
      continue;
    SmallVector<int> argOf = argumentResults(kernel);
    llvm::BitVector drop(argOf.size());
    for (auto [i, a] : llvm::enumerate(argOf))
      if (a >= 0)
        drop.set(i);
    if (drop.none())
      continue;
    for (func::CallOp call : calls.lookup(kernel.getSymNameAttr())) {
      OpBuilder b(call);
      SmallVector<Type> types;
      for (auto [i, r] : llvm::enumerate(call.getResults()))
        if (!drop.test(i))
          types.push_back(r.getType());
      auto kept = func::CallOp::create(b, call.getLoc(), call.getCalleeAttr(),
                                       types, call.getOperands());
      kept->setDiscardableAttrs(call->getDiscardableAttrDictionary());
      unsigned next = 0;
      for (auto [i, r] : llvm::enumerate(call.getResults()))
        r.replaceAllUsesWith(drop.test(i) ? call.getOperand(argOf[i])
                                          : kept.getResult(next++));
      call.erase();
    }
    kernel.getBody().front().getTerminator()->eraseOperands(drop);
    if (failed(kernel.eraseResults(drop)))
      return failure();
  }
  return success();
}

struct KernelResultsToOutParamsPass
    : public mlir::qcc::impl::KernelResultsToOutParamsBase<
          KernelResultsToOutParamsPass> {
  void runOnOperation() override {
    if (failed(dropArgumentResults(getOperation())))
      return signalPassFailure();
    bufferization::BufferResultsToOutParamsOpts options;
    options.filterFn = [](func::FuncOp *fn) {
      return (*fn)->hasAttr(kKernelAttrName);
    };
    options.hoistStaticAllocs = true;
    if (failed(bufferization::promoteBufferResultsToOutParams(getOperation(),
                                                              options)))
      signalPassFailure();
  }
};

} // namespace
