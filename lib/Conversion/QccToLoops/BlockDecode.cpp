//===- BlockDecode.cpp - Dispatch to the per-family block decoders --------===//

#include "DecodeEmitter.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/SymbolTable.h"

using namespace mlir;
using namespace mlir::qcc;
using namespace mlir::qcc::detail;

Value DecodeEmitter::byteTable(StringRef name, ArrayRef<uint8_t> bytes) {
  Operation *scope = b.getInsertionBlock()->getParentOp();
  Operation *symbolTable = SymbolTable::getNearestSymbolTable(scope);
  auto type = MemRefType::get({static_cast<int64_t>(bytes.size())},
                              b.getI8Type());
  if (!SymbolTable::lookupSymbolIn(symbolTable, name)) {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(&symbolTable->getRegion(0).front());
    auto tensorType = RankedTensorType::get(type.getShape(), b.getI8Type());
    SmallVector<APInt> values;
    values.reserve(bytes.size());
    for (uint8_t v : bytes)
      values.emplace_back(8, v);
    memref::GlobalOp::create(b, loc, name, b.getStringAttr("private"), type,
                             DenseElementsAttr::get(tensorType, values),
                             /*constant=*/true, /*alignment=*/IntegerAttr());
  }
  return memref::GetGlobalOp::create(b, loc, type, name);
}

LogicalResult mlir::qcc::emitBlockDecode(OpBuilder &b, Location loc,
                                         QuantFormat format,
                                         const BlockDecodeSite &site) {
  DecodeEmitter e(b, loc, site);
  if (emitLegacyDecode(e, format) || emitKQuantDecode(e, format) ||
      emitIQuantDecode(e, format) || emitOtherDecode(e, format))
    return success();
  return failure();
}
