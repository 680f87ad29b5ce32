//===- fake_cuda_driver.cpp - A CUDA driver over host memory, for tests ---===//
//
// Built only for the tests (libfake_cuda_driver.so, loaded through
// QCC_CUDA_DRIVER): it exports the driver entry points qcc uses
// (qcc/Runtime/CudaDriverFunctions.def) with the real ABI and error codes,
// implemented on the host:
//
//  - device memory is host memory (malloc); copies check that the device
//    side lies inside a live allocation;
//  - cuInit must come first, and calls that need a context fail with
//    CUDA_ERROR_INVALID_CONTEXT unless the primary context is current on
//    the calling thread (so the tests see that qcc makes it current);
//  - cuModuleLoadData[Ex] accepts any image and records it; kernels are
//    found by parsing PTX `.entry NAME(.param .TYPE ...)` declarations, which
//    give each parameter's size;
//  - cuLaunchKernel records the function, dimensions, stream and the bytes
//    of every parameter; the kernel `qcc_fake_train` (test/runtime/cuda/
//    fake_cuda_step.cpp) is executed on the host, every other one only
//    recorded;
//  - streams and events are handles; all work is synchronous;
//  - fake_cuda_fail(symbol, result, skip) makes a later call of `symbol`
//    return `result`, to test error propagation.
//
//===----------------------------------------------------------------------===//

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#define EXPORT extern "C" __attribute__((visibility("default")))

using CUresult = int;
using CUdeviceptr = unsigned long long;

enum : CUresult {
  CUDA_SUCCESS = 0,
  CUDA_ERROR_INVALID_VALUE = 1,
  CUDA_ERROR_OUT_OF_MEMORY = 2,
  CUDA_ERROR_NOT_INITIALIZED = 3,
  CUDA_ERROR_NO_DEVICE = 100,
  CUDA_ERROR_INVALID_DEVICE = 101,
  CUDA_ERROR_INVALID_CONTEXT = 201,
  CUDA_ERROR_INVALID_PTX = 218,
  CUDA_ERROR_INVALID_HANDLE = 400,
  CUDA_ERROR_NOT_FOUND = 500,
  CUDA_ERROR_LAUNCH_FAILED = 719,
};

