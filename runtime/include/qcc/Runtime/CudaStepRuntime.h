/*===- CudaStepRuntime.h - What CUDA step libraries call -----------*- C -*-===
 *
 * The host code of a step compiled with `qcc --target=cuda` comes from MLIR's
 * gpu-to-llvm lowering, which calls the "mgpu" runtime-wrapper functions of
 * MLIR 22 (the ABI of mlir/lib/ExecutionEngine/CudaRuntimeWrappers.cpp).
 * qcc implements them over its own driver loader (qcc/Runtime/Cuda.h) in the
 * static library libqcc_cuda_mgpu.a, which the compiler links into every
 * CUDA step.so (whole-archive). The differences from MLIR's wrappers:
 *
 *  - Nothing happens when the library is loaded: mgpuModuleLoad* only record
 *    the image; it is loaded into the primary context on the first
 *    mgpuModuleGetFunction. So a CUDA step.so dlopens on a machine without a
 *    GPU (and a host can read its manifest and refuse it cleanly).
 *  - Failures are not printed: the first one is kept, with the CUDA error
 *    name and text, until the host takes it with qcc_cuda_take_error().
 *    After a failure the calls that depend on its result do nothing (a
 *    launch without a function, a copy to a null pointer).
 *  - Only device 0's primary context is used (the one the host runtime
 *    uses, so device pointers are shared).
 *
 *===----------------------------------------------------------------------===*/

#ifndef QCC_RUNTIME_CUDASTEPRUNTIME_H
#define QCC_RUNTIME_CUDASTEPRUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define QCC_MGPU_API __attribute__((visibility("default")))
#else
#define QCC_MGPU_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Modules: `data` is a NUL-terminated PTX string (JIT-compiled at `optLevel`)
 * or a cubin/fatbin of `gpuBlobSize` bytes; it must stay valid until
 * mgpuModuleUnload (MLIR embeds it as a global of the library). */
QCC_MGPU_API void *mgpuModuleLoad(void *data, size_t gpuBlobSize);
QCC_MGPU_API void *mgpuModuleLoadJIT(void *data, int optLevel);
QCC_MGPU_API void mgpuModuleUnload(void *module);
QCC_MGPU_API void *mgpuModuleGetFunction(void *module, const char *name);

QCC_MGPU_API void mgpuLaunchKernel(void *function, intptr_t gridX,
                                   intptr_t gridY, intptr_t gridZ,
                                   intptr_t blockX, intptr_t blockY,
                                   intptr_t blockZ, int32_t smem, void *stream,
                                   void **params, void **extra,
                                   size_t paramsCount);

QCC_MGPU_API void *mgpuStreamCreate(void);
QCC_MGPU_API void mgpuStreamDestroy(void *stream);
QCC_MGPU_API void mgpuStreamSynchronize(void *stream);
QCC_MGPU_API void mgpuStreamWaitEvent(void *stream, void *event);

QCC_MGPU_API void *mgpuEventCreate(void);
QCC_MGPU_API void mgpuEventDestroy(void *event);
QCC_MGPU_API void mgpuEventSynchronize(void *event);
QCC_MGPU_API void mgpuEventRecord(void *event, void *stream);

QCC_MGPU_API void *mgpuMemAlloc(uint64_t sizeBytes, void *stream,
                                bool isHostShared);
QCC_MGPU_API void mgpuMemFree(void *ptr, void *stream);
QCC_MGPU_API void mgpuMemcpy(void *dst, void *src, size_t sizeBytes,
                             void *stream);
QCC_MGPU_API void mgpuMemset32(void *dst, unsigned int value, size_t count,
                               void *stream);
QCC_MGPU_API void mgpuMemset16(void *dst, unsigned short value, size_t count,
                               void *stream);
QCC_MGPU_API void mgpuMemHostRegister(void *ptr, uint64_t sizeBytes);
QCC_MGPU_API void mgpuMemHostUnregister(void *ptr);
/* Only device 0 is supported; another ordinal records an error. */
QCC_MGPU_API void mgpuSetDefaultDevice(int32_t device);

/* The first CUDA failure recorded by the functions above since the last
 * call (e.g. "cuLaunchKernel(qcc_kernel_0) failed: CUDA_ERROR_LAUNCH_FAILED
 * (unspecified launch failure)"), or null; clears it. The string stays valid
 * until the next call. */
QCC_MGPU_API const char *qcc_cuda_take_error(void);

#ifdef __cplusplus
}
#endif

#endif /* QCC_RUNTIME_CUDASTEPRUNTIME_H */
