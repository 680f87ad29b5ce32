//===- Decode_avx2.cpp - AVX2 decoders ------------------------------------===//
//
// AVX2 (+F16C) kernels of the decoders in Decode.cpp. Each computes every
// element with the very operations of its scalar reference, in the same
// order (int -> float conversion, then the same multiplies / subtracts,
// never fused), so the results are bit-identical, NaN and -0 included. The
// per-block scales (d * sc etc.) are computed with scalar code exactly as in
// Decode.cpp and only then broadcast. Only called after a CPU check.
//
//===----------------------------------------------------------------------===//

#include "Codebooks.h"
#include "DecodeKernels.h"
#include "qcc/Runtime/Codecs.h"

#include <cstring>
#include <immintrin.h>

namespace qcc {
namespace decode {

using namespace codebooks;

namespace {

inline float f16At(const uint8_t *p) { return _cvtsh_ss(loadU16(p)); }

/// 8 int8 lanes (the low 8 bytes of v) as floats.
inline __m256 cvt8(__m128i v) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
}

/// y[0..15] = float(b[i]) * d for the 16 int8 lanes of b.
inline void emit16(float *y, __m128i b, __m256 d) {
  _mm256_storeu_ps(y, _mm256_mul_ps(cvt8(b), d));
  _mm256_storeu_ps(y + 8, _mm256_mul_ps(cvt8(_mm_unpackhi_epi64(b, b)), d));
}
/// y[0..15] = float(b[i]) * d + m  (q4_1 / q5_1 order)
inline void emit16MulAdd(float *y, __m128i b, __m256 d, __m256 m) {
  _mm256_storeu_ps(y, _mm256_add_ps(_mm256_mul_ps(cvt8(b), d), m));
  _mm256_storeu_ps(
      y + 8,
      _mm256_add_ps(_mm256_mul_ps(cvt8(_mm_unpackhi_epi64(b, b)), d), m));
}
/// y[0..15] = d * float(b[i]) - m  (K-quant order)
inline void emit16MulSub(float *y, __m128i b, __m256 d, __m256 m) {
  _mm256_storeu_ps(y, _mm256_sub_ps(_mm256_mul_ps(d, cvt8(b)), m));
  _mm256_storeu_ps(
      y + 8,
      _mm256_sub_ps(_mm256_mul_ps(d, cvt8(_mm_unpackhi_epi64(b, b))), m));
}

inline __m128i lowNibbles(__m128i v) {
  return _mm_and_si128(v, _mm_set1_epi8(0x0f));
}
inline __m128i highNibbles(__m128i v) {
  return _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0f));
}
inline __m256i lowNibbles(__m256i v) {
  return _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
}
inline __m256i highNibbles(__m256i v) {
  return _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0f));
}
inline __m128i lo128(__m256i v) { return _mm256_castsi256_si128(v); }
inline __m128i hi128(__m256i v) { return _mm256_extracti128_si256(v, 1); }

/// The 32 bits of qh as 32 bytes, byte k = 0x10 where bit k is set (the 5th
/// bit of q5_0 / q5_1 element k).
inline __m256i expandBits16(uint32_t qh) {
  const __m256i shuf =
      _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                       2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(0x8040201008040201LL);
  __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(int(qh)), shuf);
  v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
  return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

//===----------------------------------------------------------------------===//
// Kernels
//===----------------------------------------------------------------------===//

void rowF16(const uint8_t *x, float *y, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128(
                                reinterpret_cast<const __m128i *>(x + 2 * i))));
  for (; i < n; ++i)
    y[i] = _cvtsh_ss(loadU16(x + 2 * i));
}

void rowBF16(const uint8_t *x, float *y, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i v = _mm256_cvtepu16_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i *>(x + 2 * i)));
    _mm256_storeu_ps(y + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
  }
  for (; i < n; ++i)
    y[i] = bf16ToFloat(loadU16(x + 2 * i));
}

void rowQ4_0(const uint8_t *x, float *y, size_t nb) {
  const __m128i eight = _mm_set1_epi8(8);
  for (size_t i = 0; i < nb; ++i, x += 18, y += 32) {
    const __m256 d = _mm256_set1_ps(f16At(x));
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i *>(x + 2));
    emit16(y, _mm_sub_epi8(lowNibbles(q), eight), d);
    emit16(y + 16, _mm_sub_epi8(highNibbles(q), eight), d);
  }
}

