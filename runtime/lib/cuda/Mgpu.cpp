//===- Mgpu.cpp - MLIR's mgpu runtime wrappers over qcc's CUDA loader -----===//
//
// See qcc/Runtime/CudaStepRuntime.h. Linked into CUDA step libraries; the
// archive is compiled with hidden visibility, so only the mgpu* functions
// and qcc_cuda_take_error are exported and this copy of the loader never
// interposes on the host's.
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/CudaStepRuntime.h"

#include "qcc/Runtime/Cuda.h"

#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

using namespace qcc::cuda;

namespace {

/// std::to_string would give this library STB_GNU_UNIQUE symbols (its digit
/// table), which make a step library that links it impossible to unload.
std::string decimal(long long v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%lld", v);
  return buf;
}

std::mutex errorMutex;
std::string pendingError; // the first failure since the last take
std::string takenError;   // what qcc_cuda_take_error last returned

void recordError(const std::string &message) {
  std::lock_guard<std::mutex> lock(errorMutex);
  if (pendingError.empty())
    pendingError = message;
}

/// The driver with the primary context current, or null (error recorded).
const Driver *ready(const char *what) {
  std::string error;
  const Driver *d = Driver::instance(&error);
  if (d && d->makeCurrent(&error))
    return d;
  recordError(std::string(what) + ": " + error);
  return nullptr;
}

/// Records a failed driver call; true when `result` is CUDA_SUCCESS.
bool ok(const Driver *d, CUresult result, const std::string &what) {
  std::string error;
  if (d->check(result, what, &error))
    return true;
  recordError(error);
  return false;
}

/// A module whose image is loaded on first use (mgpuModuleLoad* run in a
/// global constructor of the step library, when it is dlopen'ed).
struct LazyModule {
  const void *image = nullptr;
  int optLevel = 4;
  std::mutex mutex;
  bool tried = false;
  CUmodule module = nullptr;
  std::unordered_map<std::string, CUfunction> functions;
};

CUstream asStream(void *s) { return static_cast<CUstream>(s); }
CUevent asEvent(void *e) { return static_cast<CUevent>(e); }
CUdeviceptr asDevice(void *p) { return reinterpret_cast<CUdeviceptr>(p); }

} // namespace

extern "C" void *mgpuModuleLoad(void *data, size_t /*gpuBlobSize*/) {
  auto *m = new LazyModule();
  m->image = data;
  return m;
}

extern "C" void *mgpuModuleLoadJIT(void *data, int optLevel) {
  auto *m = new LazyModule();
  m->image = data;
  m->optLevel = optLevel;
  return m;
}

extern "C" void mgpuModuleUnload(void *module) {
  auto *m = static_cast<LazyModule *>(module);
  if (!m)
    return;
  if (m->module) {
    // Errors are ignored: this runs in a destructor, possibly at exit.
    std::string error;
    if (const Driver *d = Driver::instance(&error); d && d->makeCurrent(&error))
      d->api().cuModuleUnload(m->module);
  }
  delete m;
}

extern "C" void *mgpuModuleGetFunction(void *module, const char *name) {
  auto *m = static_cast<LazyModule *>(module);
  if (!m || !name) {
    recordError("mgpuModuleGetFunction: no module");
    return nullptr;
  }
  std::lock_guard<std::mutex> lock(m->mutex);
  auto it = m->functions.find(name);
  if (it != m->functions.end())
    return it->second;
  const Driver *d = ready("loading the step's GPU module");
  if (!d)
    return nullptr;
  if (!m->tried) {
    m->tried = true;
    std::string error;
    if (!loadModuleImage(*d, m->image, m->optLevel, &m->module, &error))
      recordError("loading the step's GPU module: " + error);
  }
  if (!m->module) {
    recordError(std::string("kernel '") + name +
                "': the step's GPU module did not load");
    return nullptr;
  }
  CUfunction f = nullptr;
  if (!ok(d, d->api().cuModuleGetFunction(&f, m->module, name),
          std::string("cuModuleGetFunction(") + name + ")"))
    return nullptr;
  m->functions.emplace(name, f);
  return f;
}

extern "C" void mgpuLaunchKernel(void *function, intptr_t gridX,
                                 intptr_t gridY, intptr_t gridZ,
                                 intptr_t blockX, intptr_t blockY,
                                 intptr_t blockZ, int32_t smem, void *stream,
                                 void **params, void **extra,
                                 size_t /*paramsCount*/) {
  if (!function) {
    recordError("cuLaunchKernel: no kernel (an earlier failure)");
    return;
  }
  for (intptr_t v : {gridX, gridY, gridZ, blockX, blockY, blockZ})
    if (v < 1 || uint64_t(v) > 0xffffffffu) {
      recordError("cuLaunchKernel: launch dimension " + decimal(v) +
                  " out of range");
      return;
    }
  const Driver *d = ready("cuLaunchKernel");
  if (!d)
    return;
  ok(d,
     d->api().cuLaunchKernel(static_cast<CUfunction>(function), unsigned(gridX),
                             unsigned(gridY), unsigned(gridZ), unsigned(blockX),
                             unsigned(blockY), unsigned(blockZ), unsigned(smem),
                             asStream(stream), params, extra),
     "cuLaunchKernel");
}

extern "C" void *mgpuStreamCreate(void) {
  const Driver *d = ready("cuStreamCreate");
  CUstream s = nullptr;
  if (d)
    ok(d, d->api().cuStreamCreate(&s, CU_STREAM_NON_BLOCKING),
       "cuStreamCreate");
  return s;
}

