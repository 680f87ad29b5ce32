//===- QMatmulToLoops.cpp - qcc.qmatmul on the micro-GEMM -----------------===//

#include "LoweringUtils.h"

#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"

using namespace mlir;
using namespace mlir::qcc;
using namespace mlir::qcc::detail;

namespace {

//===----------------------------------------------------------------------===//
// qmatmul
//===----------------------------------------------------------------------===//

/// Rows of W decoded per tile, and the tile's extent along K (a multiple of
/// every block length, 256); both tiles are 64K floats (256 KiB, in L2).
/// Forward tiles are 256 x 256: each packed block of activations is then
/// reused over sixteen 16-column (AVX2) or eight 32-column (AVX-512)
/// register panels, which halves the packing per FMA against 128 x 512.
/// Backward tiles are 128 x 512; their rows are the contracted dimension,
/// and each micro-GEMM call reads and writes the whole M x 512
/// accumulator, so fewer, deeper calls (128 rather than 32 rows) keep that
/// traffic below the FMAs. Measured on the dev machines, docs/benchmarks.md.
constexpr int64_t kTileRowsFwd = 256;
constexpr int64_t kTileColsFwd = 256;
constexpr int64_t kTileRowsBwd = 128;
constexpr int64_t kTileColsBwd = 512;

/// The step of a qmatmul's parallel loop over `extent` output columns (fwd:
/// rows of W; bwd: columns of W, in blocks of `unit`), at most `widest`:
/// the fewest iterations that fit, rounded up to a multiple of the threads
/// (4 when unknown, none for one), each as wide as the others up to one
/// unit. 640 columns in tiles of at most 512 were [512, 128] and left one
/// of two threads idle for most of the loop; they are [160] x 4.
int64_t balancedStep(int64_t extent, int64_t widest, int64_t unit,
                     unsigned threads) {
  int64_t units = (extent + unit - 1) / unit;
  int64_t perIter = std::max<int64_t>(1, widest / unit);
  int64_t iters = (units + perIter - 1) / perIter;
  int64_t multiple = threads == 0 ? 4 : threads;
  if (multiple > 1)
    iters = std::min(units, (iters + multiple - 1) / multiple * multiple);
  return (units + iters - 1) / iters * unit;
}

struct QMatmulLowering : public OpConversionPattern<QMatmulOp> {
  QMatmulLowering(TypeConverter &converter, MLIRContext *ctx,
                  const QccToLoopsOptions &options)
      : OpConversionPattern(converter, ctx), options(options) {}
  QccToLoopsOptions options;