void rowQ4_1(const uint8_t *x, float *y, size_t nb) {
  for (size_t i = 0; i < nb; ++i, x += 20, y += 32) {
    const __m256 d = _mm256_set1_ps(f16At(x)), m = _mm256_set1_ps(f16At(x + 2));
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i *>(x + 4));
    emit16MulAdd(y, lowNibbles(q), d, m);
    emit16MulAdd(y + 16, highNibbles(q), d, m);
  }
}

void rowQ5_0(const uint8_t *x, float *y, size_t nb) {
  for (size_t i = 0; i < nb; ++i, x += 22, y += 32) {
    const __m256 d = _mm256_set1_ps(f16At(x));
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i *>(x + 6));
    __m256i v = _mm256_set_m128i(highNibbles(q), lowNibbles(q));
    v = _mm256_or_si256(v, expandBits16(loadU32(x + 2)));
    v = _mm256_sub_epi8(v, _mm256_set1_epi8(16));
    emit16(y, lo128(v), d);
    emit16(y + 16, hi128(v), d);
  }
}

void rowQ5_1(const uint8_t *x, float *y, size_t nb) {
  for (size_t i = 0; i < nb; ++i, x += 24, y += 32) {
    const __m256 d = _mm256_set1_ps(f16At(x)), m = _mm256_set1_ps(f16At(x + 2));
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i *>(x + 8));
    __m256i v = _mm256_set_m128i(highNibbles(q), lowNibbles(q));
    v = _mm256_or_si256(v, expandBits16(loadU32(x + 4)));
    emit16MulAdd(y, lo128(v), d, m);
    emit16MulAdd(y + 16, hi128(v), d, m);
  }
}

void rowQ8_0(const uint8_t *x, float *y, size_t nb) {
  for (size_t i = 0; i < nb; ++i, x += 34, y += 32) {
    const __m256 d = _mm256_set1_ps(f16At(x));
    const __m256i q =
        _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x + 2));
    emit16(y, lo128(q), d);
    emit16(y + 16, hi128(q), d);
  }
}

void rowQ2_K(const uint8_t *x, float *y, size_t nb) {
  const __m256i three = _mm256_set1_epi8(3);
  for (size_t i = 0; i < nb; ++i, x += 84) {
    const uint8_t *scales = x;
    const float d = f16At(x + 80), dmin = f16At(x + 82);
    int is = 0;
    for (int h = 0; h < 2; ++h) {
      const __m256i qs = _mm256_loadu_si256(
          reinterpret_cast<const __m256i *>(x + 16 + 32 * h));
      for (int shift = 0; shift < 8; shift += 2, y += 32) {
        const __m256i v = _mm256_and_si256(
            _mm256_srl_epi16(qs, _mm_cvtsi32_si128(shift)), three);
        const uint8_t s0 = scales[is++], s1 = scales[is++];
        emit16MulSub(y, lo128(v), _mm256_set1_ps(d * float(s0 & 0xf)),
                     _mm256_set1_ps(dmin * float(s0 >> 4)));
        emit16MulSub(y + 16, hi128(v), _mm256_set1_ps(d * float(s1 & 0xf)),
                     _mm256_set1_ps(dmin * float(s1 >> 4)));
      }
    }
  }
}

void rowQ3_K(const uint8_t *x, float *y, size_t nb) {
  const __m256i three = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
  for (size_t i = 0; i < nb; ++i, x += 110) {
    const uint8_t *raw = x + 96;
    const float d = f16At(x + 108);
    int8_t sc[16];
    unpackQ3KScales(raw, sc);
    const __m256i hm = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x));
    int is = 0, bit = 0;
    for (int h = 0; h < 2; ++h) {
      const __m256i qs = _mm256_loadu_si256(
          reinterpret_cast<const __m256i *>(x + 32 + 32 * h));
      for (int shift = 0; shift < 8; shift += 2, ++bit, y += 32) {
        const __m256i m = _mm256_set1_epi8(char(1 << bit));
        const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(hm, m), m);
        __m256i v = _mm256_and_si256(
            _mm256_srl_epi16(qs, _mm_cvtsi32_si128(shift)), three);
        v = _mm256_sub_epi8(v, _mm256_andnot_si256(set, four));
        emit16(y, lo128(v), _mm256_set1_ps(d * float(sc[is])));
        emit16(y + 16, hi128(v), _mm256_set1_ps(d * float(sc[is + 1])));
        is += 2;
      }
    }
  }
}

