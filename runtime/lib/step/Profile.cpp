//===- Profile.cpp - Counters behind qcc --profile ------------------------===//
//
// Generated code calls qcc_rt_profile_enter / _exit around every kernel call
// of a profiled step (qcc-profile-kernels), always from the step's calling
// thread (kernel calls are not nested and not inside parallel loops). The
// host reads the counters and the trace between runs.
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/StepRuntime.h"

#include <algorithm>
#include <chrono>
#include <vector>

namespace {

struct Kernel {
  int64_t calls = 0, ns = 0, open = 0;
};

struct Event {
  int32_t id;
  int64_t start, dur;
};

std::vector<Kernel> kernels;
std::vector<Event> events;
int64_t maxEvents = 0;
int64_t origin = -1;

int64_t now() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

} // namespace

extern "C" void qcc_rt_profile_enter(int32_t id) {
  if (id < 0)
    return;
  if (size_t(id) >= kernels.size())
    kernels.resize(size_t(id) + 1);
  kernels[size_t(id)].open = now();
}

extern "C" void qcc_rt_profile_exit(int32_t id) {
  if (id < 0 || size_t(id) >= kernels.size())
    return;
  Kernel &k = kernels[size_t(id)];
  int64_t end = now();
  ++k.calls;
  k.ns += end - k.open;
  if (int64_t(events.size()) < maxEvents) {
    if (origin < 0)
      origin = k.open;
    events.push_back({id, k.open - origin, end - k.open});
  }
}

extern "C" int64_t qcc_step_profile_counters(int64_t *calls, int64_t *ns,
                                             int64_t n, int32_t reset) {
  for (int64_t i = 0; i < n; ++i) {
    bool seen = size_t(i) < kernels.size();
    calls[i] = seen ? kernels[size_t(i)].calls : 0;
    ns[i] = seen ? kernels[size_t(i)].ns : 0;
  }
  int64_t seenCount = int64_t(kernels.size());
  if (reset)
    for (Kernel &k : kernels)
      k.calls = k.ns = 0;
  return seenCount;
}

extern "C" void qcc_step_profile_trace(int64_t max) {
  maxEvents = std::max<int64_t>(0, max);
  events.clear();
  origin = -1;
}

extern "C" int64_t qcc_step_profile_events(int32_t *ids, int64_t *start,
                                           int64_t *dur, int64_t n) {
  int64_t m = std::min<int64_t>(n, int64_t(events.size()));
  for (int64_t i = 0; i < m; ++i) {
    ids[i] = events[size_t(i)].id;
    start[i] = events[size_t(i)].start;
    dur[i] = events[size_t(i)].dur;
  }
  return int64_t(events.size());
}
