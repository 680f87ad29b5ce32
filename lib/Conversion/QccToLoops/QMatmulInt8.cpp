//===- QMatmulInt8.cpp - GEMV on int8-quantized activations ---------------===//
//
// The opt-in forward few-rows qmatmul of `int8-activations` (ggml's method
// for its quantized matmuls): instead of decoding W to f32 and multiplying
// with f32 activations, the activations are quantized to int8 once per
// call and each W block's integer codes are multiplied with them in integer
// arithmetic, the scales applied once per group in f32.
//
//  - Prologue (once per call, serial): each activation row is cut into
//    blocks of A elements (A = 32 for q4_0 / q8_0, ggml's q8_0; A = 256 for
//    the K-quants, ggml's q8_K) and quantized as d = max|x| / 127, codes
//    c = roundeven(x / d) (|c| <= 127; d = 0 gives codes 0), into heap
//    buffers: the codes (m x K i8), d per block (f32), and, for formats
//    whose weight groups have offsets, d · Σ c per weight group of G
//    elements (the activation's contribution to the offset term).
//  - Row loop: the weight's codes are formed as unsigned bytes 64 at a time
//    (q4_0 / q4_K nibbles, q6_K's 6-bit codes; q8_0's signed codes as
//    |q| with the sign moved onto the activation byte, as ggml does), and
//    multiplied with the activation codes in fours into 16 i32 lanes
//    (vpdpbusd's operation; emitted as vpdpbusd, as AVX2's pmaddubsw +
//    pmaddwd, or as portable vector ops, see Int8Dot; all exact, so all
//    give the same lanes). The lanes are converted to f32 and multiplied
//    by (weight group scale) · (activation block scale) into f32
//    accumulators (q4_0 / q8_0: the products of an iteration's eight
//    block scales formed in one vector multiply); the offsets (q4_0's 8d,
//    q6_K's 32·d·sc, q4_K's dmin·m) against the activation sums
//    accumulate beside them.
//
// Every product of integers is exact (|lane| <= 4·255·127); the only
// inexactness against the f32 path is the rounding of x to 8 bits per
// block, |x - d·c| <= d / 2 = max|x| / 254 per element. Each row's result
// depends only on its own activations: the same whatever the number of
// rows, the threads or the Int8Dot.
//
//===----------------------------------------------------------------------===//

#include "LoweringUtils.h"
#include "VectorDecode.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;
using namespace mlir::qcc;
using namespace mlir::qcc::detail;

