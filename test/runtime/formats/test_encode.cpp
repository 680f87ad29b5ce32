//===- test_encode.cpp - Encoders: quality against ggml, round trips ------===//
//
// What the encoders promise, checked end to end through decodeToF32:
//  * on ggml's golden inputs, the error (mean over non-zero rows of
//    ||deq - src|| / ||src||) is no worse than ggml's own encoding's, read
//    from the golden file, with the importance matrix where ggml used one;
//  * on fresh data of other seeds and shapes, the error is no worse than a
//    plain round-to-nearest encoder with absmax scales (for every format
//    where such a reference is a few lines), and no worse than ggml's error
//    on golden rows drawn from the same distribution;
//  * re-encoding decoded values loses no more than the first encoding did,
//    and is exact where the format's search is exhaustive;
//  * argument errors (missing importance, bad row length) are reported.
//
//===----------------------------------------------------------------------===//

#include "Golden.h"
#include "qcc/Runtime/Codecs.h"
#include "qcc/Runtime/Gguf.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace qcc;

namespace {

// Stated tolerance of "no worse than": relative 0 and this absolute slack
// on a metric of order 0.01 .. 1 (it only absorbs float summation order).
constexpr double kAbsEps = 1e-6;

using qcc::test::golden;

std::string formatName(const testing::TestParamInfo<Format> &info) {
  return std::string(formatInfo(info.param).name);
}

std::vector<Format> allFormats() {
  std::vector<Format> v;
  for (const FormatInfo &info : kFormats)
    v.push_back(info.format);
  return v;
}

/// The formats `keep` accepts: each property is instantiated only where it
/// applies, so no test is reported as skipped.
template <typename Pred> std::vector<Format> formatsWhere(Pred keep) {
  std::vector<Format> v;
  for (Format f : allFormats())
    if (keep(f))
      v.push_back(f);
  return v;
}

bool isPlainFloat(Format f) {
  return f == Format::F32 || f == Format::F16 || f == Format::BF16;
}

/// The golden file's metric: mean over rows with ||src|| > 0 of
/// ||deq - src|| / ||src||.
double relRmse(const float *deq, const float *src, size_t rows, size_t cols) {
  double sum = 0;
  size_t counted = 0;
  for (size_t r = 0; r < rows; ++r) {
    double err = 0, norm = 0;
    for (size_t c = 0; c < cols; ++c) {
      const double s = src[r * cols + c], d = deq[r * cols + c] - s;
      err += d * d;
      norm += s * s;
    }
    if (norm > 0) {
      sum += std::sqrt(err / norm);
      ++counted;
    }
  }
  return counted ? sum / double(counted) : 0.0;
}

/// ggml's golden importance: imatrix[c] = 1 + (c % 7) / 7.
std::vector<float> goldenImatrix(size_t cols) {
  std::vector<float> m(cols);
  for (size_t c = 0; c < cols; ++c)
    m[c] = 1.0f + float(c % 7) / 7.0f;
  return m;
}

std::vector<float> roundTrip(Format format, const float *x, size_t rows,
                             size_t cols, const float *importance) {
  std::vector<uint8_t> blocks(encodedBytes(format, rows * cols));
  std::string err;
  EXPECT_TRUE(
      encodeFromF32(format, x, blocks.data(), rows, cols, importance, &err))
      << formatInfo(format).name << ": " << err;
  std::vector<float> out(rows * cols);
  decodeToF32(format, blocks.data(), out.data(), rows * cols);
  return out;
}

struct GoldenCase {
  const float *src = nullptr;
  size_t rows = 0, cols = 0;
  double ggmlRelRmse = 0;
  bool imatrix = false;
  const gguf::TensorInfo *q = nullptr;
};

GoldenCase goldenCase(Format format) {
  const std::string name(formatInfo(format).name);
  GoldenCase g;
  const gguf::TensorInfo *src = golden().findTensor(name + ".src");
  const gguf::Value *rel = golden().find("golden." + name + ".rel_rmse");
  const gguf::Value *im = golden().find("golden." + name + ".imatrix");
  g.q = golden().findTensor(name + ".q");
  if (!src || !rel || !im || !g.q) {
    ADD_FAILURE() << "golden file lacks " << name;
    return g;
  }
  g.src = reinterpret_cast<const float *>(src->data);
  g.cols = size_t(src->ne[0]);
  g.rows = size_t(src->ne[1]);
  g.ggmlRelRmse = rel->f32;
  g.imatrix = im->b;
  return g;
}

//===----------------------------------------------------------------------===//
// Golden inputs
//===----------------------------------------------------------------------===//

class EncodeGolden : public testing::TestWithParam<Format> {};

// The headline requirement: quantizing T.src is no worse than ggml, with the
// importance matrix where ggml used one and without it otherwise.
TEST_P(EncodeGolden, NoWorseThanGgml) {
  const Format format = GetParam();
  const GoldenCase g = goldenCase(format);
  ASSERT_TRUE(g.src);
  const std::vector<float> imatrix = goldenImatrix(g.cols);
  const std::vector<float> deq = roundTrip(
      format, g.src, g.rows, g.cols, g.imatrix ? imatrix.data() : nullptr);
  const double ours = relRmse(deq.data(), g.src, g.rows, g.cols);
  EXPECT_LE(ours, g.ggmlRelRmse + kAbsEps)
      << formatInfo(format).name << ": ours " << ours << " ggml "
      << g.ggmlRelRmse;
  RecordProperty("rel_rmse", std::to_string(ours));
}

// Where importance is optional, passing the golden one changes what is
// minimised (a weighted error), so the unweighted metric may move a little;
// it must stay within 1% of ggml's unweighted result.
class EncodeGoldenOptionalImportance : public testing::TestWithParam<Format> {};

TEST_P(EncodeGoldenOptionalImportance, StaysClose) {
  const Format format = GetParam();
  const GoldenCase g = goldenCase(format);
  ASSERT_TRUE(g.src);
  const std::vector<float> imatrix = goldenImatrix(g.cols);
  const std::vector<float> deq =
      roundTrip(format, g.src, g.rows, g.cols, imatrix.data());
  const double ours = relRmse(deq.data(), g.src, g.rows, g.cols);
  EXPECT_LE(ours, g.ggmlRelRmse * 1.01 + kAbsEps) << formatInfo(format).name;
}

// Re-encoding the decoded values must not lose more than the first encoding
// did (the values are representable, so a good search finds them or a close
// neighbour).
TEST_P(EncodeGolden, ReencodingDecodedValuesLosesLess) {
  const Format format = GetParam();
  const GoldenCase g = goldenCase(format);
  ASSERT_TRUE(g.src);
  const std::vector<float> imatrix = goldenImatrix(g.cols);
  const float *imp = encodeNeedsImportance(format) ? imatrix.data() : nullptr;
  const std::vector<float> y = roundTrip(format, g.src, g.rows, g.cols, imp);
  const std::vector<float> z = roundTrip(format, y.data(), g.rows, g.cols, imp);
  const double first = relRmse(y.data(), g.src, g.rows, g.cols);
  const double second = relRmse(z.data(), y.data(), g.rows, g.cols);
  EXPECT_LE(second, first + kAbsEps) << formatInfo(format).name;
}

// The same for ggml's own decoded blocks: our encoder recovers values ggml
// produced at least as well as it approximates the original input.
TEST_P(EncodeGolden, ReencodesGgmlOutputClosely) {
  const Format format = GetParam();
  const GoldenCase g = goldenCase(format);
  ASSERT_TRUE(g.src);
  const size_t n = g.rows * g.cols;
  std::vector<float> ggmlDeq(n);
  decodeToF32(format, g.q->data, ggmlDeq.data(), n);
  const std::vector<float> imatrix = goldenImatrix(g.cols);
  const float *imp = encodeNeedsImportance(format) ? imatrix.data() : nullptr;
  const std::vector<float> z =
      roundTrip(format, ggmlDeq.data(), g.rows, g.cols, imp);
  EXPECT_LE(relRmse(z.data(), ggmlDeq.data(), g.rows, g.cols),
            g.ggmlRelRmse + kAbsEps)
      << formatInfo(format).name;
}

INSTANTIATE_TEST_SUITE_P(AllFormats, EncodeGolden,
                         testing::ValuesIn(allFormats()), formatName);
INSTANTIATE_TEST_SUITE_P(
    ImportanceOptional, EncodeGoldenOptionalImportance,
    testing::ValuesIn(formatsWhere(
        [](Format f) { return !encodeNeedsImportance(f); })),
    formatName);

//===----------------------------------------------------------------------===//
// Fresh data: other seeds and shapes
//===----------------------------------------------------------------------===//

enum class Kind {
  Gaussian,
  GaussianOutliers,
  OneSigned,
  Uniform,
  RandomScale,
  AlternatingBlocks
};

/// `rows` x `cols` values of one kind; each row gets its own draw.
std::vector<float> makeData(Kind kind, size_t rows, size_t cols,
                            uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<float> x(rows * cols);
  for (size_t r = 0; r < rows; ++r) {
    const float rowScale = std::pow(10.0f, 5.0f * (uni(rng) + 1.0f) / 2 - 3);
    for (size_t c = 0; c < cols; ++c) {
      float &v = x[r * cols + c];
      switch (kind) {
      case Kind::Gaussian:
        v = 0.02f * normal(rng);
        break;
      case Kind::GaussianOutliers:
        v = 0.02f * normal(rng);
        if (uni(rng) > 0.98f)
          v *= 15.0f;
        break;
      case Kind::OneSigned:
        v = 0.1f * std::fabs(normal(rng));
        break;
      case Kind::Uniform:
        v = uni(rng);
        break;
      case Kind::RandomScale:
        v = rowScale * normal(rng);
        break;
      case Kind::AlternatingBlocks: // runs of 32 at scale 3, then 1e-3
        v = ((c / 32) % 2 ? 1e-3f : 3.0f) * normal(rng);
        break;
      }
    }
  }
  return x;
}

constexpr Kind kKinds[] = {Kind::Gaussian,    Kind::GaussianOutliers,
                           Kind::OneSigned,   Kind::Uniform,
                           Kind::RandomScale, Kind::AlternatingBlocks};

/// Simple reference encoders working in value space: round to nearest with
/// the scale from the block's absolute maximum (min and max for the affine
/// formats), scales rounded as the format stores them. Returns false for
/// formats without such a short reference (the codebook i-quants).
float f16(float v) { return halfToFloat(floatToHalf(v)); }

void symRtn(const float *x, float *y, int n, float dAbsmaxDivisor, int qmin,
            int qmax) {
  float amax = 0, mx = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      mx = x[i];
    }
  const float d = f16(mx / dAbsmaxDivisor);
  for (int i = 0; i < n; ++i) {
    const float q =
        d != 0 ? std::min(std::max(std::nearbyint(x[i] / d), float(qmin)),
                          float(qmax))
               : 0;
    y[i] = q * d;
  }
}

