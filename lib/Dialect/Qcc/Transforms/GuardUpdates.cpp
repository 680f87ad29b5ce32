//===- GuardUpdates.cpp - weight updates conditional on a finite loss -----===//
//
// A step whose loss is not finite must leave the model as it was. Without
// a guard that needs a second copy of everything the step writes (to roll
// back); with one, the update simply does not happen.
//
//===----------------------------------------------------------------------===//

#include "qcc/Dialect/Qcc/IR/QccOps.h"
#include "qcc/Dialect/Qcc/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Dominance.h"

namespace mlir::qcc {
#define GEN_PASS_DEF_GUARDUPDATES
#include "qcc/Dialect/Qcc/Transforms/Passes.h.inc"
} // namespace mlir::qcc

using namespace mlir;
using namespace mlir::qcc;

namespace {

/// The value `func` returns as its result named "loss" (a 0-d f32 tensor),
/// or null.
Value findLoss(func::FuncOp func) {
  if (func.isExternal())
    return {};
  for (unsigned i = 0, e = func.getNumResults(); i < e; ++i) {
    auto name = func.getResultAttrOfType<StringAttr>(i, "qcc.name");
    auto type = dyn_cast<RankedTensorType>(func.getResultTypes()[i]);
    if (!name || name.getValue() != "loss" || !type || type.getRank() != 0 ||
        !type.getElementType().isF32())
      continue;
    for (Block &block : func.getBody())
      if (auto ret = dyn_cast<func::ReturnOp>(block.getTerminator()))
        return ret.getOperand(i);
  }
  return {};
}

struct GuardUpdatesPass
    : public mlir::qcc::impl::GuardUpdatesBase<GuardUpdatesPass> {
  void runOnOperation() override {
    func::FuncOp func = getOperation();
    Value loss = findLoss(func);
    if (!loss)
      return;
    DominanceInfo dominance(func);
    func.walk([&](WeightUpdateOp op) {
      if (op.getGuard() || !dominance.properlyDominates(loss, op))
        return;
      op.getGuardMutable().assign(loss);
      ++numGuarded;
    });
  }
};

} // namespace
