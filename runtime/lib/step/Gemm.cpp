//===- Gemm.cpp - The f32 micro-GEMM that qmatmul tiles feed --------------===//
//
// qcc.qmatmul decodes a tile of W into a small f32 buffer (emitted code) and
// hands the product of the activations with that tile to this kernel, the
// format-independent part (like IREE's ukernels). The AVX-512 path keeps a
// 6 x 32 block of C in twelve zmm registers and streams packed B; the AVX2
// path does the same with a 6 x 16 block in twelve ymm registers; others
// take a plain loop with the same contract.
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/StepRuntime.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define QCC_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,fma")))
#define QCC_AVX2 __attribute__((target("avx2,fma")))
#endif

namespace {

/// Element (i, p) of op(A): A[i][p], or A[p][i] when A is stored transposed.
inline float aAt(const float *a, int64_t lda, bool aT, int64_t i, int64_t p) {
  return aT ? a[p * lda + i] : a[i * lda + p];
}

/// Element (p, j) of op(B).
inline float bAt(const float *b, int64_t ldb, bool bT, int64_t p, int64_t j) {
  return bT ? b[j * ldb + p] : b[p * ldb + j];
}

/// C[m x n] += op(A) · op(B), the portable path.
void gemmGeneric(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                 bool aT, const float *b, int64_t ldb, bool bT, float *c,
                 int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t p = 0; p < k; ++p) {
      const float av = aAt(a, lda, aT, i, p);
      for (int64_t j = 0; j < n; ++j)
        c[i * ldc + j] += av * bAt(b, ldb, bT, p, j);
    }
}

#if defined(__x86_64__)
constexpr int kMR = 6, kNR = 32;

