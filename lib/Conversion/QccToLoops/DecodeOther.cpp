//===- DecodeOther.cpp - ternary, fp4 and 1/2-bit block decoders ----------===//
//
// Mirrors the "Ternary, fp4 and 1/2-bit formats" section of
// runtime/lib/formats/Decode.cpp. The fp4 value set is the runtime's own
// kValuesMXFP4 (qcc/Runtime/Codebooks.h); the e8m0 / ue4m3 scales are built
// from their bits exactly as e8m0Half / ue4m3Half do (the runtime's one
// definition of those scales is in runtime/lib/formats/DecodeKernels.h).
//
//===----------------------------------------------------------------------===//

#include "DecodeEmitter.h"

#include "qcc/Runtime/Codebooks.h"

using namespace mlir;
using namespace mlir::qcc;
using namespace mlir::qcc::detail;
namespace cb = ::qcc::codebooks;

/// Decode.cpp's trit: digit n of a byte holding base-3 digits as a
/// fixed-point fraction, with pow3 = 3^n: ((uint8_t(q * pow3) * 3) >> 8) - 1.
static Value trit(DecodeEmitter &e, Value q, int pow3) {
  Value r = e.andi(e.muli(q, pow3), 255);
  return e.subi(e.shrui(e.muli(r, 3), 8), 1);
}

/// tq1_0 (54 B): qs[48] @0, qh[4] @48, f16 d @52. Digit n of byte m of a
/// run of `count` bytes at `byteOff` is element outOff + count * n + m. The
/// digits (5 or 4) are unrolled: each is one constant multiplier.
static void emitTritRun(DecodeEmitter &e, Value d, int64_t byteOff,
                        int64_t count, int digits, int64_t outOff) {
  static constexpr int kPow3[5] = {1, 3, 9, 27, 81};
  e.forEach(count, [&](Value m) {
    Value q = e.u8(e.addIndex(m, byteOff));
    for (int n = 0; n < digits; ++n)
      e.store(e.mulf(e.sitofp(trit(e, q, kPow3[n])), d),
              e.addIndex(m, outOff + count * n));
  });
}

static void emitTQ1_0(DecodeEmitter &e) {
  Value d = e.f16At(52);
  emitTritRun(e, d, 0, 32, 5, 0);
  emitTritRun(e, d, 32, 16, 5, 160);
  emitTritRun(e, d, 48, 4, 4, 240);
}

/// tq2_0 (66 B): qs[64] @0, f16 d @64. Element 128h + 32k + m is bits
/// 2k..2k+1 of qs[32h + m], stored as t + 1.  y = t * d
static void emitTQ2_0(DecodeEmitter &e) {
  Value d = e.f16At(64);
  e.forEach(32, [&](Value m) {
    for (int h = 0; h < 2; ++h) {
      Value q = e.u8(e.addIndex(m, 32 * h));
      for (int k = 0; k < 4; ++k)
        e.store(e.mulf(e.sitofp(e.subi(e.bits(q, 2 * k, 3), 1)), d),
                e.addIndex(m, 128 * h + 32 * k));
    }
  });
}

static Value fp4Table(DecodeEmitter &e) {
  return e.byteTable("qcc_mxfp4_values", ArrayRef<int8_t>(cb::kValuesMXFP4));
}

/// e8m0Half: 2^(e - 128) as bits; e < 2 gives the subnormals
/// 0x00200000 << e. The shift is by e & 1 (== e on that branch) so that the
/// unselected arm never shifts by >= 32, which would be poison.
static Value e8m0Half(DecodeEmitter &e, Value x) {
  Value sub = e.shli(e.i32(0x00200000), e.andi(x, 1));
  Value normal = e.shli(e.subi(x, 1), 23);
  return e.bitsToF32(e.select(e.ulti(x, 2), sub, normal));
}

/// mxfp4 (17 B): u8 e8m0 exponent @0, qs[16] @1 as q4_0.  y = kv[q] * d
static void emitMXFP4(DecodeEmitter &e) {
  Value d = e8m0Half(e, e.u8(0));
  Value kv = fp4Table(e);
  e.forEach(16, [&](Value j) {
    Value q = e.u8(e.addIndex(j, 1));
    e.store(e.mulf(e.sitofp(e.tableS8(kv, e.andi(q, 0xf))), d), j);
    e.store(e.mulf(e.sitofp(e.tableS8(kv, e.shrui(q, 4))), d),
            e.addIndex(j, 16));
  });
}

