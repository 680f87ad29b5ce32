//===- LowerToCPU.cpp - The qcc-lower-to-cpu pipeline ---------------------===//

#include "qcc/Pipelines/Pipelines.h"

#include "qcc/Conversion/Passes.h"
#include "qcc/Conversion/QccToLoops/QccToLoops.h"
#include "qcc/Dialect/Qcc/Transforms/Passes.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Bufferization/Pipelines/Passes.h"
#include "mlir/Dialect/Bufferization/Transforms/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;

namespace {

/// Serial pipelines (threads=1) lower scf.parallel to plain loops, which
/// keep no stack discipline: an alloca in the body (qmatmul's 256 KiB
/// tiles) would take new stack every iteration, and a memref.alloca_scope
/// cannot help (its lowering needs a parent region with several blocks,
/// scf loops have one). Since the iterations then run one after the other,
/// a static alloca of the body can be made once before the loop instead.
struct HoistSerialParallelAllocasPass
    : public PassWrapper<HoistSerialParallelAllocasPass,
                         OperationPass<func::FuncOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(HoistSerialParallelAllocasPass)
  StringRef getArgument() const final {
    return "qcc-hoist-serial-parallel-allocas";
  }
  void runOnOperation() override {
    // Post-order: allocas hoisted out of an inner loop move on out of the
    // outer ones.
    getOperation().walk([](scf::ParallelOp par) {
      for (Operation &op :
           llvm::make_early_inc_range(par.getBody()->without_terminator())) {
        auto alloca = dyn_cast<memref::AllocaOp>(op);
        if (alloca && alloca->getNumOperands() == 0)
          alloca->moveBefore(par);
      }
    });
  }
};

/// Defines the int8 GEMV's target dot-product functions (see
/// defineInt8DotFunctions) once buffers are deallocated.
struct DefineInt8DotsPass
    : public PassWrapper<DefineInt8DotsPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(DefineInt8DotsPass)
  StringRef getArgument() const final { return "qcc-define-int8-dots"; }
  void runOnOperation() override {
    mlir::qcc::defineInt8DotFunctions(getOperation());
  }
};

} // namespace

void mlir::qcc::addStepBufferization(OpPassManager &pm, bool outlineKernels,
                                      bool hoistStaticAllocs) {
  // Tensors to buffers. Entry points return through out-parameters so the
  // caller owns every buffer it sees.
  bufferization::OneShotBufferizePassOptions bufferize;
  bufferize.bufferizeFunctionBoundaries = true;
  bufferize.functionBoundaryTypeConversion =
      bufferization::LayoutMapOption::IdentityLayoutMap;
  pm.addPass(bufferization::createOneShotBufferizePass(bufferize));
  // Kernels first, so that their callers return the kernels' buffers
  // without a copy.
  if (outlineKernels)
    pm.addPass(createKernelResultsToOutParams());
  bufferization::BufferResultsToOutParamsPassOptions outParams;
  outParams.hoistStaticAllocs = hoistStaticAllocs;
  outParams.modifyPublicFunctions = true;
  pm.addPass(bufferization::createBufferResultsToOutParamsPass(outParams));
}

void mlir::qcc::buildQccTensorPipeline(OpPassManager &pm,
                                       const LowerToCPUOptions &options) {
  // qcc level: keep weights quantized through matmuls, lower the estimators.
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createFuseDequantIntoMatmul());
  pm.addPass(createLowerSte());
  pm.addPass(createCanonicalizerPass());
  if (options.fuseWeightUpdate) {
    pm.addPass(createFuseWeightUpdate());
    pm.addNestedPass<func::FuncOp>(createGuardUpdates());
    pm.addPass(createCanonicalizerPass());
  }
}

