//===- KernelFormLowerings.cpp - dequant and qmatmul as GPU-shaped loops --===//
//
// With `kernel-form`, qcc-lower-to-loops writes qcc.dequant and qcc.qmatmul
// in the kernel form of qcc/Conversion/KernelForm.h: grids of thread blocks
// whose threads decode blocks of W into a block-shared buffer (GPU shared
// memory) and then multiply from it. The decode is the same per-format
// emitter (BlockDecode.h) the CPU path uses. The CPU pipeline runs this form
// as loops (so the GPU kernels are tested on every machine); the CUDA
// pipeline maps it to gpu.launch.
//
//===----------------------------------------------------------------------===//

#include "LoweringUtils.h"

#include "qcc/Conversion/KernelForm.h"
#include "qcc/Conversion/QccToLoops/BlockDecode.h"

#include "mlir/Dialect/Bufferization/IR/Bufferization.h"

using namespace mlir;
using namespace mlir::qcc;
using namespace mlir::qcc::detail;

namespace {

/// Threads per block of every kernel-form grid here.
constexpr int64_t kThreads = 256;

/// Emission helpers for the kernel form.
struct KernelBuilder {
  OpBuilder &b;
  Location loc;

  Value idx(int64_t v) { return cIndex(b, loc, v); }
  Value add(Value a, Value c) { return arith::AddIOp::create(b, loc, a, c); }
  Value mul(Value a, Value c) { return arith::MulIOp::create(b, loc, a, c); }
  Value mul(Value a, int64_t c) { return mul(a, idx(c)); }
  Value sub(Value a, Value c) { return arith::SubIOp::create(b, loc, a, c); }
  Value div(Value a, int64_t c) {
    return arith::DivUIOp::create(b, loc, a, idx(c));
  }
  Value rem(Value a, int64_t c) {
    return arith::RemUIOp::create(b, loc, a, idx(c));
  }
  Value ceilDiv(Value a, int64_t c) {
    return arith::CeilDivUIOp::create(b, loc, a, idx(c));
  }
  Value min(Value a, Value c) { return arith::MinUIOp::create(b, loc, a, c); }
  Value ult(Value a, Value c) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, a, c);
  }
  Value both(Value a, Value c) { return arith::AndIOp::create(b, loc, a, c); }

  /// A grid over `extents` blocks; the builder is left at the start of its
  /// body. Returns the block indices.
  SmallVector<Value> grid(ArrayRef<Value> extents) {
    SmallVector<Value> zeros(extents.size(), idx(0)),
        ones(extents.size(), idx(1));
    auto par = scf::ParallelOp::create(b, loc, zeros, extents, ones);
    par->setAttr(kKernelThreadsAttr, b.getI64IntegerAttr(kThreads));
    b.setInsertionPointToStart(par.getBody());
    return SmallVector<Value>(par.getInductionVars());
  }

  /// A phase of `count` iterations; `body` builds one at the insertion
  /// point it is given. The builder continues after the phase.
  void phase(Value count, function_ref<void(Value)> body) {
    auto par = scf::ParallelOp::create(b, loc, ValueRange{idx(0)},
                                       ValueRange{count}, ValueRange{idx(1)});
    par->setAttr(kThreadPhaseAttr, b.getI64IntegerAttr(kThreads));
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(par.getBody());
    body(par.getInductionVars()[0]);
  }
  void phase(int64_t count, function_ref<void(Value)> body) {
    phase(idx(count), body);
  }

  /// if (cond) body(); the builder continues after the if.
  void when(Value cond, function_ref<void()> body) {
    auto ifOp = scf::IfOp::create(b, loc, cond, /*withElseRegion=*/false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(&ifOp.getThenRegion().front());
    body();
  }

  Value alloca(int64_t elems) {
    return memref::AllocaOp::create(
        b, loc, MemRefType::get({elems}, b.getF32Type()));
  }
};

/// memref<b... x M x C> -> memref<(b...·M) x C>.
Value collapseToMatrix(OpBuilder &b, Location loc, Value memref) {
  auto type = cast<MemRefType>(memref.getType());
  if (type.getRank() == 2)
    return memref;
  ReassociationIndices outer;
  for (int64_t i = 0; i + 1 < type.getRank(); ++i)
    outer.push_back(i);
  ReassociationIndices inner{type.getRank() - 1};
  return memref::CollapseShapeOp::create(
      b, loc, memref, ArrayRef<ReassociationIndices>{outer, inner});
}

//===----------------------------------------------------------------------===//
// dequant: one block per thread
//===----------------------------------------------------------------------===//

struct DequantKernel : public OpConversionPattern<DequantOp> {
  DequantKernel(TypeConverter &converter, MLIRContext *ctx)
      : OpConversionPattern(converter, ctx, /*benefit=*/2) {}

