//===- LsqScaleGrad.cpp - The block-scale gradient of qcc.ste_grad lsq ----===//
//
// docs/spec.md §3.4: for every block b, scale_grad[b] = Σ_i g_i ·
// (Ŵ_i - off_i) / d_b, the derivative of the loss with respect to the
// block's scale field d_b. Ŵ is linear in d_b apart from an offset that
// does not scale with it (the dmin·m / m term), so the offset is what the
// block decodes to with d_b set to zero. Formats whose scale is not an f16
// field are handled by their own rule (e8m0, iq1_m's split f16); nvfp4 has
// only sub-block scales, so its gradient is taken with respect to a common
// factor on them at 1 (d_b := 1).
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/StepRuntime.h"

#include "BlockLayouts.h"
#include "qcc/Runtime/Codecs.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

namespace qcc::step {
void recordError(std::string message);
} // namespace qcc::step

namespace {

using qcc::Format;

enum class ScaleKind { F16, E8M0, IQ1M, Relative, None };

struct ScaleField {
  ScaleKind kind;
  size_t offset; ///< byte offset of the f16 d / e8m0 exponent
};

ScaleField scaleField(Format f) {
  namespace L = qcc::layout;
  switch (f) {
  case Format::Q4_0: return {ScaleKind::F16, L::Q4_0::d};
  case Format::Q4_1: return {ScaleKind::F16, L::Q4_1::d};
  case Format::Q5_0: return {ScaleKind::F16, L::Q5_0::d};
  case Format::Q5_1: return {ScaleKind::F16, L::Q5_1::d};
  case Format::Q8_0: return {ScaleKind::F16, L::Q8_0::d};
  case Format::Q2_K: return {ScaleKind::F16, L::Q2_K::d};
  case Format::Q3_K: return {ScaleKind::F16, L::Q3_K::d};
  case Format::Q4_K: return {ScaleKind::F16, L::Q4_K::d};
  case Format::Q5_K: return {ScaleKind::F16, L::Q5_K::d};
  case Format::Q6_K: return {ScaleKind::F16, L::Q6_K::d};
  case Format::IQ2_XXS: return {ScaleKind::F16, L::IQ2_XXS::d};
  case Format::IQ2_XS: return {ScaleKind::F16, L::IQ2_XS::d};
  case Format::IQ2_S: return {ScaleKind::F16, L::IQ2_S::d};
  case Format::IQ3_XXS: return {ScaleKind::F16, L::IQ3_XXS::d};
  case Format::IQ3_S: return {ScaleKind::F16, L::IQ3_S::d};
  case Format::IQ1_S: return {ScaleKind::F16, L::IQ1_S::d};
  case Format::IQ1_M: return {ScaleKind::IQ1M, L::IQ1_M::scales};
  case Format::IQ4_NL: return {ScaleKind::F16, L::IQ4_NL::d};
  case Format::IQ4_XS: return {ScaleKind::F16, L::IQ4_XS::d};
  case Format::TQ1_0: return {ScaleKind::F16, L::TQ1_0::d};
  case Format::TQ2_0: return {ScaleKind::F16, L::TQ2_0::d};
  case Format::MXFP4: return {ScaleKind::E8M0, L::MXFP4::e};
  case Format::NVFP4: return {ScaleKind::Relative, 0};
  case Format::Q1_0: return {ScaleKind::F16, L::Q1_0::d};
  case Format::Q2_0: return {ScaleKind::F16, L::Q2_0::d};
  case Format::F32:
  case Format::F16:
  case Format::BF16:
    return {ScaleKind::None, 0};
  }
  return {ScaleKind::None, 0};
}

uint16_t loadU16(const uint8_t *p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

/// The block's scale d_b: its f16 d, e8m0 exponent or iq1_m's spread f16;
/// 1 for nvfp4 (the common factor on its sub-block scales).
float loadScale(const ScaleField &field, const uint8_t *block) {
  switch (field.kind) {
  case ScaleKind::F16:
    return qcc::halfToFloat(loadU16(block + field.offset));
  case ScaleKind::E8M0:
    return std::ldexp(1.0f, int(block[field.offset]) - 127);
  case ScaleKind::IQ1M: {
    uint16_t sc[4];
    for (int i = 0; i < 4; ++i)
      sc[i] = loadU16(block + field.offset + 2 * i);
    return qcc::halfToFloat(uint16_t((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) |
                                     ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000)));
  }
  case ScaleKind::Relative:
  case ScaleKind::None:
    break;
  }
  return 1.0f;
}

} // namespace

