//===- WeightUpdateToLoops.cpp - qcc.weight_update, a tile of rows at a time =//
//
// One pass over W: for each tile of rows, the micro-GEMM forms the tile's
// weight gradient gyᵀ·x, the op's body maps it (with the decoded weights and
// the elementwise operands of those rows) to the tile's delta in place, and
// the runtime's carry update applies the delta to the tile's blocks. Neither
// the gradient nor the delta of the whole weight ever exists.
//
//===----------------------------------------------------------------------===//

#include "LoweringUtils.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/IRMapping.h"

#include <limits>

using namespace mlir;
using namespace mlir::qcc;
using namespace mlir::qcc::detail;

namespace {

/// f32 elements per tile buffer (128 KiB): the tile's rows of the gradient,
/// and of the decoded weights when the body reads them, stay in L2.
constexpr int64_t kTileElems = 32768;

/// A private function decoding rows [first, first + rows) of a weight with
/// rows of `k` elements into a flat f32 tile buffer, shared by every
/// weight_update on weights of the same format and shape. (Static buffer
/// types: the bare-pointer calling convention passes only those.)
func::FuncOp getOrCreateRowDecoder(OpBuilder &b, Operation *from,
                                   QTensorType type, MemRefType bytesType,
                                   MemRefType outType, int64_t k) {
  auto module = from->getParentOfType<ModuleOp>();
  std::string name = ("__qcc_decode_rows_" +
                      stringifyQuantFormat(type.getFormat()) + "_" +
                      Twine(bytesType.getNumElements()) + "_" + Twine(k) +
                      "_" + Twine(outType.getNumElements()))
                         .str();
  if (auto fn = module.lookupSymbol<func::FuncOp>(name))
    return fn;
  Location loc = from->getLoc();
  Type index = b.getIndexType();
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(module.getBody());
  auto fn = func::FuncOp::create(
      b, loc, name, b.getFunctionType({bytesType, index, index, outType}, {}));
  fn.setPrivate();
  Block *body = fn.addEntryBlock();
  b.setInsertionPointToStart(body);
  Value bytes = body->getArgument(0), first = body->getArgument(1);
  Value rows = body->getArgument(2), out = body->getArgument(3);
  int64_t blocksPerRow = k / type.getBlockElems();
  auto loop =
      scf::ForOp::create(b, loc, cIndex(b, loc, 0), rows, cIndex(b, loc, 1));
  {
    OpBuilder::InsertionGuard inLoop(b);
    b.setInsertionPointToStart(loop.getBody());
    Value r = loop.getInductionVar();
    Value firstBlock =
        arith::MulIOp::create(b, loc, arith::AddIOp::create(b, loc, first, r),
                              cIndex(b, loc, blocksPerRow));
    Value outBase = arith::MulIOp::create(b, loc, r, cIndex(b, loc, k));
    // The format is known to decode: the op verified it has a block layout.
    (void)decodeBlocks(b, loc, type, bytes, firstBlock,
                       cIndex(b, loc, blocksPerRow), out, outBase);
  }
  func::ReturnOp::create(b, loc);
  return fn;
}

struct WeightUpdateLowering : public OpConversionPattern<WeightUpdateOp> {
  WeightUpdateLowering(TypeConverter &converter, MLIRContext *ctx,
                       const QccToLoopsOptions &options)
      : OpConversionPattern(converter, ctx), options(options) {}
  QccToLoopsOptions options;