namespace {

/// Elements per integer dot product: 64 bytes, one AVX-512 register.
constexpr int64_t kDotElems = 64;
/// Independent f32 accumulators per activation row (fixed, so that a row's
/// result does not depend on how many rows are computed together).
constexpr int64_t kChains = 2;

struct Int8Shape {
  QuantFormat format;
  int64_t blockElems, blockBytes;
  int64_t k, numBlocks, rowBytes;
  int64_t actBlock; // A: activation elements per int8 scale
  int64_t group;    // G: weight elements per scale (and offset)
  bool hasOffsets;
  bool signedCodes; // q8_0: codes are signed bytes
  /// q4_0 / q8_0: the group offset as a multiple of the scale (q4_0's 8d,
  /// see emitCodeScales), so that an iteration's offsets are one vector
  /// multiply of its scales.
  int64_t legacyOffset;
  bool legacy() const { return blockElems == 32; }
};

Int8Shape int8ShapeOf(QTensorType type) {
  Int8Shape s;
  s.format = type.getFormat();
  s.blockElems = type.getBlockElems();
  s.blockBytes = type.getBlockBytes();
  s.k = type.getShape().back();
  s.numBlocks = s.k / s.blockElems;
  s.rowBytes = s.numBlocks * s.blockBytes;
  s.actBlock = s.blockElems;
  bool hasOffsets;
  s.group = *getCodeGroup(s.format, hasOffsets);
  s.hasOffsets = hasOffsets;
  s.signedCodes = s.format == QuantFormat::Q8_0;
  s.legacyOffset = s.format == QuantFormat::Q4_0 ? 8 : 0;
  return s;
}

Value addIdx(OpBuilder &b, Location loc, Value a, int64_t c) {
  return c ? arith::AddIOp::create(b, loc, a, cIndex(b, loc, c)).getResult()
           : a;
}
Value addIdx(OpBuilder &b, Location loc, Value a, Value c) {
  return arith::AddIOp::create(b, loc, a, c);
}
Value mulIdx(OpBuilder &b, Location loc, Value a, int64_t c) {
  return arith::MulIOp::create(b, loc, a, cIndex(b, loc, c));
}

VectorType vecOf(Type elem, int64_t n) { return VectorType::get({n}, elem); }

/// Lanes [0, n) of `a` followed by lanes [0, n) of `c` (same length n).
Value concat(OpBuilder &b, Location loc, Value a, Value c) {
  int64_t n = cast<VectorType>(a.getType()).getDimSize(0);
  SmallVector<int64_t> mask;
  for (int64_t i = 0; i < 2 * n; ++i)
    mask.push_back(i);
  return vector::ShuffleOp::create(b, loc, a, c, mask);
}

/// Lanes [first, first + n) of `v`.
Value slice(OpBuilder &b, Location loc, Value v, int64_t first, int64_t n) {
  SmallVector<int64_t> mask;
  for (int64_t i = 0; i < n; ++i)
    mask.push_back(first + i);
  return vector::ShuffleOp::create(b, loc, v, v, mask);
}

Value splatConst(OpBuilder &b, Location loc, VectorType t, Attribute a) {
  return arith::ConstantOp::create(b, loc, t, DenseElementsAttr::get(t, a));
}

Value callIntrinsic(OpBuilder &b, Location loc, Type result, StringRef name,
                    ValueRange args) {
  return LLVM::CallIntrinsicOp::create(b, loc, result, b.getStringAttr(name),
                                       args)
      ->getResult(0);
}

/// The name of the private function that computes dotLanes with the
/// target instructions of `dot` (declared during lowering, defined by
/// defineInt8DotFunctions once buffers are deallocated: the buffer
/// deallocation passes reject llvm.call_intrinsic, an op with unknown
/// memory effects).
const char *dotFunctionName(Int8Dot dot) {
  return dot == Int8Dot::Avx2 ? "__qcc_i8dot_avx2" : "__qcc_i8dot_avx512vnni";
}

/// The 16 i32 lanes sc[l] · Σ_{k<4} u[4l + k] · a[4l + k] of 64 unsigned
/// bytes `u`, 64 signed bytes `a` and the lane scales `sc` (vector<16xi32>,
/// |sc| < 2^15). Every formulation is exact for the operands here (u <= 128
/// where pmaddubsw's i16 pair sums could saturate: q8_0's |q|; u <= 63
/// otherwise; |sc| <= 128).
Value dotLanesInline(OpBuilder &b, Location loc, Int8Dot dot, Value u,
                     Value a, Value sc) {
  Type i16 = b.getI16Type(), i32 = b.getI32Type();
  switch (dot) {
  case Int8Dot::Avx512Vnni: {
    Value zero = splatConst(b, loc, vecOf(i32, 16), b.getI32IntegerAttr(0));
    Value lanes = callIntrinsic(b, loc, vecOf(i32, 16),
                                "llvm.x86.avx512.vpdpbusd.512", {zero, u, a});
    return arith::MulIOp::create(b, loc, lanes, sc);
  }
  case Int8Dot::Avx2: {
    // pmaddubsw: i16 sums of pairs; pmaddwd against the scales, each i32
    // lane's scale in both of its i16 lanes: sc · (sum of four).
    Value sc16 = arith::TruncIOp::create(b, loc, vecOf(i16, 16), sc);
    SmallVector<int64_t> twice;
    for (int64_t l = 0; l < 32; ++l)
      twice.push_back(l / 2);
    Value sc2 = vector::ShuffleOp::create(b, loc, sc16, sc16, twice);
    Value half[2];
    for (int h = 0; h < 2; ++h) {
      Value pairs = callIntrinsic(
          b, loc, vecOf(i16, 16), "llvm.x86.avx2.pmadd.ub.sw",
          {slice(b, loc, u, 32 * h, 32), slice(b, loc, a, 32 * h, 32)});
      half[h] = callIntrinsic(b, loc, vecOf(i32, 8), "llvm.x86.avx2.pmadd.wd",
                              {pairs, slice(b, loc, sc2, 16 * h, 16)});
    }
    return concat(b, loc, half[0], half[1]);
  }
  case Int8Dot::Generic: {
    // |u · a| <= 255 · 127 fits i16. Pairs and then fours of adjacent
    // products are summed by reinterpreting the lanes as twice as wide
    // (little-endian: the even element is the low half) and adding the
    // sign-extended halves: shifts and adds on every target, where strided
    // shuffles would cost permutes.
    Type i64 = b.getI64Type();
    Value p = arith::MulIOp::create(
        b, loc, arith::ExtUIOp::create(b, loc, vecOf(i16, 64), u),
        arith::ExtSIOp::create(b, loc, vecOf(i16, 64), a));
    Value w32 = vector::BitCastOp::create(b, loc, vecOf(i32, 32), p);
    auto c32 = [&](int64_t v) {
      return splatConst(b, loc, vecOf(i32, 32), b.getI32IntegerAttr(v));
    };
    Value lo = arith::ShRSIOp::create(
        b, loc, arith::ShLIOp::create(b, loc, w32, c32(16)), c32(16));
    Value hi = arith::ShRSIOp::create(b, loc, w32, c32(16));
    Value pairs = arith::AddIOp::create(b, loc, lo, hi);
    Value w64 = vector::BitCastOp::create(b, loc, vecOf(i64, 16), pairs);
    Value lo32 = arith::TruncIOp::create(b, loc, vecOf(i32, 16), w64);
    Value hi32 = arith::TruncIOp::create(
        b, loc, vecOf(i32, 16),
        arith::ShRSIOp::create(
            b, loc, w64,
            splatConst(b, loc, vecOf(i64, 16), b.getI64IntegerAttr(32))));
    return arith::MulIOp::create(
        b, loc, arith::AddIOp::create(b, loc, lo32, hi32), sc);
  }
  }
  llvm_unreachable("unknown Int8Dot");
}

FunctionType dotFunctionType(OpBuilder &b) {
  Type i8 = b.getI8Type(), i32 = b.getI32Type();
  return b.getFunctionType({vecOf(i8, 64), vecOf(i8, 64), vecOf(i32, 16)},
                           {vecOf(i32, 16)});
}

/// dotLanes: inline for the generic formulation, else a call of the target
/// function (declared in the module of `from` on first use).
Value dotLanes(OpBuilder &b, Location loc, Operation *from, Int8Dot dot,
               Value u, Value a, Value sc) {
  if (dot == Int8Dot::Generic)
    return dotLanesInline(b, loc, dot, u, a, sc);
  auto module = from->getParentOfType<ModuleOp>();
  StringRef name = dotFunctionName(dot);
  auto fn = module.lookupSymbol<func::FuncOp>(name);
  if (!fn) {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(module.getBody());
    fn = func::FuncOp::create(b, loc, name, dotFunctionType(b));
    fn.setPrivate();
  }
  return func::CallOp::create(b, loc, fn, ValueRange{u, a, sc}).getResult(0);
}

/// A splat of the i8 constant `v` shaped like `like`.
Value splatI8(OpBuilder &b, Location loc, int64_t v, Value like) {
  auto t = cast<VectorType>(like.getType());
  return splatConst(b, loc, t, b.getIntegerAttr(b.getI8Type(), v));
}
Value andI8(OpBuilder &b, Location loc, Value v, int64_t m) {
  return arith::AndIOp::create(b, loc, v, splatI8(b, loc, m, v));
}
Value shrI8(OpBuilder &b, Location loc, Value v, int64_t s) {
  return s ? arith::ShRUIOp::create(b, loc, v, splatI8(b, loc, s, v))
                 .getResult()
           : v;
}
Value shlI8(OpBuilder &b, Location loc, Value v, int64_t s) {
  return s ? arith::ShLIOp::create(b, loc, v, splatI8(b, loc, s, v)).getResult()
           : v;
}

/// The 32 codes of a q4_0 / q8_0 block at `e.blockByte` as vector<32xi8>
/// (q4_0: 0..15, element j < 16 the low nibble of qs[j], j + 16 the high
/// one; q8_0: the signed codes).
Value legacyBlockCodes(VecEmitter &e, QuantFormat format) {
  if (format == QuantFormat::Q8_0)
    return e.loadBytes(2, 32);
  // The 16 bytes twice, the second copy shifted right by 4 as i32 lanes
  // (one variable shift instead of a shift and an insert), then masked.
  OpBuilder &b = e.b;
  Location loc = e.loc;
  Value qs = e.loadBytes(2, 16);
  Value twice = vector::BitCastOp::create(b, loc, vecOf(b.getI32Type(), 8),
                                          concat(b, loc, qs, qs));
  Value shifts = arith::ConstantOp::create(
      b, loc, vecOf(b.getI32Type(), 8),
      DenseElementsAttr::get(vecOf(b.getI32Type(), 8),
                             ArrayRef<int32_t>{0, 0, 0, 0, 4, 4, 4, 4}));
  Value shifted = vector::BitCastOp::create(
      b, loc, vecOf(b.getI8Type(), 32),
      arith::ShRUIOp::create(b, loc, twice, shifts));
  return andI8(b, loc, shifted, 0xf);
}

/// The unsigned codes of elements [64c, 64c + 64) of a q4_K / q6_K block
/// at `e.blockByte`, as vector<64xi8>.
Value kQuantChunkCodes(VecEmitter &e, QuantFormat format, int64_t c) {
  OpBuilder &b = e.b;
  Location loc = e.loc;
  if (format == QuantFormat::Q4_K) {
    // qs[32c..32c+32): low nibbles are elements 64c.., high 64c + 32...
    Value q = e.loadBytes(16 + 32 * c, 32);
    return concat(b, loc, andI8(b, loc, q, 0xf), shrI8(b, loc, q, 4));
  }
  // q6_K (VectorDecode.cpp, emitCodes): element 128h + 32k + l is nibble
  // k / 2 of ql[64h + 32(k % 2) + l] with bits 2k..2k+1 of qh[32h + l] as
  // bits 4..5. Chunk c = 2h + p holds k = 2p and 2p + 1.
  int64_t h = c / 2, p = c % 2;
  Value qh = e.loadBytes(128 + 32 * h, 32);
  Value half[2];
  for (int64_t kk = 0; kk < 2; ++kk) {
    int64_t k = 2 * p + kk;
    Value ql = e.loadBytes(64 * h + 32 * (k % 2), 32);
    Value low = k / 2 ? shrI8(b, loc, ql, 4) : andI8(b, loc, ql, 0xf);
    Value high = shlI8(b, loc, andI8(b, loc, shrI8(b, loc, qh, 2 * k), 3), 4);
    half[kk] = arith::OrIOp::create(b, loc, low, high);
  }
  return concat(b, loc, half[0], half[1]);
}

/// For q8_0: (|q|, the activation bytes with q's sign) so that |q| · a' =
/// q · a (|a| <= 127, so -a is exact; |q| = 128 for q = -128 as u8).
std::pair<Value, Value> moveSign(OpBuilder &b, Location loc, Value q, Value a) {
  Value zero = splatI8(b, loc, 0, q);
  Value neg = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, q, zero);
  Value u = math::AbsIOp::create(b, loc, q);
  Value sa = arith::SelectOp::create(
      b, loc, neg, arith::SubIOp::create(b, loc, zero, a), a);
  return {u, sa};
}