/// The 8 (d * sc) and (dmin * m) products of a q4_K / q5_K block, computed
/// as the scalar reference does (exact int -> float, one f32 multiply each),
/// eight at a time. The 12 packed bytes are first rearranged so that bytes
/// 0-7 hold the 8 scales and bytes 8-15 the 8 mins.
inline void kScaleProducts(const uint8_t *packed, float d, float dmin,
                           float *dsc, float *dmn) {
  uint32_t u[4];
  std::memcpy(u, packed, 12);
  u[3] = ((u[2] >> 4) & 0x0f0f0f0f) | (((u[1] >> 6) & 0x03030303) << 4);
  const uint32_t mins03 = u[1] & 0x3f3f3f3f;
  u[1] = (u[2] & 0x0f0f0f0f) | (((u[0] >> 6) & 0x03030303) << 4);
  u[2] = mins03;
  u[0] &= 0x3f3f3f3f;
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i *>(u));
  const __m256 sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
  const __m256 mn =
      _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(b, b)));
  _mm256_storeu_ps(dsc, _mm256_mul_ps(_mm256_set1_ps(d), sc));
  _mm256_storeu_ps(dmn, _mm256_mul_ps(_mm256_set1_ps(dmin), mn));
}

/// 32 uint8 lanes -> y[0..31] = d * float(q) - m.
inline void emit32MulSub(float *y, __m256i q, __m256 d, __m256 m) {
  emit16MulSub(y, lo128(q), d, m);
  emit16MulSub(y + 16, hi128(q), d, m);
}

void rowQ4_K(const uint8_t *x, float *y, size_t nb) {
  for (size_t i = 0; i < nb; ++i, x += 144) {
    alignas(32) float dsc[8], dmn[8];
    kScaleProducts(x + 4, f16At(x), f16At(x + 2), dsc, dmn);
    for (int c = 0; c < 4; ++c, y += 64) {
      const __m256 d1 = _mm256_set1_ps(dsc[2 * c]);
      const __m256 m1 = _mm256_set1_ps(dmn[2 * c]);
      const __m256 d2 = _mm256_set1_ps(dsc[2 * c + 1]);
      const __m256 m2 = _mm256_set1_ps(dmn[2 * c + 1]);
      const __m256i q = _mm256_loadu_si256(
          reinterpret_cast<const __m256i *>(x + 16 + 32 * c));
      emit32MulSub(y, lowNibbles(q), d1, m1);
      emit32MulSub(y + 32, highNibbles(q), d2, m2);
    }
  }
}

void rowQ5_K(const uint8_t *x, float *y, size_t nb) {
  const __m256i sixteen = _mm256_set1_epi8(16);
  for (size_t i = 0; i < nb; ++i, x += 176) {
    alignas(32) float dsc[8], dmn[8];
    kScaleProducts(x + 4, f16At(x), f16At(x + 2), dsc, dmn);
    const __m256i qh =
        _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x + 16));
    for (int c = 0; c < 4; ++c, y += 64) {
      const __m256 d1 = _mm256_set1_ps(dsc[2 * c]);
      const __m256 m1 = _mm256_set1_ps(dmn[2 * c]);
      const __m256 d2 = _mm256_set1_ps(dsc[2 * c + 1]);
      const __m256 m2 = _mm256_set1_ps(dmn[2 * c + 1]);
      const __m256i u1 = _mm256_set1_epi8(char(1 << (2 * c)));
      const __m256i u2 = _mm256_set1_epi8(char(2 << (2 * c)));
      const __m256i h1 = _mm256_and_si256(
          _mm256_cmpeq_epi8(_mm256_and_si256(qh, u1), u1), sixteen);
      const __m256i h2 = _mm256_and_si256(
          _mm256_cmpeq_epi8(_mm256_and_si256(qh, u2), u2), sixteen);
      const __m256i q = _mm256_loadu_si256(
          reinterpret_cast<const __m256i *>(x + 48 + 32 * c));
      emit32MulSub(y, _mm256_or_si256(lowNibbles(q), h1), d1, m1);
      emit32MulSub(y + 32, _mm256_or_si256(highNibbles(q), h2), d2, m2);
    }
  }
}

