//===- VectorDecode.cpp - Block decoders on 16-lane vectors ---------------===//
//
// Each vector decoder mirrors its scalar emitter (DecodeLegacy.cpp,
// DecodeKQuants.cpp) and so the runtime's reference in
// runtime/lib/formats/Decode.cpp: the same integer codes (sitofp is exact
// on them) and the same f32 scale products (d * sc, dmin * m, each one
// multiply), unpacked on vector lanes. test_qmatmul_small_n.py checks the
// products against ggml's golden values; the scalar emitters are proven
// bit-exact by test_emitted_decode_bitexact.py.
//
//===----------------------------------------------------------------------===//

#include "VectorDecode.h"

#include "DecodeEmitter.h"

using namespace mlir;
using namespace mlir::qcc;
using namespace mlir::qcc::detail;

namespace {

/// The scalar vocabulary (f16 scales) on the same block.
DecodeEmitter scalarEmitter(VecEmitter &e) {
  return DecodeEmitter(e.b, e.loc, {e.bytes, e.blockByte, Value(), Value()});
}

/// The (d * sc, dmin * m) products of a q4_K block's eight sub-blocks, as
/// two vector<8xf32>. The 6-bit pairs of scaleMinK4 are unpacked on 8 lanes
/// at once: pair j < 4 is (b[j] & 63, b[j + 4] & 63), pair j >= 4 is
/// ((b[j + 4] & 15) | (b[j - 4] >> 6) << 4, (b[j + 4] >> 4) | (b[j] >> 6) << 4)
/// with b the 12 scale bytes; each product is the reference's one multiply.
std::pair<Value, Value> q4KScaleProducts(VecEmitter &e) {
  DecodeEmitter s = scalarEmitter(e);
  Value sb = e.u8s(4); // bytes 4..19: the 12 scale bytes, then qs
  Value zero = e.splatI(0, sb);
  auto pick = [&](ArrayRef<int64_t> lanes) {
    return vector::ShuffleOp::create(e.b, e.loc, sb, zero, lanes).getResult();
  };
  // Lane 16 of the shuffles is a zero: pairs j < 4 have no high bits.
  Value hiBits = e.shli(e.shrui(pick({16, 16, 16, 16, 0, 1, 2, 3}), 6), 4);
  Value sc = e.ori(e.andi(pick({0, 1, 2, 3, 8, 9, 10, 11}),
                          e.constI({63, 63, 63, 63, 15, 15, 15, 15})),
                   hiBits);
  Value mnLow = e.andi(e.shrui(pick({4, 5, 6, 7, 8, 9, 10, 11}),
                               e.constI({0, 0, 0, 0, 4, 4, 4, 4})),
                       e.constI({63, 63, 63, 63, 15, 15, 15, 15}));
  Value mn = e.ori(mnLow,
                   e.shli(e.shrui(pick({16, 16, 16, 16, 4, 5, 6, 7}), 6), 4));
  Value ds = e.mulf(e.splatF(s.f16At(0), 8), e.sitofp(sc));
  Value dm = e.mulf(e.splatF(s.f16At(2), 8), e.sitofp(mn));
  return {ds, dm};
}

} // namespace

bool mlir::qcc::detail::isPlainFormat(QuantFormat format) {
  return format == QuantFormat::F32 || format == QuantFormat::F16 ||
         format == QuantFormat::BF16;
}

int64_t mlir::qcc::detail::vectorUnitElems(QuantFormat format,
                                           int64_t blockElems) {
  return isPlainFormat(format) ? kLanes : blockElems;
}

void mlir::qcc::detail::emitPlainDecode(VecEmitter &e, QuantFormat format,
                                        VectorSink sink) {
  switch (format) {
  case QuantFormat::F32:
    sink(vector::BitCastOp::create(e.b, e.loc, e.vecF(),
                                   e.loadBytes(0, 4 * kLanes)),
         0);
    return;
  case QuantFormat::F16: {
    Value h = vector::BitCastOp::create(
        e.b, e.loc, VectorType::get({kLanes}, e.b.getF16Type()),
        e.loadBytes(0, 2 * kLanes));
    sink(arith::ExtFOp::create(e.b, e.loc, e.vecF(), h), 0);
    return;
  }
  case QuantFormat::BF16: {
    Value h = vector::BitCastOp::create(e.b, e.loc, e.vecI(kLanes, 16),
                                        e.loadBytes(0, 2 * kLanes));
    sink(arith::BitcastOp::create(e.b, e.loc, e.vecF(),
                                  e.shli(e.zext(h), 16)),
         0);
    return;
  }
  default:
    llvm_unreachable("not a one-element format");
  }
}

