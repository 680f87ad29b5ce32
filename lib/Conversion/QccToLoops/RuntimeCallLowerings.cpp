//===- RuntimeCallLowerings.cpp - requant, carry_update, lsq, collectives -===//

#include "LoweringUtils.h"

#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"

using namespace mlir;
using namespace mlir::qcc;
using namespace mlir::qcc::detail;

namespace {

//===----------------------------------------------------------------------===//
// requant
//===----------------------------------------------------------------------===//

/// The runtime's encoder (runtime/include/qcc/Runtime/StepRuntime.h), linked
/// into every step library: encoding searches scales and codebooks, which is
/// runtime code, not something worth emitting per format.
constexpr StringLiteral kEncodeRowsFn = "qcc_rt_encode_rows";

func::FuncOp getOrDeclareEncodeRows(OpBuilder &b, Operation *from) {
  Type ptr = LLVM::LLVMPointerType::get(b.getContext());
  Type i32 = b.getI32Type(), i64 = b.getI64Type();
  return getOrDeclareRuntimeFunction(
      b, from, kEncodeRowsFn,
      b.getFunctionType({i32, ptr, ptr, i64, i64, ptr}, {i32}));
}

struct RequantLowering : public OpConversionPattern<RequantOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(RequantOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    QTensorType qtype = op.getResult().getType();
    auto inType = cast<RankedTensorType>(op.getInput().getType());
    // The encoder takes f32 rows: bf16/f16 inputs are widened first.
    Value input = toF32Buffer(rewriter, loc, op.getInput());
    Value out = allocBuffer(rewriter, loc, getStorageType(qtype), input);

    int64_t rowLen = inType.getShape().back();
    Value rows =
        arith::DivUIOp::create(rewriter, loc, numElements(rewriter, loc, input),
                               cIndex(rewriter, loc, rowLen));
    Value importance =
        adaptor.getImportance()
            ? dataPointer(rewriter, loc,
                          toBuffer(rewriter, loc, op.getImportance()))
            : LLVM::ZeroOp::create(rewriter, loc,
                                   LLVM::LLVMPointerType::get(getContext()))
                  .getResult();
    func::FuncOp encode = getOrDeclareEncodeRows(rewriter, op);
    Value ggmlType =
        arith::ConstantIntOp::create(rewriter, loc, rewriter.getI32Type(),
                                     getFormatInfo(qtype.getFormat()).ggmlId);
    func::CallOp::create(
        rewriter, loc, encode,
        ValueRange{ggmlType, dataPointer(rewriter, loc, input),
                   dataPointer(rewriter, loc, out),
                   arith::IndexCastOp::create(rewriter, loc,
                                              rewriter.getI64Type(), rows),
                   arith::ConstantIntOp::create(rewriter, loc,
                                                rewriter.getI64Type(), rowLen),
                   importance});
    rewriter.replaceOp(op, out);
    return success();
  }
};

//===----------------------------------------------------------------------===//
// carry_update
//===----------------------------------------------------------------------===//

/// The carry update is runtime code: it re-encodes blocks, which needs the
/// encoders (docs/spec.md §3.5, runtime/lib/step/CarryUpdate.cpp).
struct CarryUpdateLowering : public OpConversionPattern<CarryUpdateOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(CarryUpdateOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    QTensorType qtype = op.getWeight().getType();
    auto carryType = cast<RankedTensorType>(op.getCarry().getType());
    Value weight = adaptor.getWeight();
    Value carry = toBuffer(rewriter, loc, op.getCarry());
    Value delta = toF32Buffer(rewriter, loc, op.getDelta());

    Value newWeight =
        allocBuffer(rewriter, loc, cast<MemRefType>(weight.getType()), weight);
    Value newCarry = allocLike(rewriter, loc, carryType, carry);

    int64_t rowLen = qtype.getShape().back();
    Value rows =
        arith::DivUIOp::create(rewriter, loc, numElements(rewriter, loc, delta),
                               cIndex(rewriter, loc, rowLen));
    JLCarryAttr jl = op.getJlAttr();
    auto i32 = [&](int64_t v) {
      return arith::ConstantIntOp::create(rewriter, loc, rewriter.getI32Type(),
                                          v)
          .getResult();
    };
    auto i64 = [&](int64_t v) {
      return arith::ConstantIntOp::create(rewriter, loc, rewriter.getI64Type(),
                                          v)
          .getResult();
    };
    func::CallOp::create(
        rewriter, loc, getOrDeclareCarryUpdate(rewriter, op),
        ValueRange{i32(getFormatInfo(qtype.getFormat()).ggmlId),
                   dataPointer(rewriter, loc, weight),
                   dataPointer(rewriter, loc, carry),
                   dataPointer(rewriter, loc, delta),
                   dataPointer(rewriter, loc, newWeight),
                   dataPointer(rewriter, loc, newCarry),
                   arith::IndexCastOp::create(rewriter, loc,
                                              rewriter.getI64Type(), rows),
                   i64(rowLen),
                   i32(carryType.getElementType().isBF16() ? 1 : 0),
                   i64(jl ? jl.getDim() : 0), i64(jl ? jl.getChunk() : 0),
                   i64(jl ? jl.getSeed() : 0)});
    rewriter.replaceOp(
        op, {newWeight, toTensor(rewriter, loc, newCarry, carryType)});
    return success();
  }
};

