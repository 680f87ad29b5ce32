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
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"

#include "BlockLayouts.h"

#include <cmath>

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
// gather: one block of a picked row per thread
//===----------------------------------------------------------------------===//

struct GatherKernel : public OpConversionPattern<GatherOp> {
  GatherKernel(TypeConverter &converter, MLIRContext *ctx)
      : OpConversionPattern(converter, ctx, /*benefit=*/2) {}

  LogicalResult
  matchAndRewrite(GatherOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    QTensorType qtype = op.getTable().getType();
    auto resultType = cast<RankedTensorType>(op.getResult().getType());
    int64_t blockElems = qtype.getBlockElems();
    int64_t blockBytes = qtype.getBlockBytes();
    KernelBuilder k{rewriter, loc};
    FailureOr<GatherBuffers> buffers = prepareGather(
        rewriter, loc, op, adaptor.getTable(), adaptor.getIds());
    if (failed(buffers))
      return rewriter.notifyMatchFailure(op, "row length not whole blocks");
    Value bytes = buffers->bytes, ids = buffers->ids, numIds = buffers->numIds,
          numRows = buffers->numRows, out = buffers->out,
          flatOut = buffers->flatOut;
    int64_t blocksPerRow = buffers->blocksPerRow;
    Value numBlocks = k.mul(numIds, blocksPerRow);

    LogicalResult decoded = success();
    {
      OpBuilder::InsertionGuard guard(rewriter);
      Value g = k.grid({k.ceilDiv(numBlocks, kThreads)})[0];
      Value first = k.mul(g, kThreads);
      k.phase(kThreads, [&](Value t) {
        Value block = k.add(first, t);
        k.when(k.ult(block, numBlocks), [&] {
          Value i = k.div(block, blocksPerRow);
          Value blk = k.rem(block, blocksPerRow);
          Value id = memref::LoadOp::create(rewriter, loc, ids, i);
          Value row = arith::IndexCastOp::create(
              rewriter, loc, rewriter.getIndexType(), id);
          Value outBase = k.mul(block, blockElems);
          Value inRange = k.ult(row, numRows);
          k.when(inRange, [&] {
            Value src = k.add(k.mul(row, blocksPerRow), blk);
            decoded = emitBlockDecode(
                rewriter, loc, qtype.getFormat(),
                {bytes, k.mul(src, blockBytes), flatOut, outBase});
          });
          Value outside = arith::XOrIOp::create(
              rewriter, loc, inRange,
              arith::ConstantOp::create(rewriter, loc,
                                        rewriter.getBoolAttr(true)));
          k.when(outside, [&] {
            auto zero = scf::ForOp::create(rewriter, loc, k.idx(0),
                                           k.idx(blockElems), k.idx(1));
            OpBuilder::InsertionGuard inner(rewriter);
            rewriter.setInsertionPointToStart(zero.getBody());
            memref::StoreOp::create(
                rewriter, loc,
                arith::ConstantOp::create(rewriter, loc,
                                          rewriter.getF32FloatAttr(0.0f)),
                flatOut, k.add(outBase, zero.getInductionVar()));
          });
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

//===----------------------------------------------------------------------===//
// carry_update: one block per thread, re-encoded by qcc_rt_encode_block
//===----------------------------------------------------------------------===//

constexpr StringLiteral kEncodeBlockFn = "qcc_rt_encode_block";

/// The element type of a float weight format, or null for block formats.
Type floatWeightType(OpBuilder &b, QuantFormat format) {
  switch (format) {
  case QuantFormat::F32:
    return b.getF32Type();
  case QuantFormat::F16:
    return b.getF16Type();
  case QuantFormat::BF16:
    return b.getBF16Type();
  default:
    return nullptr;
  }
}

/// The semantics of qcc_rt_carry_update (runtime/lib/step/CarryUpdate.cpp),
/// one *unit* per phase iteration: a block for a dense carry, a chunk of
/// `jl.chunk` weights for a JL-sketched one. Decode the unit's stored blocks
/// (emitted decoder); the residual is the dense carry, or Pᵀ·z for the
/// sketch z (P = ±1/√dim with splitmix signs, computed on the fly); add it
/// and delta (the latent value). A unit with a non-finite latent value keeps
/// its bytes and carry. Otherwise each block is encoded (the runtime's block
/// encoder: linked as device bitcode on the GPU; the rounding itself for
/// float weights) and taken only if its bytes differ and its squared error
/// (summed in f64) is strictly smaller; what did not fit, e, is the new
/// dense carry, or P·e for a sketch.
struct CarryUpdateKernel : public OpConversionPattern<CarryUpdateOp> {
  CarryUpdateKernel(TypeConverter &converter, MLIRContext *ctx)
      : OpConversionPattern(converter, ctx, /*benefit=*/2) {}

  LogicalResult
  matchAndRewrite(CarryUpdateOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    QTensorType qtype = op.getWeight().getType();
    Location loc = op.getLoc();
    auto carryType = cast<RankedTensorType>(op.getCarry().getType());
    Type carryElem = carryType.getElementType();
    int64_t be = qtype.getBlockElems(), bb = qtype.getBlockBytes();
    JLCarryAttr jl = op.getJlAttr();
    const int64_t unit = jl ? jl.getChunk() : be;
    const int64_t blocksPerUnit = unit / be, unitBytes = blocksPerUnit * bb;
    const int64_t carryPerUnit = jl ? jl.getDim() : unit;
    // P's magnitude, rounded as the runtime rounds it.
    const float jlMag = jl ? 1.0f / std::sqrt(float(jl.getDim())) : 0.0f;
    KernelBuilder k{rewriter, loc};
    Type f64 = rewriter.getF64Type();
    Type i8 = rewriter.getI8Type(), i32 = rewriter.getI32Type();
    Type i64 = rewriter.getI64Type();
    Type floatType = floatWeightType(rewriter, qtype.getFormat());

    Value weight = flatten(rewriter, loc, adaptor.getWeight());
    Value carry = flatten(rewriter, loc, toBuffer(rewriter, loc, op.getCarry()));
    Value delta = flatten(rewriter, loc, toBuffer(rewriter, loc, op.getDelta()));
    Value newWeight = allocBuffer(
        rewriter, loc, cast<MemRefType>(adaptor.getWeight().getType()),
        adaptor.getWeight());
    Value newCarry = allocLike(rewriter, loc, carryType, carry);
    Value newWeightFlat = flatten(rewriter, loc, newWeight);
    Value newCarryFlat = flatten(rewriter, loc, newCarry);
    Value numUnits = k.div(numElements(rewriter, loc, delta), unit);
    func::FuncOp encode;
    if (!floatType)
      encode = getOrDeclareRuntimeFunction(
          rewriter, op, kEncodeBlockFn,
          rewriter.getFunctionType(
              {i32, LLVM::LLVMPointerType::get(rewriter.getContext()),
               LLVM::LLVMPointerType::get(rewriter.getContext())},
              {i32}));
    Value ggmlType = arith::ConstantIntOp::create(
        rewriter, loc, i32, getFormatInfo(qtype.getFormat()).ggmlId);

    LogicalResult decoded = success();
    {
      OpBuilder::InsertionGuard guard(rewriter);
      Value g = k.grid({k.ceilDiv(numUnits, kThreads)})[0];
      Value first = k.mul(g, kThreads);
      k.phase(kThreads, [&](Value t) {
        Value u = k.add(first, t);
        k.when(k.ult(u, numUnits), [&] {
          OpBuilder &b = rewriter;
          Value byte0 = k.mul(u, unitBytes), elem0 = k.mul(u, unit);
          Value carry0 = k.mul(u, carryPerUnit);
          Value cur = k.alloca(unit), lat = k.alloca(unit);
          Value cand = k.alloca(be);
          Value enc = memref::AllocaOp::create(b, loc, MemRefType::get({bb}, i8));
          Value zero = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0));
          Value trueV = arith::ConstantIntOp::create(b, loc, b.getI1Type(), 1);
          Value falseV = arith::ConstantIntOp::create(b, loc, b.getI1Type(), 0);
          auto forEach = [&](int64_t n, ValueRange inits,
                             function_ref<SmallVector<Value>(Value, ValueRange)>
                                 body) {
            auto loop = scf::ForOp::create(b, loc, k.idx(0), k.idx(n),
                                           k.idx(1), inits);
            OpBuilder::InsertionGuard g2(b);
            Block *bodyBlock = loop.getBody();
            if (!bodyBlock->empty()) { // the builder's empty scf.yield
              b.setInsertionPoint(bodyBlock->getTerminator());
              body(loop.getInductionVar(), loop.getRegionIterArgs());
              return loop;
            }
            b.setInsertionPointToStart(bodyBlock);
            scf::YieldOp::create(
                b, loc, body(loop.getInductionVar(), loop.getRegionIterArgs()));
            return loop;
          };
          auto load = [&](Value m, Value i) -> Value {
            return memref::LoadOp::create(b, loc, m, i);
          };
          auto copyBytes = [&](Value from, Value fromOffset, Value toOffset,
                               int64_t n) {
            forEach(n, {}, [&](Value j, ValueRange) {
              memref::StoreOp::create(b, loc, load(from, k.add(fromOffset, j)),
                                      newWeightFlat, k.add(toOffset, j));
              return SmallVector<Value>{};
            });
          };
          // P[kk, j] = ±jlMag, the sign of splitmix64(seed + kk·chunk + j).
          auto pEntry = [&](Value kk, Value j) -> Value {
            auto c64 = [&](uint64_t v) -> Value {
              return arith::ConstantIntOp::create(b, loc, i64, int64_t(v));
            };
            Value idx = arith::IndexCastUIOp::create(
                b, loc, i64, k.add(k.mul(kk, unit), j));
            Value z = arith::AddIOp::create(
                b, loc,
                arith::AddIOp::create(b, loc, c64(jl.getSeed()), idx),
                c64(0x9E3779B97F4A7C15ull));
            auto mix = [&](Value v, unsigned shift, uint64_t mul) -> Value {
              Value x = arith::XOrIOp::create(
                  b, loc, v, arith::ShRUIOp::create(b, loc, v, c64(shift)));
              return mul ? arith::MulIOp::create(b, loc, x, c64(mul)).getResult()
                         : x;
            };
            z = mix(z, 30, 0xBF58476D1CE4E5B9ull);
            z = mix(z, 27, 0x94D049BB133111EBull);
            z = mix(z, 31, 0);
            Value negative = arith::CmpIOp::create(
                b, loc, arith::CmpIPredicate::ne,
                arith::ShRUIOp::create(b, loc, z, c64(63)), c64(0));
            return arith::SelectOp::create(
                b, loc, negative,
                arith::ConstantOp::create(b, loc, b.getF32FloatAttr(-jlMag)),
                arith::ConstantOp::create(b, loc, b.getF32FloatAttr(jlMag)));
          };

          // The stored blocks, decoded.
          for (int64_t blk = 0; blk < blocksPerUnit; ++blk)
            if (failed(emitBlockDecode(
                    b, loc, qtype.getFormat(),
                    {weight, k.add(byte0, k.idx(blk * bb)), cur,
                     k.idx(blk * be)})))
              decoded = failure();
          // latent = (decoded + residual) + delta; finite unless some
          // x - x != 0.
          auto latLoop = forEach(unit, {trueV}, [&](Value j, ValueRange acc) {
            Value r;
            if (jl) {
              r = forEach(jl.getDim(), {zero},
                          [&](Value kk, ValueRange s) {
                            Value z = castToF32(b, loc,
                                                load(carry, k.add(carry0, kk)));
                            return SmallVector<Value>{arith::AddFOp::create(
                                b, loc, s[0],
                                arith::MulFOp::create(b, loc, pEntry(kk, j), z))};
                          })
                      .getResult(0);
            } else {
              r = castToF32(b, loc, load(carry, k.add(elem0, j)));
            }
            Value d = castToF32(b, loc, load(delta, k.add(elem0, j)));
            Value v = arith::AddFOp::create(
                b, loc, arith::AddFOp::create(b, loc, load(cur, j), r), d);
            memref::StoreOp::create(b, loc, v, lat, j);
            Value ok = arith::CmpFOp::create(
                b, loc, arith::CmpFPredicate::OEQ,
                arith::SubFOp::create(b, loc, v, v), zero);
            return SmallVector<Value>{arith::AndIOp::create(b, loc, acc[0], ok)};
          });
          auto ifFinite = scf::IfOp::create(b, loc, latLoop.getResult(0),
                                            /*withElseRegion=*/true);
          {
            // Not finite: bytes and carry as they were.
            OpBuilder::InsertionGuard g2(b);
            b.setInsertionPointToStart(&ifFinite.getElseRegion().front());
            copyBytes(weight, byte0, byte0, unitBytes);
            forEach(carryPerUnit, {}, [&](Value j, ValueRange) {
              Value e = k.add(carry0, j);
              memref::StoreOp::create(b, loc, load(carry, e), newCarryFlat, e);
              return SmallVector<Value>{};
            });
          }
          OpBuilder::InsertionGuard g2(b);
          b.setInsertionPointToStart(&ifFinite.getThenRegion().front());
          // Each block: keep, or take the fresh encoding when strictly
          // closer to the latent value.
          forEach(blocksPerUnit, {}, [&](Value blk, ValueRange) {
            Value blockByte = k.add(byte0, k.mul(blk, bb));
            Value blockElem = k.mul(blk, be); // within the unit
            Value encoded;
            if (floatType) {
              // A float "block" is one value: its encoding is the rounding
              // (castFromF32, as the runtime's converters round), stored as
              // little-endian bytes.
              unsigned bits = floatType.getIntOrFloatBitWidth();
              Type intType = b.getIntegerType(bits);
              Value rounded =
                  castFromF32(b, loc, load(lat, blockElem), floatType);
              Value word = arith::BitcastOp::create(b, loc, intType, rounded);
              for (unsigned byte = 0; byte < bits / 8; ++byte) {
                Value shifted = arith::ShRUIOp::create(
                    b, loc, word,
                    arith::ConstantIntOp::create(b, loc, intType, 8 * byte));
                memref::StoreOp::create(
                    b, loc, arith::TruncIOp::create(b, loc, i8, shifted), enc,
                    k.idx(byte));
              }
              encoded = arith::ConstantIntOp::create(b, loc, i32, 1);
            } else {
              Value latBlock = bytePointer(b, loc, lat, k.mul(blockElem, 4));
              encoded = func::CallOp::create(
                            b, loc, encode,
                            ValueRange{ggmlType, latBlock,
                                       dataPointer(b, loc, enc)})
                            .getResult(0);
            }
            auto cmp = forEach(bb, {falseV}, [&](Value j, ValueRange acc) {
              Value ne = arith::CmpIOp::create(
                  b, loc, arith::CmpIPredicate::ne, load(enc, j),
                  load(weight, k.add(blockByte, j)));
              return SmallVector<Value>{arith::OrIOp::create(b, loc, acc[0], ne)};
            });
            Value differs = arith::AndIOp::create(
                b, loc, cmp.getResult(0),
                arith::CmpIOp::create(
                    b, loc, arith::CmpIPredicate::ne, encoded,
                    arith::ConstantIntOp::create(b, loc, i32, 0)));
            // take = differs && err(candidate) < err(current), in f64.
            auto takeIf = scf::IfOp::create(b, loc, TypeRange{b.getI1Type()},
                                            differs, /*withElseRegion=*/true);
            {
              OpBuilder::InsertionGuard g3(b);
              b.setInsertionPointToStart(&takeIf.getThenRegion().front());
              if (failed(emitBlockDecode(b, loc, qtype.getFormat(),
                                         {enc, k.idx(0), cand, k.idx(0)})))
                decoded = failure();
              Value zero64 =
                  arith::ConstantOp::create(b, loc, b.getF64FloatAttr(0));
              auto err = forEach(be, {zero64, zero64}, [&](Value j,
                                                           ValueRange acc) {
                Value v = arith::ExtFOp::create(
                    b, loc, f64, load(lat, k.add(blockElem, j)));
                Value a0 = arith::ExtFOp::create(b, loc, f64, load(cand, j));
                Value a1 = arith::ExtFOp::create(
                    b, loc, f64, load(cur, k.add(blockElem, j)));
                SmallVector<Value> out;
                for (auto [a, s] : llvm::zip(SmallVector<Value, 2>{a0, a1}, acc)) {
                  Value d = arith::SubFOp::create(b, loc, a, v);
                  out.push_back(arith::AddFOp::create(
                      b, loc, s, arith::MulFOp::create(b, loc, d, d)));
                }
                return out;
              });
              scf::YieldOp::create(
                  b, loc,
                  arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OLT,
                                        err.getResult(0), err.getResult(1))
                      .getResult());
              b.setInsertionPointToStart(&takeIf.getElseRegion().front());
              scf::YieldOp::create(b, loc, falseV);
            }
            auto apply = scf::IfOp::create(b, loc, takeIf.getResult(0),
                                           /*withElseRegion=*/true);
            {
              OpBuilder::InsertionGuard g3(b);
              b.setInsertionPointToStart(&apply.getThenRegion().front());
              copyBytes(enc, k.idx(0), blockByte, bb);
              forEach(be, {}, [&](Value j, ValueRange) {
                memref::StoreOp::create(b, loc, load(cand, j), cur,
                                        k.add(blockElem, j));
                return SmallVector<Value>{};
              });
              b.setInsertionPointToStart(&apply.getElseRegion().front());
              copyBytes(weight, blockByte, blockByte, bb);
            }
            return SmallVector<Value>{};
          });
          // What did not fit: e = latent - decode(new blocks); the carry is
          // e, or P·e.
          auto residual = [&](Value j) -> Value {
            return arith::SubFOp::create(b, loc, load(lat, j), load(cur, j));
          };
          if (jl) {
            forEach(jl.getDim(), {}, [&](Value kk, ValueRange) {
              Value z = forEach(unit, {zero}, [&](Value j, ValueRange s) {
                          return SmallVector<Value>{arith::AddFOp::create(
                              b, loc, s[0],
                              arith::MulFOp::create(b, loc, pEntry(kk, j),
                                                    residual(j)))};
                        }).getResult(0);
              memref::StoreOp::create(b, loc, castFromF32(b, loc, z, carryElem),
                                      newCarryFlat, k.add(carry0, kk));
              return SmallVector<Value>{};
            });
          } else {
            forEach(unit, {}, [&](Value j, ValueRange) {
              memref::StoreOp::create(b, loc,
                                      castFromF32(b, loc, residual(j), carryElem),
                                      newCarryFlat, k.add(elem0, j));
              return SmallVector<Value>{};
            });
          }
        });
      });
    }
    if (failed(decoded))
      return rewriter.notifyMatchFailure(op, "no decoder for the format");
    rewriter.replaceOp(op,
                       {newWeight, toTensor(rewriter, loc, newCarry, carryType)});
    return success();
  }
};

//===----------------------------------------------------------------------===//
// Block scales: ste_grad lsq's scale gradient and scale_update
//===----------------------------------------------------------------------===//

/// Where a format keeps its block scale (runtime/lib/step/LsqScaleGrad.cpp
/// reads the same fields from the same layouts).
enum class ScaleKind { F16, E8M0, IQ1M, Relative, None };
struct ScaleField {
  ScaleKind kind;
  int64_t offset;
};

ScaleField scaleFieldOf(QuantFormat f) {
  namespace L = ::qcc::layout;
  switch (f) {
  case QuantFormat::Q4_0: return {ScaleKind::F16, L::Q4_0::d};
  case QuantFormat::Q4_1: return {ScaleKind::F16, L::Q4_1::d};
  case QuantFormat::Q5_0: return {ScaleKind::F16, L::Q5_0::d};
  case QuantFormat::Q5_1: return {ScaleKind::F16, L::Q5_1::d};
  case QuantFormat::Q8_0: return {ScaleKind::F16, L::Q8_0::d};
  case QuantFormat::Q2_K: return {ScaleKind::F16, L::Q2_K::d};
  case QuantFormat::Q3_K: return {ScaleKind::F16, L::Q3_K::d};
  case QuantFormat::Q4_K: return {ScaleKind::F16, L::Q4_K::d};
  case QuantFormat::Q5_K: return {ScaleKind::F16, L::Q5_K::d};
  case QuantFormat::Q6_K: return {ScaleKind::F16, L::Q6_K::d};
  case QuantFormat::IQ2_XXS: return {ScaleKind::F16, L::IQ2_XXS::d};
  case QuantFormat::IQ2_XS: return {ScaleKind::F16, L::IQ2_XS::d};
  case QuantFormat::IQ2_S: return {ScaleKind::F16, L::IQ2_S::d};
  case QuantFormat::IQ3_XXS: return {ScaleKind::F16, L::IQ3_XXS::d};
  case QuantFormat::IQ3_S: return {ScaleKind::F16, L::IQ3_S::d};
  case QuantFormat::IQ1_S: return {ScaleKind::F16, L::IQ1_S::d};
  case QuantFormat::IQ1_M: return {ScaleKind::IQ1M, L::IQ1_M::scales};
  case QuantFormat::IQ4_NL: return {ScaleKind::F16, L::IQ4_NL::d};
  case QuantFormat::IQ4_XS: return {ScaleKind::F16, L::IQ4_XS::d};
  case QuantFormat::TQ1_0: return {ScaleKind::F16, L::TQ1_0::d};
  case QuantFormat::TQ2_0: return {ScaleKind::F16, L::TQ2_0::d};
  case QuantFormat::MXFP4: return {ScaleKind::E8M0, L::MXFP4::e};
  case QuantFormat::NVFP4: return {ScaleKind::Relative, 0};
  case QuantFormat::Q1_0: return {ScaleKind::F16, L::Q1_0::d};
  case QuantFormat::Q2_0: return {ScaleKind::F16, L::Q2_0::d};
  default: return {ScaleKind::None, 0};
  }
}

/// Scalar IR over one block's bytes in `bytes` at `block0`.
struct ScaleIO {
  OpBuilder &b;
  Location loc;
  KernelBuilder &k;
  Value bytes, block0;
  ScaleField field;

  Value c32(int64_t v) {
    return arith::ConstantIntOp::create(b, loc, b.getI32Type(), v);
  }
  Value u8(int64_t rel) {
    Value v = memref::LoadOp::create(b, loc, bytes,
                                     k.add(block0, k.idx(field.offset + rel)));
    return arith::ExtUIOp::create(b, loc, b.getI32Type(), v);
  }
  Value u16(int64_t rel) {
    return arith::OrIOp::create(
        b, loc, u8(rel), arith::ShLIOp::create(b, loc, u8(rel + 1), c32(8)));
  }
  void store8(int64_t rel, Value v32, Value to, Value toBlock0) {
    memref::StoreOp::create(
        b, loc, arith::TruncIOp::create(b, loc, b.getI8Type(), v32), to,
        k.add(toBlock0, k.idx(field.offset + rel)));
  }
  void store16(int64_t rel, Value v32, Value to, Value toBlock0) {
    store8(rel, v32, to, toBlock0);
    store8(rel + 1, arith::ShRUIOp::create(b, loc, v32, c32(8)), to, toBlock0);
  }
  Value halfToF32(Value bits32) {
    Value h = arith::TruncIOp::create(b, loc, b.getI16Type(), bits32);
    Value half = arith::BitcastOp::create(b, loc, b.getF16Type(), h);
    return arith::ExtFOp::create(b, loc, b.getF32Type(), half);
  }
  /// f32 -> f16 bits (i32), rounded to nearest even like the runtime.
  Value f32ToHalfBits(Value d) {
    Value h = castFromF32(b, loc, d, b.getF16Type());
    Value bits = arith::BitcastOp::create(b, loc, b.getI16Type(), h);
    return arith::ExtUIOp::create(b, loc, b.getI32Type(), bits);
  }
  Value iq1mBits() {
    Value sc[4];
    for (int i = 0; i < 4; ++i)
      sc[i] = u16(2 * i);
    auto part = [&](Value v, int64_t shift, bool left, int64_t mask) {
      Value sh = left ? arith::ShLIOp::create(b, loc, v, c32(shift)).getResult()
                      : arith::ShRUIOp::create(b, loc, v, c32(shift)).getResult();
      return arith::AndIOp::create(b, loc, sh, c32(mask)).getResult();
    };
    Value bits = arith::OrIOp::create(
        b, loc,
        arith::OrIOp::create(b, loc, part(sc[0], 12, false, 0x000f),
                             part(sc[1], 8, false, 0x00f0)),
        arith::OrIOp::create(b, loc, part(sc[2], 4, false, 0x0f00),
                             arith::AndIOp::create(b, loc, sc[3], c32(0xf000))));
    return bits;
  }
  /// The block's scale d (LsqScaleGrad.cpp's loadScale).
  Value load() {
    switch (field.kind) {
    case ScaleKind::F16:
      return halfToF32(u16(0));
    case ScaleKind::E8M0: {
      // 2^(e - 127): the f32 whose bits are e << 23 (e >= 1), 2^-127 for 0.
      Value e = u8(0);
      Value normal = arith::ShLIOp::create(b, loc, e, c32(23));
      Value isZero = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, e,
                                           c32(0));
      Value bits = arith::SelectOp::create(b, loc, isZero, c32(0x00400000),
                                           normal);
      return arith::BitcastOp::create(b, loc, b.getF32Type(), bits);
    }
    case ScaleKind::IQ1M:
      return halfToF32(iq1mBits());
    default:
      return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(1.0f));
    }
  }
};

Value isFiniteF32(OpBuilder &b, Location loc, Value v) {
  Value zero = arith::ConstantOp::create(b, loc, b.getFloatAttr(v.getType(), 0));
  return arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ,
                               arith::SubFOp::create(b, loc, v, v), zero);
}

/// ste_grad lsq: direction = grad; per block (a phase iteration),
/// scale_grad = Σ grad · (Ŵ - off) / d in f64, with off the decode of the
/// block with its f16 scale zeroed (LsqScaleGrad.cpp).
struct SteLsqKernel : public OpConversionPattern<SteGradOp> {
  SteLsqKernel(TypeConverter &converter, MLIRContext *ctx)
      : OpConversionPattern(converter, ctx, /*benefit=*/2) {}

