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

#include "qcc/Conversion/QccToLoops/BlockDecode.h"

#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;
using namespace mlir::qcc;
using namespace mlir::qcc::detail;

namespace {

/// Forward: decode units (blocks) per iteration of the row's block loop,
/// so that each iteration has several independent accumulations.
constexpr int64_t kChunkElems = 128;
/// The same for formats decoded by the scalar emitter into a stack buffer.
constexpr int64_t kScalarChunkElems = 1024;
/// How far ahead of the decode W is prefetched, in bytes, into L2
/// (locality 2). Measured on the dev machine (docs/benchmarks.md): with
/// the hardware prefetcher alone a GEMV waited on memory at 10 GB/s per
/// core; 1-4 KiB ahead or into L1 helped less.
constexpr int64_t kPrefetchAhead = 16384;
/// Backward: the widest strip of dx columns per parallel iteration, in
/// f32 elements summed over the activation rows (8 KiB per buffer, two
/// buffers: more spilled out of L1 with 4 rows),
/// and the number of strips to aim for so that every thread has work.
constexpr int64_t kStripAccElems = 2048;
constexpr int64_t kMinStrips = 8;
/// Backward: W rows summed in one accumulator before it is added to the
/// strip's total.
constexpr int64_t kRowBlock = 64;

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

/// Decodes units [u, u + count) of a plain format (16 elements each) in the
/// W row starting at byte `rowByte`, passing each vector to `sink` with its
/// column (index) in the row.
void decodePlainUnits(OpBuilder &b, Location loc, const Shape &s, Value bytes,
                      Value rowByte, Value u, int64_t count,
                      function_ref<void(Value, Value)> sink) {
  for (int64_t k = 0; k < count; ++k) {
    Value unitIdx = k ? addIdx(b, loc, u, cIndex(b, loc, k)) : u;
    Value blockByte =
        addIdx(b, loc, rowByte, mulIdx(b, loc, unitIdx, s.unitBytes));
    VecEmitter e(b, loc, bytes, blockByte);
    emitPlainDecode(e, s.format, [&](Value v, int64_t) {
      sink(v, mulIdx(b, loc, unitIdx, s.unit));
    });
  }
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

/// The scaled-code form of the format (VectorDecode.h), if it has one.
struct Codes {
  int64_t group;      // G
  int64_t numGroups;  // per block
  bool hasOffsets;
};

std::optional<Codes> codesOf(const Shape &s) {
  bool hasOffsets;
  std::optional<int64_t> group = getCodeGroup(s.format, hasOffsets);
  if (!group)
    return std::nullopt;
  return Codes{*group, s.blockElems / *group, hasOffsets};
}

VectorType vecF(OpBuilder &b, int64_t n = kLanes) {
  return VectorType::get({n}, b.getF32Type());
}

Value zeros(OpBuilder &b, Location loc, int64_t n = kLanes) {
  return arith::ConstantOp::create(
      b, loc, vecF(b, n), DenseElementsAttr::get(vecF(b, n),
                                                 b.getF32FloatAttr(0)));
}

Value fma(OpBuilder &b, Location loc, Value x, Value y, Value acc) {
  return vector::FMAOp::create(b, loc, x, y, acc);
}

/// Lane `i` of `v` in all 16 lanes.
Value laneSplat(OpBuilder &b, Location loc, Value v, int64_t i) {
  return vector::BroadcastOp::create(b, loc, vecF(b),
                                     vector::ExtractOp::create(b, loc, v, i));
}

//===----------------------------------------------------------------------===//
// Forward
//===----------------------------------------------------------------------===//

/// The accumulators of a forward row: `chains` independent vector<16xf32>
/// chains per activation row (so the FMA latency is hidden even for one
/// row), then, for formats with offsets, one vector<numGroups> per row of
/// Σ offset · Σx.
struct FwdAccs {
  int64_t m, chains;
  SmallVector<Value> v;
  int64_t next = 0;
  int64_t nextChain() { return next++ % chains; }
  Value &main(int64_t i, int64_t c) { return v[i * chains + c]; }
  Value &corr(int64_t i) { return v[m * chains + i]; }
};

/// Body of the forward function: for W rows j in [j0, j1),
/// out[r0 + i, j] = Σ_t x[r0 + i, t] · W[w0 + j, t] for i < m. `xs` (for
/// formats with offsets) holds the sums of x per group: row i's at
/// xs[i, t / G].
LogicalResult buildForward(OpBuilder &b, Location loc, const Shape &s,
                           int64_t m, ValueRange args) {
  Value bytes = args[0], x = args[1], out = args[2];
  Value j0 = args[3], j1 = args[4], r0 = args[5], w0 = args[6];
  std::optional<Codes> codes = codesOf(s);
  Value xs = codes && codes->hasOffsets ? args[7] : Value();
  Type outElem = cast<MemRefType>(out.getType()).getElementType();
  int64_t chains = m == 1 ? 4 : m == 2 ? 2 : 1;
  // Partial dot products of the codes per group, scaled once per group,
  // pay off while they are fewer than the scale multiplies they replace.
  // (Groups of two vectors: a longer chain of FMAs into one partial would
  // wait on their latency.)
  bool partials = codes && codes->group == 2 * kLanes && m <= 2;
  // Formats decoded by the scalar emitter go through a stack buffer of
  // several blocks, decoded before any is read back: reading a vector right
  // after its elements were stored one by one stalls on store forwarding.
  bool scalarDecoded = !codes && !isPlainFormat(s.format);
  int64_t chunkUnits = std::max<int64_t>(
      1, (scalarDecoded ? kScalarChunkElems : kChunkElems) / s.unit);
  Value scratch;
  if (scalarDecoded || s.tail)
    scratch = memref::AllocaOp::create(
        b, loc,
        MemRefType::get({std::max(chunkUnits * s.unit, kLanes)},
                        b.getF32Type()));
  SmallVector<Value> xRows;
  for (int64_t i = 0; i < m; ++i)
    xRows.push_back(addIdx(b, loc, r0, cIndex(b, loc, i)));

  auto rowLoop = scf::ForOp::create(b, loc, j0, j1, cIndex(b, loc, 1));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(rowLoop.getBody());
  Value j = rowLoop.getInductionVar();
  Value rowByte = mulIdx(b, loc, addIdx(b, loc, w0, j), s.rowBytes);
  SmallVector<Value> init(m * chains, zeros(b, loc));
  if (codes && codes->hasOffsets)
    init.append(m, zeros(b, loc, codes->numGroups));

  auto loadX = [&](int64_t i, Value col, Value mask) -> Value {
    if (mask)
      return vector::MaskedLoadOp::create(b, loc, vecF(b), x,
                                          ValueRange{xRows[i], col}, mask,
                                          zeros(b, loc));
    return vector::LoadOp::create(b, loc, vecF(b), x,
                                  ValueRange{xRows[i], col});
  };
  // acc[i] += w · x[i, col..col+16) on the next chain.
  auto fmaInto = [&](FwdAccs &accs, Value w, Value col, Value mask) {
    int64_t c = accs.nextChain();
    for (int64_t i = 0; i < m; ++i)
      accs.main(i, c) = fma(b, loc, w, loadX(i, col, mask), accs.main(i, c));
  };
  // One block in scaled codes.
  auto codeBlock = [&](FwdAccs &accs, Value unitIdx) {
    Value col0 = mulIdx(b, loc, unitIdx, s.unit);
    auto col = [&](int64_t first) {
      return addIdx(b, loc, col0, cIndex(b, loc, first));
    };
    VecEmitter e(b, loc, bytes,
                 addIdx(b, loc, rowByte, mulIdx(b, loc, unitIdx, s.unitBytes)));
    auto [scales, offsets] = emitCodeScales(e, s.format);
    int64_t group = -1;
    SmallVector<Value> part(m);
    auto flush = [&] {
      if (group < 0)
        return;
      Value scale = laneSplat(b, loc, scales, group);
      int64_t c = accs.nextChain();
      for (int64_t i = 0; i < m; ++i)
        accs.main(i, c) = fma(b, loc, scale, part[i], accs.main(i, c));
    };
    emitCodes(e, s.format, [&](Value code, int64_t first) {
      int64_t g = first / codes->group;
      if (!partials) {
        fmaInto(accs, arith::MulFOp::create(b, loc, laneSplat(b, loc, scales, g),
                                            code),
                col(first), Value());
        return;
      }
      if (g != group) {
        flush();
        group = g;
        for (int64_t i = 0; i < m; ++i)
          part[i] = arith::MulFOp::create(b, loc, code,
                                          loadX(i, col(first), Value()));
        return;
      }
      for (int64_t i = 0; i < m; ++i)
        part[i] = fma(b, loc, code, loadX(i, col(first), Value()), part[i]);
    });
    flush();
    if (offsets) {
      Value g0 = mulIdx(b, loc, unitIdx, codes->numGroups);
      for (int64_t i = 0; i < m; ++i) {
        Value sums = vector::LoadOp::create(
            b, loc, vecF(b, codes->numGroups), xs,
            ValueRange{cIndex(b, loc, i), g0});
        accs.corr(i) = fma(b, loc, offsets, sums, accs.corr(i));
      }
    }
  };
  // A loop over units [lb, ub) in steps of `step` units, carrying the
  // accumulators.
  auto unitLoop = [&](int64_t lb, int64_t ub, int64_t step,
                      ArrayRef<Value> accsIn) -> FailureOr<SmallVector<Value>> {
    if (lb >= ub)
      return SmallVector<Value>(accsIn);
    auto loop =
        scf::ForOp::create(b, loc, cIndex(b, loc, lb), cIndex(b, loc, ub),
                           cIndex(b, loc, step), accsIn);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(loop.getBody());
    Value u = loop.getInductionVar();
    FwdAccs accs{m, chains, SmallVector<Value>(loop.getRegionIterArgs())};
    prefetch(b, loc, bytes,
             addIdx(b, loc, rowByte, mulIdx(b, loc, u, s.unitBytes)),
             step * s.unitBytes);
    if (codes) {
      for (int64_t k = 0; k < step; ++k)
        codeBlock(accs, k ? addIdx(b, loc, u, cIndex(b, loc, k)) : u);
    } else if (scalarDecoded) {
      for (int64_t k = 0; k < step; ++k) {
        Value unitIdx = addIdx(b, loc, u, cIndex(b, loc, k));
        if (failed(emitBlockDecode(
                b, loc, s.format,
                {bytes,
                 addIdx(b, loc, rowByte, mulIdx(b, loc, unitIdx, s.unitBytes)),
                 scratch, cIndex(b, loc, k * s.unit)})))
          return failure();
      }
      Value col0 = mulIdx(b, loc, u, s.unit);
      for (int64_t v = 0; v < step * s.unit; v += kLanes) {
        Value w = vector::LoadOp::create(b, loc, vecF(b), scratch,
                                         ValueRange{cIndex(b, loc, v)});
        fmaInto(accs, w, addIdx(b, loc, col0, cIndex(b, loc, v)), Value());
      }
    } else {
      decodePlainUnits(b, loc, s, bytes, rowByte, u, step,
                       [&](Value w, Value col) {
                         fmaInto(accs, w, col, Value());
                       });
    }
    scf::YieldOp::create(b, loc, accs.v);
    return SmallVector<Value>(loop.getResults());
  };

  int64_t mainUnits = s.numUnits / chunkUnits * chunkUnits;
  FailureOr<SmallVector<Value>> res = unitLoop(0, mainUnits, chunkUnits, init);
  if (succeeded(res))
    res = unitLoop(mainUnits, s.numUnits, 1, *res);
  if (failed(res))
    return failure();
  FwdAccs accs{m, chains, *res};
  if (s.tail) {
    // The last k % 16 elements of a plain format.
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
    fmaInto(accs, *w, cIndex(b, loc, s.numUnits * s.unit), mask);
  }
  auto reassoc = arith::FastMathFlags::reassoc;
  for (int64_t i = 0; i < m; ++i) {
    Value sum = accs.main(i, 0);
    for (int64_t c = 1; c < chains; ++c)
      sum = arith::AddFOp::create(b, loc, sum, accs.main(i, c));
    Value y = vector::ReductionOp::create(b, loc, vector::CombiningKind::ADD,
                                          sum, reassoc);
    if (codes && codes->hasOffsets)
      y = arith::SubFOp::create(
          b, loc, y,
          vector::ReductionOp::create(b, loc, vector::CombiningKind::ADD,
                                      accs.corr(i), reassoc));
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
/// strip with the last unit also takes the leftover plain elements. The
/// strip of dx accumulates in `acc`; for formats with offsets, Σ_j g ·
/// offset per group in `corr`, subtracted when the strip is written out.
LogicalResult buildBackward(OpBuilder &b, Location loc, const Shape &s,
                            int64_t m, int64_t n, int64_t stripUnits,
                            ValueRange args) {
  Value bytes = args[0], g = args[1], out = args[2];
  Value u0 = args[3], u1 = args[4], r0 = args[5], w0 = args[6];
  Type outElem = cast<MemRefType>(out.getType()).getElementType();
  std::optional<Codes> codes = codesOf(s);
  int64_t width = stripUnits * s.unit + (s.tail ? kLanes : 0);
  Value acc = memref::AllocaOp::create(
      b, loc, MemRefType::get({m, width}, b.getF32Type()));
  Value corr;
  if (codes && codes->hasOffsets)
    corr = memref::AllocaOp::create(
        b, loc,
        MemRefType::get({m, stripUnits * codes->numGroups}, b.getF32Type()));
  // Formats decoded by the scalar emitter decode the row's whole strip
  // into a stack buffer before reading it back (see buildForward).
  bool scalarDecoded = !codes && !isPlainFormat(s.format);
  Value scratch;
  if (scalarDecoded || s.tail)
    scratch = memref::AllocaOp::create(
        b, loc,
        MemRefType::get({std::max(stripUnits * s.unit, kLanes)},
                        b.getF32Type()));
  Value c0 = cIndex(b, loc, 0), c1 = cIndex(b, loc, 1);
  SmallVector<Value> rows, accRows;
  for (int64_t i = 0; i < m; ++i) {
    rows.push_back(addIdx(b, loc, r0, cIndex(b, loc, i)));
    accRows.push_back(cIndex(b, loc, i));
  }
  // buffer[i, t] = 0 for i < m, t < elems (f32 vectors where they fit).
  auto zeroFill = [&](Value buffer, int64_t elems) {
    int64_t step = elems % kLanes ? 1 : kLanes;
    auto loop = scf::ForOp::create(b, loc, c0, cIndex(b, loc, elems),
                                   cIndex(b, loc, step));
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(loop.getBody());
    for (int64_t i = 0; i < m; ++i) {
      SmallVector<Value, 2> idx = {accRows[i], loop.getInductionVar()};
      if (step == 1)
        memref::StoreOp::create(
            b, loc, arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0)),
            buffer, idx);
      else
        vector::StoreOp::create(b, loc, zeros(b, loc), buffer, idx);
    }
  };
  // The rows accumulate in blocks of kRowBlock into acc / corr, each block
  // then added into `total`: partial sums over all N rows in one f32
  // accumulator would lose precision as the sums grow.
  Value total = memref::AllocaOp::create(
      b, loc, MemRefType::get({m, width}, b.getF32Type()));
  zeroFill(total, width);
  Value col0 = mulIdx(b, loc, u0, s.unit);
  Value isLast = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, u1,
                                       cIndex(b, loc, s.numUnits));

  Value nTotal = cIndex(b, loc, n);
  auto blockLoop = scf::ForOp::create(b, loc, c0, nTotal,
                                      cIndex(b, loc, kRowBlock));
  OpBuilder::InsertionGuard blockGuard(b);
  b.setInsertionPointToStart(blockLoop.getBody());
  Value jb = blockLoop.getInductionVar();
  zeroFill(acc, width);
  if (corr)
    zeroFill(corr, stripUnits * codes->numGroups);
  auto rowLoop = scf::ForOp::create(
      b, loc, jb,
      arith::MinSIOp::create(b, loc, nTotal,
                             addIdx(b, loc, jb, cIndex(b, loc, kRowBlock))),
      c1);
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(rowLoop.getBody());
    Value j = rowLoop.getInductionVar();
    Value rowByte = mulIdx(b, loc, addIdx(b, loc, w0, j), s.rowBytes);
    // The same strip of the row kPrefetchAhead bytes of strips ahead.
    int64_t stripBytes = stripUnits * s.unitBytes;
    int64_t ahead = std::max<int64_t>(1, kPrefetchAhead / stripBytes);
    prefetch(b, loc, bytes,
             addIdx(b, loc, rowByte,
                    addIdx(b, loc, mulIdx(b, loc, u0, s.unitBytes),
                           cIndex(b, loc, ahead * s.rowBytes -
                                              kPrefetchAhead))),
             stripBytes);
    SmallVector<Value> gs;
    for (int64_t i = 0; i < m; ++i)
      gs.push_back(memref::LoadOp::create(b, loc, g, ValueRange{rows[i], j}));
    // acc[i, t..t+16) += coef[i] · w
    auto axpy = [&](ArrayRef<Value> coef, Value w, Value t) {
      for (int64_t i = 0; i < m; ++i) {
        Value a = vector::LoadOp::create(b, loc, vecF(b), acc,
                                         ValueRange{accRows[i], t});
        a = fma(b, loc, coef[i], w, a);
        vector::StoreOp::create(b, loc, a, acc, ValueRange{accRows[i], t});
      }
    };
    SmallVector<Value> gSplat;
    for (int64_t i = 0; i < m; ++i)
      gSplat.push_back(vector::BroadcastOp::create(b, loc, vecF(b), gs[i]));

    auto unitLoop = scf::ForOp::create(b, loc, u0, u1, c1);
    {
      OpBuilder::InsertionGuard g2(b);
      b.setInsertionPointToStart(unitLoop.getBody());
      Value u = unitLoop.getInductionVar();
      Value t0 = mulIdx(b, loc, arith::SubIOp::create(b, loc, u, u0), s.unit);
      if (codes) {
        VecEmitter e(b, loc, bytes,
                     addIdx(b, loc, rowByte, mulIdx(b, loc, u, s.unitBytes)));
        auto [scales, offsets] = emitCodeScales(e, s.format);
        int64_t ng = codes->numGroups;
        SmallVector<Value> coefs; // g[i] · scale, per row
        for (int64_t i = 0; i < m; ++i)
          coefs.push_back(arith::MulFOp::create(
              b, loc, vector::BroadcastOp::create(b, loc, vecF(b, ng), gs[i]),
              scales));
        int64_t group = -1;
        SmallVector<Value> coef(m);
        emitCodes(e, s.format, [&](Value code, int64_t first) {
          if (first / codes->group != group) {
            group = first / codes->group;
            for (int64_t i = 0; i < m; ++i)
              coef[i] = laneSplat(b, loc, coefs[i], group);
          }
          axpy(coef, code, addIdx(b, loc, t0, cIndex(b, loc, first)));
        });
        if (offsets) {
          Value g0 = mulIdx(b, loc, arith::SubIOp::create(b, loc, u, u0), ng);
          for (int64_t i = 0; i < m; ++i) {
            Value c = vector::LoadOp::create(b, loc, vecF(b, ng), corr,
                                             ValueRange{accRows[i], g0});
            c = fma(b, loc,
                    vector::BroadcastOp::create(b, loc, vecF(b, ng), gs[i]),
                    offsets, c);
            vector::StoreOp::create(b, loc, c, corr,
                                    ValueRange{accRows[i], g0});
          }
        }
      } else if (scalarDecoded) {
        if (failed(emitBlockDecode(
                b, loc, s.format,
                {bytes, addIdx(b, loc, rowByte, mulIdx(b, loc, u, s.unitBytes)),
                 scratch, t0})))
          return failure();
      } else {
        decodePlainUnits(b, loc, s, bytes, rowByte, u, 1,
                         [&](Value w, Value col) {
                           axpy(gSplat, w,
                                arith::SubIOp::create(b, loc, col, col0));
                         });
      }
    }
    if (scalarDecoded) {
      // acc[i, t..) += g[i, j] · strip[t..) over the decoded strip.
      auto vecLoop = scf::ForOp::create(
          b, loc, c0,
          mulIdx(b, loc, arith::SubIOp::create(b, loc, u1, u0), s.unit),
          cIndex(b, loc, kLanes));
      OpBuilder::InsertionGuard g2(b);
      b.setInsertionPointToStart(vecLoop.getBody());
      Value t = vecLoop.getInductionVar();
      axpy(gSplat,
           vector::LoadOp::create(b, loc, vecF(b), scratch, ValueRange{t}), t);
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
      axpy(gSplat, *w,
           arith::SubIOp::create(b, loc,
                                 cIndex(b, loc, s.numUnits * s.unit), col0));
    }
  }

