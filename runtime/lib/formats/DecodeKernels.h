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

} // namespace decode
} // namespace qcc

#endif // QCC_RUNTIME_FORMATS_DECODEKERNELS_H