/// The 16-lane f32 vector whose lane l is `scales[(first + 4l) / G]`
/// (`scales` a vector<n x f32> of consecutive groups starting at element 0).
Value laneScales(OpBuilder &b, Location loc, Value scales, int64_t first,
                 int64_t group) {
  SmallVector<int64_t> mask;
  for (int64_t l = 0; l < 16; ++l)
    mask.push_back((first + 4 * l) / group);
  return vector::ShuffleOp::create(b, loc, scales, scales, mask);
}

/// Body of the function: for W rows j in [j0, j1), out[r0 + i, j] =
/// Σ_t x̂[i, t] · W[w0 + j, t] for i < m, x̂ the quantized activations
/// (codes, scales `ad`, offset sums `xo`, indexed by i).
LogicalResult buildInt8Forward(OpBuilder &b, Location loc, const Int8Shape &s,
                               int64_t m, Int8Dot dot, ValueRange args) {
  Value bytes = args[0], codes = args[1], ad = args[2], out = args[3];
  Value j0 = args[4], j1 = args[5], r0 = args[6], w0 = args[7];
  Value xo = s.hasOffsets ? args[8] : Value();
  Operation *fnOp = j0.getParentBlock()->getParentOp();
  Type f32 = b.getF32Type();
  Type outElem = cast<MemRefType>(out.getType()).getElementType();
  VectorType vf16 = vecOf(f32, 16);
  Value zero16 = splatConst(b, loc, vf16, b.getF32FloatAttr(0));
  Value ones32 =
      splatConst(b, loc, vecOf(b.getI32Type(), 16), b.getI32IntegerAttr(1));
  Value zeroI32 =
      splatConst(b, loc, vecOf(b.getI32Type(), 16), b.getI32IntegerAttr(0));
  SmallVector<Value> rows;
  for (int64_t i = 0; i < m; ++i)
    rows.push_back(cIndex(b, loc, i));

  // Blocks per iteration of the row's block loop: 256 elements (4 dot
  // products) per iteration for every format. q4_0 / q8_0 alternate their
  // four dot products between the kChains accumulators; the K-quants add
  // one f32 product per block (after summing the block in i32).
  int64_t stepBlocks = std::max<int64_t>(1, 256 / s.blockElems);
  bool legacy = s.legacy();
  int64_t groupsPerBlock = s.blockElems / s.group;

  auto rowLoop = scf::ForOp::create(b, loc, j0, j1, cIndex(b, loc, 1));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(rowLoop.getBody());
  Value j = rowLoop.getInductionVar();
  Value rowByte = mulIdx(b, loc, addIdx(b, loc, w0, j), s.rowBytes);

  // Iteration arguments: m x kChains main accumulators, then m offset
  // accumulators (vector<corrLanes x f32>: one lane per block of an
  // iteration, or per group of a K-quant block) for formats with offsets.
  int64_t corrLanes = legacy ? stepBlocks : groupsPerBlock;
  SmallVector<Value> init(m * kChains, zero16);
  if (s.hasOffsets)
    init.append(m, splatConst(b, loc, vecOf(f32, corrLanes),
                              b.getF32FloatAttr(0)));

  struct Accs {
    int64_t m;
    SmallVector<Value> v;
    Value &main(int64_t i, int64_t c) { return v[i * kChains + c]; }
    Value &corr(int64_t i) { return v[m * kChains + i]; }
  };
  auto blockByte = [&](Value blk) {
    return addIdx(b, loc, rowByte, mulIdx(b, loc, blk, s.blockBytes));
  };
  // q4_0 / q8_0: acc(i) += Σ over the 64 elements of the two blocks at
  // `blk` (or one, zero-padded, when `tail`): weight codes `wc`
  // (vector<64xi8>) times row i's activation codes, each lane's sum
  // converted to f32 and scaled by laneScale(i).
  auto dotInto = [&](Accs &accs, int64_t chain, Value wc, Value blk, bool tail,
                     function_ref<Value(int64_t)> laneScale) {
    Type i8 = b.getI8Type();
    Value col = mulIdx(b, loc, blk, s.blockElems);
    for (int64_t i = 0; i < m; ++i) {
      Value a;
      if (tail) {
        a = concat(b, loc,
                   vector::LoadOp::create(b, loc, vecOf(i8, kDotElems / 2),
                                          codes, ValueRange{rows[i], col}),
                   splatConst(b, loc, vecOf(i8, kDotElems / 2),
                              b.getI8IntegerAttr(0)));
      } else {
        a = vector::LoadOp::create(b, loc, vecOf(i8, kDotElems), codes,
                                   ValueRange{rows[i], col});
      }
      Value u = wc;
      if (s.signedCodes)
        std::tie(u, a) = moveSign(b, loc, wc, a);
      Value lanes = dotLanes(b, loc, fnOp, dot, u, a, ones32);
      Value f = arith::SIToFPOp::create(b, loc, vf16, lanes);
      accs.main(i, chain) =
          vector::FMAOp::create(b, loc, f, laneScale(i), accs.main(i, chain));
    }
  };

  // A loop over blocks [lb, ub) in steps of `step`, carrying the
  // accumulators. legacy formats take blocks in pairs (one dot product),
  // or one (zero-padded) when `step` is 1.
  auto blockLoop = [&](int64_t lb, int64_t ub, int64_t step,
                       ArrayRef<Value> accsIn) -> SmallVector<Value> {
    if (lb >= ub)
      return SmallVector<Value>(accsIn);
    auto loop =
        scf::ForOp::create(b, loc, cIndex(b, loc, lb), cIndex(b, loc, ub),
                           cIndex(b, loc, step), accsIn);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(loop.getBody());
    Value blk0 = loop.getInductionVar();
    Accs accs{m, SmallVector<Value>(loop.getRegionIterArgs())};
    prefetchWeight(b, loc, bytes, blockByte(blk0), step * s.blockBytes);
    int64_t chain = 0;
    if (legacy) {
      // The iteration's weight block scales in one vector (a single block
      // padded with a zero scale), times each row's activation scales: the
      // f16 d of each block (q4_0 and q8_0 both start with it, see
      // emitCodeScales) gathered and widened by one extf.
      int64_t scaleLanes = std::max<int64_t>(2, step);
      Type f16 = b.getF16Type();
      Value zeroF = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0));
      SmallVector<Value> ws;
      for (int64_t t = 0; t < step; ++t) {
        VecEmitter e(b, loc, bytes, blockByte(addIdx(b, loc, blk0, t)));
        Value half =
            vector::BitCastOp::create(b, loc, vecOf(f16, 1), e.loadBytes(0, 2));
        ws.push_back(vector::ExtractOp::create(b, loc, half, 0));
      }
      ws.resize(scaleLanes,
                arith::ConstantOp::create(b, loc, b.getF16FloatAttr(0)));
      Value wScales = arith::ExtFOp::create(
          b, loc, vecOf(f32, scaleLanes),
          vector::FromElementsOp::create(b, loc, vecOf(f16, scaleLanes), ws)
              .getResult());
      // Lanes [0, step) of row i of `buf` at the iteration's first block,
      // zero-padded to `lanes`.
      auto loadBlocks = [&](Value buf, int64_t i, int64_t lanes) -> Value {
        Value v = vector::LoadOp::create(b, loc, vecOf(f32, step), buf,
                                         ValueRange{rows[i], blk0});
        if (step == lanes)
          return v;
        SmallVector<int64_t> mask;
        for (int64_t l = 0; l < lanes; ++l)
          mask.push_back(l < step ? l : step);
        return vector::ShuffleOp::create(
            b, loc, v, vector::BroadcastOp::create(b, loc, vecOf(f32, 1), zeroF),
            mask);
      };
      SmallVector<Value> rowScales;
      for (int64_t i = 0; i < m; ++i)
        rowScales.push_back(arith::MulFOp::create(
            b, loc, wScales, loadBlocks(ad, i, scaleLanes)));
      if (s.hasOffsets) {
        // offset · (d Σ c) per block: the iteration's offsets are its
        // scales times legacyOffset (lanes past `step` are zero).
        Value offsets = arith::MulFOp::create(
            b, loc, wScales,
            splatConst(b, loc, vecOf(f32, scaleLanes),
                       b.getF32FloatAttr(float(s.legacyOffset))));
        if (scaleLanes != corrLanes) {
          SmallVector<int64_t> pad;
          for (int64_t l = 0; l < corrLanes; ++l)
            pad.push_back(l < scaleLanes ? l : scaleLanes);
          offsets = vector::ShuffleOp::create(
              b, loc, offsets,
              vector::BroadcastOp::create(b, loc, vecOf(f32, 1), zeroF), pad);
        }
        for (int64_t i = 0; i < m; ++i)
          accs.corr(i) = vector::FMAOp::create(
              b, loc, offsets, loadBlocks(xo, i, corrLanes), accs.corr(i));
      }
      for (int64_t p = 0; p < step; p += 2) {
        bool tail = step - p == 1; // one block in this dot product
        Value wc;
        for (int64_t t = 0; t < (tail ? 1 : 2); ++t) {
          VecEmitter e(b, loc, bytes, blockByte(addIdx(b, loc, blk0, p + t)));
          Value c = legacyBlockCodes(e, s.format);
          wc = t ? concat(b, loc, wc, c) : c;
        }
        if (tail)
          wc = concat(b, loc, wc,
                      splatConst(b, loc, vecOf(b.getI8Type(), 32),
                                 b.getI8IntegerAttr(0)));
        dotInto(accs, chain, wc, addIdx(b, loc, blk0, p), tail,
                [&](int64_t i) {
                  return laneScales(b, loc, rowScales[i],
                                    p * s.blockElems, s.blockElems);
                });
        chain = (chain + 1) % kChains;
      }
    } else {
      // K-quants: the integer sub-block scales multiply the lanes in the
      // dot product (pmaddwd against them, or a multiply), the lanes of the
      // block are summed in i32 (exact: < 2^24, so the conversion is too),
      // and d · (activation scale) is applied once per block.
      for (int64_t t = 0; t < step; ++t) {
        Value blk = addIdx(b, loc, blk0, t);
        VecEmitter e(b, loc, bytes, blockByte(blk));
        auto [d, scInt] = emitIntCodeScales(e, s.format);
        Value offsets = emitCodeScales(e, s.format).second;
        Value col0 = mulIdx(b, loc, blk, s.blockElems);
        SmallVector<Value> sums(m, zeroI32);
        for (int64_t c = 0; c < s.blockElems / kDotElems; ++c) {
          Value wc = kQuantChunkCodes(e, s.format, c);
          SmallVector<int64_t> mask;
          for (int64_t l = 0; l < 16; ++l)
            mask.push_back((kDotElems * c + 4 * l) / s.group);
          Value sc = vector::ShuffleOp::create(b, loc, scInt, scInt, mask);
          for (int64_t i = 0; i < m; ++i) {
            Value a = vector::LoadOp::create(
                b, loc, vecOf(b.getI8Type(), kDotElems), codes,
                ValueRange{rows[i], addIdx(b, loc, col0, kDotElems * c)});
            sums[i] = arith::AddIOp::create(
                b, loc, sums[i], dotLanes(b, loc, fnOp, dot, wc, a, sc));
          }
        }
        for (int64_t i = 0; i < m; ++i) {
          Value da = memref::LoadOp::create(b, loc, ad, ValueRange{rows[i], blk});
          Value scale = e.splatF(arith::MulFOp::create(b, loc, d, da));
          accs.main(i, chain) = vector::FMAOp::create(
              b, loc, arith::SIToFPOp::create(b, loc, vf16, sums[i]), scale,
              accs.main(i, chain));
          Value xsums = vector::LoadOp::create(
              b, loc, vecOf(f32, groupsPerBlock), xo,
              ValueRange{rows[i], mulIdx(b, loc, blk, groupsPerBlock)});
          accs.corr(i) =
              vector::FMAOp::create(b, loc, offsets, xsums, accs.corr(i));
        }
        chain = (chain + 1) % kChains;
      }
    }
    scf::YieldOp::create(b, loc, accs.v);
    return SmallVector<Value>(loop.getResults());
  };

  int64_t mainBlocks = s.numBlocks / stepBlocks * stepBlocks;
  SmallVector<Value> res = blockLoop(0, mainBlocks, stepBlocks, init);
  // The rest: pairs of blocks, then a single one.
  int64_t pairStep = legacy ? 2 : 1;
  int64_t pairEnd =
      mainBlocks + (s.numBlocks - mainBlocks) / pairStep * pairStep;
  res = blockLoop(mainBlocks, pairEnd, pairStep, res);
  res = blockLoop(pairEnd, s.numBlocks, 1, res);
  Accs accs{m, res};

  auto reassoc = arith::FastMathFlags::reassoc;
  for (int64_t i = 0; i < m; ++i) {
    Value sum = accs.main(i, 0);
    for (int64_t c = 1; c < kChains; ++c)
      sum = arith::AddFOp::create(b, loc, sum, accs.main(i, c));
    Value y = vector::ReductionOp::create(b, loc, vector::CombiningKind::ADD,
                                          sum, reassoc);
    if (s.hasOffsets)
      y = arith::SubFOp::create(
          b, loc, y,
          vector::ReductionOp::create(b, loc, vector::CombiningKind::ADD,
                                      accs.corr(i), reassoc));
    memref::StoreOp::create(b, loc, castFromF32(b, loc, y, outElem), out,
                            ValueRange{addIdx(b, loc, r0, rows[i]), j});
  }
  return success();
}

