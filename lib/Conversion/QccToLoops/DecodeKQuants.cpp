//===- DecodeKQuants.cpp - q2_K..q6_K block decoders ----------------------===//
//
// Mirrors the "K-quants" section of runtime/lib/formats/Decode.cpp and its
// scale unpacking (scaleMinK4, unpackQ3KScales in DecodeKernels.h). Loops
// that the reference runs over a handful of sub-blocks (q4_K..q6_K) are
// unrolled here at emission time, so scale offsets stay constants; the 16
// sub-blocks of q2_K / q3_K are an scf.for (see forEachSubBlock16); element
// loops stay scf.for.
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

/// q2_K and q3_K run over their 16 sub-blocks of 16 as an scf.for (sub-block
/// is = 8h + 2s + half, h < 2, s < 4): unrolling them, as q4_K does its 4
/// chunks, would make a block several hundred ops for no gain, since the
/// scale of a sub-block is a couple of integer ops either way. Each
/// iteration computes the sub-block's scale products once, then an scf.for
/// over its 16 elements 16is + l reads bits 2s..2s+1 of byte 32h + 16half + l
/// of qs.
struct SubBlock16 {
  Value is, h, s, half; // i32
  Value qsByte;         // index of qs[32h + 16half] relative to qs
  Value hmByte;         // index 16half (q3_K's hmask row)
};

static void forEachSubBlock16(DecodeEmitter &e,
                              function_ref<void(const SubBlock16 &)> body) {
  e.forEach(16, [&](Value isIdx) {
    SubBlock16 sb;
    sb.is = e.toI32(isIdx);
    sb.h = e.shrui(sb.is, 3);
    sb.s = e.bits(sb.is, 1, 3);
    sb.half = e.andi(sb.is, 1);
    sb.hmByte = e.toIndex(e.shli(sb.half, 4));
    sb.qsByte = e.toIndex(e.ori(e.shli(sb.h, 5), e.shli(sb.half, 4)));
    body(sb);
  });
}

/// q2_K (84 B): scales[16] @0 (low nibble scale, high nibble min), qs[64]
/// @16, f16 d @80, f16 dmin @82.  y = (d * sc) * q - (dmin * m)
static void emitQ2K(DecodeEmitter &e) {
  Value d = e.f16At(80), dmin = e.f16At(82);
  forEachSubBlock16(e, [&](const SubBlock16 &sb) {
    Value sc = e.u8(e.toIndex(sb.is));
    Value dl = e.mulf(d, e.sitofp(e.andi(sc, 0xf)));
    Value ml = e.mulf(dmin, e.sitofp(e.shrui(sc, 4)));
    Value shift = e.shli(sb.s, 1);
    Value qs = e.addIndex(sb.qsByte, 16);
    Value out = e.toIndex(e.shli(sb.is, 4));
    e.forEach(16, [&](Value l) {
      Value q = e.bits(e.u8(e.addIndex(qs, l)), shift, 3);
      e.store(e.subf(e.mulf(dl, e.sitofp(q)), ml), e.addIndex(out, l));
    });
  });
}

/// q3_K (110 B): hmask[32] @0, qs[64] @32, scales[12] @96, f16 d @108.
/// Scale i (6 bits, minus 32): low nibble from byte i % 8 at bit 4 * (i / 8)
/// (the reference's "i < 8 ? raw[i] & 0xf : raw[i - 8] >> 4"), top 2 bits
/// from byte 8 + i % 4 at bit 2 * (i / 4). Low 2 bits of q as q2_K; the
/// third is bit 4h + s of hmask[16half + l], a clear bit subtracting 4.
/// y = (d * sc) * q
static void emitQ3K(DecodeEmitter &e) {
  Value d = e.f16At(108);
  forEachSubBlock16(e, [&](const SubBlock16 &sb) {
    Value lo = e.bits(e.u8(e.addIndex(e.toIndex(e.andi(sb.is, 7)), 96)),
                      e.shli(e.shrui(sb.is, 3), 2), 0xf);
    Value hi = e.bits(e.u8(e.addIndex(e.toIndex(e.andi(sb.is, 3)), 104)),
                      e.shli(e.shrui(sb.is, 2), 1), 3);
    Value sc = e.subi(e.ori(lo, e.shli(hi, 4)), 32);
    Value dl = e.mulf(d, e.sitofp(sc));
    Value shift = e.shli(sb.s, 1);
    Value mask = e.shli(e.i32(1), e.ori(e.shli(sb.h, 2), sb.s));
    Value qs = e.addIndex(sb.qsByte, 32);
    Value out = e.toIndex(e.shli(sb.is, 4));
    e.forEach(16, [&](Value l) {
      Value low = e.bits(e.u8(e.addIndex(qs, l)), shift, 3);
      Value hmBit = e.andi(e.u8(e.addIndex(sb.hmByte, l)), mask);
      Value q = e.subi(low, e.select(e.isNonZero(hmBit), e.i32(0), e.i32(4)));
      e.store(e.mulf(dl, e.sitofp(q)), e.addIndex(out, l));
    });
  });
}

