//===- ContractionToGemm.cpp - f32 contractions on the micro-GEMM ---------===//
//
// A linalg contraction of static f32 tensors whose output ends in the two
// matrix dimensions (C[b..., m, n] += Σ_k op(A)[b'..., m, k] ·
// op(B)[b''..., k, n], each operand's leading dimensions some of the
// output's batch dimensions, each operand's matrix possibly transposed)
// becomes calls of the runtime's micro-GEMM, the kernel qmatmul's tiles
// feed: the weight gradients of float weights (2-D), and attention's
// scores and weighted values (batched over heads, keys and values shared
// by the query heads of a group). One scf.parallel runs over the batches
// and, when there are few, over blocks of rows of C; each iteration is one
// call on contiguous row-major matrices.
//
//===----------------------------------------------------------------------===//

#include "LoweringUtils.h"

#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/IR/LinalgInterfaces.h"

using namespace mlir;
using namespace mlir::qcc;
using namespace mlir::qcc::detail;

namespace {

/// Parallel iterations the loop over batches and row blocks aims for, and
/// the fewest rows of C a block gets (each block packs all of op(B) again).
constexpr int64_t kTargetIterations = 4;
constexpr int64_t kMinBlockRows = 96;

/// How a contraction maps onto GEMM calls: loop dimensions m, n, k, the
/// output's batch dimensions (in its order), and whether each operand's
/// matrix is stored transposed ([k, m] for A, [n, k] for B).
struct GemmForm {
  unsigned m, n, k;
  SmallVector<unsigned> batch;
  bool aTransposed, bTransposed;
};

/// The loop dimensions `map` selects, or nothing unless every result is a
/// distinct dimension.
std::optional<SmallVector<unsigned>> dimsOf(AffineMap map) {
  SmallVector<unsigned> dims;
  for (AffineExpr e : map.getResults()) {
    auto d = dyn_cast<AffineDimExpr>(e);
    if (!d || llvm::is_contained(dims, d.getPosition()))
      return std::nullopt;
    dims.push_back(d.getPosition());
  }
  return dims;
}

/// Whether an operand's dimensions are batch dimensions followed by the
/// matrix (r, c) or, transposed, (c, r); sets `transposed`.
bool matchOperand(ArrayRef<unsigned> dims, ArrayRef<unsigned> batch,
                  unsigned r, unsigned c, bool &transposed) {
  if (dims.size() < 2)
    return false;
  for (unsigned d : dims.drop_back(2))
    if (!llvm::is_contained(batch, d))
      return false;
  unsigned x = dims[dims.size() - 2], y = dims.back();
  if (x == r && y == c)
    transposed = false;
  else if (x == c && y == r)
    transposed = true;
  else
    return false;
  return true;
}

bool isStaticF32(Value v) {
  auto t = dyn_cast<RankedTensorType>(v.getType());
  return t && t.getRank() >= 2 && t.getElementType().isF32() &&
         t.hasStaticShape();
}

std::optional<GemmForm> matchGemm(linalg::LinalgOp op) {
  if (!op.hasPureTensorSemantics() || op.getNumDpsInputs() != 2 ||
      op.getNumDpsInits() != 1 || op.getNumReductionLoops() != 1 ||
      !linalg::isaContractionOpInterface(op))
    return std::nullopt;
  Value a = op.getDpsInputOperand(0)->get(), b = op.getDpsInputOperand(1)->get(),
        c = op.getDpsInitOperand(0)->get();
  if (!isStaticF32(a) || !isStaticF32(b) || !isStaticF32(c))
    return std::nullopt;
  SmallVector<AffineMap> maps = op.getIndexingMapsArray();
  auto aDims = dimsOf(maps[0]), bDims = dimsOf(maps[1]),
       cDims = dimsOf(maps[2]);
  // Every loop but the reduction indexes the output.
  if (!aDims || !bDims || !cDims || cDims->size() < 2 ||
      op.getNumLoops() != cDims->size() + 1)
    return std::nullopt;
  GemmForm form;
  form.m = (*cDims)[cDims->size() - 2];
  form.n = cDims->back();
  form.batch.assign(cDims->begin(), cDims->end() - 2);
  form.k = op.getNumLoops() * (op.getNumLoops() - 1) / 2;
  for (unsigned d : *cDims)
    form.k -= d; // the one loop the output lacks
  if (!matchOperand(*aDims, form.batch, form.m, form.k, form.aTransposed) ||
      !matchOperand(*bDims, form.batch, form.k, form.n, form.bTransposed))
    return std::nullopt;
  return form;
}

/// Rows of the row-major [rows, shape.back()] view of a tensor of `shape`
/// between consecutive indices of each leading dimension.
SmallVector<int64_t> rowStrides(ArrayRef<int64_t> shape) {
  SmallVector<int64_t> strides(shape.size() - 1, 1);
  for (int64_t i = int64_t(shape.size()) - 3; i >= 0; --i)
    strides[i] = strides[i + 1] * shape[i + 1];
  return strides;
}

/// The first row, in its 2-D view, of the batch `idx` (indices of the
/// output's batch dimensions) of an operand with dimensions `dims`.
Value batchRow(OpBuilder &b, Location loc, ArrayRef<unsigned> dims,
               ArrayRef<int64_t> shape, const GemmForm &form,
               ArrayRef<Value> idx) {
  SmallVector<int64_t> strides = rowStrides(shape);
  Value row = cIndex(b, loc, 0);
  for (size_t i = 0; i + 2 < dims.size(); ++i) {
    Value at = idx[llvm::find(form.batch, dims[i]) - form.batch.begin()];
    row = arith::AddIOp::create(
        b, loc, row,
        arith::MulIOp::create(b, loc, at, cIndex(b, loc, strides[i])));
  }
  return row;
}

struct ContractionToGemmCall
    : public OpInterfaceConversionPattern<linalg::LinalgOp> {
  ContractionToGemmCall(TypeConverter &converter, MLIRContext *ctx,
                        const QccToLoopsOptions &options)
      : OpInterfaceConversionPattern(converter, ctx), options(options) {}
  QccToLoopsOptions options;

  LogicalResult
  matchAndRewrite(linalg::LinalgOp op, ArrayRef<Value> operands,
                  ConversionPatternRewriter &rewriter) const override {
    std::optional<GemmForm> form = matchGemm(op);
    if (!form)
      return failure();
    Location loc = op.getLoc();
    Value a = op.getDpsInputOperand(0)->get(),
          b = op.getDpsInputOperand(1)->get();
    Value init = op.getDpsInitOperand(0)->get();
    auto aType = cast<RankedTensorType>(a.getType());
    auto bType = cast<RankedTensorType>(b.getType());
    auto cType = cast<RankedTensorType>(init.getType());
    SmallVector<int64_t> extents = op.getStaticLoopRanges();
    int64_t mSize = extents[form->m], nSize = extents[form->n],
            kSize = extents[form->k];
    SmallVector<AffineMap> maps = op.getIndexingMapsArray();
    SmallVector<unsigned> aDims = *dimsOf(maps[0]), bDims = *dimsOf(maps[1]),
                          cDims = *dimsOf(maps[2]);

    // C starts as the init (a zero fill becomes a loop of stores; anything
    // else is copied), then accumulates the products.
    Value c = memref::AllocOp::create(
        rewriter, loc,
        MemRefType::get(cType.getShape(), rewriter.getF32Type()));
    memref::CopyOp::create(rewriter, loc, toBuffer(rewriter, loc, init), c);
    Value aBuf = toBuffer(rewriter, loc, a), bBuf = toBuffer(rewriter, loc, b);
    Value lda = cIndex(rewriter, loc, aType.getShape().back());
    Value ldb = cIndex(rewriter, loc, bType.getShape().back());
    Value ldc = cIndex(rewriter, loc, nSize);

    // Iterations: every batch, times blocks of rows when batches are few.
    int64_t batches = 1;
    for (unsigned d : form->batch)
      batches *= extents[d];
    int64_t blocks = std::clamp<int64_t>(
        (kTargetIterations + batches - 1) / batches, 1,
        std::max<int64_t>(1, mSize / kMinBlockRows));
    int64_t blockRows = (mSize + blocks - 1) / blocks;
    blocks = (mSize + blockRows - 1) / blockRows;
    Value c0 = cIndex(rewriter, loc, 0), c1 = cIndex(rewriter, loc, 1);
    auto par = scf::ParallelOp::create(
        rewriter, loc, ValueRange{c0, c0},
        ValueRange{cIndex(rewriter, loc, batches),
                   cIndex(rewriter, loc, blocks)},
        ValueRange{c1, c1});
    OpBuilder::InsertionGuard guard(rewriter);
    rewriter.setInsertionPointToStart(par.getBody());
    // The batch indices, last dimension fastest.
    Value flat = par.getInductionVars()[0];
    SmallVector<Value> idx(form->batch.size());
    for (int64_t i = int64_t(form->batch.size()) - 1; i >= 0; --i) {
      Value extent = cIndex(rewriter, loc, extents[form->batch[i]]);
      idx[i] = arith::RemUIOp::create(rewriter, loc, flat, extent);
      flat = arith::DivUIOp::create(rewriter, loc, flat, extent);
    }
    Value i0 = arith::MulIOp::create(rewriter, loc, par.getInductionVars()[1],
                                     cIndex(rewriter, loc, blockRows));
    Value rows = arith::MinUIOp::create(
        rewriter, loc, cIndex(rewriter, loc, blockRows),
        arith::SubIOp::create(rewriter, loc, cIndex(rewriter, loc, mSize), i0));
    Value aRow = batchRow(rewriter, loc, aDims, aType.getShape(), *form, idx);
    Value bRow = batchRow(rewriter, loc, bDims, bType.getShape(), *form, idx);
    Value cRow = batchRow(rewriter, loc, cDims, cType.getShape(), *form, idx);
    // Rows [i0, i0 + rows) of C: rows of A, or columns of A transposed.
    Value aPtr =
        form->aTransposed
            ? elementPointer(rewriter, loc, aBuf, aRow, i0, lda)
            : elementPointer(rewriter, loc, aBuf,
                             arith::AddIOp::create(rewriter, loc, aRow, i0),
                             c0, lda);
    Value cPtr = elementPointer(
        rewriter, loc, c, arith::AddIOp::create(rewriter, loc, cRow, i0), c0,
        ldc);
    callGemm(rewriter, loc, op, options, rows, cIndex(rewriter, loc, nSize),
             cIndex(rewriter, loc, kSize), aPtr, lda, form->aTransposed,
             elementPointer(rewriter, loc, bBuf, bRow, c0, ldb), ldb,
             form->bTransposed, cPtr, ldc);
    rewriter.setInsertionPointAfter(par);
    rewriter.replaceOp(op, toTensor(rewriter, loc, c, cType));
    return success();
  }
};

} // namespace

void mlir::qcc::detail::populateContractionToGemmPatterns(
    TypeConverter &converter, RewritePatternSet &patterns,
    const QccToLoopsOptions &options) {
  patterns.add<ContractionToGemmCall>(converter, patterns.getContext(),
                                      options);
}

bool mlir::qcc::detail::isGemmCandidate(Operation *op) {
  auto linalgOp = dyn_cast<linalg::LinalgOp>(op);
  return linalgOp && matchGemm(linalgOp).has_value();
}