/// The prologue: activation rows [rowBase, rowBase + m) of `lhs2d`
/// quantized into `codes` (m x K i8), `ad` (m x K/A f32) and, with
/// offsets, `xo` (m x K/G f32: d · Σ codes per weight group).
void emitQuantizeActivations(OpBuilder &b, Location loc, const Int8Shape &s,
                             int64_t m, Value lhs2d, Value rowBase,
                             Value codes, Value ad, Value xo) {
  Type f32 = b.getF32Type(), i32 = b.getI32Type();
  VectorType vf = vecOf(f32, 16);
  int64_t a = s.actBlock, vecs = a / 16;
  auto loop = scf::ForOp::create(b, loc, cIndex(b, loc, 0),
                                 cIndex(b, loc, s.k / a), cIndex(b, loc, 1));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(loop.getBody());
  Value blk = loop.getInductionVar();
  Value col0 = mulIdx(b, loc, blk, a);
  for (int64_t i = 0; i < m; ++i) {
    Value row = addIdx(b, loc, rowBase, i), ci = cIndex(b, loc, i);
    SmallVector<Value> v;
    Value mx;
    for (int64_t t = 0; t < vecs; ++t) {
      v.push_back(vector::LoadOp::create(b, loc, vf, lhs2d,
                                         ValueRange{row, addIdx(b, loc, col0,
                                                                16 * t)}));
      Value av = math::AbsFOp::create(b, loc, v.back());
      mx = mx ? arith::MaximumFOp::create(b, loc, mx, av).getResult() : av;
    }
    Value amax = vector::ReductionOp::create(
        b, loc, vector::CombiningKind::MAXIMUMF, mx);
    Value zero = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0));
    Value d = arith::DivFOp::create(
        b, loc, amax,
        arith::ConstantOp::create(b, loc, b.getF32FloatAttr(127)));
    Value isZero =
        arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, d, zero);
    Value inv = arith::DivFOp::create(
        b, loc, arith::ConstantOp::create(b, loc, b.getF32FloatAttr(1)), d);
    Value id = arith::SelectOp::create(b, loc, isZero, zero, inv);
    memref::StoreOp::create(b, loc, d, ad, ValueRange{ci, blk});
    Value idv = vector::BroadcastOp::create(b, loc, vf, id);
    Value groupSum;
    for (int64_t t = 0; t < vecs; ++t) {
      Value q = arith::FPToSIOp::create(
          b, loc, vecOf(i32, 16),
          math::RoundEvenOp::create(b, loc,
                                    arith::MulFOp::create(b, loc, v[t], idv)));
      vector::StoreOp::create(
          b, loc, arith::TruncIOp::create(b, loc, vecOf(b.getI8Type(), 16), q),
          codes, ValueRange{ci, addIdx(b, loc, col0, 16 * t)});
      if (!xo)
        continue;
      Value sum =
          vector::ReductionOp::create(b, loc, vector::CombiningKind::ADD, q);
      groupSum =
          groupSum ? arith::AddIOp::create(b, loc, groupSum, sum).getResult()
                   : sum;
      if ((16 * (t + 1)) % s.group)
        continue;
      int64_t g = 16 * t / s.group;
      Value gi = addIdx(b, loc, mulIdx(b, loc, blk, a / s.group), g);
      memref::StoreOp::create(
          b, loc,
          arith::MulFOp::create(b, loc, d,
                                arith::SIToFPOp::create(b, loc, f32, groupSum)),
          xo, ValueRange{ci, gi});
      groupSum = Value();
    }
  }
}

