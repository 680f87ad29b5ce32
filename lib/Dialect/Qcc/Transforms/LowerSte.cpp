//===- LowerSte.cpp - qcc.ste_grad -> elementwise linalg ------------------===//
//
// The straight-through estimators are elementwise formulas (docs/spec.md
// §3.4); lowering them to linalg.generic lets them fuse with the optimizer's
// own elementwise code downstream.
//
//===----------------------------------------------------------------------===//

#include "qcc/Dialect/Qcc/IR/QccOps.h"
#include "qcc/Dialect/Qcc/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/IR/TypeUtilities.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#define DEBUG_TYPE "qcc-lower-ste"

namespace mlir::qcc {
#define GEN_PASS_DEF_LOWERSTE
#include "qcc/Dialect/Qcc/Transforms/Passes.h.inc"
} // namespace mlir::qcc

using namespace mlir;
using namespace mlir::qcc;

namespace {

Value toF32(OpBuilder &b, Location loc, Value v) {
  Type f32 = b.getF32Type();
  if (v.getType() == f32)
    return v;
  return arith::ExtFOp::create(b, loc, f32, v);
}

Value fromF32(OpBuilder &b, Location loc, Value v, Type to) {
  if (to == v.getType())
    return v;
  return arith::TruncFOp::create(b, loc, to, v);
}

/// The elementwise body of one mode: given the f32 gradient and the f32
/// values of the extra inputs, yields the f32 direction.
using SteBody =
    function_ref<Value(OpBuilder &, Location, Value grad, ValueRange extra)>;

/// direction = body(grad, extra...) as one linalg.generic over the grad's
/// shape; every operand has the same (identity) indexing.
Value buildElementwise(PatternRewriter &rewriter, SteGradOp op,
                       ValueRange extraInputs, SteBody body) {
  Location loc = op.getLoc();
  auto resultType = cast<RankedTensorType>(op.getDirection().getType());
  SmallVector<OpFoldResult> sizes =
      tensor::getMixedSizes(rewriter, loc, op.getGrad());
  Value init = tensor::EmptyOp::create(rewriter, loc, sizes,
                                       resultType.getElementType());
  SmallVector<Value> inputs{op.getGrad()};
  inputs.append(extraInputs.begin(), extraInputs.end());
  int64_t rank = resultType.getRank();
  SmallVector<AffineMap> maps(inputs.size() + 1,
                              rewriter.getMultiDimIdentityMap(rank));
  SmallVector<utils::IteratorType> iterators(rank,
                                             utils::IteratorType::parallel);
  auto generic = linalg::GenericOp::create(
      rewriter, loc, TypeRange{resultType}, inputs, ValueRange{init}, maps,
      iterators, [&](OpBuilder &b, Location nested, ValueRange args) {
        SmallVector<Value> extra;
        for (Value arg : args.drop_front().drop_back())
          extra.push_back(toF32(b, nested, arg));
        Value out = body(b, nested, toF32(b, nested, args.front()), extra);
        linalg::YieldOp::create(
            b, nested, fromF32(b, nested, out, resultType.getElementType()));
      });
  return generic.getResult(0);
}

struct LowerSteGrad : public OpRewritePattern<SteGradOp> {
  LowerSteGrad(MLIRContext *ctx, llvm::Statistic &lowered)
      : OpRewritePattern(ctx), numLowered(lowered) {}

  LogicalResult matchAndRewrite(SteGradOp op,
                                PatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value residual = op.getResidual();
    Value direction;
    switch (op.getMode()) {
    case SteMode::Identity:
      direction = buildElementwise(
          rewriter, op, {},
          [](OpBuilder &, Location, Value g, ValueRange) { return g; });
      break;
    case SteMode::Clipped: {
      // |Ŵ + res| <= t ? g : 0, with Ŵ decoded in f32.
      auto gradType = cast<RankedTensorType>(op.getGrad().getType());
      Value wf = DequantOp::create(
          rewriter, loc, gradType.clone(rewriter.getF32Type()), op.getWeight());
      SmallVector<Value> extra{wf};
      if (residual)
        extra.push_back(residual);
      float threshold = op.getThreshold()->convertToFloat();
      direction = buildElementwise(
          rewriter, op, extra,
          [&](OpBuilder &b, Location l, Value g, ValueRange ex) {
            Value latent = ex[0];
            if (ex.size() > 1)
              latent = arith::AddFOp::create(b, l, latent, ex[1]);
            Value mag = math::AbsFOp::create(b, l, latent);
            Value t = arith::ConstantOp::create(b, l, b.getF32FloatAttr(threshold));
            Value inside =
                arith::CmpFOp::create(b, l, arith::CmpFPredicate::OLE, mag, t);
            Value zero = arith::ConstantOp::create(b, l, b.getF32FloatAttr(0));
            return arith::SelectOp::create(b, l, inside, g, zero).getResult();
          });
      break;
    }
    case SteMode::Ewgs: {
      // g * (1 + λ * sign(g) * res); without a residual res = 0.
      float lambda = op.getLambda()->convertToFloat();
      if (!residual) {
        direction = buildElementwise(
            rewriter, op, {},
            [](OpBuilder &, Location, Value g, ValueRange) { return g; });
        break;
      }
      direction = buildElementwise(
          rewriter, op, {residual},
          [&](OpBuilder &b, Location l, Value g, ValueRange ex) {
            Value zero = arith::ConstantOp::create(b, l, b.getF32FloatAttr(0));
            Value one = arith::ConstantOp::create(b, l, b.getF32FloatAttr(1));
            Value minusOne =
                arith::ConstantOp::create(b, l, b.getF32FloatAttr(-1));
            Value pos =
                arith::CmpFOp::create(b, l, arith::CmpFPredicate::OGT, g, zero);
            Value neg =
                arith::CmpFOp::create(b, l, arith::CmpFPredicate::OLT, g, zero);
            Value sign = arith::SelectOp::create(
                b, l, pos, one,
                arith::SelectOp::create(b, l, neg, minusOne, zero));
            Value lam = arith::ConstantOp::create(b, l, b.getF32FloatAttr(lambda));
            Value scaled = arith::MulFOp::create(
                b, l, lam, arith::MulFOp::create(b, l, sign, ex[0]));
            Value factor = arith::AddFOp::create(b, l, one, scaled);
            return arith::MulFOp::create(b, l, g, factor).getResult();
          });
      break;
    }
    case SteMode::Lsq:
      return rewriter.notifyMatchFailure(
          op, "lsq is lowered by qcc-lower-to-loops, not here");
    }
    rewriter.replaceOp(op, {direction});
    ++numLowered;
    return success();
  }

  llvm::Statistic &numLowered;
};

struct LowerStePass : public mlir::qcc::impl::LowerSteBase<LowerStePass> {
  void runOnOperation() override {
    MLIRContext *ctx = &getContext();
    RewritePatternSet patterns(ctx);
    patterns.add<LowerSteGrad>(ctx, numLowered);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      return signalPassFailure();
    getOperation()->walk([&](SteGradOp op) {
      if (op.getMode() == SteMode::Lsq)
        ++numLsqKept;
    });
  }
};

} // namespace
