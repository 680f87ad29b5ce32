//===- DecodeOther.cpp - ternary, fp4 and 1/2-bit block decoders ----------===//
//
// Mirrors the "Ternary, fp4 and 1/2-bit formats" section of
// runtime/lib/formats/Decode.cpp.
//
//===----------------------------------------------------------------------===//

#include "DecodeEmitter.h"

using namespace mlir;
using namespace mlir::qcc;
using namespace mlir::qcc::detail;

bool mlir::qcc::detail::emitOtherDecode(DecodeEmitter &e, QuantFormat format) {
  (void)e;
  (void)format;
  return false;
}
