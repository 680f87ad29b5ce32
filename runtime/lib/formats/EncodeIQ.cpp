//===- EncodeIQ.cpp - Encoders of the codebook i-quants -------------------===//
//
// iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s, iq1_s and iq1_m reconstruct groups
// of 8 (or 4) elements as (block scale) * (a row of a fixed lattice
// codebook) with signs. Encoding has three nested searches:
//
//  * signs: the sign of each element is its own sign (optimal, since grid
//    entries are positive); formats that store only 7 sign bits per 8
//    elements (an even number of minus signs) flip the element where that
//    costs least, and search its magnitude as a negative target;
//  * grid rows: each element's nearest level gives a "combination"; if the
//    codebook holds it, it is optimal, otherwise the few codebook rows
//    closest to it (precomputed once per codebook) are scored exactly;
//  * scales: each scale group's best float scale is found by trying several
//    scales with a least-squares refit; then f16 super-scales are tried, each
//    group's integer sub-scale rounded and nudged +-1 (re-searching rows at
//    the exact decoded scale), and a final least-squares super-scale refit.
//
// Errors are weighted by the importance row, which is why iq2_xxs, iq2_xs
// and iq1_s (whose codebooks are too small to fit all columns well) demand
// one. Layouts: see Decode.cpp.
//
//===----------------------------------------------------------------------===//

#include "BlockLayouts.h"
#include "Codebooks.h"
#include "EncodeCommon.h"

#include <cstdio>
#include <vector>

namespace qcc {
namespace encode {

using namespace codebooks;

namespace {

/// A codebook prepared for nearest-row search: plain data and pointers to
/// its tables, which live in a host Grid (built once) or, in the device
/// build of the encoders, in tables generated at build time
/// (qcc-gen-iq-grids).
struct GridView {
  int len = 0; ///< entries per row: 8 or 4
  int rows = 0;
  int nlev = 0; ///< distinct entry values
  float lev[8] = {};
  float mid[7] = {}; ///< midpoints between consecutive levels
  const float *vals = nullptr;     ///< rows x len
  const uint32_t *start = nullptr; ///< combination -> first candidate
  const uint16_t *cand = nullptr;  ///< candidate rows, closest first

  /// Index of the level nearest t: the number of midpoints below it
  /// (branch-free; NaN counts as below every level).
  int nearestLevel(float t) const {
    int idx = 0;
    for (int i = 0; i + 1 < nlev; ++i)
      idx += int(t > mid[i]);
    return idx;
  }

