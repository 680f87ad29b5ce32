//===- BenchDecode.cpp - Decode throughput per format and implementation --===//
//
// Single thread. For each format the input is ggml's own quantization of the
// golden tensor `T.q` (realistic scales, no NaN / subnormal slow paths),
// tiled to ~256 KiB so that it sits in L2. The input is decoded piece by
// piece (4096 elements at a time) into one 16 KiB f32 buffer that stays in
// L1, over and over; throughput is f32 output bytes per second. Each
// (format, impl) runs for --ms milliseconds after a warm-up pass; the best
// of --reps repetitions is reported.
//
//   qcc-bench-decode [--golden PATH] [--ms 200] [--reps 5] [--only q4_0,...]
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/Codecs.h"
#include "qcc/Runtime/Gguf.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace qcc;

namespace {

constexpr size_t kInputBytes = 256 * 1024;
constexpr size_t kChunkElems = 4096;

double secondsNow() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// GB/s of f32 output for decoding `input` with `impl`, best of `reps`.
double measure(Format format, const std::vector<uint8_t> &input,
               size_t numElements, CodecImpl impl, double ms, int reps) {
  const FormatInfo &info = formatInfo(format);
  static float out[kChunkElems] __attribute__((aligned(64)));
  auto pass = [&] {
    for (size_t e = 0; e < numElements; e += kChunkElems) {
      const size_t n =
          numElements - e < kChunkElems ? numElements - e : kChunkElems;
      decodeToF32(format, input.data() + e / info.blockElems * info.blockBytes,
                  out, n, impl);
    }
    // Keep the stores observable.
    asm volatile("" : : "r"(out) : "memory");
  };
  pass();
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    size_t passes = 0;
    const double t0 = secondsNow();
    double t1 = t0;
    while ((t1 - t0) * 1e3 < ms) {
      pass();
      ++passes;
      t1 = secondsNow();
    }
    const double gbps = double(passes) * numElements * 4 / (t1 - t0) / 1e9;
    if (gbps > best)
      best = gbps;
  }
  return best;
}

} // namespace

int main(int argc, char **argv) {
  std::string golden = QCC_GOLDEN_GGUF, only;
  double ms = 200;
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--golden" && i + 1 < argc)
      golden = argv[++i];
    else if (a == "--ms" && i + 1 < argc)
      ms = std::atof(argv[++i]);
    else if (a == "--reps" && i + 1 < argc)
      reps = std::atoi(argv[++i]);
    else if (a == "--only" && i + 1 < argc)
      only = "," + std::string(argv[++i]) + ",";
    else {
      std::fprintf(stderr,
                   "usage: %s [--golden PATH] [--ms N] [--reps N] "
                   "[--only fmt,fmt]\n",
                   argv[0]);
      return 2;
    }
  }
  std::string err;
  auto file = gguf::File::open(golden, &err);
  if (!file) {
    std::fprintf(stderr, "cannot open %s: %s\n", golden.c_str(), err.c_str());
    return 1;
  }
  std::printf("auto resolves to %s; input ~%zu KiB (L2), output chunk %zu "
              "f32 (L1); GB/s of f32 output, single thread, best of %d x "
              "%.0f ms\n",
              codecImplName(resolveCodecImpl(CodecImpl::Auto)),
              kInputBytes / 1024, kChunkElems, reps, ms);
  std::printf("%-8s %10s %10s %10s %8s\n", "format", "scalar", "avx2", "avx512",
              "best/sc");
  for (const FormatInfo &info : kFormats) {
    const std::string name(info.name);
    if (!only.empty() && only.find("," + name + ",") == std::string::npos)
      continue;
    const gguf::TensorInfo *q = file->findTensor(name + ".q");
    if (!q)
      continue;
    // Tile ggml's blocks up to ~256 KiB, whole blocks only.
    const size_t srcBlocks = q->numElements() / info.blockElems;
    const size_t numBlocks =
        (kInputBytes / info.blockBytes) / srcBlocks * srcBlocks;
    std::vector<uint8_t> input(numBlocks * info.blockBytes);
    for (size_t b = 0; b < numBlocks; b += srcBlocks)
      std::memcpy(input.data() + b * info.blockBytes, q->data,
                  srcBlocks * info.blockBytes);
    const size_t numElements = numBlocks * info.blockElems;
    double r[3];
    const CodecImpl impls[3] = {CodecImpl::Scalar, CodecImpl::AVX2,
                                CodecImpl::AVX512};
    for (int k = 0; k < 3; ++k)
      r[k] = measure(info.format, input, numElements, impls[k], ms, reps);
    const double best = r[1] > r[2] ? r[1] : r[2];
    std::printf("%-8s %10.2f %10.2f %10.2f %7.1fx\n", name.c_str(), r[0], r[1],
                r[2], best / r[0]);
    std::fflush(stdout);
  }
  return 0;
}