void tableRtn(const float *x, float *y, int n, float d, const float *levels,
              int count) {
  for (int i = 0; i < n; ++i) {
    float best = levels[0] * d;
    for (int k = 1; k < count; ++k)
      if (std::fabs(x[i] - levels[k] * d) < std::fabs(x[i] - best))
        best = levels[k] * d;
    y[i] = best;
  }
}

/// Affine RTN for one group: y = d * q + m with q in [0, qmax]; when
/// `kquant` the min is kept <= 0 (as the K-quants store it).
void affRtn(const float *x, float *y, int n, int qmax, float d, float m) {
  for (int i = 0; i < n; ++i) {
    const float q =
        d > 0 ? std::min(std::max(std::nearbyint((x[i] - m) / d), 0.0f),
                         float(qmax))
              : 0;
    y[i] = d * q + m;
  }
}

bool referenceEncode(Format format, const float *x, float *y, size_t n) {
  static const float kE2M1[15] = {-6,   -4, -3,   -2, -1.5f, -1, -0.5f, 0,
                                  0.5f, 1,  1.5f, 2,  3,     4,  6};
  static const float kIQ4[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                 1,    13,   25,  38,  53,  69,  89,  113};
  switch (format) {
  case Format::Q4_0:
    for (size_t b = 0; b < n; b += 32)
      symRtn(x + b, y + b, 32, -8, -8, 7);
    return true;
  case Format::Q5_0:
    for (size_t b = 0; b < n; b += 32)
      symRtn(x + b, y + b, 32, -16, -16, 15);
    return true;
  case Format::Q8_0:
    for (size_t b = 0; b < n; b += 32)
      symRtn(x + b, y + b, 32, 127, -127, 127);
    return true;
  case Format::Q4_1:
  case Format::Q5_1: {
    const int qmax = format == Format::Q4_1 ? 15 : 31;
    for (size_t b = 0; b < n; b += 32) {
      float lo = x[b], hi = x[b];
      for (size_t i = b; i < b + 32; ++i) {
        lo = std::min(lo, x[i]);
        hi = std::max(hi, x[i]);
      }
      affRtn(x + b, y + b, 32, qmax, f16((hi - lo) / qmax), f16(lo));
    }
    return true;
  }
  case Format::IQ4_NL:
    for (size_t b = 0; b < n; b += 32) {
      float amax = 0, mx = 0;
      for (size_t i = b; i < b + 32; ++i)
        if (std::fabs(x[i]) > amax) {
          amax = std::fabs(x[i]);
          mx = x[i];
        }
      tableRtn(x + b, y + b, 32, f16(mx / -127.0f), kIQ4, 16);
    }
    return true;
  case Format::TQ1_0:
  case Format::TQ2_0:
  case Format::Q2_0:
  case Format::Q1_0: {
    const int len = int(formatInfo(format).blockElems);
    for (size_t b = 0; b < n; b += len) {
      if (format == Format::Q1_0) {
        double s = 0;
        for (int i = 0; i < len; ++i)
          s += std::fabs(x[b + i]);
        const float d = f16(float(s / len));
        for (int i = 0; i < len; ++i)
          y[b + i] = x[b + i] < 0 ? -d : d;
        continue;
      }
      symRtn(x + b, y + b, len, 1.0f, -1, 1);
    }
    return true;
  }
  case Format::MXFP4:
    for (size_t b = 0; b < n; b += 32) {
      float amax = 0;
      for (size_t i = b; i < b + 32; ++i)
        amax = std::max(amax, std::fabs(x[i]));
      const float d =
          amax > 0 ? std::ldexp(1.0f, int(std::floor(std::log2(amax))) - 2)
                   : 0.0f;
      tableRtn(x + b, y + b, 32, d, kE2M1, 15);
    }
    return true;
  case Format::NVFP4:
    // Per 16 elements: the ue4m3 scale nearest amax / 6.
    for (size_t b = 0; b < n; b += 16) {
      float amax = 0;
      for (size_t i = b; i < b + 16; ++i)
        amax = std::max(amax, std::fabs(x[i]));
      float d = 0;
      for (int code = 1; code < 127; ++code) {
        const int e = code >> 3, m = code & 7;
        const float v = e == 0 ? std::ldexp(float(m), -9)
                               : std::ldexp(float(8 + m), e - 10);
        if (std::fabs(v - amax / 6) < std::fabs(d - amax / 6))
          d = v;
      }
      tableRtn(x + b, y + b, 16, d, kE2M1, 15);
    }
    return true;
  case Format::Q4_K:
  case Format::Q5_K:
  case Format::Q2_K: {
    // Group min/max, then 6-bit (4-bit for q2_K) scales and mins by
    // absmax RTN against f16 super-scales.
    const int glen = format == Format::Q2_K ? 16 : 32;
    const int qmax = format == Format::Q4_K   ? 15
                     : format == Format::Q5_K ? 31
                                              : 3;
    const int smax = format == Format::Q2_K ? 15 : 63;
    for (size_t b = 0; b < n; b += 256) {
      float sc[16], mn[16], scMax = 0, mnMax = 0;
      const int groups = 256 / glen;
      for (int g = 0; g < groups; ++g) {
        float lo = 0, hi = x[b + g * glen];
        for (int i = 0; i < glen; ++i) {
          lo = std::min(lo, x[b + g * glen + i]);
          hi = std::max(hi, x[b + g * glen + i]);
        }
        sc[g] = (hi - lo) / qmax;
        mn[g] = -lo;
        scMax = std::max(scMax, sc[g]);
        mnMax = std::max(mnMax, mn[g]);
      }
      const float d = f16(scMax / smax), dmin = f16(mnMax / smax);
      for (int g = 0; g < groups; ++g) {
        const float s =
            d > 0 ? std::min(std::nearbyint(sc[g] / d), float(smax)) : 0;
        const float m =
            dmin > 0 ? std::min(std::nearbyint(mn[g] / dmin), float(smax)) : 0;
        affRtn(x + b + g * glen, y + b + g * glen, glen, qmax, d * s,
               -(dmin * m));
      }
    }
    return true;
  }
  case Format::Q3_K:
  case Format::Q6_K: {
    const int qmax = format == Format::Q3_K ? 4 : 32;
    const int smax = format == Format::Q3_K ? 32 : 128;
    for (size_t b = 0; b < n; b += 256) {
      float sc[16], scMax = 0, scSigned = 0;
      for (int g = 0; g < 16; ++g) {
        float amax = 0, mx = 0;
        for (int i = 0; i < 16; ++i)
          if (std::fabs(x[b + 16 * g + i]) > amax) {
            amax = std::fabs(x[b + 16 * g + i]);
            mx = x[b + 16 * g + i];
          }
        sc[g] = mx / -float(qmax);
        if (std::fabs(sc[g]) > scMax) {
          scMax = std::fabs(sc[g]);
          scSigned = sc[g];
        }
      }
      const float d = f16(scSigned / -float(smax));
      for (int g = 0; g < 16; ++g) {
        const float s =
            d != 0 ? std::min(std::max(std::nearbyint(sc[g] / d), -float(smax)),
                              float(smax - 1))
                   : 0;
        const float dl = d * s;
        for (int i = 0; i < 16; ++i) {
          const float q =
              dl != 0
                  ? std::min(std::max(std::nearbyint(x[b + 16 * g + i] / dl),
                                      -float(qmax)),
                             float(qmax - 1))
                  : 0;
          y[b + 16 * g + i] = dl * q;
        }
      }
    }
    return true;
  }
  default:
    return false;
  }
}

