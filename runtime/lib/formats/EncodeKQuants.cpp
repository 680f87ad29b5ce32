//===- EncodeKQuants.cpp - Encoders of q2_K .. q6_K -----------------------===//
//
// Placeholder until the two-level scale fits land: reports "not supported".
//
//===----------------------------------------------------------------------===//

#include "EncodeCommon.h"

namespace qcc {
namespace encode {

BlockFn kquantBlockEncoder(Format) { return nullptr; }

} // namespace encode
} // namespace qcc