  /// The row minimising sum w (t - row)^2 among the candidates of t's
  /// nearest-level combination; returns that error.
  float search(const float *t, const float *w, int &row) const {
    int combo = 0;
    for (int j = len - 1; j >= 0; --j)
      combo = combo * nlev + nearestLevel(t[j]);
    float best = INFINITY;
    for (uint32_t c = start[combo]; c < start[combo + 1]; ++c) {
      const float *g = &vals[size_t(cand[c]) * len];
      float e = 0;
      for (int j = 0; j < len; ++j) {
        const float r = t[j] - g[j];
        e += w[j] * r * r;
      }
      if (e < best) {
        best = e;
        row = cand[c];
      }
    }
    return best;
  }
};

#ifndef __CUDA_ARCH__
/// The host's storage of a prepared codebook.
struct Grid {
  GridView view;
  std::vector<float> vals;
  std::vector<uint32_t> start;
  std::vector<uint16_t> cand;
};

/// Builds a Grid from rows whose entry k is byte k (signed for iq1).
template <class Word>
Grid buildGrid(const Word *table, int rows, bool signedBytes) {
  Grid grid;
  GridView &g = grid.view;
  std::vector<float> &vals = grid.vals;
  std::vector<uint32_t> &start = grid.start;
  std::vector<uint16_t> &cand = grid.cand;
  g.len = int(sizeof(Word));
  g.rows = rows;
  vals.resize(size_t(rows) * g.len);
  std::vector<float> distinct;
  for (int r = 0; r < rows; ++r)
    for (int k = 0; k < g.len; ++k) {
      const uint8_t b = uint8_t(uint64_t(table[r]) >> (8 * k));
      const float v = signedBytes ? float(int8_t(b)) : float(b);
      vals[size_t(r) * g.len + k] = v;
      if (std::find(distinct.begin(), distinct.end(), v) == distinct.end())
        distinct.push_back(v);
    }
  std::sort(distinct.begin(), distinct.end());
  g.nlev = int(distinct.size());
  std::copy(distinct.begin(), distinct.end(), g.lev);
  for (int i = 0; i + 1 < g.nlev; ++i)
    g.mid[i] = 0.5f * (g.lev[i] + g.lev[i + 1]);
  // Each row's level indices.
  std::vector<uint8_t> idx(size_t(rows) * g.len);
  for (size_t i = 0; i < idx.size(); ++i)
    idx[i] = uint8_t(std::find(distinct.begin(), distinct.end(), vals[i]) -
                     distinct.begin());
  int combos = 1;
  for (int k = 0; k < g.len; ++k)
    combos *= g.nlev;
  start.resize(size_t(combos) + 1);
  std::vector<std::pair<int, int>> byDist(rows);
  int ci[8];
  for (int c = 0; c < combos; ++c) {
    start[c] = uint32_t(cand.size());
    for (int k = 0, v = c; k < g.len; ++k, v /= g.nlev)
      ci[k] = v % g.nlev;
    int dmin = 1 << 30;
    for (int r = 0; r < rows; ++r) {
      int dist = 0;
      for (int k = 0; k < g.len; ++k) {
        const int dd = ci[k] - idx[size_t(r) * g.len + k];
        dist += dd * dd;
      }
      byDist[r] = {dist, r};
      dmin = std::min(dmin, dist);
    }
    // On the lattice the row itself is optimal; off it, the rows within 2
    // of the smallest squared level distance, closest first, at most 16.
    const int slack = dmin == 0 ? 0 : 2;
    std::vector<std::pair<int, int>> keep;
    for (const auto &p : byDist)
      if (p.first <= dmin + slack)
        keep.push_back(p);
    std::sort(keep.begin(), keep.end());
    if (keep.size() > 16)
      keep.resize(16);
    for (const auto &p : keep)
      cand.push_back(uint16_t(p.second));
  }
  start[combos] = uint32_t(cand.size());
  g.vals = vals.data();
  g.start = start.data();
  g.cand = cand.data();
  return grid;
}

// Each codebook is prepared once; the view points into the static Grid
// (its vectors never move after construction).
const GridView &gridIQ2XXS() {
  static const Grid g = buildGrid(kIQ2XXSGrid, 256, false);
  return g.view;
}
const GridView &gridIQ2XS() {
  static const Grid g = buildGrid(kIQ2XSGrid, 512, false);
  return g.view;
}
const GridView &gridIQ2S() {
  static const Grid g = buildGrid(kIQ2SGrid, 1024, false);
  return g.view;
}
const GridView &gridIQ3XXS() {
  static const Grid g = buildGrid(kIQ3XXSGrid, 256, false);
  return g.view;
}
const GridView &gridIQ3S() {
  static const Grid g = buildGrid(kIQ3SGrid, 512, false);
  return g.view;
}
const GridView &gridIQ1S() {
  static const Grid g = buildGrid(kIQ1SGrid, 2048, true);
  return g.view;
}

/// 8-bit sign pattern (even number of set bits) -> its 7-bit index.
const uint8_t *signIndex() {
  static const auto table = [] {
    std::vector<uint8_t> t(256, 0);
    for (int i = 0; i < 128; ++i)
      t[kSignsIQ2XS[i]] = uint8_t(i);
    return t;
  }();
  return table.data();
}
#else
// The device build: the same tables, generated at build time from the
// host's Grids (runtime/lib/step/GenIQGrids.cpp).
#include "qcc_iq_grids_device.inc"
const GridView &gridIQ2XXS() { return kDeviceGridIQ2XXS; }
const GridView &gridIQ2XS() { return kDeviceGridIQ2XS; }
const GridView &gridIQ2S() { return kDeviceGridIQ2S; }
const GridView &gridIQ3XXS() { return kDeviceGridIQ3XXS; }
const GridView &gridIQ3S() { return kDeviceGridIQ3S; }
const GridView &gridIQ1S() { return kDeviceGridIQ1S; }
const uint8_t *signIndex() { return kDeviceSignIndex; }
#endif

enum class Signs { None, Parity, Free };

/// How a format turns (d, integer sub-scale k) into the group scale, in the
/// decoder's exact operation order.
using ScaleFn = float (*)(float d, int k);

struct Spec {
  const GridView *grid;
  int scaleLen; ///< elements per integer sub-scale: 32 or 16
  int kMax;     ///< sub-scales are 0..kMax
  ScaleFn scale;
  Signs signs;
  int deltaLen; ///< iq1: elements sharing one delta sign; 0 = no delta
};

struct Result {
  uint16_t d = 0;
  int k[16] = {};
  int row[64] = {};
  uint8_t signs[32] = {}; ///< per 8 elements, bit j set = negative
  bool deltaNeg[32] = {}; ///< per delta unit
};

class IQFit {
public:
  IQFit(const Spec &spec, const float *x, const float *w)
      : s(spec), g(*spec.grid), x(x), w(w) {}
  void run(Result &r);

private:
  /// Error of scale group `sg` at group scale `db`; rows and deltas chosen
  /// for that exact scale go to r.
  double evalGroup(int sg, float db, Result &r) const;
  /// The best float group scale of `sg` and its error.
  float fitGroupScale(int sg, Result &scratch) const;

