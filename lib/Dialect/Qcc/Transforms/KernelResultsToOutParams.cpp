//===- KernelResultsToOutParams.cpp - Kernels' buffer results first -------===//
//
// Kernel results become out-parameters before their callers' results do, so
// that a caller returning a kernel's result hoists the call's buffer into
// its own out-parameter instead of copying it (see Passes.td).
//
//===----------------------------------------------------------------------===//

#include "qcc/Dialect/Qcc/Transforms/Passes.h"

#include "mlir/Dialect/Bufferization/Transforms/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"

#define DEBUG_TYPE "qcc-kernel-results-to-out-params"

namespace mlir::qcc {
#define GEN_PASS_DEF_KERNELRESULTSTOOUTPARAMS
#include "qcc/Dialect/Qcc/Transforms/Passes.h.inc"
} // namespace mlir::qcc

using namespace mlir;
using namespace mlir::qcc;

namespace {

struct KernelResultsToOutParamsPass
    : public mlir::qcc::impl::KernelResultsToOutParamsBase<
          KernelResultsToOutParamsPass> {
  void runOnOperation() override {
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
