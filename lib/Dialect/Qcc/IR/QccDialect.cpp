//===- QccDialect.cpp - qcc dialect registration --------------------------===//

#include "qcc/Dialect/Qcc/IR/QccDialect.h"
#include "qcc/Dialect/Qcc/IR/QccOps.h"

using namespace mlir;
using namespace mlir::qcc;

#include "qcc/Dialect/Qcc/IR/QccDialect.cpp.inc"

void QccDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "qcc/Dialect/Qcc/IR/QccOps.cpp.inc"
      >();
  registerTypes();
  registerAttributes();
}
