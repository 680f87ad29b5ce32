//===- test_decode.cpp - Decoders against ggml's golden vectors -----------===//
//
// For every format: decoding ggml's blocks (`T.q`) reproduces ggml's own
// dequantization (`T.deq`) bit for bit, with each implementation (scalar,
// AVX2, AVX-512); bf16 / f16 output is ggml's f32 output rounded; and on
// random block bytes (which reach every code, and NaN / Inf / subnormal
// scales) all implementations agree bit for bit.
//
//===----------------------------------------------------------------------===//

#include "Golden.h"
#include "qcc/Runtime/Codecs.h"
#include "qcc/Runtime/Gguf.h"

#include <gtest/gtest.h>

#include <cstring>
#include <immintrin.h>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace qcc;

namespace {

using qcc::test::golden;

uint32_t bitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

std::vector<Format> allFormats() {
  std::vector<Format> v;
  for (const FormatInfo &info : kFormats)
    v.push_back(info.format);
  return v;
}

const CodecImpl kImpls[] = {CodecImpl::Scalar, CodecImpl::AVX2,
                            CodecImpl::AVX512};

struct Golden {
  const gguf::TensorInfo *q = nullptr, *deq = nullptr;
  size_t n = 0;
  const float *deqData() const {
    return reinterpret_cast<const float *>(deq->data);
  }
};

Golden goldenOf(Format format) {
  const std::string name(formatInfo(format).name);
  Golden g;
  g.q = golden().findTensor(name + ".q");
  g.deq = golden().findTensor(name + ".deq");
  if (g.q && g.deq)
    g.n = g.deq->numElements();
  return g;
}

std::string formatName(const testing::TestParamInfo<Format> &info) {
  return std::string(formatInfo(info.param).name);
}

class DecodeGolden : public testing::TestWithParam<Format> {};

// Compares bit patterns: -0.0 vs +0.0 and NaN payloads count.
TEST_P(DecodeGolden, F32BitExactEveryImpl) {
  const Format format = GetParam();
  const Golden g = goldenOf(format);
  ASSERT_TRUE(g.q && g.deq) << formatInfo(format).name;
  ASSERT_EQ(g.q->ggmlType, uint32_t(format));
  ASSERT_EQ(g.q->nbytes, encodedBytes(format, g.n));
  for (CodecImpl impl : kImpls) {
    std::vector<float> out(g.n, -1234.5f);
    decodeToF32(format, g.q->data, out.data(), g.n, impl);
    size_t bad = 0, first = g.n;
    for (size_t i = 0; i < g.n; ++i)
      if (bitsOf(out[i]) != bitsOf(g.deqData()[i]) && bad++ == 0)
        first = i;
    EXPECT_EQ(bad, 0u) << codecImplName(impl) << ": first mismatch at " << first
                       << " got " << (first < g.n ? out[first] : 0) << " want "
                       << (first < g.n ? g.deqData()[first] : 0);
  }
}

TEST_P(DecodeGolden, BF16AndF16AreRoundedF32) {
  const Format format = GetParam();
  const Golden g = goldenOf(format);
  ASSERT_TRUE(g.q && g.deq);
  for (CodecImpl impl : kImpls) {
    std::vector<uint16_t> bf(g.n), hf(g.n);
    decodeToBF16(format, g.q->data, bf.data(), g.n, impl);
    decodeToF16(format, g.q->data, hf.data(), g.n, impl);
    size_t badB = 0, badH = 0;
    for (size_t i = 0; i < g.n; ++i) {
      badB += bf[i] != floatToBF16(g.deqData()[i]);
      badH += hf[i] != floatToHalf(g.deqData()[i]);
    }
    EXPECT_EQ(badB, 0u) << codecImplName(impl);
    EXPECT_EQ(badH, 0u) << codecImplName(impl);
  }
}

/// Random block bytes; every 2-byte slot is, with probability 1/4, one of
/// the special f16 patterns, so that f16 scales (all at even offsets) are
/// often NaN, Inf, subnormal, zero or the largest finite value.
std::vector<uint8_t> randomBlocks(Format format, size_t numBlocks,
                                  uint32_t seed) {
  static const uint16_t kSpecial[] = {0x7c00, 0xfc00, 0x7e00, 0x7c01, 0xfe12,
                                      0x0001, 0x8001, 0x03ff, 0x0000, 0x8000,
                                      0x7bff, 0xfbff, 0x0400, 0x3c00};
  std::mt19937 rng(seed);
  std::vector<uint8_t> bytes(
      encodedBytes(format, numBlocks * formatInfo(format).blockElems) + 1);
  for (size_t i = 0; i + 1 < bytes.size(); i += 2) {
    const uint32_t r = rng();
    uint16_t v = uint16_t(r >> 16);
    if ((r & 3) == 0)
      v = kSpecial[(r >> 2) % (sizeof(kSpecial) / sizeof(kSpecial[0]))];
    std::memcpy(&bytes[i], &v, 2);
  }
  return bytes;
}

class DecodeRandom : public testing::TestWithParam<Format> {};

TEST_P(DecodeRandom, AllImplsAgreeBitForBit) {
  const Format format = GetParam();
  const FormatInfo &info = formatInfo(format);
  // Several block counts so that vector tails (f16 / bf16 / f32 rows) and
  // the 4096-element chunking of the bf16 / f16 paths are exercised.
  for (size_t numBlocks : {size_t(1), size_t(3), size_t(37), size_t(4099)}) {
    const size_t blocks = info.blockElems == 1 ? numBlocks * 5 : numBlocks;
    const std::vector<uint8_t> in =
        randomBlocks(format, blocks, uint32_t(blocks * 131 + info.ggmlId));
    const size_t n = blocks * info.blockElems;
    std::vector<float> ref(n);
    std::vector<uint16_t> refB(n), refH(n);
    decodeToF32(format, in.data(), ref.data(), n, CodecImpl::Scalar);
    decodeToBF16(format, in.data(), refB.data(), n, CodecImpl::Scalar);
    decodeToF16(format, in.data(), refH.data(), n, CodecImpl::Scalar);
    // The scalar bf16 / f16 paths are the converters applied to f32.
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(refB[i], floatToBF16(ref[i])) << i;
      ASSERT_EQ(refH[i], floatToHalf(ref[i])) << i;
    }
    for (CodecImpl impl : {CodecImpl::AVX2, CodecImpl::AVX512}) {
      std::vector<float> out(n);
      std::vector<uint16_t> outB(n), outH(n);
      decodeToF32(format, in.data(), out.data(), n, impl);
      decodeToBF16(format, in.data(), outB.data(), n, impl);
      decodeToF16(format, in.data(), outH.data(), n, impl);
      size_t bad = 0, badB = 0, badH = 0, first = n;
      for (size_t i = 0; i < n; ++i) {
        if (bitsOf(out[i]) != bitsOf(ref[i]) && bad++ == 0)
          first = i;
        badB += outB[i] != refB[i];
        badH += outH[i] != refH[i];
      }
      EXPECT_EQ(bad, 0u) << codecImplName(impl) << " blocks=" << blocks
                         << " first at " << first << ": "
                         << (first < n ? bitsOf(out[first]) : 0) << " vs "
                         << (first < n ? bitsOf(ref[first]) : 0);
      EXPECT_EQ(badB, 0u) << codecImplName(impl) << " blocks=" << blocks;
      EXPECT_EQ(badH, 0u) << codecImplName(impl) << " blocks=" << blocks;
    }
  }
}