extern "C" int32_t qcc_rt_lsq_scale_grad(uint32_t ggmlType, const void *w,
                                         const float *grad, float *out,
                                         int64_t rows, int64_t rowLen) {
  const qcc::FormatInfo *info = qcc::lookupFormat(ggmlType);
  const ScaleField field = info ? scaleField(info->format)
                                : ScaleField{ScaleKind::None, 0};
  if (!info || field.kind == ScaleKind::None || rows < 0 || rowLen < 0 ||
      rowLen % info->blockElems != 0) {
    qcc::step::recordError("qcc.ste_grad lsq: no block scale for ggml type " +
                           std::to_string(ggmlType));
    return 1;
  }
  const size_t B = info->blockElems, S = info->blockBytes;
  const size_t blocks = size_t(rows) * size_t(rowLen) / B;
  const auto *bytes = static_cast<const uint8_t *>(w);
  std::vector<float> value(B), offset(B);
  std::vector<uint8_t> zeroed(S);
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t *block = bytes + b * S;
    const float *g = grad + b * B;
    qcc::decodeToF32(info->format, block, value.data(), B);
    const float d = loadScale(field, block);
    std::fill(offset.begin(), offset.end(), 0.0f);
    if (field.kind == ScaleKind::F16) {
      // The offset (dmin·m, m) is what the block decodes to with d = 0.
      std::memcpy(zeroed.data(), block, S);
      std::memset(zeroed.data() + field.offset, 0, 2);
      qcc::decodeToF32(info->format, zeroed.data(), offset.data(), B);
    }
    double sum = 0;
    if (d != 0.0f && std::isfinite(d))
      for (size_t i = 0; i < B; ++i)
        sum += double(g[i]) * (double(value[i]) - double(offset[i])) / d;
    out[b] = float(sum);
  }
  return 0;
}

namespace {

/// e8m0 exponent of the power of two nearest to `d` (> 0) by log2.
int e8m0Nearest(float d) {
  int e = int(std::lround(std::log2(double(d)))) + 127;
  return e < 0 ? 0 : e > 254 ? 254 : e;
}

/// Writes scale `d` into the block's field; false if it cannot be encoded.
bool storeScale(const ScaleField &field, uint8_t *block, float d) {
  switch (field.kind) {
  case ScaleKind::F16: {
    uint16_t h = qcc::floatToHalf(d);
    if (!std::isfinite(qcc::halfToFloat(h)))
      return false;
    std::memcpy(block + field.offset, &h, 2);
    return true;
  }
  case ScaleKind::E8M0:
    block[field.offset] = uint8_t(e8m0Nearest(d));
    return true;
  case ScaleKind::IQ1M: {
    uint16_t h = qcc::floatToHalf(d);
    if (!std::isfinite(qcc::halfToFloat(h)))
      return false;
    for (int i = 0; i < 4; ++i) {
      uint16_t sc = loadU16(block + field.offset + 2 * i);
      sc = uint16_t((sc & 0x0fff) | (((h >> (4 * i)) & 0xf) << 12));
      std::memcpy(block + field.offset + 2 * i, &sc, 2);
    }
    return true;
  }
  case ScaleKind::Relative:
  case ScaleKind::None:
    break;
  }
  return false;
}

} // namespace

extern "C" int32_t qcc_rt_scale_update(uint32_t ggmlType, const void *wIn,
                                       const float *delta, void *wOut,
                                       int64_t rows, int64_t rowLen) {
  const qcc::FormatInfo *info = qcc::lookupFormat(ggmlType);
  const ScaleField field = info ? scaleField(info->format)
                                : ScaleField{ScaleKind::None, 0};
  if (!info || field.kind == ScaleKind::None ||
      field.kind == ScaleKind::Relative || rows < 0 || rowLen < 0 ||
      rowLen % info->blockElems != 0) {
    qcc::step::recordError("qcc.scale_update: no block scale field for ggml "
                           "type " + std::to_string(ggmlType));
    return 1;
  }
  const size_t B = info->blockElems, S = info->blockBytes;
  const size_t blocks = size_t(rows) * size_t(rowLen) / B;
  if (wOut != wIn)
    std::memmove(wOut, wIn, blocks * S);
  auto *bytes = static_cast<uint8_t *>(wOut);
  int32_t status = 0;
  for (size_t b = 0; b < blocks; ++b) {
    uint8_t *block = bytes + b * S;
    float old = loadScale(field, block);
    float d = old + delta[b];
    // A scale may shrink towards zero but not cross it: that would negate
    // the block rather than rescale it.
    bool flips = (old > 0 && d <= 0) || (old < 0 && d >= 0);
    if (!std::isfinite(d) || flips || !storeScale(field, block, d)) {
      if (status == 0)
        qcc::step::recordError(
            "qcc.scale_update: block " + std::to_string(b) +
            " (row " + std::to_string(b * B / size_t(rowLen)) +
            "): the new scale " + std::to_string(d) +
            " cannot be stored; the block keeps its scale");
      status = 1;
    }
  }
  return status;
}
