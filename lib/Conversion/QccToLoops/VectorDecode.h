//===- VectorDecode.h - Block decoders on 16-lane vectors -------*- C++ -*-===//
//
// The few-rows qmatmul (QMatmulSmallN.cpp) decodes W without going through
// memory: each block becomes 16-element f32 vectors in registers, which the
// caller multiplies into its accumulators as they are produced. The vector
// decoders here are written in the vector dialect on the block bytes (byte
// vector loads, integer masks and shifts, sitofp, the scale multiplies of the
// reference) and produce the same f32 values as the scalar emitters of
// BlockDecode.h and the runtime decoder, lane for lane; formats without one
// decode a block with the scalar emitter into a small stack buffer and read
// it back as vectors.
//
//===----------------------------------------------------------------------===//

#ifndef QCC_LIB_CONVERSION_QCCTOLOOPS_VECTORDECODE_H
#define QCC_LIB_CONVERSION_QCCTOLOOPS_VECTORDECODE_H

#include "qcc/Dialect/Qcc/IR/QccAttrs.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Builders.h"

namespace mlir::qcc::detail {

/// Lanes of the f32 vectors the decoders produce (one AVX-512 register).
constexpr int64_t kLanes = 16;

/// Vector-dialect vocabulary over a block's bytes: `bytes` is the flat
/// memref<?xi8> of the weight and `blockByte` (index) the block's first
/// byte. Integer lanes are i32, float lanes f32.
class VecEmitter {
public:
  VecEmitter(OpBuilder &b, Location loc, Value bytes, Value blockByte)
      : b(b), loc(loc), bytes(bytes), blockByte(blockByte) {}

  OpBuilder &b;
  Location loc;
  Value bytes, blockByte;

  VectorType vecI(int64_t n, unsigned bits = 32) {
    return VectorType::get({n}, b.getIntegerType(bits));
  }
  VectorType vecF(int64_t n = kLanes) {
    return VectorType::get({n}, b.getF32Type());
  }
  Value index(int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); }
  Value at(int64_t rel) {
    return rel ? arith::AddIOp::create(b, loc, blockByte, index(rel))
                     .getResult()
               : blockByte;
  }

  /// `n` bytes at `rel`, as vector<n x i8>.
  Value loadBytes(int64_t rel, int64_t n) {
    return vector::LoadOp::create(b, loc, vecI(n, 8), bytes,
                                  ValueRange{at(rel)});
  }
  /// `n` bytes at `rel`, zero- or sign-extended to i32 lanes.
  Value u8s(int64_t rel, int64_t n = kLanes) { return zext(loadBytes(rel, n)); }
  Value s8s(int64_t rel, int64_t n = kLanes) {
    Value v = loadBytes(rel, n);
    return arith::ExtSIOp::create(b, loc, vecI(n), v);
  }
  Value zext(Value v) {
    auto n = cast<VectorType>(v.getType()).getDimSize(0);
    return arith::ExtUIOp::create(b, loc, vecI(n), v);
  }

  /// A splat of `v` shaped like `like` (vector<n x i32> or f32 lanes).
  Value splatI(int64_t v, Value like) {
    auto t = cast<VectorType>(like.getType());
    return arith::ConstantOp::create(
        b, loc, t,
        DenseElementsAttr::get(t, b.getIntegerAttr(t.getElementType(), v)));
  }
  Value constI(ArrayRef<int32_t> values) {
    auto t = vecI(values.size());
    return arith::ConstantOp::create(
        b, loc, t, DenseElementsAttr::get(t, values));
  }
  Value andi(Value a, int64_t m) {
    return arith::AndIOp::create(b, loc, a, splatI(m, a));
  }
  Value andi(Value a, Value m) { return arith::AndIOp::create(b, loc, a, m); }
  Value ori(Value a, Value c) { return arith::OrIOp::create(b, loc, a, c); }
  Value shrui(Value a, int64_t s) {
    return s ? arith::ShRUIOp::create(b, loc, a, splatI(s, a)).getResult()
             : a;
  }
  Value shrui(Value a, Value s) { return arith::ShRUIOp::create(b, loc, a, s); }
  Value shli(Value a, int64_t s) {
    return s ? arith::ShLIOp::create(b, loc, a, splatI(s, a)).getResult() : a;
  }
  Value subi(Value a, int64_t c) {
    return arith::SubIOp::create(b, loc, a, splatI(c, a));
  }
  /// Exact i32 -> f32 lanes (every code here is far below 2^24).
  Value sitofp(Value v) {
    auto n = cast<VectorType>(v.getType()).getDimSize(0);
    return arith::SIToFPOp::create(b, loc, vecF(n), v);
  }
  /// Lanes [first, first + n) of `v` (a static shuffle).
  Value slice(Value v, int64_t first, int64_t n) {
    SmallVector<int64_t> mask;
    for (int64_t i = 0; i < n; ++i)
      mask.push_back(first + i);
    return vector::ShuffleOp::create(b, loc, v, v, mask);
  }
  /// `scalar` (f32) in every lane.
  Value splatF(Value scalar, int64_t n = kLanes) {
    return vector::BroadcastOp::create(b, loc, vecF(n), scalar);
  }
  /// Lane `i` of `v` in every one of kLanes lanes.
  Value laneSplat(Value v, int64_t i) {
    return splatF(vector::ExtractOp::create(b, loc, v, i));
  }
  // f32 arithmetic without fast-math flags, as the reference rounds it.
  Value mulf(Value a, Value c) { return arith::MulFOp::create(b, loc, a, c); }
  Value subf(Value a, Value c) { return arith::SubFOp::create(b, loc, a, c); }
};

