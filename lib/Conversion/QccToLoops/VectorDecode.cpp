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
std::pair<Value, Value> q4KScaleInts(VecEmitter &e) {
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
  return {sc, mn};
}

std::pair<Value, Value> q4KScaleProducts(VecEmitter &e) {
  DecodeEmitter s = scalarEmitter(e);
  auto [sc, mn] = q4KScaleInts(e);
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
  case QuantFormat::Q4_1:
  case QuantFormat::Q5_0:
  case QuantFormat::Q5_1:
  case QuantFormat::Q8_0:
  case QuantFormat::Q4_K:
  case QuantFormat::Q5_K:
    return 32;
  case QuantFormat::Q2_K:
  case QuantFormat::Q3_K:
  case QuantFormat::Q6_K:
    return 16;
  case QuantFormat::TQ2_0:
    return 256;
  default:
    return std::nullopt;
  }
}

namespace {

/// The 5-bit codes of q5_0 / q5_1: element j < 16 is the low nibble of
/// qs[j] with bit j of the u32 qh above it, j + 16 the high nibble with bit
/// j + 16.
void fiveBitCodes(VecEmitter &e, int64_t qhOffset, int64_t qsOffset,
                  VectorSink sink) {
  DecodeEmitter s = scalarEmitter(e);
  Value qh = vector::BroadcastOp::create(e.b, e.loc, e.vecI(kLanes),
                                         s.u32(qhOffset));
  SmallVector<int32_t> lanes, lanesHi;
  for (int32_t j = 0; j < kLanes; ++j) {
    lanes.push_back(j);
    lanesHi.push_back(j + 16);
  }
  Value q = e.u8s(qsOffset);
  auto fifth = [&](ArrayRef<int32_t> bit) {
    return e.shli(e.andi(e.shrui(qh, e.constI(bit)), 1), 4);
  };
  sink(e.sitofp(e.ori(e.andi(q, 0xf), fifth(lanes))), 0);
  sink(e.sitofp(e.ori(e.shrui(q, 4), fifth(lanesHi))), 16);
}

/// The 6-bit scales of q3_K's 16 sub-blocks, minus 32, times d: scale i
/// has its low nibble at bit 4 * (i / 8) of byte i % 8 and its top 2 bits
/// at bit 2 * (i / 4) of byte 8 + i % 4 of the 12 scale bytes (@96).
Value q3KScaleProducts(VecEmitter &e) {
  DecodeEmitter s = scalarEmitter(e);
  // Bytes 94..109 (the block ends at 110): scale byte k is lane k + 2.
  Value raw = e.u8s(94);
  SmallVector<int64_t> loIdx, hiIdx;
  SmallVector<int32_t> loShift, hiShift;
  for (int32_t i = 0; i < kLanes; ++i) {
    loIdx.push_back(2 + i % 8);
    loShift.push_back(4 * (i / 8));
    hiIdx.push_back(2 + 8 + i % 4);
    hiShift.push_back(2 * (i / 4));
  }
  auto pick = [&](ArrayRef<int64_t> idx) {
    return vector::ShuffleOp::create(e.b, e.loc, raw, raw, idx).getResult();
  };
  Value lo = e.andi(e.shrui(pick(loIdx), e.constI(loShift)), 0xf);
  Value hi = e.andi(e.shrui(pick(hiIdx), e.constI(hiShift)), 3);
  Value sc = e.subi(e.ori(lo, e.shli(hi, 4)), 32);
  return e.mulf(e.splatF(s.f16At(108)), e.sitofp(sc));
}

} // namespace

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
  case QuantFormat::Q4_1:
  case QuantFormat::Q5_1: // y = q * d + m
    return {e.splatF(s.f16At(0), 1),
            arith::NegFOp::create(e.b, e.loc, e.splatF(s.f16At(2), 1))};
  case QuantFormat::Q5_0: { // y = (q - 16) * d
    Value d = e.splatF(s.f16At(0), 1);
    return {d, times(d, 16)};
  }
  case QuantFormat::Q8_0:
    return {e.splatF(s.f16At(0), 1), Value()};
  case QuantFormat::Q2_K: { // scales[16] @0: low nibble scale, high min
    Value sb = e.u8s(0);
    return {e.mulf(e.splatF(s.f16At(80)), e.sitofp(e.andi(sb, 0xf))),
            e.mulf(e.splatF(s.f16At(82)), e.sitofp(e.shrui(sb, 4)))};
  }
  case QuantFormat::Q3_K: { // y = (d * sc) * (code - 4)
    Value ds = q3KScaleProducts(e);
    return {ds, times(ds, 4)};
  }
  case QuantFormat::Q4_K:
  case QuantFormat::Q5_K:
    return q4KScaleProducts(e);
  case QuantFormat::Q6_K: {
    Value ds = e.mulf(e.splatF(s.f16At(208)), e.sitofp(e.s8s(192)));
    return {ds, times(ds, 32)};
  }
  case QuantFormat::TQ2_0: { // y = (code - 1) * d
    Value d = e.splatF(s.f16At(64), 1);
    return {d, d};
  }
  default:
    llvm_unreachable("not a scaled-code format");
  }
}

