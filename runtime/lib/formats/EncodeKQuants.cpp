//===- EncodeKQuants.cpp - Encoders of q2_K .. q6_K -----------------------===//
//
// The K-quants store a 256-element super-block as groups with small integer
// scales (and for q2_K / q4_K / q5_K integer mins) times f16 super-scales.
// Encoding fits each group's ideal float scale (and min) first, then picks
// super-scales by trying several candidates with the group values rounded to
// integers, nudges every group's integers by +-1 where that lowers the
// error, and finally refits the super-scales by least squares over the whole
// block. All errors are measured on the values the decoder will produce
// (f16 super-scales, (d * sc) * q - dmin * m). Layouts: see Decode.cpp.
//
//===----------------------------------------------------------------------===//

#include "BlockLayouts.h"
#include "EncodeCommon.h"

namespace qcc {
namespace encode {

//===----------------------------------------------------------------------===//
// Symmetric K-quants: q3_K, q6_K
//===----------------------------------------------------------------------===//

// q3_K (110 B): hmask[32] @0, qs[64] @32, scales[12] @96, f16 d @108.
static void encodeQ3_K(const float *x, const float *w, uint8_t *out) {
  int sc[16], q[256];
  const uint16_t d =
      fitSuperScale(x, w, 16, 16, IntLevels{-4, 3}, -32, 31, sc, q);
  using L = layout::Q3_K;
  uint8_t *hmask = out + L::hmask, *qs = out + L::qs, *scales = out + L::scales;
  std::memset(out, 0, L::d);
  // Element 128h + 32s + l: low 2 bits of q + 4 in bits 2s of qs[32h + l],
  // the third bit in bit 4h + s of hmask[l].
  for (int h = 0; h < 2; ++h)
    for (int s = 0; s < 4; ++s)
      for (int l = 0; l < 32; ++l) {
        const int u = q[128 * h + 32 * s + l] + 4;
        qs[32 * h + l] |= uint8_t((u & 3) << (2 * s));
        hmask[l] |= uint8_t((u >> 2) << (4 * h + s));
      }
  // Scale i (stored + 32): low nibble in byte i % 8 (nibble i / 8), top two
  // bits in byte 8 + i % 4 at bit 2 * (i / 4).
  for (int i = 0; i < 16; ++i) {
    const int ls = sc[i] + 32;
    scales[i % 8] |= uint8_t((ls & 0xf) << (4 * (i / 8)));
    scales[8 + i % 4] |= uint8_t((ls >> 4) << (2 * (i / 4)));
  }
  storeU16(out + L::d, d);
}

// q6_K (210 B): ql[128] @0, qh[64] @128, int8 scales[16] @192, f16 d @208.
static void encodeQ6_K(const float *x, const float *w, uint8_t *out) {
  int sc[16], q[256];
  const uint16_t d =
      fitSuperScale(x, w, 16, 16, IntLevels{-32, 31}, -128, 127, sc, q);
  using L = layout::Q6_K;
  uint8_t *ql = out + L::ql, *qh = out + L::qh;
  std::memset(out, 0, L::scales);
  // Element 128h + 32k + l: low nibble of q + 32 in ql[64h + l + 32(k & 1)]
  // (low nibble for k < 2, high for k >= 2), top bits at 2k of qh[32h + l].
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 32; ++l) {
        const int u = q[128 * h + 32 * k + l] + 32;
        ql[64 * h + l + 32 * (k & 1)] |= uint8_t((u & 0xf) << (4 * (k >> 1)));
        qh[32 * h + l] |= uint8_t((u >> 4) << (2 * k));
      }
  for (int i = 0; i < 16; ++i)
    out[L::scales + i] = uint8_t(int8_t(sc[i]));
  storeU16(out + L::d, d);
}

//===----------------------------------------------------------------------===//
// Affine K-quants: q2_K, q4_K, q5_K
//===----------------------------------------------------------------------===//

namespace {

/// The result of an affine super-block fit: group g is reconstructed as
/// (d * sc[g]) * q - (dmin * mn[g]).
struct AffineSuper {
  uint16_t d = 0, dmin = 0;
  int sc[16] = {}, mn[16] = {};
  int q[256] = {};
};

class AffineSuperFit {
public:
  AffineSuperFit(const float *x, const float *w, int nsub, int sublen, int qmax,
                 int scMax, int mMax)
      : x(x), w(w), nsub(nsub), sublen(sublen), qmax(qmax), scMax(scMax),
        mMax(mMax) {}

  void run(AffineSuper &r);

private:
  /// Error of group g at (dv * scg, mv * mg) with codes re-chosen.
  double groupErr(int g, float dv, float mv, int scg, int mg,
                  int *codes) const {
    const float *xg = x + g * sublen, *wg = w + g * sublen;
    const float scale = dv * float(scg), off = mv * float(mg);
    const float id = scale > 0 ? 1.0f / scale : 0.0f;
    double err = 0;
    for (int i = 0; i < sublen; ++i) {
      const int c = roundClamp((xg[i] + off) * id, 0, qmax);
      codes[i] = c;
      const float r = xg[i] - (scale * float(c) - off);
      err += double(wg[i]) * r * r;
    }
    return err;
  }

