//===- GatherToLoops.cpp - qcc.gather as a parallel loop over row blocks -===//

#include "LoweringUtils.h"

using namespace mlir;
using namespace mlir::qcc;
using namespace mlir::qcc::detail;

namespace {

//===----------------------------------------------------------------------===//
// gather
//===----------------------------------------------------------------------===//

/// One scf.parallel iteration per (id, block of its row): the block of row
/// ids[i] is decoded straight into row i of the result; an id outside the
/// table gives a row of zeros.
struct GatherLowering : public OpConversionPattern<GatherOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(GatherOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    QTensorType qtype = op.getTable().getType();
    auto resultType = cast<RankedTensorType>(op.getResult().getType());
    int64_t blockElems = qtype.getBlockElems();
    int64_t cols = qtype.getShape()[1];
    if (ShapedType::isDynamic(cols) || cols % blockElems)
      return rewriter.notifyMatchFailure(op, "row length not whole blocks");
    int64_t blocksPerRow = cols / blockElems;

    Value table = adaptor.getTable();
    Value bytes = flatten(rewriter, loc, table);
    Value ids = toBuffer(rewriter, loc, adaptor.getIds());
    Value numIds = memref::DimOp::create(rewriter, loc, ids, 0);
    Value numRows = memref::DimOp::create(rewriter, loc, table, 0);
    auto outType = MemRefType::get(resultType.getShape(), rewriter.getF32Type());
    Value out = memref::AllocOp::create(
        rewriter, loc, outType,
        resultType.isDynamicDim(0) ? ValueRange{numIds} : ValueRange{});
    Value flatOut = flatten(rewriter, loc, out);

    Value c0 = cIndex(rewriter, loc, 0), c1 = cIndex(rewriter, loc, 1);
    Value cBlocks = cIndex(rewriter, loc, blocksPerRow);
    Value cBlockElems = cIndex(rewriter, loc, blockElems);
    auto par = scf::ParallelOp::create(rewriter, loc, ValueRange{c0, c0},
                                       ValueRange{numIds, cBlocks},
                                       ValueRange{c1, c1});
    OpBuilder::InsertionGuard guard(rewriter);
    rewriter.setInsertionPointToStart(par.getBody());
    Value i = par.getInductionVars()[0], blk = par.getInductionVars()[1];
    Value id = memref::LoadOp::create(rewriter, loc, ids, i);
    Value row = arith::IndexCastOp::create(rewriter, loc,
                                           rewriter.getIndexType(), id);
    // Negative ids wrap to large unsigned values: one unsigned compare.
    Value inRange = arith::CmpIOp::create(rewriter, loc,
                                          arith::CmpIPredicate::ult, row,
                                          numRows);
    Value outBase = arith::MulIOp::create(
        rewriter, loc,
        arith::AddIOp::create(rewriter, loc,
                              arith::MulIOp::create(rewriter, loc, i, cBlocks),
                              blk),
        cBlockElems);
    auto branch = scf::IfOp::create(rewriter, loc, inRange,
                                    /*withElseRegion=*/true);
    rewriter.setInsertionPointToStart(&branch.getThenRegion().front());
    Value block = arith::AddIOp::create(
        rewriter, loc, arith::MulIOp::create(rewriter, loc, row, cBlocks), blk);
    if (failed(decodeBlocks(rewriter, loc, qtype, bytes, block, c1, flatOut,
                            outBase)))
      return rewriter.notifyMatchFailure(op, "no decoder for the format");
    rewriter.setInsertionPointToStart(&branch.getElseRegion().front());
    auto zero = scf::ForOp::create(rewriter, loc, c0, cBlockElems, c1);
    rewriter.setInsertionPointToStart(zero.getBody());
    memref::StoreOp::create(
        rewriter, loc,
        arith::ConstantOp::create(rewriter, loc, rewriter.getF32FloatAttr(0.0f)),
        flatOut,
        ValueRange{arith::AddIOp::create(rewriter, loc, outBase,
                                         zero.getInductionVar())});
    rewriter.setInsertionPointAfter(par);
    rewriter.replaceOp(op, toTensor(rewriter, loc, out, resultType));
    return success();
  }
};

} // namespace

void mlir::qcc::detail::populateGatherToLoopsPatterns(
    TypeConverter &converter, RewritePatternSet &patterns) {
  patterns.add<GatherLowering>(converter, patterns.getContext());
}
