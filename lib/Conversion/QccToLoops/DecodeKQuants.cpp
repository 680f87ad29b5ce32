//===- DecodeKQuants.cpp - q2_K..q6_K block decoders ----------------------===//
//
// Mirrors the "K-quants" section of runtime/lib/formats/Decode.cpp. Loops
// that the reference runs over a handful of sub-blocks are unrolled here at
// emission time, so scale offsets stay constants; element loops stay scf.for.
//
//===----------------------------------------------------------------------===//

#include "DecodeEmitter.h"

using namespace mlir;
using namespace mlir::qcc;
using namespace mlir::qcc::detail;

namespace {
struct ScaleMin {
  Value scale, min; // i32
};
} // namespace

/// The 6-bit (scale, min) pair j of the 12-byte table at `off` (q4_K, q5_K).
static ScaleMin scaleMinK4(DecodeEmitter &e, int64_t off, int j) {
  if (j < 4)
    return {e.andi(e.u8(off + j), 63), e.andi(e.u8(off + j + 4), 63)};
  Value sc = e.ori(e.andi(e.u8(off + j + 4), 0xf),
                   e.shli(e.shrui(e.u8(off + j - 4), 6), 4));
  Value mn = e.ori(e.shrui(e.u8(off + j + 4), 4),
                   e.shli(e.shrui(e.u8(off + j), 6), 4));
  return {sc, mn};
}

/// q4_K (qhOffset unset) and q5_K: chunk c of 64 elements is the low then
/// the high nibbles of qs[32c..32c+31]; y = (d * sc) * q - (dmin * m).
static void emitQ45K(DecodeEmitter &e, int64_t qsOffset,
                     std::optional<int64_t> qhOffset) {
  Value d = e.f16At(0), dmin = e.f16At(2);
  for (int c = 0; c < 4; ++c) {
    ScaleMin p1 = scaleMinK4(e, 4, 2 * c), p2 = scaleMinK4(e, 4, 2 * c + 1);
    Value d1 = e.mulf(d, e.sitofp(p1.scale)), m1 = e.mulf(dmin, e.sitofp(p1.min));
    Value d2 = e.mulf(d, e.sitofp(p2.scale)), m2 = e.mulf(dmin, e.sitofp(p2.min));
    e.forEach(32, [&](Value l) {
      Value q = e.u8(e.addIndex(l, qsOffset + 32 * c));
      Value lo = e.andi(q, 0xf), hi = e.shrui(q, 4);
      if (qhOffset) {
        Value qh = e.u8(e.addIndex(l, *qhOffset));
        lo = e.addi(lo, e.shli(e.bits(qh, 2 * c, 1), 4));
        hi = e.addi(hi, e.shli(e.bits(qh, 2 * c + 1, 1), 4));
      }
      e.store(e.subf(e.mulf(d1, e.sitofp(lo)), m1), e.addIndex(l, 64 * c));
      e.store(e.subf(e.mulf(d2, e.sitofp(hi)), m2),
              e.addIndex(l, 64 * c + 32));
    });
  }
}

/// q6_K: half h uses ql[64h..], qh[32h..], scales[8h..];
/// y = (d * sc) * (q - 32).
static void emitQ6K(DecodeEmitter &e) {
  Value d = e.f16At(208);
  for (int h = 0; h < 2; ++h) {
    e.forEach(32, [&](Value l) {
      Value is = arith::ShRUIOp::create(e.b, e.loc, l, e.index(4));
      Value qlA = e.u8(e.addIndex(l, 64 * h));
      Value qlB = e.u8(e.addIndex(l, 64 * h + 32));
      Value qh = e.u8(e.addIndex(l, 128 + 32 * h));
      Value q[4] = {
          e.subi(e.ori(e.andi(qlA, 0xf), e.shli(e.bits(qh, 0, 3), 4)), 32),
          e.subi(e.ori(e.andi(qlB, 0xf), e.shli(e.bits(qh, 2, 3), 4)), 32),
          e.subi(e.ori(e.shrui(qlA, 4), e.shli(e.bits(qh, 4, 3), 4)), 32),
          e.subi(e.ori(e.shrui(qlB, 4), e.shli(e.bits(qh, 6, 3), 4)), 32)};
      for (int k = 0; k < 4; ++k) {
        Value sc = e.s8(e.addIndex(is, 192 + 8 * h + 2 * k));
        e.store(e.mulf(e.mulf(d, e.sitofp(sc)), e.sitofp(q[k])),
                e.addIndex(l, 128 * h + 32 * k));
      }
    });
  }
}

bool mlir::qcc::detail::emitKQuantDecode(DecodeEmitter &e, QuantFormat format) {
  switch (format) {
  case QuantFormat::Q4_K:
    emitQ45K(e, 16, std::nullopt);
    return true;
  case QuantFormat::Q5_K:
    emitQ45K(e, 48, 16);
    return true;
  case QuantFormat::Q6_K:
    emitQ6K(e);
    return true;
  default:
    return false;
  }
}