namespace {

struct Function {
  std::string name;
  std::vector<size_t> paramSizes;
};
struct Module {
  std::string image;
  std::vector<std::unique_ptr<Function>> functions;
};
struct Launch {
  std::string kernel;
  unsigned dims[7];
  void *stream;
  std::vector<std::vector<uint8_t>> params;
};

std::recursive_mutex mutex;
bool initialized = false;
int primaryContext = 0; // its address is the context handle
int retainCount = 0;
thread_local void *current = nullptr;
std::map<uintptr_t, size_t> allocations;
std::set<void *> streams, events;
std::set<Module *> modules;
std::vector<Launch> launches;
std::map<std::string, int> calls;
struct Injection {
  CUresult result;
  int skip;
};
std::map<std::string, Injection> injections;
std::string jitLog, lastImage;
int lastOptLevel = -1;

/// Counts the call and returns an injected failure, if one is due.
CUresult enter(const char *symbol) {
  ++calls[symbol];
  auto it = injections.find(symbol);
  if (it == injections.end())
    return CUDA_SUCCESS;
  if (it->second.skip-- > 0)
    return CUDA_SUCCESS;
  CUresult r = it->second.result;
  injections.erase(it);
  return r;
}

#define ENTER(symbol, needsContext)                                            \
  std::lock_guard<std::recursive_mutex> lock(mutex);                           \
  if (CUresult injected = enter(symbol))                                       \
    return injected;                                                           \
  if (!initialized)                                                            \
    return CUDA_ERROR_NOT_INITIALIZED;                                         \
  if ((needsContext) && current != &primaryContext)                            \
    return CUDA_ERROR_INVALID_CONTEXT;

/// Whether [p, p + n) lies inside one live allocation.
bool isDevice(uintptr_t p, size_t n) {
  auto it = allocations.upper_bound(p);
  if (it == allocations.begin())
    return false;
  --it;
  return p >= it->first && p + n <= it->first + it->second;
}

size_t ptxParamSize(const std::string &decl) {
  // ".param .u64 name", ".param .align 8 .b8 name[16]"
  size_t bracket = decl.find('[');
  if (bracket != std::string::npos)
    return std::strtoull(decl.c_str() + bracket + 1, nullptr, 10);
  for (auto [type, size] : std::initializer_list<std::pair<const char *, size_t>>{
           {"64", 8}, {"32", 4}, {"16", 2}, {"8", 1}}) {
    for (const char *prefix : {".u", ".s", ".b", ".f"})
      if (decl.find(std::string(prefix) + type + " ") != std::string::npos)
        return size;
  }
  return 8;
}

/// The `.entry` functions of a PTX text and their parameter sizes.
void parsePtx(Module &m) {
  const std::string &s = m.image;
  for (size_t pos = s.find(".entry"); pos != std::string::npos;
       pos = s.find(".entry", pos + 6)) {
    size_t nameStart = s.find_first_not_of(" \t", pos + 6);
    size_t open = s.find('(', nameStart);
    size_t close = s.find(')', open);
    if (nameStart == std::string::npos || open == std::string::npos ||
        close == std::string::npos)
      break;
    auto f = std::make_unique<Function>();
    f->name = s.substr(nameStart, s.find_first_of(" \t\n(", nameStart) -
                                      nameStart);
    std::string params = s.substr(open + 1, close - open - 1);
    size_t at = 0;
    while ((at = params.find(".param", at)) != std::string::npos) {
      size_t end = params.find(',', at);
      std::string decl = params.substr(at, end == std::string::npos
                                               ? std::string::npos
                                               : end - at) + " ";
      f->paramSizes.push_back(ptxParamSize(decl));
      at += 6;
    }
    m.functions.push_back(std::move(f));
  }
}

/// The one kernel the fake executes (see fake_cuda_step.cpp): params
/// (u64 w, u64 m, u64 x, f32 lr, u32 n, u32 wbytes, u64 w_out, u64 m_out,
/// u64 loss). m_out = m + x; loss = lr * sum(m_out); when the loss is
/// finite, w_out = w with its third byte (the first q8_0 quant) plus one.
void runFakeTrain(void **params) {
  auto ptr = [&](int i) { return *static_cast<uint8_t **>(params[i]); };
  const float *m = reinterpret_cast<const float *>(ptr(1));
  const float *x = reinterpret_cast<const float *>(ptr(2));
  float lr = *static_cast<float *>(params[3]);
  uint32_t n = *static_cast<uint32_t *>(params[4]);
  uint32_t wbytes = *static_cast<uint32_t *>(params[5]);
  float *mOut = reinterpret_cast<float *>(ptr(7));
  float sum = 0;
  for (uint32_t i = 0; i < n; ++i) {
    mOut[i] = m[i] + x[i];
    sum += mOut[i];
  }
  float loss = lr * sum;
  std::memcpy(ptr(8), &loss, 4);
  if (std::isfinite(loss)) {
    std::memmove(ptr(6), ptr(0), wbytes);
    ptr(6)[2] = uint8_t(ptr(6)[2] + 1);
  }
}

} // namespace

//===----------------------------------------------------------------------===//
// Driver API
//===----------------------------------------------------------------------===//