void rowQ6_K(const uint8_t *x, float *y, size_t nb) {
  const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(0x0f);
  const __m256i b32 = _mm256_set1_epi8(32);
  for (size_t i = 0; i < nb; ++i, x += 210) {
    const float d = f16At(x + 208);
    const int8_t *sc = reinterpret_cast<const int8_t *>(x + 192);
    for (int h = 0; h < 2; ++h, y += 128, sc += 8) {
      const __m256i ql0 =
          _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x + 64 * h));
      const __m256i ql1 = _mm256_loadu_si256(
          reinterpret_cast<const __m256i *>(x + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(
          reinterpret_cast<const __m256i *>(x + 128 + 32 * h));
      const __m256i hi0 = _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4);
      const __m256i hi1 =
          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4);
      const __m256i hi2 =
          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4);
      const __m256i hi3 =
          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4);
      const __m256i q[4] = {
          _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(ql0, m4), hi0), b32),
          _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(ql1, m4), hi1), b32),
          _mm256_sub_epi8(_mm256_or_si256(highNibbles(ql0), hi2), b32),
          _mm256_sub_epi8(_mm256_or_si256(highNibbles(ql1), hi3), b32)};
      for (int k = 0; k < 4; ++k) {
        // (d * sc) first, then * q: the scalar grouping.
        emit16(y + 32 * k, lo128(q[k]), _mm256_set1_ps(d * float(sc[2 * k])));
        emit16(y + 32 * k + 16, hi128(q[k]),
               _mm256_set1_ps(d * float(sc[2 * k + 1])));
      }
    }
  }
}

/// int8 lookup of 16 nibble values into a 16-entry table (in-register).
inline __m128i lookup16(__m128i table, __m128i nibbles) {
  return _mm_shuffle_epi8(table, nibbles);
}

void rowIQ4_NL(const uint8_t *x, float *y, size_t nb) {
  const __m128i table =
      _mm_loadu_si128(reinterpret_cast<const __m128i *>(kValuesIQ4NL));
  for (size_t i = 0; i < nb; ++i, x += 18, y += 32) {
    const __m256 d = _mm256_set1_ps(f16At(x));
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i *>(x + 2));
    emit16(y, lookup16(table, lowNibbles(q)), d);
    emit16(y + 16, lookup16(table, highNibbles(q)), d);
  }
}

void rowIQ4_XS(const uint8_t *x, float *y, size_t nb) {
  const __m128i table =
      _mm_loadu_si128(reinterpret_cast<const __m128i *>(kValuesIQ4NL));
  for (size_t i = 0; i < nb; ++i, x += 136) {
    const float d = f16At(x);
    const uint16_t scalesH = loadU16(x + 2);
    const uint8_t *scalesL = x + 4;
    for (int g = 0; g < 8; ++g, y += 32) {
      const int ls = ((scalesL[g / 2] >> (4 * (g % 2))) & 0xf) |
                     (((scalesH >> (2 * g)) & 3) << 4);
      const __m256 dl = _mm256_set1_ps(d * float(ls - 32));
      const __m128i q =
          _mm_loadu_si128(reinterpret_cast<const __m128i *>(x + 8 + 16 * g));
      emit16(y, lookup16(table, lowNibbles(q)), dl);
      emit16(y + 16, lookup16(table, highNibbles(q)), dl);
    }
  }
}

void rowMXFP4(const uint8_t *x, float *y, size_t nb) {
  const __m128i table =
      _mm_loadu_si128(reinterpret_cast<const __m128i *>(kValuesMXFP4));
  for (size_t i = 0; i < nb; ++i, x += 17, y += 32) {
    const __m256 d = _mm256_set1_ps(e8m0Half(x[0]));
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i *>(x + 1));
    emit16(y, lookup16(table, lowNibbles(q)), d);
    emit16(y + 16, lookup16(table, highNibbles(q)), d);
  }
}

