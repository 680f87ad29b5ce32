//===- EncodeCommon.h - Shared scale/code search of the encoders (private) ===//
//
// Every block format reconstructs an element as (scale) * (level) [- min].
// The encoders differ in the level set and in how scales are stored, but all
// solve the same small problem: pick the scale (and min) that minimise the
// weighted squared error when each element takes its nearest level. The
// helpers here do that search once, for integer level ranges and for
// non-linear level tables, and the per-format files only pack the results.
//
// Weights are never null here: the dispatcher passes the importance row or a
// row of ones, so "no importance" minimises the plain squared error, which is
// what the quality metric measures.
//
//===----------------------------------------------------------------------===//

#ifndef QCC_RUNTIME_FORMATS_ENCODECOMMON_H
#define QCC_RUNTIME_FORMATS_ENCODECOMMON_H

#include "qcc/Runtime/Codecs.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstring>

namespace qcc {
namespace encode {

/// One block encoder: `x` holds the block's elements, `w` their weights
/// (never null), `out` receives `blockBytes` bytes.
using BlockFn = void (*)(const float *x, const float *w, uint8_t *out);

/// Looks up the block encoder of `format` in its family's file; nullptr if
/// that family does not handle the format.
BlockFn legacyBlockEncoder(Format format);
BlockFn kquantBlockEncoder(Format format);
BlockFn miscBlockEncoder(Format format);
BlockFn iqBlockEncoder(Format format);
#ifndef __CUDA_ARCH__
/// Writes the i-quant codebooks as prepared for search (and the sign index)
/// as C++ definitions of __device__ tables, for the device build of the
/// encoders (runtime/lib/step/GenIQGrids.cpp runs it at build time).
void writeDeviceIQGrids(std::FILE *out);
#endif

inline void storeU16(uint8_t *p, uint16_t v) { std::memcpy(p, &v, 2); }
inline void storeU32(uint8_t *p, uint32_t v) { std::memcpy(p, &v, 4); }

/// The f16 bits nearest to v, with overflow clamped to the largest finite.
inline uint16_t toHalfClamped(float v) {
  uint16_t h = floatToHalf(v);
  if ((h & 0x7c00) == 0x7c00)
    h = uint16_t((h & 0x8000) | 0x7bff);
  return h;
}

/// Rounds to the nearest integer (ties to even) after clamping to [lo, hi],
/// so that huge ratios cannot overflow the int (NaN maps to lo).
/// lrintf compiles to one instruction with -fno-math-errno, unlike
/// nearbyint, which is a library call on baseline x86-64.
inline int roundClamp(float v, int lo, int hi) {
  if (!(v >= float(lo))) // also catches NaN (0 * inf for tiny scales)
    v = float(lo);
  if (v > float(hi))
    v = float(hi);
  return int(std::lrintf(v));
}

/// A nonzero scale must not round to a zero f16: keep at least one ulp.
inline uint16_t atLeastOneUlp(uint16_t h) {
  return (h & 0x7fff) == 0 ? uint16_t(h | 1) : h;
}

/// Integer levels qmin..qmax; a code is the level itself.
struct IntLevels {
  int qmin, qmax;
  int nearest(float v) const { return roundClamp(v, qmin, qmax); }
  float value(int code) const { return float(code); }
  float top() const { return float(qmax); }
  float bottom() const { return float(qmin); }
};

/// Packs 32 codes (already offset to be unsigned) as ggml's 4-bit layout:
/// element j < 16 in the low nibble of byte j, element j + 16 in the high.
inline void packNibbles32(const int *u, uint8_t *qs) {
  for (int j = 0; j < 16; ++j)
    qs[j] = uint8_t((u[j] & 0xf) | ((u[j + 16] & 0xf) << 4));
}

/// Tables an encoder builds once: static on the host; on the device (the
/// CUDA build of the encoders, runtime/lib/step/DeviceEncoders.cu) built
/// per call instead, since device code has no dynamically initialized
/// statics. Either way the same values.
#ifdef __CUDA_ARCH__
#define QCC_ENCODER_TABLE
#else
#define QCC_ENCODER_TABLE static
#endif

/// A sorted table of integer-valued, non-linear levels (at most 16); a code
/// is the index in the table. Nearest-level lookup goes through a table
/// indexed by floor(v): the answer is that cell's level or the next one up,
/// since all levels are integers. Self-contained (no pointers), so that it
/// can be built per call where it cannot be static.
struct TableLevels {
  float vals[16];
  int count;
  uint8_t cellLevel[256]; ///< largest level index <= cell, per unit cell
  int lo, cells;