  LogicalResult
  matchAndRewrite(SteGradOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    if (op.getMode() != SteMode::Lsq)
      return rewriter.notifyMatchFailure(op, "not lsq");
    QTensorType qtype = op.getWeight().getType();
    ScaleField field = scaleFieldOf(qtype.getFormat());
    if (field.kind == ScaleKind::None)
      return rewriter.notifyMatchFailure(op, "no block scale");
    Location loc = op.getLoc();
    auto dirType = cast<RankedTensorType>(op.getDirection().getType());
    auto scaleType = cast<RankedTensorType>(op.getScaleGrad().getType());
    int64_t be = qtype.getBlockElems(), bb = qtype.getBlockBytes();
    KernelBuilder k{rewriter, loc};
    Type f32 = rewriter.getF32Type(), f64 = rewriter.getF64Type();
    Value weight = flatten(rewriter, loc, adaptor.getWeight());
    Value grad = flatten(rewriter, loc, toBuffer(rewriter, loc, op.getGrad()));
    Value direction = allocLike(rewriter, loc, dirType, toBuffer(rewriter, loc, op.getGrad()));
    Value scaleGrad = allocLike(rewriter, loc, scaleType, direction);
    Value dirFlat = flatten(rewriter, loc, direction);
    Value sgFlat = flatten(rewriter, loc, scaleGrad);
    Value numBlocks = k.div(numElements(rewriter, loc, grad), be);
    LogicalResult decoded = success();
    {
      OpBuilder::InsertionGuard guard(rewriter);
      Value g = k.grid({k.ceilDiv(numBlocks, kThreads)})[0];
      Value first = k.mul(g, kThreads);
      k.phase(kThreads, [&](Value t) {
        Value blk = k.add(first, t);
        k.when(k.ult(blk, numBlocks), [&] {
          OpBuilder &b = rewriter;
          Value byte0 = k.mul(blk, bb), elem0 = k.mul(blk, be);
          Value value = k.alloca(be), offset = k.alloca(be);
          Value zeroF = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0));
          if (failed(emitBlockDecode(b, loc, qtype.getFormat(),
                                     {weight, byte0, value, k.idx(0)})))
            decoded = failure();
          ScaleIO io{b, loc, k, weight, byte0, field};
          Value d = io.load();
          if (field.kind == ScaleKind::F16) {
            Value zeroed =
                memref::AllocaOp::create(b, loc, MemRefType::get({bb}, b.getI8Type()));
            auto copy = scf::ForOp::create(b, loc, k.idx(0), k.idx(bb), k.idx(1));
            {
              OpBuilder::InsertionGuard g2(b);
              b.setInsertionPoint(copy.getBody()->getTerminator());
              Value j = copy.getInductionVar();
              memref::StoreOp::create(
                  b, loc, memref::LoadOp::create(b, loc, weight, k.add(byte0, j)),
                  zeroed, j);
            }
            Value z8 = arith::ConstantIntOp::create(b, loc, b.getI8Type(), 0);
            memref::StoreOp::create(b, loc, z8, zeroed, k.idx(field.offset));
            memref::StoreOp::create(b, loc, z8, zeroed, k.idx(field.offset + 1));
            if (failed(emitBlockDecode(b, loc, qtype.getFormat(),
                                       {zeroed, k.idx(0), offset, k.idx(0)})))
              decoded = failure();
          } else {
            auto fill = scf::ForOp::create(b, loc, k.idx(0), k.idx(be), k.idx(1));
            OpBuilder::InsertionGuard g2(b);
            b.setInsertionPoint(fill.getBody()->getTerminator());
            memref::StoreOp::create(b, loc, zeroF, offset, fill.getInductionVar());
          }
          Value zero64 = arith::ConstantOp::create(b, loc, b.getF64FloatAttr(0));
          Value d64 = arith::ExtFOp::create(b, loc, f64, d);
          auto sum = scf::ForOp::create(b, loc, k.idx(0), k.idx(be), k.idx(1),
                                        ValueRange{zero64});
          {
            OpBuilder::InsertionGuard g2(b);
            b.setInsertionPointToStart(sum.getBody());
            Value j = sum.getInductionVar();
            Value gj = castToF32(b, loc, memref::LoadOp::create(b, loc, grad, k.add(elem0, j)));
            // direction = grad, in the direction's type.
            memref::StoreOp::create(
                b, loc, castFromF32(b, loc, gj, dirType.getElementType()),
                dirFlat, k.add(elem0, j));
            auto ext = [&](Value v) { return arith::ExtFOp::create(b, loc, f64, v).getResult(); };
            Value diff = arith::SubFOp::create(
                b, loc, ext(memref::LoadOp::create(b, loc, value, j)),
                ext(memref::LoadOp::create(b, loc, offset, j)));
            Value term = arith::DivFOp::create(
                b, loc, arith::MulFOp::create(b, loc, ext(gj), diff), d64);
            scf::YieldOp::create(
                b, loc,
                arith::AddFOp::create(b, loc, sum.getRegionIterArgs()[0], term)
                    .getResult());
          }
          Value usable = arith::AndIOp::create(
              b, loc,
              arith::CmpFOp::create(b, loc, arith::CmpFPredicate::UNE, d, zeroF),
              isFiniteF32(b, loc, d));
          Value result = arith::SelectOp::create(
              b, loc, usable,
              arith::TruncFOp::create(b, loc, f32, sum.getResult(0)), zeroF);
          memref::StoreOp::create(
              b, loc, castFromF32(b, loc, result, scaleType.getElementType()),
              sgFlat, blk);
        });
      });
    }
    if (failed(decoded))
      return rewriter.notifyMatchFailure(op, "no decoder for the format");
    rewriter.replaceOp(op, {toTensor(rewriter, loc, direction, dirType),
                            toTensor(rewriter, loc, scaleGrad, scaleType)});
    return success();
  }
};