std::pair<Value, Value> mlir::qcc::detail::emitIntCodeScales(VecEmitter &e,
                                                          QuantFormat format) {
  DecodeEmitter s = scalarEmitter(e);
  switch (format) {
  case QuantFormat::Q4_K:
  case QuantFormat::Q5_K:
    return {s.f16At(0), q4KScaleInts(e).first};
  case QuantFormat::Q6_K:
    return {s.f16At(208), e.s8s(192)};
  default:
    llvm_unreachable("no integer sub-block scales");
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
  case QuantFormat::Q4_1: {
    Value q = e.u8s(4);
    sink(e.sitofp(e.andi(q, 0xf)), 0);
    sink(e.sitofp(e.shrui(q, 4)), 16);
    return;
  }
  case QuantFormat::Q5_0:
    return fiveBitCodes(e, 2, 6, sink);
  case QuantFormat::Q5_1:
    return fiveBitCodes(e, 4, 8, sink);
  case QuantFormat::Q8_0:
    sink(e.sitofp(e.s8s(2)), 0);
    sink(e.sitofp(e.s8s(18)), 16);
    return;
  case QuantFormat::Q2_K:
  case QuantFormat::Q3_K:
    // Sub-block is = 8h + 2s + half (16 elements from 16is): bits 2s..2s+1
    // of byte 32h + 16half + l of qs (@16 / @32); q3_K's third bit, bit
    // 4h + s of hmask[16half + l] (@0), makes the code low | hbit << 2,
    // its q = code - 4.
    for (int64_t is = 0; is < 16; ++is) {
      int64_t h = is >> 3, sub = (is >> 1) & 3, half = is & 1;
      bool q3 = format == QuantFormat::Q3_K;
      Value code = e.andi(
          e.shrui(e.u8s((q3 ? 32 : 16) + 32 * h + 16 * half), 2 * sub), 3);
      if (q3)
        code = e.ori(code, e.shli(e.andi(e.shrui(e.u8s(16 * half), 4 * h + sub),
                                         1),
                                  2));
      sink(e.sitofp(code), 16 * is);
    }
    return;
  case QuantFormat::Q4_K:
  case QuantFormat::Q5_K: {
    // Chunk c: the low nibbles of qs[32c..] are group 2c, the high ones
    // group 2c + 1; q5_K adds bit 2c (2c + 1) of qh[l] (@16) as the fifth.
    bool q5 = format == QuantFormat::Q5_K;
    int64_t qsOffset = q5 ? 48 : 16;
    for (int64_t c = 0; c < 4; ++c) {
      Value q[2] = {e.u8s(qsOffset + 32 * c), e.u8s(qsOffset + 32 * c + 16)};
      Value qh[2];
      if (q5)
        qh[0] = e.u8s(16), qh[1] = e.u8s(32);
      auto fifth = [&](int64_t h, int64_t bit) {
        return e.shli(e.andi(e.shrui(qh[h], bit), 1), 4);
      };
      for (int64_t h = 0; h < 2; ++h) {
        Value lo = e.andi(q[h], 0xf);
        sink(e.sitofp(q5 ? e.ori(lo, fifth(h, 2 * c)) : lo), 64 * c + 16 * h);
      }
      for (int64_t h = 0; h < 2; ++h) {
        Value hi = e.shrui(q[h], 4);
        sink(e.sitofp(q5 ? e.ori(hi, fifth(h, 2 * c + 1)) : hi),
             64 * c + 32 + 16 * h);
      }
    }
    return;
  }
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
  case QuantFormat::TQ2_0:
    // Element 128h + 32k + m is bits 2k..2k+1 of qs[32h + m], t + 1.
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t k = 0; k < 4; ++k)
        for (int64_t m = 0; m < 32; m += 16)
          sink(e.sitofp(e.andi(e.shrui(e.u8s(32 * h + m), 2 * k), 3)),
               128 * h + 32 * k + m);
    return;
  default:
    llvm_unreachable("not a scaled-code format");
  }
}
