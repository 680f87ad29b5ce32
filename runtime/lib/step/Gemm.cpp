//===- Gemm.cpp - The f32 micro-GEMM that qmatmul tiles feed --------------===//
//
// qcc.qmatmul decodes a tile of W into a small f32 buffer (emitted code) and
// hands the product of the activations with that tile to this kernel, the
// format-independent part (like IREE's ukernels). The AVX-512 path keeps a
// 6 x 32 block of C in twelve zmm registers and streams packed B; AVX2 CPUs
// take a blocked loop of 8-lane FMAs; others a plain loop with the same
// contract.
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

/// Packs columns [j0, j0 + cols) of op(B) for all k into kNR-wide rows
/// (zero-padded), where op(B)[p][j] = B[j][p] (transposed) or B[p][j].
void packPanel(int64_t k, int64_t j0, int64_t cols, const float *b, int64_t ldb,
               bool transposed, float *panel) {
  for (int64_t p = 0; p < k; ++p) {
    float *dst = panel + p * kNR;
    for (int64_t j = 0; j < cols; ++j)
      dst[j] = transposed ? b[(j0 + j) * ldb + p] : b[p * ldb + j0 + j];
    for (int64_t j = cols; j < kNR; ++j)
      dst[j] = 0.0f;
  }
}

/// Packs rows [i0, i0 + rows) of op(A), all k, as k groups of kMR floats:
/// rows of A are often a whole activation row apart (4 KiB multiples), which
/// would make the kernel's six broadcasts alias in L1.
void packA(int64_t i0, int64_t rows, int64_t k, const float *a, int64_t lda,
           bool aT, float *ap) {
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
  // All of op(B) as panels (k x n floats: 64 KiB for the 32 x 512 tiles of
  // qcc.qmatmul), then each block of A packed once and run over every panel.
  thread_local std::vector<float> panelStorage, aStorage;
  const int64_t numPanels = (n + kNR - 1) / kNR;
  float *panels = aligned(panelStorage, size_t(numPanels * k * kNR));
  float *ap = aligned(aStorage, size_t(k * kMR));
  for (int64_t j = 0; j < numPanels; ++j)
    packPanel(k, j * kNR, std::min<int64_t>(kNR, n - j * kNR), b, ldb,
              transposed, panels + j * k * kNR);
  for (int64_t i0 = 0; i0 < m; i0 += kMR) {
    const int64_t rows = std::min<int64_t>(kMR, m - i0);
    packA(i0, rows, k, a, lda, aT, ap);
    for (int64_t j = 0; j < numPanels; ++j)
      kMicroKernels[rows](std::min<int64_t>(kNR, n - j * kNR), k, ap,
                          panels + j * k * kNR, c + i0 * ldc + j * kNR, ldc);
  }
}

/// CPUs with AVX2 and FMA but not AVX-512: op(B) as k x n rows (packed
/// when it is stored transposed), then blocks of 4 rows of C by 256 columns
/// (kept in L1) accumulate rank-1 updates row of B by row of B, a loop
/// the compiler turns into 8-lane FMAs.
QCC_AVX2 void gemmAVX2(int64_t m, int64_t n, int64_t k, const float *a,
                       int64_t lda, bool aT, const float *b, int64_t ldb,
                       bool bT, float *c, int64_t ldc) {
  thread_local std::vector<float> bStorage;
  const float *bp = b;
  int64_t ldbp = ldb;
  if (bT) {
    bStorage.resize(size_t(k * n));
    for (int64_t j = 0; j < n; ++j)
      for (int64_t p = 0; p < k; ++p)
        bStorage[size_t(p * n + j)] = b[j * ldb + p];
    bp = bStorage.data();
    ldbp = n;
  }
  constexpr int64_t kRows = 4, kCols = 256;
  for (int64_t i0 = 0; i0 < m; i0 += kRows) {
    const int64_t rows = std::min<int64_t>(kRows, m - i0);
    for (int64_t j0 = 0; j0 < n; j0 += kCols) {
      const int64_t cols = std::min<int64_t>(kCols, n - j0);
      for (int64_t p = 0; p < k; ++p) {
        const float *brow = bp + p * ldbp + j0;
        for (int64_t r = 0; r < rows; ++r) {
          const float av = aAt(a, lda, aT, i0 + r, p);
          float *crow = c + (i0 + r) * ldc + j0;
          for (int64_t j = 0; j < cols; ++j)
            crow[j] += av * brow[j];
        }
      }
    }
  }
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

extern "C" void qcc_rt_gemm_f32(int64_t m, int64_t n, int64_t k,
                                const float *a, int64_t lda,
                                int32_t aTransposed, const float *b,
                                int64_t ldb, int32_t bTransposed, float *c,
                                int64_t ldc) {
  if (m <= 0 || n <= 0 || k <= 0)
    return;
#if defined(__x86_64__)
  if (hasAVX512()) {
    gemmAVX512(m, n, k, a, lda, aTransposed != 0, b, ldb, c, ldc,
               bTransposed != 0);
    return;
  }
  if (hasAVX2()) {
    gemmAVX2(m, n, k, a, lda, aTransposed != 0, b, ldb, bTransposed != 0, c,
             ldc);
    return;
  }
#endif
  gemmGeneric(m, n, k, a, lda, aTransposed != 0, b, ldb, bTransposed != 0, c,
              ldc);
}
