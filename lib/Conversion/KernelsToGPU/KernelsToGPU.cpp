//===- KernelsToGPU.cpp - scf.parallel loops to gpu.launch ----------------===//
//
// qcc-kernels-to-gpu: after bufferization, every outermost scf.parallel of a
// host function becomes a gpu.launch, and the host keeps only launches,
// buffer management (gpu.alloc / gpu.dealloc / gpu.memcpy) and scalar code:
//
//  - grids of the kernel form (qcc/Conversion/KernelForm.h): one thread
//    block per grid iteration (block ids), `qcc.kernel_threads` threads;
//    the grid's allocas become workgroup (shared-memory) buffers, each phase
//    a loop of the thread over iterations tid, tid + T, ... followed by
//    gpu.barrier;
//  - any other scf.parallel (elementwise code from linalg, hadamard): its
//    iterations are linearized and spread one per thread over blocks of
//    `threads` threads; loops nested in it run sequentially in the thread;
//  - host loops that touch memory outside any parallel loop (the loops of
//    a full reduction, say) run as a single-thread kernel.
//
//===----------------------------------------------------------------------===//

#include "qcc/Conversion/KernelForm.h"
#include "qcc/Conversion/Passes.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/IRMapping.h"

namespace mlir::qcc {
#define GEN_PASS_DEF_QCCKERNELSTOGPU
#define GEN_PASS_DEF_QCCMERGEGPUMODULES
#include "qcc/Conversion/Passes.h.inc"
} // namespace mlir::qcc

using namespace mlir;
using namespace mlir::qcc;

