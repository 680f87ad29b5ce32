//===- QccToLoops.cpp - qtensors to byte buffers, qcc ops to loops --------===//
//
// The step from the qcc dialect to plain buffers: a !qcc.qtensor becomes the
// memref of its GGUF block bytes (the shape with the innermost dimension in
// bytes), and each qcc op becomes scf loops over blocks that call the block
// decoders of BlockDecode.h. Float tensors around the ops are bridged with
// bufferization.to_buffer / to_tensor so that one-shot bufferization can
// take the rest of the function afterwards.
//
//===----------------------------------------------------------------------===//

#include "qcc/Conversion/QccToLoops/QccToLoops.h"
#include "qcc/Conversion/Passes.h"
#include "qcc/Conversion/QccToLoops/BlockDecode.h"
#include "qcc/Dialect/Qcc/IR/QccOps.h"
#include "qcc/Runtime/SplitMix64.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Func/Transforms/FuncConversions.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/IR/LinalgInterfaces.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Transforms/DialectConversion.h"

#define DEBUG_TYPE "qcc-lower-to-loops"

namespace mlir::qcc {
#define GEN_PASS_DEF_LOWERQCCTOLOOPS
#include "qcc/Conversion/Passes.h.inc"
} // namespace mlir::qcc

using namespace mlir;
using namespace mlir::qcc;

MemRefType mlir::qcc::getStorageType(QTensorType type) {
  SmallVector<int64_t> shape(type.getShape());
  int64_t inner = shape.back();
  if (!ShapedType::isDynamic(inner))
    shape.back() = inner / type.getBlockElems() * type.getBlockBytes();
  return MemRefType::get(shape, IntegerType::get(type.getContext(), 8));
}

