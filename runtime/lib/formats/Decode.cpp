//===- Decode.cpp - Scalar reference decoders and the dispatcher ----------===//
//
// The one home of every GGUF block format's decode arithmetic. Each format
// has a small function `decode<Format>Block(const uint8_t *block, float *y)`
// that turns one block into its logical elements, with exactly the operation
// order of ggml's dequantize_row_* (products like (d * sc) * q round
// differently from d * (sc * q), so the parenthesisation below is part of
// the format). These are the reference the SIMD kernels and the MLIR
// lowering are proven bit-equal to. The codec library is compiled with
// -ffp-contract=off so that no a * b + c here becomes an FMA ggml lacks.
//
// Byte offsets are spelled out per block instead of through packed structs so
// that the layout is visible in one place (see docs/formats.md). The few
// scale decoders the SIMD kernels share (scaleMinK4, unpackQ3KScales,
// e8m0Half, ue4m3Half) live in DecodeKernels.h so that they too have a
// single definition.
//
//===----------------------------------------------------------------------===//

#include "Codebooks.h"
#include "DecodeKernels.h"
#include "qcc/Runtime/Codecs.h"

#include <cstring>

namespace qcc {
namespace decode {

using namespace codebooks;

static inline float f16At(const uint8_t *p) { return halfToFloat(loadU16(p)); }

//===----------------------------------------------------------------------===//
// Plain float formats (block = 1 element)
//===----------------------------------------------------------------------===//

static inline void decodeF32Block(const uint8_t *x, float *y) {
  std::memcpy(y, x, 4);
}
static inline void decodeF16Block(const uint8_t *x, float *y) { *y = f16At(x); }
static inline void decodeBF16Block(const uint8_t *x, float *y) {
  *y = bf16ToFloat(loadU16(x));
}

//===----------------------------------------------------------------------===//
// Legacy 32-element formats. Element j < 16 is the low nibble of qs[j],
// element j + 16 the high nibble.
//===----------------------------------------------------------------------===//

// q4_0 (18 B): f16 d @0, qs[16] @2.  y = (q - 8) * d
static inline void decodeQ4_0Block(const uint8_t *x, float *y) {
  const float d = f16At(x);
  const uint8_t *qs = x + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = float((qs[j] & 0xf) - 8) * d;
    y[j + 16] = float((qs[j] >> 4) - 8) * d;
  }
}

// q4_1 (20 B): f16 d @0, f16 m @2, qs[16] @4.  y = q * d + m
static inline void decodeQ4_1Block(const uint8_t *x, float *y) {
  const float d = f16At(x), m = f16At(x + 2);
  const uint8_t *qs = x + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = float(qs[j] & 0xf) * d + m;
    y[j + 16] = float(qs[j] >> 4) * d + m;
  }
}

// q5_0 (22 B): f16 d @0, u32 qh @2 (bit j = 5th bit of element j), qs @6.
// y = (q - 16) * d
static inline void decodeQ5_0Block(const uint8_t *x, float *y) {
  const float d = f16At(x);
  const uint32_t qh = loadU32(x + 2);
  const uint8_t *qs = x + 6;
  for (int j = 0; j < 16; ++j) {
    const int h0 = ((qh >> j) & 1) << 4, h1 = ((qh >> (j + 16)) & 1) << 4;
    y[j] = float(((qs[j] & 0xf) | h0) - 16) * d;
    y[j + 16] = float(((qs[j] >> 4) | h1) - 16) * d;
  }
}

// q5_1 (24 B): f16 d @0, f16 m @2, u32 qh @4, qs @8.  y = q * d + m
static inline void decodeQ5_1Block(const uint8_t *x, float *y) {
  const float d = f16At(x), m = f16At(x + 2);
  const uint32_t qh = loadU32(x + 4);
  const uint8_t *qs = x + 8;
  for (int j = 0; j < 16; ++j) {
    const int h0 = ((qh >> j) & 1) << 4, h1 = ((qh >> (j + 16)) & 1) << 4;
    y[j] = float((qs[j] & 0xf) | h0) * d + m;
    y[j + 16] = float((qs[j] >> 4) | h1) * d + m;
  }
}

