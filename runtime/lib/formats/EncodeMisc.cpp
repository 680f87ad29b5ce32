//===- EncodeMisc.cpp - Encoders of iq4_*, tq*, mxfp4, nvfp4, q1_0, q2_0 --===//
//
// Formats whose levels are a fixed small set (ternary, 2-bit, 1-bit) or a
// non-linear table (iq4_nl's 16 values, the e2m1 values of the fp4
// formats). All use the shared scale search of EncodeCommon.h; the fp4
// formats search their power-of-two / e4m3 scale codes directly, since only
// a handful of codes lie near the ideal scale. Layouts: see Decode.cpp.
//
//===----------------------------------------------------------------------===//

#include "BlockLayouts.h"
#include "Codebooks.h"
#include "EncodeCommon.h"

#include <array>

namespace qcc {
namespace encode {

using namespace codebooks;

//===----------------------------------------------------------------------===//
// iq4_nl / iq4_xs
//===----------------------------------------------------------------------===//

/// kValuesIQ4NL as floats; the table is sorted, so index == code.
static TableLevels iq4Levels() {
  const float vals[16] = {
      float(kValuesIQ4NL[0]),  float(kValuesIQ4NL[1]),  float(kValuesIQ4NL[2]),
      float(kValuesIQ4NL[3]),  float(kValuesIQ4NL[4]),  float(kValuesIQ4NL[5]),
      float(kValuesIQ4NL[6]),  float(kValuesIQ4NL[7]),  float(kValuesIQ4NL[8]),
      float(kValuesIQ4NL[9]),  float(kValuesIQ4NL[10]), float(kValuesIQ4NL[11]),
      float(kValuesIQ4NL[12]), float(kValuesIQ4NL[13]), float(kValuesIQ4NL[14]),
      float(kValuesIQ4NL[15])};
  QCC_ENCODER_TABLE const TableLevels lv = TableLevels::make(vals, 16);
  return lv;
}

// iq4_nl (18 B): f16 d @0, qs[16] @2 (q4_0 nibble order).
static void encodeIQ4_NL(const float *x, const float *w, uint8_t *out) {
  const TableLevels lv = iq4Levels();
  int q[32];
  const float d = fitScale(x, w, 32, lv, q, 8);
  storeU16(out + layout::IQ4_NL::d,
           d == 0.0f ? 0 : bestHalfScale(x, w, 32, lv, d, q));
  packNibbles32(q, out + layout::IQ4_NL::qs);
}

// iq4_xs (136 B): f16 d @0, u16 scales_h @2, scales_l[4] @4, qs[128] @8;
// group g has the 6-bit scale ls = sc + 32.
static void encodeIQ4_XS(const float *x, const float *w, uint8_t *out) {
  int sc[8], q[256];
  const uint16_t d = fitSuperScale(x, w, 8, 32, iq4Levels(), -32, 31, sc, q);
  using L = layout::IQ4_XS;
  storeU16(out + L::d, d);
  uint16_t scalesH = 0;
  uint8_t *scalesL = out + L::scalesL;
  std::memset(scalesL, 0, 4);
  for (int g = 0; g < 8; ++g) {
    const int ls = sc[g] + 32;
    scalesL[g / 2] |= uint8_t((ls & 0xf) << (4 * (g % 2)));
    scalesH |= uint16_t((ls >> 4) << (2 * g));
    packNibbles32(q + 32 * g, out + L::qs + 16 * g);
  }
  storeU16(out + L::scalesH, scalesH);
}

//===----------------------------------------------------------------------===//
// Ternary and 1/2-bit formats
//===----------------------------------------------------------------------===//

/// One f16 scale for the whole block, codes from `lv`.
template <class Levels>
static uint16_t singleScale(const float *x, const float *w, int n,
                            const Levels &lv, int *q) {
  const float d = fitScale(x, w, n, lv, q);
  if (d == 0.0f)
    return 0;
  return bestHalfScale(x, w, n, lv, d, q);
}

/// Packs 5 (or 4) trits t[k * stride] (each 0..2, most significant first)
/// into one byte as the fixed-point fraction tq1_0's decoder reads:
/// ceil(v * 256 / 243) for v = sum t_k 3^(4-k).
static uint8_t packTrits(const int *t, int count, int stride) {
  int v = 0;
  for (int k = 0; k < 5; ++k)
    v = v * 3 + (k < count ? t[k * stride] : 0);
  return uint8_t((v * 256 + 242) / 243);
}

// tq1_0 (54 B): qs[48] @0, qh[4] @48, f16 d @52.
static void encodeTQ1_0(const float *x, const float *w, uint8_t *out) {
  int q[256];
  using L = layout::TQ1_0;
  storeU16(out + L::d, singleScale(x, w, 256, IntLevels{-1, 1}, q));
  for (int &c : q)
    ++c;
  // Digit n of qs[m] is element 32n + m (m < 32), of qs[32 + m] element
  // 160 + 16n + m (m < 16), of qh[m] element 240 + 4n + m (n < 4).
  for (int m = 0; m < 32; ++m)
    out[L::qs + m] = packTrits(q + m, 5, 32);
  for (int m = 0; m < 16; ++m)
    out[L::qs + 32 + m] = packTrits(q + 160 + m, 5, 16);
  for (int m = 0; m < 4; ++m)
    out[L::qh + m] = packTrits(q + 240 + m, 4, 4);
}

// tq2_0 (66 B): qs[64] @0, f16 d @64. ggml's encoder only uses codes 0..2,
// but the format also decodes code 3 as +2d; with the sign of d free that
// makes a 4-level set {-1, 0, 1, 2} * d, which fits data better.
static void encodeTQ2_0(const float *x, const float *w, uint8_t *out) {
  int q[256];
  using L = layout::TQ2_0;
  storeU16(out + L::d, singleScale(x, w, 256, IntLevels{-1, 2}, q));
  std::memset(out + L::qs, 0, 64);
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 4; ++k)
      for (int m = 0; m < 32; ++m)
        out[L::qs + 32 * h + m] |=
            uint8_t((q[128 * h + 32 * k + m] + 1) << (2 * k));
}

// q1_0 (18 B, 128 elements): f16 d @0, qs[16] @2; bit set -> +d.
static void encodeQ1_0(const float *x, const float *w, uint8_t *out) {
  static const float kSigns[2] = {-1.0f, 1.0f};
  QCC_ENCODER_TABLE const TableLevels lv = TableLevels::make(kSigns, 2);
  int q[128];
  using L = layout::Q1_0;
  // With codes fixed to the signs, the least-squares scale is the weighted
  // mean of |x|; only its f16 rounding is left to search.
  double swx = 0, sw = 0;
  for (int j = 0; j < 128; ++j) {
    swx += double(w[j]) * std::fabs(x[j]);
    sw += w[j];
  }
  const float d = sw > 0 ? float(swx / sw) : 0.0f;
  for (int j = 0; j < 128; ++j)
    q[j] = x[j] < 0 ? 0 : 1;
  storeU16(out + L::d, d > 0 ? bestHalfScale(x, w, 128, lv, d, q) : 0);
  std::memset(out + L::qs, 0, 16);
  for (int j = 0; j < 128; ++j)
    out[L::qs + j / 8] |= uint8_t(q[j] << (j % 8));
}

// q2_0 (18 B, 64 elements): f16 d @0, qs[16] @2; code q + 1 in bits
// 2(j%4).. of qs[j/4]; levels {-1, 0, 1, 2} * d.
static void encodeQ2_0(const float *x, const float *w, uint8_t *out) {
  int q[64];
  using L = layout::Q2_0;
  storeU16(out + L::d, singleScale(x, w, 64, IntLevels{-1, 2}, q));
  std::memset(out + L::qs, 0, 16);
  for (int j = 0; j < 64; ++j)
    out[L::qs + j / 4] |= uint8_t((q[j] + 1) << (2 * (j % 4)));
}

//===----------------------------------------------------------------------===//
// fp4 formats
//===----------------------------------------------------------------------===//

/// The doubled e2m1 values sorted, and the 4-bit code of each.
static const float kFP4Sorted[15] = {-12, -8, -6, -4, -3, -2, -1, 0,
                                     1,   2,  3,  4,  6,  8,  12};
static const uint8_t kFP4Code[15] = {15, 14, 13, 12, 11, 10, 9, 0,
                                     1,  2,  3,  4,  5,  6,  7};

static uint8_t fp4Nibble(int sortedIndex) { return kFP4Code[sortedIndex]; }

// mxfp4 (17 B): e8m0 exponent e @0, qs[16] @1; y = kv[q] * 2^(e - 128).
static void encodeMXFP4(const float *x, const float *w, uint8_t *out) {
  QCC_ENCODER_TABLE const TableLevels lv = TableLevels::make(kFP4Sorted, 15);
  float amax = 0;
  for (int j = 0; j < 32; ++j)
    amax = std::max(amax, std::fabs(x[j]));
  int q[32], best[32] = {}; // code 0 (zero) when nothing beats it
  int bestE = 0;
  double bestErr = INFINITY;
  // The scale that maps amax to 12 (2 * 6.0), and a few powers of two on
  // either side; only these can be optimal.
  int e0 = 0;
  if (amax > 0 && std::isfinite(amax))
    e0 = int(std::floor(std::log2(amax / 12.0f))) + 128;
  for (int e = e0 - 1; e <= e0 + 2; ++e) {
    if (e < 0 || e > 254)
      continue;
    const double err = errorAtScale(x, w, 32, lv, std::ldexp(1.0f, e - 128), q);
    if (err < bestErr) {
      bestErr = err;
      bestE = e;
      std::memcpy(best, q, sizeof(q));
    }
  }
  out[layout::MXFP4::e] = uint8_t(bestE);
  for (int j = 0; j < 16; ++j)
    out[layout::MXFP4::qs + j] =
        uint8_t(fp4Nibble(best[j]) | (fp4Nibble(best[j + 16]) << 4));
}

/// The value an unsigned e4m3 code stands for, halved (the e2m1 values are
/// doubled). Codes 1..0x7e are finite and strictly increasing.
static float ue4m3Half(int code) {
  const int exp = (code >> 3) & 0xf, man = code & 7;
  return exp == 0 ? std::ldexp(float(man), -10)
                  : std::ldexp(float(8 + man), exp - 11);
}

// nvfp4 (36 B): ue4m3 scales d[4] @0, qs[32] @4; sub-block s element j < 8
// in the low nibble of qs[8s + j], j + 8 in the high nibble.
static void encodeNVFP4(const float *x, const float *w, uint8_t *out) {
  QCC_ENCODER_TABLE const auto table = [] {
    std::array<float, 127> t{};
    for (int c = 0; c < 127; ++c)
      t[c] = c == 0 ? 0.0f : ue4m3Half(c);
    return t;
  }();
  QCC_ENCODER_TABLE const TableLevels lv = TableLevels::make(kFP4Sorted, 15);
  // The finite nonzero code whose scale is nearest to d.
  auto nearestCode = [&](float d) {
    // The first code in 1..126 whose value is not below d (127 if none);
    // by hand rather than std::lower_bound, so that the device build of
    // the encoders (runtime/lib/step/DeviceEncoders.cu) has it too.
    int c = 1;
    for (int len = 126; len > 0;) {
      const int half = len / 2;
      if (table[c + half] < d) {
        c += half + 1;
        len -= half + 1;
      } else {
        len = half;
      }
    }
    if (c > 126 || (c > 1 && d - table[c - 1] < table[c] - d))
      --c;
    return std::min(std::max(c, 1), 126);
  };
  for (int s = 0; s < 4; ++s) {
    const float *xs = x + 16 * s, *ws = w + 16 * s;
    int q[16], best[16];
    const float dFit = fitScale(xs, ws, 16, lv, q, 6);
    float amax = 0;
    for (int j = 0; j < 16; ++j)
      amax = std::max(amax, std::fabs(xs[j]));
    // Code 0 (all zeros) is the fallback; then codes around the fitted and
    // the amax-derived scales.
    int bestCode = 0;
    double bestErr = 0;
    for (int j = 0; j < 16; ++j) {
      best[j] = 7; // the zero level
      bestErr += double(ws[j]) * xs[j] * xs[j];
    }
    // Candidate codes: around the fitted scale, and the codes that put the
    // largest |x| exactly on each positive level (an optimal scale maps it
    // to some level, so on-grid data is recovered exactly).
    int cands[16], nc = 0;
    auto add = [&](int c) {
      if (c < 1 || c > 126)
        return;
      for (int i = 0; i < nc; ++i)
        if (cands[i] == c)
          return;
      cands[nc++] = c;
    };
    const int fitCode = nearestCode(std::fabs(dFit));
    for (int c = fitCode - 1; c <= fitCode + 1; ++c)
      add(c);
    if (amax > 0)
      for (float level : {12.0f, 8.0f, 6.0f, 4.0f, 3.0f, 2.0f, 1.0f})
        add(nearestCode(amax / level));
    for (int i = 0; i < nc; ++i) {
      const int c = cands[i];
      const double err = errorAtScale(xs, ws, 16, lv, table[c], q);
      if (err < bestErr) {
        bestErr = err;
        bestCode = c;
        std::memcpy(best, q, sizeof(q));
      }
    }
    out[layout::NVFP4::d + s] = uint8_t(bestCode);
    for (int j = 0; j < 8; ++j)
      out[layout::NVFP4::qs + 8 * s + j] =
          uint8_t(fp4Nibble(best[j]) | (fp4Nibble(best[j + 8]) << 4));
  }
}

BlockFn miscBlockEncoder(Format format) {
  switch (format) {
  case Format::IQ4_NL:
    return encodeIQ4_NL;
  case Format::IQ4_XS:
    return encodeIQ4_XS;
  case Format::TQ1_0:
    return encodeTQ1_0;
  case Format::TQ2_0:
    return encodeTQ2_0;
  case Format::Q1_0:
    return encodeQ1_0;
  case Format::Q2_0:
    return encodeQ2_0;
  case Format::MXFP4:
    return encodeMXFP4;
  case Format::NVFP4:
    return encodeNVFP4;
  default:
    return nullptr;
  }
}

} // namespace encode
} // namespace qcc