namespace {

Value cIndex(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIndexOp::create(b, loc, v);
}

/// The memref with all dimensions folded into one (identity layouts only).
Value flatten(OpBuilder &b, Location loc, Value memref) {
  auto type = cast<MemRefType>(memref.getType());
  if (type.getRank() == 1)
    return memref;
  ReassociationIndices all;
  for (int64_t i = 0; i < type.getRank(); ++i)
    all.push_back(i);
  return memref::CollapseShapeOp::create(b, loc, memref,
                                         ArrayRef<ReassociationIndices>{all});
}

/// Product of all dimensions of a memref, as an index value.
Value numElements(OpBuilder &b, Location loc, Value memref) {
  auto type = cast<MemRefType>(memref.getType());
  Value n = cIndex(b, loc, 1);
  for (int64_t i = 0; i < type.getRank(); ++i) {
    Value dim = type.isDynamicDim(i)
                    ? memref::DimOp::create(b, loc, memref, i).getResult()
                    : cIndex(b, loc, type.getDimSize(i));
    n = arith::MulIOp::create(b, loc, n, dim);
  }
  return n;
}

/// An uninitialized buffer shaped like `tensorType`, sized from `like` (a
/// buffer of the same rank) where dimensions are dynamic.
Value allocLike(OpBuilder &b, Location loc, RankedTensorType tensorType,
                Value like) {
  auto type = MemRefType::get(tensorType.getShape(),
                              tensorType.getElementType());
  SmallVector<Value> dynamic;
  for (int64_t i = 0; i < type.getRank(); ++i)
    if (type.isDynamicDim(i))
      dynamic.push_back(memref::DimOp::create(b, loc, like, i));
  return memref::AllocOp::create(b, loc, type, dynamic);
}

Value toTensor(OpBuilder &b, Location loc, Value buffer, Type tensorType) {
  return bufferization::ToTensorOp::create(b, loc, tensorType, buffer,
                                           b.getUnitAttr(), b.getUnitAttr());
}

Value toBuffer(OpBuilder &b, Location loc, Value tensor) {
  auto type = cast<RankedTensorType>(tensor.getType());
  return bufferization::ToBufferOp::create(
      b, loc, MemRefType::get(type.getShape(), type.getElementType()), tensor,
      /*read_only=*/true);
}

/// f32 -> `to` (f32, f16 or bf16), rounding to nearest even exactly as the
/// runtime's converters do. bf16 is rounded with integer ops: arith.truncf
/// may become an instruction (AVX512-BF16 vcvtneps2bf16) that flushes f32
/// subnormals to zero, which the runtime, and ggml, do not.
Value castFromF32(OpBuilder &b, Location loc, Value v, Type to) {
  if (to.isF32())
    return v;
  if (!to.isBF16())
    return arith::TruncFOp::create(b, loc, to, v);
  Type i32 = b.getI32Type();
  auto c = [&](int64_t x) {
    return arith::ConstantIntOp::create(b, loc, i32, x).getResult();
  };
  Value u = arith::BitcastOp::create(b, loc, i32, v);
  Value hi = arith::ShRUIOp::create(b, loc, u, c(16));
  // Round to nearest even: add 0x7fff plus the lowest kept bit.
  Value lsb = arith::AndIOp::create(b, loc, hi, c(1));
  Value rounded = arith::ShRUIOp::create(
      b, loc,
      arith::AddIOp::create(b, loc, u,
                            arith::AddIOp::create(b, loc, c(0x7fff), lsb)),
      c(16));
  // NaNs keep their sign and high payload and stay NaN (quiet bit set).
  Value isNaN = arith::CmpIOp::create(
      b, loc, arith::CmpIPredicate::ugt,
      arith::AndIOp::create(b, loc, u, c(0x7fffffff)), c(0x7f800000));
  Value bits = arith::SelectOp::create(
      b, loc, isNaN, arith::OrIOp::create(b, loc, hi, c(64)), rounded);
  Value bits16 = arith::TruncIOp::create(b, loc, b.getI16Type(), bits);
  return arith::BitcastOp::create(b, loc, to, bits16);
}

Value castToF32(OpBuilder &b, Location loc, Value v) {
  return v.getType().isF32()
             ? v
             : arith::ExtFOp::create(b, loc, b.getF32Type(), v).getResult();
}

/// Decodes `numBlocks` consecutive blocks starting at block `firstBlock` of
/// the flat storage `bytes` into the flat f32 buffer `out` at element
/// `outBase`, one block after the other.
LogicalResult decodeBlocks(OpBuilder &b, Location loc, QTensorType type,
                           Value bytes, Value firstBlock, Value numBlocks,
                           Value out, Value outBase) {
  int64_t blockElems = type.getBlockElems(), blockBytes = type.getBlockBytes();
  auto loop = scf::ForOp::create(b, loc, cIndex(b, loc, 0), numBlocks,
                                 cIndex(b, loc, 1));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(loop.getBody());
  Value i = loop.getInductionVar();
  Value block = arith::AddIOp::create(b, loc, firstBlock, i);
  Value byteOffset =
      arith::MulIOp::create(b, loc, block, cIndex(b, loc, blockBytes));
  Value outOffset = arith::AddIOp::create(
      b, loc, outBase,
      arith::MulIOp::create(b, loc, i, cIndex(b, loc, blockElems)));
  return emitBlockDecode(b, loc, type.getFormat(),
                         {bytes, byteOffset, out, outOffset});
}

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
    Value numBlocks = arith::DivUIOp::create(
        rewriter, loc, numElements(rewriter, loc, out),
        cIndex(rewriter, loc, blockElems));

    // Blocks are independent: one scf.parallel iteration each, decoding
    // through a block-sized f32 scratch when the result is narrower.
    auto par = scf::ParallelOp::create(rewriter, loc,
                                       ValueRange{cIndex(rewriter, loc, 0)},
                                       ValueRange{numBlocks},
                                       ValueRange{cIndex(rewriter, loc, 1)});
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
      memref::StoreOp::create(rewriter, loc,
                              castFromF32(rewriter, loc, v, elemType), flatOut,
                              arith::AddIOp::create(rewriter, loc, outBase, j)
                                  .getResult());
    }
    rewriter.setInsertionPointAfter(par);
    rewriter.replaceOp(op, toTensor(rewriter, loc, out, resultType));
    return success();
  }
};

/// The declaration of runtime function `name` (runtime/include/qcc/Runtime/
/// StepRuntime.h) in the module of `from`, created on first use.
func::FuncOp getOrDeclareRuntimeFunction(OpBuilder &b, Operation *from,
                                         StringRef name, FunctionType type) {
  auto module = from->getParentOfType<ModuleOp>();
  if (auto fn = module.lookupSymbol<func::FuncOp>(name))
    return fn;
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(module.getBody());
  auto fn = func::FuncOp::create(b, from->getLoc(), name, type);
  fn.setPrivate();
  return fn;
}

