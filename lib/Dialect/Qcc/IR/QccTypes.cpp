//===- QccTypes.cpp - The quantized tensor type ---------------------------===//

#include "qcc/Dialect/Qcc/IR/QccTypes.h"
#include "qcc/Dialect/Qcc/IR/QccDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::qcc;

#define GET_TYPEDEF_CLASSES
#include "qcc/Dialect/Qcc/IR/QccTypes.cpp.inc"

void QccDialect::registerTypes() {
  addTypes<
#define GET_TYPEDEF_LIST
#include "qcc/Dialect/Qcc/IR/QccTypes.cpp.inc"
      >();
}

// `!qcc.qtensor<4x?x512xq4_K>`: a dimension list ending in `x`, then the
// format as ggml spells it.
Type QTensorType::parse(AsmParser &parser) {
  SmallVector<int64_t> shape;
  StringRef formatName;
  SMLoc loc = parser.getCurrentLocation();
  if (parser.parseLess() ||
      parser.parseDimensionList(shape, /*allowDynamic=*/true,
                                /*withTrailingX=*/true))
    return {};
  SMLoc formatLoc = parser.getCurrentLocation();
  if (parser.parseKeyword(&formatName)) {
    return {};
  }
  std::optional<QuantFormat> format = symbolizeQuantFormat(formatName);
  if (!format) {
    parser.emitError(formatLoc) << "unknown GGUF block format '" << formatName
                                << "'";
    return {};
  }
  if (parser.parseGreater())
    return {};
  return parser.getChecked<QTensorType>(loc, parser.getContext(), shape,
                                        *format);
}

void QTensorType::print(AsmPrinter &printer) const {
  printer << "<";
  for (int64_t dim : getShape()) {
    if (ShapedType::isDynamic(dim))
      printer << "?";
    else
      printer << dim;
    printer << "x";
  }
  printer << stringifyQuantFormat(getFormat()) << ">";
}

LogicalResult QTensorType::verify(function_ref<InFlightDiagnostic()> emitError,
                                  ArrayRef<int64_t> shape,
                                  QuantFormat format) {
  if (shape.empty() || shape.size() > 4)
    return emitError() << "qtensor rank must be between 1 and 4 (GGUF "
                          "tensors have at most four dimensions), got "
                       << shape.size();
  for (int64_t dim : shape)
    if (!ShapedType::isDynamic(dim) && dim < 0)
      return emitError() << "qtensor dimensions must be non-negative, got "
                         << dim;
  int64_t blockElems = getFormatInfo(format).blockElems;
  int64_t inner = shape.back();
  if (ShapedType::isDynamic(inner)) {
    if (blockElems > 1)
      return emitError() << "qtensor of format '"
                         << stringifyQuantFormat(format)
                         << "' needs a static innermost dimension (blocks of "
                         << blockElems << " elements)";
    return success();
  }
  if (inner % blockElems != 0)
    return emitError() << "qtensor innermost dimension " << inner
                       << " is not a multiple of the '"
                       << stringifyQuantFormat(format) << "' block length "
                       << blockElems;
  return success();
}

int64_t QTensorType::getBlockElems() const {
  return getFormatInfo(getFormat()).blockElems;
}

int64_t QTensorType::getBlockBytes() const {
  return getFormatInfo(getFormat()).blockBytes;
}

bool QTensorType::hasStaticShape() const {
  return llvm::none_of(getShape(), ShapedType::isDynamic);
}

int64_t QTensorType::getStorageBytes() const {
  assert(hasStaticShape() && "storage size of a dynamically shaped qtensor");
  int64_t elems = 1;
  for (int64_t dim : getShape())
    elems *= dim;
  return elems / getBlockElems() * getBlockBytes();
}

QTensorType QTensorType::clone(ArrayRef<int64_t> shape) const {
  return QTensorType::get(getContext(), shape, getFormat());
}