void rowTQ2_0(const uint8_t *x, float *y, size_t nb) {
  const __m256i three = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
  for (size_t i = 0; i < nb; ++i, x += 66) {
    const __m256 d = _mm256_set1_ps(f16At(x + 64));
    for (int h = 0; h < 2; ++h) {
      const __m256i qs =
          _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x + 32 * h));
      for (int k = 0; k < 4; ++k, y += 32) {
        const __m256i v = _mm256_sub_epi8(
            _mm256_and_si256(_mm256_srl_epi16(qs, _mm_cvtsi32_si128(2 * k)),
                             three),
            one);
        emit16(y, lo128(v), d);
        emit16(y + 16, hi128(v), d);
      }
    }
  }
}

//===----------------------------------------------------------------------===//
// i-quants: one 8-entry grid row per 8 elements.
//===----------------------------------------------------------------------===//

/// The f32 sign bit in lane j where bit j of `signs` is set. Applied by
/// XOR: a negation, exactly the scalar reference's (see applySign).
inline __m256 signMask(uint8_t signs) {
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256i set =
      _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(signs), bit), bit);
  return _mm256_castsi256_ps(
      _mm256_and_si256(set, _mm256_set1_epi32(int(0x80000000u))));
}

/// y[0..7] = +-(db * float(grid byte j)), grid bytes unsigned.
inline void emitGrid8(float *y, uint64_t row, uint8_t signs, __m256 db) {
  const __m256 g = _mm256_cvtepi32_ps(
      _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(row))));
  _mm256_storeu_ps(y, _mm256_xor_ps(_mm256_mul_ps(db, g), signMask(signs)));
}

void rowIQ2_XXS(const uint8_t *x, float *y, size_t nb) {
  for (size_t i = 0; i < nb; ++i, x += 66) {
    const float d = f16At(x);
    for (int g = 0; g < 8; ++g) {
      const uint8_t *q = x + 2 + 8 * g;
      const uint32_t aux = loadU32(q + 4);
      const __m256 db = _mm256_set1_ps(d * (0.5f + float(aux >> 28)) * 0.25f);
      for (int l = 0; l < 4; ++l, y += 8)
        emitGrid8(y, kIQ2XXSGrid[q[l]], kSignsIQ2XS[(aux >> (7 * l)) & 127],
                  db);
    }
  }
}

void rowIQ2_XS(const uint8_t *x, float *y, size_t nb) {
  for (size_t i = 0; i < nb; ++i, x += 74) {
    const float d = f16At(x);
    const uint8_t *scales = x + 66;
    for (int g = 0; g < 8; ++g) {
      const __m256 db[2] = {
          _mm256_set1_ps(d * (0.5f + float(scales[g] & 0xf)) * 0.25f),
          _mm256_set1_ps(d * (0.5f + float(scales[g] >> 4)) * 0.25f)};
      for (int l = 0; l < 4; ++l, y += 8) {
        const uint16_t q = loadU16(x + 2 + 2 * (4 * g + l));
        emitGrid8(y, kIQ2XSGrid[q & 511], kSignsIQ2XS[q >> 9], db[l / 2]);
      }
    }
  }
}

void rowIQ2_S(const uint8_t *x, float *y, size_t nb) {
  for (size_t i = 0; i < nb; ++i, x += 82) {
    const float d = f16At(x);
    const uint8_t *qs = x + 2, *signs = x + 34, *qh = x + 66, *scales = x + 74;
    for (int g = 0; g < 8; ++g, qs += 4, signs += 4) {
      const __m256 db[2] = {
          _mm256_set1_ps(d * (0.5f + float(scales[g] & 0xf)) * 0.25f),
          _mm256_set1_ps(d * (0.5f + float(scales[g] >> 4)) * 0.25f)};
      for (int l = 0; l < 4; ++l, y += 8) {
        const unsigned idx = qs[l] | ((unsigned(qh[g]) << (8 - 2 * l)) & 0x300);
        emitGrid8(y, kIQ2SGrid[idx], signs[l], db[l / 2]);
      }
    }
  }
}

inline uint64_t joinRows(uint32_t lo, uint32_t hi) {
  return uint64_t(lo) | (uint64_t(hi) << 32);
}

void rowIQ3_XXS(const uint8_t *x, float *y, size_t nb) {
  for (size_t i = 0; i < nb; ++i, x += 98) {
    const float d = f16At(x);
    const uint8_t *qs = x + 2;
    for (int g = 0; g < 8; ++g, qs += 8) {
      const uint32_t aux = loadU32(x + 66 + 4 * g);
      const __m256 db = _mm256_set1_ps(d * (0.5f + float(aux >> 28)) * 0.5f);
      for (int l = 0; l < 4; ++l, y += 8)
        emitGrid8(y,
                  joinRows(kIQ3XXSGrid[qs[2 * l]], kIQ3XXSGrid[qs[2 * l + 1]]),
                  kSignsIQ2XS[(aux >> (7 * l)) & 127], db);
    }
  }
}

