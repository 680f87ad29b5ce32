//===- DecodeIQuants.cpp - i-quant block decoders -------------------------===//
//
// Mirrors the "i-quants" section of runtime/lib/formats/Decode.cpp.
//
//===----------------------------------------------------------------------===//

#include "DecodeEmitter.h"

using namespace mlir;
using namespace mlir::qcc;
using namespace mlir::qcc::detail;

bool mlir::qcc::detail::emitIQuantDecode(DecodeEmitter &e, QuantFormat format) {
  (void)e;
  (void)format;
  return false;
}