/// One kMR x kNR block of C (fewer rows/columns at the edges, through masks)
/// over the whole k: C += Apacked · Bpanel, with A packed as k groups of kMR
/// floats and the panel as k rows of kNR floats, both read sequentially.
template <int Rows>
QCC_AVX512 void microKernel(int64_t cols, int64_t k, const float *ap,
                            const float *bp, float *c, int64_t ldc) {
  const __mmask16 m0 = cols >= 16 ? 0xffff : __mmask16((1u << cols) - 1);
  const __mmask16 m1 =
      cols >= 32 ? 0xffff
                 : (cols > 16 ? __mmask16((1u << (cols - 16)) - 1) : 0);
  __m512 acc[Rows][2];
  for (int r = 0; r < Rows; ++r) {
    acc[r][0] = _mm512_setzero_ps();
    acc[r][1] = _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < k; ++p) {
    const __m512 b0 = _mm512_load_ps(bp + p * kNR);
    const __m512 b1 = _mm512_load_ps(bp + p * kNR + 16);
    for (int r = 0; r < Rows; ++r) {
      const __m512 av = _mm512_set1_ps(ap[p * kMR + r]);
      acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
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

using MicroKernelFn = void (*)(int64_t, int64_t, const float *, const float *,
                               float *, int64_t);
constexpr MicroKernelFn kMicroKernels[kMR + 1] = {
    nullptr,         microKernel<1>, microKernel<2>, microKernel<3>,
    microKernel<4>,  microKernel<5>, microKernel<6>};

/// Packs columns [j0, j0 + cols) of op(B) for all k into NR-wide rows
/// (zero-padded), where op(B)[p][j] = B[j][p] (transposed) or B[p][j].
template <int NR>
void packPanel(int64_t k, int64_t j0, int64_t cols, const float *b, int64_t ldb,
               bool transposed, float *panel) {
  for (int64_t p = 0; p < k; ++p) {
    float *dst = panel + p * NR;
    for (int64_t j = 0; j < cols; ++j)
      dst[j] = transposed ? b[(j0 + j) * ldb + p] : b[p * ldb + j0 + j];
    for (int64_t j = cols; j < NR; ++j)
      dst[j] = 0.0f;
  }
}

/// Packs rows [i0, i0 + rows) of op(A), all k, as k groups of kMR floats:
/// rows of A are often a whole activation row apart (4 KiB multiples), which
/// would make the kernel's six broadcasts alias in L1.
void packA(int64_t i0, int64_t rows, int64_t k, const float *a, int64_t lda,
           bool aT, float *ap) {
  if (rows == kMR && !aT) {
    // The common case without a test per element: six row pointers.
    const float *r0 = a + i0 * lda, *r1 = r0 + lda, *r2 = r1 + lda,
                *r3 = r2 + lda, *r4 = r3 + lda, *r5 = r4 + lda;
    for (int64_t p = 0; p < k; ++p) {
      float *dst = ap + p * kMR;
      dst[0] = r0[p];
      dst[1] = r1[p];
      dst[2] = r2[p];
      dst[3] = r3[p];
      dst[4] = r4[p];
      dst[5] = r5[p];
    }
    return;
  }
  for (int64_t p = 0; p < k; ++p)
    for (int64_t r = 0; r < kMR; ++r)
      ap[p * kMR + r] = r < rows ? aAt(a, lda, aT, i0 + r, p) : 0.0f;
}

float *aligned(std::vector<float> &storage, size_t floats) {
  if (storage.size() < floats + 16)
    storage.resize(floats + 16);
  return reinterpret_cast<float *>(
      (reinterpret_cast<uintptr_t>(storage.data()) + 63) & ~uintptr_t(63));
}

/// The blocked product of the SIMD paths: all of op(B) as NR-wide panels
/// (k x n floats: 256 KiB for qcc.qmatmul's tiles), then each block of kMR
/// rows of A packed once and run over every panel by
/// `kernel(rows, cols, k, packedA, panel, C block, ldc)`.
template <int NR, typename Kernel>
void gemmPacked(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                bool aT, const float *b, int64_t ldb, float *c, int64_t ldc,
                bool transposed, Kernel kernel) {
  thread_local std::vector<float> panelStorage, aStorage;
  const int64_t numPanels = (n + NR - 1) / NR;
  float *panels = aligned(panelStorage, size_t(numPanels * k * NR));
  float *ap = aligned(aStorage, size_t(k * kMR));
  for (int64_t j = 0; j < numPanels; ++j)
    packPanel<NR>(k, j * NR, std::min<int64_t>(NR, n - j * NR), b, ldb,
                  transposed, panels + j * k * NR);
  for (int64_t i0 = 0; i0 < m; i0 += kMR) {
    const int64_t rows = std::min<int64_t>(kMR, m - i0);
    packA(i0, rows, k, a, lda, aT, ap);
    for (int64_t j = 0; j < numPanels; ++j)
      kernel(rows, std::min<int64_t>(NR, n - j * NR), k, ap,
             panels + j * k * NR, c + i0 * ldc + j * NR, ldc);
  }
}

/// Few rows of A (a GEMV, or the last rows of a batch): packing B would
/// cost as much as the product, so stream B once per row instead: dot
/// products along k when B is transposed, AXPYs along n when it is not.
QCC_AVX512 void gemmFewRows(int64_t m, int64_t n, int64_t k, const float *a,
                            int64_t lda, const float *b, int64_t ldb, float *c,
                            int64_t ldc, bool transposed) {
  for (int64_t i = 0; i < m; ++i) {
    const float *ai = a + i * lda; // op(A) is not transposed on this path
    float *ci = c + i * ldc;
    if (transposed) {
      for (int64_t j = 0; j < n; ++j) {
        const float *bj = b + j * ldb;
        __m512 acc = _mm512_setzero_ps();
        int64_t p = 0;
        for (; p + 16 <= k; p += 16)
          acc = _mm512_fmadd_ps(_mm512_loadu_ps(ai + p), _mm512_loadu_ps(bj + p),
                                acc);
        if (p < k) {
          const __mmask16 mask = __mmask16((1u << (k - p)) - 1);
          acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, ai + p),
                                _mm512_maskz_loadu_ps(mask, bj + p), acc);
        }
        ci[j] += _mm512_reduce_add_ps(acc);
      }
    } else {
      for (int64_t p = 0; p < k; ++p) {
        const __m512 av = _mm512_set1_ps(ai[p]);
        const float *bp = b + p * ldb;
        int64_t j = 0;
        for (; j + 16 <= n; j += 16)
          _mm512_storeu_ps(ci + j, _mm512_fmadd_ps(av, _mm512_loadu_ps(bp + j),
                                                   _mm512_loadu_ps(ci + j)));
        if (j < n) {
          const __mmask16 mask = __mmask16((1u << (n - j)) - 1);
          _mm512_mask_storeu_ps(
              ci + j, mask,
              _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(mask, bp + j),
                              _mm512_maskz_loadu_ps(mask, ci + j)));
        }
      }
    }
  }
}