// q8_0 (34 B): f16 d @0, int8 qs[32] @2.  y = q * d
static inline void decodeQ8_0Block(const uint8_t *x, float *y) {
  const float d = f16At(x);
  const int8_t *qs = reinterpret_cast<const int8_t *>(x + 2);
  for (int j = 0; j < 32; ++j)
    y[j] = float(qs[j]) * d;
}

//===----------------------------------------------------------------------===//
// K-quants (256-element super-blocks)
//===----------------------------------------------------------------------===//

// q2_K (84 B): scales[16] @0 (low nibble scale, high nibble min), qs[64] @16,
// f16 d @80, f16 dmin @82. Element 128*h + 32*s + l (h < 2, s < 4, l < 32)
// is bits 2s..2s+1 of qs[32h + l]; its 16-group is 8h + 2s + l/16.
// y = (d * sc) * q - (dmin * m)
static inline void decodeQ2_KBlock(const uint8_t *x, float *y) {
  const uint8_t *scales = x, *qs = x + 16;
  const float d = f16At(x + 80), dmin = f16At(x + 82);
  int is = 0;
  for (int h = 0; h < 2; ++h, qs += 32) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int half = 0; half < 2; ++half) {
        const uint8_t sc = scales[is++];
        const float dl = d * float(sc & 0xf), ml = dmin * float(sc >> 4);
        for (int l = 0; l < 16; ++l)
          *y++ = dl * float((qs[16 * half + l] >> shift) & 3) - ml;
      }
    }
  }
}