  {
    // total[i, t] += acc[i, t] - corr[i, t / G]
    auto flush = scf::ForOp::create(b, loc, c0, cIndex(b, loc, width),
                                    cIndex(b, loc, kLanes));
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(flush.getBody());
    Value t = flush.getInductionVar();
    for (int64_t i = 0; i < m; ++i) {
      SmallVector<Value, 2> idx = {accRows[i], t};
      Value v = vector::LoadOp::create(b, loc, vecF(b), acc, idx);
      if (corr) {
        Value grp =
            arith::DivUIOp::create(b, loc, t, cIndex(b, loc, codes->group));
        v = arith::SubFOp::create(
            b, loc, v,
            vector::BroadcastOp::create(
                b, loc, vecF(b),
                memref::LoadOp::create(b, loc, corr,
                                       ValueRange{accRows[i], grp})));
      }
      v = arith::AddFOp::create(
          b, loc, vector::LoadOp::create(b, loc, vecF(b), total, idx), v);
      vector::StoreOp::create(b, loc, v, total, idx);
    }
  }
  b.setInsertionPointAfter(blockLoop);

  // out[r0 + i, col0 + t] = total[i, t] for the strip.
  Value count = mulIdx(b, loc, arith::SubIOp::create(b, loc, u1, u0), s.unit);
  if (s.tail)
    count = arith::SelectOp::create(
        b, loc, isLast, addIdx(b, loc, count, cIndex(b, loc, s.tail)), count);
  for (int64_t i = 0; i < m; ++i) {
    auto copy = scf::ForOp::create(b, loc, c0, count, c1);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(copy.getBody());
    Value t = copy.getInductionVar();
    Value v = memref::LoadOp::create(b, loc, total, ValueRange{accRows[i], t});
    memref::StoreOp::create(b, loc, castFromF32(b, loc, v, outElem), out,
                            ValueRange{rows[i], addIdx(b, loc, col0, t)});
  }
  return success();
}

} // namespace