/// The data pointer of an identity-layout memref, as an !llvm.ptr.
Value dataPointer(OpBuilder &b, Location loc, Value memref) {
  Value index = memref::ExtractAlignedPointerAsIndexOp::create(b, loc, memref);
  Value i64 = arith::IndexCastOp::create(b, loc, b.getI64Type(), index);
  return LLVM::IntToPtrOp::create(b, loc, LLVM::LLVMPointerType::get(b.getContext()),
                                  i64);
}

/// A float tensor as an f32 buffer (widened into a new one when narrower).
Value toF32Buffer(OpBuilder &b, Location loc, Value tensor) {
  auto type = cast<RankedTensorType>(tensor.getType());
  Value buffer = toBuffer(b, loc, tensor);
  if (type.getElementType().isF32())
    return buffer;
  Value wide = allocLike(b, loc, type.clone(b.getF32Type()), buffer);
  Value flatIn = flatten(b, loc, buffer), flatWide = flatten(b, loc, wide);
  auto loop = scf::ForOp::create(b, loc, cIndex(b, loc, 0),
                                 numElements(b, loc, buffer), cIndex(b, loc, 1));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(loop.getBody());
  Value v = memref::LoadOp::create(b, loc, flatIn, loop.getInductionVar());
  memref::StoreOp::create(b, loc, castToF32(b, loc, v), flatWide,
                          loop.getInductionVar());
  return wide;
}

/// The address of element (row, col) of a row-major f32 buffer whose rows
/// are `ld` floats apart, as an !llvm.ptr.
Value elementPointer(OpBuilder &b, Location loc, Value memref, Value row,
                     Value col, Value ld) {
  Value base = memref::ExtractAlignedPointerAsIndexOp::create(b, loc, memref);
  Value elem = arith::AddIOp::create(
      b, loc, arith::MulIOp::create(b, loc, row, ld), col);
  Value addr = arith::AddIOp::create(
      b, loc, base,
      arith::MulIOp::create(b, loc, elem, arith::ConstantIndexOp::create(b, loc, 4)));
  Value i64 = arith::IndexCastOp::create(b, loc, b.getI64Type(), addr);
  return LLVM::IntToPtrOp::create(b, loc, LLVM::LLVMPointerType::get(b.getContext()),
                                  i64);
}

/// The runtime's f32 micro-GEMM (runtime/lib/step/Gemm.cpp).
constexpr StringLiteral kGemmFn = "qcc_rt_gemm_f32";

func::FuncOp getOrDeclareGemm(OpBuilder &b, Operation *from) {
  Type ptr = LLVM::LLVMPointerType::get(b.getContext());
  Type i64 = b.getI64Type(), i32 = b.getI32Type();
  return getOrDeclareRuntimeFunction(
      b, from, kGemmFn,
      b.getFunctionType({i64, i64, i64, ptr, i64, i32, ptr, i64, i32, ptr, i64},
                        {}));
}

/// C += op(A) · op(B) through the runtime's micro-GEMM; `a`, `b`, `c` are
/// element pointers, the leading dimensions index values.
void callGemm(OpBuilder &b, Location loc, Operation *from, Value m, Value n,
              Value k, Value a, Value lda, bool aTransposed, Value bPtr,
              Value ldb, bool bTransposed, Value c, Value ldc) {
  auto i64 = [&](Value index) -> Value {
    return arith::IndexCastOp::create(b, loc, b.getI64Type(), index);
  };
  auto flag = [&](bool v) -> Value {
    return arith::ConstantIntOp::create(b, loc, b.getI32Type(), v ? 1 : 0);
  };
  func::CallOp::create(b, loc, getOrDeclareGemm(b, from),
                       ValueRange{i64(m), i64(n), i64(k), a, i64(lda),
                                  flag(aTransposed), bPtr, i64(ldb),
                                  flag(bTransposed), c, i64(ldc)});
}

//===----------------------------------------------------------------------===//
// qmatmul
//===----------------------------------------------------------------------===//