// q3_K (110 B): hmask[32] @0, qs[64] @32, scales[12] @96 (16 x 6 bit), f16 d
// @108. Low 2 bits as q2_K; the third bit of element 128*h + 32*s + l is bit
// (4h + s) of hmask[l]; a clear bit subtracts 4. y = (d * (sc - 32)) * q
static inline void decodeQ3_KBlock(const uint8_t *x, float *y) {
  const uint8_t *hm = x, *qs = x + 32, *raw = x + 96;
  const float d = f16At(x + 108);
  int8_t sc[16];
  unpackQ3KScales(raw, sc);
  int is = 0;
  uint8_t m = 1;
  for (int h = 0; h < 2; ++h, qs += 32) {
    for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
      for (int half = 0; half < 2; ++half) {
        const float dl = d * float(sc[is++]);
        for (int l = 16 * half; l < 16 * half + 16; ++l) {
          const int q = ((qs[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4);
          *y++ = dl * float(q);
        }
      }
    }
  }
}

// q4_K (144 B): f16 d @0, f16 dmin @2, scales[12] @4, qs[128] @16. Chunk c
// (64 elements) is the low nibbles then the high nibbles of qs[32c..32c+31],
// with (scale, min) pairs 2c and 2c+1. y = (d * sc) * q - (dmin * m)
static inline void decodeQ4_KBlock(const uint8_t *x, float *y) {
  const float d = f16At(x), dmin = f16At(x + 2);
  const uint8_t *scales = x + 4, *qs = x + 16;
  for (int c = 0; c < 4; ++c, qs += 32) {
    int sc, mn;
    scaleMinK4(2 * c, scales, sc, mn);
    const float d1 = d * float(sc), m1 = dmin * float(mn);
    scaleMinK4(2 * c + 1, scales, sc, mn);
    const float d2 = d * float(sc), m2 = dmin * float(mn);
    for (int l = 0; l < 32; ++l)
      *y++ = d1 * float(qs[l] & 0xf) - m1;
    for (int l = 0; l < 32; ++l)
      *y++ = d2 * float(qs[l] >> 4) - m2;
  }
}

// q5_K (176 B): f16 d @0, f16 dmin @2, scales[12] @4, qh[32] @16, qs[128]
// @48. As q4_K; the 5th bit of element 32k + l (k < 8) is bit k of qh[l].
static inline void decodeQ5_KBlock(const uint8_t *x, float *y) {
  const float d = f16At(x), dmin = f16At(x + 2);
  const uint8_t *scales = x + 4, *qh = x + 16, *qs = x + 48;
  for (int c = 0; c < 4; ++c, qs += 32) {
    int sc, mn;
    scaleMinK4(2 * c, scales, sc, mn);
    const float d1 = d * float(sc), m1 = dmin * float(mn);
    scaleMinK4(2 * c + 1, scales, sc, mn);
    const float d2 = d * float(sc), m2 = dmin * float(mn);
    const uint8_t u1 = uint8_t(1 << (2 * c)), u2 = uint8_t(2 << (2 * c));
    for (int l = 0; l < 32; ++l)
      *y++ = d1 * float((qs[l] & 0xf) + ((qh[l] & u1) ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l)
      *y++ = d2 * float((qs[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
  }
}

// q6_K (210 B): ql[128] @0, qh[64] @128, int8 scales[16] @192, f16 d @208.
// Half h (128 elements) uses ql[64h..], qh[32h..], scales[8h..]; element
// 128h + 32k + l (k < 4) has low nibble from ql[64h + l + 32(k&1)] (low
// nibble for k < 2, high for k >= 2) and top 2 bits (qh[32h + l] >> 2k) & 3.
// y = (d * sc) * (q - 32)   -- the product d*sc*q can exceed 24 bits, so
// the grouping matters.
static inline void decodeQ6_KBlock(const uint8_t *x, float *y) {
  const float d = f16At(x + 208);
  const uint8_t *ql = x, *qh = x + 128;
  const int8_t *sc = reinterpret_cast<const int8_t *>(x + 192);
  for (int h = 0; h < 2; ++h, y += 128, ql += 64, qh += 32, sc += 8) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * float(sc[is]) * float(q1);
      y[l + 32] = d * float(sc[is + 2]) * float(q2);
      y[l + 64] = d * float(sc[is + 4]) * float(q3);
      y[l + 96] = d * float(sc[is + 6]) * float(q4);
    }
  }
}

//===----------------------------------------------------------------------===//
// i-quants (256-element super-blocks of 8 groups of 32, codebook based)
//===----------------------------------------------------------------------===//

// ggml writes the sign as a multiplication by (bit ? -1.f : 1.f), which
// compilers fold into a negation (IEEE leaves the sign of a NaN product
// open). We spell the negation out, so that a NaN scale gives one defined
// answer on every path: the sign bit flips like for every other value.
static inline float applySign(float v, uint8_t signs, int j) {
  return (signs & kMaskIQ2XS[j]) ? -v : v;
}
static inline const uint8_t *gridRow8(const uint64_t *grid, unsigned i) {
  return reinterpret_cast<const uint8_t *>(grid + i);
}
static inline const uint8_t *gridRow4(const uint32_t *grid, unsigned i) {
  return reinterpret_cast<const uint8_t *>(grid + i);
}

// iq2_xxs (66 B): f16 d @0, then per group g 8 bytes @2+8g: 4 grid indices
// (bytes 0-3) and a u32 (bytes 4-7) = 4 x 7 sign bits + 4-bit scale (top).
// y = ((d * (0.5 + s)) * 0.25) * grid * sign
static inline void decodeIQ2_XXSBlock(const uint8_t *x, float *y) {
  const float d = f16At(x);
  for (int g = 0; g < 8; ++g) {
    const uint8_t *q = x + 2 + 8 * g;
    const uint32_t aux = loadU32(q + 4);
    const float db = d * (0.5f + float(aux >> 28)) * 0.25f;
    for (int l = 0; l < 4; ++l, y += 8) {
      const uint8_t *grid = gridRow8(kIQ2XXSGrid, q[l]);
      const uint8_t signs = kSignsIQ2XS[(aux >> (7 * l)) & 127];
      for (int j = 0; j < 8; ++j)
        y[j] = applySign(db * float(grid[j]), signs, j);
    }
  }
}

// iq2_xs (74 B): f16 d @0, u16 qs[32] @2 (9-bit grid index | 7 sign bits
// << 9), scales[8] @66 (two 4-bit scales per group: one per 16 elements).
static inline void decodeIQ2_XSBlock(const uint8_t *x, float *y) {
  const float d = f16At(x);
  const uint8_t *scales = x + 66;
  for (int g = 0; g < 8; ++g) {
    const float db[2] = {d * (0.5f + float(scales[g] & 0xf)) * 0.25f,
                         d * (0.5f + float(scales[g] >> 4)) * 0.25f};
    for (int l = 0; l < 4; ++l, y += 8) {
      const uint16_t q = loadU16(x + 2 + 2 * (4 * g + l));
      const uint8_t *grid = gridRow8(kIQ2XSGrid, q & 511);
      const uint8_t signs = kSignsIQ2XS[q >> 9];
      for (int j = 0; j < 8; ++j)
        y[j] = applySign(db[l / 2] * float(grid[j]), signs, j);
    }
  }
}

// iq2_s (82 B): f16 d @0, qs[32] @2 (grid index low 8 bits), signs[32] @34
// (8 explicit sign bits per 8 elements), qh[8] @66 (2 high index bits per
// 8 elements), scales[8] @74 (as iq2_xs).
static inline void decodeIQ2_SBlock(const uint8_t *x, float *y) {
  const float d = f16At(x);
  const uint8_t *qs = x + 2, *signs = x + 34, *qh = x + 66, *scales = x + 74;
  for (int g = 0; g < 8; ++g, qs += 4, signs += 4) {
    const float db[2] = {d * (0.5f + float(scales[g] & 0xf)) * 0.25f,
                         d * (0.5f + float(scales[g] >> 4)) * 0.25f};
    for (int l = 0; l < 4; ++l, y += 8) {
      const unsigned idx = qs[l] | ((unsigned(qh[g]) << (8 - 2 * l)) & 0x300);
      const uint8_t *grid = gridRow8(kIQ2SGrid, idx);
      for (int j = 0; j < 8; ++j)
        y[j] = applySign(db[l / 2] * float(grid[j]), signs[l], j);
    }
  }
}

// iq3_xxs (98 B): f16 d @0, qs[64] @2 (one 4-entry grid index per 4
// elements), u32 per group @66+4g = 4 x 7 sign bits + 4-bit scale (top).
// y = ((d * (0.5 + s)) * 0.5) * grid * sign
static inline void decodeIQ3_XXSBlock(const uint8_t *x, float *y) {
  const float d = f16At(x);
  const uint8_t *qs = x + 2;
  for (int g = 0; g < 8; ++g, qs += 8) {
    const uint32_t aux = loadU32(x + 66 + 4 * g);
    const float db = d * (0.5f + float(aux >> 28)) * 0.5f;
    for (int l = 0; l < 4; ++l, y += 8) {
      const uint8_t signs = kSignsIQ2XS[(aux >> (7 * l)) & 127];
      const uint8_t *g1 = gridRow4(kIQ3XXSGrid, qs[2 * l]);
      const uint8_t *g2 = gridRow4(kIQ3XXSGrid, qs[2 * l + 1]);
      for (int j = 0; j < 4; ++j) {
        y[j] = applySign(db * float(g1[j]), signs, j);
        y[j + 4] = applySign(db * float(g2[j]), signs, j + 4);
      }
    }
  }
}

// iq3_s (110 B): f16 d @0, qs[64] @2 (grid index low 8 bits per 4 elements),
// qh[8] @66 (9th index bit, one byte per group), signs[32] @74 (8 explicit
// sign bits per 8 elements), scales[4] @106 (4-bit, two groups per byte).
// y = (d * (1 + 2s)) * grid * sign
static inline void decodeIQ3_SBlock(const uint8_t *x, float *y) {
  const float d = f16At(x);
  const uint8_t *qs = x + 2, *qh = x + 66, *signs = x + 74, *scales = x + 106;
  for (int g = 0; g < 8; ++g, qs += 8, signs += 4) {
    const int s = (g & 1) ? (scales[g / 2] >> 4) : (scales[g / 2] & 0xf);
    const float db = d * float(1 + 2 * s);
    for (int l = 0; l < 4; ++l, y += 8) {
      const unsigned i1 = qs[2 * l] | ((unsigned(qh[g]) << (8 - 2 * l)) & 256);
      const unsigned i2 =
          qs[2 * l + 1] | ((unsigned(qh[g]) << (7 - 2 * l)) & 256);
      const uint8_t *g1 = gridRow4(kIQ3SGrid, i1),
                    *g2 = gridRow4(kIQ3SGrid, i2);
      for (int j = 0; j < 4; ++j) {
        y[j] = applySign(db * float(g1[j]), signs[l], j);
        y[j + 4] = applySign(db * float(g2[j]), signs[l], j + 4);
      }
    }
  }
}

// iq1_s (50 B): f16 d @0, qs[32] @2 (grid index low 8 bits per 8 elements),
// u16 qh[8] @34 per group: 4 x 3 high index bits, 3-bit scale @12, delta
// sign @15.  y = (d * (2s + 1)) * (grid + delta), delta = +-1/8
static inline void decodeIQ1_SBlock(const uint8_t *x, float *y) {
  const float d = f16At(x);
  const uint8_t *qs = x + 2;
  for (int g = 0; g < 8; ++g, qs += 4) {
    const uint16_t qh = loadU16(x + 34 + 2 * g);
    const float dl = d * float(2 * ((qh >> 12) & 7) + 1);
    const float delta = (qh & 0x8000) ? -kIQ1Delta : kIQ1Delta;
    for (int l = 0; l < 4; ++l, y += 8) {
      const unsigned idx = qs[l] | (((qh >> (3 * l)) & 7) << 8);
      const int8_t *grid = reinterpret_cast<const int8_t *>(kIQ1SGrid + idx);
      for (int j = 0; j < 8; ++j)
        y[j] = dl * (float(grid[j]) + delta);
    }
  }
}

// iq1_m (56 B): qs[32] @0, qh[16] @32 (per 8 elements a nibble: 3 high index
// bits + delta sign), u16 scales[4] @48: 3-bit scales (4 per u16, one per
// 16 elements) and, in the top nibbles of the 4 u16, the f16 block scale.
static inline void decodeIQ1_MBlock(const uint8_t *x, float *y) {
  const uint8_t *qs = x, *qh = x + 32;
  uint16_t sc[4];
  for (int i = 0; i < 4; ++i)
    sc[i] = loadU16(x + 48 + 2 * i);
  const uint16_t dBits = uint16_t((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) |
                                  ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000));
  const float d = halfToFloat(dBits);
  for (int g = 0; g < 8; ++g, qs += 4, qh += 2) {
    const int shift = 6 * (g % 2);
    const float dl1 = d * float(2 * ((sc[g / 2] >> shift) & 7) + 1);
    const float dl2 = d * float(2 * ((sc[g / 2] >> (shift + 3)) & 7) + 1);
    const unsigned idx[4] = {qs[0] | ((unsigned(qh[0]) << 8) & 0x700),
                             qs[1] | ((unsigned(qh[0]) << 4) & 0x700),
                             qs[2] | ((unsigned(qh[1]) << 8) & 0x700),
                             qs[3] | ((unsigned(qh[1]) << 4) & 0x700)};
    const float delta[4] = {(qh[0] & 0x08) ? -kIQ1Delta : kIQ1Delta,
                            (qh[0] & 0x80) ? -kIQ1Delta : kIQ1Delta,
                            (qh[1] & 0x08) ? -kIQ1Delta : kIQ1Delta,
                            (qh[1] & 0x80) ? -kIQ1Delta : kIQ1Delta};
    for (int l = 0; l < 4; ++l, y += 8) {
      const int8_t *grid = reinterpret_cast<const int8_t *>(kIQ1SGrid + idx[l]);
      const float dl = l < 2 ? dl1 : dl2;
      for (int j = 0; j < 8; ++j)
        y[j] = dl * (float(grid[j]) + delta[l]);
    }
  }
}

// iq4_nl (18 B): f16 d @0, qs[16] @2 as q4_0.  y = d * kvalues[q]
static inline void decodeIQ4_NLBlock(const uint8_t *x, float *y) {
  const float d = f16At(x);
  const uint8_t *qs = x + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(kValuesIQ4NL[qs[j] & 0xf]);
    y[j + 16] = d * float(kValuesIQ4NL[qs[j] >> 4]);
  }
}

// iq4_xs (136 B): f16 d @0, u16 scales_h @2 (2 high bits per group),
// scales_l[4] @4 (low nibble per group), qs[128] @8 (16 bytes per group,
// as iq4_nl).  y = (d * (s - 32)) * kvalues[q]
static inline void decodeIQ4_XSBlock(const uint8_t *x, float *y) {
  const float d = f16At(x);
  const uint16_t scalesH = loadU16(x + 2);
  const uint8_t *scalesL = x + 4, *qs = x + 8;
  for (int g = 0; g < 8; ++g, qs += 16, y += 32) {
    const int ls = ((scalesL[g / 2] >> (4 * (g % 2))) & 0xf) |
                   (((scalesH >> (2 * g)) & 3) << 4);
    const float dl = d * float(ls - 32);
    for (int j = 0; j < 16; ++j) {
      y[j] = dl * float(kValuesIQ4NL[qs[j] & 0xf]);
      y[j + 16] = dl * float(kValuesIQ4NL[qs[j] >> 4]);
    }
  }
}

//===----------------------------------------------------------------------===//
// Ternary, fp4 and 1/2-bit formats
//===----------------------------------------------------------------------===//

// One base-3 digit out of a byte that stores 5 (or 4) trits as a fixed-point
// fraction: multiplying by 3^n (mod 256) rotates digit n to the top, and
// (q * 3) >> 8 reads it.
static inline int trit(uint8_t q, uint8_t pow3) {
  const uint8_t r = uint8_t(q * pow3);
  return ((uint16_t(r) * 3) >> 8) - 1;
}

// tq1_0 (54 B): qs[48] @0, qh[4] @48, f16 d @52. Elements 0-159: digit n of
// qs[m] (m < 32) is element 32n + m; 160-239: digit n of qs[32 + m] (m < 16)
// is 160 + 16n + m; 240-255: digit n of qh[m] is 240 + 4n + m.  y = t * d
static inline void decodeTQ1_0Block(const uint8_t *x, float *y) {
  static constexpr uint8_t kPow3[5] = {1, 3, 9, 27, 81};
  const float d = f16At(x + 52);
  for (int n = 0; n < 5; ++n)
    for (int m = 0; m < 32; ++m)
      *y++ = float(trit(x[m], kPow3[n])) * d;
  for (int n = 0; n < 5; ++n)
    for (int m = 0; m < 16; ++m)
      *y++ = float(trit(x[32 + m], kPow3[n])) * d;
  for (int n = 0; n < 4; ++n)
    for (int m = 0; m < 4; ++m)
      *y++ = float(trit(x[48 + m], kPow3[n])) * d;
}

// tq2_0 (66 B): qs[64] @0, f16 d @64. Element 128h + 32k + m is bits 2k..2k+1
// of qs[32h + m], stored as t + 1.  y = t * d
static inline void decodeTQ2_0Block(const uint8_t *x, float *y) {
  const float d = f16At(x + 64);
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 4; ++k)
      for (int m = 0; m < 32; ++m)
        *y++ = float(((x[32 * h + m] >> (2 * k)) & 3) - 1) * d;
}