FailureOr<Value> mlir::qcc::detail::emitVectorTailDecode(VecEmitter &e,
                                                        QuantFormat format,
                                                        int64_t blockBytes,
                                                        int64_t count,
                                                        Value scratch) {
  Value zero = arith::ConstantOp::create(
      e.b, e.loc, e.vecF(),
      DenseElementsAttr::get(e.vecF(), e.b.getF32FloatAttr(0)));
  vector::StoreOp::create(e.b, e.loc, zero, scratch, ValueRange{e.index(0)});
  for (int64_t t = 0; t < count; ++t)
    if (failed(emitBlockDecode(e.b, e.loc, format,
                               {e.bytes, e.at(t * blockBytes), scratch,
                                e.index(t)})))
      return failure();
  return vector::LoadOp::create(e.b, e.loc, e.vecF(), scratch,
                                ValueRange{e.index(0)})
      .getResult();
}

//===----------------------------------------------------------------------===//
// Scaled codes
//===----------------------------------------------------------------------===//

std::optional<int64_t> mlir::qcc::detail::getCodeGroup(QuantFormat format,
                                                       bool &hasOffsets) {
  hasOffsets = format != QuantFormat::Q8_0;
  switch (format) {
  case QuantFormat::Q4_0:
  case QuantFormat::Q8_0:
  case QuantFormat::Q4_K:
    return 32;
  case QuantFormat::Q6_K:
    return 16;
  default:
    return std::nullopt;
  }
}

std::pair<Value, Value>
mlir::qcc::detail::emitCodeScales(VecEmitter &e, QuantFormat format) {
  DecodeEmitter s = scalarEmitter(e);
  auto times = [&](Value v, float c) {
    auto n = cast<VectorType>(v.getType()).getDimSize(0);
    Value k = arith::ConstantOp::create(e.b, e.loc, e.b.getF32FloatAttr(c));
    return e.mulf(e.splatF(k, n), v);
  };
  switch (format) {
  case QuantFormat::Q4_0: {
    Value d = e.splatF(s.f16At(0), 1);
    return {d, times(d, 8)};
  }
  case QuantFormat::Q8_0:
    return {e.splatF(s.f16At(0), 1), Value()};
  case QuantFormat::Q4_K:
    return q4KScaleProducts(e);
  case QuantFormat::Q6_K: {
    Value ds = e.mulf(e.splatF(s.f16At(208)), e.sitofp(e.s8s(192)));
    return {ds, times(ds, 32)};
  }
  default:
    llvm_unreachable("not a scaled-code format");
  }
}

void mlir::qcc::detail::emitCodes(VecEmitter &e, QuantFormat format,
                                  VectorSink sink) {
  switch (format) {
  case QuantFormat::Q4_0: {
    Value q = e.u8s(2);
    sink(e.sitofp(e.andi(q, 0xf)), 0);
    sink(e.sitofp(e.shrui(q, 4)), 16);
    return;
  }
  case QuantFormat::Q8_0:
    sink(e.sitofp(e.s8s(2)), 0);
    sink(e.sitofp(e.s8s(18)), 16);
    return;
  case QuantFormat::Q4_K:
    // Chunk c: the low nibbles of qs[32c..] are group 2c, the high ones
    // group 2c + 1.
    for (int64_t c = 0; c < 4; ++c) {
      Value q[2] = {e.u8s(16 + 32 * c), e.u8s(16 + 32 * c + 16)};
      for (int64_t h = 0; h < 2; ++h)
        sink(e.sitofp(e.andi(q[h], 0xf)), 64 * c + 16 * h);
      for (int64_t h = 0; h < 2; ++h)
        sink(e.sitofp(e.shrui(q[h], 4)), 64 * c + 32 + 16 * h);
    }
    return;
  case QuantFormat::Q6_K:
    // The 6-bit codes of decodeQ6_K, without their -32.
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t is = 0; is < 2; ++is) {
        int64_t l = 16 * is;
        Value qlA = e.u8s(64 * h + l), qlB = e.u8s(64 * h + 32 + l);
        Value qh = e.u8s(128 + 32 * h + l);
        Value low[4] = {e.andi(qlA, 0xf), e.andi(qlB, 0xf), e.shrui(qlA, 4),
                        e.shrui(qlB, 4)};
        for (int64_t k = 0; k < 4; ++k)
          sink(e.sitofp(e.ori(low[k],
                              e.shli(e.andi(e.shrui(qh, 2 * k), 3), 4))),
               128 * h + 32 * k + l);
      }
    return;
  default:
    llvm_unreachable("not a scaled-code format");
  }
}