/// scale_update: the weights with every block's scale set to d + delta[b]
/// (LsqScaleGrad.cpp's qcc_rt_scale_update); a block whose new scale is not
/// finite, crosses zero, or cannot be stored keeps its scale.
struct ScaleUpdateKernel : public OpConversionPattern<ScaleUpdateOp> {
  ScaleUpdateKernel(TypeConverter &converter, MLIRContext *ctx)
      : OpConversionPattern(converter, ctx, /*benefit=*/2) {}

  LogicalResult
  matchAndRewrite(ScaleUpdateOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    QTensorType qtype = op.getWeight().getType();
    ScaleField field = scaleFieldOf(qtype.getFormat());
    if (field.kind == ScaleKind::None || field.kind == ScaleKind::Relative)
      return rewriter.notifyMatchFailure(op, "no scale field");
    Location loc = op.getLoc();
    int64_t bb = qtype.getBlockBytes();
    KernelBuilder k{rewriter, loc};
    Value weight = flatten(rewriter, loc, adaptor.getWeight());
    Value delta = flatten(rewriter, loc, toBuffer(rewriter, loc, op.getDelta()));
    Value out = allocBuffer(rewriter, loc,
                            cast<MemRefType>(adaptor.getWeight().getType()),
                            adaptor.getWeight());
    Value outFlat = flatten(rewriter, loc, out);
    Value numBlocks = numElements(rewriter, loc, delta);
    {
      OpBuilder::InsertionGuard guard(rewriter);
      Value g = k.grid({k.ceilDiv(numBlocks, kThreads)})[0];
      Value first = k.mul(g, kThreads);
      k.phase(kThreads, [&](Value t) {
        Value blk = k.add(first, t);
        k.when(k.ult(blk, numBlocks), [&] {
          OpBuilder &b = rewriter;
          Value byte0 = k.mul(blk, bb);
          auto copy = scf::ForOp::create(b, loc, k.idx(0), k.idx(bb), k.idx(1));
          {
            OpBuilder::InsertionGuard g2(b);
            b.setInsertionPoint(copy.getBody()->getTerminator());
            Value j = k.add(byte0, copy.getInductionVar());
            memref::StoreOp::create(b, loc, memref::LoadOp::create(b, loc, weight, j),
                                    outFlat, j);
          }
          ScaleIO io{b, loc, k, weight, byte0, field};
          Value old = io.load();
          Value d = arith::AddFOp::create(
              b, loc, old, memref::LoadOp::create(b, loc, delta, blk));
          Value zeroF = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0));
          auto cmp = [&](arith::CmpFPredicate p, Value x, Value y) {
            return arith::CmpFOp::create(b, loc, p, x, y).getResult();
          };
          auto andI = [&](Value x, Value y) {
            return arith::AndIOp::create(b, loc, x, y).getResult();
          };
          auto orI = [&](Value x, Value y) {
            return arith::OrIOp::create(b, loc, x, y).getResult();
          };
          Value flips = orI(andI(cmp(arith::CmpFPredicate::OGT, old, zeroF),
                                 cmp(arith::CmpFPredicate::OLE, d, zeroF)),
                            andI(cmp(arith::CmpFPredicate::OLT, old, zeroF),
                                 cmp(arith::CmpFPredicate::OGE, d, zeroF)));
          Value ok = andI(isFiniteF32(b, loc, d),
                          arith::XOrIOp::create(
                              b, loc, flips,
                              arith::ConstantIntOp::create(b, loc, b.getI1Type(), 1)));
          if (field.kind == ScaleKind::E8M0) {
            // e = clamp(lround(log2(d)) + 127, 0, 254), in f64 as the
            // runtime computes it.
            Value l = math::RoundOp::create(
                b, loc,
                math::Log2Op::create(
                    b, loc, arith::ExtFOp::create(b, loc, b.getF64Type(), d)));
            Value e = arith::AddIOp::create(
                b, loc, arith::FPToSIOp::create(b, loc, b.getI32Type(), l),
                io.c32(127));
            e = arith::MaxSIOp::create(b, loc, e, io.c32(0));
            e = arith::MinSIOp::create(b, loc, e, io.c32(254));
            auto ifOk = scf::IfOp::create(b, loc, ok, false);
            OpBuilder::InsertionGuard g2(b);
            b.setInsertionPointToStart(&ifOk.getThenRegion().front());
            io.store8(0, e, outFlat, byte0);
            return;
          }
          Value h = io.f32ToHalfBits(d);
          ok = andI(ok, isFiniteF32(b, loc, io.halfToF32(h)));
          auto ifOk = scf::IfOp::create(b, loc, ok, false);
          OpBuilder::InsertionGuard g2(b);
          b.setInsertionPointToStart(&ifOk.getThenRegion().front());
          if (field.kind == ScaleKind::F16) {
            io.store16(0, h, outFlat, byte0);
            return;
          }
          // iq1_m: the f16's four nibbles in the top nibbles of scales[4].
          for (int i = 0; i < 4; ++i) {
            Value sc = arith::OrIOp::create(
                b, loc, arith::AndIOp::create(b, loc, io.u16(2 * i), io.c32(0x0fff)),
                arith::ShLIOp::create(
                    b, loc,
                    arith::AndIOp::create(
                        b, loc, arith::ShRUIOp::create(b, loc, h, io.c32(4 * i)),
                        io.c32(0xf)),
                    io.c32(12)));
            io.store16(2 * i, sc, outFlat, byte0);
          }
        });
      });
    }
    rewriter.replaceOp(op, out);
    return success();
  }
};

} // namespace


void mlir::qcc::detail::populateKernelFormPatterns(
    TypeConverter &converter, RewritePatternSet &patterns) {
  patterns.add<DequantKernel, GatherKernel, QMatmulKernel, CarryUpdateKernel, SteLsqKernel,
               ScaleUpdateKernel>(converter, patterns.getContext());
}