// mxfp4 (17 B): u8 e8m0 exponent @0, qs[16] @1 as q4_0.  y = kv[q] * d
static inline void decodeMXFP4Block(const uint8_t *x, float *y) {
  const float d = e8m0Half(x[0]);
  const uint8_t *qs = x + 1;
  for (int j = 0; j < 16; ++j) {
    y[j] = float(kValuesMXFP4[qs[j] & 0xf]) * d;
    y[j + 16] = float(kValuesMXFP4[qs[j] >> 4]) * d;
  }
}

// nvfp4 (36 B): ue4m3 d[4] @0 (one per 16 elements), qs[32] @4. Sub-block s:
// element 16s + j is the low nibble of qs[8s + j] (j < 8), 16s + 8 + j the
// high nibble.  y = kv[q] * d_s
static inline void decodeNVFP4Block(const uint8_t *x, float *y) {
  for (int s = 0; s < 4; ++s, y += 16) {
    const float d = ue4m3Half(x[s]);
    const uint8_t *qs = x + 4 + 8 * s;
    for (int j = 0; j < 8; ++j) {
      y[j] = float(kValuesMXFP4[qs[j] & 0xf]) * d;
      y[j + 8] = float(kValuesMXFP4[qs[j] >> 4]) * d;
    }
  }
}

