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
    FailureOr<GatherBuffers> buffers = prepareGather(
        rewriter, loc, op, adaptor.getTable(), adaptor.getIds());
    if (failed(buffers))
      return rewriter.notifyMatchFailure(op, "row length not whole blocks");
    Value bytes = buffers->bytes, ids = buffers->ids, numIds = buffers->numIds,
          numRows = buffers->numRows, out = buffers->out,
          flatOut = buffers->flatOut;
    int64_t blocksPerRow = buffers->blocksPerRow;

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

FailureOr<GatherBuffers>
mlir::qcc::detail::prepareGather(OpBuilder &b, Location loc, GatherOp op,
                                 Value table, Value idsTensor) {
  QTensorType qtype = op.getTable().getType();
  auto resultType = cast<RankedTensorType>(op.getResult().getType());
  int64_t cols = qtype.getShape()[1];
  if (ShapedType::isDynamic(cols) || cols % qtype.getBlockElems())
    return failure();
  GatherBuffers r;
  r.blocksPerRow = cols / qtype.getBlockElems();
  r.bytes = flatten(b, loc, table);
  r.ids = toBuffer(b, loc, idsTensor);
  r.numIds = memref::DimOp::create(b, loc, r.ids, 0);
  r.numRows = memref::DimOp::create(b, loc, table, 0);
  auto outType = MemRefType::get(resultType.getShape(), b.getF32Type());
  r.out = memref::AllocOp::create(
      b, loc, outType,
      resultType.isDynamicDim(0) ? ValueRange{r.numIds} : ValueRange{});
  r.flatOut = flatten(b, loc, r.out);
  return r;
}

void mlir::qcc::detail::populateGatherToLoopsPatterns(
    TypeConverter &converter, RewritePatternSet &patterns) {
  patterns.add<GatherLowering>(converter, patterns.getContext());
}
