//===- Formats.h - GGUF block format facts (no MLIR dependency) -----------===//
//
// Typed access to Formats.def. Header-only and constexpr so that the MLIR
// dialect, the runtime and the tools share one definition of every format.
//
//===----------------------------------------------------------------------===//

#ifndef QCC_RUNTIME_FORMATS_H
#define QCC_RUNTIME_FORMATS_H

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace qcc {

/// A GGUF tensor type. The enumerator values are ggml's type ids, which is
/// what a GGUF file stores in each tensor-info record.
enum class Format : uint32_t {
#define QCC_FORMAT(E, NAME, ID, BE, BB) E = ID,
#include "qcc/Runtime/Formats.def"
};

struct FormatInfo {
  Format format;
  std::string_view name; ///< lower-case name as ggml spells it ("q4_K")
  uint32_t ggmlId;
  uint32_t blockElems; ///< logical elements per block
  uint32_t blockBytes; ///< bytes per block
};

inline constexpr FormatInfo kFormats[] = {
#define QCC_FORMAT(E, NAME, ID, BE, BB) {Format::E, NAME, ID, BE, BB},
#include "qcc/Runtime/Formats.def"
};

inline constexpr size_t kNumFormats = sizeof(kFormats) / sizeof(kFormats[0]);

/// Facts of a ggml type id, or nullptr where qcc does not know the id (which
/// includes ggml's removed ids 4, 5, 31-33 and 36-38).
constexpr const FormatInfo *lookupFormat(uint32_t ggmlId) {
  for (const FormatInfo &info : kFormats)
    if (info.ggmlId == ggmlId)
      return &info;
  return nullptr;
}

constexpr const FormatInfo &formatInfo(Format format) {
  // Every Format value comes from the table, so the lookup cannot fail.
  return *lookupFormat(static_cast<uint32_t>(format));
}

/// Facts of a format by name (exact, case-sensitive as ggml spells it, e.g.
/// "q4_K"), or nullptr.
constexpr const FormatInfo *lookupFormat(std::string_view name) {
  for (const FormatInfo &info : kFormats)
    if (info.name == name)
      return &info;
  return nullptr;
}

/// Whether encoding to this format needs an importance matrix: ggml refuses
/// to quantize iq2_xxs, iq2_xs and iq1_s without one, because their tiny
/// codebooks give poor results when every column is weighted alike.
constexpr bool formatRequiresImportance(Format format) {
  return format == Format::IQ2_XXS || format == Format::IQ2_XS ||
         format == Format::IQ1_S;
}

/// Whether ggml once used this id for a type it has since removed; such ids
/// must be rejected by readers rather than treated as unknown-but-skippable.
constexpr bool isRemovedGgmlType(uint32_t ggmlId) {
  return ggmlId == 4 || ggmlId == 5 || (ggmlId >= 31 && ggmlId <= 33) ||
         (ggmlId >= 36 && ggmlId <= 38);
}

} // namespace qcc

#endif // QCC_RUNTIME_FORMATS_H