// q1_0 (18 B, 128 elements): f16 d @0, qs[16] @2; element j is bit j%8 of
// qs[j/8]: set -> +d, clear -> -d (a negation, not a multiply by -1).
static inline void decodeQ1_0Block(const uint8_t *x, float *y) {
  const float d = f16At(x), negD = -d;
  for (int j = 0; j < 128; ++j)
    y[j] = ((x[2 + j / 8] >> (j % 8)) & 1) ? d : negD;
}

// q2_0 (18 B, 64 elements): f16 d @0, qs[16] @2; element j is bits
// 2(j%4)..2(j%4)+1 of qs[j/4], stored as q + 1.  y = (q - 1) * d
static inline void decodeQ2_0Block(const uint8_t *x, float *y) {
  const float d = f16At(x);
  for (int j = 0; j < 64; ++j)
    y[j] = float(((x[2 + j / 4] >> (2 * (j % 4))) & 3) - 1) * d;
}

//===----------------------------------------------------------------------===//
// Row kernels and tables
//===----------------------------------------------------------------------===//

template <void (*Block)(const uint8_t *, float *), size_t Elems, size_t Bytes>
static void rowOf(const uint8_t *x, float *y, size_t numBlocks) {
  for (size_t i = 0; i < numBlocks; ++i)
    Block(x + i * Bytes, y + i * Elems);
}