void rowIQ3_S(const uint8_t *x, float *y, size_t nb) {
  for (size_t i = 0; i < nb; ++i, x += 110) {
    const float d = f16At(x);
    const uint8_t *qs = x + 2, *qh = x + 66, *signs = x + 74, *scales = x + 106;
    for (int g = 0; g < 8; ++g, qs += 8, signs += 4) {
      const int s = (g & 1) ? (scales[g / 2] >> 4) : (scales[g / 2] & 0xf);
      const __m256 db = _mm256_set1_ps(d * float(1 + 2 * s));
      for (int l = 0; l < 4; ++l, y += 8) {
        const unsigned i1 =
            qs[2 * l] | ((unsigned(qh[g]) << (8 - 2 * l)) & 256);
        const unsigned i2 =
            qs[2 * l + 1] | ((unsigned(qh[g]) << (7 - 2 * l)) & 256);
        emitGrid8(y, joinRows(kIQ3SGrid[i1], kIQ3SGrid[i2]), signs[l], db);
      }
    }
  }
}

/// y[0..7] = dl * (float(grid int8 j) + delta)
inline void emitGridDelta8(float *y, uint64_t row, __m256 delta, __m256 dl) {
  const __m256 g = _mm256_cvtepi32_ps(
      _mm256_cvtepi8_epi32(_mm_cvtsi64_si128(static_cast<long long>(row))));
  _mm256_storeu_ps(y, _mm256_mul_ps(dl, _mm256_add_ps(g, delta)));
}

void rowIQ1_S(const uint8_t *x, float *y, size_t nb) {
  for (size_t i = 0; i < nb; ++i, x += 50) {
    const float d = f16At(x);
    const uint8_t *qs = x + 2;
    for (int g = 0; g < 8; ++g, qs += 4) {
      const uint16_t qh = loadU16(x + 34 + 2 * g);
      const __m256 dl = _mm256_set1_ps(d * float(2 * ((qh >> 12) & 7) + 1));
      const __m256 delta =
          _mm256_set1_ps((qh & 0x8000) ? -kIQ1Delta : kIQ1Delta);
      for (int l = 0; l < 4; ++l, y += 8)
        emitGridDelta8(y, kIQ1SGrid[qs[l] | (((qh >> (3 * l)) & 7) << 8)],
                       delta, dl);
    }
  }
}

void rowIQ1_M(const uint8_t *x, float *y, size_t nb) {
  for (size_t i = 0; i < nb; ++i, x += 56) {
    const uint8_t *qs = x, *qh = x + 32;
    uint16_t sc[4];
    for (int k = 0; k < 4; ++k)
      sc[k] = loadU16(x + 48 + 2 * k);
    const uint16_t dBits = uint16_t((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) |
                                    ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000));
    const float d = _cvtsh_ss(dBits);
    for (int g = 0; g < 8; ++g, qs += 4, qh += 2) {
      const int shift = 6 * (g % 2);
      const __m256 dl1 =
          _mm256_set1_ps(d * float(2 * ((sc[g / 2] >> shift) & 7) + 1));
      const __m256 dl2 =
          _mm256_set1_ps(d * float(2 * ((sc[g / 2] >> (shift + 3)) & 7) + 1));
      const unsigned idx[4] = {qs[0] | ((unsigned(qh[0]) << 8) & 0x700),
                               qs[1] | ((unsigned(qh[0]) << 4) & 0x700),
                               qs[2] | ((unsigned(qh[1]) << 8) & 0x700),
                               qs[3] | ((unsigned(qh[1]) << 4) & 0x700)};
      const uint8_t bits[4] = {uint8_t(qh[0] & 0x08), uint8_t(qh[0] & 0x80),
                               uint8_t(qh[1] & 0x08), uint8_t(qh[1] & 0x80)};
      for (int l = 0; l < 4; ++l, y += 8)
        emitGridDelta8(y, kIQ1SGrid[idx[l]],
                       _mm256_set1_ps(bits[l] ? -kIQ1Delta : kIQ1Delta),
                       l < 2 ? dl1 : dl2);
    }
  }
}

