//===- Cuda.h - The CUDA driver, loaded at run time -------------*- C++ -*-===//
//
// qcc talks to NVIDIA GPUs through the CUDA driver API, which it loads with
// dlopen("libcuda.so.1") the first time it is needed (QCC_CUDA_DRIVER=/path
// overrides the library, for tests). Nothing is linked against CUDA and no
// CUDA header is needed to build: the few types and prototypes used are
// declared here. Without a driver everything else keeps working; only the
// calls below fail, with "no CUDA driver found: <dlerror text>".
//
// All work happens in the primary context of device 0, which is retained
// once and made current on the calling thread by every call that needs it.
// A process may hold two copies of this loader (the host runtime's and the
// one linked into a CUDA step.so, runtime/lib/cuda/Mgpu.cpp): both load the
// same libcuda and use the same primary context, so device pointers made by
// one are valid in the other.
//
// Every failing call returns false (or null) and sets `*error` to what
// failed and the driver's error name and text, e.g.
// "cuMemAlloc_v2(1024 bytes) failed: CUDA_ERROR_OUT_OF_MEMORY (out of memory)".
//
//===----------------------------------------------------------------------===//

#ifndef QCC_RUNTIME_CUDA_H
#define QCC_RUNTIME_CUDA_H

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace qcc::cuda {

/// The driver API's own types (ABI-compatible with cuda.h).
using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUcontext = struct CUctx_st *;
using CUmodule = struct CUmod_st *;
using CUfunction = struct CUfunc_st *;
using CUstream = struct CUstream_st *;
using CUevent = struct CUevent_st *;
using CUjit_option = int;

constexpr CUresult CUDA_SUCCESS = 0;
constexpr CUjit_option CU_JIT_INFO_LOG_BUFFER = 3;
constexpr CUjit_option CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES = 4;
constexpr CUjit_option CU_JIT_ERROR_LOG_BUFFER = 5;
constexpr CUjit_option CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6;
constexpr CUjit_option CU_JIT_OPTIMIZATION_LEVEL = 7;
constexpr unsigned CU_STREAM_NON_BLOCKING = 1;
constexpr unsigned CU_EVENT_DISABLE_TIMING = 2;
constexpr unsigned CU_MEM_ATTACH_GLOBAL = 1;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;

/// The driver entry points qcc uses, resolved by dlsym (the `_v2` symbols
/// where cuda.h maps the plain name to one).
struct DriverApi {
#define QCC_CUDA_FN(name, symbol, ret, params) ret(*name) params = nullptr;
#include "qcc/Runtime/CudaDriverFunctions.def"
};

/// The loaded driver: libcuda, cuInit done, device 0's primary context
/// retained.
class Driver {
public:
  /// The process's driver, loaded on first use from $QCC_CUDA_DRIVER or
  /// libcuda.so.1; the outcome (and the error) is remembered. Null on
  /// failure, with "no CUDA driver found: <dlerror>" when the library
  /// cannot be opened.
  static Driver *instance(std::string *error);
  /// A driver loaded from `path`, not shared (tests).
  static std::unique_ptr<Driver> load(const std::string &path,
                                      std::string *error);
  /// Where instance() loads the driver from: $QCC_CUDA_DRIVER or
  /// "libcuda.so.1".
  static std::string defaultPath();
  ~Driver();

  const DriverApi &api() const { return Api; }
  const std::string &path() const { return Path; }
  /// Makes the primary context current on the calling thread.
  bool makeCurrent(std::string *error) const;
  /// "name (text)" of a driver result, e.g.
  /// "CUDA_ERROR_OUT_OF_MEMORY (out of memory)".
  std::string errorText(CUresult result) const;
  /// Checks `result`: true on CUDA_SUCCESS, else false with
  /// "<what> failed: <errorText>" in `*error`.
  bool check(CUresult result, const std::string &what,
             std::string *error) const;
  /// Device 0's name and compute capability ("sm_90"), for messages.
  std::string deviceName() const;
  std::string computeCapability() const;

private:
  Driver() = default;
  void *Handle = nullptr;
  std::string Path;
  DriverApi Api;
  CUdevice Device = 0;
  CUcontext Context = nullptr;
};

class Stream;

/// Device memory (cuMemAlloc), freed on destruction. Movable.
class DeviceBuffer {
public:
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer &&other) noexcept { *this = std::move(other); }
  DeviceBuffer &operator=(DeviceBuffer &&other) noexcept;
  ~DeviceBuffer() { reset(); }

  /// Frees the current memory and allocates `bytes` (at least one byte is
  /// allocated, so that every buffer has a distinct device address).
  bool allocate(const Driver &driver, size_t bytes, std::string *error);
  void reset();
  /// Copies host memory into the buffer (at `offset`) on `stream`; the host
  /// memory must stay valid until the stream is synchronized.
  bool upload(const void *src, size_t bytes, const Stream &stream,
              std::string *error, size_t offset = 0) const;
  /// Copies the buffer's first `bytes` to host memory on `stream`.
  bool download(void *dst, size_t bytes, const Stream &stream,
                std::string *error) const;
  void *get() const { return reinterpret_cast<void *>(Ptr); }
  CUdeviceptr address() const { return Ptr; }
  size_t size() const { return Size; }
  void swap(DeviceBuffer &other) noexcept;

private:
  const Driver *Drv = nullptr;
  CUdeviceptr Ptr = 0;
  size_t Size = 0;
};

/// A non-blocking stream, destroyed on destruction.
class Stream {
public:
  Stream() = default;
  Stream(const Stream &) = delete;
  Stream &operator=(const Stream &) = delete;
  ~Stream();
  bool create(const Driver &driver, std::string *error);
  bool synchronize(std::string *error) const;
  CUstream get() const { return S; }
  const Driver *driver() const { return Drv; }

private:
  const Driver *Drv = nullptr;
  CUstream S = nullptr;
};

/// A module loaded from an image (PTX text, NUL-terminated, or a cubin /
/// fatbin), unloaded on destruction.
class Module {
public:
  Module() = default;
  Module(const Module &) = delete;
  Module &operator=(const Module &) = delete;
  ~Module();
  /// Loads `image`; PTX is compiled by the driver's JIT at `optLevel`
  /// (0-4), and a failure includes the JIT's error log.
  bool load(const Driver &driver, const void *image, std::string *error,
            int optLevel = 4);
  /// The kernel `name`, or null with an error.
  CUfunction function(const std::string &name, std::string *error) const;
  CUmodule get() const { return M; }

private:
  const Driver *Drv = nullptr;
  CUmodule M = nullptr;
};

/// Launch dimensions.
struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

/// Launches `function` on `stream`; `params[i]` points to the value of the
/// kernel's i-th parameter.
bool launch(const Driver &driver, CUfunction function, Dim3 grid, Dim3 block,
            unsigned sharedBytes, const Stream &stream, void **params,
            std::string *error);

/// Loads `image` with the JIT options qcc uses (error log, optimization
/// level), shared by Module and the mgpu shim. `image` is PTX when it
/// starts with text; the error includes the JIT's log.
bool loadModuleImage(const Driver &driver, const void *image, int optLevel,
                     CUmodule *module, std::string *error);

} // namespace qcc::cuda

#endif // QCC_RUNTIME_CUDA_H
