//===- QMatmulSmallN.cpp - qcc.qmatmul with a few activation rows ---------===//
//
// A GEMV-like qmatmul (a handful of activation rows) is bound by decoding W,
// and decoding tiles into memory for the micro-GEMM only to read them back
// once costs more than the multiply. Here each block is decoded into
// 16-lane f32 vectors (VectorDecode.h) that go straight into the product:
//
//  - forward, y[i, j] = Σ_t x[i, t] W[j, t]: an scf.parallel over chunks of
//    W rows; each row's blocks are decoded in order and multiplied into
//    vector accumulators (vector.fma) against the matching slices of x, then
//    reduced once per row;
//  - backward, dx[i, t] = Σ_j g[i, j] W[j, t]: an scf.parallel over strips
//    of columns; each iteration keeps its strip of dx in a stack buffer
//    (L1-sized) and adds g[i, j] · (row j of W in the strip) for every row
//    j, decoded block by block (an AXPY per decoded vector).
//
// The loops of one weight shape live in a private function shared by every
// qmatmul of that format and shape, as the tile decoders are.
//
//===----------------------------------------------------------------------===//

#include "LoweringUtils.h"
#include "VectorDecode.h"

#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;
using namespace mlir::qcc;
using namespace mlir::qcc::detail;

namespace {

/// Forward W rows per iteration of the parallel loop.
constexpr int64_t kRowsPerTask = 16;
/// Forward: decode units (blocks) per iteration of the row's block loop,
/// so that each iteration has several independent accumulations.
constexpr int64_t kChunkElems = 128;
/// How far ahead of the decode W is prefetched, in bytes, into L2
/// (locality 2). Measured on the dev machine (docs/benchmarks.md): with
/// the hardware prefetcher alone a GEMV waited on memory at 10 GB/s per
/// core; 1-4 KiB ahead or into L1 helped less.
constexpr int64_t kPrefetchAhead = 16384;
/// Backward: the widest strip of dx columns per parallel iteration, in
/// f32 elements summed over the activation rows (16 KiB of accumulators),
/// and the number of strips to aim for so that every thread has work.
constexpr int64_t kStripAccElems = 4096;
constexpr int64_t kMinStrips = 8;

struct Shape {
  QuantFormat format;
  int64_t blockElems, blockBytes;
  int64_t unit, unitBytes; // decode unit: a block, or 16 plain elements
  int64_t k;               // W row length (elements)
  int64_t numUnits, tail;  // full units per row, leftover plain elements
  int64_t rowBytes;
};

Shape shapeOf(QTensorType type) {
  Shape s;
  s.format = type.getFormat();
  s.blockElems = type.getBlockElems();
  s.blockBytes = type.getBlockBytes();
  s.unit = vectorUnitElems(s.format, s.blockElems);
  s.unitBytes = s.unit / s.blockElems * s.blockBytes;
  s.k = type.getShape().back();
  s.numUnits = s.k / s.unit;
  s.tail = s.k % s.unit;
  s.rowBytes = s.k / s.blockElems * s.blockBytes;
  return s;
}

Value addIdx(OpBuilder &b, Location loc, Value a, Value c) {
  return arith::AddIOp::create(b, loc, a, c);
}
Value mulIdx(OpBuilder &b, Location loc, Value a, int64_t c) {
  return arith::MulIOp::create(b, loc, a, cIndex(b, loc, c));
}
Value zeroVec(OpBuilder &b, Location loc) {
  auto t = VectorType::get({kLanes}, b.getF32Type());
  return arith::ConstantOp::create(
      b, loc, t, DenseElementsAttr::get(t, b.getF32FloatAttr(0)));
}

std::string shapeName(MemRefType t) {
  std::string s;
  llvm::raw_string_ostream os(s);
  for (int64_t d : t.getShape())
    os << d << "x";
  t.getElementType().print(os);
  return s;
}

/// A private function `name` of the module of `from` with `argTypes`,
/// created by `body` on first use.
FailureOr<func::FuncOp>
getOrCreateFunction(OpBuilder &b, Operation *from, StringRef name,
                    ArrayRef<Type> argTypes,
                    function_ref<LogicalResult(OpBuilder &, ValueRange)> body) {
  auto module = from->getParentOfType<ModuleOp>();
  if (auto fn = module.lookupSymbol<func::FuncOp>(name))
    return fn;
  Location loc = from->getLoc();
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(module.getBody());
  auto fn = func::FuncOp::create(b, loc, name, b.getFunctionType(argTypes, {}));
  fn.setPrivate();
  Block *entry = fn.addEntryBlock();
  b.setInsertionPointToStart(entry);
  if (failed(body(b, entry->getArguments()))) {
    fn.erase();
    return failure();
  }
  func::ReturnOp::create(b, loc);
  return fn;
}

/// Decodes units [u, u + count) of the W row starting at byte `rowByte`,
/// passing each vector to `sink` with its column (index) in the row.
LogicalResult decodeUnits(OpBuilder &b, Location loc, const Shape &s,
                          Value bytes, Value rowByte, Value u, int64_t count,
                          Value scratch,
                          function_ref<void(Value, Value)> sink) {
  for (int64_t k = 0; k < count; ++k) {
    Value unitIdx = k ? addIdx(b, loc, u, cIndex(b, loc, k)) : u;
    Value blockByte =
        addIdx(b, loc, rowByte, mulIdx(b, loc, unitIdx, s.unitBytes));
    Value col0 = mulIdx(b, loc, unitIdx, s.unit);
    VecEmitter e(b, loc, bytes, blockByte);
    if (failed(emitVectorUnitDecode(e, s.format, scratch,
                                    [&](Value v, int64_t first) {
                                      sink(v, addIdx(b, loc, col0,
                                                     cIndex(b, loc, first)));
                                    })))
      return failure();
  }
  return success();
}

/// Prefetches the W bytes kPrefetchAhead past [byte, byte + count), one
/// per cache line, clamped to the buffer (the rows are read in order, and
/// the hardware prefetcher alone leaves the decode waiting on memory).
void prefetch(OpBuilder &b, Location loc, Value bytes, Value byte,
              int64_t count) {
  int64_t size = cast<MemRefType>(bytes.getType()).getNumElements();
  Value last = cIndex(b, loc, size - 1);
  for (int64_t off = 0; off < count; off += 64) {
    Value at = arith::MinUIOp::create(
        b, loc, addIdx(b, loc, byte, cIndex(b, loc, kPrefetchAhead + off)),
        last);
    memref::PrefetchOp::create(b, loc, bytes, ValueRange{at},
                               /*isWrite=*/false, /*localityHint=*/2,
                               /*isDataCache=*/true);
  }
}

//===----------------------------------------------------------------------===//
// Forward
//===----------------------------------------------------------------------===//

/// Body of the forward function: for W rows j in [j0, j1),
/// out[r0 + i, j] = Σ_t x[r0 + i, t] · W[w0 + j, t] for i < m.
LogicalResult buildForward(OpBuilder &b, Location loc, const Shape &s,
                           int64_t m, ValueRange args) {
  Value bytes = args[0], x = args[1], out = args[2];
  Value j0 = args[3], j1 = args[4], r0 = args[5], w0 = args[6];
  std::optional<DotKernelInfo> dot = getDotKernel(s.format);
  // x sums of the dot kernel: row i's at xs[i, t / G].
  Value xs = dot && dot->xsumGroup ? args[7] : Value();
  Type outElem = cast<MemRefType>(out.getType()).getElementType();
  // Independent accumulation chains per activation row, so the FMA latency
  // is hidden even for one row.
  int64_t chains = m == 1 ? 4 : m == 2 ? 2 : 1;
  Value scratch;
  if (!hasVectorDecoder(s.format) || s.tail)
    scratch = memref::AllocaOp::create(
        b, loc, MemRefType::get({std::max(s.unit, kLanes)}, b.getF32Type()));
  SmallVector<Value> xRows;
  for (int64_t i = 0; i < m; ++i)
    xRows.push_back(addIdx(b, loc, r0, cIndex(b, loc, i)));

  Value c1 = cIndex(b, loc, 1);
  auto rowLoop = scf::ForOp::create(b, loc, j0, j1, c1);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(rowLoop.getBody());
  Value j = rowLoop.getInductionVar();
  Value rowByte = mulIdx(b, loc, addIdx(b, loc, w0, j), s.rowBytes);
  SmallVector<Value> init(m * chains, zeroVec(b, loc));
  if (dot && dot->corrLanes == 1)
    init.append(m, arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0)));
  else if (dot && dot->corrLanes)
    init.append(m, arith::ConstantOp::create(
                       b, loc, DenseElementsAttr::get(
                                   VectorType::get({dot->corrLanes},
                                                   b.getF32Type()),
                                   b.getF32FloatAttr(0))));

  // acc[i][n % chains] += w · x[i, col..col+16), n counting vectors.
  auto fmaInto = [&](OpBuilder &ob, MutableArrayRef<Value> accs, int64_t &n,
                     Value w, Value col, Value mask) {
    int64_t c = n++ % chains;
    for (int64_t i = 0; i < m; ++i) {
      Value xv;
      if (mask)
        xv = vector::MaskedLoadOp::create(
            ob, loc, VectorType::get({kLanes}, ob.getF32Type()), x,
            ValueRange{xRows[i], col}, mask, zeroVec(ob, loc));
      else
        xv = vector::LoadOp::create(
            ob, loc, VectorType::get({kLanes}, ob.getF32Type()), x,
            ValueRange{xRows[i], col});
      Value &acc = accs[i * chains + c];
      acc = vector::FMAOp::create(ob, loc, w, xv, acc);
    }
  };
  // A loop over units [lb, ub) in steps of `step` units, carrying the
  // accumulators.
  auto unitLoop = [&](int64_t lb, int64_t ub, int64_t step,
                      ValueRange accsIn) -> FailureOr<SmallVector<Value>> {
    if (lb >= ub)
      return SmallVector<Value>(accsIn);
    auto loop =
        scf::ForOp::create(b, loc, cIndex(b, loc, lb), cIndex(b, loc, ub),
                           cIndex(b, loc, step), accsIn);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(loop.getBody());
    SmallVector<Value> accs(loop.getRegionIterArgs());
    int64_t n = 0;
    prefetch(b, loc, bytes,
             addIdx(b, loc, rowByte,
                    mulIdx(b, loc, loop.getInductionVar(), s.unitBytes)),
             step * s.unitBytes);
    if (dot) {
      DotContext ctx{m, chains, accs, nullptr, nullptr};
      for (int64_t k = 0; k < step; ++k) {
        Value unitIdx = addIdx(b, loc, loop.getInductionVar(),
                               cIndex(b, loc, k));
        Value col = mulIdx(b, loc, unitIdx, s.unit);
        Value group = dot->xsumGroup
                          ? mulIdx(b, loc, unitIdx, s.unit / dot->xsumGroup)
                          : Value();
        auto loadX = [&](int64_t i, int64_t off) -> Value {
          return vector::LoadOp::create(
              b, loc, VectorType::get({kLanes}, b.getF32Type()), x,
              ValueRange{xRows[i], addIdx(b, loc, col, cIndex(b, loc, off))});
        };
        auto loadXsum = [&](int64_t i, int64_t off, int64_t lanes) -> Value {
          SmallVector<Value> idx = {
              cIndex(b, loc, i), addIdx(b, loc, group, cIndex(b, loc, off))};
          if (lanes == 1)
            return memref::LoadOp::create(b, loc, xs, idx);
          return vector::LoadOp::create(
              b, loc, VectorType::get({lanes}, b.getF32Type()), xs, idx);
        };
        ctx.x = loadX;
        ctx.xsum = loadXsum;
        VecEmitter e(b, loc, bytes,
                     addIdx(b, loc, rowByte, mulIdx(b, loc, unitIdx,
                                                    s.unitBytes)));
        emitBlockDot(e, s.format, ctx);
      }
    } else if (failed(decodeUnits(b, loc, s, bytes, rowByte,
                                  loop.getInductionVar(), step, scratch,
                                  [&](Value w, Value col) {
                                    fmaInto(b, accs, n, w, col, Value());
                                  }))) {
      return failure();
    }
    scf::YieldOp::create(b, loc, accs);
    return SmallVector<Value>(loop.getResults());
  };

  int64_t chunkUnits = std::max<int64_t>(1, kChunkElems / s.unit);
  int64_t mainUnits = s.numUnits / chunkUnits * chunkUnits;
  FailureOr<SmallVector<Value>> accs =
      unitLoop(0, mainUnits, chunkUnits, init);
  if (failed(accs))
    return failure();
  accs = unitLoop(mainUnits, s.numUnits, 1, *accs);
  if (failed(accs))
    return failure();
  if (s.tail) {
    // The last k % 16 elements of a plain format.
    Value col = cIndex(b, loc, s.numUnits * s.unit);
    VecEmitter e(b, loc, bytes,
                 addIdx(b, loc, rowByte,
                        cIndex(b, loc, s.numUnits * s.unitBytes)));
    FailureOr<Value> w =
        emitVectorTailDecode(e, s.format, s.blockBytes, s.tail, scratch);
    if (failed(w))
      return failure();
    Value mask = vector::ConstantMaskOp::create(
        b, loc, VectorType::get({kLanes}, b.getI1Type()),
        ArrayRef<int64_t>{s.tail});
    int64_t n = 0;
    fmaInto(b, *accs, n, *w, col, mask);
  }
  auto reassoc = arith::FastMathFlags::reassoc;
  for (int64_t i = 0; i < m; ++i) {
    Value sum = (*accs)[i * chains];
    for (int64_t c = 1; c < chains; ++c)
      sum = arith::AddFOp::create(b, loc, sum, (*accs)[i * chains + c]);
    Value y = vector::ReductionOp::create(b, loc, vector::CombiningKind::ADD,
                                          sum, reassoc);
    if (dot && dot->corrLanes) {
      Value corr = (*accs)[m * chains + i];
      if (dot->corrLanes > 1)
        corr = vector::ReductionOp::create(
            b, loc, vector::CombiningKind::ADD, corr, reassoc);
      Value factor = arith::ConstantOp::create(
          b, loc, b.getF32FloatAttr(dot->corrFactor));
      y = arith::SubFOp::create(b, loc, y,
                                arith::MulFOp::create(b, loc, factor, corr));
    }
    memref::StoreOp::create(b, loc, castFromF32(b, loc, y, outElem), out,
                            ValueRange{xRows[i], j});
  }
  return success();
}

