//===- EncodeIQ.cpp - Encoders of the codebook i-quants ----------------------===//
//
// Placeholder until the codebook searches land: reports "not supported".
//
//===----------------------------------------------------------------------===//

#include "EncodeCommon.h"

namespace qcc {
namespace encode {

BlockFn iqBlockEncoder(Format) { return nullptr; }

} // namespace encode
} // namespace qcc