#define QCC_SCALAR_ROW(E, BLOCK)                                               \
  case Format::E:                                                              \
    return &rowOf<BLOCK, formatInfo(Format::E).blockElems,                     \
                  formatInfo(Format::E).blockBytes>;

RowFn scalarRow(Format format) {
  switch (format) {
    QCC_SCALAR_ROW(F32, decodeF32Block)
    QCC_SCALAR_ROW(F16, decodeF16Block)
    QCC_SCALAR_ROW(BF16, decodeBF16Block)
    QCC_SCALAR_ROW(Q4_0, decodeQ4_0Block)
    QCC_SCALAR_ROW(Q4_1, decodeQ4_1Block)
    QCC_SCALAR_ROW(Q5_0, decodeQ5_0Block)
    QCC_SCALAR_ROW(Q5_1, decodeQ5_1Block)
    QCC_SCALAR_ROW(Q8_0, decodeQ8_0Block)
    QCC_SCALAR_ROW(Q2_K, decodeQ2_KBlock)
    QCC_SCALAR_ROW(Q3_K, decodeQ3_KBlock)
    QCC_SCALAR_ROW(Q4_K, decodeQ4_KBlock)
    QCC_SCALAR_ROW(Q5_K, decodeQ5_KBlock)
    QCC_SCALAR_ROW(Q6_K, decodeQ6_KBlock)
    QCC_SCALAR_ROW(IQ2_XXS, decodeIQ2_XXSBlock)
    QCC_SCALAR_ROW(IQ2_XS, decodeIQ2_XSBlock)
    QCC_SCALAR_ROW(IQ2_S, decodeIQ2_SBlock)
    QCC_SCALAR_ROW(IQ3_XXS, decodeIQ3_XXSBlock)
    QCC_SCALAR_ROW(IQ3_S, decodeIQ3_SBlock)
    QCC_SCALAR_ROW(IQ1_S, decodeIQ1_SBlock)
    QCC_SCALAR_ROW(IQ1_M, decodeIQ1_MBlock)
    QCC_SCALAR_ROW(IQ4_NL, decodeIQ4_NLBlock)
    QCC_SCALAR_ROW(IQ4_XS, decodeIQ4_XSBlock)
    QCC_SCALAR_ROW(TQ1_0, decodeTQ1_0Block)
    QCC_SCALAR_ROW(TQ2_0, decodeTQ2_0Block)
    QCC_SCALAR_ROW(MXFP4, decodeMXFP4Block)
    QCC_SCALAR_ROW(NVFP4, decodeNVFP4Block)
    QCC_SCALAR_ROW(Q1_0, decodeQ1_0Block)
    QCC_SCALAR_ROW(Q2_0, decodeQ2_0Block)
  }
  return nullptr;
}
#undef QCC_SCALAR_ROW

} // namespace decode