class EncodeFresh : public testing::TestWithParam<Format> {};
class EncodeFreshVsReference : public testing::TestWithParam<Format> {};
class EncodeFreshVsGgml : public testing::TestWithParam<Format> {};

/// Formats with a short round-to-nearest reference in referenceEncode.
bool hasReferenceEncode(Format f) {
  const size_t n = formatInfo(f).blockElems;
  std::vector<float> x(n, 0.5f), y(n);
  return referenceEncode(f, x.data(), y.data(), n);
}

// No worse than plain round-to-nearest with absmax scales, on every kind of
// data, two shapes and two seeds.
TEST_P(EncodeFreshVsReference, NoWorseThanRoundToNearest) {
  const Format format = GetParam();
  const size_t shapes[2][2] = {{8, 768}, {3, 2048}};
  int checked = 0;
  for (Kind kind : kKinds)
    for (const auto &shape : shapes)
      for (uint32_t seed : {11u, 12345u}) {
        const size_t rows = shape[0], cols = shape[1], n = rows * cols;
        const std::vector<float> x = makeData(kind, rows, cols, seed);
        std::vector<float> ref(n);
        ASSERT_TRUE(referenceEncode(format, x.data(), ref.data(), n));
        const std::vector<float> imatrix = goldenImatrix(cols);
        const float *imp =
            encodeNeedsImportance(format) ? imatrix.data() : nullptr;
        const std::vector<float> ours =
            roundTrip(format, x.data(), rows, cols, imp);
        const double e = relRmse(ours.data(), x.data(), rows, cols);
        const double r = relRmse(ref.data(), x.data(), rows, cols);
        EXPECT_LE(e, r + kAbsEps)
            << formatInfo(format).name << " kind " << int(kind) << " shape "
            << rows << "x" << cols << " seed " << seed;
        ++checked;
      }
  EXPECT_GT(checked, 0);
}

