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

/// q2_K: element 128h + 32s + 16half + l is bits 2s..2s+1 of
/// qs[32h + 16half + l] (qs @16), in the 16-group is = 8h + 2s + half whose
/// byte scales[is] (@0) holds the scale (low nibble) and the min (high).
/// y = (d * sc) * q - (dmin * m). The 8 (h, s) steps are unrolled so the
/// scale bytes are constant offsets; one scf.for over l covers both halves.
static void emitQ2K(DecodeEmitter &e) {
  Value d = e.f16At(80), dmin = e.f16At(82);
  for (int h = 0; h < 2; ++h) {
    for (int s = 0; s < 4; ++s) {
      Value dl[2], ml[2];
      for (int half = 0; half < 2; ++half) {
        Value sc = e.u8(8 * h + 2 * s + half);
        dl[half] = e.mulf(d, e.sitofp(e.andi(sc, 0xf)));
        ml[half] = e.mulf(dmin, e.sitofp(e.shrui(sc, 4)));
      }
      e.forEach(16, [&](Value l) {
        for (int half = 0; half < 2; ++half) {
          Value q = e.bits(e.u8(e.addIndex(l, 16 + 32 * h + 16 * half)),
                           2 * s, 3);
          e.store(e.subf(e.mulf(dl[half], e.sitofp(q)), ml[half]),
                  e.addIndex(l, 128 * h + 32 * s + 16 * half));
        }
      });
    }
  }
}

/// Signed 6-bit scale i of q3_K's 12-byte table at 96: low nibble from byte
/// i (i < 8) or the high nibble of byte i - 8, top 2 bits from byte
/// 8 + i%4 at bit 2*(i/4); minus 32.
static Value scaleQ3K(DecodeEmitter &e, int i) {
  Value lo = i < 8 ? e.andi(e.u8(96 + i), 0xf) : e.shrui(e.u8(96 + i - 8), 4);
  Value hi = e.bits(e.u8(96 + 8 + (i & 3)), 2 * (i >> 2), 3);
  return e.subi(e.ori(lo, e.shli(hi, 4)), 32);
}

/// q3_K: low 2 bits as q2_K (qs @32); the third bit of element
/// 128h + 32s + l is bit 4h + s of hmask[l] (@0), a clear bit subtracting 4.
/// y = (d * sc) * q with sc = scale (8h + 2s + half) - 32.
static void emitQ3K(DecodeEmitter &e) {
  Value d = e.f16At(108);
  for (int h = 0; h < 2; ++h) {
    for (int s = 0; s < 4; ++s) {
      Value dl[2] = {e.mulf(d, e.sitofp(scaleQ3K(e, 8 * h + 2 * s))),
                     e.mulf(d, e.sitofp(scaleQ3K(e, 8 * h + 2 * s + 1)))};
      e.forEach(16, [&](Value l) {
        for (int half = 0; half < 2; ++half) {
          Value ll = e.addIndex(l, 16 * half);
          Value low = e.bits(e.u8(e.addIndex(ll, 32 + 32 * h)), 2 * s, 3);
          Value hmBit = e.andi(e.u8(ll), 1 << (4 * h + s));
          Value q = e.subi(low, e.select(e.isNonZero(hmBit), e.i32(0),
                                         e.i32(4)));
          e.store(e.mulf(dl[half], e.sitofp(q)),
                  e.addIndex(l, 128 * h + 32 * s + 16 * half));
        }
      });
    }
  }
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
