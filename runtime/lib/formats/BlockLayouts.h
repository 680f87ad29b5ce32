//===- BlockLayouts.h - Byte offsets of the fields in each block (private) ===//
//
// Where each field of a GGUF block starts, as named constants, so that code
// packing or unpacking blocks does not restate raw offsets. The bit-level
// order of codes inside a field is documented beside the decoders
// (Decode.cpp, docs/formats.md); the static_asserts tie every block's total
// size to Formats.def, the one home of block sizes.
//
//===----------------------------------------------------------------------===//

#ifndef QCC_RUNTIME_FORMATS_BLOCKLAYOUTS_H
#define QCC_RUNTIME_FORMATS_BLOCKLAYOUTS_H

#include "qcc/Runtime/Formats.h"

#include <cstddef>

namespace qcc {
namespace layout {

// Legacy 32-element formats.
struct Q4_0 {
  static constexpr size_t d = 0, qs = 2, bytes = 18;
};
struct Q4_1 {
  static constexpr size_t d = 0, m = 2, qs = 4, bytes = 20;
};
struct Q5_0 {
  static constexpr size_t d = 0, qh = 2, qs = 6, bytes = 22;
};
struct Q5_1 {
  static constexpr size_t d = 0, m = 2, qh = 4, qs = 8, bytes = 24;
};
struct Q8_0 {
  static constexpr size_t d = 0, qs = 2, bytes = 34;
};

// K-quants.
struct Q2_K {
  static constexpr size_t scales = 0, qs = 16, d = 80, dmin = 82, bytes = 84;
};
struct Q3_K {
  static constexpr size_t hmask = 0, qs = 32, scales = 96, d = 108, bytes = 110;
};
struct Q4_K {
  static constexpr size_t d = 0, dmin = 2, scales = 4, qs = 16, bytes = 144;
};
struct Q5_K {
  static constexpr size_t d = 0, dmin = 2, scales = 4, qh = 16, qs = 48,
                          bytes = 176;
};
struct Q6_K {
  static constexpr size_t ql = 0, qh = 128, scales = 192, d = 208, bytes = 210;
};

// Codebook i-quants.
struct IQ2_XXS {
  static constexpr size_t d = 0, qs = 2, bytes = 66;
};
struct IQ2_XS {
  static constexpr size_t d = 0, qs = 2, scales = 66, bytes = 74;
};
struct IQ2_S {
  static constexpr size_t d = 0, qs = 2, signs = 34, qh = 66, scales = 74,
                          bytes = 82;
};
struct IQ3_XXS {
  static constexpr size_t d = 0, qs = 2, scalesAndSigns = 66, bytes = 98;
};
struct IQ3_S {
  static constexpr size_t d = 0, qs = 2, qh = 66, signs = 74, scales = 106,
                          bytes = 110;
};
struct IQ1_S {
  static constexpr size_t d = 0, qs = 2, qh = 34, bytes = 50;
};
struct IQ1_M {
  static constexpr size_t qs = 0, qh = 32, scales = 48, bytes = 56;
};
struct IQ4_NL {
  static constexpr size_t d = 0, qs = 2, bytes = 18;
};
struct IQ4_XS {
  static constexpr size_t d = 0, scalesH = 2, scalesL = 4, qs = 8, bytes = 136;
};

// Ternary, fp4 and 1/2-bit formats.
struct TQ1_0 {
  static constexpr size_t qs = 0, qh = 48, d = 52, bytes = 54;
};
struct TQ2_0 {
  static constexpr size_t qs = 0, d = 64, bytes = 66;
};
struct MXFP4 {
  static constexpr size_t e = 0, qs = 1, bytes = 17;
};
struct NVFP4 {
  static constexpr size_t d = 0, qs = 4, bytes = 36;
};
struct Q1_0 {
  static constexpr size_t d = 0, qs = 2, bytes = 18;
};
struct Q2_0 {
  static constexpr size_t d = 0, qs = 2, bytes = 18;
};

#define QCC_CHECK_LAYOUT(E)                                                    \
  static_assert(E::bytes == formatInfo(Format::E).blockBytes,                  \
                "BlockLayouts.h disagrees with Formats.def about " #E);
QCC_CHECK_LAYOUT(Q4_0)
QCC_CHECK_LAYOUT(Q4_1)
QCC_CHECK_LAYOUT(Q5_0)
QCC_CHECK_LAYOUT(Q5_1)
QCC_CHECK_LAYOUT(Q8_0)
QCC_CHECK_LAYOUT(Q2_K)
QCC_CHECK_LAYOUT(Q3_K)
QCC_CHECK_LAYOUT(Q4_K)
QCC_CHECK_LAYOUT(Q5_K)
QCC_CHECK_LAYOUT(Q6_K)
QCC_CHECK_LAYOUT(IQ2_XXS)
QCC_CHECK_LAYOUT(IQ2_XS)
QCC_CHECK_LAYOUT(IQ2_S)
QCC_CHECK_LAYOUT(IQ3_XXS)
QCC_CHECK_LAYOUT(IQ3_S)
QCC_CHECK_LAYOUT(IQ1_S)
QCC_CHECK_LAYOUT(IQ1_M)
QCC_CHECK_LAYOUT(IQ4_NL)
QCC_CHECK_LAYOUT(IQ4_XS)
QCC_CHECK_LAYOUT(TQ1_0)
QCC_CHECK_LAYOUT(TQ2_0)
QCC_CHECK_LAYOUT(MXFP4)
QCC_CHECK_LAYOUT(NVFP4)
QCC_CHECK_LAYOUT(Q1_0)
QCC_CHECK_LAYOUT(Q2_0)
#undef QCC_CHECK_LAYOUT

} // namespace layout
} // namespace qcc

#endif // QCC_RUNTIME_FORMATS_BLOCKLAYOUTS_H
