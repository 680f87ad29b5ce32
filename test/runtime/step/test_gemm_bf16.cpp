//===- test_gemm_bf16.cpp - qcc_rt_gemm_bf16 vs a double reference --------===//
//
// qcc_rt_gemm_bf16 on every edge of its blocking (rows not a multiple of 8,
// columns not a multiple of 16/32, odd k and k of 1, both orientations of A
// and of B, leading dimensions wider than the matrices, a non-zero C), on
// each path this CPU has (portable, AVX512-BF16). Reference: the operands
// rounded to bf16 here (round half to even on the top 16 bits, written
// apart from the runtime's), the sums in double; tolerance 1e-5 relative to
// the largest |entry| of the result, as for the f32 GEMM: the products are
// exact, only the f32 sums round. Rounding by truncation, or not rounding,
// is off by ~2^-9 relative, far outside it (the ExactOnRoundedOperands test
// checks that the rounding happens).
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/StepRuntime.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>

namespace {

std::vector<int> supportedPaths() {
  std::vector<int> paths;
  float a = 1, b = 1, c = 0;
  for (int isa = 0; isa <= 1; ++isa)
    if (qcc_rt_gemm_bf16_isa(isa, 1, 1, 1, &a, 1, 0, &b, 1, 0, &c, 1) == 0)
      paths.push_back(isa);
  return paths;
}

/// Nearest bf16 (ties to even) of a normal, finite f32, as a double.
double toBf16(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  const uint32_t low = u & 0xffffu, high = u >> 16;
  uint32_t rounded = high;
  if (low > 0x8000u || (low == 0x8000u && (high & 1u)))
    rounded = high + 1;
  const uint32_t bits = rounded << 16;
  float r;
  std::memcpy(&r, &bits, 4);
  return double(r);
}

class GemmBf16 : public testing::TestWithParam<
                     std::tuple<int64_t, int64_t, int64_t, bool, bool, int>> {};

TEST_P(GemmBf16, MatchesDoubleReferenceOfRoundedOperands) {
  auto [m, n, k, bT, aT, isa] = GetParam();
  const int64_t lda = (aT ? m : k) + 3, ldb = (bT ? k : n) + 5, ldc = n + 7;
  std::mt19937 rng(unsigned(m * 1000 + n * 10 + k));
  std::normal_distribution<float> dist;
  std::vector<float> a(size_t((aT ? k : m) * lda)),
      b(size_t((bT ? n : k) * ldb)), c(size_t(m * ldc));
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
            toBf16(aT ? a[size_t(p * lda + i)] : a[size_t(i * lda + p)]) *
            toBf16(bT ? b[size_t(j * ldb + p)] : b[size_t(p * ldb + j)]);
  const std::vector<float> before = c;
  ASSERT_EQ(qcc_rt_gemm_bf16_isa(isa, m, n, k, a.data(), lda, aT ? 1 : 0,
                                 b.data(), ldb, bT ? 1 : 0, c.data(), ldc),
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
    for (int64_t j = n; j < ldc; ++j)
      ASSERT_EQ(c[size_t(i * ldc + j)], before[size_t(i * ldc + j)]);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Edges, GemmBf16,
    testing::Combine(testing::Values<int64_t>(1, 7, 8, 17),
                     testing::Values<int64_t>(1, 15, 16, 17, 32, 33, 70),
                     testing::Values<int64_t>(1, 7, 33, 600),
                     testing::Bool(), testing::Bool(),
                     testing::ValuesIn(supportedPaths())));

TEST(GemmBf16Rounding, ExactOnRoundedOperands) {
  // 1 + 2^-8 lies halfway between the bf16 neighbours 1 and 1 + 2^-7 and
  // rounds to even (1); 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and
  // 1 + 2^-6 and rounds up; 1 + 2^-9 rounds down. Their products with 1 are
  // exact, so every path must give these sums bit for bit.
  const float a[4] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-9f,
                      -(1.0f + 0x1p-8f)};
  const float b[4] = {1.0f, 1.0f, 1.0f, 1.0f};
  const double expect[4] = {1.0, 1.0 + 0x1p-6, 1.0, -1.0};
  for (int isa : supportedPaths())
    for (int e = 0; e < 4; ++e) {
      float c = 0;
      ASSERT_EQ(qcc_rt_gemm_bf16_isa(isa, 1, 1, 1, a + e, 1, 0, b + e, 1, 0,
                                     &c, 1),
                0);
      EXPECT_EQ(double(c), expect[e]) << "path " << isa << ", case " << e;
    }
}

TEST(GemmBf16Paths, DefaultIsTheWidestAndPathsAgree) {
  const int64_t m = 17, n = 70, k = 601;
  std::mt19937 rng(11);
  std::normal_distribution<float> dist;
  std::vector<float> a(size_t(m * k)), b(size_t(n * k)), c1(size_t(m * n)),
      c2(size_t(m * n));
  for (float &v : a)
    v = dist(rng);
  for (float &v : b)
    v = dist(rng);
  qcc_rt_gemm_bf16(m, n, k, a.data(), k, 0, b.data(), k, 1, c1.data(), n);
  ASSERT_EQ(qcc_rt_gemm_bf16_isa(supportedPaths().back(), m, n, k, a.data(),
                                 k, 0, b.data(), k, 1, c2.data(), n),
            0);
  EXPECT_EQ(c1, c2);
  float unused = 0;
  EXPECT_EQ(qcc_rt_gemm_bf16_isa(2, 1, 1, 1, a.data(), 1, 0, b.data(), 1, 0,
                                 &unused, 1),
            -1);
}

} // namespace