/// Rows of W decoded per tile, and the tile's extent along K (a multiple of
/// every block length, 256). Forward tiles are 128 x 512 (256 KiB, in L2):
/// each call of the micro-GEMM then covers four 32-column register panels
/// per packed block of activations. Backward tiles are 32 x 512, whose rows
/// are the contracted dimension: shorter panels keep the packed B in L1/L2.
/// Measured on the dev machine, docs/benchmarks.md.
constexpr int64_t kTileRowsFwd = 128;
constexpr int64_t kTileRowsBwd = 32;
constexpr int64_t kTileCols = 512;

struct QMatmulLowering : public OpConversionPattern<QMatmulOp> {
  using OpConversionPattern::OpConversionPattern;

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
    int64_t tileCols = std::max<int64_t>(blockElems, kTileCols);
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

    Value zero = arith::ConstantOp::create(rewriter, loc,
                                           rewriter.getF32FloatAttr(0));
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

    // The output is split along the dimension the tiles do not contract
    // (N for fwd, K for bwd), so parallel iterations write disjoint columns
    // and the accumulation over the other dimension stays sequential.
    Value parExtent = fwd ? nTotal : kTotal;
    int64_t tileRows = fwd ? kTileRowsFwd : kTileRowsBwd;
    int64_t parStep = fwd ? tileRows : tileCols;
    auto par = scf::ParallelOp::create(rewriter, loc, ValueRange{c0},
                                       ValueRange{parExtent},
                                       ValueRange{cIndex(rewriter, loc, parStep)});
    rewriter.setInsertionPointToStart(par.getBody());
    Value p0 = par.getInductionVars()[0];
    Value tile = memref::AllocaOp::create(
        rewriter, loc,
        MemRefType::get({tileRows * tileCols}, rewriter.getF32Type()));
    Value parCount = minIndex(rewriter, loc, parStep,
                              arith::SubIOp::create(rewriter, loc, parExtent, p0));
    // Accumulate in f32: straight into the output's columns when it is f32,
    // else in a scratch buffer converted at the end (freed by the
    // deallocation pipeline).
    bool directAcc = outElem.isF32();
    Value acc = directAcc
                    ? out2d
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
    buildLoopNest(rewriter, loc, {m, parCount},
                  [&](OpBuilder &b, ValueRange iv) {
                    memref::StoreOp::create(b, loc, zero, acc,
                                            accIndex(b, iv[0], iv[1]));
                  });