QCC_AVX512 void gemmAVX512(int64_t m, int64_t n, int64_t k, const float *a,
                           int64_t lda, bool aT, const float *b, int64_t ldb,
                           float *c, int64_t ldc, bool transposed) {
  if (m < 4 && !aT) {
    gemmFewRows(m, n, k, a, lda, b, ldb, c, ldc, transposed);
    return;
  }
  gemmPacked<kNR>(m, n, k, a, lda, aT, b, ldb, c, ldc, transposed,
                  [](int64_t rows, int64_t cols, int64_t depth, const float *ap,
                     const float *panel, float *cBlock, int64_t ldC) {
                    kMicroKernels[rows](cols, depth, ap, panel, cBlock, ldC);
                  });
}

/// The AVX2 + FMA path: the AVX-512 path's blocking in 8-lane registers, a
/// 6 x 16 block of C in twelve ymm accumulators (with the two B vectors and
/// the broadcast, 15 of the 16 registers).
constexpr int kNR2 = 16;

/// Lanes [0, n) of a ymm mask for maskload/maskstore (n clamped to 0..8).
QCC_AVX2 inline __m256i laneMask(int64_t n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(
      _mm256_set1_epi32(int(std::clamp<int64_t>(n, 0, 8))), idx);
}

/// Always all kMR rows (packA zero-pads the missing ones; only `rows` are
/// stored), in named accumulators: with an array GCC keeps a copy of every
/// accumulator in memory and stores it on each step of k.
QCC_AVX2 void microKernelAVX2(int64_t rows, int64_t cols, int64_t k,
                              const float *ap, const float *bp, float *c,
                              int64_t ldc) {
  static_assert(kMR == 6, "the AVX2 kernel is written for 6 rows");
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00,
         c20 = c00, c21 = c00, c30 = c00, c31 = c00, c40 = c00, c41 = c00,
         c50 = c00, c51 = c00;
  for (int64_t p = 0; p < k; ++p) {
    const __m256 b0 = _mm256_load_ps(bp + p * kNR2);
    const __m256 b1 = _mm256_load_ps(bp + p * kNR2 + 8);
    const float *a = ap + p * kMR;
    __m256 av = _mm256_broadcast_ss(a);
    c00 = _mm256_fmadd_ps(av, b0, c00);
    c01 = _mm256_fmadd_ps(av, b1, c01);
    av = _mm256_broadcast_ss(a + 1);
    c10 = _mm256_fmadd_ps(av, b0, c10);
    c11 = _mm256_fmadd_ps(av, b1, c11);
    av = _mm256_broadcast_ss(a + 2);
    c20 = _mm256_fmadd_ps(av, b0, c20);
    c21 = _mm256_fmadd_ps(av, b1, c21);
    av = _mm256_broadcast_ss(a + 3);
    c30 = _mm256_fmadd_ps(av, b0, c30);
    c31 = _mm256_fmadd_ps(av, b1, c31);
    av = _mm256_broadcast_ss(a + 4);
    c40 = _mm256_fmadd_ps(av, b0, c40);
    c41 = _mm256_fmadd_ps(av, b1, c41);
    av = _mm256_broadcast_ss(a + 5);
    c50 = _mm256_fmadd_ps(av, b0, c50);
    c51 = _mm256_fmadd_ps(av, b1, c51);
  }
  const __m256 acc[kMR][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                              {c30, c31}, {c40, c41}, {c50, c51}};
  const __m256i m0 = laneMask(cols), m1 = laneMask(cols - 8);
  for (int64_t r = 0; r < rows; ++r) {
    float *row = c + r * ldc;
    if (cols == kNR2) {
      _mm256_storeu_ps(row, _mm256_add_ps(_mm256_loadu_ps(row), acc[r][0]));
      _mm256_storeu_ps(row + 8,
                       _mm256_add_ps(_mm256_loadu_ps(row + 8), acc[r][1]));
      continue;
    }
    _mm256_maskstore_ps(
        row, m0, _mm256_add_ps(_mm256_maskload_ps(row, m0), acc[r][0]));
    if (cols > 8)
      _mm256_maskstore_ps(row + 8, m1,
                          _mm256_add_ps(_mm256_maskload_ps(row + 8, m1),
                                        acc[r][1]));
  }
}