// No worse than ggml on the same distribution: ggml's error on the golden
// rows of N(0, 0.02) (rows 1 and 9), of 0.1 |N(0, 1)| (rows 7 and 15) and of
// runs of 32 alternating between scales 3 and 1e-3 (rows 6 and 14) is
// compared with ours on fresh rows of those kinds, other seed and shape. The
// 2% slack covers sampling noise between 2 golden rows and 12 fresh ones.
// Not instantiated for f32/f16/bf16: a fixed conversion, bit-identical to
// ggml's, where comparing two samples would only compare sampling noise.
TEST_P(EncodeFreshVsGgml, NoWorseOnSameDistribution) {
  const Format format = GetParam();
  const GoldenCase g = goldenCase(format);
  ASSERT_TRUE(g.src);
  std::vector<float> ggmlDeq(g.rows * g.cols);
  decodeToF32(format, g.q->data, ggmlDeq.data(), ggmlDeq.size());
  const struct {
    Kind kind;
    size_t rowA, rowB;
  } cases[] = {{Kind::Gaussian, 1, 9},
               {Kind::OneSigned, 7, 15},
               {Kind::AlternatingBlocks, 6, 14}};
  for (const auto &c : cases) {
    double ggml = 0;
    for (size_t row : {c.rowA, c.rowB})
      ggml += relRmse(ggmlDeq.data() + row * g.cols, g.src + row * g.cols, 1,
                      g.cols) /
              2;
    const size_t rows = 12, cols = 1024;
    const std::vector<float> x = makeData(c.kind, rows, cols, 777);
    const std::vector<float> imatrix = goldenImatrix(cols);
    const std::vector<float> ours = roundTrip(
        format, x.data(), rows, cols, g.imatrix ? imatrix.data() : nullptr);
    EXPECT_LE(relRmse(ours.data(), x.data(), rows, cols), ggml * 1.02 + kAbsEps)
        << formatInfo(format).name << " kind " << int(c.kind);
  }
}

