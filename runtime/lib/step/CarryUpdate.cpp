//===- CarryUpdate.cpp - qcc.carry_update over GGUF blocks ----------------===//
//
// The reference implementation of docs/spec.md §3.5, called by compiled
// steps. Per chunk (a block for a dense carry, `jl_chunk` weights for a JL
// sketch): read the carry back, form the latent value v = decode(w) + r +
// delta, re-encode each block whose fresh encoding is strictly closer to v
// than the stored block, and keep v - decode(w_new) in the carry.
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/StepRuntime.h"

#include "qcc/Runtime/Codecs.h"
#include "qcc/Runtime/SplitMix64.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

namespace qcc::step {
void recordError(std::string message);
} // namespace qcc::step

namespace {

using qcc::FormatInfo;

/// The JL projection P (dim x chunk, entries ±1/sqrt(dim)), row-major.
std::vector<float> jlMatrix(int64_t dim, int64_t chunk, uint64_t seed) {
  std::vector<float> p(size_t(dim * chunk));
  const float mag = 1.0f / std::sqrt(float(dim));
  for (int64_t k = 0; k < dim; ++k)
    for (int64_t j = 0; j < chunk; ++j)
      p[size_t(k * chunk + j)] =
          mag * qcc::splitmixSign(seed, uint64_t(k * chunk + j));
  return p;
}

double squaredError(const float *a, const float *b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = double(a[i]) - double(b[i]);
    s += d * d;
  }
  return s;
}

struct CarryIO {
  const void *in;
  void *out;
  bool bf16;
  float load(size_t i) const {
    if (!bf16)
      return static_cast<const float *>(in)[i];
    return qcc::bf16ToFloat(static_cast<const uint16_t *>(in)[i]);
  }
  void store(size_t i, float v) const {
    if (!bf16)
      static_cast<float *>(out)[i] = v;
    else
      static_cast<uint16_t *>(out)[i] = qcc::floatToBF16(v);
  }
  void copy(size_t begin, size_t n) const {
    const size_t width = bf16 ? 2 : 4;
    std::memmove(static_cast<uint8_t *>(out) + begin * width,
                 static_cast<const uint8_t *>(in) + begin * width, n * width);
  }
};

} // namespace

extern "C" int32_t qcc_rt_carry_update(uint32_t ggmlType, const void *wIn,
                                       const void *carryIn, const float *delta,
                                       void *wOut, void *carryOut, int64_t rows,
                                       int64_t rowLen, int32_t carryBF16,
                                       int64_t jlDim, int64_t jlChunk,
                                       uint64_t jlSeed) {
  const FormatInfo *info = qcc::lookupFormat(ggmlType);
  const bool jl = jlDim > 0;
  const int64_t chunk = jl ? jlChunk : 1;
  if (!info || rows < 0 || rowLen < 0 || rowLen % info->blockElems != 0 ||
      (jl && (jlChunk <= 0 || jlChunk % info->blockElems != 0 ||
              rowLen % jlChunk != 0))) {
    qcc::step::recordError("qcc.carry_update: invalid request (ggml type " +
                           std::to_string(ggmlType) + ", row length " +
                           std::to_string(rowLen) + ")");
    return 1;
  }
  const size_t blockElems = info->blockElems, blockBytes = info->blockBytes;
  // A dense carry is handled one block at a time; a JL sketch one chunk.
  const size_t unit = jl ? size_t(chunk) : blockElems;
  const size_t unitsPerRow = size_t(rowLen) / unit;
  const size_t carryPerUnit = jl ? size_t(jlDim) : unit;
  const std::vector<float> p =
      jl ? jlMatrix(jlDim, chunk, jlSeed) : std::vector<float>();
  const CarryIO carry{carryIn, carryOut, carryBF16 != 0};
  const auto *win = static_cast<const uint8_t *>(wIn);
  auto *wout = static_cast<uint8_t *>(wOut);

  std::vector<float> decoded(unit), latent(unit), residual(unit),
      candidate(blockElems);
  std::vector<uint8_t> encoded(blockBytes);
  int32_t status = 0;
  std::string error;
  for (size_t u = 0; u < size_t(rows) * unitsPerRow; ++u) {
    const size_t elem0 = u * unit;
    const size_t byte0 = elem0 / blockElems * blockBytes;
    const size_t unitBytes = unit / blockElems * blockBytes;
    const size_t carry0 = u * carryPerUnit;
    qcc::decodeToF32(info->format, win + byte0, decoded.data(), unit);
    if (jl) {
      // r = Pᵀ z
      for (size_t j = 0; j < unit; ++j) {
        float r = 0;
        for (int64_t k = 0; k < jlDim; ++k)
          r += p[size_t(k) * unit + j] * carry.load(carry0 + size_t(k));
        residual[j] = r;
      }
    } else {
      for (size_t j = 0; j < unit; ++j)
        residual[j] = carry.load(carry0 + j);
    }
    bool finite = true;
    for (size_t j = 0; j < unit; ++j) {
      latent[j] = decoded[j] + residual[j] + delta[elem0 + j];
      finite = finite && std::isfinite(latent[j]);
    }
    if (!finite) {
      if (wOut != wIn)
        std::memcpy(wout + byte0, win + byte0, unitBytes);
      if (carryOut != carryIn)
        carry.copy(carry0, carryPerUnit);
      if (status == 0)
        error = "qcc.carry_update: non-finite latent value in row " +
                std::to_string(elem0 / size_t(rowLen)) + ", column " +
                std::to_string(elem0 % size_t(rowLen)) +
                "; the block was left unchanged";
      status = 1;
      continue;
    }
    // Blocks within the unit: keep, or take the fresh encoding when it is
    // strictly closer to the latent value.
    for (size_t b = 0; b < unit / blockElems; ++b) {
      const float *v = latent.data() + b * blockElems;
      float *cur = decoded.data() + b * blockElems;
      const uint8_t *stored = win + byte0 + b * blockBytes;
      uint8_t *dst = wout + byte0 + b * blockBytes;
      bool take = false;
      if (qcc::encodeFromF32(info->format, v, encoded.data(), 1, blockElems,
                             nullptr, nullptr) &&
          std::memcmp(encoded.data(), stored, blockBytes) != 0) {
        qcc::decodeToF32(info->format, encoded.data(), candidate.data(),
                         blockElems);
        take = squaredError(candidate.data(), v, blockElems) <
               squaredError(cur, v, blockElems);
      }
      if (take) {
        std::memcpy(dst, encoded.data(), blockBytes);
        std::memcpy(cur, candidate.data(), blockElems * sizeof(float));
      } else if (dst != stored) {
        std::memcpy(dst, stored, blockBytes);
      }
    }
    // The part that did not fit: e = v - decode(w_new).
    for (size_t j = 0; j < unit; ++j)
      residual[j] = latent[j] - decoded[j];
    if (jl) {
      for (int64_t k = 0; k < jlDim; ++k) {
        float z = 0;
        for (size_t j = 0; j < unit; ++j)
          z += p[size_t(k) * unit + j] * residual[j];
        carry.store(carry0 + size_t(k), z);
      }
    } else {
      for (size_t j = 0; j < unit; ++j)
        carry.store(carry0 + j, residual[j]);
    }
  }
  if (status)
    qcc::step::recordError(error);
  return status;
}