/// q4_K (qhOffset unset) and q5_K: chunk c of 64 elements is the low then
/// the high nibbles of qs[32c..32c+31]; y = (d * sc) * q - (dmin * m).
static void emitQ45K(DecodeEmitter &e, int64_t qsOffset,
                     std::optional<int64_t> qhOffset) {
  Value d = e.f16At(0), dmin = e.f16At(2);
  for (int c = 0; c < 4; ++c) {
    ScaleMin p1 = scaleMinK4(e, 4, 2 * c), p2 = scaleMinK4(e, 4, 2 * c + 1);
    Value d1 = e.mulf(d, e.sitofp(p1.scale)),
          m1 = e.mulf(dmin, e.sitofp(p1.min));
    Value d2 = e.mulf(d, e.sitofp(p2.scale)),
          m2 = e.mulf(dmin, e.sitofp(p2.min));
    e.forEach(32, [&](Value l) {
      Value q = e.u8(e.addIndex(l, qsOffset + 32 * c));
      Value lo = e.andi(q, 0xf), hi = e.shrui(q, 4);
      if (qhOffset) {
        Value qh = e.u8(e.addIndex(l, *qhOffset));
        lo = e.addi(lo, e.shli(e.bits(qh, 2 * c, 1), 4));
        hi = e.addi(hi, e.shli(e.bits(qh, 2 * c + 1, 1), 4));
      }
      e.store(e.subf(e.mulf(d1, e.sitofp(lo)), m1), e.addIndex(l, 64 * c));
      e.store(e.subf(e.mulf(d2, e.sitofp(hi)), m2), e.addIndex(l, 64 * c + 32));
    });
  }
}

/// q6_K: half h uses ql[64h..], qh[32h..], scales[8h..];
/// y = (d * sc) * (q - 32).
static void emitQ6K(DecodeEmitter &e) {
  Value d = e.f16At(208);
  for (int h = 0; h < 2; ++h) {
    // Elements l < 16 and l >= 16 of a half use scales is = 0 and 1: the
    // four products d * sc are formed once per 16 elements, which rounds
    // exactly as the reference's per-element d * float(sc[is]).
    for (int is = 0; is < 2; ++is) {
      Value ds[4];
      for (int k = 0; k < 4; ++k)
        ds[k] = e.mulf(d, e.sitofp(e.s8(e.index(192 + 8 * h + is + 2 * k))));
      e.forEach(16, [&](Value j) {
        Value l = e.addIndex(j, 16 * is);
        Value qlA = e.u8(e.addIndex(l, 64 * h));
        Value qlB = e.u8(e.addIndex(l, 64 * h + 32));
        Value qh = e.u8(e.addIndex(l, 128 + 32 * h));
        Value q[4] = {
            e.subi(e.ori(e.andi(qlA, 0xf), e.shli(e.bits(qh, 0, 3), 4)), 32),
            e.subi(e.ori(e.andi(qlB, 0xf), e.shli(e.bits(qh, 2, 3), 4)), 32),
            e.subi(e.ori(e.shrui(qlA, 4), e.shli(e.bits(qh, 4, 3), 4)), 32),
            e.subi(e.ori(e.shrui(qlB, 4), e.shli(e.bits(qh, 6, 3), 4)), 32)};
        for (int k = 0; k < 4; ++k)
          e.store(e.mulf(ds[k], e.sitofp(q[k])),
                  e.addIndex(l, 128 * h + 32 * k));
      });
    }
  }
}

bool mlir::qcc::detail::emitKQuantDecode(DecodeEmitter &e, QuantFormat format) {
  switch (format) {
  case QuantFormat::Q2_K:
    emitQ2K(e);
    return true;
  case QuantFormat::Q3_K:
    emitQ3K(e);
    return true;
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
