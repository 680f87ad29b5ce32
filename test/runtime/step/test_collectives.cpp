//===- test_collectives.cpp - qcc_rt_all_reduce_f32 / qcc_rt_all_gather ---===//
//
// The step runtime's collectives over a simulated job: the installed
// all_gather hands back this rank's bytes among fixed values of the other
// ranks, as a communicator would. Checked against a reference written here:
// the sum in rank order ((x0 + x1) + x2, in f32), which makes every rank's
// result the same bits; across the 1 Mi-value chunks the reduction is cut
// into; the gather's rank-order layout; one rank without a communicator;
// and a step built for another rank count (error recorded, local values).
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/StepRuntime.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

/// A job of `others.size() + 1` ranks seen from rank `rank`: the other
/// ranks' full buffers, consumed chunk by chunk in call order.
struct FakeJob {
  int rank = 0;
  std::vector<std::vector<uint8_t>> others; ///< by rank, without `rank`
  size_t offset = 0;                        ///< bytes consumed per rank
  int calls = 0;
};

int32_t fakeAllGather(void *context, const void *src, void *dst,
                      int64_t bytes) {
  auto *job = static_cast<FakeJob *>(context);
  ++job->calls;
  int ranks = int(job->others.size()) + 1;
  for (int r = 0, o = 0; r < ranks; ++r) {
    uint8_t *out = static_cast<uint8_t *>(dst) + size_t(r) * size_t(bytes);
    if (r == job->rank) {
      std::memcpy(out, src, size_t(bytes));
    } else {
      std::memcpy(out, job->others[size_t(o)].data() + job->offset,
                  size_t(bytes));
      ++o;
    }
  }
  job->offset += size_t(bytes);
  return 0;
}

std::vector<float> randomValues(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float &x : v)
    x = dist(gen) * 1000.0f;
  return v;
}

std::vector<uint8_t> bytesOf(const std::vector<float> &v) {
  std::vector<uint8_t> b(v.size() * sizeof(float));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

class Collectives : public ::testing::Test {
protected:
  void install(FakeJob &job) {
    qcc_step_collectives c{&job, job.rank, int32_t(job.others.size()) + 1,
                           fakeAllGather};
    qcc_step_set_collectives(&c);
  }
  void TearDown() override {
    qcc_step_set_collectives(nullptr);
    (void)qcc_step_take_error();
  }
};

TEST_F(Collectives, AllReduceSumsInRankOrderOnEveryRank) {
  // 2.5 Mi values: three chunks of the reduction, the last one partial.
  const size_t n = (size_t(5) << 20) / 2;
  std::vector<std::vector<float>> x = {randomValues(n, 1), randomValues(n, 2),
                                       randomValues(n, 3)};
  std::vector<float> expect(n);
  for (size_t i = 0; i < n; ++i)
    expect[i] = (x[0][i] + x[1][i]) + x[2][i];
  for (int rank = 0; rank < 3; ++rank) {
    FakeJob job;
    job.rank = rank;
    for (int r = 0; r < 3; ++r)
      if (r != rank)
        job.others.push_back(bytesOf(x[size_t(r)]));
    install(job);
    std::vector<float> out(n);
    ASSERT_EQ(qcc_rt_all_reduce_f32(x[size_t(rank)].data(), out.data(),
                                    int64_t(n), 3),
              0);
    EXPECT_EQ(job.calls, 3);
    EXPECT_EQ(std::memcmp(out.data(), expect.data(), n * sizeof(float)), 0)
        << "rank " << rank;
    EXPECT_EQ(qcc_step_take_error(), nullptr);
  }
}

TEST_F(Collectives, AllReduceInPlace) {
  std::vector<float> a = {1.5f, -2.0f, 1e30f}, b = {0.25f, 4.0f, -1e30f};
  FakeJob job;
  job.rank = 1;
  job.others.push_back(bytesOf(a));
  install(job);
  std::vector<float> v = b;
  ASSERT_EQ(qcc_rt_all_reduce_f32(v.data(), v.data(), 3, 2), 0);
  EXPECT_EQ(v, (std::vector<float>{1.75f, 2.0f, 0.0f}));
}

TEST_F(Collectives, AllGatherInRankOrder) {
  std::vector<uint8_t> r0 = {1, 2, 3}, r2 = {7, 8, 9}, mine = {4, 5, 6};
  FakeJob job;
  job.rank = 1;
  job.others = {r0, r2};
  install(job);
  std::vector<uint8_t> out(9);
  ASSERT_EQ(qcc_rt_all_gather(mine.data(), out.data(), 3, 3), 0);
  EXPECT_EQ(out, (std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

TEST_F(Collectives, OneRankWithoutCommunicator) {
  std::vector<float> v = {1, 2, 3}, out(3);
  ASSERT_EQ(qcc_rt_all_reduce_f32(v.data(), out.data(), 3, 1), 0);
  EXPECT_EQ(out, v);
  std::vector<uint8_t> g(3);
  ASSERT_EQ(qcc_rt_all_gather("abc", g.data(), 3, 1), 0);
  EXPECT_EQ(std::string(g.begin(), g.end()), "abc");
  EXPECT_EQ(qcc_step_take_error(), nullptr);
}

TEST_F(Collectives, AnotherRankCountIsAnError) {
  std::vector<float> v = {1, 2}, out(2);
  EXPECT_EQ(qcc_rt_all_reduce_f32(v.data(), out.data(), 2, 4), 1);
  EXPECT_EQ(out, v); // the local values
  const char *e = qcc_step_take_error();
  ASSERT_NE(e, nullptr);
  EXPECT_NE(std::string(e).find("compiled for 4 rank(s); this job has 1"),
            std::string::npos)
      << e;
  std::vector<uint8_t> g(4);
  EXPECT_EQ(qcc_rt_all_gather("ab", g.data(), 2, 2), 1);
  EXPECT_EQ(std::string(g.begin(), g.end()), "abab");
}

} // namespace