//===----------------------------------------------------------------------===//
// Public API
//===----------------------------------------------------------------------===//

static bool cpuHasAVX2() {
  static const bool has = __builtin_cpu_supports("avx2") &&
                          __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("bmi2");
  return has;
}
static bool cpuHasAVX512() {
  static const bool has = cpuHasAVX2() && __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512dq") &&
                          __builtin_cpu_supports("avx512vbmi");
  return has;
}

CodecImpl resolveCodecImpl(CodecImpl impl) {
  switch (impl) {
  case CodecImpl::Auto:
    return cpuHasAVX512()
               ? CodecImpl::AVX512
               : (cpuHasAVX2() ? CodecImpl::AVX2 : CodecImpl::Scalar);
  case CodecImpl::AVX512:
    if (cpuHasAVX512())
      return CodecImpl::AVX512;
    return cpuHasAVX2() ? CodecImpl::AVX2 : CodecImpl::Scalar;
  case CodecImpl::AVX2:
    return cpuHasAVX2() ? CodecImpl::AVX2 : CodecImpl::Scalar;
  case CodecImpl::Scalar:
    return CodecImpl::Scalar;
  }
  return CodecImpl::Scalar;
}

const char *codecImplName(CodecImpl impl) {
  switch (impl) {
  case CodecImpl::Auto:
    return "auto";
  case CodecImpl::Scalar:
    return "scalar";
  case CodecImpl::AVX2:
    return "avx2";
  case CodecImpl::AVX512:
    return "avx512";
  }
  return "?";
}