  static TableLevels make(const float *v, int count) {
    TableLevels t{};
    for (int i = 0; i < count; ++i)
      t.vals[i] = v[i];
    t.count = count;
    t.lo = int(v[0]);
    t.cells = int(v[count - 1]) - t.lo + 1; // <= 256 for every table here
    for (int c = 0, i = 0; c < t.cells; ++c) {
      while (i + 1 < count && v[i + 1] <= float(t.lo + c))
        ++i;
      t.cellLevel[c] = uint8_t(i);
    }
    return t;
  }
  int nearest(float v) const {
    // Truncation is floor for non-negative t (std::floor is a library call
    // on baseline x86-64).
    const float t = v - float(lo);
    const int cell =
        !(t >= 0) ? 0 : (t >= float(cells) ? cells - 1 : int(t)); // NaN -> 0
    const int i = cellLevel[cell];
    const int next = std::min(i + 1, count - 1);
    // Branch-free: which neighbour wins is data dependent, so a branch here
    // mispredicts about half the time.
    return i + int(vals[next] - v < v - vals[i]) * (next - i);
  }
  float value(int code) const { return vals[code]; }
  float top() const { return vals[count - 1]; }
  float bottom() const { return vals[0]; }
};

/// Weighted squared error of the block when every element takes its nearest
/// level at scale `d`; codes go to `q` (may be null).
template <class Levels>
inline double errorAtScale(const float *x, const float *w, int n,
                           const Levels &lv, float d, int *q) {
  double err = 0;
  float id = d != 0.0f ? 1.0f / d : 0.0f;
  if (!std::isfinite(id)) // 1 / subnormal overflows; 0 * inf would be NaN
    id = 0.0f;
  for (int i = 0; i < n; ++i) {
    const int c =
        lv.nearest(id != 0.0f ? x[i] * id : (d != 0.0f ? x[i] / d : 0.0f));
    if (q)
      q[i] = c;
    const float r = x[i] - d * lv.value(c);
    err += double(w[i]) * r * r;
  }
  return err;
}

/// The float scale d minimising sum w (x - d * level)^2 with nearest-level
/// codes. Tries `steps` anchors at each end of the level set (the largest
/// |x| mapped near the top or the bottom level), refits d by least squares
/// for each, and polishes the winner by alternating re-rounding and refits.
template <class Levels>
inline float fitScale(const float *x, const float *w, int n, const Levels &lv,
                      int *q, int steps = 12) {
  float amax = 0, xm = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      xm = x[i];
    }
  if (amax == 0.0f || !std::isfinite(amax)) {
    for (int i = 0; i < n; ++i)
      q[i] = lv.nearest(0.0f);
    return 0.0f;
  }
  for (int i = 0; i < n; ++i) // the answer if no candidate scores
    q[i] = lv.nearest(0.0f);
  float bestD = 0;
  double bestScore = -1; // maximise (sum wxv)^2 / sum wv^2
  int tmp[256];
  auto tryScale = [&](float d) {
    if (d == 0.0f || !std::isfinite(d))
      return;
    const float id = 1.0f / d;
    double sxv = 0, svv = 0;
    for (int i = 0; i < n; ++i) {
      const int c = lv.nearest(x[i] * id);
      tmp[i] = c;
      const float v = lv.value(c);
      sxv += double(w[i]) * x[i] * v;
      svv += double(w[i]) * v * v;
    }
    if (svv <= 0)
      return;
    const double score = sxv * sxv / svv;
    if (score > bestScore) {
      bestScore = score;
      bestD = float(sxv / svv);
      std::memcpy(q, tmp, sizeof(int) * n);
    }
  };
  for (int end = 0; end < 2; ++end) {
    const float target = end == 0 ? lv.top() : lv.bottom();
    if (target == 0.0f)
      continue;
    // Anchor levels from 1.05x down to ~0.6x the end level: shrinking
    // clips the extreme element but refines the others. 1.0 is always
    // tried, so data that is already on the level grid comes back exactly.
    tryScale(xm / (target * 1.05f));
    for (int s = 0; s < steps; ++s)
      tryScale(xm / (target * (1.0f - 0.4f * float(s) / float(steps))));
  }
  for (int it = 0; it < 3; ++it) {
    const float before = bestD;
    tryScale(bestD);
    if (bestD == before)
      break;
  }
  return bestD;
}

/// Rounds scale `d` to the f16 that (with codes re-chosen for it) gives the
/// least error, searching `radius` ulps around the nearest f16. Returns the
/// chosen bits; `q` receives the codes.
template <class Levels>
inline uint16_t bestHalfScale(const float *x, const float *w, int n,
                              const Levels &lv, float d, int *q,
                              int radius = 2) {
  uint16_t h0 = floatToHalf(d);
  if ((h0 & 0x7c00) == 0x7c00) // overflow: the largest finite half
    h0 = uint16_t((h0 & 0x8000) | 0x7bff);
  const uint16_t sign = h0 & 0x8000;
  const int mag0 = h0 & 0x7fff;
  double bestErr = INFINITY;
  uint16_t best = h0;
  int tmp[256];
  for (int k = -radius; k <= radius; ++k) {
    const int mag = mag0 + k;
    if (mag < 0 || mag > 0x7bff)
      continue;
    const uint16_t h = uint16_t(sign | mag);
    const double err = errorAtScale(x, w, n, lv, halfToFloat(h), tmp);
    if (err < bestErr) {
      bestErr = err;
      best = h;
      std::memcpy(q, tmp, sizeof(int) * n);
    }
  }
  return best;
}

/// Affine fit x ~ d * q + m with integer q in [0, qmax], d >= 0. With
/// `minNonPositive` the offset m is kept <= 0 (the K-quants store -m as an
/// unsigned min). Alternates rounding and a 2x2 weighted least-squares refit
/// from several starting scales. Returns the squared error.
inline double fitAffine(const float *x, const float *w, int n, int qmax,
                        bool minNonPositive, float &dOut, float &mOut, int *q,
                        int steps = 10) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  if (minNonPositive)
    lo = std::min(lo, 0.0f);
  if (!(hi > lo)) {
    dOut = 0;
    mOut = minNonPositive ? std::min(lo, 0.0f) : lo;
    for (int i = 0; i < n; ++i)
      q[i] = 0;
    double err = 0;
    for (int i = 0; i < n; ++i)
      err += double(w[i]) * (x[i] - mOut) * (x[i] - mOut);
    return err;
  }
  int tmp[256];
  double bestErr = INFINITY;
  float bestD = (hi - lo) / float(qmax), bestM = lo;
  // Weighted squared error of given (d, m) with re-chosen codes.
  auto evalDM = [&](float d, float m, int *codes) {
    const float id = d > 0 ? 1.0f / d : 0.0f;
    double err = 0;
    for (int i = 0; i < n; ++i) {
      const int c = roundClamp((x[i] - m) * id, 0, qmax);
      codes[i] = c;
      const float r = x[i] - (d * float(c) + m);
      err += double(w[i]) * r * r;
    }
    return err;
  };
  // Least-squares (d, m) for fixed codes.
  auto refit = [&](const int *codes, float &d, float &m) {
    double sw = 0, sq = 0, sqq = 0, sx = 0, sxq = 0;
    for (int i = 0; i < n; ++i) {
      const double wi = w[i];
      sw += wi;
      sq += wi * codes[i];
      sqq += wi * codes[i] * codes[i];
      sx += wi * x[i];
      sxq += wi * x[i] * codes[i];
    }
    const double det = sw * sqq - sq * sq;
    if (det > 0) {
      double dd = (sw * sxq - sq * sx) / det;
      double mm = (sqq * sx - sq * sxq) / det;
      if (minNonPositive && mm > 0) {
        mm = 0;
        dd = sqq > 0 ? sxq / sqq : 0;
      }
      if (dd > 0) {
        d = float(dd);
        m = float(mm);
      }
    }
  };
  auto consider = [&](float d, float m) {
    if (!(d > 0) || !std::isfinite(d))
      return;
    for (int it = 0; it < 3; ++it) {
      const double err = evalDM(d, m, tmp);
      if (err < bestErr) {
        bestErr = err;
        bestD = d;
        bestM = m;
        std::memcpy(q, tmp, sizeof(int) * n);
      } else if (it > 0) {
        break;
      }
      refit(tmp, d, m);
    }
  };
  for (int s = 0; s <= steps; ++s) {
    // Spread the range over qmax - 1 .. qmax + 1 levels.
    const float levels = float(qmax) + 1.0f - 2.0f * float(s) / float(steps);
    consider((hi - lo) / levels, lo);
  }
  dOut = bestD;
  mOut = bestM;
  return bestErr;
}