  LogicalResult
  matchAndRewrite(QMatmulOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    QTensorType wType = op.getWeight().getType();
    auto lhsType = cast<RankedTensorType>(op.getLhs().getType());
    auto resultType = cast<RankedTensorType>(op.getResult().getType());
    if (!wType.hasStaticShape())
      return rewriter.notifyMatchFailure(op, "weight shape must be static");
    bool fwd = op.getOrientation() == MatmulOrientation::Fwd;
    int64_t wRank = wType.getRank();
    int64_t n = wType.getShape()[wRank - 2], k = wType.getShape()[wRank - 1];
    // A batched weight holds one [N, K] matrix per batch index; their rows
    // are consecutive in the storage, batch after batch.
    int64_t numBatches = 1;
    for (int64_t d : wType.getShape().drop_back(2))
      numBatches *= d;
    int64_t blockElems = wType.getBlockElems();
    int64_t rowBytes = k / blockElems * wType.getBlockBytes();
    int64_t tileCols =
        std::max<int64_t>(blockElems, fwd ? kTileColsFwd : kTileColsBwd);
    tileCols = std::min<int64_t>(tileCols, k);

    // Fold batch dimensions of the activations into M; the micro-GEMM
    // takes f32 activations.
    Value lhs = toF32Buffer(rewriter, loc, op.getLhs());
    auto lhs2d = collapseToMatrix(rewriter, loc, lhs);
    Value out = allocLike(rewriter, loc, resultType, lhs);
    Value out2d = collapseToMatrix(rewriter, loc, out);
    Value bytes = flatten(rewriter, loc, adaptor.getWeight());
    Value mAll = memref::DimOp::create(rewriter, loc, lhs2d, 0);
    Type outElem = resultType.getElementType();

    Value zero =
        arith::ConstantOp::create(rewriter, loc, rewriter.getF32FloatAttr(0));
    Value c0 = cIndex(rewriter, loc, 0), c1 = cIndex(rewriter, loc, 1);
    Value nTotal = cIndex(rewriter, loc, n), kTotal = cIndex(rewriter, loc, k);

    // Batches of a batched weight run one after the other, each over its
    // own rows of the activations (rowBase) and of W (wRowBase); a 2-D
    // weight is one batch over all rows.
    OpBuilder::InsertionGuard guard(rewriter);
    Value m = mAll, rowBase = c0, wRowBase = c0;
    scf::ForOp batchLoop;
    if (numBatches > 1 || wRank > 2) {
      m = memref::DimOp::create(rewriter, loc, lhs, lhsType.getRank() - 2);
      batchLoop = scf::ForOp::create(rewriter, loc, c0,
                                     cIndex(rewriter, loc, numBatches), c1);
      rewriter.setInsertionPointToStart(batchLoop.getBody());
      Value b = batchLoop.getInductionVar();
      rowBase = arith::MulIOp::create(rewriter, loc, b, m);
      wRowBase = arith::MulIOp::create(rewriter, loc, b, nTotal);
    }

    // Activation rows per weight matrix, when static.
    int64_t mStatic = ShapedType::kDynamic;
    if (lhsType.hasStaticShape()) {
      mStatic = 1;
      if (numBatches > 1 || wRank > 2)
        mStatic = lhsType.getDimSize(lhsType.getRank() - 2);
      else
        for (int64_t d : lhsType.getShape().drop_back())
          mStatic *= d;
    }
    if (!ShapedType::isDynamic(mStatic) && useSmallNQMatmul(mStatic, fwd)) {
      if (failed(emitSmallNQMatmul(rewriter, loc, op, wType, fwd, mStatic,
                                   bytes, lhs2d, out2d, rowBase, wRowBase,
                                   options)))
        return rewriter.notifyMatchFailure(op, "no decoder for the format");
      if (batchLoop)
        rewriter.setInsertionPointAfter(batchLoop);
      rewriter.replaceOp(op, toTensor(rewriter, loc, out, resultType));
      return success();
    }

    // The output is split along the dimension the tiles do not contract
    // (N for fwd, K for bwd), so parallel iterations write disjoint columns
    // and the accumulation over the other dimension stays sequential.
    Value parExtent = fwd ? nTotal : kTotal;
    int64_t tileRows = fwd ? kTileRowsFwd : kTileRowsBwd;
    int64_t parStep =
        fwd ? balancedStep(n, tileRows, 1, options.threads)
            : balancedStep(k, tileCols, blockElems, options.threads);
    auto par = scf::ParallelOp::create(
        rewriter, loc, ValueRange{c0}, ValueRange{parExtent},
        ValueRange{cIndex(rewriter, loc, parStep)});
    rewriter.setInsertionPointToStart(par.getBody());
    Value p0 = par.getInductionVars()[0];
    Value tile = memref::AllocaOp::create(
        rewriter, loc,
        MemRefType::get({tileRows * tileCols}, rewriter.getF32Type()));
    Value parCount =
        minIndex(rewriter, loc, parStep,
                 arith::SubIOp::create(rewriter, loc, parExtent, p0));
    // Accumulate in f32: straight into the output's columns when it is f32,
    // else in a scratch buffer converted at the end (freed by the
    // deallocation pipeline).
    bool directAcc = outElem.isF32();
    Value acc = directAcc ? out2d
                          : memref::AllocOp::create(
                                rewriter, loc,
                                MemRefType::get({ShapedType::kDynamic, parStep},
                                                rewriter.getF32Type()),
                                ValueRange{m})
                                .getResult();
    Value accCol0 = directAcc ? p0 : c0;
    Value accRow0 = directAcc ? rowBase : c0;
    auto accIndex = [&](OpBuilder &b, Value i, Value j) -> SmallVector<Value> {
      return {arith::AddIOp::create(b, loc, accRow0, i).getResult(),
              arith::AddIOp::create(b, loc, accCol0, j).getResult()};
    };
    buildLoopNest(
        rewriter, loc, {m, parCount}, [&](OpBuilder &b, ValueRange iv) {
          memref::StoreOp::create(b, loc, zero, acc, accIndex(b, iv[0], iv[1]));
        });

    // Sequential loop over the contracted dimension in tiles.
    Value seqExtent = fwd ? kTotal : nTotal;
    int64_t seqStep = fwd ? tileCols : tileRows;
    auto seq = scf::ForOp::create(rewriter, loc, c0, seqExtent,
                                  cIndex(rewriter, loc, seqStep));
    rewriter.setInsertionPointToStart(seq.getBody());
    Value s0 = seq.getInductionVar();
    Value seqCount =
        minIndex(rewriter, loc, seqStep,
                 arith::SubIOp::create(rewriter, loc, seqExtent, s0));
    // The W tile: rows [r0, r0 + rows), columns [c0w, c0w + cols).
    Value r0 = arith::AddIOp::create(rewriter, loc, wRowBase, fwd ? p0 : s0);
    Value rows = fwd ? parCount : seqCount;
    Value col0 = fwd ? s0 : p0, cols = fwd ? seqCount : parCount;
    FailureOr<func::FuncOp> decoder = getOrCreateTileDecoder(
        rewriter, op, wType, cast<MemRefType>(bytes.getType()),
        cast<MemRefType>(tile.getType()), rowBytes, tileCols);
    if (failed(decoder))
      return rewriter.notifyMatchFailure(op, "no decoder for the format");
    func::CallOp::create(rewriter, loc, *decoder,
                         ValueRange{bytes, r0, rows, col0, cols, tile});

    // acc[:, j] += lhs[:, s0 + t] · W(j, t): fwd multiplies by the tile
    // transposed (tile rows are output columns), bwd by the tile itself
    // (tile rows are the contracted dimension).
    Value lhsLd =
        cIndex(rewriter, loc, cast<MemRefType>(lhs2d.getType()).getDimSize(1));
    Value accLd = cIndex(
        rewriter, loc,
        directAcc ? cast<MemRefType>(out2d.getType()).getDimSize(1) : parStep);
    Value tileLd = cIndex(rewriter, loc, tileCols);
    callGemm(rewriter, loc, op, options, m, parCount, seqCount,
             elementPointer(rewriter, loc, lhs2d, rowBase, s0, lhsLd), lhsLd,
             /*aTransposed=*/false,
             elementPointer(rewriter, loc, tile, c0, c0, tileLd), tileLd,
             /*bTransposed=*/fwd,
             elementPointer(rewriter, loc, acc, accRow0, accCol0, accLd),
             accLd);
    rewriter.setInsertionPointAfter(seq);
    if (!directAcc) {
      // out[i, p0 + j] = acc[i, j]
      buildLoopNest(
          rewriter, loc, {m, parCount}, [&](OpBuilder &b, ValueRange iv) {
            Value v = memref::LoadOp::create(b, loc, acc, iv);
            memref::StoreOp::create(
                b, loc, castFromF32(b, loc, v, outElem), out2d,
                ValueRange{
                    arith::AddIOp::create(b, loc, rowBase, iv[0]).getResult(),
                    arith::AddIOp::create(b, loc, p0, iv[1]).getResult()});
          });
    }
    rewriter.setInsertionPointAfter(batchLoop ? batchLoop.getOperation()
                                              : par.getOperation());
    rewriter.replaceOp(op, toTensor(rewriter, loc, out, resultType));
    return success();
  }

private:
  static Value minIndex(OpBuilder &b, Location loc, int64_t a, Value v) {
    return arith::MinSIOp::create(b, loc, cIndex(b, loc, a), v);
  }