//===----------------------------------------------------------------------===//
// ste_grad lsq
//===----------------------------------------------------------------------===//

constexpr StringLiteral kLsqScaleGradFn = "qcc_rt_lsq_scale_grad";

/// The other estimators are elementwise and lowered by qcc-lower-ste; lsq's
/// scale gradient needs each format's scale field, which the runtime knows
/// (runtime/lib/step/LsqScaleGrad.cpp). The direction is the gradient.
struct SteLsqLowering : public OpConversionPattern<SteGradOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(SteGradOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    if (op.getMode() != SteMode::Lsq)
      return rewriter.notifyMatchFailure(
          op, "only lsq is lowered here; run qcc-lower-ste first");
    Location loc = op.getLoc();
    QTensorType qtype = op.getWeight().getType();
    auto dirType = cast<RankedTensorType>(op.getDirection().getType());
    auto scaleType = cast<RankedTensorType>(op.getScaleGrad().getType());
    Value grad = toF32Buffer(rewriter, loc, op.getGrad());

    // direction = grad, in the direction's element type.
    Value direction = allocLike(rewriter, loc, dirType, grad);
    Value flatGrad = flatten(rewriter, loc, grad);
    Value flatDir = flatten(rewriter, loc, direction);
    Value n = numElements(rewriter, loc, grad);
    {
      auto loop = scf::ForOp::create(rewriter, loc, cIndex(rewriter, loc, 0), n,
                                     cIndex(rewriter, loc, 1));
      OpBuilder::InsertionGuard guard(rewriter);
      rewriter.setInsertionPointToStart(loop.getBody());
      Value v = memref::LoadOp::create(rewriter, loc, flatGrad,
                                       loop.getInductionVar());
      memref::StoreOp::create(
          rewriter, loc,
          castFromF32(rewriter, loc, v, dirType.getElementType()), flatDir,
          loop.getInductionVar());
    }

    Value scaleGrad = allocLike(rewriter, loc, scaleType, grad);
    int64_t rowLen = qtype.getShape().back();
    Value rows =
        arith::DivUIOp::create(rewriter, loc, n, cIndex(rewriter, loc, rowLen));
    Type ptr = LLVM::LLVMPointerType::get(getContext());
    Type i32 = rewriter.getI32Type(), i64 = rewriter.getI64Type();
    func::FuncOp fn = getOrDeclareRuntimeFunction(
        rewriter, op, kLsqScaleGradFn,
        rewriter.getFunctionType({i32, ptr, ptr, ptr, i64, i64}, {i32}));
    func::CallOp::create(
        rewriter, loc, fn,
        ValueRange{
            arith::ConstantIntOp::create(
                rewriter, loc, i32, getFormatInfo(qtype.getFormat()).ggmlId),
            dataPointer(rewriter, loc, adaptor.getWeight()),
            dataPointer(rewriter, loc, grad),
            dataPointer(rewriter, loc, scaleGrad),
            arith::IndexCastOp::create(rewriter, loc, i64, rows),
            arith::ConstantIntOp::create(rewriter, loc, i64, rowLen)});
    rewriter.replaceOp(op, {toTensor(rewriter, loc, direction, dirType),
                            toTensor(rewriter, loc, scaleGrad, scaleType)});
    return success();
  }
};

//===----------------------------------------------------------------------===//
// scale_update
//===----------------------------------------------------------------------===//

constexpr StringLiteral kScaleUpdateFn = "qcc_rt_scale_update";

