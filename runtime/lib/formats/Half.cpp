//===- Half.cpp - IEEE half and bfloat16 conversions ----------------------===//
//
// The scalar conversions between f32 and the 16-bit float formats, bit for
// bit as ggml does them on x86:
//  * f16 -> f32 is exact; a NaN keeps its payload and comes back quiet (what
//    F16C's vcvtph2ps does, so the SIMD decoders agree).
//  * f32 -> f16 rounds to nearest even like vcvtps2ph with imm 0 (ggml's
//    _cvtss_sh(x, 0)); a NaN keeps the top 10 payload bits and is quieted.
//  * f32 -> bf16 is ggml_compute_fp32_to_bf16: NaN -> quiet NaN with the
//    truncated payload, everything else rounds to nearest even (subnormals
//    are not flushed).
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/Codecs.h"

#include <cstring>

namespace qcc {

static inline uint32_t bitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
static inline float floatOf(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

float halfToFloat(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24 is exact in f32.
    return floatOf(bitsOf(float(mant) * 0x1p-24f) | sign);
  }
  if (exp == 31) {
    // Inf stays Inf; a NaN is returned quiet with its payload.
    return floatOf(sign | 0x7f800000 | (mant << 13) | (mant ? 0x400000 : 0));
  }
  return floatOf(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t floatToHalf(float f) {
  const uint32_t u = bitsOf(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000);
  const uint32_t a = u & 0x7fffffff;
  if (a > 0x7f800000) // NaN: quiet, top payload bits kept
    return uint16_t(sign | 0x7e00 | ((a >> 13) & 0x3ff));
  if (a >= 0x477ff000) // >= 65520 rounds (ties to even) to Inf
    return uint16_t(sign | 0x7c00);
  if (a >= 0x38800000) {
    // Normal half: rebias the exponent, round the 13 dropped bits to even.
    // A mantissa carry correctly bumps the exponent.
    uint32_t t = a - 0x38000000;
    t += 0xfff + ((t >> 13) & 1);
    return uint16_t(sign | (t >> 13));
  }
  // Subnormal half (or zero): adding 0.5f puts the unit in the last place at
  // 2^-24, so the f32 addition performs exactly the round-to-nearest-even we
  // need; a result of 1024 is the smallest normal's encoding, also right.
  const float t = floatOf(a) + 0.5f;
  return uint16_t(sign | (bitsOf(t) - 0x3f000000));
}

float bf16ToFloat(uint16_t b) { return floatOf(uint32_t(b) << 16); }

uint16_t floatToBF16(float f) {
  const uint32_t u = bitsOf(f);
  if ((u & 0x7fffffff) > 0x7f800000)
    return uint16_t((u >> 16) | 64); // force quiet
  return uint16_t((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

} // namespace qcc
