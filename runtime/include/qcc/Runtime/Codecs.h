//===- Codecs.h - Decode and encode GGUF block formats --------------------===//
//
// The block codecs of every format in Formats.def. Decoding is bit-exact with
// ggml's own dequantizers; encoding reaches at least ggml's quality. The
// layouts and arithmetic live in runtime/lib/formats and nowhere else.
//
//===----------------------------------------------------------------------===//

#ifndef QCC_RUNTIME_CODECS_H
#define QCC_RUNTIME_CODECS_H

#include "qcc/Runtime/Formats.h"

#include <cstddef>
#include <cstdint>
#include <string>

namespace qcc {

/// Which implementation of a decoder to use. `Auto` picks the widest the CPU
/// supports at run time; the others force one (tests compare them bit for
/// bit). Forcing an ISA the CPU lacks falls back to Scalar.
enum class CodecImpl { Auto, Scalar, AVX2, AVX512 };

/// The implementation `Auto` resolves to on this CPU.
CodecImpl resolveCodecImpl(CodecImpl impl);
const char *codecImplName(CodecImpl impl);

/// Decodes `numElements` logical elements (a multiple of the format's block
/// length) stored as consecutive blocks at `blocks` into f32.
void decodeToF32(Format format, const void *blocks, float *out,
                 size_t numElements, CodecImpl impl = CodecImpl::Auto);

/// As decodeToF32, then rounds each value to bf16 / f16 (round to nearest
/// even, as ggml's converters do). Values are returned as raw bit patterns.
void decodeToBF16(Format format, const void *blocks, uint16_t *out,
                  size_t numElements, CodecImpl impl = CodecImpl::Auto);
void decodeToF16(Format format, const void *blocks, uint16_t *out,
                 size_t numElements, CodecImpl impl = CodecImpl::Auto);

/// Whether encoding to `format` requires an importance matrix.
bool encodeNeedsImportance(Format format);

/// Encodes `numRows` rows of `rowLength` f32 values (rowLength a multiple of
/// the block length) into consecutive blocks at `blocks`. `importance`, when
/// non-null, holds `rowLength` non-negative weights shared by all rows.
/// Returns false and sets `error` when the input cannot be encoded (e.g. a
/// format that needs importance weights got none).
bool encodeFromF32(Format format, const float *in, void *blocks,
                   size_t numRows, size_t rowLength, const float *importance,
                   std::string *error);

/// Bytes that `numElements` elements occupy in `format`.
inline size_t encodedBytes(Format format, size_t numElements) {
  const FormatInfo &info = formatInfo(format);
  return numElements / info.blockElems * info.blockBytes;
}

/// IEEE half / bfloat16 conversions, matching ggml bit for bit.
float halfToFloat(uint16_t h);
uint16_t floatToHalf(float f);
float bf16ToFloat(uint16_t b);
uint16_t floatToBF16(float f);

} // namespace qcc

#endif // QCC_RUNTIME_CODECS_H