/// ue4m3Half: 0 and 0x7f -> 0; exponent bits 3-6, mantissa bits 0-2 (bit 7
/// ignored); raw = exp == 0 ? man * 2^-9 : ((8 + man) * 2^exp) * 2^-10, all
/// exact; then raw * 0.5. Both arms are computed (they are exact and free of
/// traps) and selected, as the C++ ternaries choose.
static Value ue4m3Half(DecodeEmitter &e, Value x) {
  Value exp = e.bits(x, 3, 0xf), man = e.andi(x, 7);
  Value sub = e.mulf(e.sitofp(man), e.f32(0x1p-9f));
  Value normal =
      e.mulf(e.mulf(e.sitofp(e.addi(man, 8)), e.sitofp(e.shli(e.i32(1), exp))),
             e.f32(0x1p-10f));
  Value raw = e.select(e.eqi(exp, 0), sub, normal);
  Value isZero = arith::OrIOp::create(e.b, e.loc, e.eqi(x, 0), e.eqi(x, 0x7f));
  return e.select(isZero, e.f32(0.0f), e.mulf(raw, e.f32(0.5f)));
}

/// nvfp4 (36 B): ue4m3 d[4] @0 (one per 16 elements), qs[32] @4. Sub-block
/// s (unrolled: its scale byte is a constant offset): element 16s + j is the
/// low nibble of qs[8s + j], 16s + 8 + j the high one.  y = kv[q] * d_s
static void emitNVFP4(DecodeEmitter &e) {
  Value kv = fp4Table(e);
  for (int s = 0; s < 4; ++s) {
    Value d = ue4m3Half(e, e.u8(s));
    e.forEach(8, [&](Value j) {
      Value q = e.u8(e.addIndex(j, 4 + 8 * s));
      e.store(e.mulf(e.sitofp(e.tableS8(kv, e.andi(q, 0xf))), d),
              e.addIndex(j, 16 * s));
      e.store(e.mulf(e.sitofp(e.tableS8(kv, e.shrui(q, 4))), d),
              e.addIndex(j, 16 * s + 8));
    });
  }
}

/// q1_0 (18 B, 128 elements): f16 d @0, qs[16] @2; element j is bit j%8 of
/// qs[j/8]: set -> d, clear -> -d (a negation, as the reference).
static void emitQ1_0(DecodeEmitter &e) {
  Value d = e.f16At(0);
  Value negD = e.negf(d);
  e.forEach(128, [&](Value j) {
    Value j32 = e.toI32(j);
    Value byte = e.u8(e.toIndex(e.addi(e.shrui(j32, 3), 2)));
    e.store(e.select(e.isNonZero(e.bits(byte, e.andi(j32, 7), 1)), d, negD), j);
  });
}

/// q2_0 (18 B, 64 elements): f16 d @0, qs[16] @2; element j is bits
/// 2(j%4)..2(j%4)+1 of qs[j/4], stored as q + 1.  y = (q - 1) * d
static void emitQ2_0(DecodeEmitter &e) {
  Value d = e.f16At(0);
  e.forEach(64, [&](Value j) {
    Value j32 = e.toI32(j);
    Value byte = e.u8(e.toIndex(e.addi(e.shrui(j32, 2), 2)));
    Value q = e.bits(byte, e.muli(e.andi(j32, 3), 2), 3);
    e.store(e.mulf(e.sitofp(e.subi(q, 1)), d), j);
  });
}

bool mlir::qcc::detail::emitOtherDecode(DecodeEmitter &e, QuantFormat format) {
  switch (format) {
  case QuantFormat::TQ1_0:
    emitTQ1_0(e);
    return true;
  case QuantFormat::TQ2_0:
    emitTQ2_0(e);
    return true;
  case QuantFormat::MXFP4:
    emitMXFP4(e);
    return true;
  case QuantFormat::NVFP4:
    emitNVFP4(e);
    return true;
  case QuantFormat::Q1_0:
    emitQ1_0(e);
    return true;
  case QuantFormat::Q2_0:
    emitQ2_0(e);
    return true;
  default:
    return false;
  }
}
