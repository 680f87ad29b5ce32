//===- Session.cpp - Run compiled steps over a GGUF model -----------------===//

#include "qcc/Runtime/Session.h"

#include "qcc/Runtime/Codecs.h"
#include "qcc/Runtime/Cuda.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <dlfcn.h>
#include <sstream>
#include <sys/mman.h>
#include <unistd.h>

namespace qcc::rt {

/// The step ABI version this runtime speaks (docs/runtime.md).
static constexpr int kStepAbiVersion = 1;

static std::string join(const std::vector<int64_t> &v) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < v.size(); ++i)
    os << (i ? ", " : "") << v[i];
  os << "]";
  return os.str();
}

static bool fail(std::string *error, std::string message) {
  if (error)
    *error = std::move(message);
  return false;
}

/// FNV-1a, 64 bits: identifies manifests and models in checkpoints (an
/// accident detector, not a defence against forgery).
static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
  const uint8_t *p = static_cast<const uint8_t *>(data);
  for (size_t i = 0; i < n; ++i)
    h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}
static constexpr uint64_t kFnvBasis = 0xcbf29ce484222325ull;

/// Drops the pages of [data, data + n) of the model's read-only mapping
/// from memory once a trainable tensor has its private copy: they would
/// otherwise stay resident (counted in RSS) for the whole run. The file
/// is untouched; a later read simply faults them in again.
static void releasePages(const uint8_t *data, size_t n) {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) & ~(page - 1);
  uintptr_t end = (reinterpret_cast<uintptr_t>(data) + n) & ~(page - 1);
  if (end > begin)
    madvise(reinterpret_cast<void *>(begin), end - begin, MADV_DONTNEED);
}

/// The private copy of a trainable tensor, made a megabyte at a time with
/// the mapped source released behind it, so the tensor is never resident
/// twice (peak RSS: one copy, not the file's pages plus the copy).
static void copyReleasing(const uint8_t *src, size_t n,
                          std::vector<uint8_t> &dst, bool mapped) {
  constexpr size_t kChunk = size_t(1) << 20;
  dst.resize(n);
  for (size_t done = 0; done < n; done += kChunk) {
    size_t len = std::min(kChunk, n - done);
    std::memcpy(dst.data() + done, src + done, len);
    if (mapped)
      releasePages(src + done, len);
  }
  if (mapped) // the pages straddling chunk boundaries
    releasePages(src, n);
}