  /// Total error of super-scales (dh, mh) with group integers rounded from
  /// the ideal a[] / b[] (or kept from `r` when `keep`); with `nudge`, each
  /// group also tries its integers +-1.
  double evaluate(uint16_t dh, uint16_t mh, bool keep, bool nudge,
                  AffineSuper &r, double bound) const;

  const float *x, *w;
  int nsub, sublen, qmax, scMax, mMax;
  float a[16], b[16]; // ideal group scale and (negated) offset
};

double AffineSuperFit::evaluate(uint16_t dh, uint16_t mh, bool keep, bool nudge,
                                AffineSuper &r, double bound) const {
  const float dv = halfToFloat(dh), mv = halfToFloat(mh);
  AffineSuper t;
  t.d = dh;
  t.dmin = mh;
  double total = 0;
  int codes[32];
  for (int g = 0; g < nsub; ++g) {
    int s, m;
    if (keep) {
      s = r.sc[g];
      m = r.mn[g];
    } else {
      s = dv > 0 ? roundClamp(a[g] / dv, 0, scMax) : 0;
      m = mv > 0 ? roundClamp(b[g] / mv, 0, mMax) : 0;
    }
    double e = groupErr(g, dv, mv, s, m, t.q + g * sublen);
    int bs = s, bm = m;
    if (nudge)
      for (int ds = -1; ds <= 1; ++ds)
        for (int dm = -1; dm <= 1; ++dm) {
          const int s2 = s + ds, m2 = m + dm;
          if ((ds == 0 && dm == 0) || s2 < 0 || s2 > scMax || m2 < 0 ||
              m2 > mMax)
            continue;
          const double e2 = groupErr(g, dv, mv, s2, m2, codes);
          if (e2 < e) {
            e = e2;
            bs = s2;
            bm = m2;
            std::memcpy(t.q + g * sublen, codes, sizeof(int) * sublen);
          }
        }
    t.sc[g] = bs;
    t.mn[g] = bm;
    total += e;
    if (total >= bound)
      return INFINITY;
  }
  r = t;
  return total;
}

void AffineSuperFit::run(AffineSuper &r) {
  float amax = 0, bmax = 0;
  int codes[32];
  for (int g = 0; g < nsub; ++g) {
    float d, m;
    fitAffine(x + g * sublen, w + g * sublen, sublen, qmax,
              /*minNonPositive=*/true, d, m, codes, 6);
    a[g] = d;
    b[g] = -m;
    amax = std::max(amax, a[g]);
    bmax = std::max(bmax, b[g]);
  }
  double best = INFINITY;
  AffineSuper cand;
  // Coarse pass: a few super-scale pairs with plain rounding.
  static constexpr float kDF[] = {1.0f, 0.94f, 0.87f};
  static constexpr float kMF[] = {1.0f, 0.9f};
  uint16_t bestD = 0, bestM = 0;
  for (float fd : kDF)
    for (float fm : kMF) {
      // A scale that underflows f16 is kept at one ulp: tiny blocks are then
      // carried by larger integer sub-scales instead of vanishing.
      const uint16_t dh =
          amax > 0 ? atLeastOneUlp(toHalfClamped(amax / (scMax * fd))) : 0;
      const uint16_t mh =
          bmax > 0 ? atLeastOneUlp(toHalfClamped(bmax / (mMax * fm))) : 0;
      const double e = evaluate(dh, mh, false, false, cand, best);
      if (e < best) {
        best = e;
        bestD = dh;
        bestM = mh;
      }
    }
  best = evaluate(bestD, bestM, false, true, r, INFINITY);
  // Least-squares refit of (d, dmin) for the chosen integers and codes:
  // x ~ d * (sc q) - dmin * mn.
  for (int it = 0; it < 2; ++it) {
    double sAA = 0, sAB = 0, sBB = 0, sXA = 0, sXB = 0;
    for (int g = 0; g < nsub; ++g)
      for (int i = 0; i < sublen; ++i) {
        const int k = g * sublen + i;
        const double A = double(r.sc[g]) * r.q[k], B = -double(r.mn[g]);
        sAA += w[k] * A * A;
        sAB += w[k] * A * B;
        sBB += w[k] * B * B;
        sXA += w[k] * x[k] * A;
        sXB += w[k] * x[k] * B;
      }
    const double det = sAA * sBB - sAB * sAB;
    double dd, dm;
    if (det > 1e-30 * (sAA * sBB) && det > 0) {
      dd = (sXA * sBB - sXB * sAB) / det;
      dm = (sAA * sXB - sAB * sXA) / det;
    } else if (sAA > 0) {
      dd = sXA / sAA;
      dm = halfToFloat(r.dmin);
    } else {
      break;
    }
    if (!(dd >= 0) || !(dm >= 0))
      break;
    const AffineSuper keep = r;
    const uint16_t dh = toHalfClamped(float(dd)), mh = toHalfClamped(float(dm));
    double improved = best;
    // The f16 neighbours with the integers kept; only the winner is then
    // nudged (nudging every neighbour costs 9x for little gain).
    for (int kd = -1; kd <= 1; ++kd)
      for (int km = -1; km <= 1; ++km) {
        const int md = int(dh) + kd, mm = int(mh) + km;
        if (md < 0 || md > 0x7bff || mm < 0 || mm > 0x7bff)
          continue;
        AffineSuper t = keep;
        const double e =
            evaluate(uint16_t(md), uint16_t(mm), true, false, t, improved);
        if (e < improved) {
          improved = e;
          r = t;
        }
      }
    if (improved < best) {
      AffineSuper t = r;
      const double e = evaluate(r.d, r.dmin, true, true, t, improved);
      if (e < improved) {
        improved = e;
        r = t;
      }
    }
    if (!(improved < best))
      break;
    best = improved;
  }
}

} // namespace

/// Packs the 6-bit (scale, min) pairs of q4_K / q5_K: pairs 0-3 in the low
/// 6 bits of bytes 0-3 / 4-7, pairs 4-7 as nibbles in bytes 8-11 with their
/// top two bits in the spare bits of bytes 0-7.
static void packScaleMinK4(const int *sc, const int *mn, uint8_t *p) {
  std::memset(p, 0, 12);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      p[j] |= uint8_t(sc[j]);
      p[j + 4] |= uint8_t(mn[j]);
    } else {
      p[j + 4] = uint8_t((sc[j] & 0xf) | ((mn[j] & 0xf) << 4));
      p[j - 4] |= uint8_t((sc[j] >> 4) << 6);
      p[j] |= uint8_t((mn[j] >> 4) << 6);
    }
  }
}