EXPORT CUresult cuGetErrorName(CUresult r, const char **name) {
  static const std::map<CUresult, const char *> names = {
      {0, "CUDA_SUCCESS"},
      {1, "CUDA_ERROR_INVALID_VALUE"},
      {2, "CUDA_ERROR_OUT_OF_MEMORY"},
      {3, "CUDA_ERROR_NOT_INITIALIZED"},
      {100, "CUDA_ERROR_NO_DEVICE"},
      {101, "CUDA_ERROR_INVALID_DEVICE"},
      {201, "CUDA_ERROR_INVALID_CONTEXT"},
      {218, "CUDA_ERROR_INVALID_PTX"},
      {400, "CUDA_ERROR_INVALID_HANDLE"},
      {500, "CUDA_ERROR_NOT_FOUND"},
      {719, "CUDA_ERROR_LAUNCH_FAILED"}};
  auto it = names.find(r);
  if (it == names.end()) {
    *name = nullptr;
    return CUDA_ERROR_INVALID_VALUE;
  }
  *name = it->second;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuGetErrorString(CUresult r, const char **text) {
  static const std::map<CUresult, const char *> texts = {
      {0, "no error"},
      {1, "invalid argument"},
      {2, "out of memory"},
      {3, "initialization error"},
      {100, "no CUDA-capable device is detected"},
      {101, "invalid device ordinal"},
      {201, "invalid device context"},
      {218, "a PTX JIT compilation failed"},
      {400, "invalid resource handle"},
      {500, "named symbol not found"},
      {719, "unspecified launch failure"}};
  auto it = texts.find(r);
  if (it == texts.end()) {
    *text = nullptr;
    return CUDA_ERROR_INVALID_VALUE;
  }
  *text = it->second;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuInit(unsigned flags) {
  std::lock_guard<std::recursive_mutex> lock(mutex);
  if (CUresult r = enter("cuInit"))
    return r;
  if (flags)
    return CUDA_ERROR_INVALID_VALUE;
  initialized = true;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDriverGetVersion(int *v) {
  ENTER("cuDriverGetVersion", false);
  *v = 13000;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetCount(int *n) {
  ENTER("cuDeviceGetCount", false);
  *n = 1;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGet(int *device, int ordinal) {
  ENTER("cuDeviceGet", false);
  if (ordinal != 0)
    return CUDA_ERROR_INVALID_DEVICE;
  *device = 0;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetName(char *name, int len, int device) {
  ENTER("cuDeviceGetName", false);
  if (device != 0)
    return CUDA_ERROR_INVALID_DEVICE;
  std::strncpy(name, "qcc fake CUDA device", size_t(len));
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetAttribute(int *value, int attribute, int device) {
  ENTER("cuDeviceGetAttribute", false);
  if (device != 0)
    return CUDA_ERROR_INVALID_DEVICE;
  *value = attribute == 75 ? 8 : attribute == 76 ? 0 : 0;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRetain(void **ctx, int device) {
  ENTER("cuDevicePrimaryCtxRetain", false);
  if (device != 0)
    return CUDA_ERROR_INVALID_DEVICE;
  ++retainCount;
  *ctx = &primaryContext;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRelease_v2(int device) {
  ENTER("cuDevicePrimaryCtxRelease_v2", false);
  if (device != 0 || retainCount == 0)
    return CUDA_ERROR_INVALID_DEVICE;
  --retainCount;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxGetCurrent(void **ctx) {
  ENTER("cuCtxGetCurrent", false);
  *ctx = current;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxSetCurrent(void *ctx) {
  ENTER("cuCtxSetCurrent", false);
  if (ctx && ctx != &primaryContext)
    return CUDA_ERROR_INVALID_CONTEXT;
  current = ctx;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxSynchronize() {
  ENTER("cuCtxSynchronize", true);
  return CUDA_SUCCESS;
}

static CUresult allocate(CUdeviceptr *p, size_t n) {
  if (!n)
    return CUDA_ERROR_INVALID_VALUE;
  void *mem = std::calloc(1, n);
  if (!mem)
    return CUDA_ERROR_OUT_OF_MEMORY;
  allocations[reinterpret_cast<uintptr_t>(mem)] = n;
  *p = reinterpret_cast<CUdeviceptr>(mem);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
  ENTER("cuMemAlloc_v2", true);
  return allocate(p, n);
}

EXPORT CUresult cuMemAllocManaged(CUdeviceptr *p, size_t n, unsigned flags) {
  ENTER("cuMemAllocManaged", true);
  if (flags != 1 && flags != 2)
    return CUDA_ERROR_INVALID_VALUE;
  return allocate(p, n);
}

EXPORT CUresult cuMemFree_v2(CUdeviceptr p) {
  ENTER("cuMemFree_v2", true);
  auto it = allocations.find(uintptr_t(p));
  if (it == allocations.end())
    return CUDA_ERROR_INVALID_VALUE;
  std::free(reinterpret_cast<void *>(p));
  allocations.erase(it);
  return CUDA_SUCCESS;
}

static bool validStream(void *s) { return !s || streams.count(s); }

EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src,
                                     size_t n, void *stream) {
  ENTER("cuMemcpyHtoDAsync_v2", true);
  if (!validStream(stream))
    return CUDA_ERROR_INVALID_HANDLE;
  if (!isDevice(uintptr_t(dst), n) || isDevice(uintptr_t(src), n))
    return CUDA_ERROR_INVALID_VALUE;
  std::memcpy(reinterpret_cast<void *>(dst), src, n);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n,
                                     void *stream) {
  ENTER("cuMemcpyDtoHAsync_v2", true);
  if (!validStream(stream))
    return CUDA_ERROR_INVALID_HANDLE;
  if (!isDevice(uintptr_t(src), n) || isDevice(uintptr_t(dst), n))
    return CUDA_ERROR_INVALID_VALUE;
  std::memcpy(dst, reinterpret_cast<void *>(src), n);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t n,
                              void *stream) {
  ENTER("cuMemcpyAsync", true);
  if (!validStream(stream))
    return CUDA_ERROR_INVALID_HANDLE;
  std::memmove(reinterpret_cast<void *>(dst), reinterpret_cast<void *>(src),
               n);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemsetD16Async(CUdeviceptr dst, unsigned short v, size_t n,
                                 void *stream) {
  ENTER("cuMemsetD16Async", true);
  if (!validStream(stream))
    return CUDA_ERROR_INVALID_HANDLE;
  if (!isDevice(uintptr_t(dst), 2 * n))
    return CUDA_ERROR_INVALID_VALUE;
  for (size_t i = 0; i < n; ++i)
    std::memcpy(reinterpret_cast<uint8_t *>(dst) + 2 * i, &v, 2);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned v, size_t n,
                                 void *stream) {
  ENTER("cuMemsetD32Async", true);
  if (!validStream(stream))
    return CUDA_ERROR_INVALID_HANDLE;
  if (!isDevice(uintptr_t(dst), 4 * n))
    return CUDA_ERROR_INVALID_VALUE;
  for (size_t i = 0; i < n; ++i)
    std::memcpy(reinterpret_cast<uint8_t *>(dst) + 4 * i, &v, 4);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemHostRegister_v2(void *, size_t, unsigned) {
  ENTER("cuMemHostRegister_v2", true);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemHostUnregister(void *) {
  ENTER("cuMemHostUnregister", true);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamCreate(void **s, unsigned flags) {
  ENTER("cuStreamCreate", true);
  if (flags > 1)
    return CUDA_ERROR_INVALID_VALUE;
  *s = new char;
  streams.insert(*s);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamDestroy_v2(void *s) {
  ENTER("cuStreamDestroy_v2", false);
  if (!streams.erase(s))
    return CUDA_ERROR_INVALID_HANDLE;
  delete static_cast<char *>(s);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamSynchronize(void *s) {
  ENTER("cuStreamSynchronize", false);
  return validStream(s) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

EXPORT CUresult cuStreamWaitEvent(void *s, void *e, unsigned) {
  ENTER("cuStreamWaitEvent", false);
  return validStream(s) && events.count(e) ? CUDA_SUCCESS
                                           : CUDA_ERROR_INVALID_HANDLE;
}

EXPORT CUresult cuEventCreate(void **e, unsigned) {
  ENTER("cuEventCreate", true);
  *e = new char;
  events.insert(*e);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuEventDestroy_v2(void *e) {
  ENTER("cuEventDestroy_v2", false);
  if (!events.erase(e))
    return CUDA_ERROR_INVALID_HANDLE;
  delete static_cast<char *>(e);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuEventRecord(void *e, void *s) {
  ENTER("cuEventRecord", false);
  return events.count(e) && validStream(s) ? CUDA_SUCCESS
                                           : CUDA_ERROR_INVALID_HANDLE;
}

EXPORT CUresult cuEventSynchronize(void *e) {
  ENTER("cuEventSynchronize", false);
  return events.count(e) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

static CUresult loadModule(void **out, const void *image) {
  if (!image)
    return CUDA_ERROR_INVALID_VALUE;
  auto *m = new Module();
  m->image = static_cast<const char *>(image);
  lastImage = m->image;
  parsePtx(*m);
  modules.insert(m);
  *out = m;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuModuleLoadData(void **m, const void *image) {
  ENTER("cuModuleLoadData", true);
  return loadModule(m, image);
}

EXPORT CUresult cuModuleLoadDataEx(void **m, const void *image, unsigned n,
                                   int *options, void **values) {
  std::lock_guard<std::recursive_mutex> lock(mutex);
  char *log = nullptr;
  size_t logSize = 0;
  for (unsigned i = 0; i < n; ++i) {
    if (options[i] == 5)
      log = static_cast<char *>(values[i]);
    if (options[i] == 6)
      logSize = reinterpret_cast<uintptr_t>(values[i]);
    if (options[i] == 7)
      lastOptLevel = int(reinterpret_cast<uintptr_t>(values[i]));
  }
  if (CUresult injected = enter("cuModuleLoadDataEx")) {
    if (log && logSize)
      std::strncpy(log, jitLog.c_str(), logSize - 1);
    return injected;
  }
  if (!initialized)
    return CUDA_ERROR_NOT_INITIALIZED;
  if (current != &primaryContext)
    return CUDA_ERROR_INVALID_CONTEXT;
  return loadModule(m, image);
}

EXPORT CUresult cuModuleUnload(void *m) {
  ENTER("cuModuleUnload", false);
  auto *mod = static_cast<Module *>(m);
  if (!modules.erase(mod))
    return CUDA_ERROR_INVALID_HANDLE;
  delete mod;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuModuleGetFunction(void **f, void *m, const char *name) {
  ENTER("cuModuleGetFunction", false);
  auto *mod = static_cast<Module *>(m);
  if (!modules.count(mod))
    return CUDA_ERROR_INVALID_HANDLE;
  for (auto &fn : mod->functions)
    if (fn->name == name) {
      *f = fn.get();
      return CUDA_SUCCESS;
    }
  return CUDA_ERROR_NOT_FOUND;
}

EXPORT CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz,
                               unsigned bx, unsigned by, unsigned bz,
                               unsigned smem, void *stream, void **params,
                               void **extra) {
  ENTER("cuLaunchKernel", true);
  auto *fn = static_cast<Function *>(f);
  bool known = false;
  for (Module *m : modules)
    for (auto &candidate : m->functions)
      known |= candidate.get() == fn;
  if (!known || !validStream(stream))
    return CUDA_ERROR_INVALID_HANDLE;
  if (!gx || !gy || !gz || !bx || !by || !bz || bx * by * bz > 1024 ||
      (extra && params))
    return CUDA_ERROR_INVALID_VALUE;
  Launch l{fn->name, {gx, gy, gz, bx, by, bz, smem}, stream, {}};
  for (size_t i = 0; i < fn->paramSizes.size(); ++i) {
    const uint8_t *p = static_cast<const uint8_t *>(params[i]);
    l.params.emplace_back(p, p + fn->paramSizes[i]);
  }
  launches.push_back(std::move(l));
  if (fn->name == "qcc_fake_train")
    runFakeTrain(params);
  return CUDA_SUCCESS;
}

//===----------------------------------------------------------------------===//
// Test controls
//===----------------------------------------------------------------------===//

EXPORT void fake_cuda_reset() {
  std::lock_guard<std::recursive_mutex> lock(mutex);
  launches.clear();
  calls.clear();
  injections.clear();
  jitLog.clear();
}

/// The call of `symbol` after the next `skip` ones returns `result` (once).
EXPORT void fake_cuda_fail(const char *symbol, int result, int skip) {
  std::lock_guard<std::recursive_mutex> lock(mutex);
  injections[symbol] = {result, skip};
}

EXPORT void fake_cuda_set_jit_log(const char *log) {
  std::lock_guard<std::recursive_mutex> lock(mutex);
  jitLog = log;
}

EXPORT int fake_cuda_calls(const char *symbol) {
  std::lock_guard<std::recursive_mutex> lock(mutex);
  auto it = calls.find(symbol);
  return it == calls.end() ? 0 : it->second;
}

EXPORT int fake_cuda_live_allocations() {
  std::lock_guard<std::recursive_mutex> lock(mutex);
  return int(allocations.size());
}

EXPORT int fake_cuda_live_modules() {
  std::lock_guard<std::recursive_mutex> lock(mutex);
  return int(modules.size());
}

EXPORT int fake_cuda_live_streams() {
  std::lock_guard<std::recursive_mutex> lock(mutex);
  return int(streams.size());
}

EXPORT int fake_cuda_is_device(const void *p, size_t n) {
  std::lock_guard<std::recursive_mutex> lock(mutex);
  return isDevice(reinterpret_cast<uintptr_t>(p), n);
}

EXPORT const char *fake_cuda_last_image() { return lastImage.c_str(); }
EXPORT int fake_cuda_last_opt_level() { return lastOptLevel; }

EXPORT int fake_cuda_launch_count() {
  std::lock_guard<std::recursive_mutex> lock(mutex);
  return int(launches.size());
}

EXPORT const char *fake_cuda_launch_kernel(int i) {
  return launches.at(size_t(i)).kernel.c_str();
}

/// grid x, y, z, block x, y, z, shared bytes.
EXPORT void fake_cuda_launch_dims(int i, unsigned *out) {
  std::memcpy(out, launches.at(size_t(i)).dims, sizeof(unsigned) * 7);
}

EXPORT void *fake_cuda_launch_stream(int i) {
  return launches.at(size_t(i)).stream;
}

EXPORT int fake_cuda_launch_param_count(int i) {
  return int(launches.at(size_t(i)).params.size());
}

/// Copies parameter `p` of launch `i` into `out` (up to `cap` bytes) and
/// returns its size.
EXPORT size_t fake_cuda_launch_param(int i, int p, void *out, size_t cap) {
  const std::vector<uint8_t> &bytes = launches.at(size_t(i)).params.at(size_t(p));
  std::memcpy(out, bytes.data(), std::min(cap, bytes.size()));
  return bytes.size();
}