//===----------------------------------------------------------------------===//
// Backward
//===----------------------------------------------------------------------===//

/// Body of the backward function: for units [u0, u1) of the columns,
/// out[r0 + i, t] = Σ_j g[r0 + i, j] · W[w0 + j, t] over all n rows j; the
/// strip with the last unit also takes the leftover plain elements.
LogicalResult buildBackward(OpBuilder &b, Location loc, const Shape &s,
                            int64_t m, int64_t n, int64_t stripUnits,
                            ValueRange args) {
  Value bytes = args[0], g = args[1], out = args[2];
  Value u0 = args[3], u1 = args[4], r0 = args[5], w0 = args[6];
  Type outElem = cast<MemRefType>(out.getType()).getElementType();
  int64_t width = stripUnits * s.unit + (s.tail ? kLanes : 0);
  Value acc = memref::AllocaOp::create(
      b, loc, MemRefType::get({m, width}, b.getF32Type()));
  Value scratch;
  if (!hasVectorDecoder(s.format) || s.tail)
    scratch = memref::AllocaOp::create(
        b, loc, MemRefType::get({std::max(s.unit, kLanes)}, b.getF32Type()));
  Value c0 = cIndex(b, loc, 0), c1 = cIndex(b, loc, 1);
  SmallVector<Value> rows, accRows;
  for (int64_t i = 0; i < m; ++i) {
    rows.push_back(addIdx(b, loc, r0, cIndex(b, loc, i)));
    accRows.push_back(cIndex(b, loc, i));
  }
  auto vecF = VectorType::get({kLanes}, b.getF32Type());
  for (int64_t i = 0; i < m; ++i)
    for (int64_t t = 0; t < width; t += kLanes)
      vector::StoreOp::create(b, loc, zeroVec(b, loc), acc,
                              ValueRange{accRows[i], cIndex(b, loc, t)});
  Value col0 = mulIdx(b, loc, u0, s.unit);
  Value isLast = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, u1,
                                       cIndex(b, loc, s.numUnits));

  auto rowLoop = scf::ForOp::create(b, loc, c0, cIndex(b, loc, n), c1);
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(rowLoop.getBody());
    Value j = rowLoop.getInductionVar();
    Value rowByte = mulIdx(b, loc, addIdx(b, loc, w0, j), s.rowBytes);
    SmallVector<Value> gs;
    for (int64_t i = 0; i < m; ++i)
      gs.push_back(vector::BroadcastOp::create(
          b, loc, vecF, memref::LoadOp::create(b, loc, g, ValueRange{rows[i], j})));
    // acc[i, col - col0 ..) += g[i, j] · w
    auto axpy = [&](Value w, Value col) {
      Value t = arith::SubIOp::create(b, loc, col, col0);
      for (int64_t i = 0; i < m; ++i) {
        Value a = vector::LoadOp::create(b, loc, vecF, acc,
                                         ValueRange{accRows[i], t});
        a = vector::FMAOp::create(b, loc, gs[i], w, a);
        vector::StoreOp::create(b, loc, a, acc, ValueRange{accRows[i], t});
      }
    };
    auto unitLoop = scf::ForOp::create(b, loc, u0, u1, c1);
    {
      OpBuilder::InsertionGuard g2(b);
      b.setInsertionPointToStart(unitLoop.getBody());
      if (failed(decodeUnits(b, loc, s, bytes, rowByte,
                             unitLoop.getInductionVar(), 1, scratch, axpy)))
        return failure();
    }
    if (s.tail) {
      auto ifOp = scf::IfOp::create(b, loc, isLast, /*withElse=*/false);
      OpBuilder::InsertionGuard g2(b);
      b.setInsertionPointToStart(ifOp.thenBlock());
      VecEmitter e(b, loc, bytes,
                   addIdx(b, loc, rowByte,
                          cIndex(b, loc, s.numUnits * s.unitBytes)));
      FailureOr<Value> w =
          emitVectorTailDecode(e, s.format, s.blockBytes, s.tail, scratch);
      if (failed(w))
        return failure();
      axpy(*w, cIndex(b, loc, s.numUnits * s.unit));
    }
  }

  // out[r0 + i, col0 + t] = acc[i, t] for the strip's columns.
  Value count = mulIdx(b, loc, arith::SubIOp::create(b, loc, u1, u0), s.unit);
  if (s.tail)
    count = arith::SelectOp::create(
        b, loc, isLast, addIdx(b, loc, count, cIndex(b, loc, s.tail)), count);
  for (int64_t i = 0; i < m; ++i) {
    auto copy = scf::ForOp::create(b, loc, c0, count, c1);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(copy.getBody());
    Value t = copy.getInductionVar();
    Value v = memref::LoadOp::create(b, loc, acc, ValueRange{accRows[i], t});
    memref::StoreOp::create(b, loc, castFromF32(b, loc, v, outElem), out,
                            ValueRange{rows[i], addIdx(b, loc, col0, t)});
  }
  return success();
}

} // namespace