void mlir::qcc::buildQccLoweringPipeline(OpPassManager &pm,
                                         const LowerToCPUOptions &options) {
  // One function per distinct op before anything is lowered, so that the
  // layers of a stack share their lowered code (compile time).
  if (options.outlineKernels)
    pm.addPass(createOutlineKernels());
  if (options.outlineKernels && options.profile)
    pm.addPass(createProfileKernels());
  LowerQccToLoopsOptions loops;
  loops.kernelForm = options.kernelForm;
  loops.int8Activations = options.int8Activations;
  loops.int8Dot = options.int8Dot;
  loops.bf16Gemm = options.bf16Gemm;
  loops.threads = options.threads;
  pm.addPass(createLowerQccToLoops(loops));

  addStepBufferization(pm, options.outlineKernels,
                       /*hoistStaticAllocs=*/true);
  bufferization::buildBufferDeallocationPipeline(pm);
  // Free each intermediate after its last use, not when the step returns.
  pm.addNestedPass<func::FuncOp>(createFreeBuffersEarly());
  pm.addPass(std::make_unique<DefineInt8DotsPass>());

  // Loops, threads, LLVM.
  // With threads, linalg ops become parallel loops over their parallel
  // dimensions (attention, softmax, GELU and the norms would otherwise run
  // on one core while the others wait), and only the outermost parallel
  // loop of each nest forks threads.
  if (options.threads != 1) {
    pm.addNestedPass<func::FuncOp>(createConvertLinalgToParallelLoopsPass());
    pm.addPass(createSerializeNestedParallelLoops());
  } else {
    pm.addNestedPass<func::FuncOp>(createConvertLinalgToLoopsPass());
  }
  pm.addPass(createCanonicalizerPass());
  if (options.threads != 1) {
    ConvertSCFToOpenMPPassOptions omp;
    omp.numThreads = options.threads;
    pm.addPass(createConvertSCFToOpenMPPass(omp));
  } else {
    pm.addNestedPass<func::FuncOp>(
        std::make_unique<HoistSerialParallelAllocasPass>());
  }
  // memref before scf: the OpenMP conversion wraps loop bodies in
  // memref.alloca_scope, which must be lowered while it still has one block.
  pm.addPass(memref::createExpandStridedMetadataPass());
  pm.addPass(createLowerAffinePass());
  // The few-rows qmatmul's vector decoders (QMatmulSmallN.cpp); their
  // reductions carry their own fast-math flags.
  pm.addPass(createConvertVectorToLLVMPass());
  // Buffers come from the step runtime's _mlir_memref_to_llvm_alloc, which
  // checks every allocation (StepRuntime.h) instead of handing generated
  // code a null pointer.
  FinalizeMemRefToLLVMConversionPassOptions memrefOptions;
  memrefOptions.useGenericFunctions = true;
  pm.addPass(createFinalizeMemRefToLLVMConversionPass(memrefOptions));
  pm.addPass(createSCFToControlFlowPass());
  pm.addPass(createConvertMathToLLVMPass());
  pm.addPass(createConvertMathToLibmPass());
  pm.addPass(createArithToLLVMConversionPass());
  // Functions before OpenMP: the OpenMP conversion would otherwise convert
  // signatures itself, without the bare-pointer convention.
  ConvertFuncToLLVMPassOptions func;
  func.useBarePtrCallConv = true;
  pm.addPass(createConvertFuncToLLVMPass(func));
  pm.addPass(createConvertOpenMPToLLVMPass());
  pm.addPass(createConvertControlFlowToLLVMPass());
  pm.addPass(createReconcileUnrealizedCastsPass());
  pm.addPass(createCanonicalizerPass());
}

void mlir::qcc::buildLowerToCPUPipeline(OpPassManager &pm,
                                        const LowerToCPUOptions &options) {
  buildQccTensorPipeline(pm, options);
  buildQccLoweringPipeline(pm, options);
}

void mlir::qcc::registerQccPipelines() {
  PassPipelineRegistration<LowerToCPUOptions>(
      "qcc-lower-to-cpu",
      "Lower qcc and linalg on tensors to the LLVM dialect for the host CPU",
      buildLowerToCPUPipeline);
  PassPipelineRegistration<LowerToCUDAOptions>(
      "qcc-lower-to-cuda",
      "Lower qcc and linalg on tensors to host LLVM code launching PTX "
      "kernels (NVVM)",
      buildLowerToCUDAPipeline);
}
