//===- EncodeLegacy.cpp - Encoders of q4_0, q4_1, q5_0, q5_1, q8_0 --------===//
//
// The 32-element legacy formats: one f16 scale (and for _1 an f16 offset)
// per block. ggml's reference maps the largest |x| to the end level; here
// the scale is searched (EncodeCommon.h: several anchors, least-squares
// refits) and then rounded to the f16 neighbour that, with codes re-chosen
// for the rounded scale, errs least. Layouts: see Decode.cpp.
//
//===----------------------------------------------------------------------===//

#include "BlockLayouts.h"
#include "EncodeCommon.h"

namespace qcc {
namespace encode {

/// The fifth bits of 32 5-bit codes as q5_0 / q5_1 store them: bit j of a
/// little-endian u32.
static uint32_t highBits32(const int *u) {
  uint32_t qh = 0;
  for (int j = 0; j < 32; ++j)
    qh |= uint32_t((u[j] >> 4) & 1) << j;
  return qh;
}

/// Symmetric formats: y = (q - offset) * d, q - offset in [qmin, qmax].
static uint16_t encodeSymmetric(const float *x, const float *w, int qmin,
                                int qmax, int *codes) {
  const IntLevels lv{qmin, qmax};
  const float d = fitScale(x, w, 32, lv, codes);
  if (d == 0.0f)
    return 0;
  return bestHalfScale(x, w, 32, lv, d, codes);
}

// q4_0 (18 B): f16 d @0, qs[16] @2.
static void encodeQ4_0(const float *x, const float *w, uint8_t *out) {
  int q[32];
  storeU16(out + layout::Q4_0::d, encodeSymmetric(x, w, -8, 7, q));
  for (int &c : q)
    c += 8;
  packNibbles32(q, out + layout::Q4_0::qs);
}

// q5_0 (22 B): f16 d @0, qh u32 @2, qs[16] @6.
static void encodeQ5_0(const float *x, const float *w, uint8_t *out) {
  int q[32];
  storeU16(out + layout::Q5_0::d, encodeSymmetric(x, w, -16, 15, q));
  for (int &c : q)
    c += 16;
  storeU32(out + layout::Q5_0::qh, highBits32(q));
  packNibbles32(q, out + layout::Q5_0::qs);
}

// q8_0 (34 B): f16 d @0, int8 qs[32] @2. -128 is a valid int8 code.
static void encodeQ8_0(const float *x, const float *w, uint8_t *out) {
  int q[32];
  storeU16(out + layout::Q8_0::d, encodeSymmetric(x, w, -128, 127, q));
  for (int j = 0; j < 32; ++j)
    out[layout::Q8_0::qs + j] = uint8_t(int8_t(q[j]));
}

/// Affine formats: y = q * d + m, q in [0, qmax]; d and m are f16.
static void encodeAffine(const float *x, const float *w, int qmax,
                         uint16_t &dBits, uint16_t &mBits, int *q) {
  float d, m;
  fitAffine(x, w, 32, qmax, /*minNonPositive=*/false, d, m, q);
  // Round m first, then pick the f16 d (and codes) that best fit the rounded
  // m; both rounding directions of m are tried.
  double bestErr = INFINITY;
  const uint16_t m0 = toHalfClamped(m);
  for (int k = -1; k <= 1; ++k) {
    const int mag = int(m0 & 0x7fff) + k;
    if (mag < 0 || mag > 0x7bff)
      continue;
    const uint16_t mh = uint16_t((m0 & 0x8000) | mag);
    const float mv = halfToFloat(mh);
    float xs[32];
    for (int j = 0; j < 32; ++j)
      xs[j] = x[j] - mv;
    int codes[32];
    const IntLevels lv{0, qmax};
    const uint16_t dh = d > 0 ? bestHalfScale(xs, w, 32, lv, d, codes) : 0;
    if (d <= 0)
      for (int &c : codes)
        c = 0;
    const double err = errorAtScale(xs, w, 32, lv, halfToFloat(dh), nullptr);
    if (err < bestErr) {
      bestErr = err;
      dBits = dh;
      mBits = mh;
      std::memcpy(q, codes, sizeof(codes));
    }
  }
}

// q4_1 (20 B): f16 d @0, f16 m @2, qs[16] @4.
static void encodeQ4_1(const float *x, const float *w, uint8_t *out) {
  int q[32];
  uint16_t d, m;
  encodeAffine(x, w, 15, d, m, q);
  storeU16(out + layout::Q4_1::d, d);
  storeU16(out + layout::Q4_1::m, m);
  packNibbles32(q, out + layout::Q4_1::qs);
}

// q5_1 (24 B): f16 d @0, f16 m @2, qh u32 @4, qs[16] @8.
static void encodeQ5_1(const float *x, const float *w, uint8_t *out) {
  int q[32];
  uint16_t d, m;
  encodeAffine(x, w, 31, d, m, q);
  storeU16(out + layout::Q5_1::d, d);
  storeU16(out + layout::Q5_1::m, m);
  storeU32(out + layout::Q5_1::qh, highBits32(q));
  packNibbles32(q, out + layout::Q5_1::qs);
}

BlockFn legacyBlockEncoder(Format format) {
  switch (format) {
  case Format::Q4_0:
    return encodeQ4_0;
  case Format::Q4_1:
    return encodeQ4_1;
  case Format::Q5_0:
    return encodeQ5_0;
  case Format::Q5_1:
    return encodeQ5_1;
  case Format::Q8_0:
    return encodeQ8_0;
  default:
    return nullptr;
  }
}

} // namespace encode
} // namespace qcc