// Re-encoding decoded values: never worse than the first encoding; exact
// for the formats whose scale search is exhaustive over the few codes that
// can be optimal (plain floats, fp4, ternary and 1/2-bit formats).
TEST_P(EncodeFresh, ReencodeDecoded) {
  const Format format = GetParam();
  const bool exact = format == Format::F32 || format == Format::F16 ||
                     format == Format::BF16 || format == Format::MXFP4 ||
                     format == Format::NVFP4 || format == Format::TQ1_0 ||
                     format == Format::TQ2_0 || format == Format::Q1_0 ||
                     format == Format::Q2_0;
  const size_t rows = 6, cols = 1280;
  const std::vector<float> imatrix = goldenImatrix(cols);
  const float *imp = encodeNeedsImportance(format) ? imatrix.data() : nullptr;
  for (Kind kind : kKinds) {
    const std::vector<float> x = makeData(kind, rows, cols, 99);
    const std::vector<float> y = roundTrip(format, x.data(), rows, cols, imp);
    const std::vector<float> z = roundTrip(format, y.data(), rows, cols, imp);
    const double first = relRmse(y.data(), x.data(), rows, cols);
    const double second = relRmse(z.data(), y.data(), rows, cols);
    EXPECT_LE(second, first + kAbsEps)
        << formatInfo(format).name << " kind " << int(kind);
    if (exact)
      EXPECT_EQ(second, 0.0)
          << formatInfo(format).name << " kind " << int(kind);
  }
}

