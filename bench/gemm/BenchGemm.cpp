//===- BenchGemm.cpp - The step runtime's micro-GEMMs: f32 against bf16 ---===//
//
// One thread. C[M x N] += A[M x K] · op(B) at the shapes qcc.qmatmul hands
// the runtime (forward tiles: N = K = 256, B transposed, as the decoded W
// tile; backward tiles: N = 512, K = 128, B as stored) and M = 512 rows of
// activations (a chunk of qcc-perplexity at ctx 512, a training batch of
// 4 x 128), on each path of qcc_rt_gemm_f32_isa and qcc_rt_gemm_bf16_isa
// this CPU has; GFLOP/s (2 M N K per call), best of --reps runs of --ms
// milliseconds each.
//
//   qcc-bench-gemm [--m 512] [--ms 300] [--reps 5]
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/StepRuntime.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

namespace {

using GemmFn = int (*)(int, int64_t, int64_t, int64_t, const float *, int64_t,
                       int32_t, const float *, int64_t, int32_t, float *,
                       int64_t);

double secondsNow() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// GFLOP/s of `fn` on path `isa`, or a negative value where the CPU lacks it.
double measure(GemmFn fn, int isa, int64_t m, int64_t n, int64_t k, bool bT,
               double ms, int reps) {
  std::mt19937 rng(1);
  std::normal_distribution<float> dist;
  std::vector<float> a(size_t(m * k)), b(size_t(n * k)), c(size_t(m * n));
  for (float &v : a)
    v = dist(rng);
  for (float &v : b)
    v = dist(rng);
  const int64_t ldb = bT ? k : n;
  if (fn(isa, m, n, k, a.data(), k, 0, b.data(), ldb, bT, c.data(), n) != 0)
    return -1;
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    int64_t calls = 0;
    const double start = secondsNow();
    double now = start;
    while ((now - start) * 1e3 < ms) {
      fn(isa, m, n, k, a.data(), k, 0, b.data(), ldb, bT, c.data(), n);
      ++calls;
      now = secondsNow();
    }
    best = std::max(best, 2.0 * m * n * k * calls / (now - start) / 1e9);
  }
  return best;
}

} // namespace

int main(int argc, char **argv) {
  int64_t m = 512;
  double ms = 300;
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    const bool hasValue = i + 1 < argc;
    if (!std::strcmp(argv[i], "--m") && hasValue)
      m = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--ms") && hasValue)
      ms = std::atof(argv[++i]);
    else if (!std::strcmp(argv[i], "--reps") && hasValue)
      reps = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr,
                   "usage: qcc-bench-gemm [--m M] [--ms MS] [--reps N]\n");
      return 2;
    }
  }
  if (m <= 0 || ms <= 0 || reps <= 0) {
    std::fprintf(stderr, "qcc-bench-gemm: --m, --ms and --reps must be "
                         "positive\n");
    return 2;
  }
  struct Shape {
    const char *name;
    int64_t n, k;
    bool bT;
  } shapes[] = {{"forward tile 256x256 (B transposed)", 256, 256, true},
                {"backward tile 512x128 (B as stored)", 512, 128, false}};
  struct Path {
    const char *name;
    GemmFn fn;
    int isa;
  } paths[] = {{"f32 portable", qcc_rt_gemm_f32_isa, 0},
               {"f32 AVX2", qcc_rt_gemm_f32_isa, 1},
               {"f32 AVX-512", qcc_rt_gemm_f32_isa, 2},
               {"bf16 portable", qcc_rt_gemm_bf16_isa, 0},
               {"bf16 AVX512-BF16", qcc_rt_gemm_bf16_isa, 1}};
  std::printf("M = %lld, one thread, GFLOP/s (best of %d x %.0f ms)\n",
              (long long)m, reps, ms);
  for (const Shape &s : shapes) {
    std::printf("%s:\n", s.name);
    for (const Path &p : paths) {
      const double g = measure(p.fn, p.isa, m, s.n, s.k, s.bT, ms, reps);
      if (g < 0)
        std::printf("  %-18s (not on this CPU)\n", p.name);
      else
        std::printf("  %-18s %8.1f\n", p.name, g);
    }
  }
  return 0;
}
