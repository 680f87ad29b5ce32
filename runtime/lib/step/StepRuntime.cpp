//===- StepRuntime.cpp - Runtime functions compiled steps call ------------===//

#include "qcc/Runtime/StepRuntime.h"

#include "qcc/Runtime/Codecs.h"

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace {
std::mutex errorMutex;
std::string pendingError; // first error since the last take
std::string takenError;   // what qcc_step_take_error last returned

} // namespace

namespace qcc::step {
/// Keeps the first error until the host takes it.
void recordError(std::string message) {
  std::lock_guard<std::mutex> lock(errorMutex);
  if (pendingError.empty())
    pendingError = std::move(message);
}
} // namespace qcc::step

using qcc::step::recordError;

extern "C" int32_t qcc_rt_encode_rows(uint32_t ggmlType, const float *src,
                                      void *dst, int64_t rows, int64_t rowLen,
                                      const float *importance) {
  const qcc::FormatInfo *info = qcc::lookupFormat(ggmlType);
  if (!info || rows < 0 || rowLen < 0 || rowLen % info->blockElems != 0) {
    recordError("qcc.requant: invalid encode request (ggml type " +
                std::to_string(ggmlType) + ", row length " +
                std::to_string(rowLen) + ")");
    return 1;
  }
  std::string error;
  if (qcc::encodeFromF32(info->format, src, dst, size_t(rows), size_t(rowLen),
                         importance, &error))
    return 0;
  std::memset(dst, 0,
              qcc::encodedBytes(info->format, size_t(rows) * size_t(rowLen)));
  recordError("qcc.requant: " + error);
  return 1;
}

extern "C" const char *qcc_step_take_error(void) {
  std::lock_guard<std::mutex> lock(errorMutex);
  if (pendingError.empty())
    return nullptr;
  takenError = std::move(pendingError);
  pendingError.clear();
  return takenError.c_str();
}

/// Generated code cannot unwind, and going on would write through a null
/// pointer: name the size and end the process with one line.
[[noreturn]] static void allocationFailed(uint64_t size) {
  std::fprintf(stderr,
               "qcc: error: the compiled step could not allocate %" PRIu64
               " bytes (%.1f GiB): not enough memory for this batch and "
               "sequence length\n",
               size, double(size) / double(uint64_t(1) << 30));
  std::fflush(stderr);
  std::_Exit(3);
}

extern "C" void *_mlir_memref_to_llvm_alloc(uint64_t size) {
  if (void *p = std::malloc(size ? size : 1))
    return p;
  allocationFailed(size);
}

extern "C" void *_mlir_memref_to_llvm_aligned_alloc(uint64_t alignment,
                                                    uint64_t size) {
  void *p = nullptr;
  if (alignment < sizeof(void *))
    alignment = sizeof(void *);
  if (posix_memalign(&p, alignment, size ? size : 1) == 0)
    return p;
  allocationFailed(size);
}

extern "C" void _mlir_memref_to_llvm_free(void *p) { std::free(p); }

namespace {
/// MLIR's descriptor of a memref of any rank (UnrankedMemRefType): the rank
/// and a pointer to {allocated, aligned, offset, sizes[rank], strides[rank]}.
struct UnrankedMemRef {
  int64_t rank;
  void *descriptor;
};
struct StridedView {
  char *data;
  const int64_t *sizes, *strides; // in elements
};
StridedView view(const UnrankedMemRef *m, int64_t elemSize) {
  auto *words = static_cast<int64_t *>(m->descriptor);
  char *aligned = reinterpret_cast<char *>(words[1]);
  return {aligned + words[2] * elemSize, words + 3, words + 3 + m->rank};
}
} // namespace

extern "C" void memrefCopy(int64_t elemSize, void *srcArg, void *dstArg) {
  auto *src = static_cast<UnrankedMemRef *>(srcArg);
  auto *dst = static_cast<UnrankedMemRef *>(dstArg);
  int64_t rank = src->rank;
  StridedView s = view(src, elemSize), d = view(dst, elemSize);
  for (int64_t i = 0; i < rank; ++i)
    if (s.sizes[i] == 0)
      return;
  if (rank == 0) {
    std::memcpy(d.data, s.data, static_cast<size_t>(elemSize));
    return;
  }
  // Rows along the last dimension, one memcpy each when both are dense.
  int64_t last = rank - 1, n = s.sizes[last];
  bool dense = s.strides[last] == 1 && d.strides[last] == 1;
  std::vector<int64_t> at(static_cast<size_t>(rank), 0);
  for (;;) {
    int64_t so = 0, dof = 0;
    for (int64_t i = 0; i < last; ++i) {
      so += at[i] * s.strides[i];
      dof += at[i] * d.strides[i];
    }
    if (dense) {
      std::memmove(d.data + dof * elemSize, s.data + so * elemSize,
                   static_cast<size_t>(n * elemSize));
    } else {
      for (int64_t j = 0; j < n; ++j)
        std::memmove(d.data + (dof + j * d.strides[last]) * elemSize,
                     s.data + (so + j * s.strides[last]) * elemSize,
                     static_cast<size_t>(elemSize));
    }
    int64_t i = last - 1;
    while (i >= 0 && ++at[i] == s.sizes[i])
      at[i--] = 0;
    if (i < 0)
      return;
  }
}