// Zero rows decode to zeros; huge and tiny magnitudes give finite output.
TEST_P(EncodeFresh, ExtremeInputs) {
  const Format format = GetParam();
  const size_t cols = 256;
  const std::vector<float> imatrix = goldenImatrix(cols);
  const float *imp = encodeNeedsImportance(format) ? imatrix.data() : nullptr;
  std::vector<float> zeros(cols, 0.0f);
  for (float v : roundTrip(format, zeros.data(), 1, cols, imp))
    EXPECT_EQ(v, 0.0f) << formatInfo(format).name;
  for (float scale : {1e-30f, 1e-7f, 1e4f, 1e30f}) {
    std::vector<float> x = makeData(Kind::Gaussian, 1, cols, 5);
    for (float &v : x)
      v *= scale / 0.02f;
    for (float v : roundTrip(format, x.data(), 1, cols, imp))
      if (format != Format::F16 && format != Format::F32)
        ASSERT_TRUE(std::isfinite(v))
            << formatInfo(format).name << " scale " << scale;
  }
}

INSTANTIATE_TEST_SUITE_P(AllFormats, EncodeFresh,
                         testing::ValuesIn(allFormats()), formatName);
INSTANTIATE_TEST_SUITE_P(WithReference, EncodeFreshVsReference,
                         testing::ValuesIn(formatsWhere(hasReferenceEncode)),
                         formatName);