// q2_K (84 B): scales[16] @0 (scale | min << 4), qs[64] @16, f16 d @80,
// f16 dmin @82.
static void encodeQ2_K(const float *x, const float *w, uint8_t *out) {
  AffineSuper r;
  AffineSuperFit(x, w, 16, 16, 3, 15, 15).run(r);
  using L = layout::Q2_K;
  std::memset(out, 0, L::d);
  for (int g = 0; g < 16; ++g)
    out[L::scales + g] = uint8_t(r.sc[g] | (r.mn[g] << 4));
  // Element 128h + 32s + l is bits 2s of qs[32h + l].
  for (int h = 0; h < 2; ++h)
    for (int s = 0; s < 4; ++s)
      for (int l = 0; l < 32; ++l)
        out[L::qs + 32 * h + l] |=
            uint8_t(r.q[128 * h + 32 * s + l] << (2 * s));
  storeU16(out + L::d, r.d);
  storeU16(out + L::dmin, r.dmin);
}

// q4_K (144 B): f16 d @0, f16 dmin @2, scales[12] @4, qs[128] @16.
static void encodeQ4_K(const float *x, const float *w, uint8_t *out) {
  AffineSuper r;
  AffineSuperFit(x, w, 8, 32, 15, 63, 63).run(r);
  using L = layout::Q4_K;
  storeU16(out + L::d, r.d);
  storeU16(out + L::dmin, r.dmin);
  packScaleMinK4(r.sc, r.mn, out + L::scales);
  // Chunk c: element 64c + l in the low nibble of qs[32c + l], 64c + 32 + l
  // in the high nibble.
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l)
      out[L::qs + 32 * c + l] =
          uint8_t(r.q[64 * c + l] | (r.q[64 * c + 32 + l] << 4));
}

// q5_K (176 B): f16 d @0, f16 dmin @2, scales[12] @4, qh[32] @16,
// qs[128] @48; the fifth bit of element 32k + l is bit k of qh[l].
static void encodeQ5_K(const float *x, const float *w, uint8_t *out) {
  AffineSuper r;
  AffineSuperFit(x, w, 8, 32, 31, 63, 63).run(r);
  using L = layout::Q5_K;
  storeU16(out + L::d, r.d);
  storeU16(out + L::dmin, r.dmin);
  packScaleMinK4(r.sc, r.mn, out + L::scales);
  uint8_t *qh = out + L::qh, *qs = out + L::qs;
  std::memset(qh, 0, 32);
  for (int k = 0; k < 8; ++k)
    for (int l = 0; l < 32; ++l)
      qh[l] |= uint8_t((r.q[32 * k + l] >> 4) << k);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l)
      qs[32 * c + l] = uint8_t((r.q[64 * c + l] & 0xf) |
                               ((r.q[64 * c + 32 + l] & 0xf) << 4));
}

BlockFn kquantBlockEncoder(Format format) {
  switch (format) {
  case Format::Q2_K:
    return encodeQ2_K;
  case Format::Q3_K:
    return encodeQ3_K;
  case Format::Q4_K:
    return encodeQ4_K;
  case Format::Q5_K:
    return encodeQ5_K;
  case Format::Q6_K:
    return encodeQ6_K;
  default:
    return nullptr;
  }
}

} // namespace encode
} // namespace qcc