static std::string hex16(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

bool parseDevice(const std::string &name, Device &device) {
  if (name == "cpu")
    device = Device::Cpu;
  else if (name == "cuda")
    device = Device::Cuda;
  else
    return false;
  return true;
}

const char *deviceName(Device device) {
  return device == Device::Cuda ? "cuda" : "cpu";
}

//===----------------------------------------------------------------------===//
// StepLibrary
//===----------------------------------------------------------------------===//

static bool parseValue(const nlohmann::json &j, ValueDesc &v,
                       std::string *error) {
  try {
    v.index = j.at("index").get<size_t>();
    v.name = j.at("name").get<std::string>();
    v.role = j.at("role").get<std::string>();
    v.kind = j.at("kind").get<std::string>();
    v.type = v.kind == "qtensor" ? j.at("format").get<std::string>()
                                 : j.at("dtype").get<std::string>();
    v.shape = j.at("shape").get<std::vector<int64_t>>();
    v.bytes = j.at("bytes").get<uint64_t>();
    v.init = j.value("init", "");
    v.inplace = j.value("inplace", false);
    if (j.contains("lora")) {
      const nlohmann::json &l = j.at("lora");
      v.loraBase = l.at("base").get<std::string>();
      v.loraPart = l.at("part").get<std::string>();
      v.loraAlpha = l.at("alpha").get<double>();
    }
    if (const FormatInfo *info = gguf::lookupTensorType(v.type))
      v.ggmlType = info->ggmlId;
  } catch (const nlohmann::json::exception &e) {
    return fail(error, std::string("malformed step manifest: ") + e.what());
  }
  return true;
}

std::unique_ptr<StepLibrary> StepLibrary::load(const std::string &path,
                                               std::string *error) {
  std::unique_ptr<StepLibrary> lib(new StepLibrary());
  lib->Handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib->Handle) {
    fail(error, std::string("cannot load step library: ") + dlerror());
    return nullptr;
  }
  auto manifestFn = reinterpret_cast<const char *(*)()>(
      dlsym(lib->Handle, "qcc_step_manifest"));
  if (!manifestFn) {
    fail(error, path + " has no qcc_step_manifest: not a qcc step library");
    return nullptr;
  }
  lib->TakeError = reinterpret_cast<const char *(*)()>(
      dlsym(lib->Handle, "qcc_step_take_error"));
  lib->TakeCudaError = reinterpret_cast<const char *(*)()>(
      dlsym(lib->Handle, "qcc_cuda_take_error"));
  lib->SetCollectives = reinterpret_cast<void (*)(const qcc_step_collectives *)>(
      dlsym(lib->Handle, "qcc_step_set_collectives"));
  lib->ProfileTable = reinterpret_cast<const char *(*)()>(
      dlsym(lib->Handle, "qcc_step_profile_table"));
  lib->ProfileCounters =
      reinterpret_cast<int64_t (*)(int64_t *, int64_t *, int64_t, int32_t)>(
          dlsym(lib->Handle, "qcc_step_profile_counters"));
  lib->ProfileTrace = reinterpret_cast<void (*)(int64_t)>(
      dlsym(lib->Handle, "qcc_step_profile_trace"));
  lib->ProfileEvents =
      reinterpret_cast<int64_t (*)(int32_t *, int64_t *, int64_t *, int64_t)>(
          dlsym(lib->Handle, "qcc_step_profile_events"));
  if (lib->ProfileTable && (!lib->ProfileCounters || !lib->ProfileTrace ||
                            !lib->ProfileEvents))
    lib->ProfileTable = nullptr; // a table without counters: not usable
  nlohmann::json manifest = nlohmann::json::parse(manifestFn(), nullptr,
                                                  /*allow_exceptions=*/false);
  if (manifest.is_discarded() || !manifest.is_object()) {
    fail(error, path + ": its manifest is not valid JSON");
    return nullptr;
  }
  int abi = manifest.value("qcc_abi", -1);
  if (abi != kStepAbiVersion) {
    fail(error, path + " uses step ABI v" + std::to_string(abi) +
                    "; this runtime speaks v" +
                    std::to_string(kStepAbiVersion) + " (recompile it)");
    return nullptr;
  }
  const nlohmann::json &target = manifest.contains("target")
                                     ? manifest.at("target")
                                     : nlohmann::json("cpu");
  if (!target.is_string() ||
      (target.get<std::string>() != "cpu" && target != "cuda")) {
    fail(error, path + " was compiled for target " + target.dump() +
                    "; this runtime runs \"cpu\" and \"cuda\" steps");
    return nullptr;
  }
  lib->Target = target.get<std::string>();
  if (manifest.contains("gpu_arch") && manifest.at("gpu_arch").is_string())
    lib->GpuArch = manifest.at("gpu_arch").get<std::string>();
  for (const auto &e : manifest.value("entries", nlohmann::json::array())) {
    EntryDesc entry;
    entry.name = e.value("name", "");
    entry.symbol = e.value("symbol", "");
    if (e.contains("ranks")) {
      const nlohmann::json &r = e.at("ranks");
      if (!r.is_number_integer() || r.get<int64_t>() < 1) {
        fail(error, "malformed step manifest: entry '" + entry.name +
                        "' has ranks " + r.dump());
        return nullptr;
      }
      entry.ranks = r.get<int64_t>();
    }
    // The fingerprint leaves out what a checkpoint does not depend on: the
    // inputs (a data-parallel step has each rank's share of the batch) and
    // the rank count, so that a job can resume on another number of ranks.
    nlohmann::json stable = e;
    stable.erase("ranks");
    if (stable.contains("args") && stable["args"].is_array()) {
      nlohmann::json kept = nlohmann::json::array();
      for (const auto &a : stable["args"])
        if (!a.is_object() || a.value("role", "") != "input")
          kept.push_back(a);
      stable["args"] = kept;
    }
    std::string canonical = stable.dump(); // keys sorted: a canonical form
    entry.fingerprint =
        hex16(fnv1a(kFnvBasis, canonical.data(), canonical.size()));
    for (const auto &a : e.value("args", nlohmann::json::array())) {
      entry.args.emplace_back();
      if (!parseValue(a, entry.args.back(), error))
        return nullptr;
    }
    for (const auto &r : e.value("results", nlohmann::json::array())) {
      entry.results.emplace_back();
      if (!parseValue(r, entry.results.back(), error))
        return nullptr;
    }
    auto fn = reinterpret_cast<void (*)(void **)>(
        dlsym(lib->Handle, entry.symbol.c_str()));
    if (!fn) {
      fail(error, path + ": the manifest names entry symbol '" + entry.symbol +
                      "', which the library does not export");
      return nullptr;
    }
    lib->Entries.push_back(std::move(entry));
    lib->Functions.push_back(fn);
  }
  return lib;
}

StepLibrary::~StepLibrary() {
  if (Handle)
    dlclose(Handle);
}

const EntryDesc *StepLibrary::findEntry(const std::string &name) const {
  for (const EntryDesc &e : Entries)
    if (e.name == name)
      return &e;
  return nullptr;
}

void StepLibrary::call(const EntryDesc &entry, void **args) const {
  Functions[size_t(&entry - Entries.data())](args);
}

std::string StepLibrary::takeError() const {
  const char *message = TakeError ? TakeError() : nullptr;
  return message ? message : "";
}

std::string StepLibrary::takeCudaError() const {
  const char *message = TakeCudaError ? TakeCudaError() : nullptr;
  return message ? message : "";
}

//===----------------------------------------------------------------------===//
// Session
//===----------------------------------------------------------------------===//

/// CUDA mode: one device buffer per tensor argument (scalars stay on the
/// host: the entry reads them there and passes them to kernels by value)
/// and per result that is not written in place, all on device 0's primary
/// context; which of the host mirror and the device copy is newer.
struct Session::DeviceState {
  const cuda::Driver *driver = nullptr;
  cuda::Stream stream;
  std::vector<cuda::DeviceBuffer> args, results;
  std::vector<char> hostNewer;           ///< per argument: upload before run
  mutable std::vector<char> deviceNewer; ///< per argument: host mirror stale
  mutable std::vector<char> resultStale; ///< per result: host copy stale
};

Session::Session(const StepLibrary &library, const EntryDesc &entry,
                 const gguf::File &model)
    : Library(library), Entry(entry), Model(model) {}

Session::~Session() = default;

bool Session::checkDevice(const StepLibrary &library, Device device,
                          std::string *error) {
  if (device == Device::Cpu && library.target() == "cuda")
    return fail(error, "the step library was compiled for CUDA (gpu_arch " +
                           (library.gpuArch().empty() ? std::string("?")
                                                      : library.gpuArch()) +
                           "): run it with --device cuda");
  if (device == Device::Cuda && library.target() != "cuda")
    return fail(error, "the step library was compiled for the CPU: "
                       "--device cuda needs a step compiled with "
                       "qcc --target=cuda");
  if (device == Device::Cuda && !cuda::Driver::instance(error))
    return false;
  return true;
}

