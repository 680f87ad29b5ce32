//===- GemmBf16.cpp - The micro-GEMM with its operands rounded to bf16 ----===//
//
// qcc_rt_gemm_bf16 has qcc_rt_gemm_f32's contract except that every element
// of op(A) and op(B) is rounded to bf16 (nearest even; f32 subnormals become
// zero, as AVX512-BF16 does) before it is multiplied; the products are exact
// in f32 and summed in f32. Steps compiled with `qcc --gemm-bf16` call it
// for every micro-GEMM (qmatmul tiles, contractions, weight gradients): the
// trade of torch's bf16 autocast, half the mantissa for twice the products
// per instruction.
//
// The AVX512-BF16 path packs both operands as bf16 pairs along k (one
// 32-bit lane holds elements 2q and 2q + 1) and keeps an 8 x 32 block of C
// in sixteen zmm accumulators, each vdpbf16ps adding two products per lane.
// Without AVX512-BF16 the operands are rounded into f32 copies and handed to
// qcc_rt_gemm_f32: the same products, slower.
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/StepRuntime.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define QCC_BF16                                                               \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx512bf16,fma")))
#endif

namespace {

/// The bf16 bits of `v`: round to nearest even, subnormals to (signed) zero,
/// NaN kept a quiet NaN.
inline uint32_t bf16Bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7f800000u) == 0)
    return (u >> 16) & 0x8000u;
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return ((u >> 16) | 0x40u) & 0xffffu;
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

inline float bf16Round(float v) {
  const uint32_t u = bf16Bits(v) << 16;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

/// The portable path: op(A) and op(B) rounded into f32 copies (stored
/// untransposed), then the f32 micro-GEMM.
void gemmRounded(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                 bool aT, const float *b, int64_t ldb, bool bT, float *c,
                 int64_t ldc) {
  std::vector<float> ar(size_t(m * k)), br(size_t(k * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t p = 0; p < k; ++p)
      ar[size_t(i * k + p)] = bf16Round(aT ? a[p * lda + i] : a[i * lda + p]);
  for (int64_t p = 0; p < k; ++p)
    for (int64_t j = 0; j < n; ++j)
      br[size_t(p * n + j)] = bf16Round(bT ? b[j * ldb + p] : b[p * ldb + j]);
  qcc_rt_gemm_f32(m, n, k, ar.data(), k, 0, br.data(), n, 0, c, ldc);
}

#if defined(__x86_64__)
constexpr int kMR = 8, kNR = 32;

bool hasAVX512BF16() {
  static const bool has = __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512bf16");
  return has;
}

/// One Rows x kNR block of C (fewer columns through masks) over kp pairs of
/// k: C += A · Bpanel, with pair q of block row r at ap[r * rs + q * qs] and
/// the panel as kp rows of kNR pairs.
template <int Rows>
QCC_BF16 void microKernel(int64_t cols, int64_t kp, const uint32_t *ap,
                          int64_t rs, int64_t qs, const uint32_t *bp, float *c,
                          int64_t ldc) {
  const __mmask16 m0 = cols >= 16 ? 0xffff : __mmask16((1u << cols) - 1);
  const __mmask16 m1 =
      cols >= 32 ? 0xffff
                 : (cols > 16 ? __mmask16((1u << (cols - 16)) - 1) : 0);
  __m512 acc[Rows][2];
  for (int r = 0; r < Rows; ++r) {
    acc[r][0] = _mm512_setzero_ps();
    acc[r][1] = _mm512_setzero_ps();
  }
  for (int64_t q = 0; q < kp; ++q) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(bp + q * kNR);
    const __m512bh b1 = (__m512bh)_mm512_load_si512(bp + q * kNR + 16);
    const uint32_t *aq = ap + q * qs;
    for (int r = 0; r < Rows; ++r) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(int(aq[r * rs]));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, b0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, b1);
    }
  }
  for (int r = 0; r < Rows; ++r) {
    float *row = c + r * ldc;
    _mm512_mask_storeu_ps(
        row, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, row), acc[r][0]));
    if (m1)
      _mm512_mask_storeu_ps(row + 16, m1,
                            _mm512_add_ps(_mm512_maskz_loadu_ps(m1, row + 16),
                                          acc[r][1]));
  }
}

using MicroKernelFn = void (*)(int64_t, int64_t, const uint32_t *, int64_t,
                               int64_t, const uint32_t *, float *, int64_t);
constexpr MicroKernelFn kMicroKernels[kMR + 1] = {
    nullptr,        microKernel<1>, microKernel<2>, microKernel<3>,
    microKernel<4>, microKernel<5>, microKernel<6>, microKernel<7>,
    microKernel<8>};