namespace {

/// Whether `op` already runs on the device: in a parallel loop (a kernel to
/// be) or in a launch.
bool onDevice(Operation *op) {
  return op->getParentOfType<scf::ParallelOp>() ||
         op->getParentOfType<gpu::LaunchOp>();
}

bool isOutermostParallel(Operation *op) {
  return isa<scf::ParallelOp>(op) && !onDevice(op);
}

/// Unit attribute on the host stack slots of stageHostScalars.
constexpr StringLiteral kHostSlotAttr = "qcc.host_slot";

bool isHostSlotAccess(Operation *op) {
  Value m;
  if (auto load = dyn_cast<memref::LoadOp>(op))
    m = load.getMemRef();
  else if (auto store = dyn_cast<memref::StoreOp>(op))
    m = store.getMemRef();
  Operation *def = m ? m.getDefiningOp() : nullptr;
  return def && def->hasAttr(kHostSlotAttr);
}

bool touchesMemory(Operation *op) {
  return isa<memref::LoadOp, memref::StoreOp, memref::AtomicRMWOp,
             memref::GenericAtomicRMWOp, vector::LoadOp, vector::StoreOp,
             vector::TransferReadOp, vector::TransferWriteOp,
             vector::MaskedLoadOp, vector::MaskedStoreOp>(op);
}

Value cIdx(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIndexOp::create(b, loc, v);
}

/// Replaces `par` (inside a launch) by nested sequential scf.for loops.
LogicalResult parallelToSequential(scf::ParallelOp par) {
  if (par.getNumResults() != 0)
    return par.emitOpError("with reductions cannot be mapped to GPU threads");
  OpBuilder b(par);
  Location loc = par.getLoc();
  IRMapping map;
  SmallVector<Value> ivs(par.getInductionVars());
  for (auto [lb, ub, step, iv] :
       llvm::zip(par.getLowerBound(), par.getUpperBound(), par.getStep(),
                 ivs)) {
    auto loop = scf::ForOp::create(b, loc, lb, ub, step);
    map.map(iv, loop.getInductionVar());
    b.setInsertionPointToStart(loop.getBody());
  }
  for (Operation &op : par.getBody()->without_terminator())
    b.clone(op, map);
  par.erase();
  return success();
}

/// Replaces every scf.parallel nested in `root` by sequential loops.
LogicalResult sequentializeNested(Region &root) {
  SmallVector<scf::ParallelOp> nested;
  root.walk<WalkOrder::PreOrder>([&](scf::ParallelOp p) {
    nested.push_back(p);
    return WalkResult::skip(); // inner ones are cloned into the new loops
  });
  for (scf::ParallelOp p : nested) {
    if (failed(parallelToSequential(p)))
      return failure();
  }
  // The clones may hold parallel loops of their own.
  bool more = false;
  root.walk([&](scf::ParallelOp) { more = true; });
  return more ? sequentializeNested(root) : success();
}

struct KernelsToGPUPass
    : public mlir::qcc::impl::QccKernelsToGPUBase<KernelsToGPUPass> {
  using QccKernelsToGPUBase::QccKernelsToGPUBase;

  void runOnOperation() override {
    for (auto func : getOperation().getOps<func::FuncOp>()) {
      if (func.isExternal())
        continue;
      if (gridsOnly) {
        if (failed(mapParallelLoops(func, /*onlyGrids=*/true)))
          return signalPassFailure();
        continue;
      }
      expandHostCopies(func);
      stageHostScalars(func);
      if (failed(wrapHostMemoryAccess(func)) ||
          failed(mapParallelLoops(func, /*onlyGrids=*/false)) ||
          failed(moveBuffersToDevice(func)))
        return signalPassFailure();
    }
  }

  /// memref.copy between device buffers (of any layout) as a parallel loop
  /// of element copies, which becomes a kernel like any other.
  static void expandHostCopies(func::FuncOp func) {
    SmallVector<memref::CopyOp> copies;
    func.walk([&](memref::CopyOp c) {
      if (!onDevice(c))
        copies.push_back(c);
    });
    for (memref::CopyOp copy : copies) {
      OpBuilder b(copy);
      Location loc = copy.getLoc();
      auto type = cast<MemRefType>(copy.getSource().getType());
      SmallVector<Value> lbs, ubs, steps;
      for (int64_t d = 0; d < type.getRank(); ++d) {
        lbs.push_back(cIdx(b, loc, 0));
        ubs.push_back(memref::DimOp::create(b, loc, copy.getSource(), d));
        steps.push_back(cIdx(b, loc, 1));
      }
      if (type.getRank() == 0) {
        lbs.push_back(cIdx(b, loc, 0));
        ubs.push_back(cIdx(b, loc, 1));
        steps.push_back(cIdx(b, loc, 1));
      }
      auto par = scf::ParallelOp::create(b, loc, lbs, ubs, steps);
      b.setInsertionPointToStart(par.getBody());
      SmallVector<Value> ivs;
      if (type.getRank() != 0)
        ivs.assign(SmallVector<Value>(par.getInductionVars()));
      Value v = memref::LoadOp::create(b, loc, copy.getSource(), ivs);
      memref::StoreOp::create(b, loc, v, copy.getTarget(), ivs);
      copy.erase();
    }
  }

  /// Scalars the host itself computes with (a step counter read, a bias
  /// correction computed from it and written back) cross between host and
  /// device by copies: a top-level load of a one-element buffer becomes a
  /// gpu.memcpy into a host stack slot and a load from it; a top-level
  /// store, a store into a host slot and a gpu.memcpy to the device.
  static void stageHostScalars(func::FuncOp func) {
    SmallVector<Operation *> accesses;
    for (Block &block : func.getBody())
      for (Operation &op : block)
        if (isa<memref::LoadOp, memref::StoreOp>(op))
          accesses.push_back(&op);
    for (Operation *op : accesses) {
      auto load = dyn_cast<memref::LoadOp>(op);
      auto store = dyn_cast<memref::StoreOp>(op);
      Value device = load ? load.getMemRef() : store.getMemRef();
      auto type = cast<MemRefType>(device.getType());
      if (!type.hasStaticShape() || type.getNumElements() != 1 ||
          !type.getLayout().isIdentity())
        continue; // left for wrapHostMemoryAccess (an error)
      OpBuilder b(op);
      Location loc = op->getLoc();
      auto slot = memref::AllocaOp::create(b, loc, type);
      slot->setAttr(kHostSlotAttr, b.getUnitAttr());
      if (load) {
        gpu::MemcpyOp::create(b, loc, Type(), ValueRange{}, slot, device);
        auto host = memref::LoadOp::create(b, loc, slot, load.getIndices());
        load.replaceAllUsesWith(host.getResult());
        load.erase();
      } else {
        memref::StoreOp::create(b, loc, store.getValueToStore(), slot,
                                store.getIndices());
        gpu::MemcpyOp::create(b, loc, Type(), ValueRange{}, device, slot);
        store.erase();
      }
    }
  }

  /// Host code may not dereference buffers: they live on the device. Runs
  /// of top-level ops that read or write memory outside any parallel loop
  /// (with the ops that use their results) become one-iteration
  /// scf.parallel loops, i.e. single-thread kernels. A value such a run
  /// computes that the host needs afterwards is an error.
  LogicalResult wrapHostMemoryAccess(func::FuncOp func) {
    auto needsDevice = [](Operation *top) {
      if (isa<scf::ParallelOp, gpu::LaunchOp>(top))
        return false;
      bool found = false;
      top->walk([&](Operation *op) {
        if (touchesMemory(op) && !onDevice(op) && !isHostSlotAccess(op))
          found = true;
      });
      return found;
    };
    SmallVector<SmallVector<Operation *>> groups;
    for (Block &block : func.getBody()) {
      SmallVector<Operation *> group;
      SmallPtrSet<Operation *, 8> inGroup;
      auto close = [&] {
        if (!group.empty())
          groups.push_back(group);
        group.clear();
        inGroup.clear();
      };
      for (Operation &op : block.without_terminator()) {
        bool usesGroup = llvm::any_of(op.getOperands(), [&](Value v) {
          Operation *def = v.getDefiningOp();
          return def && inGroup.contains(def);
        });
        if (needsDevice(&op) ||
            (usesGroup && !isa<scf::ParallelOp, gpu::LaunchOp>(op))) {
          group.push_back(&op);
          inGroup.insert(&op);
        } else {
          close();
        }
      }
      close();
    }
    for (ArrayRef<Operation *> group : groups) {
      SmallPtrSet<Operation *, 8> members(group.begin(), group.end());
      for (Operation *op : group)
        for (Value result : op->getResults())
          for (Operation *user : result.getUsers())
            if (!members.contains(user) &&
                !llvm::any_of(group, [&](Operation *m) {
                  return m->isProperAncestor(user);
                }))
              return user->emitOpError(
                         "uses a value read from a buffer in host code, "
                         "which the CUDA target cannot run (the buffer is "
                         "in device memory)")
                         .attachNote(op->getLoc())
                     << "read here";
      OpBuilder b(group.front());
      Location loc = group.front()->getLoc();
      auto par = scf::ParallelOp::create(b, loc, ValueRange{cIdx(b, loc, 0)},
                                         ValueRange{cIdx(b, loc, 1)},
                                         ValueRange{cIdx(b, loc, 1)});
      for (Operation *op : group)
        op->moveBefore(par.getBody()->getTerminator());
    }
    return success();
  }

  LogicalResult mapParallelLoops(func::FuncOp func, bool onlyGrids) {
    SmallVector<scf::ParallelOp> outer;
    func.walk([&](scf::ParallelOp p) {
      if (isOutermostParallel(p))
        outer.push_back(p);
    });
    for (scf::ParallelOp p : outer) {
      // A grid, possibly with canonicalized-away dimensions (KernelForm.h).
      std::optional<int64_t> threads;
      if (auto attr = p->getAttrOfType<IntegerAttr>(kKernelThreadsAttr))
        threads = attr.getInt();
      if (!p->hasAttr(kThreadPhaseAttr))
        p.getBody()->walk([&](scf::ParallelOp phase) {
          if (auto attr = phase->getAttrOfType<IntegerAttr>(kThreadPhaseAttr))
            threads = attr.getInt();
        });
      if (onlyGrids && !threads)
        continue;
      LogicalResult mapped = threads ? mapGrid(p, *threads) : mapFlat(p);
      if (failed(mapped))
        return failure();
    }
    return success();
  }

  /// Values defined outside `launch` that its body needs on the device:
  /// globals are re-fetched inside (a host address means nothing there).
  static void sinkGlobals(gpu::LaunchOp launch) {
    SmallVector<OpOperand *> uses;
    launch.getBody().walk([&](Operation *op) {
      for (OpOperand &use : op->getOpOperands())
        if (auto get = use.get().getDefiningOp<memref::GetGlobalOp>())
          if (!launch->isAncestor(get))
            uses.push_back(&use);
    });
    OpBuilder b(launch.getContext());
    b.setInsertionPointToStart(&launch.getBody().front());
    DenseMap<Operation *, Value> clones;
    for (OpOperand *use : uses) {
      Operation *get = use->get().getDefiningOp();
      Value &clone = clones[get];
      if (!clone)
        clone = b.clone(*get)->getResult(0);
      use->set(clone);
    }
  }

  /// A grid of the kernel form.
  LogicalResult mapGrid(scf::ParallelOp grid, int64_t threads) {
    Location loc = grid.getLoc();
    if (grid.getNumLoops() > 3 || grid.getNumResults() != 0)
      return grid.emitOpError("is not a kernel-form grid (at most 3 "
                              "dimensions, no reductions)");
    for (auto [lb, step] : llvm::zip(grid.getLowerBound(), grid.getStep()))
      if (getConstantIntValue(lb) != 0 || getConstantIntValue(step) != 1)
        return grid.emitOpError("is not a kernel-form grid (bounds from 0, "
                                "step 1)");

    // Shared buffers: the grid body's allocas, in workgroup memory.
    SmallVector<memref::AllocaOp> shared;
    SmallVector<Type> sharedTypes;
    auto workgroup = gpu::AddressSpaceAttr::get(
        grid.getContext(), gpu::GPUDialect::getWorkgroupAddressSpace());
    for (Operation &op : grid.getBody()->without_terminator())
      if (auto alloca = dyn_cast<memref::AllocaOp>(op)) {
        MemRefType t = alloca.getType();
        if (!t.hasStaticShape())
          return alloca.emitOpError("of a kernel-form grid must be static");
        shared.push_back(alloca);
        sharedTypes.push_back(MemRefType::get(t.getShape(),
                                              t.getElementType(),
                                              t.getLayout(), workgroup));
      }

    OpBuilder b(grid);
    SmallVector<Value> extents(grid.getUpperBound());
    while (extents.size() < 3)
      extents.push_back(cIdx(b, loc, 1));
    Value one = cIdx(b, loc, 1);
    auto launch = gpu::LaunchOp::create(
        b, loc, extents[0], extents[1], extents[2], cIdx(b, loc, threads), one,
        one, /*dynamicSharedMemorySize=*/nullptr, /*asyncTokenType=*/nullptr,
        /*asyncDependencies=*/ValueRange{}, sharedTypes);
    Block &body = launch.getBody().front();
    b.setInsertionPointToStart(&body);
    IRMapping map;
    gpu::KernelDim3 blockIds = launch.getBlockIds();
    Value ids[3] = {blockIds.x, blockIds.y, blockIds.z};
    SmallVector<Value> gridIvs(grid.getInductionVars());
    for (auto [i, iv] : llvm::enumerate(gridIvs))
      map.map(iv, ids[i]);
    for (auto [alloca, arg] :
         llvm::zip(shared, launch.getWorkgroupAttributions()))
      map.map(alloca.getResult(), arg);
    for (Operation &op : grid.getBody()->without_terminator())
      if (!isa<memref::AllocaOp>(op) ||
          !llvm::is_contained(shared, cast<memref::AllocaOp>(op)))
        b.clone(op, map);
    gpu::TerminatorOp::create(b, loc);
    grid.erase();

    // Phases: each thread takes iterations tid, tid + T, ...; then all
    // threads meet.
    Value tid = launch.getThreadIds().x;
    SmallVector<scf::ParallelOp> phases;
    WalkResult bad = launch.getBody().walk([&](scf::ParallelOp p) {
      if (!p->hasAttr(kThreadPhaseAttr) || p.getNumLoops() != 1 ||
          p.getNumResults() != 0) {
        p.emitOpError("in a kernel-form grid must be a 1-D thread phase");
        return WalkResult::interrupt();
      }
      phases.push_back(p);
      return WalkResult::advance();
    });
    if (bad.wasInterrupted())
      return failure();
    for (scf::ParallelOp phase : phases) {
      if (phase->getParentOfType<scf::ParallelOp>())
        return phase.emitOpError("nested in another phase");
      OpBuilder pb(phase);
      Location ploc = phase.getLoc();
      Value start = arith::AddIOp::create(
          pb, ploc, phase.getLowerBound()[0],
          arith::MulIOp::create(pb, ploc, tid, phase.getStep()[0]));
      Value stride = arith::MulIOp::create(pb, ploc, phase.getStep()[0],
                                           cIdx(pb, ploc, threads));
      auto loop = scf::ForOp::create(pb, ploc, start,
                                     phase.getUpperBound()[0], stride);
      IRMapping pmap;
      pmap.map(phase.getBody()->getArgument(0), loop.getInductionVar());
      OpBuilder lb = OpBuilder::atBlockBegin(loop.getBody());
      lb.setInsertionPoint(loop.getBody()->getTerminator());
      for (Operation &op : phase.getBody()->without_terminator())
        lb.clone(op, pmap);
      gpu::BarrierOp::create(pb, ploc);
      phase.erase();
    }
    sinkGlobals(launch);
    return success();
  }

  /// Any other parallel loop: one iteration per thread.
  LogicalResult mapFlat(scf::ParallelOp par) {
    if (par.getNumResults() != 0)
      return par.emitOpError("with reductions cannot be mapped to GPU threads");
    Location loc = par.getLoc();
    OpBuilder b(par);
    // Trip counts, and their product.
    SmallVector<Value> counts;
    Value total;
    for (auto [lb, ub, step] : llvm::zip(par.getLowerBound(),
                                         par.getUpperBound(), par.getStep())) {
      Value count = arith::CeilDivUIOp::create(
          b, loc, arith::SubIOp::create(b, loc, ub, lb), step);
      counts.push_back(count);
      total = total ? arith::MulIOp::create(b, loc, total, count).getResult()
                    : count;
    }
    Value threadsV = cIdx(b, loc, threads);
    Value blocks = arith::CeilDivUIOp::create(b, loc, total, threadsV);
    Value one = cIdx(b, loc, 1);
    auto launch = gpu::LaunchOp::create(b, loc, blocks, one, one, threadsV,
                                        one, one);
    Block &body = launch.getBody().front();
    b.setInsertionPointToStart(&body);
    Value linear = arith::AddIOp::create(
        b, loc, arith::MulIOp::create(b, loc, launch.getBlockIds().x, threadsV),
        launch.getThreadIds().x);
    Value inRange =
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, linear, total);
    auto ifOp = scf::IfOp::create(b, loc, inRange, /*withElseRegion=*/false);
    gpu::TerminatorOp::create(b, loc);
    b.setInsertionPointToStart(&ifOp.getThenRegion().front());
    // Delinearize, the last dimension fastest.
    IRMapping map;
    Value rest = linear;
    for (int64_t d = par.getNumLoops() - 1; d >= 0; --d) {
      Value i = d == 0 ? rest
                       : arith::RemUIOp::create(b, loc, rest, counts[d])
                             .getResult();
      if (d != 0)
        rest = arith::DivUIOp::create(b, loc, rest, counts[d]);
      Value iv = arith::AddIOp::create(
          b, loc, par.getLowerBound()[d],
          arith::MulIOp::create(b, loc, i, par.getStep()[d]));
      map.map(par.getBody()->getArgument(d), iv);
    }
    for (Operation &op : par.getBody()->without_terminator())
      b.clone(op, map);
    par.erase();
    if (failed(sequentializeNested(launch.getBody())))
      return failure();
    sinkGlobals(launch);
    return success();
  }

