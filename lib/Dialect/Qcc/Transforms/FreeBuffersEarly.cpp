//===- FreeBuffersEarly.cpp - deallocs right after a buffer's last use ----===//
//
// Ownership-based deallocation frees at the end of the allocating block;
// this pass moves each such dealloc up to just after the last operation of
// the block that touches the buffer or an alias of it (Passes.td).
//
//===----------------------------------------------------------------------===//

#include "qcc/Dialect/Qcc/Transforms/Passes.h"

#include "mlir/Dialect/Bufferization/Transforms/BufferViewFlowAnalysis.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"

namespace mlir::qcc {
#define GEN_PASS_DEF_FREEBUFFERSEARLY
#include "qcc/Dialect/Qcc/Transforms/Passes.h.inc"
} // namespace mlir::qcc

using namespace mlir;

namespace {

/// The last operation of `block` (possibly `after` itself) that uses one of
/// `aliases`, other than `skip`; null when a use lies outside the block.
Operation *lastUseInBlock(Block *block, Operation *after,
                          const BufferViewFlowAnalysis::ValueSetT &aliases,
                          Operation *skip) {
  Operation *last = after;
  for (Value alias : aliases) {
    for (Operation *user : alias.getUsers()) {
      if (user == skip)
        continue;
      Operation *inBlock = block->findAncestorOpInBlock(*user);
      if (!inBlock)
        return nullptr;
      if (last->isBeforeInBlock(inBlock))
        last = inBlock;
    }
    // An alias defined by an op of the block (a view, a loop result) is a
    // use in itself: the buffer must outlive its definition.
    if (Operation *def = alias.getDefiningOp()) {
      Operation *inBlock = block->findAncestorOpInBlock(*def);
      if (!inBlock)
        return nullptr;
      if (last->isBeforeInBlock(inBlock))
        last = inBlock;
    }
  }
  return last;
}

struct FreeBuffersEarlyPass
    : public mlir::qcc::impl::FreeBuffersEarlyBase<FreeBuffersEarlyPass> {
  void runOnOperation() override {
    func::FuncOp func = getOperation();
    BufferViewFlowAnalysis aliases(func);
    SmallVector<memref::DeallocOp> deallocs;
    func.walk([&](memref::DeallocOp op) { deallocs.push_back(op); });
    for (memref::DeallocOp dealloc : deallocs) {
      Value buffer = dealloc.getMemref();
      auto alloc = buffer.getDefiningOp<memref::AllocOp>();
      Block *block = dealloc->getBlock();
      if (!alloc || alloc->getBlock() != block)
        continue;
      Operation *last =
          lastUseInBlock(block, alloc, aliases.resolve(buffer), dealloc);
      if (!last || !last->isBeforeInBlock(dealloc) ||
          last->getNextNode() == dealloc.getOperation())
        continue;
      dealloc->moveAfter(last);
    }
  }
};

} // namespace