/// 16 floats (the first `count`, the rest zero) as 16 bf16 in a ymm.
QCC_BF16 inline __m256i toBf16(const float *src, int64_t count) {
  const __mmask16 mask =
      count >= 16 ? 0xffff : __mmask16((1u << std::max<int64_t>(count, 0)) - 1);
  return (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, src));
}

/// The pairs of one contiguous run of k floats: dst[q] = (src[2q],
/// src[2q + 1]) for q < ceil(k / 2), zero past k.
QCC_BF16 void pairsOfRun(const float *src, int64_t k, uint32_t *dst) {
  const int64_t kp = (k + 1) / 2;
  for (int64_t p = 0; p < k; p += 32) {
    const __m256i lo = toBf16(src + p, k - p);
    const __m256i hi = toBf16(src + p + 16, k - p - 16);
    const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    const int64_t pairs = std::min<int64_t>(16, kp - p / 2);
    _mm512_mask_storeu_epi32(
        dst + p / 2, pairs >= 16 ? __mmask16(0xffff) : __mmask16((1u << pairs) - 1),
        both);
  }
}

/// The pairs of two runs of `count` floats, element by element:
/// dst[t] = (lo[t], hi[t]) (hi null: zero), t < count.
QCC_BF16 void pairsOfRows(const float *lo, const float *hi, int64_t count,
                          uint32_t *dst) {
  for (int64_t t = 0; t < count; t += 16) {
    const __m512i l = _mm512_cvtepu16_epi32(toBf16(lo + t, count - t));
    const __m512i u =
        hi ? _mm512_slli_epi32(_mm512_cvtepu16_epi32(toBf16(hi + t, count - t)),
                               16)
           : _mm512_setzero_si512();
    const int64_t left = count - t;
    _mm512_mask_storeu_epi32(
        dst + t, left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1),
        _mm512_or_si512(l, u));
  }
}

/// Packs all of op(B) as kNR-wide panels of pairs: panel j holds, for each
/// pair q, the kNR columns' (op(B)[2q][col], op(B)[2q + 1][col]) as one
/// 32-bit lane each (zero past k and past n).
QCC_BF16 void packB(int64_t n, int64_t k, const float *b, int64_t ldb,
                    bool transposed, uint32_t *panels,
                    std::vector<uint32_t> &rowPairs) {
  const int64_t kp = (k + 1) / 2, numPanels = (n + kNR - 1) / kNR;
  if (!transposed) {
    // op(B)[p][j] = b[p * ldb + j]: rows 2q and 2q + 1 interleaved.
    for (int64_t jp = 0; jp < numPanels; ++jp) {
      const int64_t j0 = jp * kNR, cols = std::min<int64_t>(kNR, n - j0);
      uint32_t *panel = panels + jp * kp * kNR;
      for (int64_t q = 0; q < kp; ++q) {
        const float *lo = b + 2 * q * ldb + j0;
        uint32_t *out = panel + q * kNR;
        pairsOfRows(lo, 2 * q + 1 < k ? lo + ldb : nullptr, cols, out);
        for (int64_t j = cols; j < kNR; ++j)
          out[j] = 0;
      }
    }
    return;
  }
  // op(B)[p][j] = b[j * ldb + p]: a row of b holds column j's pairs one
  // after the other; convert each row, then gather 16 columns' pair q at a
  // time into the panel.
  rowPairs.resize(size_t(kNR * kp + 16));
  const __m512i stride = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
      _mm512_set1_epi32(int(kp)));
  for (int64_t jp = 0; jp < numPanels; ++jp) {
    const int64_t j0 = jp * kNR, cols = std::min<int64_t>(kNR, n - j0);
    uint32_t *panel = panels + jp * kp * kNR;
    for (int64_t j = 0; j < cols; ++j)
      pairsOfRun(b + (j0 + j) * ldb, k, rowPairs.data() + j * kp);
    const __mmask16 g0 =
        cols >= 16 ? __mmask16(0xffff) : __mmask16((1u << cols) - 1);
    const __mmask16 g1 =
        cols >= 32 ? __mmask16(0xffff)
                   : (cols > 16 ? __mmask16((1u << (cols - 16)) - 1) : 0);
    const uint32_t *base1 = rowPairs.data() + 16 * kp;
    for (int64_t q = 0; q < kp; ++q) {
      uint32_t *out = panel + q * kNR;
      _mm512_store_si512(out, _mm512_mask_i32gather_epi32(
                                  _mm512_setzero_si512(), g0, stride,
                                  rowPairs.data() + q, 4));
      _mm512_store_si512(out + 16,
                         g1 ? _mm512_mask_i32gather_epi32(
                                  _mm512_setzero_si512(), g1, stride,
                                  base1 + q, 4)
                            : _mm512_setzero_si512());
    }
  }
}