  /// Host buffers become device buffers.
  LogicalResult moveBuffersToDevice(func::FuncOp func) {
    SmallVector<Operation *> ops;
    func.walk([&](Operation *op) {
      if (!op->getParentOfType<gpu::LaunchOp>() &&
          !op->hasAttr(kHostSlotAttr) &&
          isa<memref::AllocOp, memref::AllocaOp, memref::DeallocOp,
              memref::CopyOp>(op))
        ops.push_back(op);
    });
    for (Operation *op : ops) {
      OpBuilder b(op);
      Location loc = op->getLoc();
      if (auto alloc = dyn_cast<memref::AllocOp>(op)) {
        auto dev = gpu::AllocOp::create(
            b, loc, alloc.getType(), /*asyncToken=*/Type(),
            /*asyncDependencies=*/ValueRange{}, alloc.getDynamicSizes(),
            alloc.getSymbolOperands(), /*hostShared=*/false);
        alloc.replaceAllUsesWith(dev.getMemref());
        alloc.erase();
      } else if (auto alloca = dyn_cast<memref::AllocaOp>(op)) {
        // Host stack buffers live until the function returns.
        if (alloca->getParentOp() != func.getOperation())
          return alloca.emitOpError(
              "in a host loop cannot become a device buffer");
        auto dev = gpu::AllocOp::create(
            b, loc, alloca.getType(), Type(), ValueRange{},
            alloca.getDynamicSizes(), alloca.getSymbolOperands(), false);
        alloca.replaceAllUsesWith(dev.getMemref());
        alloca.erase();
        for (Block &block : func.getBody())
          if (auto ret = dyn_cast<func::ReturnOp>(block.getTerminator())) {
            OpBuilder rb(ret);
            gpu::DeallocOp::create(rb, loc, Type(), ValueRange{},
                                   dev.getMemref());
          }
      } else if (auto dealloc = dyn_cast<memref::DeallocOp>(op)) {
        gpu::DeallocOp::create(b, loc, Type(), ValueRange{},
                               dealloc.getMemref());
        dealloc.erase();
      } else if (auto copy = dyn_cast<memref::CopyOp>(op)) {
        gpu::MemcpyOp::create(b, loc, Type(), ValueRange{}, copy.getTarget(),
                              copy.getSource());
        copy.erase();
      }
    }
    return success();
  }
};

