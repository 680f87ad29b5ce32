//===- Decode_avx512.cpp - AVX-512 decoders -------------------------------===//
//
// AVX-512 (F/BW/VL/DQ/VBMI) kernels of the most used formats, 16 floats per
// vector. As in Decode_avx2.cpp every element is computed with the scalar
// reference's operations in its order, so results are bit-identical. Formats
// without a kernel here use their AVX2 kernel (or scalar), see Decode.cpp.
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

/// 16 int8 lanes as floats.
inline __m512 cvt16(__m128i v) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v));
}
inline void emit16(float *y, __m128i b, __m512 d) {
  _mm512_storeu_ps(y, _mm512_mul_ps(cvt16(b), d));
}
inline void emit16MulAdd(float *y, __m128i b, __m512 d, __m512 m) {
  _mm512_storeu_ps(y, _mm512_add_ps(_mm512_mul_ps(cvt16(b), d), m));
}
inline void emit16MulSub(float *y, __m128i b, __m512 d, __m512 m) {
  _mm512_storeu_ps(y, _mm512_sub_ps(_mm512_mul_ps(d, cvt16(b)), m));
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

inline __m128i loadU128(const uint8_t *p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
}
inline __m256i loadU256(const uint8_t *p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p));
}

void rowF16(const uint8_t *x, float *y, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(y + i, _mm512_cvtph_ps(loadU256(x + 2 * i)));
  for (; i < n; ++i)
    y[i] = _cvtsh_ss(loadU16(x + 2 * i));
}

void rowBF16(const uint8_t *x, float *y, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i v = _mm512_cvtepu16_epi32(loadU256(x + 2 * i));
    _mm512_storeu_ps(y + i, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
  }
  for (; i < n; ++i)
    y[i] = bf16ToFloat(loadU16(x + 2 * i));
}

void rowQ4_0(const uint8_t *x, float *y, size_t nb) {
  const __m128i eight = _mm_set1_epi8(8);
  for (size_t i = 0; i < nb; ++i, x += 18, y += 32) {
    const __m512 d = _mm512_set1_ps(f16At(x));
    const __m128i q = loadU128(x + 2);
    emit16(y, _mm_sub_epi8(lowNibbles(q), eight), d);
    emit16(y + 16, _mm_sub_epi8(highNibbles(q), eight), d);
  }
}

void rowQ4_1(const uint8_t *x, float *y, size_t nb) {
  for (size_t i = 0; i < nb; ++i, x += 20, y += 32) {
    const __m512 d = _mm512_set1_ps(f16At(x)), m = _mm512_set1_ps(f16At(x + 2));
    const __m128i q = loadU128(x + 4);
    emit16MulAdd(y, lowNibbles(q), d, m);
    emit16MulAdd(y + 16, highNibbles(q), d, m);
  }
}