  static void buildLoopNest(OpBuilder &b, Location loc, ArrayRef<Value> ubs,
                            function_ref<void(OpBuilder &, ValueRange)> body) {
    SmallVector<Value> lbs(ubs.size(), cIndex(b, loc, 0));
    SmallVector<Value> steps(ubs.size(), cIndex(b, loc, 1));
    scf::buildLoopNest(b, loc, lbs, ubs, steps,
                       [&](OpBuilder &nested, Location, ValueRange ivs) {
                         body(nested, ivs);
                       });
  }

  /// Decodes rows [r0, r0 + rows) x columns [col0, col0 + cols) of the
  /// weight (col0, cols multiples of the block length) into `tile`, row r at
  /// offset (r - r0) * ld.
  static LogicalResult decodeTile(OpBuilder &b, Location loc, QTensorType type,
                                  Value bytes, int64_t rowBytes, Value r0,
                                  Value rows, Value col0, Value cols,
                                  Value tile, int64_t ld) {
    int64_t blockElems = type.getBlockElems();
    auto rowLoop =
        scf::ForOp::create(b, loc, cIndex(b, loc, 0), rows, cIndex(b, loc, 1));
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(rowLoop.getBody());
    Value r = rowLoop.getInductionVar();
    Value blocksPerRow = cIndex(b, loc, rowBytes / type.getBlockBytes());
    Value firstBlock = arith::AddIOp::create(
        b, loc,
        arith::MulIOp::create(b, loc, arith::AddIOp::create(b, loc, r0, r),
                              blocksPerRow),
        arith::DivUIOp::create(b, loc, col0, cIndex(b, loc, blockElems)));
    Value numBlocks =
        arith::DivUIOp::create(b, loc, cols, cIndex(b, loc, blockElems));
    Value outBase = arith::MulIOp::create(b, loc, r, cIndex(b, loc, ld));
    return decodeBlocks(b, loc, type, bytes, firstBlock, numBlocks, tile,
                        outBase);
  }