const char *dotName(Int8Dot dot) {
  switch (dot) {
  case Int8Dot::Generic:
    return "generic";
  case Int8Dot::Avx2:
    return "avx2";
  case Int8Dot::Avx512Vnni:
    return "vnni";
  }
  return "";
}

} // namespace

void mlir::qcc::defineInt8DotFunctions(ModuleOp module) {
  OpBuilder b(module.getContext());
  for (Int8Dot dot : {Int8Dot::Avx2, Int8Dot::Avx512Vnni}) {
    auto fn = module.lookupSymbol<func::FuncOp>(dotFunctionName(dot));
    if (!fn || !fn.isExternal())
      continue;
    Block *entry = fn.addEntryBlock();
    b.setInsertionPointToStart(entry);
    Value lanes = dotLanesInline(b, fn.getLoc(), dot, entry->getArgument(0),
                                 entry->getArgument(1), entry->getArgument(2));
    func::ReturnOp::create(b, fn.getLoc(), lanes);
  }
}

bool mlir::qcc::detail::supportsInt8Gemv(QTensorType wType) {
  switch (wType.getFormat()) {
  case QuantFormat::Q4_0:
  case QuantFormat::Q8_0:
  case QuantFormat::Q4_K:
  case QuantFormat::Q6_K:
    return wType.getShape().back() % wType.getBlockElems() == 0;
  default:
    return false;
  }
}

