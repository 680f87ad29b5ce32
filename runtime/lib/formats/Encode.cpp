//===- Encode.cpp - f32 -> GGUF blocks: argument checks and dispatch ------===//
//
// The public entry points of the encoders. The plain float formats are
// converted here; every block format is handed, block by block, to the
// encoder of its family (EncodeLegacy.cpp, EncodeKQuants.cpp, EncodeMisc.cpp,
// EncodeIQ.cpp). Rows are independent, so large tensors are split across a
// few threads.
//
//===----------------------------------------------------------------------===//

#include "EncodeCommon.h"

#include <algorithm>
#include <cmath>
#include <thread>
#include <vector>

namespace qcc {

bool encodeNeedsImportance(Format format) {
  return formatRequiresImportance(format);
}

static encode::BlockFn blockEncoder(Format format) {
  using namespace encode;
  for (BlockFn (*family)(Format) : {legacyBlockEncoder, kquantBlockEncoder,
                                    miscBlockEncoder, iqBlockEncoder})
    if (BlockFn fn = family(format))
      return fn;
  return nullptr;
}

static void encodeRows(encode::BlockFn fn, const FormatInfo &info,
                       const float *in, uint8_t *out, size_t rowBegin,
                       size_t rowEnd, size_t rowLength, const float *weights) {
  const size_t blocksPerRow = rowLength / info.blockElems;
  for (size_t r = rowBegin; r < rowEnd; ++r) {
    const float *x = in + r * rowLength;
    uint8_t *dst = out + r * blocksPerRow * info.blockBytes;
    for (size_t b = 0; b < blocksPerRow; ++b)
      fn(x + b * info.blockElems, weights + b * info.blockElems,
         dst + b * info.blockBytes);
  }
}

bool encodeFromF32(Format format, const float *in, void *blocks, size_t numRows,
                   size_t rowLength, const float *importance,
                   std::string *error) {
  auto fail = [&](std::string msg) {
    if (error)
      *error = std::move(msg);
    return false;
  };
  const FormatInfo &info = formatInfo(format);
  if (rowLength % info.blockElems != 0)
    return fail("encode " + std::string(info.name) + ": row length " +
                std::to_string(rowLength) + " is not a multiple of the " +
                std::to_string(info.blockElems) + "-element block");
  if (!importance && encodeNeedsImportance(format))
    return fail("encode " + std::string(info.name) +
                ": this format needs an importance matrix (imatrix)");
  if (importance)
    for (size_t c = 0; c < rowLength; ++c)
      if (!(importance[c] >= 0.0f) || !std::isfinite(importance[c]))
        return fail("encode " + std::string(info.name) +
                    ": importance weight of column " + std::to_string(c) +
                    " is negative or not finite");

  uint8_t *out = static_cast<uint8_t *>(blocks);
  const size_t n = numRows * rowLength;
  switch (format) {
  case Format::F32:
    std::memcpy(out, in, n * sizeof(float));
    return true;
  case Format::F16:
    for (size_t i = 0; i < n; ++i)
      encode::storeU16(out + 2 * i, floatToHalf(in[i]));
    return true;
  case Format::BF16:
    for (size_t i = 0; i < n; ++i)
      encode::storeU16(out + 2 * i, floatToBF16(in[i]));
    return true;
  default:
    break;
  }

  encode::BlockFn fn = blockEncoder(format);
  if (!fn)
    return fail("encode " + std::string(info.name) + ": not supported");
  // A block format has no code for NaN or Inf, and one such value would
  // poison its whole block's scale search, so refuse rather than guess.
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(in[i]))
      return fail("encode " + std::string(info.name) +
                  ": non-finite value at row " + std::to_string(i / rowLength) +
                  ", column " + std::to_string(i % rowLength));

  // Uniform weights minimise the plain squared error. An all-zero importance
  // row would leave the fits undetermined, so tiny weights are lifted to a
  // small fraction of the mean.
  std::vector<float> weights(rowLength, 1.0f);
  if (importance) {
    double mean = 0;
    for (size_t c = 0; c < rowLength; ++c)
      mean += importance[c];
    mean /= double(rowLength);
    const float floor = mean > 0 ? float(mean) * 1e-4f : 1.0f;
    for (size_t c = 0; c < rowLength; ++c)
      weights[c] = std::max(importance[c], floor);
  }

  // Split rows over a few threads once there is enough work to pay for them.
  // (hardware_concurrency reads /sys on every call: ask once, and only when
  // the work is large enough to split; carry updates encode a block at a
  // time, thousands of times per step.)
  const size_t work = n;
  unsigned threads = 1;
  if (work >= (size_t(1) << 18) && numRows >= 2) {
    static const unsigned cores =
        std::max(1u, std::thread::hardware_concurrency());
    threads = std::min<unsigned>(cores, 8);
  }
  threads = unsigned(std::min<size_t>(threads, numRows));
  if (threads <= 1) {
    encodeRows(fn, info, in, out, 0, numRows, rowLength, weights.data());
    return true;
  }
  std::vector<std::thread> pool;
  const size_t per = (numRows + threads - 1) / threads;
  for (unsigned t = 0; t < threads; ++t) {
    const size_t begin = t * per, end = std::min(numRows, begin + per);
    if (begin >= end)
      break;
    pool.emplace_back(encodeRows, fn, std::cref(info), in, out, begin, end,
                      rowLength, weights.data());
  }
  for (std::thread &th : pool)
    th.join();
  return true;
}

} // namespace qcc