//===----------------------------------------------------------------------===//
// Ternary, nvfp4, q1_0, q2_0
//===----------------------------------------------------------------------===//

/// 8 trits: digit given by pow3 of the 8 bytes at p (see Decode.cpp).
inline void emitTrits8(float *y, const uint8_t *p, __m256i pow3, __m256 d) {
  __m256i v = _mm256_cvtepu8_epi32(
      _mm_loadl_epi64(reinterpret_cast<const __m128i *>(p)));
  v = _mm256_and_si256(_mm256_mullo_epi32(v, pow3), _mm256_set1_epi32(0xff));
  v = _mm256_srli_epi32(_mm256_mullo_epi32(v, _mm256_set1_epi32(3)), 8);
  v = _mm256_sub_epi32(v, _mm256_set1_epi32(1));
  _mm256_storeu_ps(y, _mm256_mul_ps(_mm256_cvtepi32_ps(v), d));
}

void rowTQ1_0(const uint8_t *x, float *y, size_t nb) {
  static constexpr int kPow3[5] = {1, 3, 9, 27, 81};
  for (size_t i = 0; i < nb; ++i, x += 54) {
    const __m256 d = _mm256_set1_ps(f16At(x + 52));
    for (int n = 0; n < 5; ++n) {
      const __m256i p = _mm256_set1_epi32(kPow3[n]);
      for (int m = 0; m < 32; m += 8, y += 8)
        emitTrits8(y, x + m, p, d);
    }
    for (int n = 0; n < 5; ++n) {
      const __m256i p = _mm256_set1_epi32(kPow3[n]);
      for (int m = 0; m < 16; m += 8, y += 8)
        emitTrits8(y, x + 32 + m, p, d);
    }
    // The last 16: digit n of qh[0..3] -> elements 240 + 4n + m. Two digits
    // per vector: lanes 0-3 digit n, lanes 4-7 digit n + 1.
    const __m256i qh =
        _mm256_cvtepu8_epi32(_mm_set1_epi32(int(loadU32(x + 48))));
    for (int n = 0; n < 4; n += 2, y += 8) {
      const __m256i p = _mm256_setr_epi32(kPow3[n], kPow3[n], kPow3[n],
                                          kPow3[n], kPow3[n + 1], kPow3[n + 1],
                                          kPow3[n + 1], kPow3[n + 1]);
      __m256i v =
          _mm256_and_si256(_mm256_mullo_epi32(qh, p), _mm256_set1_epi32(0xff));
      v = _mm256_srli_epi32(_mm256_mullo_epi32(v, _mm256_set1_epi32(3)), 8);
      v = _mm256_sub_epi32(v, _mm256_set1_epi32(1));
      _mm256_storeu_ps(y, _mm256_mul_ps(_mm256_cvtepi32_ps(v), d));
    }
  }
}

void rowNVFP4(const uint8_t *x, float *y, size_t nb) {
  const __m128i table =
      _mm_loadu_si128(reinterpret_cast<const __m128i *>(kValuesMXFP4));
  for (size_t i = 0; i < nb; ++i, x += 36) {
    for (int s = 0; s < 4; ++s, y += 16) {
      const __m256 d = _mm256_set1_ps(ue4m3Half(x[s]));
      const __m128i q =
          _mm_loadl_epi64(reinterpret_cast<const __m128i *>(x + 4 + 8 * s));
      emit16(y,
             lookup16(table, _mm_unpacklo_epi64(lowNibbles(q), highNibbles(q))),
             d);
    }
  }
}

void rowQ1_0(const uint8_t *x, float *y, size_t nb) {
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  for (size_t i = 0; i < nb; ++i, x += 18) {
    const float df = f16At(x);
    const __m256 d = _mm256_set1_ps(df), negD = _mm256_set1_ps(-df);
    for (int k = 0; k < 16; ++k, y += 8) {
      const __m256i set = _mm256_cmpeq_epi32(
          _mm256_and_si256(_mm256_set1_epi32(x[2 + k]), bit), bit);
      _mm256_storeu_ps(y, _mm256_blendv_ps(negD, d, _mm256_castsi256_ps(set)));
    }
  }
}

