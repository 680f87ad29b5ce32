//===- DecodeLegacy.cpp - f32/f16/bf16 and q4_0..q8_0 block decoders ------===//
//
// Mirrors the "Plain float formats" and "Legacy 32-element formats" sections
// of runtime/lib/formats/Decode.cpp, operation for operation.
//
//===----------------------------------------------------------------------===//

#include "DecodeEmitter.h"

using namespace mlir;
using namespace mlir::qcc;
using namespace mlir::qcc::detail;

/// q4_0 / q4_1 / q5_0 / q5_1: element j < 16 is the low nibble of qs[j],
/// j + 16 the high one; the 5-bit formats take bit j (j + 16) of qh as the
/// fifth bit. `value(q)` maps the integer code to the element.
static void emitNibbleBlock(DecodeEmitter &e, int64_t qsOffset,
                            std::optional<int64_t> qhOffset,
                            function_ref<Value(Value)> value) {
  Value qh = qhOffset ? e.u32(*qhOffset) : Value();
  e.forEach(16, [&](Value j) {
    Value q = e.u8(e.addIndex(j, qsOffset));
    Value lo = e.andi(q, 0xf), hi = e.shrui(q, 4);
    if (qh) {
      Value j32 = e.toI32(j);
      lo = e.ori(lo, e.shli(e.bits(qh, j32, 1), 4));
      hi = e.ori(hi, e.shli(e.bits(qh, e.addi(j32, 16), 1), 4));
    }
    e.store(value(lo), j);
    e.store(value(hi), e.addIndex(j, 16));
  });
}

bool mlir::qcc::detail::emitLegacyDecode(DecodeEmitter &e,
                                         QuantFormat format) {
  switch (format) {
  case QuantFormat::F32: {
    Value bitsI32 = e.u32(0);
    e.store(arith::BitcastOp::create(e.b, e.loc, e.b.getF32Type(), bitsI32),
            0);
    return true;
  }
  case QuantFormat::F16:
    e.store(e.f16At(0), 0);
    return true;
  case QuantFormat::BF16:
    e.store(e.bf16BitsToF32(e.u16(0)), 0);
    return true;
  case QuantFormat::Q4_0: {
    // y = (q - 8) * d
    Value d = e.f16At(0);
    emitNibbleBlock(e, 2, std::nullopt,
                    [&](Value q) { return e.mulf(e.sitofp(e.subi(q, 8)), d); });
    return true;
  }
  case QuantFormat::Q4_1: {
    // y = q * d + m
    Value d = e.f16At(0), m = e.f16At(2);
    emitNibbleBlock(e, 4, std::nullopt, [&](Value q) {
      return e.addf(e.mulf(e.sitofp(q), d), m);
    });
    return true;
  }
  case QuantFormat::Q5_0: {
    // y = (q - 16) * d
    Value d = e.f16At(0);
    emitNibbleBlock(e, 6, 2, [&](Value q) {
      return e.mulf(e.sitofp(e.subi(q, 16)), d);
    });
    return true;
  }
  case QuantFormat::Q5_1: {
    // y = q * d + m
    Value d = e.f16At(0), m = e.f16At(2);
    emitNibbleBlock(e, 8, 4, [&](Value q) {
      return e.addf(e.mulf(e.sitofp(q), d), m);
    });
    return true;
  }
  case QuantFormat::Q8_0: {
    // y = q * d
    Value d = e.f16At(0);
    e.forEach(32, [&](Value j) {
      e.store(e.mulf(e.sitofp(e.s8(e.addIndex(j, 2))), d), j);
    });
    return true;
  }
  default:
    return false;
  }
}