/// Receives decoded vectors: `values` (vector<16xf32>) holds elements
/// [first, first + 16) of the unit being decoded.
using VectorSink = function_ref<void(Value values, int64_t first)>;

/// Elements per decode unit of `format`: its block, or 16 elements of the
/// one-element float formats (f32, f16, bf16).
int64_t vectorUnitElems(QuantFormat format, int64_t blockElems);

/// Whether `format` has a vector decoder (else emitVectorUnitDecode goes
/// through the scalar emitter and a stack buffer).
bool hasVectorDecoder(QuantFormat format);

/// Emits the decode of the unit whose first byte is e.blockByte, calling
/// `sink` for each of its vectors in order. `scratch` (memref<unit x f32>,
/// an alloca made once by the caller) is used by formats without a vector
/// decoder.
LogicalResult emitVectorUnitDecode(VecEmitter &e, QuantFormat format,
                                   Value scratch, VectorSink sink);

/// The last `count` (< 16) elements of a row of a one-element format (f32,
/// f16, bf16), the first at e.blockByte, decoded by the scalar emitter into
/// `scratch` (memref<16xf32>) and returned as one vector whose other lanes
/// are +0.0.
FailureOr<Value> emitVectorTailDecode(VecEmitter &e, QuantFormat format,
                                      int64_t blockBytes, int64_t count,
                                      Value scratch);

//===----------------------------------------------------------------------===//
// Forward dot products on the block bytes
//===----------------------------------------------------------------------===//
//
// For the forward product of a few rows, the formats that dominate GEMV time
// skip parts of the decode that are linear in the codes: a block's scale
// multiplies the partial dot product of its codes with x instead of every
// element, and the constant or per-sub-block offsets (q4_0's -8, q4_K's
// mins, q6_K's -32) become one product with precomputed sums of x per group
// of G elements ("xsum"), subtracted at the end:
//
//   Σ_t (d (q_t - o)) x_t = d Σ_t q_t x_t - o d Σ_t x_t.
//
// The values multiplied are the codes and scales of the reference decoder;
// only the order of the f32 operations differs (within 1e-5 of float64,
// test_qmatmul_small_n.py).

/// How a format's forward dot kernel accumulates, per activation row.
struct DotKernelInfo {
  /// Elements per x sum (0: the kernel needs none).
  int64_t xsumGroup = 0;
  /// Lanes of the correction accumulator (0: none; 1: a scalar f32).
  int64_t corrLanes = 0;
  /// y = Σ lanes of the main accumulators - corrFactor · Σ lanes of corr.
  float corrFactor = 0;
};

/// The dot kernel of `format`, if it has one.
std::optional<DotKernelInfo> getDotKernel(QuantFormat format);

/// What a dot kernel works on: `m` activation rows; `x(i, off)` loads
/// x[i, col + off .. + 16) of the block's first column `col`; `xsum(i, off,
/// lanes)` the sums number off .. off + lanes of the block (a scalar for
/// lanes = 1); `accs` the main accumulators (vector<16xf32>), `chains` per
/// row (row i's are i * chains ..), followed by one correction accumulator
/// per row.
struct DotContext {
  int64_t m, chains;
  MutableArrayRef<Value> accs;
  function_ref<Value(int64_t i, int64_t off)> x;
  function_ref<Value(int64_t i, int64_t off, int64_t lanes)> xsum;
  int64_t next = 0;
  /// The chain for the next accumulation (round robin).
  int64_t nextChain() { return next++ % chains; }
  Value &main(int64_t i, int64_t chain) { return accs[i * chains + chain]; }
  Value &corr(int64_t i) { return accs[m * chains + i]; }
};

/// Emits the dot kernel of the block at e.blockByte.
void emitBlockDot(VecEmitter &e, QuantFormat format, DotContext &ctx);

} // namespace mlir::qcc::detail

#endif // QCC_LIB_CONVERSION_QCCTOLOOPS_VECTORDECODE_H