std::unique_ptr<Session> Session::create(const StepLibrary &library,
                                         const std::string &entryName,
                                         const gguf::File &model,
                                         std::string *error, uint64_t seed,
                                         Device device) {
  const EntryDesc *entry = library.findEntry(entryName);
  if (!entry) {
    std::string names;
    for (const EntryDesc &e : library.entries())
      names += (names.empty() ? "" : ", ") + e.name;
    fail(error, "the step has no entry '" + entryName + "' (entries: " +
                    names + ")");
    return nullptr;
  }
  if (!checkDevice(library, device, error) ||
      !joinJob(library, *entry, device, error))
    return nullptr;
  std::unique_ptr<Session> s(new Session(library, *entry, model));
  s->Dev = device;
  const bool onDevice = device == Device::Cuda;
  // CUDA: weights go straight from the mapping to the device.
  std::vector<const uint8_t *> weightData(entry->args.size(), nullptr);
  auto producedByResult = [&](const std::string &name) {
    for (const ValueDesc &r : entry->results)
      if (r.name == name)
        return true;
    return false;
  };
  for (const ValueDesc &arg : entry->args) {
    Slot slot;
    slot.desc = &arg;
    if (arg.role == "weight") {
      const gguf::TensorInfo *t = model.findTensor(arg.name);
      if (!t) {
        fail(error, "weight '" + arg.name + "' is not in the model");
        return nullptr;
      }
      if (t->ggmlType != arg.ggmlType) {
        const FormatInfo *has = gguf::lookupTensorType(t->ggmlType);
        fail(error, "weight '" + arg.name + "' is " +
                        (has ? std::string(has->name) : "?") +
                        " in the model; the step expects " + arg.type);
        return nullptr;
      }
      std::vector<int64_t> ne(t->ne, t->ne + t->nDims);
      std::vector<int64_t> expected(arg.shape.rbegin(), arg.shape.rend());
      if (ne != expected) {
        fail(error, "weight '" + arg.name + "' has ne " + join(ne) +
                        " in the model; the step expects ne " +
                        join(expected) + " (shape " + join(arg.shape) + ")");
        return nullptr;
      }
      if (t->nbytes != arg.bytes) {
        fail(error, "weight '" + arg.name + "' has " +
                        std::to_string(t->nbytes) + " bytes in the model; "
                        "the step expects " + std::to_string(arg.bytes));
        return nullptr;
      }
      if (onDevice)
        weightData[s->Args.size()] = t->data;
      if (producedByResult(arg.name)) {
        // On the device the host mirror is made when asked for (saves).
        if (!onDevice)
          copyReleasing(t->data, t->nbytes, slot.owned, model.mapped());
      } else {
        slot.frozen = t->data; // zero-copy, read-only
      }
      slot.hasValue = true;
    } else {
      slot.owned.assign(arg.bytes, 0);
      // State starts at zero, params are drawn below; inputs must be given.
      slot.hasValue = arg.role == "state" || arg.role == "param";
    }
    s->Args.push_back(std::move(slot));
  }
  for (size_t i = 0; i < entry->results.size(); ++i) {
    const ValueDesc &r = entry->results[i];
    bool inPlace = r.inplace && s->fedBy(i);
    s->InPlace.push_back(inPlace);
    s->Results.emplace_back(inPlace ? 0 : r.bytes, 0);
  }
  std::vector<std::pair<const Slot *, const Slot *>> pairs;
  if (!s->loraPairs(pairs, error))
    return nullptr;
  s->Rng.setState(seed);
  s->initParams();
  if (onDevice) {
    auto gpu = std::make_unique<DeviceState>();
    gpu->driver = cuda::Driver::instance(error);
    if (!gpu->driver || !gpu->stream.create(*gpu->driver, error))
      return nullptr;
    size_t n = s->Args.size();
    gpu->args.resize(n);
    gpu->hostNewer.assign(n, 0);
    gpu->deviceNewer.assign(n, 0);
    for (size_t i = 0; i < n; ++i) {
      const ValueDesc &d = *s->Args[i].desc;
      if (d.kind == "scalar")
        continue;
      if (!gpu->args[i].allocate(*gpu->driver, d.bytes, error)) {
        if (error)
          *error = "'" + d.name + "': " + *error;
        return nullptr;
      }
      if (weightData[i]) {
        // The raw GGUF blocks, unchanged; the mapped pages are dropped once
        // they are on the device (the host reads them again only to save
        // a merged model).
        if (!gpu->args[i].upload(weightData[i], d.bytes, gpu->stream, error) ||
            !gpu->stream.synchronize(error)) {
          if (error)
            *error = "uploading weight '" + d.name + "': " + *error;
          return nullptr;
        }
        if (model.mapped())
          releasePages(weightData[i], d.bytes);
        gpu->deviceNewer[i] = !s->Args[i].frozen;
      } else {
        gpu->hostNewer[i] = 1;
      }
    }
    gpu->results.resize(entry->results.size());
    gpu->resultStale.assign(entry->results.size(), 0);
    s->Gpu = std::move(gpu);
  }

  // The model's identity: its tensor table and a sample of every tensor's
  // bytes (hashing whole multi-gigabyte models would cost seconds per
  // save; the sample tells different models and quantizations apart).
  uint64_t h = kFnvBasis;
  for (const gguf::TensorInfo &t : model.tensors()) {
    h = fnv1a(h, t.name.data(), t.name.size() + 1);
    h = fnv1a(h, &t.ggmlType, sizeof t.ggmlType);
    h = fnv1a(h, &t.nDims, sizeof t.nDims);
    h = fnv1a(h, t.ne, sizeof t.ne);
    const uint64_t sample = 4096;
    h = fnv1a(h, t.data, std::min(t.nbytes, sample));
    if (t.nbytes > sample)
      h = fnv1a(h, t.data + t.nbytes - std::min(t.nbytes - sample, sample),
                std::min(t.nbytes - sample, sample));
  }
  s->ModelFingerprint = hex16(h);
  return s;
}

