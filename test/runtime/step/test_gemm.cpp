//===- test_gemm.cpp - The step runtime's micro-GEMM vs a double reference -===//
//
// qcc_rt_gemm_f32 on every edge of its register blocking (rows not a
// multiple of 6, columns not a multiple of 16/32, k of 1), both orientations
// of A and of B, leading dimensions wider than the matrices, and accumulation into a
// non-zero C, on each instruction-set path this CPU has (portable, AVX2,
// AVX-512; qcc_rt_gemm_f32_isa). Reference: the same sums in double;
// tolerance 1e-5 relative to the largest |entry| of the result (f32 sums of
// at most 600 products).
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/StepRuntime.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <tuple>
#include <vector>

namespace {

/// The instruction-set paths this CPU has (0 portable, 1 AVX2, 2 AVX-512).
std::vector<int> supportedIsas() {
  std::vector<int> isas;
  float a = 1, b = 1, c = 0;
  for (int isa = 0; isa <= 2; ++isa)
    if (qcc_rt_gemm_f32_isa(isa, 1, 1, 1, &a, 1, 0, &b, 1, 0, &c, 1) == 0)
      isas.push_back(isa);
  return isas;
}

class Gemm : public testing::TestWithParam<
                 std::tuple<int64_t, int64_t, int64_t, bool, bool, int>> {};

TEST_P(Gemm, MatchesDoubleReference) {
  auto [m, n, k, transposed, aT, isa] = GetParam();
  const int64_t lda = (aT ? m : k) + 3, ldb = (transposed ? k : n) + 5,
                ldc = n + 7;
  std::mt19937 rng(unsigned(m * 1000 + n * 10 + k));
  std::normal_distribution<float> dist;
  std::vector<float> a(size_t((aT ? k : m) * lda)), b(size_t((transposed ? n : k) * ldb)),
      c(size_t(m * ldc));
  for (float &v : a)
    v = dist(rng);
  for (float &v : b)
    v = dist(rng);
  for (float &v : c)
    v = dist(rng);
  std::vector<double> ref(c.begin(), c.end());
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t p = 0; p < k; ++p)
        ref[size_t(i * ldc + j)] +=
            double(aT ? a[size_t(p * lda + i)] : a[size_t(i * lda + p)]) *
            double(transposed ? b[size_t(j * ldb + p)] : b[size_t(p * ldb + j)]);
  const std::vector<float> before = c;
  ASSERT_EQ(qcc_rt_gemm_f32_isa(isa, m, n, k, a.data(), lda, aT ? 1 : 0,
                                b.data(), ldb, transposed ? 1 : 0, c.data(),
                                ldc),
            0);
  double scale = 1e-30;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      scale = std::max(scale, std::abs(ref[size_t(i * ldc + j)]));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j)
      ASSERT_NEAR(c[size_t(i * ldc + j)], ref[size_t(i * ldc + j)],
                  1e-5 * scale)
          << "at (" << i << ", " << j << ")";
    // Padding columns between n and ldc are never written.
    for (int64_t j = n; j < ldc; ++j)
      ASSERT_EQ(c[size_t(i * ldc + j)], before[size_t(i * ldc + j)]);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Edges, Gemm,
    testing::Combine(testing::Values<int64_t>(1, 5, 6, 7, 13),
                     testing::Values<int64_t>(1, 15, 16, 17, 32, 33, 70),
                     testing::Values<int64_t>(1, 8, 600),
                     testing::Bool(), testing::Bool(),
                     testing::ValuesIn(supportedIsas())));

TEST(GemmIsa, DefaultPathIsTheWidest) {
  // qcc_rt_gemm_f32 agrees bit for bit with the widest path this CPU has.
  const int64_t m = 13, n = 70, k = 600;
  std::mt19937 rng(7);
  std::normal_distribution<float> dist;
  std::vector<float> a(size_t(m * k)), b(size_t(k * n)), c1(size_t(m * n)),
      c2(size_t(m * n));
  for (float &v : a)
    v = dist(rng);
  for (float &v : b)
    v = dist(rng);
  qcc_rt_gemm_f32(m, n, k, a.data(), k, 0, b.data(), n, 0, c1.data(), n);
  const int widest = supportedIsas().back();
  ASSERT_EQ(qcc_rt_gemm_f32_isa(widest, m, n, k, a.data(), k, 0, b.data(), n,
                                0, c2.data(), n),
            0);
  EXPECT_EQ(c1, c2);
  float unused = 0;
  EXPECT_EQ(qcc_rt_gemm_f32_isa(3, 1, 1, 1, a.data(), 1, 0, b.data(), 1, 0,
                                &unused, 1),
            -1);
}

TEST(GemmArgs, EmptyDimensionsDoNothing) {
  float c = 1.0f;
  qcc_rt_gemm_f32(0, 1, 1, nullptr, 1, 0, nullptr, 1, 0, &c, 1);
  qcc_rt_gemm_f32(1, 1, 0, nullptr, 1, 1, nullptr, 1, 1, &c, 1);
  EXPECT_EQ(c, 1.0f);
}

} // namespace
