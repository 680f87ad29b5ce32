//===- Codebooks.h - Codebook tables (forwarding header) ------------------===//
//
// The tables moved to the public qcc/Runtime/Codebooks.h so that the compiler
// can embed the same arrays; this keeps `#include "Codebooks.h"` working for
// the codec sources and the generated Codebooks.cpp.
//
//===----------------------------------------------------------------------===//

#ifndef QCC_RUNTIME_FORMATS_CODEBOOKS_H
#define QCC_RUNTIME_FORMATS_CODEBOOKS_H

#include "qcc/Runtime/Codebooks.h"

#endif // QCC_RUNTIME_FORMATS_CODEBOOKS_H