    // Sequential loop over the contracted dimension in tiles.
    Value seqExtent = fwd ? kTotal : nTotal;
    int64_t seqStep = fwd ? tileCols : tileRows;
    auto seq = scf::ForOp::create(rewriter, loc, c0, seqExtent,
                                  cIndex(rewriter, loc, seqStep));
    rewriter.setInsertionPointToStart(seq.getBody());
    Value s0 = seq.getInductionVar();
    Value seqCount = minIndex(rewriter, loc, seqStep,
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
    Value accLd =
        cIndex(rewriter, loc,
               directAcc ? cast<MemRefType>(out2d.getType()).getDimSize(1)
                         : parStep);
    Value tileLd = cIndex(rewriter, loc, tileCols);
    callGemm(rewriter, loc, op, m, parCount, seqCount,
             elementPointer(rewriter, loc, lhs2d, rowBase, s0, lhsLd), lhsLd,
             /*aTransposed=*/false,
             elementPointer(rewriter, loc, tile, c0, c0, tileLd), tileLd,
             /*bTransposed=*/fwd,
             elementPointer(rewriter, loc, acc, accRow0, accCol0, accLd),
             accLd);
    rewriter.setInsertionPointAfter(seq);
    if (!directAcc) {
      // out[i, p0 + j] = acc[i, j]
      buildLoopNest(rewriter, loc, {m, parCount},
                    [&](OpBuilder &b, ValueRange iv) {
                      Value v = memref::LoadOp::create(b, loc, acc, iv);
                      memref::StoreOp::create(
                          b, loc, castFromF32(b, loc, v, outElem), out2d,
                          ValueRange{
                              arith::AddIOp::create(b, loc, rowBase, iv[0])
                                  .getResult(),
                              arith::AddIOp::create(b, loc, p0, iv[1])
                                  .getResult()});
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

  /// memref<b... x M x C> -> memref<(b...·M) x C>.
  static Value collapseToMatrix(OpBuilder &b, Location loc, Value memref) {
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

//===----------------------------------------------------------------------===//
// f32 linalg matmuls (weight gradients)
//===----------------------------------------------------------------------===//

/// Whether `map` selects exactly the loop dimensions (d0, d1).
bool selectsDims(AffineMap map, unsigned d0, unsigned d1) {
  if (map.getNumResults() != 2)
    return false;
  auto e0 = dyn_cast<AffineDimExpr>(map.getResult(0));
  auto e1 = dyn_cast<AffineDimExpr>(map.getResult(1));
  return e0 && e1 && e0.getPosition() == d0 && e1.getPosition() == d1;
}

/// The orientation of op(A) and op(B) when `op` is a 2-D f32 contraction
/// C[m, n] (+)= Σ_k op(A)[m, k] · op(B)[k, n] on static tensors.
struct GemmForm {
  bool aTransposed, bTransposed;
};

std::optional<GemmForm> matchGemm(linalg::LinalgOp op) {
  if (!op.hasPureTensorSemantics() || op.getNumDpsInputs() != 2 ||
      op.getNumDpsInits() != 1 || op.getNumLoops() != 3 ||
      op.getNumReductionLoops() != 1 || !linalg::isaContractionOpInterface(op))
    return std::nullopt;
  auto isF32Matrix = [](Value v) {
    auto t = dyn_cast<RankedTensorType>(v.getType());
    return t && t.getRank() == 2 && t.getElementType().isF32() &&
           t.hasStaticShape();
  };
  if (!isF32Matrix(op.getDpsInputOperand(0)->get()) ||
      !isF32Matrix(op.getDpsInputOperand(1)->get()) ||
      !isF32Matrix(op.getDpsInitOperand(0)->get()))
    return std::nullopt;
  SmallVector<AffineMap> maps = op.getIndexingMapsArray();
  if (maps[2].getNumResults() != 2)
    return std::nullopt;
  auto out0 = dyn_cast<AffineDimExpr>(maps[2].getResult(0));
  auto out1 = dyn_cast<AffineDimExpr>(maps[2].getResult(1));
  if (!out0 || !out1)
    return std::nullopt;
  unsigned m = out0.getPosition(), n = out1.getPosition();
  unsigned k = 3 - m - n; // the remaining loop
  GemmForm form;
  if (selectsDims(maps[0], m, k))
    form.aTransposed = false;
  else if (selectsDims(maps[0], k, m))
    form.aTransposed = true;
  else
    return std::nullopt;
  if (selectsDims(maps[1], k, n))
    form.bTransposed = false;
  else if (selectsDims(maps[1], n, k))
    form.bTransposed = true;
  else
    return std::nullopt;
  return form;
}

bool isGemmCandidate(Operation *op) {
  auto linalgOp = dyn_cast<linalg::LinalgOp>(op);
  return linalgOp && matchGemm(linalgOp);
}

/// A 2-D f32 contraction, whatever its operands' orientation (the weight
/// gradient dŴ = gᵀ·x reads A transposed), becomes a call of the runtime's
/// micro-GEMM: the same kernel as qmatmul's, and one call instead of a loop
/// nest for LLVM to vectorize at every use.
struct MatmulToGemmCall : public OpInterfaceConversionPattern<linalg::LinalgOp> {
  using OpInterfaceConversionPattern::OpInterfaceConversionPattern;

  LogicalResult
  matchAndRewrite(linalg::LinalgOp op, ArrayRef<Value> operands,
                  ConversionPatternRewriter &rewriter) const override {
    std::optional<GemmForm> form = matchGemm(op);
    if (!form)
      return failure();
    bool aT = form->aTransposed, bT = form->bTransposed;
    Value a = op.getDpsInputOperand(0)->get(), b = op.getDpsInputOperand(1)->get();
    Value init = op.getDpsInitOperand(0)->get();
    Location loc = op.getLoc();
    auto cType = cast<RankedTensorType>(init.getType());
    auto aType = cast<RankedTensorType>(a.getType());
    auto bType = cast<RankedTensorType>(b.getType());
    int64_t mSize = cType.getDimSize(0), nSize = cType.getDimSize(1);
    int64_t kSize = aT ? aType.getDimSize(0) : aType.getDimSize(1);
    // C starts as the init (a zero fill becomes a loop of stores; anything
    // else is copied), then accumulates the product.
    Value c = memref::AllocOp::create(
        rewriter, loc, MemRefType::get(cType.getShape(), rewriter.getF32Type()));
    memref::CopyOp::create(rewriter, loc, toBuffer(rewriter, loc, init), c);
    Value aBuf = toBuffer(rewriter, loc, a), bBuf = toBuffer(rewriter, loc, b);
    Value c0 = cIndex(rewriter, loc, 0);
    Value lda = cIndex(rewriter, loc, aType.getDimSize(1));
    Value ldb = cIndex(rewriter, loc, bType.getDimSize(1));
    Value ldc = cIndex(rewriter, loc, nSize);
    callGemm(rewriter, loc, op, cIndex(rewriter, loc, mSize),
             cIndex(rewriter, loc, nSize), cIndex(rewriter, loc, kSize),
             elementPointer(rewriter, loc, aBuf, c0, c0, lda), lda, aT,
             elementPointer(rewriter, loc, bBuf, c0, c0, ldb), ldb, bT,
             elementPointer(rewriter, loc, c, c0, c0, ldc), ldc);
    rewriter.replaceOp(op, toTensor(rewriter, loc, c, cType));
    return success();
  }
};

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
    Value input = toBuffer(rewriter, loc, op.getInput());
    // The encoder takes f32 rows: widen bf16/f16 inputs first.
    if (!inType.getElementType().isF32()) {
      Value wide = allocLike(rewriter, loc, inType.clone(rewriter.getF32Type()),
                             input);
      Value flatIn = flatten(rewriter, loc, input);
      Value flatWide = flatten(rewriter, loc, wide);
      Value n = numElements(rewriter, loc, input);
      auto loop = scf::ForOp::create(rewriter, loc, cIndex(rewriter, loc, 0), n,
                                     cIndex(rewriter, loc, 1));
      OpBuilder::InsertionGuard guard(rewriter);
      rewriter.setInsertionPointToStart(loop.getBody());
      Value v = memref::LoadOp::create(rewriter, loc, flatIn,
                                       loop.getInductionVar());
      memref::StoreOp::create(rewriter, loc, castToF32(rewriter, loc, v),
                              flatWide, loop.getInductionVar());
      rewriter.setInsertionPointAfter(loop);
      input = wide;
    }
    MemRefType storageType = getStorageType(qtype);
    SmallVector<Value> dynamic;
    for (int64_t i = 0; i < storageType.getRank(); ++i)
      if (storageType.isDynamicDim(i))
        dynamic.push_back(memref::DimOp::create(rewriter, loc, input, i));
    Value out = memref::AllocOp::create(rewriter, loc, storageType, dynamic);

    int64_t rowLen = inType.getShape().back();
    Value rows = arith::DivUIOp::create(rewriter, loc,
                                        numElements(rewriter, loc, input),
                                        cIndex(rewriter, loc, rowLen));
    Value importance =
        adaptor.getImportance()
            ? dataPointer(rewriter, loc,
                          toBuffer(rewriter, loc, op.getImportance()))
            : LLVM::ZeroOp::create(rewriter, loc,
                                   LLVM::LLVMPointerType::get(getContext()))
                  .getResult();
    func::FuncOp encode = getOrDeclareEncodeRows(rewriter, op);
    Value ggmlType = arith::ConstantIntOp::create(
        rewriter, loc, rewriter.getI32Type(),
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

constexpr StringLiteral kCarryUpdateFn = "qcc_rt_carry_update";

func::FuncOp getOrDeclareCarryUpdate(OpBuilder &b, Operation *from) {
  Type ptr = LLVM::LLVMPointerType::get(b.getContext());
  Type i32 = b.getI32Type(), i64 = b.getI64Type();
  return getOrDeclareRuntimeFunction(
      b, from, kCarryUpdateFn,
      b.getFunctionType(
          {i32, ptr, ptr, ptr, ptr, ptr, i64, i64, i32, i64, i64, i64},
          {i32}));
}

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

    auto storageType = cast<MemRefType>(weight.getType());
    SmallVector<Value> dynamic;
    for (int64_t i = 0; i < storageType.getRank(); ++i)
      if (storageType.isDynamicDim(i))
        dynamic.push_back(memref::DimOp::create(rewriter, loc, weight, i));
    Value newWeight =
        memref::AllocOp::create(rewriter, loc, storageType, dynamic);
    Value newCarry = allocLike(rewriter, loc, carryType, carry);

    int64_t rowLen = qtype.getShape().back();
    Value rows = arith::DivUIOp::create(rewriter, loc,
                                        numElements(rewriter, loc, delta),
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
        ValueRange{
            i32(getFormatInfo(qtype.getFormat()).ggmlId),
            dataPointer(rewriter, loc, weight), dataPointer(rewriter, loc, carry),
            dataPointer(rewriter, loc, delta),
            dataPointer(rewriter, loc, newWeight),
            dataPointer(rewriter, loc, newCarry),
            arith::IndexCastOp::create(rewriter, loc, rewriter.getI64Type(),
                                       rows),
            i64(rowLen), i32(carryType.getElementType().isBF16() ? 1 : 0),
            i64(jl ? jl.getDim() : 0), i64(jl ? jl.getChunk() : 0),
            i64(jl ? jl.getSeed() : 0)});
    rewriter.replaceOp(op, {newWeight, toTensor(rewriter, loc, newCarry,
                                                carryType)});
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
      auto loop = scf::ForOp::create(rewriter, loc, cIndex(rewriter, loc, 0),
                                     n, cIndex(rewriter, loc, 1));
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
    Value rows = arith::DivUIOp::create(rewriter, loc, n,
                                        cIndex(rewriter, loc, rowLen));
    Type ptr = LLVM::LLVMPointerType::get(getContext());
    Type i32 = rewriter.getI32Type(), i64 = rewriter.getI64Type();
    func::FuncOp fn = getOrDeclareRuntimeFunction(
        rewriter, op, kLsqScaleGradFn,
        rewriter.getFunctionType({i32, ptr, ptr, ptr, i64, i64}, {i32}));
    func::CallOp::create(
        rewriter, loc, fn,
        ValueRange{arith::ConstantIntOp::create(
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
    Value numBlocks = arith::DivUIOp::create(
        rewriter, loc, numElements(rewriter, loc, out), cIndex(rewriter, loc, n));

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
      Value v = castToF32(b, loc,
                          memref::LoadOp::create(
                              b, loc, in,
                              arith::AddIOp::create(b, loc, base, j).getResult()));
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
// The pass
//===----------------------------------------------------------------------===//

struct LowerQccToLoopsPass
    : public mlir::qcc::impl::LowerQccToLoopsBase<LowerQccToLoopsPass> {
  void runOnOperation() override {
    MLIRContext *ctx = &getContext();
    TypeConverter converter;
    converter.addConversion([](Type t) { return t; });
    converter.addConversion(
        [](QTensorType t) -> Type { return getStorageType(t); });

    ConversionTarget target(*ctx);
    target.addLegalDialect<arith::ArithDialect, bufferization::BufferizationDialect,
                           LLVM::LLVMDialect, math::MathDialect,
                           memref::MemRefDialect, scf::SCFDialect>();
    target.addIllegalDialect<QccDialect>();
    target.addDynamicallyLegalOp<func::FuncOp>([&](func::FuncOp op) {
      return converter.isSignatureLegal(op.getFunctionType()) &&
             converter.isLegal(&op.getBody());
    });
    target.addDynamicallyLegalOp<func::ReturnOp, func::CallOp>(
        [&](Operation *op) { return converter.isLegal(op); });
    target.markUnknownOpDynamicallyLegal([](Operation *) { return true; });
    // f32 2-D matmuls go to the micro-GEMM where the pattern applies; the
    // rest of linalg stays for one-shot bufferization and loops.
    target.addDynamicallyLegalDialect<linalg::LinalgDialect>(
        [](Operation *op) { return !isGemmCandidate(op); });

    RewritePatternSet patterns(ctx);
    patterns.add<DequantLowering, QMatmulLowering, HadamardLowering,
                 RequantLowering, CarryUpdateLowering, SteLsqLowering>(
        converter, ctx);
    patterns.add<MatmulToGemmCall>(converter, ctx);
    populateFunctionOpInterfaceTypeConversionPattern<func::FuncOp>(patterns,
                                                                   converter);
    populateReturnOpTypeConversionPattern(patterns, converter);
    populateCallOpTypeConversionPattern(patterns, converter);
    if (failed(applyPartialConversion(getOperation(), target,
                                      std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