LogicalResult mlir::qcc::detail::emitInt8SmallNQMatmul(
    OpBuilder &b, Location loc, Operation *from, QTensorType wType, int64_t m,
    Value bytes, Value lhs2d, Value out2d, Value rowBase, Value wRowBase,
    Int8Dot dot) {
  Int8Shape s = int8ShapeOf(wType);
  int64_t n = wType.getShape()[wType.getRank() - 2];
  auto bytesType = cast<MemRefType>(bytes.getType());
  auto outType = cast<MemRefType>(out2d.getType());
  Type f32 = b.getF32Type(), index = b.getIndexType();

  auto codesType = MemRefType::get({m, s.k}, b.getI8Type());
  auto adType = MemRefType::get({m, s.k / s.actBlock}, f32);
  auto xoType = MemRefType::get({m, s.k / s.group}, f32);
  Value codes = memref::AllocOp::create(b, loc, codesType);
  Value ad = memref::AllocOp::create(b, loc, adType);
  Value xo =
      s.hasOffsets ? memref::AllocOp::create(b, loc, xoType).getResult()
                   : Value();
  emitQuantizeActivations(b, loc, s, m, lhs2d, rowBase, codes, ad, xo);

  SmallVector<Type> argTypes = {bytesType, codesType, adType, outType,
                                index,     index,     index,  index};
  if (xo)
    argTypes.push_back(xoType);
  std::string name =
      ("__qcc_qmatmul_fwd_i8" + Twine(dotName(dot)) + "_m" + Twine(m) + "_" +
       stringifyQuantFormat(s.format) + "_" + Twine(n) + "x" + Twine(s.k) +
       "_" + Twine(bytesType.getNumElements()) + "_" +
       memrefShapeName(outType))
          .str();
  FailureOr<func::FuncOp> fn = getOrCreatePrivateFunction(
      b, from, name, argTypes, [&](OpBuilder &fb, ValueRange args) {
        return buildInt8Forward(fb, loc, s, m, dot, args);
      });
  if (failed(fn))
    return failure();

  Value c0 = cIndex(b, loc, 0), nTotal = cIndex(b, loc, n);
  auto par = scf::ParallelOp::create(b, loc, ValueRange{c0}, ValueRange{nTotal},
                                     ValueRange{cIndex(b, loc, kSmallNRowsPerTask)});
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(par.getBody());
  Value j0 = par.getInductionVars()[0];
  Value j1 = arith::MinSIOp::create(
      b, loc, nTotal, addIdx(b, loc, j0, kSmallNRowsPerTask));
  SmallVector<Value> callArgs = {bytes, codes, ad, out2d, j0, j1, rowBase,
                                 wRowBase};
  if (xo)
    callArgs.push_back(xo);
  func::CallOp::create(b, loc, *fn, callArgs);
  return success();
}
