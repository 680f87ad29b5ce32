//===- QccAttrs.cpp - qcc enums and attributes ----------------------------===//
//
// Besides the generated code, this file proves at compile time that the
// dialect's QuantFormat enum and the runtime's Formats.def agree on every
// format's name and ggml id, so the facts cannot drift apart.
//
//===----------------------------------------------------------------------===//

#include "qcc/Dialect/Qcc/IR/QccAttrs.h"
#include "qcc/Dialect/Qcc/IR/QccDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::qcc;

#include "qcc/Dialect/Qcc/IR/QccEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "qcc/Dialect/Qcc/IR/QccAttrs.cpp.inc"

namespace {
constexpr bool sameName(llvm::StringRef a, std::string_view b) {
  return a.size() == b.size() && a == llvm::StringRef(b.data(), b.size());
}
} // namespace

#define QCC_FORMAT(E, NAME, ID, BE, BB)                                        \
  static_assert(static_cast<uint32_t>(QuantFormat::E) == ID,                   \
                "QuantFormat::" #E " has another ggml id than Formats.def");
#include "qcc/Runtime/Formats.def"

static_assert(::qcc::kNumFormats == 28,
              "Formats.def and the QuantFormat enum list 28 formats");

void QccDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "qcc/Dialect/Qcc/IR/QccAttrs.cpp.inc"
      >();
  // Names must agree too; constexpr string comparison of the generated
  // stringifier is not available, so check once when the dialect loads.
  for (const ::qcc::FormatInfo &info : ::qcc::kFormats) {
    (void)info;
    assert(sameName(stringifyQuantFormat(
                        static_cast<QuantFormat>(info.ggmlId)),
                    info.name) &&
           "QuantFormat and Formats.def disagree on a format's name");
  }
}

LogicalResult JLCarryAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                  int64_t dim, int64_t chunk, int64_t seed) {
  if (dim <= 0)
    return emitError() << "JL carry dimension must be positive, got " << dim;
  if (chunk <= 0)
    return emitError() << "JL chunk must be positive, got " << chunk;
  if (dim > chunk)
    return emitError() << "JL carry dimension " << dim
                       << " exceeds its chunk " << chunk
                       << " (a sketch larger than the data saves nothing)";
  return success();
}