void Session::initParams() {
  for (Slot &slot : Args) {
    const ValueDesc &d = *slot.desc;
    if (d.role != "param")
      continue;
    std::fill(slot.owned.begin(), slot.owned.end(), 0);
    if (d.init != "kaiming_uniform")
      continue;
    // PyTorch's default for nn.Linear (and PEFT's for lora_A):
    // kaiming_uniform_(a=√5), i.e. U(-1/√fan_in, 1/√fan_in).
    int64_t fanIn = 1, count = 1;
    for (size_t i = 0; i < d.shape.size(); ++i) {
      count *= d.shape[i];
      if (i > 0)
        fanIn *= d.shape[i];
    }
    float bound = 1.0f / std::sqrt(float(fanIn));
    for (int64_t i = 0; i < count; ++i) {
      float v = (2.0f * Rng.uniform() - 1.0f) * bound;
      if (d.type == "f32") {
        std::memcpy(slot.owned.data() + 4 * i, &v, 4);
      } else {
        uint16_t h = d.type == "f16" ? floatToHalf(v) : floatToBF16(v);
        std::memcpy(slot.owned.data() + 2 * i, &h, 2);
      }
    }
  }
}

bool Session::reseed(uint64_t seed, std::string *error) {
  if (Runs)
    return fail(error, "cannot re-seed a session that has run");
  Rng.setState(seed);
  initParams();
  for (size_t i = 0; i < Args.size(); ++i)
    if (Args[i].desc->role == "param")
      hostChanged(i);
  return true;
}

void Session::hostChanged(size_t i) {
  if (!Gpu)
    return;
  Gpu->hostNewer[i] = 1;
  Gpu->deviceNewer[i] = 0;
}

bool Session::pullArgument(size_t i, std::string *error) const {
  if (!Gpu || !Gpu->deviceNewer[i])
    return true;
  // The host mirrors are caches of the device's values.
  Slot &slot = const_cast<Slot &>(Args[i]);
  slot.owned.resize(slot.desc->bytes);
  if (!Gpu->args[i].download(slot.owned.data(), slot.desc->bytes, Gpu->stream,
                             error) ||
      !Gpu->stream.synchronize(error))
    return false;
  Gpu->deviceNewer[i] = 0;
  return true;
}

bool Session::pullResult(size_t i, std::string *error) const {
  if (!Gpu || !Gpu->resultStale[i] || InPlace[i])
    return true;
  std::vector<uint8_t> &r = const_cast<std::vector<uint8_t> &>(Results[i]);
  if (!Gpu->results[i].download(r.data(), r.size(), Gpu->stream, error) ||
      !Gpu->stream.synchronize(error))
    return false;
  Gpu->resultStale[i] = 0;
  return true;
}

bool Session::pullCheckpointed(std::string *error) const {
  for (size_t i = 0; i < Args.size(); ++i)
    if (checkpointed(Args[i]) && !pullArgument(i, error)) {
      if (error)
        *error = "copying '" + Args[i].desc->name + "' from the GPU: " + *error;
      return false;
    }
  return true;
}

const std::vector<uint8_t> *Session::argument(const std::string &name) const {
  for (size_t i = 0; i < Args.size(); ++i) {
    const Slot &slot = Args[i];
    if (slot.desc->name == name && !slot.frozen)
      return pullArgument(i, nullptr) ? &slot.owned : nullptr;
  }
  return nullptr;
}

std::vector<std::string> Session::params() const {
  std::vector<std::string> names;
  for (const Slot &slot : Args)
    if (slot.desc->role == "param")
      names.push_back(slot.desc->name);
  return names;
}

bool Session::setArgument(const std::string &name, const void *data,
                          size_t bytes, std::string *error) {
  for (size_t i = 0; i < Args.size(); ++i) {
    Slot &slot = Args[i];
    if (slot.desc->name != name)
      continue;
    if (slot.desc->role == "weight")
      return fail(error, "'" + name + "' is a weight; weights come from the "
                         "model");
    if (bytes != slot.desc->bytes)
      return fail(error, "'" + name + "' expects " +
                             std::to_string(slot.desc->bytes) + " bytes (" +
                             slot.desc->type + " " + join(slot.desc->shape) +
                             "), got " + std::to_string(bytes));
    slot.owned.resize(bytes);
    std::memcpy(slot.owned.data(), data, bytes);
    slot.hasValue = true;
    hostChanged(i);
    return true;
  }
  return fail(error, "the entry '" + Entry.name + "' has no argument '" +
                         name + "'");
}

std::vector<std::string> Session::missingArguments() const {
  std::vector<std::string> missing;
  for (const Slot &slot : Args)
    if (!slot.hasValue)
      missing.push_back(slot.desc->name);
  return missing;
}