/// Two-level symmetric fit used by q3_K, q6_K and iq4_xs: `nsub` groups of
/// `sublen` elements, group g reconstructed as (d * sc[g]) * level with an
/// f16 super-scale d and integer sc[g] in [scMin, scMax]. Each group's ideal
/// float scale is found first; then several super-scales are tried (the
/// largest group scale mapped to, or a little inside, the longer end of the
/// sc range; for tiny blocks also the smallest f16 subnormals), each group
/// scale is nudged by +-1 where that helps, and a least-squares refit of d
/// gets one more chance. Returns d's bits; sc and the codes q are filled.
template <class Levels>
inline uint16_t fitSuperScale(const float *x, const float *w, int nsub,
                              int sublen, const Levels &lv, int scMin,
                              int scMax, int *sc, int *q) {
  float s[32];
  float smax = 0;
  for (int g = 0; g < nsub; ++g) {
    s[g] =
        fitScale(x + g * sublen, w + g * sublen, sublen, lv, q + g * sublen, 6);
    if (std::fabs(s[g]) > std::fabs(smax))
      smax = s[g];
  }
  if (smax == 0.0f) {
    for (int g = 0; g < nsub; ++g)
      sc[g] = 0;
    for (int i = 0; i < nsub * sublen; ++i)
      q[i] = lv.nearest(0.0f);
    return 0;
  }
  double bestErr = INFINITY;
  uint16_t bestD = 0;
  int tmpSc[32];
  int tmpQ[256];
  auto groupErr = [&](int g, float dv, int scg, int *codes) {
    return errorAtScale(x + g * sublen, w + g * sublen, sublen, lv,
                        dv * float(scg), codes);
  };
  // Evaluates super-scale bits `dh` with sub-scales re-rounded from s[] (or
  // kept, when `keepSc`), then nudges each sub-scale by one step.
  auto tryD = [&](uint16_t dh, bool keepSc) {
    const float dv = halfToFloat(dh);
    if (dv == 0.0f || !std::isfinite(dv))
      return;
    double total = 0;
    for (int g = 0; g < nsub; ++g) {
      int c = keepSc ? sc[g] : roundClamp(s[g] / dv, scMin, scMax);
      double e = groupErr(g, dv, c, tmpQ + g * sublen);
      int codes[256];
      for (int delta = -1; delta <= 1; delta += 2) {
        const int c2 = c + delta;
        if (c2 < scMin || c2 > scMax)
          continue;
        const double e2 = groupErr(g, dv, c2, codes);
        if (e2 < e) {
          e = e2;
          c = c2;
          std::memcpy(tmpQ + g * sublen, codes, sizeof(int) * sublen);
        }
      }
      tmpSc[g] = c;
      total += e;
      if (total >= bestErr)
        return;
    }
    bestErr = total;
    bestD = dh;
    std::memcpy(sc, tmpSc, sizeof(int) * nsub);
    std::memcpy(q, tmpQ, sizeof(int) * nsub * sublen);
  };
  // The largest group scale goes to the end of the sub-scale range with the
  // most steps (e.g. -32 of -32..31), or a little inside it.
  static constexpr float kFactors[] = {1.0f, 0.96f, 0.92f, 0.87f, 0.8f};
  const int target = -scMin > scMax ? scMin : scMax;
  for (float f : kFactors)
    tryD(atLeastOneUlp(toHalfClamped(smax / (float(target) * f))), false);
  // Tiny blocks: the ideal super-scale underflows f16, so also try the
  // smallest subnormals, letting the integer sub-scales and codes carry the
  // magnitude instead.
  if (std::fabs(smax) < 0x1p-24f * float(std::max(scMax, -scMin)) * 4)
    for (int mag = 1; mag <= 4; ++mag)
      tryD(uint16_t((smax < 0 ? 0x8000 : 0) | mag), false);
  if (bestErr == INFINITY) {
    // Every candidate scale underflowed f16: nothing is representable.
    for (int g = 0; g < nsub; ++g)
      sc[g] = 0;
    for (int i = 0; i < nsub * sublen; ++i)
      q[i] = lv.nearest(0.0f);
    return 0;
  }
  // Least-squares super-scale for the chosen sub-scales and codes.
  for (int it = 0; it < 2; ++it) {
    double num = 0, den = 0;
    for (int g = 0; g < nsub; ++g)
      for (int i = 0; i < sublen; ++i) {
        const int k = g * sublen + i;
        const double v = double(sc[g]) * lv.value(q[k]);
        num += w[k] * x[k] * v;
        den += w[k] * v * v;
      }
    if (den <= 0)
      break;
    const uint16_t h = toHalfClamped(float(num / den));
    for (int k = -1; k <= 1; ++k) {
      const int mag = int(h & 0x7fff) + k;
      if (mag > 0 && mag <= 0x7bff)
        tryD(uint16_t((h & 0x8000) | mag), true);
    }
  }
  return bestD;
}

} // namespace encode
} // namespace qcc

#endif // QCC_RUNTIME_FORMATS_ENCODECOMMON_H