extern "C" void mgpuStreamDestroy(void *stream) {
  if (!stream)
    return;
  if (const Driver *d = ready("cuStreamDestroy_v2"))
    ok(d, d->api().cuStreamDestroy(asStream(stream)), "cuStreamDestroy_v2");
}

extern "C" void mgpuStreamSynchronize(void *stream) {
  if (const Driver *d = ready("cuStreamSynchronize"))
    ok(d, d->api().cuStreamSynchronize(asStream(stream)),
       "cuStreamSynchronize");
}

extern "C" void mgpuStreamWaitEvent(void *stream, void *event) {
  if (const Driver *d = ready("cuStreamWaitEvent"))
    ok(d, d->api().cuStreamWaitEvent(asStream(stream), asEvent(event), 0),
       "cuStreamWaitEvent");
}

extern "C" void *mgpuEventCreate(void) {
  const Driver *d = ready("cuEventCreate");
  CUevent e = nullptr;
  if (d)
    ok(d, d->api().cuEventCreate(&e, CU_EVENT_DISABLE_TIMING), "cuEventCreate");
  return e;
}

extern "C" void mgpuEventDestroy(void *event) {
  if (!event)
    return;
  if (const Driver *d = ready("cuEventDestroy_v2"))
    ok(d, d->api().cuEventDestroy(asEvent(event)), "cuEventDestroy_v2");
}

extern "C" void mgpuEventSynchronize(void *event) {
  if (const Driver *d = ready("cuEventSynchronize"))
    ok(d, d->api().cuEventSynchronize(asEvent(event)), "cuEventSynchronize");
}

extern "C" void mgpuEventRecord(void *event, void *stream) {
  if (const Driver *d = ready("cuEventRecord"))
    ok(d, d->api().cuEventRecord(asEvent(event), asStream(stream)),
       "cuEventRecord");
}

extern "C" void *mgpuMemAlloc(uint64_t sizeBytes, void * /*stream*/,
                              bool isHostShared) {
  const Driver *d = ready("mgpuMemAlloc");
  if (!d)
    return nullptr;
  CUdeviceptr p = 0;
  size_t n = sizeBytes ? size_t(sizeBytes) : 1;
  if (isHostShared)
    ok(d, d->api().cuMemAllocManaged(&p, n, CU_MEM_ATTACH_GLOBAL),
       "cuMemAllocManaged(" + decimal(sizeBytes) + " bytes)");
  else
    ok(d, d->api().cuMemAlloc(&p, n),
       "cuMemAlloc_v2(" + decimal(sizeBytes) + " bytes)");
  return reinterpret_cast<void *>(p);
}

extern "C" void mgpuMemFree(void *ptr, void * /*stream*/) {
  if (!ptr)
    return;
  if (const Driver *d = ready("cuMemFree_v2"))
    ok(d, d->api().cuMemFree(asDevice(ptr)), "cuMemFree_v2");
}

extern "C" void mgpuMemcpy(void *dst, void *src, size_t sizeBytes,
                           void *stream) {
  if (!sizeBytes)
    return;
  if (!dst || !src) {
    recordError("cuMemcpyAsync: null pointer (an earlier failure)");
    return;
  }
  if (const Driver *d = ready("cuMemcpyAsync"))
    ok(d,
       d->api().cuMemcpyAsync(asDevice(dst), asDevice(src), sizeBytes,
                              asStream(stream)),
       "cuMemcpyAsync(" + decimal(sizeBytes) + " bytes)");
}

extern "C" void mgpuMemset32(void *dst, unsigned int value, size_t count,
                             void *stream) {
  if (!count)
    return;
  if (!dst) {
    recordError("cuMemsetD32Async: null pointer (an earlier failure)");
    return;
  }
  if (const Driver *d = ready("cuMemsetD32Async"))
    ok(d,
       d->api().cuMemsetD32Async(asDevice(dst), value, count, asStream(stream)),
       "cuMemsetD32Async");
}

extern "C" void mgpuMemset16(void *dst, unsigned short value, size_t count,
                             void *stream) {
  if (!count)
    return;
  if (!dst) {
    recordError("cuMemsetD16Async: null pointer (an earlier failure)");
    return;
  }
  if (const Driver *d = ready("cuMemsetD16Async"))
    ok(d,
       d->api().cuMemsetD16Async(asDevice(dst), value, count, asStream(stream)),
       "cuMemsetD16Async");
}

extern "C" void mgpuMemHostRegister(void *ptr, uint64_t sizeBytes) {
  if (const Driver *d = ready("cuMemHostRegister_v2"))
    ok(d, d->api().cuMemHostRegister(ptr, size_t(sizeBytes), 0),
       "cuMemHostRegister_v2");
}

extern "C" void mgpuMemHostUnregister(void *ptr) {
  if (const Driver *d = ready("cuMemHostUnregister"))
    ok(d, d->api().cuMemHostUnregister(ptr), "cuMemHostUnregister");
}

extern "C" void mgpuSetDefaultDevice(int32_t device) {
  if (device != 0)
    recordError("mgpuSetDefaultDevice(" + decimal(device) +
                "): qcc runs on device 0 only");
}

extern "C" const char *qcc_cuda_take_error(void) {
  std::lock_guard<std::mutex> lock(errorMutex);
  if (pendingError.empty())
    return nullptr;
  takenError = std::move(pendingError);
  pendingError.clear();
  return takenError.c_str();
}