Session::Outcome Session::run(std::string *message) {
  std::vector<std::string> missing = missingArguments();
  if (!missing.empty()) {
    fail(message, "argument '" + missing.front() + "' has no value");
    return Outcome::Failed;
  }
  if (Gpu)
    return runOnDevice(message);
  std::vector<void *> pointers;
  for (Slot &slot : Args)
    pointers.push_back(const_cast<uint8_t *>(slot.data()));
  for (size_t i = 0; i < Results.size(); ++i)
    pointers.push_back(InPlace[i] ? fedBy(i)->owned.data() : Results[i].data());
  Library.call(Entry, pointers.data());
  ++Runs;
  // A non-finite loss explains more than the update it poisoned, so it is
  // reported first; the runtime's own error is taken (cleared) either way.
  std::string stepError = Library.takeError();
  if (std::string lossError = nonFiniteLoss(); !lossError.empty())
    stepError = lossError;
  if (!stepError.empty()) {
    fail(message,
         "step " + std::to_string(Runs) + " was skipped: " + stepError);
    return Outcome::Skipped;
  }
  // Results feed the arguments of the same name (weights, state). The
  // buffers are swapped, not copied: the entry writes every byte of its
  // results, so the argument's old buffer is simply the next call's output.
  // In-place results are there already; a skipped step wrote nothing into
  // them (its updates are guarded by the loss, docs/runtime.md).
  for (size_t i = 0; i < Results.size(); ++i)
    if (Slot *slot = fedBy(i); slot && !InPlace[i])
      std::swap(slot->owned, Results[i]);
  ++Steps;
  return Outcome::Applied;
}

Session::Outcome Session::runOnDevice(std::string *message) {
  DeviceState &gpu = *Gpu;
  std::string error;
  // Values the host changed (inputs, state, params, a checkpoint) go up
  // first, and are on the device before the entry's own streams start.
  for (size_t i = 0; i < Args.size(); ++i) {
    if (!gpu.hostNewer[i] || Args[i].desc->kind == "scalar")
      continue;
    if (!gpu.args[i].upload(Args[i].owned.data(), Args[i].desc->bytes,
                            gpu.stream, &error)) {
      fail(message, "uploading '" + Args[i].desc->name + "': " + error);
      return Outcome::Failed;
    }
  }
  for (size_t i = 0; i < Results.size(); ++i)
    if (!InPlace[i] && gpu.results[i].size() != Entry.results[i].bytes &&
        !gpu.results[i].allocate(*gpu.driver, Entry.results[i].bytes,
                                 &error)) {
      fail(message, "result '" + Entry.results[i].name + "': " + error);
      return Outcome::Failed;
    }
  if (!gpu.stream.synchronize(&error)) {
    fail(message, error);
    return Outcome::Failed;
  }
  std::fill(gpu.hostNewer.begin(), gpu.hostNewer.end(), 0);

  // Bare-pointer ABI with device pointers for every tensor; a scalar's
  // pointer is to its host value.
  std::vector<void *> pointers;
  for (size_t i = 0; i < Args.size(); ++i)
    pointers.push_back(Args[i].desc->kind == "scalar"
                           ? static_cast<void *>(Args[i].owned.data())
                           : gpu.args[i].get());
  for (size_t i = 0; i < Results.size(); ++i)
    pointers.push_back(InPlace[i] ? gpu.args[size_t(fedBy(i) - Args.data())].get()
                                  : gpu.results[i].get());
  // The entry synchronizes its streams before it returns; its CUDA failures
  // are recorded in the step library (qcc_cuda_take_error).
  Library.call(Entry, pointers.data());
  ++Runs;
  std::fill(gpu.resultStale.begin(), gpu.resultStale.end(), 1);
  for (size_t i = 0; i < Results.size(); ++i)
    if (InPlace[i])
      gpu.deviceNewer[size_t(fedBy(i) - Args.data())] = 1;
  // The entry's streams are done when it returns; synchronizing the
  // context as well catches work it left behind and asynchronous faults.
  std::string cudaError = Library.takeCudaError();
  if (std::string syncError;
      !gpu.driver->makeCurrent(&syncError) ||
      !gpu.driver->check(gpu.driver->api().cuCtxSynchronize(),
                         "cuCtxSynchronize after the entry", &syncError))
    if (cudaError.empty())
      cudaError = syncError;
  std::string stepError = Library.takeError();
  if (!cudaError.empty()) {
    fail(message, "step " + std::to_string(Runs) + " failed on the GPU: " +
                      cudaError);
    return Outcome::Failed;
  }
  // The loss decides whether the step is applied: it comes down every step.
  for (size_t i = 0; i < Results.size(); ++i)
    if (Entry.results[i].name == "loss" && !pullResult(i, &error)) {
      fail(message, "copying the loss from the GPU: " + error);
      return Outcome::Failed;
    }
  if (std::string lossError = nonFiniteLoss(); !lossError.empty())
    stepError = lossError;
  if (!stepError.empty()) {
    fail(message,
         "step " + std::to_string(Runs) + " was skipped: " + stepError);
    return Outcome::Skipped;
  }
  // Results feed the arguments of the same name: device buffers are
  // swapped, as the host buffers are on the CPU.
  for (size_t i = 0; i < Results.size(); ++i)
    if (Slot *slot = fedBy(i); slot && !InPlace[i]) {
      size_t a = size_t(slot - Args.data());
      if (slot->desc->kind == "scalar") {
        // Scalar arguments are passed from the host.
        if (!gpu.results[i].download(slot->owned.data(), slot->owned.size(),
                                     gpu.stream, &error) ||
            !gpu.stream.synchronize(&error)) {
          fail(message, "copying '" + slot->desc->name +
                            "' from the GPU: " + error);
          return Outcome::Failed;
        }
        continue;
      }
      gpu.args[a].swap(gpu.results[i]);
      gpu.deviceNewer[a] = 1;
    }
  ++Steps;
  return Outcome::Applied;
}

void Session::disableInPlace() {
  for (size_t i = 0; i < Results.size(); ++i)
    if (InPlace[i]) {
      InPlace[i] = false;
      Results[i].assign(Entry.results[i].bytes, 0);
    }
}

