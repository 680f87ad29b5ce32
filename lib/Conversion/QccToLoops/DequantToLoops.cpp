//===- DequantToLoops.cpp - qcc.dequant as a parallel loop over blocks ---===//

#include "LoweringUtils.h"

#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"

using namespace mlir;
using namespace mlir::qcc;
using namespace mlir::qcc::detail;

namespace {

//===----------------------------------------------------------------------===//
// dequant
//===----------------------------------------------------------------------===//

struct DequantLowering : public OpConversionPattern<DequantOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(DequantOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    QTensorType qtype = op.getInput().getType();
    auto resultType = cast<RankedTensorType>(op.getResult().getType());
    Type elemType = resultType.getElementType();
    int64_t blockElems = qtype.getBlockElems();
    Value bytes = flatten(rewriter, loc, adaptor.getInput());

    // Only outer dimensions can be dynamic (the innermost is static for any
    // blocked format), so the storage buffer supplies the dynamic sizes.
    Value out = allocLike(rewriter, loc, resultType, adaptor.getInput());
    Value flatOut = flatten(rewriter, loc, out);
    Value numBlocks =
        arith::DivUIOp::create(rewriter, loc, numElements(rewriter, loc, out),
                               cIndex(rewriter, loc, blockElems));

    // Blocks are independent: one scf.parallel iteration each, decoding
    // through a block-sized f32 scratch when the result is narrower.
    auto par = scf::ParallelOp::create(
        rewriter, loc, ValueRange{cIndex(rewriter, loc, 0)},
        ValueRange{numBlocks}, ValueRange{cIndex(rewriter, loc, 1)});
    OpBuilder::InsertionGuard guard(rewriter);
    rewriter.setInsertionPointToStart(par.getBody());
    Value block = par.getInductionVars()[0];
    Value outBase = arith::MulIOp::create(rewriter, loc, block,
                                          cIndex(rewriter, loc, blockElems));
    if (elemType.isF32()) {
      if (failed(decodeBlocks(rewriter, loc, qtype, bytes, block,
                              cIndex(rewriter, loc, 1), flatOut, outBase)))
        return rewriter.notifyMatchFailure(op, "no decoder for the format");
    } else {
      Value scratch = memref::AllocaOp::create(
          rewriter, loc, MemRefType::get({blockElems}, rewriter.getF32Type()));
      if (failed(decodeBlocks(rewriter, loc, qtype, bytes, block,
                              cIndex(rewriter, loc, 1), scratch,
                              cIndex(rewriter, loc, 0))))
        return rewriter.notifyMatchFailure(op, "no decoder for the format");
      auto copy = scf::ForOp::create(rewriter, loc, cIndex(rewriter, loc, 0),
                                     cIndex(rewriter, loc, blockElems),
                                     cIndex(rewriter, loc, 1));
      rewriter.setInsertionPointToStart(copy.getBody());
      Value j = copy.getInductionVar();
      Value v = memref::LoadOp::create(rewriter, loc, scratch, j);
      memref::StoreOp::create(
          rewriter, loc, castFromF32(rewriter, loc, v, elemType), flatOut,
          arith::AddIOp::create(rewriter, loc, outBase, j).getResult());
    }
    rewriter.setInsertionPointAfter(par);
    rewriter.replaceOp(op, toTensor(rewriter, loc, out, resultType));
    return success();
  }
};

} // namespace

void mlir::qcc::detail::populateDequantToLoopsPatterns(
    TypeConverter &converter, RewritePatternSet &patterns) {
  patterns.add<DequantLowering>(converter, patterns.getContext());
}
