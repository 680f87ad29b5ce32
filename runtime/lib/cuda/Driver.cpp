//===- Driver.cpp - The CUDA driver, loaded at run time -------------------===//

#include "qcc/Runtime/Cuda.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <mutex>
#include <utility>

namespace qcc::cuda {

/// std::to_string would give this library STB_GNU_UNIQUE symbols (its digit
/// table), which make a step library that links it impossible to unload.
static std::string decimal(long long v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%lld", v);
  return buf;
}

static bool fail(std::string *error, std::string message) {
  if (error)
    *error = std::move(message);
  return false;
}

std::string Driver::defaultPath() {
  const char *env = std::getenv("QCC_CUDA_DRIVER");
  return env && *env ? env : "libcuda.so.1";
}

std::unique_ptr<Driver> Driver::load(const std::string &path,
                                     std::string *error) {
  std::unique_ptr<Driver> d(new Driver());
  d->Path = path;
  dlerror();
  d->Handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!d->Handle) {
    const char *why = dlerror();
    fail(error, std::string("no CUDA driver found: ") +
                    (why ? why : ("cannot load " + path).c_str()));
    return nullptr;
  }
#define QCC_CUDA_FN(name, symbol, ret, params)                                 \
  d->Api.name = reinterpret_cast<ret(*) params>(dlsym(d->Handle, symbol));     \
  if (!d->Api.name) {                                                          \
    fail(error, "the CUDA driver " + path + " has no " + symbol +              \
                    " (too old a driver?)");                                   \
    return nullptr;                                                            \
  }
#include "qcc/Runtime/CudaDriverFunctions.def"

  if (!d->check(d->Api.cuInit(0), "cuInit", error) ||
      !d->check(d->Api.cuDeviceGet(&d->Device, 0), "cuDeviceGet(0)", error) ||
      !d->check(d->Api.cuDevicePrimaryCtxRetain(&d->Context, d->Device),
                "cuDevicePrimaryCtxRetain", error)) {
    d->Context = nullptr;
    if (error)
      *error = "the CUDA driver " + path + " has no usable device: " + *error;
    return nullptr;
  }
  return d;
}

Driver *Driver::instance(std::string *error) {
  // Loaded once per process (per copy of this loader); never unloaded:
  // step libraries' destructors may still call into it at exit.
  static std::once_flag once;
  static Driver *driver = nullptr;
  static std::string failure;
  std::call_once(once, [] {
    driver = load(defaultPath(), &failure).release();
  });
  if (!driver)
    fail(error, failure);
  return driver;
}

Driver::~Driver() {
  if (Context)
    Api.cuDevicePrimaryCtxRelease(Device);
}

bool Driver::makeCurrent(std::string *error) const {
  CUcontext current = nullptr;
  if (Api.cuCtxGetCurrent(&current) == CUDA_SUCCESS && current == Context)
    return true;
  return check(Api.cuCtxSetCurrent(Context), "cuCtxSetCurrent", error);
}

std::string Driver::errorText(CUresult result) const {
  const char *name = nullptr, *text = nullptr;
  if (Api.cuGetErrorName(result, &name) != CUDA_SUCCESS || !name)
    return "CUDA error " + decimal(result);
  std::string out = name;
  if (Api.cuGetErrorString(result, &text) == CUDA_SUCCESS && text)
    out += std::string(" (") + text + ")";
  return out;
}

bool Driver::check(CUresult result, const std::string &what,
                   std::string *error) const {
  if (result == CUDA_SUCCESS)
    return true;
  return fail(error, what + " failed: " + errorText(result));
}

std::string Driver::deviceName() const {
  char name[256] = {};
  if (Api.cuDeviceGetName(name, sizeof name - 1, Device) != CUDA_SUCCESS)
    return "?";
  return name;
}

std::string Driver::computeCapability() const {
  int major = 0, minor = 0;
  Api.cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                           Device);
  Api.cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                           Device);
  return "sm_" + decimal(major) + decimal(minor);
}

//===----------------------------------------------------------------------===//
// Buffers, streams, modules, launches
//===----------------------------------------------------------------------===//

DeviceBuffer &DeviceBuffer::operator=(DeviceBuffer &&other) noexcept {
  if (this != &other) {
    reset();
    swap(other);
  }
  return *this;
}

void DeviceBuffer::swap(DeviceBuffer &other) noexcept {
  std::swap(Drv, other.Drv);
  std::swap(Ptr, other.Ptr);
  std::swap(Size, other.Size);
}

void DeviceBuffer::reset() {
  if (Ptr && Drv && Drv->makeCurrent(nullptr))
    Drv->api().cuMemFree(Ptr);
  Ptr = 0;
  Size = 0;
}