// Blocks and outputs need no alignment (GGUF rows of odd-sized blocks, and
// callers writing into the middle of buffers).
TEST_P(DecodeRandom, UnalignedBuffers) {
  const Format format = GetParam();
  const FormatInfo &info = formatInfo(format);
  const size_t blocks = info.blockElems == 1 ? 301 : 21;
  const std::vector<uint8_t> in = randomBlocks(format, blocks, 7);
  const size_t n = blocks * info.blockElems;
  std::vector<uint8_t> shifted(in.size() + 1);
  std::memcpy(shifted.data() + 1, in.data(), in.size());
  std::vector<float> ref(n), out(n + 1);
  std::vector<uint16_t> refH(n), outH(n + 1);
  decodeToF32(format, in.data(), ref.data(), n, CodecImpl::Scalar);
  decodeToF16(format, in.data(), refH.data(), n, CodecImpl::Scalar);
  for (CodecImpl impl : kImpls) {
    decodeToF32(format, shifted.data() + 1, out.data() + 1, n, impl);
    decodeToF16(format, shifted.data() + 1, outH.data() + 1, n, impl);
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(bitsOf(out[i + 1]), bitsOf(ref[i])) << codecImplName(impl);
      ASSERT_EQ(outH[i + 1], refH[i]) << codecImplName(impl);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllFormats, DecodeGolden,
                         testing::ValuesIn(allFormats()), formatName);
INSTANTIATE_TEST_SUITE_P(AllFormats, DecodeRandom,
                         testing::ValuesIn(allFormats()), formatName);

//===----------------------------------------------------------------------===//
// Conversions
//===----------------------------------------------------------------------===//

__attribute__((target("f16c"))) float hwHalfToFloat(uint16_t h) {
  return _cvtsh_ss(h);
}
__attribute__((target("f16c"))) uint16_t hwFloatToHalf(float f) {
  return _cvtss_sh(f, 0);
}

TEST(Half, ToFloatMatchesF16CForEveryPattern) {
  if (!__builtin_cpu_supports("f16c"))
    GTEST_SKIP() << "no F16C";
  for (uint32_t h = 0; h < 65536; ++h)
    ASSERT_EQ(bitsOf(halfToFloat(uint16_t(h))),
              bitsOf(hwHalfToFloat(uint16_t(h))))
        << std::hex << h;
}

TEST(Half, FromFloatMatchesF16C) {
  if (!__builtin_cpu_supports("f16c"))
    GTEST_SKIP() << "no F16C";
  // Every 251st bit pattern (all exponents, NaNs, subnormals) plus every
  // pattern around the f16 rounding / overflow / subnormal boundaries.
  auto check = [](uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    ASSERT_EQ(floatToHalf(f), hwFloatToHalf(f)) << std::hex << u;
  };
  for (uint64_t u = 0; u <= 0xffffffffull; u += 251)
    check(uint32_t(u));
  for (uint32_t base : {0x477fe000u, 0x38800000u, 0x33000000u, 0x387fc000u,
                        0x7f800000u, 0x3f800000u})
    for (uint32_t d = 0; d < 0x10000; ++d) {
      check(base - 0x8000 + d);
      check((base - 0x8000 + d) | 0x80000000u);
    }
}

TEST(Half, GoldenF16AndBF16Encodings) {
  // ggml's own f32 -> f16 / bf16 of the same source values.
  for (Format format : {Format::F16, Format::BF16}) {
    const std::string name(formatInfo(format).name);
    const gguf::TensorInfo *src = golden().findTensor(name + ".src");
    const gguf::TensorInfo *q = golden().findTensor(name + ".q");
    ASSERT_TRUE(src && q);
    const float *s = reinterpret_cast<const float *>(src->data);
    const uint8_t *b = q->data;
    for (size_t i = 0; i < src->numElements(); ++i) {
      uint16_t want;
      std::memcpy(&want, b + 2 * i, 2);
      const uint16_t got =
          format == Format::F16 ? floatToHalf(s[i]) : floatToBF16(s[i]);
      ASSERT_EQ(got, want) << name << " " << i;
    }
  }
}

TEST(Half, BF16Rules) {
  EXPECT_EQ(floatToBF16(1.0f), 0x3f80);
  // Ties to even, and a subnormal is rounded, not flushed.
  uint32_t u = 0x3f808000; // halfway, even below
  float f;
  std::memcpy(&f, &u, 4);
  EXPECT_EQ(floatToBF16(f), 0x3f80);
  u = 0x3f818000; // halfway, odd below -> up
  std::memcpy(&f, &u, 4);
  EXPECT_EQ(floatToBF16(f), 0x3f82);
  u = 0x00018000;
  std::memcpy(&f, &u, 4);
  EXPECT_EQ(floatToBF16(f), 0x0002);
  u = 0x7f800001; // signalling NaN comes back quiet
  std::memcpy(&f, &u, 4);
  EXPECT_EQ(floatToBF16(f), 0x7fc0);
  EXPECT_EQ(bitsOf(bf16ToFloat(0x8000)), 0x80000000u);
}

TEST(CodecImpl, ResolveAndNames) {
  EXPECT_NE(resolveCodecImpl(CodecImpl::Auto), CodecImpl::Auto);
  EXPECT_EQ(resolveCodecImpl(CodecImpl::Scalar), CodecImpl::Scalar);
  EXPECT_STREQ(codecImplName(CodecImpl::AVX512), "avx512");
  EXPECT_STREQ(codecImplName(CodecImpl::Scalar), "scalar");
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vbmi")) {
    EXPECT_EQ(resolveCodecImpl(CodecImpl::Auto), CodecImpl::AVX512);
  }
}

} // namespace