  LogicalResult
  matchAndRewrite(WeightUpdateOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    QTensorType wType = op.getWeight().getType();
    auto gyType = cast<RankedTensorType>(op.getGradOut().getType());
    auto carryType = cast<RankedTensorType>(op.getCarry().getType());
    if (!wType.hasStaticShape() || !gyType.hasStaticShape() ||
        !carryType.hasStaticShape())
      return rewriter.notifyMatchFailure(op, "shapes must be static");
    int64_t n = wType.getShape()[0], k = wType.getShape()[1];
    int64_t m = gyType.getDimSize(0);
    int64_t rowBytes = k / wType.getBlockElems() * wType.getBlockBytes();
    bool carryBf16 = carryType.getElementType().isBF16();
    int64_t carryRowBytes = carryType.getShape().back() * (carryBf16 ? 2 : 4);
    Block &body = op.getBody().front();
    bool readsWeight = !body.getArgument(1).use_empty();

    Value gy = toBuffer(rewriter, loc, op.getGradOut());
    Value x = toBuffer(rewriter, loc, op.getInput());
    Value weight = adaptor.getWeight();
    Value carry = toBuffer(rewriter, loc, op.getCarry());
    SmallVector<Value> ins = llvm::map_to_vector(
        op.getIns(), [&](Value v) { return toBuffer(rewriter, loc, v); });
    Value newWeight =
        allocBuffer(rewriter, loc, cast<MemRefType>(weight.getType()), weight);
    Value newCarry = allocLike(rewriter, loc, carryType, carry);
    Value scaleGrad;
    if (Value sg = op.getScaleGrad())
      scaleGrad = allocLike(rewriter, loc, cast<RankedTensorType>(sg.getType()),
                            x);
    SmallVector<Value> extras = llvm::map_to_vector(
        op.getExtraResults(), [&](Value r) {
          return allocLike(rewriter, loc, cast<RankedTensorType>(r.getType()),
                           x);
        });
    int64_t tileRows = std::clamp<int64_t>(kTileElems / k, 1, n);
    auto tileType = MemRefType::get({tileRows * k}, rewriter.getF32Type());
    Value bytes;
    func::FuncOp decoder;
    if (readsWeight) {
      bytes = flatten(rewriter, loc, weight);
      decoder = getOrCreateRowDecoder(
          rewriter, op, wType, cast<MemRefType>(bytes.getType()), tileType, k);
    }
    func::FuncOp carryUpdate = getOrDeclareCarryUpdate(rewriter, op);
    const ::qcc::FormatInfo &format = getFormatInfo(wType.getFormat());

    Value c0 = cIndex(rewriter, loc, 0), c1 = cIndex(rewriter, loc, 1);
    Value nTotal = cIndex(rewriter, loc, n), kTotal = cIndex(rewriter, loc, k);
    OpBuilder::InsertionGuard guard(rewriter);
    // With a guard, everything below happens only when it is finite
    // (|guard| < inf is false for NaN too).
    // The gradient's inputs join the check: v - v is 0 for a finite v and
    // NaN otherwise, so one pass over gy and x tells whether any tile's
    // gradient could be non-finite before any tile is written.
    scf::IfOp guarded;
    if (Value g = op.getGuard()) {
      Value v = tensor::ExtractOp::create(rewriter, loc, g, ValueRange{});
      for (Value buffer : {gy, x}) {
        Value flat = flatten(rewriter, loc, buffer);
        auto loop = scf::ForOp::create(
            rewriter, loc, c0, numElements(rewriter, loc, flat), c1,
            ValueRange{v});
        OpBuilder::InsertionGuard inLoop(rewriter);
        rewriter.setInsertionPointToStart(loop.getBody());
        Value e =
            memref::LoadOp::create(rewriter, loc, flat, loop.getInductionVar());
        Value zeroOrNan = arith::SubFOp::create(rewriter, loc, e, e);
        scf::YieldOp::create(
            rewriter, loc,
            ValueRange{arith::AddFOp::create(rewriter, loc,
                                             loop.getRegionIterArg(0),
                                             zeroOrNan)
                           .getResult()});
        rewriter.setInsertionPointAfter(loop);
        v = loop.getResult(0);
      }
      Value inf = arith::ConstantOp::create(
          rewriter, loc,
          rewriter.getF32FloatAttr(std::numeric_limits<float>::infinity()));
      Value finite = arith::CmpFOp::create(
          rewriter, loc, arith::CmpFPredicate::OLT,
          math::AbsFOp::create(rewriter, loc, v), inf);
      guarded = scf::IfOp::create(rewriter, loc, finite, /*withElse=*/false);
      rewriter.setInsertionPointToStart(guarded.thenBlock());
    }
    auto par = scf::ParallelOp::create(rewriter, loc, ValueRange{c0},
                                       ValueRange{nTotal},
                                       ValueRange{cIndex(rewriter, loc, tileRows)});
    rewriter.setInsertionPointToStart(par.getBody());
    Value r0 = par.getInductionVars()[0];
    Value rows = arith::MinSIOp::create(
        rewriter, loc, cIndex(rewriter, loc, tileRows),
        arith::SubIOp::create(rewriter, loc, nTotal, r0));
    Value tileElems = arith::MulIOp::create(rewriter, loc, rows, kTotal);
    Value grad = memref::AllocaOp::create(rewriter, loc, tileType);

    // grad[i, j] = Σ_m gy[m, r0 + i] · x[m, j]
    {
      auto zero = scf::ForOp::create(rewriter, loc, c0, tileElems, c1);
      OpBuilder::InsertionGuard inLoop(rewriter);
      rewriter.setInsertionPointToStart(zero.getBody());
      memref::StoreOp::create(
          rewriter, loc,
          arith::ConstantOp::create(rewriter, loc, rewriter.getF32FloatAttr(0)),
          grad, zero.getInductionVar());
    }
    Value ldN = cIndex(rewriter, loc, n);
    callGemm(rewriter, loc, op, options, rows, kTotal, cIndex(rewriter, loc, m),
             elementPointer(rewriter, loc, gy, c0, r0, ldN), ldN,
             /*aTransposed=*/true, elementPointer(rewriter, loc, x, c0, c0, kTotal),
             kTotal, /*bTransposed=*/false,
             elementPointer(rewriter, loc, grad, c0, c0, kTotal), kTotal);
    // lsq: the tile's block-scale gradients, from its gradient before the
    // body turns that into the delta.
    Type i32Type = rewriter.getI32Type(), i64Type = rewriter.getI64Type();
    Value wOffset = arith::MulIOp::create(rewriter, loc, r0,
                                          cIndex(rewriter, loc, rowBytes));
    if (scaleGrad) {
      Type ptr = LLVM::LLVMPointerType::get(rewriter.getContext());
      func::FuncOp lsq = getOrDeclareRuntimeFunction(
          rewriter, op, "qcc_rt_lsq_scale_grad",
          rewriter.getFunctionType(
              {i32Type, ptr, ptr, ptr, i64Type, i64Type}, {i32Type}));
      int64_t blocksPerRow = k / wType.getBlockElems();
      Value sgOffset = arith::MulIOp::create(
          rewriter, loc, r0, cIndex(rewriter, loc, blocksPerRow * 4));
      func::CallOp::create(
          rewriter, loc, lsq,
          ValueRange{arith::ConstantIntOp::create(rewriter, loc, i32Type,
                                                  format.ggmlId),
                     bytePointer(rewriter, loc, weight, wOffset),
                     dataPointer(rewriter, loc, grad),
                     bytePointer(rewriter, loc, scaleGrad, sgOffset),
                     arith::IndexCastOp::create(rewriter, loc, i64Type, rows),
                     arith::ConstantIntOp::create(rewriter, loc, i64Type, k)});
    }
    Value decoded;
    if (readsWeight) {
      decoded = memref::AllocaOp::create(rewriter, loc, tileType);
      func::CallOp::create(rewriter, loc, decoder,
                           ValueRange{bytes, r0, rows, decoded});
    }

    // The body, per element of the tile; the delta replaces the gradient.
    SmallVector<Value> lbs{c0, c0}, ubs{rows, kTotal}, steps{c1, c1};
    scf::buildLoopNest(
        rewriter, loc, lbs, ubs, steps,
        [&](OpBuilder &b, Location nested, ValueRange iv) {
          Value flat = arith::AddIOp::create(
              b, nested, arith::MulIOp::create(b, nested, iv[0], kTotal), iv[1]);
          Value row = arith::AddIOp::create(b, nested, r0, iv[0]);
          IRMapping mapping;
          Value g = memref::LoadOp::create(b, nested, grad, flat);
          mapping.map(body.getArgument(0), g);
          mapping.map(body.getArgument(1),
                      readsWeight
                          ? memref::LoadOp::create(b, nested, decoded, flat)
                                .getResult()
                          : g);
          for (auto [arg, buffer] :
               llvm::zip_equal(body.getArguments().drop_front(2), ins))
            mapping.map(arg, memref::LoadOp::create(b, nested, buffer,
                                                    ValueRange{row, iv[1]}));
          for (Operation &inner : body.without_terminator())
            b.clone(inner, mapping);
          auto yield = cast<YieldOp>(body.getTerminator());
          memref::StoreOp::create(
              b, nested, mapping.lookupOrDefault(yield.getValues()[0]), grad,
              flat);
          for (auto [value, buffer] :
               llvm::zip_equal(yield.getValues().drop_front(), extras))
            memref::StoreOp::create(b, nested, mapping.lookupOrDefault(value),
                                    buffer, ValueRange{row, iv[1]});
        });

    // The tile's blocks take the delta through the carry.
    auto i32 = [&](int64_t v) -> Value {
      return arith::ConstantIntOp::create(rewriter, loc, rewriter.getI32Type(),
                                          v);
    };
    auto i64 = [&](int64_t v) -> Value {
      return arith::ConstantIntOp::create(rewriter, loc, rewriter.getI64Type(),
                                          v);
    };
    Value cOffset = arith::MulIOp::create(
        rewriter, loc, r0, cIndex(rewriter, loc, carryRowBytes));
    JLCarryAttr jl = op.getJlAttr();
    func::CallOp::create(
        rewriter, loc, carryUpdate,
        ValueRange{i32(format.ggmlId), bytePointer(rewriter, loc, weight, wOffset),
                   bytePointer(rewriter, loc, carry, cOffset),
                   dataPointer(rewriter, loc, grad),
                   bytePointer(rewriter, loc, newWeight, wOffset),
                   bytePointer(rewriter, loc, newCarry, cOffset),
                   arith::IndexCastOp::create(rewriter, loc,
                                              rewriter.getI64Type(), rows),
                   i64(k), i32(carryBf16 ? 1 : 0), i64(jl ? jl.getDim() : 0),
                   i64(jl ? jl.getChunk() : 0), i64(jl ? jl.getSeed() : 0)});

    if (guarded)
      rewriter.setInsertionPointAfter(guarded);
    else
      rewriter.setInsertionPointAfter(par);
    SmallVector<Value> results{newWeight,
                               toTensor(rewriter, loc, newCarry, carryType)};
    if (scaleGrad)
      results.push_back(
          toTensor(rewriter, loc, scaleGrad, op.getScaleGrad().getType()));
    for (auto [buffer, result] : llvm::zip_equal(extras, op.getExtraResults()))
      results.push_back(toTensor(rewriter, loc, buffer, result.getType()));
    rewriter.replaceOp(op, results);
    return success();
  }
};

} // namespace

void mlir::qcc::detail::populateWeightUpdateToLoopsPatterns(
    TypeConverter &converter, RewritePatternSet &patterns,
    const QccToLoopsOptions &options) {
  patterns.add<WeightUpdateLowering>(converter, patterns.getContext(),
                                     options);
}