/// Packs all of op(A) as pairs; returns the strides of (row, pair) in the
/// packed buffer: rows of pairs when A is stored as is, pairs of rows when
/// it is stored transposed.
QCC_BF16 std::pair<int64_t, int64_t> packA(int64_t m, int64_t k,
                                           const float *a, int64_t lda,
                                           bool aT, uint32_t *ap) {
  const int64_t kp = (k + 1) / 2;
  if (!aT) {
    // A row stride of kp rounded up to 16 pairs, plus 16: rows 4 KiB apart
    // would make the kernel's broadcasts alias in L1.
    const int64_t rs = (kp + 15) / 16 * 16 + 16;
    for (int64_t i = 0; i < m; ++i)
      pairsOfRun(a + i * lda, k, ap + i * rs);
    return {rs, 1};
  }
  // op(A)[i][p] = a[p * lda + i]: rows 2q and 2q + 1 of a interleaved.
  const int64_t qs = (m + 15) / 16 * 16 + 16;
  for (int64_t q = 0; q < kp; ++q) {
    const float *lo = a + 2 * q * lda;
    pairsOfRows(lo, 2 * q + 1 < k ? lo + lda : nullptr, m, ap + q * qs);
  }
  return {1, qs};
}

uint32_t *aligned(std::vector<uint32_t> &storage, size_t words) {
  if (storage.size() < words + 16)
    storage.resize(words + 16);
  return reinterpret_cast<uint32_t *>(
      (reinterpret_cast<uintptr_t>(storage.data()) + 63) & ~uintptr_t(63));
}

QCC_BF16 void gemmAVX512BF16(int64_t m, int64_t n, int64_t k, const float *a,
                             int64_t lda, bool aT, const float *b, int64_t ldb,
                             bool bT, float *c, int64_t ldc) {
  thread_local std::vector<uint32_t> panelStorage, aStorage, rowPairs;
  const int64_t kp = (k + 1) / 2, numPanels = (n + kNR - 1) / kNR;
  uint32_t *panels = aligned(panelStorage, size_t(numPanels * kp * kNR));
  const size_t aWords =
      size_t(std::max((m + 16) * ((kp + 15) / 16 * 16 + 16),
                      kp * ((m + 15) / 16 * 16 + 16)));
  uint32_t *ap = aligned(aStorage, aWords);
  packB(n, k, b, ldb, bT, panels, rowPairs);
  const auto [rs, qs] = packA(m, k, a, lda, aT, ap);
  for (int64_t i0 = 0; i0 < m; i0 += kMR) {
    const int64_t rows = std::min<int64_t>(kMR, m - i0);
    for (int64_t j = 0; j < numPanels; ++j)
      kMicroKernels[rows](std::min<int64_t>(kNR, n - j * kNR), kp, ap + i0 * rs,
                          rs, qs, panels + j * kp * kNR, c + i0 * ldc + j * kNR,
                          ldc);
  }
}
#endif

} // namespace

extern "C" int qcc_rt_gemm_bf16_isa(int isa, int64_t m, int64_t n, int64_t k,
                                    const float *a, int64_t lda,
                                    int32_t aTransposed, const float *b,
                                    int64_t ldb, int32_t bTransposed, float *c,
                                    int64_t ldc) {
  if (isa != 0) {
#if defined(__x86_64__)
    if (isa != 1 || !hasAVX512BF16())
      return -1;
#else
    return -1;
#endif
  }
  if (m <= 0 || n <= 0 || k <= 0)
    return 0;
#if defined(__x86_64__)
  if (isa == 1) {
    gemmAVX512BF16(m, n, k, a, lda, aTransposed != 0, b, ldb, bTransposed != 0,
                   c, ldc);
    return 0;
  }
#endif
  gemmRounded(m, n, k, a, lda, aTransposed != 0, b, ldb, bTransposed != 0, c,
              ldc);
  return 0;
}

extern "C" void qcc_rt_gemm_bf16(int64_t m, int64_t n, int64_t k,
                                 const float *a, int64_t lda,
                                 int32_t aTransposed, const float *b,
                                 int64_t ldb, int32_t bTransposed, float *c,
                                 int64_t ldc) {
#if defined(__x86_64__)
  const int isa = hasAVX512BF16() ? 1 : 0;
#else
  const int isa = 0;
#endif
  qcc_rt_gemm_bf16_isa(isa, m, n, k, a, lda, aTransposed, b, ldb, bTransposed,
                       c, ldc);
}