  LogicalResult
  matchAndRewrite(DequantOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    QTensorType qtype = op.getInput().getType();
    auto resultType = cast<RankedTensorType>(op.getResult().getType());
    Type elemType = resultType.getElementType();
    int64_t blockElems = qtype.getBlockElems();
    int64_t blockBytes = qtype.getBlockBytes();
    KernelBuilder k{rewriter, loc};

    Value bytes = flatten(rewriter, loc, adaptor.getInput());
    Value out = allocLike(rewriter, loc, resultType, adaptor.getInput());
    Value flatOut = flatten(rewriter, loc, out);
    Value numBlocks = k.div(numElements(rewriter, loc, out), blockElems);

    LogicalResult decoded = success();
    {
      OpBuilder::InsertionGuard guard(rewriter);
      Value g = k.grid({k.ceilDiv(numBlocks, kThreads)})[0];
      Value first = k.mul(g, kThreads);
      k.phase(kThreads, [&](Value t) {
        Value block = k.add(first, t);
        k.when(k.ult(block, numBlocks), [&] {
          Value byteOffset = k.mul(block, blockBytes);
          Value outBase = k.mul(block, blockElems);
          if (elemType.isF32()) {
            decoded = emitBlockDecode(rewriter, loc, qtype.getFormat(),
                                      {bytes, byteOffset, flatOut, outBase});
            return;
          }
          // Narrower results go through a private block of f32.
          Value scratch = k.alloca(blockElems);
          decoded = emitBlockDecode(rewriter, loc, qtype.getFormat(),
                                    {bytes, byteOffset, scratch, k.idx(0)});
          auto copy = scf::ForOp::create(rewriter, loc, k.idx(0),
                                         k.idx(blockElems), k.idx(1));
          OpBuilder::InsertionGuard inner(rewriter);
          rewriter.setInsertionPointToStart(copy.getBody());
          Value j = copy.getInductionVar();
          Value v = memref::LoadOp::create(rewriter, loc, scratch, j);
          memref::StoreOp::create(rewriter, loc,
                                  castFromF32(rewriter, loc, v, elemType),
                                  flatOut, k.add(outBase, j));
        });
      });
    }
    if (failed(decoded))
      return rewriter.notifyMatchFailure(op, "no decoder for the format");
    rewriter.replaceOp(op, toTensor(rewriter, loc, out, resultType));
    return success();
  }
};

//===----------------------------------------------------------------------===//
// qmatmul: decode a tile of W into the block's buffer, multiply from it
//===----------------------------------------------------------------------===//

/// out[i, o] = sum_r lhs[i, r] * V(r, o) with V(r, o) = W[o, r] (fwd) or
/// W[r, o] (bwd). A block computes a TN x TO tile of out. Per step of RT
/// along r its threads first decode the W blocks covering the step (one
/// block per phase iteration) into `ws`, then each output of the tile adds
/// its RT products to its accumulator in `acc` (block-shared: it persists
/// across phases).
struct QMatmulKernel : public OpConversionPattern<QMatmulOp> {
  QMatmulKernel(TypeConverter &converter, MLIRContext *ctx)
      : OpConversionPattern(converter, ctx, /*benefit=*/2) {}

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
    int64_t n = wType.getShape()[wRank - 2], kDim = wType.getShape()[wRank - 1];
    int64_t numBatches = 1;
    for (int64_t d : wType.getShape().drop_back(2))
      numBatches *= d;
    bool batched = numBatches > 1 || wRank > 2;
    int64_t be = wType.getBlockElems(), bb = wType.getBlockBytes();
    int64_t rowBytes = kDim / be * bb;
    KernelBuilder k{rewriter, loc};

    // Tile sizes (f32 elements). Shared memory per block stays under the
    // 48 KiB every CUDA device grants statically: forward, ws is TO rows of
    // RT (+1 against bank conflicts) = 32 x 257 and acc 32 x 32; backward,
    // ws is RT rows of TO (TO covers whole blocks) and acc TN x TO with
    // TN·TO = 2048.
    int64_t tileOut = fwd ? 32 : std::max<int64_t>(be, 64);
    int64_t stepR = fwd ? 256 : 32; // multiple of every block length
    int64_t tileN = fwd ? 32 : std::max<int64_t>(1, 2048 / tileOut);
    int64_t wsStride = fwd ? stepR + 1 : tileOut;
    int64_t wsElems = fwd ? tileOut * wsStride : stepR * tileOut;
    int64_t accElems = tileN * tileOut;
    int64_t blocksPerWsRow = fwd ? stepR / be : tileOut / be;
    int64_t wsRows = fwd ? tileOut : stepR;

    Value lhs = toBuffer(rewriter, loc, op.getLhs());
    Value lhs2d = collapseToMatrix(rewriter, loc, lhs);
    Value out = allocLike(rewriter, loc, resultType, lhs);
    Value out2d = collapseToMatrix(rewriter, loc, out);
    Value bytes = flatten(rewriter, loc, adaptor.getWeight());
    Type outElem = resultType.getElementType();
    Value m = batched ? memref::DimOp::create(rewriter, loc, lhs,
                                              lhsType.getRank() - 2)
                            .getResult()
                      : memref::DimOp::create(rewriter, loc, lhs2d, 0)
                            .getResult();
    Value extentO = k.idx(fwd ? n : kDim), extentR = k.idx(fwd ? kDim : n);
    Value zero =
        arith::ConstantOp::create(rewriter, loc, rewriter.getF32FloatAttr(0));