/// The row kernel `impl` uses for `format`: the ISA's own where it has one,
/// else the next narrower ISA's, else scalar.
static decode::RowFn pickRow(Format format, CodecImpl impl) {
  impl = resolveCodecImpl(impl);
  decode::RowFn fn = nullptr;
  if (impl == CodecImpl::AVX512)
    fn = decode::avx512Row(format);
  if (!fn && (impl == CodecImpl::AVX512 || impl == CodecImpl::AVX2))
    fn = decode::avx2Row(format);
  return fn ? fn : decode::scalarRow(format);
}

void decodeToF32(Format format, const void *blocks, float *out,
                 size_t numElements, CodecImpl impl) {
  const FormatInfo &info = formatInfo(format);
  pickRow(format, impl)(static_cast<const uint8_t *>(blocks), out,
                        numElements / info.blockElems);
}

/// Decodes through a small f32 buffer that stays in L1, then narrows.
template <typename ScalarNarrow>
static void decodeNarrow(Format format, const void *blocks, uint16_t *out,
                         size_t numElements, CodecImpl impl,
                         ScalarNarrow scalarNarrow, decode::NarrowFn avx2Narrow,
                         decode::NarrowFn avx512Narrow) {
  const FormatInfo &info = formatInfo(format);
  impl = resolveCodecImpl(impl);
  decode::RowFn row = pickRow(format, impl);
  constexpr size_t kChunk = 4096; // a multiple of every block length
  alignas(64) float buf[kChunk];
  const uint8_t *in = static_cast<const uint8_t *>(blocks);
  for (size_t done = 0; done < numElements; done += kChunk) {
    const size_t n = numElements - done < kChunk ? numElements - done : kChunk;
    const size_t nb = n / info.blockElems;
    row(in + done / info.blockElems * info.blockBytes, buf, nb);
    if (impl == CodecImpl::AVX512)
      avx512Narrow(buf, out + done, n);
    else if (impl == CodecImpl::AVX2)
      avx2Narrow(buf, out + done, n);
    else
      for (size_t i = 0; i < n; ++i)
        out[done + i] = scalarNarrow(buf[i]);
  }
}

void decodeToBF16(Format format, const void *blocks, uint16_t *out,
                  size_t numElements, CodecImpl impl) {
  decodeNarrow(format, blocks, out, numElements, impl, floatToBF16,
               decode::narrowBF16AVX2, decode::narrowBF16AVX512);
}

void decodeToF16(Format format, const void *blocks, uint16_t *out,
                 size_t numElements, CodecImpl impl) {
  decodeNarrow(format, blocks, out, numElements, impl, floatToHalf,
               decode::narrowF16AVX2, decode::narrowF16AVX512);
}

} // namespace qcc