std::string Session::nonFiniteLoss() const {
  for (size_t i = 0; i < Results.size(); ++i) {
    if (Entry.results[i].name != "loss" || Entry.results[i].type != "f32")
      continue;
    const std::vector<uint8_t> &r = Results[i];
    for (size_t j = 0; j + 4 <= r.size(); j += 4) {
      float v;
      std::memcpy(&v, r.data() + j, 4);
      if (!std::isfinite(v))
        return "the loss is not finite";
    }
  }
  return "";
}

Session::Slot *Session::fedBy(size_t result) {
  for (Slot &slot : Args)
    if (slot.desc->name == Entry.results[result].name && !slot.frozen &&
        slot.desc->bytes == Entry.results[result].bytes)
      return &slot;
  return nullptr;
}

const std::vector<uint8_t> *Session::result(const std::string &name) const {
  for (size_t i = 0; i < Results.size(); ++i) {
    if (Entry.results[i].name != name)
      continue;
    // A result fed back into its argument lives there after a run (and
    // always, when written in place).
    if (Steps > 0 || InPlace[i])
      if (Slot *slot = const_cast<Session *>(this)->fedBy(i))
        return pullArgument(size_t(slot - Args.data()), nullptr)
                   ? &slot->owned
                   : nullptr;
    return pullResult(i, nullptr) ? &Results[i] : nullptr;
  }
  return nullptr;
}

float Session::scalarResult(const std::string &name) const {
  for (size_t i = 0; i < Results.size(); ++i)
    if (Entry.results[i].name == name && Entry.results[i].type == "f32" &&
        Results[i].size() == 4 && pullResult(i, nullptr)) {
      float v;
      std::memcpy(&v, Results[i].data(), 4);
      return v;
    }
  return NAN;
}

std::vector<std::string> Session::trainableWeights() const {
  std::vector<std::string> names;
  for (const Slot &slot : Args)
    if (slot.desc->role == "weight" && !slot.frozen)
      names.push_back(slot.desc->name);
  return names;
}

bool Session::save(const std::string &path, std::string *error) const {
  if (!pullCheckpointed(error))
    return false;
  gguf::Writer writer = gguf::Writer::fromFile(Model);
  for (const Slot &slot : Args)
    if (slot.desc->role == "weight" && !slot.frozen &&
        !writer.replaceTensor(slot.desc->name, slot.desc->ggmlType,
                              slot.owned))
      return fail(error, "cannot replace tensor '" + slot.desc->name + "'");
  writer.set("qcc.train.steps", gguf::Value::makeU64(Steps));
  return writer.write(path, error);
}


//===----------------------------------------------------------------------===//
// Checkpoints
//===----------------------------------------------------------------------===//

namespace {
constexpr uint32_t kCheckpointVersion = 1;
constexpr const char *kKeyVersion = "qcc.checkpoint.version";
constexpr const char *kKeyEntry = "qcc.checkpoint.entry";
constexpr const char *kKeyStep = "qcc.checkpoint.step_fingerprint";
constexpr const char *kKeyModel = "qcc.checkpoint.model_fingerprint";
constexpr const char *kKeySteps = "qcc.checkpoint.steps";
constexpr const char *kKeyRuns = "qcc.checkpoint.runs";
constexpr const char *kKeyRng = "qcc.checkpoint.rng_state";
constexpr const char *kKeyRoles = "qcc.checkpoint.roles";
} // namespace

/// GGUF ne[] of an argument: its shape reversed (a 0-d value as [1], more
/// than four dimensions folded into the outermost).
static std::vector<int64_t> ggufDims(const ValueDesc &d) {
  std::vector<int64_t> ne(d.shape.rbegin(), d.shape.rend());
  if (ne.empty())
    ne.push_back(1);
  while (ne.size() > gguf::kMaxDims) {
    int64_t last = ne.back();
    ne.pop_back();
    ne.back() *= last;
  }
  return ne;
}

/// The GGUF type an argument is stored as: its format or dtype; raw bytes
/// (i8) for a dtype GGUF has no type for.
static uint32_t ggufType(const ValueDesc &d, std::vector<int64_t> &ne) {
  if (const FormatInfo *info = gguf::lookupTensorType(d.type))
    return info->ggmlId;
  ne = {int64_t(d.bytes)};
  return gguf::lookupTensorType("i8")->ggmlId;
}

bool Session::checkpointed(const Slot &slot) {
  const std::string &role = slot.desc->role;
  return (role == "weight" && !slot.frozen) || role == "param" ||
         role == "state";
}

bool Session::saveCheckpoint(const std::string &path, std::string *error,
                             const std::function<void()> &beforeRename) const {
  if (!pullCheckpointed(error))
    return false;
  gguf::Writer writer;
  writer.protect(Model);
  writer.set(kKeyVersion, gguf::Value::makeU32(kCheckpointVersion));
  writer.set(kKeyEntry, gguf::Value::makeString(Entry.name));
  writer.set(kKeyStep, gguf::Value::makeString(Entry.fingerprint));
  writer.set(kKeyModel, gguf::Value::makeString(ModelFingerprint));
  writer.set(kKeySteps, gguf::Value::makeU64(Steps));
  writer.set(kKeyRuns, gguf::Value::makeU64(Runs));
  writer.set(kKeyRng, gguf::Value::makeU64(Rng.state()));
  std::vector<gguf::Value> roles;
  for (const Slot &slot : Args) {
    if (!checkpointed(slot))
      continue;
    std::vector<int64_t> ne = ggufDims(*slot.desc);
    uint32_t type = ggufType(*slot.desc, ne);
    // Referenced, not copied: the slots outlive write().
    writer.addTensor(slot.desc->name, type, ne, slot.owned.data(),
                     slot.owned.size());
    roles.push_back(gguf::Value::makeString(slot.desc->role));
  }
  writer.set(kKeyRoles,
             gguf::Value::makeArray(gguf::ValueType::String, std::move(roles)));
  std::string message;
  if (!writer.write(path, &message, beforeRename))
    return fail(error, "cannot save checkpoint " + path + ": " + message);
  return true;
}

