//===- FuseWeightUpdate.cpp - gradient + update rule + carry_update -------===//
//
// A full-weight step computes g = gyᵀ·x for a quantized weight, maps it
// through the estimator and the optimizer elementwise, and hands the result
// to qcc.carry_update. Unfused, g and every intermediate are whole f32
// tensors of the weight's shape; qcc.weight_update keeps all of it per
// element, so its lowering can work a tile of rows at a time.
//
//===----------------------------------------------------------------------===//

#include "qcc/Dialect/Qcc/IR/QccOps.h"
#include "qcc/Dialect/Qcc/Transforms/Passes.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/IR/LinalgInterfaces.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Dominance.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/Matchers.h"
#include "llvm/ADT/SetVector.h"

#define DEBUG_TYPE "qcc-fuse-weight-update"

namespace mlir::qcc {
#define GEN_PASS_DEF_FUSEWEIGHTUPDATE
#include "qcc/Dialect/Qcc/Transforms/Passes.h.inc"
} // namespace mlir::qcc

using namespace mlir;
using namespace mlir::qcc;

namespace {

bool isZeroFill(Value init) {
  auto fill = init.getDefiningOp<linalg::FillOp>();
  return fill && matchPattern(fill.value(), m_AnyZeroFloat());
}

bool isDim(AffineExpr e, unsigned pos) {
  auto d = dyn_cast<AffineDimExpr>(e);
  return d && d.getPosition() == pos;
}

/// Whether `op` computes g[n, k] = Σ_m gy[m, n] · x[m, k] from f32 tensors
/// into a zero-filled init of type `weightShape`.
bool isWeightGradient(linalg::LinalgOp op, ArrayRef<int64_t> weightShape) {
  if (!op.hasPureTensorSemantics() || op.getNumDpsInputs() != 2 ||
      op.getNumDpsInits() != 1 || op.getNumLoops() != 3 ||
      op.getNumReductionLoops() != 1 || !linalg::isaContractionOpInterface(op))
    return false;
  auto outType = dyn_cast<RankedTensorType>(op->getResult(0).getType());
  if (!outType || !outType.getElementType().isF32() ||
      outType.getShape() != weightShape)
    return false;
  for (OpOperand *in : op.getDpsInputOperands())
    if (!getElementTypeOrSelf(in->get().getType()).isF32())
      return false;
  SmallVector<AffineMap> maps = op.getIndexingMapsArray();
  if (maps[2].getNumResults() != 2)
    return false;
  auto n = dyn_cast<AffineDimExpr>(maps[2].getResult(0));
  auto k = dyn_cast<AffineDimExpr>(maps[2].getResult(1));
  if (!n || !k)
    return false;
  unsigned m = 3 - n.getPosition() - k.getPosition();
  auto selects = [](AffineMap map, unsigned a, unsigned b) {
    return map.getNumResults() == 2 && isDim(map.getResult(0), a) &&
           isDim(map.getResult(1), b);
  };
  return selects(maps[0], m, n.getPosition()) &&
         selects(maps[1], m, k.getPosition()) &&
         isZeroFill(op.getDpsInitOperand(0)->get());
}

/// An elementwise linalg.generic over `shape`: parallel loops, identity maps
/// (0-d operands broadcast), no use of the `outs` values in the body.
bool isElementwise(linalg::GenericOp op, ArrayRef<int64_t> shape) {
  if (!op.hasPureTensorSemantics() ||
      op.getNumLoops() != static_cast<unsigned>(shape.size()) ||
      op.getNumReductionLoops() != 0)
    return false;
  for (OpOperand &operand : op->getOpOperands()) {
    auto type = dyn_cast<RankedTensorType>(operand.get().getType());
    if (!type)
      return false;
    AffineMap map = op.getMatchingIndexingMap(&operand);
    bool scalar = type.getRank() == 0 && map.getNumResults() == 0 &&
                  op.isDpsInput(&operand);
    if (!scalar && (!map.isIdentity() || type.getShape() != shape))
      return false;
  }
  for (OpOperand &init : op.getDpsInitsMutable())
    if (!op.getMatchingBlockArgument(&init).use_empty())
      return false;
  return true;
}

/// What `delta` of a carry_update is made of.
struct UpdateChain {
  linalg::LinalgOp gradient;
  /// Elementwise ops, in program order.
  SmallVector<linalg::GenericOp> ops;
  /// Tensors of the weight's shape read elementwise (body arguments).
  SmallVector<Value> ins;
  /// 0-d tensors read as scalars.
  SmallVector<Value> scalars;
  /// Dequants of the weight the chain reads (the body's Ŵ argument).
  SmallVector<DequantOp> dequants;
  /// An lsq estimator of the gradient itself: its direction is the
  /// gradient, its scale gradient becomes the fused op's.
  SteGradOp lsq;
};

/// Collects the chain that produces `delta`, or fails with a reason.
FailureOr<UpdateChain> analyzeDelta(CarryUpdateOp update, std::string &why) {
  Value weight = update.getWeight();
  ArrayRef<int64_t> shape = update.getWeight().getType().getShape();
  Block *block = update->getBlock();
  UpdateChain chain;
  llvm::SetVector<Operation *> ops;
  llvm::SetVector<Value> ins, scalars;
  SmallVector<Value> worklist{update.getDelta()};
  DenseSet<Value> seen;
  while (!worklist.empty()) {
    Value v = worklist.pop_back_val();
    if (!seen.insert(v).second)
      continue;
    Operation *def = v.getDefiningOp();
    if (auto dequant = dyn_cast_if_present<DequantOp>(def);
        dequant && dequant.getInput() == weight &&
        getElementTypeOrSelf(dequant.getType()).isF32()) {
      chain.dequants.push_back(dequant);
      continue;
    }
    if (auto ste = dyn_cast_if_present<SteGradOp>(def);
        ste && ste.getMode() == SteMode::Lsq && ste.getWeight() == weight &&
        v == ste.getDirection() && ste->getBlock() == block &&
        getElementTypeOrSelf(v.getType()).isF32()) {
      if (chain.lsq && chain.lsq != ste) {
        why = "the delta reads two lsq estimators";
        return failure();
      }
      chain.lsq = ste;
      worklist.push_back(ste.getGrad());
      continue;
    }
    auto type = cast<RankedTensorType>(v.getType());
    if (type.getRank() == 0) {
      scalars.insert(v);
      continue;
    }
    if (auto linalgOp = dyn_cast_if_present<linalg::LinalgOp>(def);
        linalgOp && def->getBlock() == block &&
        isWeightGradient(linalgOp, shape)) {
      if (chain.gradient && chain.gradient != linalgOp) {
        why = "the delta reads two weight-gradient contractions";
        return failure();
      }
      chain.gradient = linalgOp;
      continue;
    }
    auto generic = dyn_cast_if_present<linalg::GenericOp>(def);
    if (generic && def->getBlock() == block && isElementwise(generic, shape)) {
      ops.insert(def);
      for (Value in : generic.getDpsInputs())
        worklist.push_back(in);
      continue;
    }
    if (type.getShape() != shape) {
      why = "the delta reads a tensor that is neither elementwise nor of "
            "the weight's shape";
      return failure();
    }
    ins.insert(v);
  }
  if (!chain.gradient) {
    why = "no weight-gradient contraction gyᵀ·x feeds the delta";
    return failure();
  }
  // The gradient and every intermediate stay per element only if nothing
  // outside the chain needs the gradient itself.
  if (chain.lsq && chain.lsq.getGrad() != chain.gradient->getResult(0)) {
    why = "the lsq estimator does not read the weight gradient itself";
    return failure();
  }
  // The lsq scale gradient comes out of the fused op, at the carry_update:
  // its users (the scale update) must come after it.
  if (chain.lsq)
    for (Operation *user : chain.lsq.getScaleGrad().getUsers())
      if (user->getBlock() != block || !update->isBeforeInBlock(user)) {
        why = "the lsq scale gradient is used before the carry_update";
        return failure();
      }
  if (chain.lsq)
    for (Operation *user : chain.lsq.getDirection().getUsers())
      if (!ops.contains(user) && user != update.getOperation()) {
        why = "the lsq direction has a user outside the update";
        return failure();
      }
  for (Operation *user : chain.gradient->getResult(0).getUsers())
    if (!ops.contains(user) && user != chain.lsq.getOperation()) {
      why = "the weight gradient has a user outside the update";
      return failure();
    }
  // Fused at the carry_update: whatever the chain's values feed elsewhere
  // must come after it, and the chain's own inputs before it (they do, as
  // they precede the chain ops).
  for (Operation *op : ops)
    for (Operation *user : op->getUsers())
      if (!ops.contains(user) && user != update.getOperation() &&
          !update->isBeforeInBlock(user)) {
        why = "a value of the update is used before the carry_update";
        return failure();
      }
  chain.ops = llvm::map_to_vector(
      ops, [](Operation *op) { return cast<linalg::GenericOp>(op); });
  llvm::sort(chain.ops, [](linalg::GenericOp a, linalg::GenericOp b) {
    return a->isBeforeInBlock(b);
  });
  chain.ins.assign(ins.begin(), ins.end());
  chain.scalars.assign(scalars.begin(), scalars.end());
  return chain;
}

struct FuseWeightUpdatePass
    : public mlir::qcc::impl::FuseWeightUpdateBase<FuseWeightUpdatePass> {
  void runOnOperation() override {
    SmallVector<CarryUpdateOp> updates;
    getOperation()->walk([&](CarryUpdateOp op) {
      if (op.getWeight().getType().getRank() == 2)
        updates.push_back(op);
      else
        ++numNotFused;
    });
    for (CarryUpdateOp update : updates) {
      std::string why;
      FailureOr<UpdateChain> chain = analyzeDelta(update, why);
      if (failed(chain)) {
        LLVM_DEBUG(llvm::dbgs() << "not fused: " << why << "\n");
        ++numNotFused;
        continue;
      }
      fuse(update, *chain);
      ++numFused;
    }
  }

  void fuse(CarryUpdateOp update, UpdateChain &chain) {
    OpBuilder b(update);
    Location loc = update.getLoc();
    Value weight = update.getWeight();
    DenseSet<Operation *> inChain;
    for (linalg::GenericOp op : chain.ops)
      inChain.insert(op);

    // Results of the chain used outside it become extra results; the delta
    // is yielded first in any case.
    SmallVector<Value> escaping;
    for (linalg::GenericOp op : chain.ops)
      for (Value r : op->getResults())
        if (llvm::any_of(r.getUsers(), [&](Operation *user) {
              return !inChain.contains(user) && user != update.getOperation();
            }))
          escaping.push_back(r);
    // The scalars are read before the fused op.
    IRMapping scalarOf;
    for (Value s : chain.scalars)
      scalarOf.map(s, tensor::ExtractOp::create(b, loc, s, ValueRange{}));

    auto linalgOp = chain.gradient;
    Value gy = linalgOp.getDpsInputOperand(0)->get();
    Value x = linalgOp.getDpsInputOperand(1)->get();
    auto fused = WeightUpdateOp::create(
        b, loc, gy, x, weight, update.getCarry(), chain.ins,
        llvm::map_to_vector(escaping, [](Value v) { return v.getType(); }),
        update.getJlAttr(),
        chain.lsq ? chain.lsq.getScaleGrad().getType() : Type());
    Block &body = fused.getBody().front();
    Value g = body.getArgument(0), w = body.getArgument(1);

    // The element each tensor of the chain stands for in the body.
    DenseMap<Value, Value> elementOf;
    elementOf[linalgOp->getResult(0)] = g;
    if (chain.lsq)
      elementOf[chain.lsq.getDirection()] = g;
    for (auto [i, in] : llvm::enumerate(chain.ins))
      elementOf[in] = body.getArgument(2 + i);
    auto element = [&](Value tensor) -> Value {
      if (Value e = elementOf.lookup(tensor))
        return e;
      if (Value s = scalarOf.lookupOrNull(tensor))
        return s;
      // The only other leaves are dequants of the weight.
      assert(tensor.getDefiningOp<DequantOp>() && "unexpected chain leaf");
      return w;
    };

    OpBuilder bb = OpBuilder::atBlockEnd(&body);
    for (linalg::GenericOp op : chain.ops) {
      IRMapping mapping;
      Block &opBody = op.getRegion().front();
      for (OpOperand *in : op.getDpsInputOperands())
        mapping.map(op.getMatchingBlockArgument(in), element(in->get()));
      for (Operation &nested : opBody.without_terminator())
        bb.clone(nested, mapping);
      auto yield = cast<linalg::YieldOp>(opBody.getTerminator());
      for (auto [result, value] :
           llvm::zip_equal(op->getResults(), yield.getValues()))
        elementOf[result] = mapping.lookupOrDefault(value);
    }
    SmallVector<Value> yielded{element(update.getDelta())};
    for (Value v : escaping)
      yielded.push_back(elementOf.lookup(v));
    YieldOp::create(bb, loc, yielded);

    update.getNewWeight().replaceAllUsesWith(fused.getNewWeight());
    update.getNewCarry().replaceAllUsesWith(fused.getNewCarry());
    for (auto [v, r] : llvm::zip_equal(escaping, fused.getExtraResults()))
      v.replaceUsesWithIf(r, [&](OpOperand &use) {
        return !inChain.contains(use.getOwner()) &&
               use.getOwner() != update.getOperation();
      });
    if (chain.lsq)
      chain.lsq.getScaleGrad().replaceAllUsesWith(fused.getScaleGrad());
    update.erase();
    for (linalg::GenericOp op : llvm::reverse(chain.ops))
      if (op->use_empty())
        op.erase();
    if (chain.lsq && chain.lsq->use_empty())
      chain.lsq.erase();
    // What only the chain used: the contraction and its zero fill, the
    // dequants of the weight.
    Value init = chain.gradient.getDpsInitOperand(0)->get();
    if (chain.gradient->use_empty())
      chain.gradient->erase();
    if (Operation *fill = init.getDefiningOp(); fill && fill->use_empty())
      fill->erase();
    for (DequantOp dequant : chain.dequants)
      if (dequant->use_empty())
        dequant.erase();
  }
};

} // namespace
