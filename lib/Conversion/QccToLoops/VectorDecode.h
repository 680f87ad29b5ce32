//===- VectorDecode.h - Block decoders on 16-lane vectors -------*- C++ -*-===//
//
// The few-rows qmatmul (QMatmulSmallN.cpp) decodes W without going through
// memory: each block becomes 16-element f32 vectors in registers, which the
// caller multiplies into its accumulators as they are produced. The code
// here is written in the vector dialect on the block bytes (byte vector
// loads, integer masks and shifts, sitofp, the scale multiplies of the
// reference): the plain float formats as their exact values, and the
// formats that dominate GEMV time as integer codes with per-group scales and
// offsets (below). The other formats are decoded by the scalar emitters of
// BlockDecode.h into a small stack buffer that the caller reads back as
// vectors.
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
/// [first, first + 16) of the block (or unit) being decoded.
using VectorSink = function_ref<void(Value values, int64_t first)>;

/// Whether `format` is one of the one-element float formats (f32, f16,
/// bf16), decoded 16 elements at a time by emitPlainDecode.
bool isPlainFormat(QuantFormat format);

/// Elements per decode unit of `format`: its block, or 16 elements of a
/// plain format.
int64_t vectorUnitElems(QuantFormat format, int64_t blockElems);

/// The 16 elements of a plain format starting at e.blockByte, as one
/// vector: an f32 load, f16 widened with extf, bf16 shifted into f32 bits.
void emitPlainDecode(VecEmitter &e, QuantFormat format, VectorSink sink);

/// The last `count` (< 16) elements of a row of a one-element format (f32,
/// f16, bf16), the first at e.blockByte, decoded by the scalar emitter into
/// `scratch` (memref<16xf32>) and returned as one vector whose other lanes
/// are +0.0.
FailureOr<Value> emitVectorTailDecode(VecEmitter &e, QuantFormat format,
                                      int64_t blockBytes, int64_t count,
                                      Value scratch);

//===----------------------------------------------------------------------===//
// Blocks as scaled integer codes
//===----------------------------------------------------------------------===//
//
// In the linear formats every element is an affine function of a small
// integer code, with the scale and offset shared by a group of G elements:
//
//   w[e] = scale[g] · code[e] - offset[g],  g = e / G
//
// (q4_0: code q, scale d, offset 8d; q4_1 / q5_1: q, d, -m; q5_0: q, d,
// 16d; q8_0: q, d, none; q2_K / q4_K / q5_K: q, d·sc, dmin·m; q3_K: the
// 3-bit code, d·sc, 4·d·sc; q6_K: the 6-bit code, d·sc, 32·d·sc; tq2_0:
// t + 1, d, d). Products with W can then
// multiply the codes and apply scales and offsets per group rather than per
// element: forward, Σ_e w[e] x[e] = Σ_g scale[g] Σ_{e in g} code[e] x[e] -
// Σ_g offset[g] Σ_{e in g} x[e], with the sums of x per group computed once
// per call; backward, the coefficient g_j · scale[g] multiplies the codes
// and g_j · offset[g] accumulates per group, subtracted at the end. The
// codes, scales and offsets are the reference decoder's integers and f32
// products; only the order of the f32 operations differs from decoding
// first (within 1e-5 of float64, test_qmatmul_small_n.py).

/// The group length G of `format` as scaled codes, if it has that form;
/// `hasOffsets` tells whether its groups have offsets.
std::optional<int64_t> getCodeGroup(QuantFormat format, bool &hasOffsets);

/// The block's scales and offsets (null when the format has none), each a
/// vector<blockElems / G x f32>.
std::pair<Value, Value> emitCodeScales(VecEmitter &e, QuantFormat format);

/// For q4_K / q5_K / q6_K: the super-block scale d (f32) and the integer
/// sub-block scales sc (vector<blockElems / G x i32>), scale[g] = d ·
/// sc[g] (the int8 GEMV applies them in integer arithmetic).
std::pair<Value, Value> emitIntCodeScales(VecEmitter &e, QuantFormat format);

/// Emits the block's codes as vector<16xf32> (exact integers), passing each
/// to `sink` with its first element; the vectors of a group come one after
/// the other.
void emitCodes(VecEmitter &e, QuantFormat format, VectorSink sink);

} // namespace mlir::qcc::detail

#endif // QCC_LIB_CONVERSION_QCCTOLOOPS_VECTORDECODE_H