bool Session::loadCheckpoint(const std::string &path, std::string *error) {
  std::string message;
  std::unique_ptr<gguf::File> file = gguf::File::open(path, &message);
  if (!file)
    return fail(error, "cannot read checkpoint " + path + ": " + message);
  auto bad = [&](const std::string &why) {
    return fail(error, "checkpoint " + path + ": " + why);
  };
  const gguf::Value *version = file->find(kKeyVersion);
  if (!version)
    return bad("not a qcc checkpoint (no " + std::string(kKeyVersion) + ")");
  uint64_t v = 0;
  if (!version->asUInt(v) || v != kCheckpointVersion)
    return bad("checkpoint format version " + version->toString() +
               "; this runtime reads version " +
               std::to_string(kCheckpointVersion));
  auto string = [&](const char *key, std::string &out) {
    const gguf::Value *value = file->find(key);
    if (!value || value->type != gguf::ValueType::String)
      return bad("malformed: " + std::string(key) +
                 " is missing or not a string");
    out = value->str;
    return true;
  };
  auto u64 = [&](const char *key, uint64_t &out) {
    const gguf::Value *value = file->find(key);
    if (!value || value->type != gguf::ValueType::U64)
      return bad("malformed: " + std::string(key) +
                 " is missing or not a u64");
    out = value->u;
    return true;
  };
  std::string entry, stepPrint, modelPrint;
  uint64_t steps, runs, rng;
  if (!string(kKeyEntry, entry) || !string(kKeyStep, stepPrint) ||
      !string(kKeyModel, modelPrint) || !u64(kKeySteps, steps) ||
      !u64(kKeyRuns, runs) || !u64(kKeyRng, rng))
    return false;
  if (entry != Entry.name)
    return bad("it was saved from entry '" + entry + "'; this session runs '" +
               Entry.name + "'");
  if (stepPrint != Entry.fingerprint)
    return bad("it was saved by a different step (manifest fingerprint " +
               stepPrint + ", this step's is " + Entry.fingerprint +
               "): resume with the step library that wrote it");
  if (modelPrint != ModelFingerprint)
    return bad("it was trained on a different model (fingerprint " +
               modelPrint + ", this model's is " + ModelFingerprint +
               "): resume with the same --weights");
  if (steps > runs)
    return bad("malformed: " + std::to_string(steps) + " steps applied in " +
               std::to_string(runs) + " runs");
  // Check every tensor before changing anything.
  std::vector<std::pair<Slot *, const gguf::TensorInfo *>> restore;
  size_t expected = 0;
  for (Slot &slot : Args) {
    if (!checkpointed(slot))
      continue;
    ++expected;
    const ValueDesc &d = *slot.desc;
    const gguf::TensorInfo *t = file->findTensor(d.name);
    if (!t)
      return bad("malformed: it has no tensor '" + d.name + "'");
    std::vector<int64_t> ne = ggufDims(d);
    uint32_t type = ggufType(d, ne);
    if (t->ggmlType != type || t->nbytes != d.bytes ||
        std::vector<int64_t>(t->ne, t->ne + t->nDims) != ne)
      return bad("malformed: tensor '" + d.name + "' is " +
                 (t->format ? std::string(t->format->name) : "?") + " ne " +
                 join(std::vector<int64_t>(t->ne, t->ne + t->nDims)) +
                 "; the step expects " + d.type + " ne " + join(ne));
    restore.emplace_back(&slot, t);
  }
  if (file->tensors().size() != expected)
    return bad("malformed: it holds " +
               std::to_string(file->tensors().size()) +
               " tensors; the step saves " + std::to_string(expected));
  for (auto &[slot, t] : restore) {
    slot->owned.assign(t->data, t->data + t->nbytes);
    slot->hasValue = true;
    hostChanged(size_t(slot - Args.data()));
  }
  Steps = steps;
  Runs = runs;
  Rng.setState(rng);
  return true;
}

//===----------------------------------------------------------------------===//
// LoRA: adapters and merging
//===----------------------------------------------------------------------===//

bool Session::loraPairs(
    std::vector<std::pair<const Slot *, const Slot *>> &pairs,
    std::string *error) const {
  pairs.clear();
  for (const Slot &a : Args) {
    if (a.desc->loraPart != "a")
      continue;
    const Slot *b = nullptr, *w = nullptr;
    for (const Slot &other : Args) {
      if (other.desc->loraPart == "b" &&
          other.desc->loraBase == a.desc->loraBase)
        b = &other;
      if (other.desc->role == "weight" && other.desc->name == a.desc->loraBase)
        w = &other;
    }
    // The compiler checks all of this (StepABI.cpp); a hand-edited manifest
    // must not make the runtime read out of bounds.
    const std::string &base = a.desc->loraBase;
    if (!b || !w)
      return fail(error, "LoRA matrix '" + a.desc->name + "' of '" + base +
                             "' has no " + (b ? "base weight" : "part b"));
    const std::vector<int64_t> &ws = w->desc->shape, &as = a.desc->shape,
                               &bs = b->desc->shape;
    if (ws.size() != 2 || as.size() != 2 || bs.size() != 2 ||
        as[1] != ws[1] || bs[0] != ws[0] || as[0] != bs[1])
      return fail(error, "LoRA matrices of '" + base + "' have shapes " +
                             join(as) + " and " + join(bs) + "; base " +
                             join(ws) + " needs [r, in] and [out, r]");
    pairs.emplace_back(&a, b);
  }
  for (const Slot &b : Args)
    if (b.desc->loraPart == "b") {
      bool paired = false;
      for (auto &p : pairs)
        paired |= p.second == &b;
      if (!paired)
        return fail(error, "LoRA matrix '" + b.desc->name + "' of '" +
                               b.desc->loraBase + "' has no part a");
    }
  return true;
}

