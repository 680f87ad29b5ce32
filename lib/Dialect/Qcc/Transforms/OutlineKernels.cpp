//===- OutlineKernels.cpp - One private function per kind of kernel ------===//
//
// A training step is one long function: every layer repeats the same
// projections, elementwise ops and updates on the same shapes. Lowered as
// is, each op becomes its own loop nest in that one function, and both the
// MLIR conversions and LLVM spend time growing faster than linearly in its
// size. This pass moves each qcc op and each linalg op on tensors into a
// private function (a "kernel") and calls it instead; ops that are the same
// up to their operands share one kernel, so a 32-layer stack lowers and
// compiles each distinct op once.
//
//===----------------------------------------------------------------------===//

#include "qcc/Dialect/Qcc/IR/QccDialect.h"
#include "qcc/Dialect/Qcc/IR/QccOps.h"
#include "qcc/Dialect/Qcc/IR/QccTypes.h"
#include "qcc/Dialect/Qcc/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Transforms/RegionUtils.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/StringMap.h"

#include <algorithm>

#define DEBUG_TYPE "qcc-outline-kernels"

namespace mlir::qcc {
#define GEN_PASS_DEF_OUTLINEKERNELS
#include "qcc/Dialect/Qcc/Transforms/Passes.h.inc"
} // namespace mlir::qcc

using namespace mlir;
using namespace mlir::qcc;

namespace {

/// Whether a kernel can take or return a value of type `t`: statically
/// shaped tensors and qtensors (buffers, passed as bare pointers after
/// lowering) and scalars.
bool isPassable(Type t) {
  if (auto tensor = dyn_cast<RankedTensorType>(t))
    return tensor.hasStaticShape();
  if (auto q = dyn_cast<QTensorType>(t))
    return q.hasStaticShape();
  return t.isIntOrIndexOrFloat();
}

/// Whether `v` is cheaper to recreate inside a kernel than to pass: scalar
/// constants, static tensor.empty (a shape, not data), and linalg.fill of
/// such values (the zero init of a contraction). Recreating them keeps the
/// kernel's inputs to the data it reads, and lets bufferization allocate the
/// result inside the kernel, where it becomes the caller's out-parameter.
bool isRematerializable(Value v) {
  Operation *def = v.getDefiningOp();
  if (!def || def->getNumResults() != 1)
    return false;
  if (def->hasTrait<OpTrait::ConstantLike>())
    return v.getType().isIntOrIndexOrFloat();
  if (auto empty = dyn_cast<tensor::EmptyOp>(def))
    return empty.getType().hasStaticShape();
  if (auto fill = dyn_cast<linalg::FillOp>(def))
    return fill.hasPureTensorSemantics() &&
           llvm::all_of(def->getOperands(), isRematerializable);
  return false;
}

/// Whether `op` is outlined: a qcc op, or a linalg op on tensors, whose
/// operands, captured values and results a kernel can pass.
bool isKernelRoot(Operation *op) {
  if (isa<QccDialect>(op->getDialect())) {
    // Fine as is.
  } else if (auto linalgOp = dyn_cast<linalg::LinalgOp>(op)) {
    if (!linalgOp.hasPureTensorSemantics())
      return false;
    // A fill that only feeds other kernels is recreated inside them.
    if (isa<linalg::FillOp>(op) && isRematerializable(op->getResult(0)) &&
        llvm::all_of(op->getUsers(), [](Operation *user) {
          return isa<QccDialect>(user->getDialect()) ||
                 isa<linalg::LinalgOp>(user);
        }))
      return false;
  } else {
    return false;
  }
  if (op->getNumResults() == 0 || op->getNumSuccessors() != 0)
    return false;
  SetVector<Value> captured;
  getUsedValuesDefinedAbove(op->getRegions(), captured);
  auto passable = [](Value v) {
    return isRematerializable(v) || isPassable(v.getType());
  };
  return llvm::all_of(op->getOperands(), passable) &&
         llvm::all_of(captured, passable) &&
         llvm::all_of(op->getResultTypes(), isPassable);
}

/// The readable part of a kernel's name: the root op's name with dots as
/// underscores (qcc.qmatmul -> qcc_qmatmul).
std::string kernelStem(Operation *op) {
  std::string stem = op->getName().getStringRef().str();
  std::replace(stem.begin(), stem.end(), '.', '_');
  return stem;
}

struct OutlineKernelsPass
    : public mlir::qcc::impl::OutlineKernelsBase<OutlineKernelsPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SymbolTable symbols(module);
    // Kernels by their text: the generic form of the function under a
    // placeholder name, without locations. Two ops share a kernel exactly
    // when their kernels print the same.
    llvm::StringMap<func::FuncOp> kernelsByText;
    unsigned counter = 0;
    // Producers recreated inside kernels, to erase once nothing else uses
    // them.
    SetVector<Operation *> recreatedProducers;

