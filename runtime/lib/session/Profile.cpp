//===- Profile.cpp - Per-kernel tables and traces of profiled steps -------===//
//
// A step compiled with qcc --profile (qcc-profile-kernels) describes its
// kernels (qcc_step_profile_table) and counts their calls in the step
// runtime; here the two are joined into the table qcc-run and qcc-train
// print, and the trace becomes a Chrome trace file.
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/Gguf.h"
#include "qcc/Runtime/Session.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <vector>

using namespace qcc::rt;

std::string StepLibrary::profile(bool reset) const {
  if (!ProfileTable)
    return "";
  nlohmann::json table =
      nlohmann::json::parse(ProfileTable(), nullptr, /*exceptions=*/false);
  if (!table.is_array())
    return "";
  int64_t n = int64_t(table.size());
  std::vector<int64_t> calls(size_t(n) + 1), ns(size_t(n) + 1);
  ProfileCounters(calls.data(), ns.data(), n, reset ? 1 : 0);
  for (nlohmann::json &k : table) {
    int64_t id = k.value("id", int64_t(-1));
    bool ok = id >= 0 && id < n;
    k["calls"] = ok ? calls[size_t(id)] : 0;
    k["ns"] = ok ? ns[size_t(id)] : 0;
  }
  return table.dump();
}

void StepLibrary::traceProfile(int64_t maxEvents) const {
  if (ProfileTrace)
    ProfileTrace(maxEvents);
}

bool StepLibrary::writeProfileTrace(const std::string &path,
                                    std::string *error) const {
  if (!ProfileTable) {
    *error = "the step was not compiled with qcc --profile";
    return false;
  }
  nlohmann::json table = nlohmann::json::parse(profile(false));
  int64_t n = ProfileEvents(nullptr, nullptr, nullptr, 0);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  std::vector<int64_t> start(static_cast<size_t>(n)), dur(static_cast<size_t>(n));
  ProfileEvents(ids.data(), start.data(), dur.data(), n);
  nlohmann::json events = nlohmann::json::array();
  for (int64_t i = 0; i < n; ++i) {
    std::string name = "kernel " + std::to_string(ids[size_t(i)]);
    nlohmann::json args = nlohmann::json::object();
    for (const nlohmann::json &k : table)
      if (k.value("id", -1) == ids[size_t(i)]) {
        name = k.value("op", std::string()) + " " +
               k.value("kernel", std::string());
        args = {{"loc", k.value("loc", std::string())},
                {"type", k.value("type", std::string())}};
        break;
      }
    // Chrome's trace format counts in microseconds.
    events.push_back({{"name", name}, {"ph", "X"}, {"pid", 0}, {"tid", 0},
                      {"ts", double(start[size_t(i)]) / 1e3},
                      {"dur", double(dur[size_t(i)]) / 1e3},
                      {"args", args}});
  }
  std::string text =
      nlohmann::json({{"traceEvents", events}, {"displayTimeUnit", "ms"}})
          .dump();
  gguf::AtomicFile out;
  return out.open(path, error) && out.write(text.data(), text.size(), error) &&
         out.commit(error);
}

/// A call site as the table shows it: each file path cut to its last two
/// components ("/src/python/qcc/models/gemma3.py:88:9" ->
/// "models/gemma3.py:88:9").
static std::string shortLocation(const std::string &loc) {
  size_t colon = loc.find(".py:");
  if (colon == std::string::npos)
    colon = loc.find(".mlir:");
  if (colon == std::string::npos)
    return loc;
  size_t last = loc.rfind('/', colon);
  if (last == std::string::npos || last == 0)
    return loc;
  size_t before = loc.rfind('/', last - 1);
  size_t start = loc.rfind(' ', colon);
  start = start == std::string::npos ? 0 : start + 1;
  size_t cut = before == std::string::npos ? start : before + 1;
  if (cut < start)
    cut = start;
  return loc.substr(0, start) + loc.substr(cut);
}

std::string StepLibrary::profileTable(double wallSeconds, int top) const {
  std::string json = profile(false);
  if (json.empty())
    return "";
  nlohmann::json table = nlohmann::json::parse(json);
  std::vector<nlohmann::json> rows(table.begin(), table.end());
  std::stable_sort(rows.begin(), rows.end(), [](const auto &a, const auto &b) {
    return a.value("ns", int64_t(0)) > b.value("ns", int64_t(0));
  });
  double totalNs = 0;
  for (const auto &r : rows)
    totalNs += double(r.value("ns", int64_t(0)));
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line,
                "%-4s %-22s %8s %10s %6s %6s %8s %7s  %s\n", "id", "op",
                "calls", "ms", "%krn", wallSeconds > 0 ? "%wall" : "",
                "GFLOP/s", "GB/s", "first call site");
  out += line;
  auto emit = [&](const std::string &id, const std::string &op, int64_t calls,
                  double ns, double flops, double bytes,
                  const std::string &loc) {
    double s = ns / 1e9;
    std::string wall = wallSeconds > 0
                           ? std::to_string(int(100.0 * s / wallSeconds + 0.5))
                           : "";
    std::snprintf(line, sizeof line,
                  "%-4s %-22s %8lld %10.1f %6.1f %6s %8s %7s  %s\n",
                  id.c_str(), op.substr(0, 22).c_str(), (long long)calls,
                  ns / 1e6, totalNs > 0 ? 100.0 * ns / totalNs : 0.0,
                  wall.c_str(),
                  flops > 0 && s > 0
                      ? std::to_string(int(flops / s / 1e9 + 0.5)).c_str()
                      : "",
                  bytes > 0 && s > 0
                      ? std::to_string(int(bytes / s / 1e9 + 0.5)).c_str()
                      : "",
                  loc.c_str());
    out += line;
  };
  double restNs = 0, restFlops = 0, restBytes = 0;
  int64_t restCalls = 0;
  int shown = 0;
  for (const auto &r : rows) {
    int64_t calls = r.value("calls", int64_t(0));
    if (!calls)
      continue;
    double ns = double(r.value("ns", int64_t(0)));
    double flops = double(r.value("flops", int64_t(0))) * double(calls);
    double bytes = double(r.value("bytes", int64_t(0))) * double(calls);
    if (shown++ < top) {
      emit(std::to_string(r.value("id", -1)), r.value("op", std::string()),
           calls, ns, flops, bytes,
           shortLocation(r.value("loc", std::string())));
    } else {
      restNs += ns;
      restCalls += calls;
      restFlops += flops;
      restBytes += bytes;
    }
  }
  if (shown > top)
    emit("", std::to_string(shown - top) + " more kernels", restCalls, restNs,
         restFlops, restBytes, "");
  std::snprintf(line, sizeof line, "kernels: %.1f ms in all%s\n", totalNs / 1e6,
                wallSeconds > 0
                    ? (" of " + std::to_string(int(wallSeconds * 1e3 + 0.5)) +
                       " ms of steps")
                          .c_str()
                    : "");
  out += line;
  return out;
}