std::string mlir::qcc::detail::memrefShapeName(MemRefType t) {
  return shapeName(t);
}

FailureOr<func::FuncOp> mlir::qcc::detail::getOrCreatePrivateFunction(
    OpBuilder &b, Operation *from, StringRef name, ArrayRef<Type> argTypes,
    function_ref<LogicalResult(OpBuilder &, ValueRange)> body) {
  return getOrCreateFunction(b, from, name, argTypes, body);
}

void mlir::qcc::detail::prefetchWeight(OpBuilder &b, Location loc, Value bytes,
                                       Value byte, int64_t count) {
  prefetch(b, loc, bytes, byte, count);
}

bool mlir::qcc::detail::useSmallNQMatmul(int64_t rows, bool fwd) {
  return rows >= 1 && rows <= (fwd ? kSmallNMaxRowsFwd : kSmallNMaxRowsBwd);
}

LogicalResult mlir::qcc::detail::emitSmallNQMatmul(
    OpBuilder &b, Location loc, Operation *from, QTensorType wType, bool fwd,
    int64_t m, Value bytes, Value lhs2d, Value out2d, Value rowBase,
    Value wRowBase, const QccToLoopsOptions &options) {
  if (fwd && options.int8Activations && supportsInt8Gemv(wType))
    return emitInt8SmallNQMatmul(b, loc, from, wType, m, bytes, lhs2d, out2d,
                                 rowBase, wRowBase, options.int8Dot);
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

  Value c0 = cIndex(b, loc, 0), c1 = cIndex(b, loc, 1);
  if (fwd) {
    // The sums of x per group of the scaled codes, once per call.
    std::optional<Codes> codes = codesOf(s);
    Value xs;
    if (codes && codes->hasOffsets) {
      int64_t group = codes->group, groups = s.k / group;
      auto xsType = MemRefType::get({m, groups}, b.getF32Type());
      argTypes.push_back(xsType);
      xs = memref::AllocOp::create(b, loc, xsType);
      auto loop = scf::ForOp::create(b, loc, c0, cIndex(b, loc, groups), c1);
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(loop.getBody());
      Value grp = loop.getInductionVar();
      for (int64_t i = 0; i < m; ++i) {
        Value v = vector::LoadOp::create(
            b, loc, vecF(b, group), lhs2d,
            ValueRange{addIdx(b, loc, rowBase, cIndex(b, loc, i)),
                       mulIdx(b, loc, grp, group)});
        Value sum = vector::ReductionOp::create(
            b, loc, vector::CombiningKind::ADD, v,
            arith::FastMathFlags::reassoc);
        memref::StoreOp::create(b, loc, sum, xs,
                                ValueRange{cIndex(b, loc, i), grp});
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
        ValueRange{cIndex(b, loc, kSmallNRowsPerTask)});
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(par.getBody());
    Value j0 = par.getInductionVars()[0];
    Value j1 = arith::MinSIOp::create(
        b, loc, nTotal, addIdx(b, loc, j0, cIndex(b, loc, kSmallNRowsPerTask)));
    SmallVector<Value> callArgs = {bytes, lhs2d, out2d, j0, j1, rowBase,
                                   wRowBase};
    if (xs)
      callArgs.push_back(xs);
    func::CallOp::create(b, loc, *fn, callArgs);
    return success();
  }

  int64_t stripUnits = std::max<int64_t>(1, kStripAccElems / m / s.unit);
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
  auto par = scf::ParallelOp::create(b, loc, ValueRange{c0}, ValueRange{units},
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