void rowQ2_0(const uint8_t *x, float *y, size_t nb) {
  const __m256i shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  const __m256i three = _mm256_set1_epi32(3), one = _mm256_set1_epi32(1);
  for (size_t i = 0; i < nb; ++i, x += 18) {
    const __m256 d = _mm256_set1_ps(f16At(x));
    for (int k = 0; k < 8; ++k, y += 8) {
      __m256i v =
          _mm256_srlv_epi32(_mm256_set1_epi32(loadU16(x + 2 + 2 * k)), shifts);
      v = _mm256_sub_epi32(_mm256_and_si256(v, three), one);
      _mm256_storeu_ps(y, _mm256_mul_ps(_mm256_cvtepi32_ps(v), d));
    }
  }
}

} // namespace

RowFn avx2Row(Format format) {
  switch (format) {
  case Format::F16:
    return rowF16;
  case Format::BF16:
    return rowBF16;
  case Format::Q4_0:
    return rowQ4_0;
  case Format::Q4_1:
    return rowQ4_1;
  case Format::Q5_0:
    return rowQ5_0;
  case Format::Q5_1:
    return rowQ5_1;
  case Format::Q8_0:
    return rowQ8_0;
  case Format::Q2_K:
    return rowQ2_K;
  case Format::Q3_K:
    return rowQ3_K;
  case Format::Q4_K:
    return rowQ4_K;
  case Format::Q5_K:
    return rowQ5_K;
  case Format::Q6_K:
    return rowQ6_K;
  case Format::IQ4_NL:
    return rowIQ4_NL;
  case Format::IQ4_XS:
    return rowIQ4_XS;
  case Format::MXFP4:
    return rowMXFP4;
  case Format::TQ2_0:
    return rowTQ2_0;
  case Format::IQ2_XXS:
    return rowIQ2_XXS;
  case Format::IQ2_XS:
    return rowIQ2_XS;
  case Format::IQ2_S:
    return rowIQ2_S;
  case Format::IQ3_XXS:
    return rowIQ3_XXS;
  case Format::IQ3_S:
    return rowIQ3_S;
  case Format::IQ1_S:
    return rowIQ1_S;
  case Format::IQ1_M:
    return rowIQ1_M;
  case Format::TQ1_0:
    return rowTQ1_0;
  case Format::NVFP4:
    return rowNVFP4;
  case Format::Q1_0:
    return rowQ1_0;
  case Format::Q2_0:
    return rowQ2_0;
  default:
    return nullptr; // scalar (see docs/formats.md)
  }
}

//===----------------------------------------------------------------------===//
// f32 -> bf16 / f16
//===----------------------------------------------------------------------===//

void narrowF16AVX2(const float *in, uint16_t *out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(
        reinterpret_cast<__m128i *>(out + i),
        _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i)
    out[i] = floatToHalf(in[i]);
}

void narrowBF16AVX2(const float *in, uint16_t *out, size_t n) {
  size_t i = 0;
  const __m256i absMask = _mm256_set1_epi32(0x7fffffff);
  const __m256i inf = _mm256_set1_epi32(0x7f800000);
  const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff);
  const __m256i quiet = _mm256_set1_epi32(64);
  for (; i + 16 <= n; i += 16) {
    __m256i r[2];
    for (int k = 0; k < 2; ++k) {
      const __m256i u = _mm256_castps_si256(_mm256_loadu_ps(in + i + 8 * k));
      const __m256i isNan =
          _mm256_cmpgt_epi32(_mm256_and_si256(u, absMask), inf);
      const __m256i nanRes = _mm256_or_si256(_mm256_srli_epi32(u, 16), quiet);
      const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
      const __m256i rounded = _mm256_srli_epi32(
          _mm256_add_epi32(u, _mm256_add_epi32(bias, lsb)), 16);
      r[k] = _mm256_blendv_epi8(rounded, nanRes, isNan);
    }
    // packus interleaves 128-bit lanes; put them back in order.
    const __m256i packed = _mm256_permute4x64_epi64(
        _mm256_packus_epi32(r[0], r[1]), _MM_SHUFFLE(3, 1, 2, 0));
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + i), packed);
  }
  for (; i < n; ++i)
    out[i] = floatToBF16(in[i]);
}

} // namespace decode
} // namespace qcc
