//===- SerializeNestedParallelLoops.cpp - one level of threads ------------===//
//
// Once linalg ops are parallel loops, the OpenMP conversion would fork a
// region for every scf.parallel, nested ones included. This pass keeps the
// outermost loop of each nest parallel and rewrites the others, and every
// parallel loop of a function called from a parallel body, as scf.for
// nests (Passes.td).
//
//===----------------------------------------------------------------------===//

#include "qcc/Dialect/Qcc/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/SCF/Transforms/Transforms.h"
#include "mlir/IR/PatternMatch.h"

#include "llvm/ADT/SetVector.h"

namespace mlir::qcc {
#define GEN_PASS_DEF_SERIALIZENESTEDPARALLELLOOPS
#include "qcc/Dialect/Qcc/Transforms/Passes.h.inc"
} // namespace mlir::qcc

using namespace mlir;

namespace {

/// The functions of `module` reached by a call inside an scf.parallel body,
/// directly or through other calls.
llvm::SetVector<func::FuncOp> calledFromParallelBodies(ModuleOp module) {
  llvm::SetVector<func::FuncOp> reached;
  auto addCallees = [&](Operation *root) {
    root->walk([&](func::CallOp call) {
      if (auto callee =
              module.lookupSymbol<func::FuncOp>(call.getCalleeAttr()))
        reached.insert(callee);
    });
  };
  module.walk([&](scf::ParallelOp par) { addCallees(par); });
  // Everything a reached function calls runs in the same parallel body.
  for (size_t i = 0; i < reached.size(); ++i)
    addCallees(reached[i]);
  return reached;
}

struct SerializeNestedParallelLoopsPass
    : public mlir::qcc::impl::SerializeNestedParallelLoopsBase<
          SerializeNestedParallelLoopsPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    llvm::SetVector<func::FuncOp> serialFuncs =
        calledFromParallelBodies(module);
    SmallVector<scf::ParallelOp> loops;
    module.walk([&](scf::ParallelOp par) {
      if (par.getNumResults() != 0)
        return;
      auto func = par->getParentOfType<func::FuncOp>();
      if (par->getParentOfType<scf::ParallelOp>() ||
          (func && serialFuncs.contains(func)))
        loops.push_back(par);
    });
    // Post-order: inner loops first, so each rewrite sees its body final.
    IRRewriter rewriter(module.getContext());
    for (scf::ParallelOp par : loops) {
      rewriter.setInsertionPoint(par);
      if (failed(scf::parallelForToNestedFors(rewriter, par))) {
        par.emitError("could not rewrite a nested scf.parallel as scf.for");
        return signalPassFailure();
      }
      ++numSerialized;
    }
  }
};

} // namespace