    SmallVector<func::FuncOp> functions;
    for (auto fn : module.getOps<func::FuncOp>())
      if (!fn.isExternal() && !fn->hasAttr(kKernelAttrName))
        functions.push_back(fn);

    for (func::FuncOp fn : functions) {
      SmallVector<Operation *> roots;
      fn.walk([&](Operation *op) {
        if (isKernelRoot(op))
          roots.push_back(op);
      });
      for (Operation *root : roots) {
        // Inputs in order of first use: operands, then values the op's
        // regions capture. Rematerializable ones are recreated instead.
        SetVector<Value> inputs;
        inputs.insert(root->operand_begin(), root->operand_end());
        getUsedValuesDefinedAbove(root->getRegions(), inputs);
        SmallVector<Value> args, recreated;
        for (Value v : inputs)
          (isRematerializable(v) ? recreated : args).push_back(v);

        OpBuilder b(module.getContext());
        b.setInsertionPointToEnd(module.getBody());
        auto kernel = func::FuncOp::create(
            b, root->getLoc(), "__qcc_kernel",
            b.getFunctionType(ValueRange(args).getTypes(),
                              root->getResultTypes()));
        kernel.setPrivate();
        Block *body = kernel.addEntryBlock();
        b.setInsertionPointToStart(body);
        IRMapping map;
        map.map(args, body->getArguments());
        for (Value v : recreated)
          recreate(b, v, map);
        Operation *clone = b.clone(*root, map);
        func::ReturnOp::create(b, root->getLoc(), clone->getResults());

        std::string text;
        {
          llvm::raw_string_ostream os(text);
          kernel->print(os, OpPrintingFlags()
                                .printGenericOpForm()
                                .enableDebugInfo(false)
                                .useLocalScope());
        }
        auto [it, inserted] = kernelsByText.try_emplace(text, kernel);
        if (inserted) {
          kernel.setSymName(("__qcc_kernel_" + kernelStem(root) + "_" +
                             Twine(counter++))
                                .str());
          kernel->setAttr(kKernelAttrName, b.getUnitAttr());
          markInternalNoInline(kernel);
          symbols.insert(kernel);
          ++numKernels;
        } else {
          kernel.erase();
          ++numShared;
        }
        b.setInsertionPoint(root);
        auto call = func::CallOp::create(b, root->getLoc(), it->second, args);
        root->replaceAllUsesWith(call.getResults());
        for (Value v : recreated)
          collectProducers(v, recreatedProducers);
        root->erase();
        ++numOutlined;
      }
    }

    // Erase the recreated producers nothing uses any more, users first (a
    // fill before the empty it fills). No op is created meanwhile, so the
    // addresses of erased ops cannot come back.
    DenseSet<Operation *> erased;
    for (bool progress = true; progress;) {
      progress = false;
      for (Operation *op : recreatedProducers) {
        if (erased.contains(op) || !op->use_empty())
          continue;
        op->erase();
        erased.insert(op);
        progress = true;
      }
    }
  }

  /// What LLVM should make of a kernel (func-to-llvm carries both
  /// attributes over): it is compiled once for all its calls, and inlining
  /// it back into every caller would undo that; and it is no symbol of the
  /// step library.
  static void markInternalNoInline(func::FuncOp kernel) {
    MLIRContext *ctx = kernel.getContext();
    kernel->setAttr("passthrough",
                    ArrayAttr::get(ctx, {StringAttr::get(ctx, "noinline")}));
    kernel->setAttr("llvm.linkage",
                    LLVM::LinkageAttr::get(ctx, LLVM::Linkage::Internal));
  }

  /// Adds the ops that define the rematerializable `v`, transitively.
  static void collectProducers(Value v, SetVector<Operation *> &ops) {
    Operation *def = v.getDefiningOp();
    if (!ops.insert(def))
      return;
    for (Value operand : def->getOperands())
      collectProducers(operand, ops);
  }

  /// Recreates `v` (isRematerializable) in the kernel being built, its own
  /// operands first.
  static Value recreate(OpBuilder &b, Value v, IRMapping &map) {
    if (Value mapped = map.lookupOrNull(v))
      return mapped;
    Operation *def = v.getDefiningOp();
    for (Value operand : def->getOperands())
      recreate(b, operand, map);
    b.clone(*def, map);
    return map.lookup(v);
  }
};

} // namespace
