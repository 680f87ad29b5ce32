//===- BlockDecode.h - Emit the decode of one GGUF block as IR --*- C++ -*-===//
//
// The compiler's side of each block format: IR (arith/scf/memref) that turns
// one block's bytes into its f32 elements with exactly the operations of the
// runtime's reference decoder (runtime/lib/formats/Decode.cpp, the one home
// of the arithmetic); tests prove the two bit-equal for every format. Being
// plain arith/scf on memrefs, the same emitters serve the CPU and the GPU.
//
//===----------------------------------------------------------------------===//

#ifndef QCC_CONVERSION_QCCTOLOOPS_BLOCKDECODE_H
#define QCC_CONVERSION_QCCTOLOOPS_BLOCKDECODE_H

#include "qcc/Dialect/Qcc/IR/QccAttrs.h"

#include "mlir/IR/Builders.h"
#include "mlir/Support/LLVM.h"

namespace mlir::qcc {

/// Where a block is and where its elements go: `bytes` is a 1-D
/// memref<?xi8> of block storage and `byteOffset` (index) the block's first
/// byte; `out` a 1-D memref<?xf32> and `outOffset` (index) the block's first
/// element.
struct BlockDecodeSite {
  Value bytes;
  Value byteOffset;
  Value out;
  Value outOffset;
};

/// Emits the decode of one block of `format` at the builder's insertion
/// point. Codebook tables become memref.global constants of the nearest
/// symbol table (created once, shared by all emitted decodes). Fails, having
/// emitted nothing, for a format without an emitter.
LogicalResult emitBlockDecode(OpBuilder &b, Location loc, QuantFormat format,
                              const BlockDecodeSite &site);

} // namespace mlir::qcc

#endif // QCC_CONVERSION_QCCTOLOOPS_BLOCKDECODE_H