void rowQ8_0(const uint8_t *x, float *y, size_t nb) {
  for (size_t i = 0; i < nb; ++i, x += 34, y += 32) {
    const __m512 d = _mm512_set1_ps(f16At(x));
    emit16(y, loadU128(x + 2), d);
    emit16(y + 16, loadU128(x + 18), d);
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

void rowQ4_K(const uint8_t *x, float *y, size_t nb) {
  for (size_t i = 0; i < nb; ++i, x += 144) {
    alignas(32) float dsc[8], dmn[8];
    kScaleProducts(x + 4, f16At(x), f16At(x + 2), dsc, dmn);
    for (int c = 0; c < 4; ++c, y += 64) {
      const __m512 d1 = _mm512_set1_ps(dsc[2 * c]);
      const __m512 m1 = _mm512_set1_ps(dmn[2 * c]);
      const __m512 d2 = _mm512_set1_ps(dsc[2 * c + 1]);
      const __m512 m2 = _mm512_set1_ps(dmn[2 * c + 1]);
      const __m256i q = loadU256(x + 16 + 32 * c);
      const __m256i lo = lowNibbles(q), hi = highNibbles(q);
      emit16MulSub(y, lo128(lo), d1, m1);
      emit16MulSub(y + 16, hi128(lo), d1, m1);
      emit16MulSub(y + 32, lo128(hi), d2, m2);
      emit16MulSub(y + 48, hi128(hi), d2, m2);
    }
  }
}

void rowQ5_0(const uint8_t *x, float *y, size_t nb) {
  const __m128i b16 = _mm_set1_epi8(16);
  for (size_t i = 0; i < nb; ++i, x += 22, y += 32) {
    const __m512 d = _mm512_set1_ps(f16At(x));
    const uint32_t qh = loadU32(x + 2);
    const __m128i q = loadU128(x + 6);
    // The 5th bits go straight from qh into byte masks (adding 16 to a
    // nibble is setting bit 4).
    const __m128i lo =
        _mm_mask_add_epi8(lowNibbles(q), __mmask16(qh), lowNibbles(q), b16);
    const __m128i hi = _mm_mask_add_epi8(highNibbles(q), __mmask16(qh >> 16),
                                         highNibbles(q), b16);
    emit16(y, _mm_sub_epi8(lo, b16), d);
    emit16(y + 16, _mm_sub_epi8(hi, b16), d);
  }
}

void rowQ5_1(const uint8_t *x, float *y, size_t nb) {
  const __m128i b16 = _mm_set1_epi8(16);
  for (size_t i = 0; i < nb; ++i, x += 24, y += 32) {
    const __m512 d = _mm512_set1_ps(f16At(x)), m = _mm512_set1_ps(f16At(x + 2));
    const uint32_t qh = loadU32(x + 4);
    const __m128i q = loadU128(x + 8);
    const __m128i lo =
        _mm_mask_add_epi8(lowNibbles(q), __mmask16(qh), lowNibbles(q), b16);
    const __m128i hi = _mm_mask_add_epi8(highNibbles(q), __mmask16(qh >> 16),
                                         highNibbles(q), b16);
    emit16MulAdd(y, lo, d, m);
    emit16MulAdd(y + 16, hi, d, m);
  }
}

void rowQ2_K(const uint8_t *x, float *y, size_t nb) {
  const __m256i three = _mm256_set1_epi8(3);
  for (size_t i = 0; i < nb; ++i, x += 84) {
    const uint8_t *scales = x;
    const float d = f16At(x + 80), dmin = f16At(x + 82);
    int is = 0;
    for (int h = 0; h < 2; ++h) {
      const __m256i qs = loadU256(x + 16 + 32 * h);
      for (int shift = 0; shift < 8; shift += 2, y += 32) {
        const __m256i v = _mm256_and_si256(
            _mm256_srl_epi16(qs, _mm_cvtsi32_si128(shift)), three);
        const uint8_t s0 = scales[is++], s1 = scales[is++];
        emit16MulSub(y, lo128(v), _mm512_set1_ps(d * float(s0 & 0xf)),
                     _mm512_set1_ps(dmin * float(s0 >> 4)));
        emit16MulSub(y + 16, hi128(v), _mm512_set1_ps(d * float(s1 & 0xf)),
                     _mm512_set1_ps(dmin * float(s1 >> 4)));
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
    const __m256i hm = loadU256(x);
    int is = 0, bit = 0;
    for (int h = 0; h < 2; ++h) {
      const __m256i qs = loadU256(x + 32 + 32 * h);
      for (int shift = 0; shift < 8; shift += 2, ++bit, y += 32) {
        // Subtract 4 where the hmask bit is clear.
        const __mmask32 set =
            _mm256_test_epi8_mask(hm, _mm256_set1_epi8(char(1 << bit)));
        __m256i v = _mm256_and_si256(
            _mm256_srl_epi16(qs, _mm_cvtsi32_si128(shift)), three);
        v = _mm256_mask_sub_epi8(v, ~set, v, four);
        emit16(y, lo128(v), _mm512_set1_ps(d * float(sc[is])));
        emit16(y + 16, hi128(v), _mm512_set1_ps(d * float(sc[is + 1])));
        is += 2;
      }
    }
  }
}

void rowQ5_K(const uint8_t *x, float *y, size_t nb) {
  const __m256i b16 = _mm256_set1_epi8(16);
  for (size_t i = 0; i < nb; ++i, x += 176) {
    alignas(32) float dsc[8], dmn[8];
    kScaleProducts(x + 4, f16At(x), f16At(x + 2), dsc, dmn);
    const __m256i qh = loadU256(x + 16);
    for (int c = 0; c < 4; ++c, y += 64) {
      const __m512 d1 = _mm512_set1_ps(dsc[2 * c]);
      const __m512 m1 = _mm512_set1_ps(dmn[2 * c]);
      const __m512 d2 = _mm512_set1_ps(dsc[2 * c + 1]);
      const __m512 m2 = _mm512_set1_ps(dmn[2 * c + 1]);
      const __mmask32 h1 =
          _mm256_test_epi8_mask(qh, _mm256_set1_epi8(char(1 << (2 * c))));
      const __mmask32 h2 =
          _mm256_test_epi8_mask(qh, _mm256_set1_epi8(char(2 << (2 * c))));
      const __m256i q = loadU256(x + 48 + 32 * c);
      const __m256i lo =
          _mm256_mask_add_epi8(lowNibbles(q), h1, lowNibbles(q), b16);
      const __m256i hi =
          _mm256_mask_add_epi8(highNibbles(q), h2, highNibbles(q), b16);
      emit16MulSub(y, lo128(lo), d1, m1);
      emit16MulSub(y + 16, hi128(lo), d1, m1);
      emit16MulSub(y + 32, lo128(hi), d2, m2);
      emit16MulSub(y + 48, hi128(hi), d2, m2);
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
      const __m256i ql0 = loadU256(x + 64 * h);
      const __m256i ql1 = loadU256(x + 64 * h + 32);
      const __m256i qh = loadU256(x + 128 + 32 * h);
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
        emit16(y + 32 * k, lo128(q[k]), _mm512_set1_ps(d * float(sc[2 * k])));
        emit16(y + 32 * k + 16, hi128(q[k]),
               _mm512_set1_ps(d * float(sc[2 * k + 1])));
      }
    }
  }
}

void rowIQ4_NL(const uint8_t *x, float *y, size_t nb) {
  const __m128i table =
      loadU128(reinterpret_cast<const uint8_t *>(kValuesIQ4NL));
  for (size_t i = 0; i < nb; ++i, x += 18, y += 32) {
    const __m512 d = _mm512_set1_ps(f16At(x));
    const __m128i q = loadU128(x + 2);
    emit16(y, _mm_shuffle_epi8(table, lowNibbles(q)), d);
    emit16(y + 16, _mm_shuffle_epi8(table, highNibbles(q)), d);
  }
}

void rowIQ4_XS(const uint8_t *x, float *y, size_t nb) {
  const __m128i table =
      loadU128(reinterpret_cast<const uint8_t *>(kValuesIQ4NL));
  for (size_t i = 0; i < nb; ++i, x += 136) {
    const float d = f16At(x);
    const uint16_t scalesH = loadU16(x + 2);
    const uint8_t *scalesL = x + 4;
    for (int g = 0; g < 8; ++g, y += 32) {
      const int ls = ((scalesL[g / 2] >> (4 * (g % 2))) & 0xf) |
                     (((scalesH >> (2 * g)) & 3) << 4);
      const __m512 dl = _mm512_set1_ps(d * float(ls - 32));
      const __m128i q = loadU128(x + 8 + 16 * g);
      emit16(y, _mm_shuffle_epi8(table, lowNibbles(q)), dl);
      emit16(y + 16, _mm_shuffle_epi8(table, highNibbles(q)), dl);
    }
  }
}

void rowMXFP4(const uint8_t *x, float *y, size_t nb) {
  const __m128i table =
      loadU128(reinterpret_cast<const uint8_t *>(kValuesMXFP4));
  for (size_t i = 0; i < nb; ++i, x += 17, y += 32) {
    const __m512 d = _mm512_set1_ps(e8m0Half(x[0]));
    const __m128i q = loadU128(x + 1);
    emit16(y, _mm_shuffle_epi8(table, lowNibbles(q)), d);
    emit16(y + 16, _mm_shuffle_epi8(table, highNibbles(q)), d);
  }
}

} // namespace

RowFn avx512Row(Format format) {
  switch (format) {
  case Format::F16:
    return rowF16;
  case Format::BF16:
    return rowBF16;
  case Format::Q4_0:
    return rowQ4_0;
  case Format::Q4_1:
    return rowQ4_1;
  case Format::Q8_0:
    return rowQ8_0;
  case Format::Q5_0:
    return rowQ5_0;
  case Format::Q5_1:
    return rowQ5_1;
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
  default:
    return nullptr; // AVX2 kernel or scalar (see docs/formats.md)
  }
}

void narrowF16AVX512(const float *in, uint16_t *out, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(
        reinterpret_cast<__m256i *>(out + i),
        _mm512_cvtps_ph(_mm512_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i)
    out[i] = floatToHalf(in[i]);
}

void narrowBF16AVX512(const float *in, uint16_t *out, size_t n) {
  // Not vcvtneps2bf16: it flushes subnormals, ggml's converter does not.
  size_t i = 0;
  const __m512i absMask = _mm512_set1_epi32(0x7fffffff);
  const __m512i inf = _mm512_set1_epi32(0x7f800000);
  const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff);
  const __m512i quiet = _mm512_set1_epi32(64);
  for (; i + 16 <= n; i += 16) {
    const __m512i u = _mm512_castps_si512(_mm512_loadu_ps(in + i));
    const __mmask16 isNan =
        _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, absMask), inf);
    const __m512i top = _mm512_srli_epi32(u, 16);
    const __m512i rounded = _mm512_srli_epi32(
        _mm512_add_epi32(u, _mm512_add_epi32(bias, _mm512_and_si512(top, one))),
        16);
    const __m512i r =
        _mm512_mask_blend_epi32(isNan, rounded, _mm512_or_si512(top, quiet));
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + i),
                        _mm512_cvtepi32_epi16(r));
  }
  for (; i < n; ++i)
    out[i] = floatToBF16(in[i]);
}

} // namespace decode
} // namespace qcc