bool DeviceBuffer::allocate(const Driver &driver, size_t bytes,
                            std::string *error) {
  reset();
  if (!driver.makeCurrent(error))
    return false;
  CUdeviceptr p = 0;
  if (!driver.check(driver.api().cuMemAlloc(&p, bytes ? bytes : 1),
                    "cuMemAlloc_v2(" + decimal(bytes) + " bytes)",
                    error))
    return false;
  Drv = &driver;
  Ptr = p;
  Size = bytes;
  return true;
}

bool DeviceBuffer::upload(const void *src, size_t bytes, const Stream &stream,
                          std::string *error, size_t offset) const {
  if (offset + bytes > Size)
    return fail(error, "upload of " + decimal(bytes) +
                           " bytes at offset " + decimal(offset) +
                           " into a device buffer of " +
                           decimal(Size));
  if (!bytes)
    return true;
  return Drv->makeCurrent(error) &&
         Drv->check(Drv->api().cuMemcpyHtoDAsync(Ptr + offset, src, bytes,
                                                 stream.get()),
                    "cuMemcpyHtoDAsync_v2(" + decimal(bytes) +
                        " bytes)",
                    error);
}

bool DeviceBuffer::download(void *dst, size_t bytes, const Stream &stream,
                            std::string *error) const {
  if (bytes > Size)
    return fail(error, "download of " + decimal(bytes) +
                           " bytes from a device buffer of " +
                           decimal(Size));
  if (!bytes)
    return true;
  return Drv->makeCurrent(error) &&
         Drv->check(Drv->api().cuMemcpyDtoHAsync(dst, Ptr, bytes,
                                                 stream.get()),
                    "cuMemcpyDtoHAsync_v2(" + decimal(bytes) +
                        " bytes)",
                    error);
}

Stream::~Stream() {
  if (S && Drv)
    Drv->api().cuStreamDestroy(S);
}

bool Stream::create(const Driver &driver, std::string *error) {
  if (!driver.makeCurrent(error))
    return false;
  CUstream s = nullptr;
  if (!driver.check(driver.api().cuStreamCreate(&s, CU_STREAM_NON_BLOCKING),
                    "cuStreamCreate", error))
    return false;
  if (S && Drv)
    Drv->api().cuStreamDestroy(S);
  Drv = &driver;
  S = s;
  return true;
}

bool Stream::synchronize(std::string *error) const {
  if (!Drv)
    return fail(error, "synchronize on a stream that was never created");
  return Drv->makeCurrent(error) &&
         Drv->check(Drv->api().cuStreamSynchronize(S), "cuStreamSynchronize",
                    error);
}

bool loadModuleImage(const Driver &driver, const void *image, int optLevel,
                     CUmodule *module, std::string *error) {
  *module = nullptr;
  if (!image)
    return fail(error, "no module image");
  if (!driver.makeCurrent(error))
    return false;
  char log[8192] = {};
  CUjit_option options[] = {CU_JIT_ERROR_LOG_BUFFER,
                            CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
                            CU_JIT_OPTIMIZATION_LEVEL};
  void *values[] = {log, reinterpret_cast<void *>(uintptr_t(sizeof log - 1)),
                    reinterpret_cast<void *>(uintptr_t(optLevel))};
  CUresult r = driver.api().cuModuleLoadDataEx(module, image, 3, options,
                                               values);
  if (r == CUDA_SUCCESS)
    return true;
  *module = nullptr;
  std::string what = "cuModuleLoadDataEx";
  driver.check(r, what, error);
  if (error && log[0])
    *error += "; JIT log: " + std::string(log);
  return false;
}

Module::~Module() {
  if (M && Drv && Drv->makeCurrent(nullptr))
    Drv->api().cuModuleUnload(M);
}

bool Module::load(const Driver &driver, const void *image, std::string *error,
                  int optLevel) {
  CUmodule m = nullptr;
  if (!loadModuleImage(driver, image, optLevel, &m, error))
    return false;
  if (M && Drv)
    Drv->api().cuModuleUnload(M);
  Drv = &driver;
  M = m;
  return true;
}

CUfunction Module::function(const std::string &name,
                            std::string *error) const {
  if (!M) {
    fail(error, "kernel '" + name + "' from a module that is not loaded");
    return nullptr;
  }
  CUfunction f = nullptr;
  if (!Drv->makeCurrent(error) ||
      !Drv->check(Drv->api().cuModuleGetFunction(&f, M, name.c_str()),
                  "cuModuleGetFunction(" + name + ")", error))
    return nullptr;
  return f;
}

bool launch(const Driver &driver, CUfunction function, Dim3 grid, Dim3 block,
            unsigned sharedBytes, const Stream &stream, void **params,
            std::string *error) {
  if (!function)
    return fail(error, "cuLaunchKernel: no kernel");
  return driver.makeCurrent(error) &&
         driver.check(driver.api().cuLaunchKernel(
                          function, grid.x, grid.y, grid.z, block.x, block.y,
                          block.z, sharedBytes, stream.get(), params, nullptr),
                      "cuLaunchKernel", error);
}

} // namespace qcc::cuda