INSTANTIATE_TEST_SUITE_P(BlockFormats, EncodeFreshVsGgml,
                         testing::ValuesIn(formatsWhere([](Format f) {
                           return !isPlainFloat(f);
                         })),
                         formatName);

//===----------------------------------------------------------------------===//
// Arguments and speed
//===----------------------------------------------------------------------===//

TEST(EncodeArgs, ImportanceRequirementMatchesFormats) {
  for (const FormatInfo &info : kFormats) {
    EXPECT_EQ(encodeNeedsImportance(info.format),
              formatRequiresImportance(info.format))
        << info.name;
    if (!encodeNeedsImportance(info.format))
      continue;
    std::vector<float> x(256, 0.5f);
    std::vector<uint8_t> out(encodedBytes(info.format, 256));
    std::string err;
    EXPECT_FALSE(
        encodeFromF32(info.format, x.data(), out.data(), 1, 256, nullptr, &err))
        << info.name;
    EXPECT_NE(err.find("importance"), std::string::npos) << err;
  }
}

TEST(EncodeArgs, RejectsBadRowLengthAndWeights) {
  std::vector<float> x(300, 1.0f);
  std::vector<uint8_t> out(1024);
  std::string err;
  EXPECT_FALSE(
      encodeFromF32(Format::Q4_K, x.data(), out.data(), 1, 300, nullptr, &err));
  EXPECT_NE(err.find("multiple"), std::string::npos) << err;
  std::vector<float> imp(32, 1.0f);
  imp[3] = -1.0f;
  err.clear();
  EXPECT_FALSE(encodeFromF32(Format::Q4_0, x.data(), out.data(), 1, 32,
                             imp.data(), &err));
  EXPECT_NE(err.find("column 3"), std::string::npos) << err;
}

TEST(EncodeArgs, RejectsNonFiniteInputForBlockFormats) {
  for (float bad : {NAN, INFINITY, -INFINITY})
    for (const FormatInfo &info : kFormats) {
      const size_t cols = 256;
      std::vector<float> x(2 * cols, 0.25f);
      x[cols + 7] = bad;
      std::vector<uint8_t> out(encodedBytes(info.format, x.size()));
      const std::vector<float> imatrix = goldenImatrix(cols);
      std::string err;
      const bool ok = encodeFromF32(info.format, x.data(), out.data(), 2, cols,
                                    imatrix.data(), &err);
      if (info.format == Format::F32 || info.format == Format::F16 ||
          info.format == Format::BF16) {
        EXPECT_TRUE(ok) << info.name; // NaN and Inf have float encodings
      } else {
        EXPECT_FALSE(ok) << info.name;
        EXPECT_NE(err.find("row 1, column 7"), std::string::npos) << err;
      }
    }
}

// The CLI and the compiler's requantization encode whole weight matrices:
// 1024 x 4096 q4_K (a quarter of a 4096 x 4096 matrix) must take seconds,
// not minutes. The bound is loose for shared CI machines.
TEST(EncodeSpeed, Q4KQuarterMatrix) {
  const size_t rows = 1024, cols = 4096;
  const std::vector<float> x = makeData(Kind::Gaussian, rows, cols, 3);
  std::vector<uint8_t> out(encodedBytes(Format::Q4_K, rows * cols));
  std::string err;
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(encodeFromF32(Format::Q4_K, x.data(), out.data(), rows, cols,
                            nullptr, &err));
  const double s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  RecordProperty("seconds", std::to_string(s));
  EXPECT_LT(s, 10.0);
}

} // namespace
