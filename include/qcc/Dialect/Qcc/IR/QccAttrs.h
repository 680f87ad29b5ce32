//===- QccAttrs.h - qcc enums and attributes --------------------*- C++ -*-===//

#ifndef QCC_DIALECT_QCC_IR_QCCATTRS_H
#define QCC_DIALECT_QCC_IR_QCCATTRS_H

#include "mlir/IR/Attributes.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/DialectImplementation.h"
#include "qcc/Runtime/Formats.h"

#include "qcc/Dialect/Qcc/IR/QccEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "qcc/Dialect/Qcc/IR/QccAttrs.h.inc"

namespace mlir::qcc {

/// The runtime's facts (ggml id, block length, block bytes) of a format.
inline const ::qcc::FormatInfo &getFormatInfo(QuantFormat format) {
  return ::qcc::formatInfo(static_cast<::qcc::Format>(format));
}

} // namespace mlir::qcc

#endif // QCC_DIALECT_QCC_IR_QCCATTRS_H
