//===- DecodeKernels.h - Per-ISA decoder tables (private) -----------------===//
//
// Glue between the dispatcher in Decode.cpp and the ISA-specific kernels in
// Decode_avx2.cpp / Decode_avx512.cpp. A row kernel decodes `numBlocks`
// consecutive blocks; a table entry of nullptr means "no kernel for this ISA,
// use the next narrower one" (see Decode.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef QCC_RUNTIME_FORMATS_DECODEKERNELS_H
#define QCC_RUNTIME_FORMATS_DECODEKERNELS_H

#include "qcc/Runtime/Formats.h"

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace qcc {
namespace decode {

using RowFn = void (*)(const uint8_t *blocks, float *out, size_t numBlocks);
using NarrowFn = void (*)(const float *in, uint16_t *out, size_t n);

/// Scalar reference row decoder of `format` (never null).
RowFn scalarRow(Format format);
/// ISA kernels; nullptr where the ISA has none for `format`. Only call after
/// the CPU check in Decode.cpp.
RowFn avx2Row(Format format);
RowFn avx512Row(Format format);

/// f32 -> bf16 / f16 over a buffer, identical to floatToBF16 / floatToHalf.
void narrowBF16AVX2(const float *in, uint16_t *out, size_t n);
void narrowF16AVX2(const float *in, uint16_t *out, size_t n);
void narrowBF16AVX512(const float *in, uint16_t *out, size_t n);
void narrowF16AVX512(const float *in, uint16_t *out, size_t n);

/// Little-endian loads that tolerate any alignment.
inline uint16_t loadU16(const uint8_t *p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline uint32_t loadU32(const uint8_t *p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

//===----------------------------------------------------------------------===//
// Scale decoding shared by the scalar reference and the SIMD kernels, so
// that these format facts have one definition (see docs/formats.md).
//===----------------------------------------------------------------------===//

/// The 6-bit (scale, min) pair j of the 12-byte packed table of q4_K / q5_K:
/// pairs 0-3 sit in the low 6 bits of bytes 0-3 / 4-7; pairs 4-7 take their
/// low nibbles from bytes 8-11 and their top 2 bits from the spare bits of
/// bytes 0-7.
inline void scaleMinK4(int j, const uint8_t *q, int &sc, int &mn) {
  if (j < 4) {
    sc = q[j] & 63;
    mn = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
    mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

/// The 16 signed scales of q3_K from its 12 packed bytes: low 4 bits of
/// scale i from byte i (i < 8) or the high nibble of byte i - 8, top 2 bits
/// from byte 8 + i % 4 at bit 2 * (i / 4); minus 32.
inline void unpackQ3KScales(const uint8_t *raw, int8_t sc[16]) {
  for (int i = 0; i < 16; ++i) {
    const int lo = i < 8 ? (raw[i] & 0xf) : (raw[i - 8] >> 4);
    const int hi = (raw[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
    sc[i] = int8_t((lo | (hi << 4)) - 32);
  }
}

/// The e8m0 block scale of mxfp4, halved (kValuesMXFP4 are doubled e2m1
/// values): 2^(e - 128), built directly as bits; e < 2 gives subnormals.
inline float e8m0Half(uint8_t e) {
  const uint32_t bits = e < 2 ? (0x00200000u << e) : (uint32_t(e - 1) << 23);
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

/// The unsigned e4m3 sub-block scale of nvfp4 (bias 7, bit 7 ignored),
/// halved as for mxfp4. 0 and 0x7f (the NaN code) decode to 0. Both branches
/// are exact: man * 2^-9 and (8 + man) * 2^(exp - 10).
inline float ue4m3Half(uint8_t x) {
  if (x == 0 || x == 0x7f)
    return 0.0f;
  const int exp = (x >> 3) & 0xf, man = x & 7;
  const float raw = exp == 0 ? float(man) * 0x1p-9f
                             : float(8 + man) * float(1u << exp) * 0x1p-10f;
  return raw * 0.5f;
}

} // namespace decode
} // namespace qcc

#endif // QCC_RUNTIME_FORMATS_DECODEKERNELS_H