//===----------------------------------------------------------------------===//
// qcc-merge-gpu-modules
//===----------------------------------------------------------------------===//

struct MergeGpuModulesPass
    : public mlir::qcc::impl::QccMergeGpuModulesBase<MergeGpuModulesPass> {
  using QccMergeGpuModulesBase::QccMergeGpuModulesBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<gpu::GPUModuleOp> gpuModules(module.getOps<gpu::GPUModuleOp>());
    if (gpuModules.empty())
      return;
    OpBuilder b(gpuModules.front());
    auto merged = gpu::GPUModuleOp::create(b, gpuModules.front().getLoc(),
                                           moduleName);
    SymbolTable mergedSymbols(merged);
    // Old (module, kernel) -> new kernel name.
    DenseMap<std::pair<StringAttr, StringAttr>, StringAttr> renamed;
    for (gpu::GPUModuleOp from : gpuModules) {
      for (Operation &op : llvm::make_early_inc_range(
               from.getBodyRegion().front().without_terminator())) {
        auto name = op.getAttrOfType<StringAttr>(
            SymbolTable::getSymbolAttrName());
        bool isKernel = isa<gpu::GPUFuncOp>(op) &&
                        cast<gpu::GPUFuncOp>(op).isKernel();
        if (name && !isKernel && mergedSymbols.lookup(name)) {
          // A global or function every module copied from the host module.
          continue;
        }
        Operation *moved = op.clone();
        StringAttr newName = mergedSymbols.insert(moved); // renames on clash
        if (isKernel)
          renamed[{from.getSymNameAttr(), name}] = newName;
      }
    }
    WalkResult r = module.walk([&](gpu::LaunchFuncOp launch) {
      auto it = renamed.find({launch.getKernelModuleName(),
                              launch.getKernelName()});
      if (it == renamed.end()) {
        launch.emitOpError("launches a kernel outside the GPU modules");
        return WalkResult::interrupt();
      }
      launch.setKernelAttr(SymbolRefAttr::get(
          merged.getSymNameAttr(), {FlatSymbolRefAttr::get(it->second)}));
      return WalkResult::advance();
    });
    if (r.wasInterrupted())
      return signalPassFailure();
    for (gpu::GPUModuleOp from : gpuModules)
      from.erase();
  }
};

} // namespace
