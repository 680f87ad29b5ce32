//===- QccTypes.h - The quantized tensor type -------------------*- C++ -*-===//

#ifndef QCC_DIALECT_QCC_IR_QCCTYPES_H
#define QCC_DIALECT_QCC_IR_QCCTYPES_H

#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Types.h"
#include "qcc/Dialect/Qcc/IR/QccAttrs.h"

#define GET_TYPEDEF_CLASSES
#include "qcc/Dialect/Qcc/IR/QccTypes.h.inc"

#endif // QCC_DIALECT_QCC_IR_QCCTYPES_H