/// Few rows of A on AVX2 (see gemmFewRows).
QCC_AVX2 void gemmFewRowsAVX2(int64_t m, int64_t n, int64_t k, const float *a,
                              int64_t lda, const float *b, int64_t ldb,
                              float *c, int64_t ldc, bool transposed) {
  for (int64_t i = 0; i < m; ++i) {
    const float *ai = a + i * lda;
    float *ci = c + i * ldc;
    if (transposed) {
      for (int64_t j = 0; j < n; ++j) {
        const float *bj = b + j * ldb;
        __m256 acc = _mm256_setzero_ps();
        int64_t p = 0;
        for (; p + 8 <= k; p += 8)
          acc = _mm256_fmadd_ps(_mm256_loadu_ps(ai + p),
                                _mm256_loadu_ps(bj + p), acc);
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc),
                              _mm256_extractf128_ps(acc, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        float sum = _mm_cvtss_f32(s);
        for (; p < k; ++p)
          sum += ai[p] * bj[p];
        ci[j] += sum;
      }
    } else {
      for (int64_t p = 0; p < k; ++p) {
        const __m256 av = _mm256_set1_ps(ai[p]);
        const float *bp = b + p * ldb;
        int64_t j = 0;
        for (; j + 8 <= n; j += 8)
          _mm256_storeu_ps(ci + j, _mm256_fmadd_ps(av, _mm256_loadu_ps(bp + j),
                                                   _mm256_loadu_ps(ci + j)));
        for (; j < n; ++j)
          ci[j] += ai[p] * bp[j];
      }
    }
  }
}

QCC_AVX2 void gemmAVX2(int64_t m, int64_t n, int64_t k, const float *a,
                       int64_t lda, bool aT, const float *b, int64_t ldb,
                       float *c, int64_t ldc, bool transposed) {
  if (m < 4 && !aT) {
    gemmFewRowsAVX2(m, n, k, a, lda, b, ldb, c, ldc, transposed);
    return;
  }
  gemmPacked<kNR2>(m, n, k, a, lda, aT, b, ldb, c, ldc, transposed,
                   microKernelAVX2);
}

bool hasAVX2() {
  static const bool has =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

bool hasAVX512() {
  static const bool has = __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("fma");
  return has;
}
#endif

} // namespace

extern "C" int qcc_rt_gemm_f32_isa(int isa, int64_t m, int64_t n, int64_t k,
                                   const float *a, int64_t lda,
                                   int32_t aTransposed, const float *b,
                                   int64_t ldb, int32_t bTransposed, float *c,
                                   int64_t ldc) {
  switch (isa) {
  case 0:
    break;
#if defined(__x86_64__)
  case 1:
    if (!hasAVX2())
      return -1;
    break;
  case 2:
    if (!hasAVX512())
      return -1;
    break;
#endif
  default:
    return -1;
  }
  if (m <= 0 || n <= 0 || k <= 0)
    return 0;
#if defined(__x86_64__)
  if (isa == 2) {
    gemmAVX512(m, n, k, a, lda, aTransposed != 0, b, ldb, c, ldc,
               bTransposed != 0);
    return 0;
  }
  if (isa == 1) {
    gemmAVX2(m, n, k, a, lda, aTransposed != 0, b, ldb, c, ldc,
             bTransposed != 0);
    return 0;
  }
#endif
  gemmGeneric(m, n, k, a, lda, aTransposed != 0, b, ldb, bTransposed != 0, c,
              ldc);
  return 0;
}

extern "C" void qcc_rt_gemm_f32(int64_t m, int64_t n, int64_t k,
                                const float *a, int64_t lda,
                                int32_t aTransposed, const float *b,
                                int64_t ldb, int32_t bTransposed, float *c,
                                int64_t ldc) {
#if defined(__x86_64__)
  const int isa = hasAVX512() ? 2 : hasAVX2() ? 1 : 0;
#else
  const int isa = 0;
#endif
  qcc_rt_gemm_f32_isa(isa, m, n, k, a, lda, aTransposed, b, ldb, bTransposed,
                      c, ldc);
}
