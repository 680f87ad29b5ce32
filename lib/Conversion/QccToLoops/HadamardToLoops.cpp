//===- HadamardToLoops.cpp - qcc.hadamard as a fast Walsh-Hadamard transform
//===//

#include "LoweringUtils.h"

#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "qcc/Runtime/SplitMix64.h"

using namespace mlir;
using namespace mlir::qcc;
using namespace mlir::qcc::detail;

namespace {

//===----------------------------------------------------------------------===//
// hadamard
//===----------------------------------------------------------------------===//

struct HadamardLowering : public OpConversionPattern<HadamardOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(HadamardOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    auto type = cast<RankedTensorType>(op.getInput().getType());
    int64_t n = static_cast<int64_t>(op.getBlock());
    std::optional<uint64_t> seed = op.getSeed();
    bool inverse = op.getInverse();
    Value inBuffer = toBuffer(rewriter, loc, op.getInput());
    Value in = flatten(rewriter, loc, inBuffer);
    Value out = allocLike(rewriter, loc, type, inBuffer);
    Value flatOut = flatten(rewriter, loc, out);
    Value numBlocks =
        arith::DivUIOp::create(rewriter, loc, numElements(rewriter, loc, out),
                               cIndex(rewriter, loc, n));

    // The sign vector as a constant table of ±1.0.
    // The signs are constants of the op (docs/spec.md §3.6).
    SmallVector<float> signs(n, 1.0f);
    if (seed)
      for (int64_t j = 0; j < n; ++j)
        signs[j] = ::qcc::splitmixSign(*seed, static_cast<uint64_t>(j));
    Value signTable = signsGlobal(rewriter, loc, op, signs, seed.value_or(0));
    Value scale = arith::ConstantOp::create(
        rewriter, loc, rewriter.getF32FloatAttr(1.0f / std::sqrt(float(n))));

    auto par = scf::ParallelOp::create(
        rewriter, loc, ValueRange{cIndex(rewriter, loc, 0)},
        ValueRange{numBlocks}, ValueRange{cIndex(rewriter, loc, 1)});
    OpBuilder::InsertionGuard guard(rewriter);
    rewriter.setInsertionPointToStart(par.getBody());
    Value base = arith::MulIOp::create(rewriter, loc, par.getInductionVars()[0],
                                       cIndex(rewriter, loc, n));
    Value buf = memref::AllocaOp::create(
        rewriter, loc, MemRefType::get({n}, rewriter.getF32Type()));
    // Load (with the signs first for the forward transform).
    forRange(rewriter, loc, n, [&](OpBuilder &b, Value j) {
      Value v = castToF32(
          b, loc,
          memref::LoadOp::create(
              b, loc, in, arith::AddIOp::create(b, loc, base, j).getResult()));
      if (!inverse)
        v = arith::MulFOp::create(b, loc, v,
                                  memref::LoadOp::create(b, loc, signTable, j));
      memref::StoreOp::create(b, loc, v, buf, j);
    });
    // In-place fast Walsh-Hadamard transform: log2(n) butterfly stages.
    for (int64_t h = 1; h < n; h *= 2) {
      forRange(rewriter, loc, n / 2, [&](OpBuilder &b, Value t) {
        // Pair index t -> (i, i + h) with i = (t / h) * 2h + t % h.
        Value hv = cIndex(b, loc, h);
        Value i = arith::AddIOp::create(
            b, loc,
            arith::MulIOp::create(b, loc, arith::DivUIOp::create(b, loc, t, hv),
                                  cIndex(b, loc, 2 * h)),
            arith::RemUIOp::create(b, loc, t, hv));
        Value i2 = arith::AddIOp::create(b, loc, i, hv);
        Value a = memref::LoadOp::create(b, loc, buf, i);
        Value c = memref::LoadOp::create(b, loc, buf, i2);
        memref::StoreOp::create(b, loc, arith::AddFOp::create(b, loc, a, c),
                                buf, i);
        memref::StoreOp::create(b, loc, arith::SubFOp::create(b, loc, a, c),
                                buf, i2);
      });
    }
    // Scale (and apply the signs last for the inverse), then store.
    Type elemType = type.getElementType();
    forRange(rewriter, loc, n, [&](OpBuilder &b, Value j) {
      Value v = arith::MulFOp::create(
          b, loc, memref::LoadOp::create(b, loc, buf, j), scale);
      if (inverse)
        v = arith::MulFOp::create(b, loc, v,
                                  memref::LoadOp::create(b, loc, signTable, j));
      memref::StoreOp::create(
          b, loc, castFromF32(b, loc, v, elemType), flatOut,
          arith::AddIOp::create(b, loc, base, j).getResult());
    });
    rewriter.setInsertionPointAfter(par);
    rewriter.replaceOp(op, toTensor(rewriter, loc, out, type));
    return success();
  }

private:
  static void forRange(OpBuilder &b, Location loc, int64_t n,
                       function_ref<void(OpBuilder &, Value)> body) {
    auto loop = scf::ForOp::create(b, loc, cIndex(b, loc, 0), cIndex(b, loc, n),
                                   cIndex(b, loc, 1));
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(loop.getBody());
    body(b, loop.getInductionVar());
  }

  static Value signsGlobal(OpBuilder &b, Location loc, Operation *op,
                           ArrayRef<float> signs, uint64_t seed) {
    Operation *symbolTable = SymbolTable::getNearestSymbolTable(
        op->getParentWithTrait<OpTrait::SymbolTable>());
    std::string name = "__qcc_hadamard_signs_" + std::to_string(signs.size()) +
                       "_" + std::to_string(seed);
    auto type =
        MemRefType::get({static_cast<int64_t>(signs.size())}, b.getF32Type());
    if (!SymbolTable::lookupSymbolIn(symbolTable, name)) {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(&symbolTable->getRegion(0).front());
      auto tensorType = RankedTensorType::get(type.getShape(), b.getF32Type());
      memref::GlobalOp::create(b, loc, name, b.getStringAttr("private"), type,
                               DenseElementsAttr::get(tensorType, signs),
                               /*constant=*/true, IntegerAttr());
    }
    return memref::GetGlobalOp::create(b, loc, type, name);
  }
};

//===----------------------------------------------------------------------===//
} // namespace

void mlir::qcc::detail::populateHadamardToLoopsPatterns(
    TypeConverter &converter, RewritePatternSet &patterns) {
  patterns.add<HadamardLowering>(converter, patterns.getContext());
}