bool mlir::qcc::detail::useSmallNQMatmul(int64_t rows) {
  return rows >= 1 && rows <= kSmallNMaxRows;
}

LogicalResult mlir::qcc::detail::emitSmallNQMatmul(
    OpBuilder &b, Location loc, Operation *from, QTensorType wType, bool fwd,
    int64_t m, Value bytes, Value lhs2d, Value out2d, Value rowBase,
    Value wRowBase) {
  Shape s = shapeOf(wType);
  int64_t n = wType.getShape()[wType.getRank() - 2];
  auto bytesType = cast<MemRefType>(bytes.getType());
  auto lhsType = cast<MemRefType>(lhs2d.getType());
  auto outType = cast<MemRefType>(out2d.getType());
  Type index = b.getIndexType();
  SmallVector<Type> argTypes = {bytesType, lhsType, outType, index,
                                index,     index,   index};
  std::string name =
      ("__qcc_qmatmul_" + Twine(fwd ? "fwd" : "bwd") + "_m" + Twine(m) + "_" +
       stringifyQuantFormat(s.format) + "_" + Twine(n) + "x" + Twine(s.k) +
       "_" + Twine(bytesType.getNumElements()) + "_" + shapeName(lhsType) +
       "_" + shapeName(outType))
          .str();

  Value c0 = cIndex(b, loc, 0);
  if (fwd) {
    // The x sums the format's dot kernel needs, computed once per call.
    std::optional<DotKernelInfo> dot = getDotKernel(s.format);
    Value xs;
    if (dot && dot->xsumGroup) {
      int64_t group = dot->xsumGroup, groups = s.k / group;
      auto xsType = MemRefType::get({m, groups}, b.getF32Type());
      argTypes.push_back(xsType);
      xs = memref::AllocOp::create(b, loc, xsType);
      auto loop = scf::ForOp::create(b, loc, c0, cIndex(b, loc, groups),
                                     cIndex(b, loc, 1));
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(loop.getBody());
      Value g = loop.getInductionVar();
      for (int64_t i = 0; i < m; ++i) {
        Value v = vector::LoadOp::create(
            b, loc, VectorType::get({group}, b.getF32Type()), lhs2d,
            ValueRange{addIdx(b, loc, rowBase, cIndex(b, loc, i)),
                       mulIdx(b, loc, g, group)});
        Value sum = vector::ReductionOp::create(
            b, loc, vector::CombiningKind::ADD, v,
            arith::FastMathFlags::reassoc);
        memref::StoreOp::create(b, loc, sum, xs,
                                ValueRange{cIndex(b, loc, i), g});
      }
    }
    FailureOr<func::FuncOp> fn = getOrCreateFunction(
        b, from, name, argTypes, [&](OpBuilder &fb, ValueRange args) {
          return buildForward(fb, loc, s, m, args);
        });
    if (failed(fn))
      return failure();
    Value nTotal = cIndex(b, loc, n);
    auto par = scf::ParallelOp::create(
        b, loc, ValueRange{c0}, ValueRange{nTotal},
        ValueRange{cIndex(b, loc, kRowsPerTask)});
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(par.getBody());
    Value j0 = par.getInductionVars()[0];
    Value j1 = arith::MinSIOp::create(
        b, loc, nTotal, addIdx(b, loc, j0, cIndex(b, loc, kRowsPerTask)));
    SmallVector<Value> callArgs = {bytes, lhs2d, out2d, j0, j1, rowBase,
                                   wRowBase};
    if (xs)
      callArgs.push_back(xs);
    func::CallOp::create(b, loc, *fn, callArgs);
    return success();
  }

  int64_t stripUnits =
      std::max<int64_t>(1, kStripAccElems / m / s.unit);
  stripUnits = std::max<int64_t>(
      1, std::min<int64_t>(stripUnits, s.numUnits / kMinStrips));
  FailureOr<func::FuncOp> fn = getOrCreateFunction(
      b, from, name + "_s" + std::to_string(stripUnits), argTypes,
      [&](OpBuilder &fb, ValueRange args) {
        return buildBackward(fb, loc, s, m, n, stripUnits, args);
      });
  if (failed(fn))
    return failure();
  // At least one strip, so a row shorter than one unit still gets its tail.
  Value units = cIndex(b, loc, std::max<int64_t>(s.numUnits, 1));
  Value numUnits = cIndex(b, loc, s.numUnits);
  auto par = scf::ParallelOp::create(b, loc, ValueRange{c0},
                                     ValueRange{units},
                                     ValueRange{cIndex(b, loc, stripUnits)});
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(par.getBody());
  Value u0 = par.getInductionVars()[0];
  Value u1 = arith::MinSIOp::create(
      b, loc, numUnits, addIdx(b, loc, u0, cIndex(b, loc, stripUnits)));
  func::CallOp::create(b, loc, *fn,
                       ValueRange{bytes, lhs2d, out2d, u0, u1, rowBase,
                                  wRowBase});
  return success();
}