  const Spec &s;
  const GridView &g;
  const float *x, *w;
  float a[256]; ///< sign-adjusted targets (x itself for iq1)
};

double IQFit::evalGroup(int sg, float db, Result &r) const {
  const int n = s.scaleLen, base = sg * n;
  const float idb = db != 0.0f ? 1.0f / db : 0.0f;
  const int len = g.len;
  auto rowsFor = [&](int from, int count, float delta, int *rows) {
    double err = 0;
    float t[8];
    for (int p = from; p < from + count; p += len) {
      for (int j = 0; j < len; ++j)
        t[j] = a[p + j] * idb - delta;
      int row = 0;
      g.search(t, w + p, row);
      rows[(p - from) / len] = row;
      const float *gv = &g.vals[size_t(row) * len];
      for (int j = 0; j < len; ++j) {
        const float rr = a[p + j] - db * (gv[j] + delta);
        err += double(w[p + j]) * rr * rr;
      }
    }
    return err;
  };
  if (s.deltaLen == 0)
    return rowsFor(base, n, 0.0f, r.row + base / len);
  // iq1: each delta unit tries both delta signs.
  double total = 0;
  int rowsP[32], rowsN[32];
  for (int u = base; u < base + n; u += s.deltaLen) {
    const double eP = rowsFor(u, s.deltaLen, kIQ1Delta, rowsP);
    const double eN = rowsFor(u, s.deltaLen, -kIQ1Delta, rowsN);
    const bool neg = eN < eP;
    r.deltaNeg[u / s.deltaLen] = neg;
    std::memcpy(r.row + u / len, neg ? rowsN : rowsP,
                sizeof(int) * (s.deltaLen / len));
    total += neg ? eN : eP;
  }
  return total;
}

float IQFit::fitGroupScale(int sg, Result &scratch) const {
  const int n = s.scaleLen, base = sg * n, len = g.len;
  float amax = 0;
  for (int i = base; i < base + n; ++i)
    amax = std::max(amax, std::fabs(a[i]));
  if (amax == 0.0f)
    return 0.0f;
  const float top = g.lev[g.nlev - 1] + (s.deltaLen ? kIQ1Delta : 0.0f);
  const float db0 = amax / top;
  float bestDb = db0;
  double bestErr = INFINITY;
  static constexpr float kFactors[] = {1.1f, 0.98f, 0.87f, 0.76f, 0.65f, 0.55f};
  for (float f : kFactors) {
    float db = db0 * f;
    for (int it = 0; it < 2; ++it) {
      const double e = evalGroup(sg, db, scratch);
      if (e < bestErr) {
        bestErr = e;
        bestDb = db;
      }
      // Least-squares scale for the rows just chosen.
      double num = 0, den = 0;
      for (int p = base; p < base + n; p += len) {
        const float *gv = &g.vals[size_t(scratch.row[p / len]) * len];
        const float delta =
            s.deltaLen
                ? (scratch.deltaNeg[p / s.deltaLen] ? -kIQ1Delta : kIQ1Delta)
                : 0.0f;
        for (int j = 0; j < len; ++j) {
          const double v = gv[j] + delta;
          num += w[p + j] * a[p + j] * v;
          den += w[p + j] * v * v;
        }
      }
      if (!(den > 0) || !(num > 0))
        break;
      db = float(num / den);
    }
  }
  return bestDb;
}

void IQFit::run(Result &r) {
  // Signs and targets, 8 elements at a time.
  for (int u = 0; u < 32; ++u) {
    const float *xu = x + 8 * u;
    float *au = a + 8 * u;
    if (s.signs == Signs::None) {
      std::memcpy(au, xu, sizeof(float) * 8);
      continue;
    }
    uint8_t bits = 0;
    for (int j = 0; j < 8; ++j) {
      au[j] = std::fabs(xu[j]);
      if (xu[j] < 0)
        bits |= uint8_t(1 << j);
    }
    if (s.signs == Signs::Parity && (__builtin_popcount(bits) & 1)) {
      // Flip the element whose wrong sign costs least.
      int jm = 0;
      for (int j = 1; j < 8; ++j)
        if (w[8 * u + j] * au[j] < w[8 * u + jm] * au[jm])
          jm = j;
      bits ^= uint8_t(1 << jm);
      au[jm] = -au[jm];
    }
    r.signs[u] = bits;
  }

  const int nsg = 256 / s.scaleLen;
  float dbIdeal[16];
  float dbMax = 0;
  Result scratch;
  for (int sg = 0; sg < nsg; ++sg) {
    dbIdeal[sg] = fitGroupScale(sg, scratch);
    dbMax = std::max(dbMax, dbIdeal[sg]);
  }
  if (dbMax == 0.0f) {
    r.d = 0;
    for (int sg = 0; sg < nsg; ++sg)
      evalGroup(sg, 0.0f, r);
    return;
  }

  // Candidate super-scales: the largest group scale mapped to the top
  // sub-scale, or a little below it.
  const float mTop = s.scale(1.0f, s.kMax);
  double best = INFINITY;
  Result cand = r;
  auto tryD = [&](uint16_t dh, bool keepK) {
    const float dv = halfToFloat(dh);
    if (!(dv > 0) || !std::isfinite(dv))
      return;
    Result t = keepK ? r : cand;
    t.d = dh;
    double total = 0;
    Result tmp = t;
    for (int sg = 0; sg < nsg; ++sg) {
      int k0 = t.k[sg];
      if (!keepK) {
        // The sub-scale whose decoded group scale is nearest the ideal.
        float bd = INFINITY;
        for (int k = 0; k <= s.kMax; ++k) {
          const float dd = std::fabs(s.scale(dv, k) - dbIdeal[sg]);
          if (dd < bd) {
            bd = dd;
            k0 = k;
          }
        }
      }
      double e = evalGroup(sg, s.scale(dv, k0), t);
      int kb = k0;
      for (int k = k0 - 1; k <= k0 + 1; k += 2) {
        if (k < 0 || k > s.kMax)
          continue;
        const double e2 = evalGroup(sg, s.scale(dv, k), tmp);
        if (e2 < e) {
          e = e2;
          kb = k;
          const int rows = s.scaleLen / g.len, first = sg * rows;
          std::memcpy(t.row + first, tmp.row + first, sizeof(int) * rows);
          if (s.deltaLen)
            for (int u = sg * s.scaleLen / s.deltaLen;
                 u < (sg + 1) * s.scaleLen / s.deltaLen; ++u)
              t.deltaNeg[u] = tmp.deltaNeg[u];
        }
      }
      t.k[sg] = kb;
      total += e;
      if (total >= best)
        return;
    }
    best = total;
    r = t;
  };
  static constexpr float kFactors[] = {1.0f, 0.94f, 0.87f, 0.8f};
  for (float f : kFactors)
    tryD(atLeastOneUlp(toHalfClamped(dbMax / (mTop * f))), false);
  if (best == INFINITY) {
    r.d = 0;
    for (int sg = 0; sg < nsg; ++sg)
      evalGroup(sg, 0.0f, r);
    return;
  }
  // Least-squares super-scale for the chosen sub-scales and rows. The group
  // scale is linear in d, so x ~ d * (scale(1, k) * (row + delta)).
  // One refit, at its nearest f16 only: the neighbours and a second round
  // cost a third of the run time for under 0.1% of error.
  {
    double num = 0, den = 0;
    for (int p = 0; p < 256; ++p) {
      const float *gv = &g.vals[size_t(r.row[p / g.len]) * g.len];
      const float delta =
          s.deltaLen ? (r.deltaNeg[p / s.deltaLen] ? -kIQ1Delta : kIQ1Delta)
                     : 0.0f;
      const double v =
          double(s.scale(1.0f, r.k[p / s.scaleLen])) * (gv[p % g.len] + delta);
      num += w[p] * a[p] * v;
      den += w[p] * v * v;
    }
    if (den > 0 && num > 0) {
      const uint16_t h = toHalfClamped(float(num / den));
      if ((h & 0x7fff) != 0)
        tryD(h, true);
    }
  }
}

//===----------------------------------------------------------------------===//
// Per-format scale rules and packing
//===----------------------------------------------------------------------===//

float scaleIQ2(float d, int k) { return d * (0.5f + float(k)) * 0.25f; }
float scaleIQ3XXS(float d, int k) { return d * (0.5f + float(k)) * 0.5f; }
float scaleOdd(float d, int k) { return d * float(2 * k + 1); }

uint32_t signIndices(const uint8_t *signs) {
  const uint8_t *inv = signIndex();
  uint32_t v = 0;
  for (int l = 0; l < 4; ++l)
    v |= uint32_t(inv[signs[l]]) << (7 * l);
  return v;
}

} // namespace

// iq2_xxs (66 B): f16 d @0; per 32 elements @2+8g: 4 row bytes, then a u32
// of 4 x 7 sign indices and the 4-bit sub-scale in bits 28-31.
static void encodeIQ2_XXS(const float *x, const float *w, uint8_t *out) {
  QCC_ENCODER_TABLE const Spec spec{&gridIQ2XXS(), 32, 15, scaleIQ2, Signs::Parity, 0};
  Result r;
  IQFit(spec, x, w).run(r);
  using L = layout::IQ2_XXS;
  storeU16(out + L::d, r.d);
  for (int g = 0; g < 8; ++g) {
    uint8_t *q = out + L::qs + 8 * g;
    for (int l = 0; l < 4; ++l)
      q[l] = uint8_t(r.row[4 * g + l]);
    storeU32(q + 4, signIndices(r.signs + 4 * g) | (uint32_t(r.k[g]) << 28));
  }
}

// iq2_xs (74 B): f16 d @0, u16 qs[32] @2 (row | sign index << 9),
// scales[8] @66 (a nibble per 16 elements).
static void encodeIQ2_XS(const float *x, const float *w, uint8_t *out) {
  QCC_ENCODER_TABLE const Spec spec{&gridIQ2XS(), 16, 15, scaleIQ2, Signs::Parity, 0};
  Result r;
  IQFit(spec, x, w).run(r);
  using L = layout::IQ2_XS;
  storeU16(out + L::d, r.d);
  const uint8_t *inv = signIndex();
  for (int i = 0; i < 32; ++i)
    storeU16(out + L::qs + 2 * i,
             uint16_t(r.row[i] | (int(inv[r.signs[i]]) << 9)));
  for (int g = 0; g < 8; ++g)
    out[L::scales + g] = uint8_t(r.k[2 * g] | (r.k[2 * g + 1] << 4));
}

// iq2_s (82 B): f16 d @0, qs[32] @2 (row low 8 bits), signs[32] @34,
// qh[8] @66 (row bits 8-9 of group l at bits 2l), scales[8] @74.
static void encodeIQ2_S(const float *x, const float *w, uint8_t *out) {
  QCC_ENCODER_TABLE const Spec spec{&gridIQ2S(), 16, 15, scaleIQ2, Signs::Free, 0};
  Result r;
  IQFit(spec, x, w).run(r);
  using L = layout::IQ2_S;
  storeU16(out + L::d, r.d);
  std::memset(out + L::qh, 0, 8);
  for (int i = 0; i < 32; ++i) {
    out[L::qs + i] = uint8_t(r.row[i] & 0xff);
    out[L::signs + i] = r.signs[i];
    out[L::qh + i / 4] |= uint8_t((r.row[i] >> 8) << (2 * (i % 4)));
  }
  for (int g = 0; g < 8; ++g)
    out[L::scales + g] = uint8_t(r.k[2 * g] | (r.k[2 * g + 1] << 4));
}

// iq3_xxs (98 B): f16 d @0, qs[64] @2 (a row per 4 elements), u32 per 32
// elements @66+4g: 4 x 7 sign indices and the sub-scale in bits 28-31.
static void encodeIQ3_XXS(const float *x, const float *w, uint8_t *out) {
  QCC_ENCODER_TABLE const Spec spec{&gridIQ3XXS(), 32, 15, scaleIQ3XXS, Signs::Parity, 0};
  Result r;
  IQFit(spec, x, w).run(r);
  using L = layout::IQ3_XXS;
  storeU16(out + L::d, r.d);
  for (int i = 0; i < 64; ++i)
    out[L::qs + i] = uint8_t(r.row[i]);
  for (int g = 0; g < 8; ++g)
    storeU32(out + L::scalesAndSigns + 4 * g,
             signIndices(r.signs + 4 * g) | (uint32_t(r.k[g]) << 28));
}

// iq3_s (110 B): f16 d @0, qs[64] @2 (row low 8 bits), qh[8] @66 (row bit
// 8 of the 4-element group j of 32 at bit j), signs[32] @74, scales[4] @106.
static void encodeIQ3_S(const float *x, const float *w, uint8_t *out) {
  QCC_ENCODER_TABLE const Spec spec{&gridIQ3S(), 32, 15, scaleOdd, Signs::Free, 0};
  Result r;
  IQFit(spec, x, w).run(r);
  using L = layout::IQ3_S;
  storeU16(out + L::d, r.d);
  std::memset(out + L::qh, 0, 8);
  for (int i = 0; i < 64; ++i) {
    out[L::qs + i] = uint8_t(r.row[i] & 0xff);
    out[L::qh + i / 8] |= uint8_t((r.row[i] >> 8) << (i % 8));
  }
  std::memcpy(out + L::signs, r.signs, 32);
  for (int g = 0; g < 4; ++g)
    out[L::scales + g] = uint8_t(r.k[2 * g] | (r.k[2 * g + 1] << 4));
}

// iq1_s (50 B): f16 d @0, qs[32] @2 (row low 8 bits), u16 qh[8] @34:
// row bits 8-10 of group l at bits 3l, sub-scale at 12, delta sign at 15.
static void encodeIQ1_S(const float *x, const float *w, uint8_t *out) {
  QCC_ENCODER_TABLE const Spec spec{&gridIQ1S(), 32, 7, scaleOdd, Signs::None, 32};
  Result r;
  IQFit(spec, x, w).run(r);
  using L = layout::IQ1_S;
  storeU16(out + L::d, r.d);
  for (int g = 0; g < 8; ++g) {
    uint16_t qh = uint16_t((r.k[g] << 12) | (r.deltaNeg[g] ? 0x8000 : 0));
    for (int l = 0; l < 4; ++l) {
      const int row = r.row[4 * g + l];
      out[L::qs + 4 * g + l] = uint8_t(row & 0xff);
      qh |= uint16_t((row >> 8) << (3 * l));
    }
    storeU16(out + L::qh + 2 * g, qh);
  }
}

// iq1_m (56 B): qs[32] @0, qh[16] @32 (a nibble per 8 elements: row bits
// 8-10 and the delta sign at bit 3), u16 scales[4] @48: 3-bit sub-scales
// per 16 elements at bits 3i of word i / 4, and the f16 d in the top
// nibbles of the four words.
static void encodeIQ1_M(const float *x, const float *w, uint8_t *out) {
  QCC_ENCODER_TABLE const Spec spec{&gridIQ1S(), 16, 7, scaleOdd, Signs::None, 8};
  Result r;
  IQFit(spec, x, w).run(r);
  using L = layout::IQ1_M;
  std::memset(out + L::qh, 0, L::bytes - L::qh);
  for (int i = 0; i < 32; ++i) {
    out[L::qs + i] = uint8_t(r.row[i] & 0xff);
    const int nib = (r.row[i] >> 8) | (r.deltaNeg[i] ? 8 : 0);
    out[L::qh + i / 2] |= uint8_t(nib << (4 * (i % 2)));
  }
  uint16_t sc[4] = {};
  for (int i = 0; i < 16; ++i)
    sc[i / 4] |= uint16_t(r.k[i] << (3 * (i % 4)));
  for (int i = 0; i < 4; ++i) {
    sc[i] |= uint16_t(((r.d >> (4 * i)) & 0xf) << 12);
    storeU16(out + L::scales + 2 * i, sc[i]);
  }
}

BlockFn iqBlockEncoder(Format format) {
  switch (format) {
  case Format::IQ2_XXS:
    return encodeIQ2_XXS;
  case Format::IQ2_XS:
    return encodeIQ2_XS;
  case Format::IQ2_S:
    return encodeIQ2_S;
  case Format::IQ3_XXS:
    return encodeIQ3_XXS;
  case Format::IQ3_S:
    return encodeIQ3_S;
  case Format::IQ1_S:
    return encodeIQ1_S;
  case Format::IQ1_M:
    return encodeIQ1_M;
  default:
    return nullptr;
  }
}


#ifndef __CUDA_ARCH__
/// Writes the prepared codebooks and the sign index as C++ definitions of
/// device arrays and GridViews (for the device build of the encoders).
/// They are not `const`: clang places __device__ const data in constant
/// memory, of which a module gets 64 KiB, and these tables are larger.
void writeDeviceIQGrids(std::FILE *out) {
  auto grid = [&](const char *name, const GridView &g) {
    int combos = 1;
    for (int k = 0; k < g.len; ++k)
      combos *= g.nlev;
    const uint32_t ncand = g.start[combos];
    std::fprintf(out, "__device__ float kDevice%sVals[%d] = {", name,
                 g.rows * g.len);
    for (int i = 0; i < g.rows * g.len; ++i)
      std::fprintf(out, "%s%.9g", i ? "," : "", double(g.vals[i]));
    std::fprintf(out, "};\n__device__ uint32_t kDevice%sStart[%d] = {",
                 name, combos + 1);
    for (int i = 0; i <= combos; ++i)
      std::fprintf(out, "%s%u", i ? "," : "", g.start[i]);
    std::fprintf(out, "};\n__device__ uint16_t kDevice%sCand[%u] = {",
                 name, ncand);
    for (uint32_t i = 0; i < ncand; ++i)
      std::fprintf(out, "%s%u", i ? "," : "", unsigned(g.cand[i]));
    std::fprintf(out, "};\n__device__ GridView kDevice%s = {%d, %d, %d, {",
                 name, g.len, g.rows, g.nlev);
    for (int i = 0; i < 8; ++i)
      std::fprintf(out, "%s%a", i ? "," : "", double(g.lev[i]));
    std::fprintf(out, "}, {");
    for (int i = 0; i < 7; ++i)
      std::fprintf(out, "%s%a", i ? "," : "", double(g.mid[i]));
    std::fprintf(out, "}, kDevice%sVals, kDevice%sStart, kDevice%sCand};\n",
                 name, name, name);
  };
  grid("GridIQ2XXS", gridIQ2XXS());
  grid("GridIQ2XS", gridIQ2XS());
  grid("GridIQ2S", gridIQ2S());
  grid("GridIQ3XXS", gridIQ3XXS());
  grid("GridIQ3S", gridIQ3S());
  grid("GridIQ1S", gridIQ1S());
  const uint8_t *si = signIndex();
  std::fprintf(out, "__device__ uint8_t kDeviceSignIndex[256] = {");
  for (int i = 0; i < 256; ++i)
    std::fprintf(out, "%s%u", i ? "," : "", unsigned(si[i]));
  std::fprintf(out, "};\n");
}
#endif

} // namespace encode
} // namespace qcc