/// Writing a scale field needs the format's header layout and its encoding,
/// which the runtime has (runtime/lib/step/LsqScaleGrad.cpp).
struct ScaleUpdateLowering : public OpConversionPattern<ScaleUpdateOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(ScaleUpdateOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    QTensorType qtype = op.getWeight().getType();
    Value weight = adaptor.getWeight();
    Value delta = toBuffer(rewriter, loc, op.getDelta());
    Value out =
        allocBuffer(rewriter, loc, cast<MemRefType>(weight.getType()), weight);
    int64_t rowLen = qtype.getShape().back();
    Value rows = arith::MulIOp::create(
        rewriter, loc, numElements(rewriter, loc, delta),
        cIndex(rewriter, loc, qtype.getBlockElems()));
    rows = arith::DivUIOp::create(rewriter, loc, rows,
                                  cIndex(rewriter, loc, rowLen));
    Type ptr = LLVM::LLVMPointerType::get(getContext());
    Type i32 = rewriter.getI32Type(), i64 = rewriter.getI64Type();
    func::FuncOp fn = getOrDeclareRuntimeFunction(
        rewriter, op, kScaleUpdateFn,
        rewriter.getFunctionType({i32, ptr, ptr, ptr, i64, i64}, {i32}));
    func::CallOp::create(
        rewriter, loc, fn,
        ValueRange{
            arith::ConstantIntOp::create(
                rewriter, loc, i32, getFormatInfo(qtype.getFormat()).ggmlId),
            dataPointer(rewriter, loc, weight),
            dataPointer(rewriter, loc, delta), dataPointer(rewriter, loc, out),
            arith::IndexCastOp::create(rewriter, loc, i64, rows),
            arith::ConstantIntOp::create(rewriter, loc, i64, rowLen)});
    rewriter.replaceOp(op, out);
    return success();
  }
};

//===----------------------------------------------------------------------===//
// all_reduce, all_gather
//===----------------------------------------------------------------------===//

/// The collectives are the host's: the runtime forwards them to the job's
/// communicator (MPI under mpirun), which the session installs in the step
/// library (StepRuntime.h, docs/distributed.md).
constexpr StringLiteral kAllReduceFn = "qcc_rt_all_reduce_f32";
constexpr StringLiteral kAllGatherFn = "qcc_rt_all_gather";

/// Replaces the collective `op` by `fn(src, dst, count, ranks) -> i32`
/// (StepRuntime.h) over the buffer of `input` and a new one of the result's
/// type; `count` is the input's elements, or its bytes with `countBytes`.
void replaceByCollectiveCall(Operation *op, Value input, int64_t ranks,
                             StringRef fn, bool countBytes,
                             ConversionPatternRewriter &rewriter) {
  Location loc = op->getLoc();
  auto outType = cast<RankedTensorType>(op->getResult(0).getType());
  Value in = toBuffer(rewriter, loc, input);
  Value out = allocLike(rewriter, loc, outType, in);
  Type ptr = LLVM::LLVMPointerType::get(rewriter.getContext());
  Type i64 = rewriter.getI64Type();
  Value count = arith::IndexCastOp::create(rewriter, loc, i64,
                                           numElements(rewriter, loc, in));
  if (countBytes) {
    unsigned width = outType.getElementTypeBitWidth() / 8;
    count = arith::MulIOp::create(
        rewriter, loc, count,
        arith::ConstantIntOp::create(rewriter, loc, i64, width));
  }
  func::FuncOp callee = getOrDeclareRuntimeFunction(
      rewriter, op, fn,
      rewriter.getFunctionType({ptr, ptr, i64, i64}, {rewriter.getI32Type()}));
  func::CallOp::create(
      rewriter, loc, callee,
      ValueRange{dataPointer(rewriter, loc, in), dataPointer(rewriter, loc, out),
                 count, arith::ConstantIntOp::create(rewriter, loc, i64, ranks)});
  rewriter.replaceOp(op, toTensor(rewriter, loc, out, outType));
}

struct AllReduceLowering : public OpConversionPattern<AllReduceOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(AllReduceOp op, OpAdaptor,
                  ConversionPatternRewriter &rewriter) const override {
    replaceByCollectiveCall(op, op.getInput(), op.getRanksAttr().getInt(),
                            kAllReduceFn, /*countBytes=*/false, rewriter);
    return success();
  }
};

struct AllGatherLowering : public OpConversionPattern<AllGatherOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(AllGatherOp op, OpAdaptor,
                  ConversionPatternRewriter &rewriter) const override {
    replaceByCollectiveCall(op, op.getInput(), op.getRanksAttr().getInt(),
                            kAllGatherFn, /*countBytes=*/true, rewriter);
    return success();
  }
};

} // namespace

void mlir::qcc::detail::populateRuntimeCallPatterns(
    TypeConverter &converter, RewritePatternSet &patterns) {
  patterns.add<RequantLowering, CarryUpdateLowering, AllReduceLowering,
               AllGatherLowering, SteLsqLowering,
               ScaleUpdateLowering>(
      converter, patterns.getContext());
}
