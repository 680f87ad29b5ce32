//===- Collectives.cpp - qcc.all_reduce and qcc.all_gather ----------------===//
//
// What a data-parallel step calls where its ranks exchange values
// (StepRuntime.h, docs/distributed.md). The host's communicator moves the
// bytes (an all-gather); the reduction is done here, in rank order, so that
// every rank computes the same sum bit for bit and a rerun computes it
// again, whatever algorithm the communicator uses.
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/StepRuntime.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace qcc::step {
void recordError(std::string message);
} // namespace qcc::step

namespace {

qcc_step_collectives installed{nullptr, 0, 1, nullptr};

/// Values reduced per exchange: bounds the gathered buffer to ranks x 4 MiB.
constexpr int64_t kReduceChunk = int64_t(1) << 20;

bool checkRanks(const char *op, int64_t ranks) {
  if (ranks == installed.ranks && (ranks == 1 || installed.all_gather))
    return true;
  qcc::step::recordError(std::string(op) + ": the step was compiled for " +
                         std::to_string(ranks) + " rank(s); this job has " +
                         std::to_string(installed.ranks));
  return false;
}

} // namespace

extern "C" void qcc_step_set_collectives(const qcc_step_collectives *c) {
  installed = c ? *c : qcc_step_collectives{nullptr, 0, 1, nullptr};
}

extern "C" int32_t qcc_rt_all_reduce_f32(const float *src, float *dst,
                                         int64_t n, int64_t ranks) {
  if (src != dst)
    std::memmove(dst, src, size_t(n) * sizeof(float));
  if (!checkRanks("qcc.all_reduce", ranks))
    return 1;
  if (ranks == 1)
    return 0;
  std::vector<float> gathered;
  for (int64_t at = 0; at < n; at += kReduceChunk) {
    int64_t len = std::min(kReduceChunk, n - at);
    gathered.resize(size_t(len * ranks));
    if (installed.all_gather(installed.context, dst + at, gathered.data(),
                             len * int64_t(sizeof(float)))) {
      qcc::step::recordError("qcc.all_reduce: the communicator failed");
      return 1;
    }
    for (int64_t i = 0; i < len; ++i) {
      float sum = gathered[size_t(i)];
      for (int64_t r = 1; r < ranks; ++r)
        sum += gathered[size_t(r * len + i)];
      dst[at + i] = sum;
    }
  }
  return 0;
}

extern "C" int32_t qcc_rt_all_gather(const void *src, void *dst, int64_t bytes,
                                     int64_t ranks) {
  if (checkRanks("qcc.all_gather", ranks)) {
    if (ranks == 1) {
      std::memcpy(dst, src, size_t(bytes));
      return 0;
    }
    if (!installed.all_gather(installed.context, src, dst, bytes))
      return 0;
    qcc::step::recordError("qcc.all_gather: the communicator failed");
  }
  for (int64_t r = 0; r < ranks; ++r)
    std::memcpy(static_cast<char *>(dst) + r * bytes, src, size_t(bytes));
  return 1;
}