  /// The tile decoder for this format and these buffer shapes, a private
  /// function of the module created on first use: every qmatmul on weights
  /// of the same format and storage size (the same projection in every
  /// layer) calls one copy, so the emitted block decoder is compiled once
  /// instead of once per matmul.
  static FailureOr<func::FuncOp>
  getOrCreateTileDecoder(OpBuilder &b, Operation *from, QTensorType type,
                         MemRefType bytesType, MemRefType tileType,
                         int64_t rowBytes, int64_t ld) {
    auto module = from->getParentOfType<ModuleOp>();
    std::string name =
        ("__qcc_decode_tile_" + stringifyQuantFormat(type.getFormat()) + "_" +
         Twine(bytesType.getNumElements()) + "_" + Twine(rowBytes) + "_" +
         Twine(tileType.getNumElements()) + "_" + Twine(ld))
            .str();
    if (auto fn = module.lookupSymbol<func::FuncOp>(name))
      return fn;
    Location loc = from->getLoc();
    Type index = b.getIndexType();
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(module.getBody());
    auto fn = func::FuncOp::create(
        b, loc, name,
        b.getFunctionType({bytesType, index, index, index, index, tileType},
                          {}));
    fn.setPrivate();
    Block *body = fn.addEntryBlock();
    b.setInsertionPointToStart(body);
    auto args = body->getArguments();
    if (failed(decodeTile(b, loc, type, args[0], rowBytes, args[1], args[2],
                          args[3], args[4], args[5], ld))) {
      fn.erase();
      return failure();
    }
    func::ReturnOp::create(b, loc);
    return fn;
  }
};

} // namespace

void mlir::qcc::detail::populateQMatmulToLoopsPatterns(
    TypeConverter &converter, RewritePatternSet &patterns,
    const QccToLoopsOptions &options) {
  patterns.add<QMatmulLowering>(converter, patterns.getContext(), options);
}