/// A param's values as f32.
static std::vector<float> toF32(const ValueDesc &d,
                                const std::vector<uint8_t> &bytes) {
  size_t width = d.type == "f32" ? 4 : 2;
  std::vector<float> out(bytes.size() / width);
  for (size_t i = 0; i < out.size(); ++i) {
    if (width == 4) {
      std::memcpy(&out[i], bytes.data() + 4 * i, 4);
      continue;
    }
    uint16_t h;
    std::memcpy(&h, bytes.data() + 2 * i, 2);
    out[i] = d.type == "f16" ? halfToFloat(h) : bf16ToFloat(h);
  }
  return out;
}

bool Session::saveLoraAdapter(const std::string &path,
                              std::string *error) const {
  if (!pullCheckpointed(error))
    return false;
  std::vector<std::pair<const Slot *, const Slot *>> pairs;
  if (!loraPairs(pairs, error))
    return false;
  if (pairs.empty())
    return fail(error, "the entry '" + Entry.name + "' has no LoRA params "
                       "(qcc.lora.*): there is no adapter to save");
  double alpha = pairs[0].first->desc->loraAlpha;
  for (auto &[a, b] : pairs)
    if (a->desc->loraAlpha != alpha || b->desc->loraAlpha != alpha)
      return fail(error, "the LoRA pairs have different alphas; a llama.cpp "
                         "adapter holds one adapter.lora.alpha per file");
  const gguf::Value *arch = Model.find("general.architecture");
  if (!arch || arch->type != gguf::ValueType::String)
    return fail(error, "the model has no general.architecture, which a "
                       "llama.cpp adapter must repeat");
  gguf::Writer writer;
  writer.protect(Model);
  writer.set("general.architecture", *arch);
  writer.set("general.type", gguf::Value::makeString("adapter"));
  writer.set("adapter.type", gguf::Value::makeString("lora"));
  writer.set("adapter.lora.alpha", gguf::Value::makeF32(float(alpha)));
  writer.set("qcc.train.steps", gguf::Value::makeU64(Steps));
  for (auto &[a, b] : pairs) {
    const std::string &base = a->desc->loraBase;
    if (base == "token_embd.weight")
      return fail(error, "a LoRA of token_embd.weight is not supported: "
                         "llama.cpp expects its pair transposed");
    // A [r, in] row-major is ne [in, r]; B [out, r] is ne [r, out]: the
    // shapes llama.cpp checks (a->ne[0] == W->ne[0], b->ne[1] == W->ne[1],
    // a->ne[1] == b->ne[0]).
    for (const Slot *m : {a, b}) {
      std::vector<int64_t> ne = ggufDims(*m->desc);
      writer.addTensor(base + (m == a ? ".lora_a" : ".lora_b"),
                       ggufType(*m->desc, ne), ne, m->owned.data(),
                       m->owned.size());
    }
  }
  std::string message;
  if (!writer.write(path, &message))
    return fail(error, "cannot save the LoRA adapter " + path + ": " +
                           message);
  return true;
}

bool Session::saveMerged(const std::string &path, std::string *error) const {
  if (!pullCheckpointed(error))
    return false;
  std::vector<std::pair<const Slot *, const Slot *>> pairs;
  if (!loraPairs(pairs, error))
    return false;
  if (pairs.empty())
    return fail(error, "the entry '" + Entry.name + "' has no LoRA params "
                       "(qcc.lora.*): there is nothing to merge (use save)");
  gguf::Writer writer = gguf::Writer::fromFile(Model);
  for (const Slot &slot : Args)
    if (slot.desc->role == "weight" && !slot.frozen &&
        !writer.replaceTensor(slot.desc->name, slot.desc->ggmlType,
                              slot.owned))
      return fail(error, "cannot replace tensor '" + slot.desc->name + "'");
  for (auto &[a, b] : pairs) {
    const std::string &base = a->desc->loraBase;
    const Slot *w = nullptr;
    for (const Slot &slot : Args)
      if (slot.desc->role == "weight" && slot.desc->name == base)
        w = &slot;
    uint32_t type = w->desc->ggmlType;
    if (gguf::isStorageType(type) || !lookupFormat(type))
      return fail(error, "cannot merge into '" + base + "': its type " +
                             w->desc->type + " is not a float or block "
                             "format");
    Format format = Format(type);
    int64_t n = w->desc->shape[0], k = w->desc->shape[1];
    int64_t r = a->desc->shape[0];
    std::vector<float> merged(size_t(n * k));
    decodeToF32(format, w->data(), merged.data(), merged.size());
    std::vector<float> av = toF32(*a->desc, a->owned),
                       bv = toF32(*b->desc, b->owned);
    const double scale = a->desc->loraAlpha / double(r);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < k; ++j) {
        double acc = 0;
        for (int64_t t = 0; t < r; ++t)
          acc += double(bv[i * r + t]) * av[t * k + j];
        merged[i * k + j] += float(scale * acc);
      }
    std::vector<uint8_t> blocks(encodedBytes(format, merged.size()));
    std::string message;
    if (!encodeFromF32(format, merged.data(), blocks.data(), size_t(n),
                       size_t(k), nullptr, &message))
      return fail(error, "cannot re-encode '" + base + "' as " +
                             w->desc->type + ": " + message);
    writer.replaceTensor(base, type, std::move(blocks));
  }
  std::string message;
  if (!writer.write(path, &message))
    return fail(error, "cannot save the merged model " + path + ": " +
                           message);
  return true;
}

} // namespace qcc::rt