    LogicalResult decoded = success();
    {
      OpBuilder::InsertionGuard guard(rewriter);
      SmallVector<Value> ids = k.grid({k.ceilDiv(extentO, tileOut),
                               k.ceilDiv(m, tileN), k.idx(numBatches)});
      Value ws = k.alloca(wsElems), acc = k.alloca(accElems);
      Value o0 = k.mul(ids[0], tileOut), n0 = k.mul(ids[1], tileN);
      Value rowBase = k.mul(ids[2], m), wRowBase = k.mul(ids[2], n);

      // Output e of the tile is (n0 + e / TO, o0 + e % TO).
      auto outputOf = [&](Value e) {
        Value i = k.div(e, tileOut), j = k.rem(e, tileOut);
        Value valid = k.both(k.ult(k.add(n0, i), m),
                             k.ult(k.add(o0, j), extentO));
        return std::make_tuple(i, j, valid);
      };
      k.phase(accElems, [&](Value e) {
        memref::StoreOp::create(rewriter, loc, zero, acc, e);
      });

      auto steps = scf::ForOp::create(rewriter, loc, k.idx(0), extentR,
                                      k.idx(stepR));
      rewriter.setInsertionPointToStart(steps.getBody());
      Value r0 = steps.getInductionVar();
      Value rCount = k.min(k.idx(stepR), k.sub(extentR, r0));

      // Decode: ws row `row`, block `cb` of it.
      k.phase(wsRows * blocksPerWsRow, [&](Value e) {
        Value row = k.div(e, blocksPerWsRow), cb = k.rem(e, blocksPerWsRow);
        Value colInRow = k.mul(cb, be);
        // fwd: W row o0 + row, W columns r0 + colInRow (within rCount);
        // bwd: W row r0 + row (within rCount), W columns o0 + colInRow.
        Value wRow = k.add(fwd ? o0 : r0, row);
        Value wCol = k.add(fwd ? r0 : o0, colInRow);
        Value valid = fwd ? k.both(k.ult(wRow, extentO), k.ult(colInRow, rCount))
                          : k.both(k.ult(row, rCount), k.ult(wCol, extentO));
        k.when(valid, [&] {
          Value byteOffset = k.add(k.mul(k.add(wRowBase, wRow), rowBytes),
                                   k.mul(k.div(wCol, be), bb));
          Value outOffset = k.add(k.mul(row, wsStride), colInRow);
          if (failed(emitBlockDecode(rewriter, loc, wType.getFormat(),
                                     {bytes, byteOffset, ws, outOffset})))
            decoded = failure();
        });
      });

      // Multiply: each output adds its rCount products.
      k.phase(accElems, [&](Value e) {
        auto [i, j, valid] = outputOf(e);
        k.when(valid, [&] {
          Value row = k.add(rowBase, k.add(n0, i));
          Value start = memref::LoadOp::create(rewriter, loc, acc, e);
          auto dot = scf::ForOp::create(rewriter, loc, k.idx(0), rCount,
                                        k.idx(1), ValueRange{start});
          {
            OpBuilder::InsertionGuard inner(rewriter);
            rewriter.setInsertionPointToStart(dot.getBody());
            Value r = dot.getInductionVar();
            Value x = castToF32(
                rewriter, loc,
                memref::LoadOp::create(rewriter, loc, lhs2d,
                                       ValueRange{row, k.add(r0, r)}));
            Value wIndex = fwd ? k.add(k.mul(j, wsStride), r)
                               : k.add(k.mul(r, wsStride), j);
            Value w = memref::LoadOp::create(rewriter, loc, ws, wIndex);
            Value sum = arith::AddFOp::create(
                rewriter, loc, dot.getRegionIterArgs()[0],
                arith::MulFOp::create(rewriter, loc, x, w));
            scf::YieldOp::create(rewriter, loc, sum);
          }
          memref::StoreOp::create(rewriter, loc, dot.getResult(0), acc, e);
        });
      });

      // Results, rounded to the result type.
      rewriter.setInsertionPointAfter(steps);
      k.phase(accElems, [&](Value e) {
        auto [i, j, valid] = outputOf(e);
        k.when(valid, [&] {
          Value v = memref::LoadOp::create(rewriter, loc, acc, e);
          memref::StoreOp::create(
              rewriter, loc, castFromF32(rewriter, loc, v, outElem), out2d,
              ValueRange{k.add(rowBase, k.add(n0, i)), k.add(o0, j)});
        });
      });
    }
    if (failed(decoded))
      return rewriter.notifyMatchFailure(op, "no decoder for the format");
    rewriter.replaceOp(op, toTensor(rewriter, loc, out, resultType));
    return success();
  }
};

} // namespace

void mlir::qcc::detail::populateKernelFormPatterns(
    TypeConverter &converter, RewritePatternSet &patterns) {
  patterns.add<DequantKernel, QMatmulKernel>(converter, patterns.getContext());
}
