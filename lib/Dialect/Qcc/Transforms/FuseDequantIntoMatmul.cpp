//===- FuseDequantIntoMatmul.cpp - qcc.dequant + contraction -> qmatmul ---===//
//
// Lets the weight stay quantized through a matmul: a contraction that reads a
// dequantized weight becomes a qcc.qmatmul, which decodes tiles on the fly.
//
//===----------------------------------------------------------------------===//

#include "qcc/Dialect/Qcc/IR/QccOps.h"
#include "qcc/Dialect/Qcc/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/IR/LinalgInterfaces.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/TypeUtilities.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#define DEBUG_TYPE "qcc-fuse-dequant-into-matmul"

namespace mlir::qcc {
#define GEN_PASS_DEF_FUSEDEQUANTINTOMATMUL
#include "qcc/Dialect/Qcc/Transforms/Passes.h.inc"
} // namespace mlir::qcc

using namespace mlir;
using namespace mlir::qcc;

namespace {

/// Whether `map` selects exactly the loop dimensions `dims`, in order.
bool selects(AffineMap map, ArrayRef<unsigned> dims) {
  if (map.getNumResults() != dims.size())
    return false;
  for (auto [expr, dim] : llvm::zip_equal(map.getResults(), dims)) {
    auto d = dyn_cast<AffineDimExpr>(expr);
    if (!d || d.getPosition() != dim)
      return false;
  }
  return true;
}

/// The qcc.qmatmul orientation that computes `op` when its second input is
/// the dequantized weight, or nothing when `op` is not such a contraction.
/// With the result indexed by parallel loops (p0, ..., pr-1) and one
/// reduction loop k, the lhs must be (p0, ..., pr-2, k) and the weight
///   (pr-1, k) or (p0, ..., pr-3, pr-1, k)   -> fwd (y = x · Ŵᵀ)
///   (k, pr-1) or (p0, ..., pr-3, k, pr-1)   -> bwd (y = g · Ŵ).
std::optional<MatmulOrientation> matchWeightContraction(linalg::LinalgOp op) {
  if (!op.hasPureTensorSemantics() || op.getNumDpsInputs() != 2 ||
      op.getNumDpsInits() != 1 || !linalg::isaContractionOpInterface(op) ||
      op.getNumReductionLoops() != 1)
    return std::nullopt;
  // qcc.qmatmul takes and yields f32, bf16 or f16 tensors.
  auto isQmatmulFloat = [](Value v) {
    return isa<Float32Type, BFloat16Type, Float16Type>(getElementTypeOrSelf(v));
  };
  if (!isQmatmulFloat(op.getDpsInputOperand(0)->get()) ||
      !isQmatmulFloat(op->getResult(0)))
    return std::nullopt;

  SmallVector<AffineMap> maps = op.getIndexingMapsArray();
  unsigned numLoops = op.getNumLoops();
  unsigned rank = maps[2].getNumResults();
  if (rank < 2 || numLoops != rank + 1)
    return std::nullopt;
  SmallVector<unsigned> out;
  for (AffineExpr expr : maps[2].getResults()) {
    auto d = dyn_cast<AffineDimExpr>(expr);
    if (!d)
      return std::nullopt;
    out.push_back(d.getPosition());
  }
  // The one loop the result does not use is the reduction.
  unsigned k = 0;
  while (llvm::is_contained(out, k))
    ++k;
  ArrayRef<unsigned> batch = ArrayRef<unsigned>(out).drop_back(2);
  unsigned m = out[rank - 2], n = out[rank - 1];
  auto withBatch = [&](std::initializer_list<unsigned> tail) {
    SmallVector<unsigned> dims(batch);
    dims.append(tail);
    return dims;
  };
  if (!selects(maps[0], withBatch({m, k})))
    return std::nullopt;
  AffineMap w = maps[1];
  if (selects(w, {n, k}) || selects(w, withBatch({n, k})))
    return MatmulOrientation::Fwd;
  if (selects(w, {k, n}) || selects(w, withBatch({k, n})))
    return MatmulOrientation::Bwd;
  return std::nullopt;
}

bool isZeroFill(Value init) {
  auto fill = init.getDefiningOp<linalg::FillOp>();
  return fill && matchPattern(fill.value(), m_AnyZeroFloat());
}

struct FuseDequantIntoContraction
    : public OpInterfaceRewritePattern<linalg::LinalgOp> {
  FuseDequantIntoContraction(MLIRContext *ctx, llvm::Statistic &fwd,
                             llvm::Statistic &bwd)
      : OpInterfaceRewritePattern(ctx), numFwd(fwd), numBwd(bwd) {}

  LogicalResult matchAndRewrite(linalg::LinalgOp op,
                                PatternRewriter &rewriter) const override {
    if (op.getNumDpsInputs() != 2)
      return failure();
    auto dequant = op.getDpsInputOperand(1)->get().getDefiningOp<DequantOp>();
    if (!dequant)
      return rewriter.notifyMatchFailure(op, "weight is not a qcc.dequant");
    std::optional<MatmulOrientation> orientation = matchWeightContraction(op);
    if (!orientation)
      return rewriter.notifyMatchFailure(op, "not a weight contraction");
    // Every user must be fusable, or the float tensor is needed anyway.
    for (Operation *user : dequant->getUsers()) {
      auto linalgUser = dyn_cast<linalg::LinalgOp>(user);
      if (!linalgUser || linalgUser.getNumDpsInputs() != 2 ||
          linalgUser.getDpsInputOperand(1)->get() != dequant.getResult() ||
          !matchWeightContraction(linalgUser))
        return rewriter.notifyMatchFailure(op, "dequant has a non-fusable user");
    }

    Value lhs = op.getDpsInputOperand(0)->get();
    Value init = op.getDpsInitOperand(0)->get();
    Type resultType = op->getResult(0).getType();
    Value product = QMatmulOp::create(rewriter, op.getLoc(), resultType,
                                      *orientation, lhs, dequant.getInput());
    if (!isZeroFill(init))
      product = linalg::AddOp::create(rewriter, op.getLoc(),
                                      ValueRange{product, init},
                                      ValueRange{init})
                    .getResult(0);
    rewriter.replaceOp(op, product);
    ++(*orientation == MatmulOrientation::Fwd ? numFwd : numBwd);
    return success();
  }

  llvm::Statistic &numFwd;
  llvm::Statistic &numBwd;
};

struct FuseDequantIntoMatmulPass
    : public mlir::qcc::impl::FuseDequantIntoMatmulBase<FuseDequantIntoMatmulPass> {
  void runOnOperation() override {
    MLIRContext *ctx = &getContext();
    RewritePatternSet patterns(ctx);
    patterns.add<FuseDequantIntoContraction>(ctx, numFusedFwd, numFusedBwd);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      return signalPassFailure();
    // A dequant that still feeds a fusable contraction was kept because of
    // another user that needs the float tensor.
    getOperation()->walk([&](DequantOp op) {
      if (llvm::any_of(op->getUsers(), [](Operation *user) {
            auto linalgOp = dyn_cast<linalg::LinalgOp>(user);
            return linalgOp && matchWeightContraction(linalgOp);
          }))
        ++numDequantsKept;
    });
  }
};

} // namespace
