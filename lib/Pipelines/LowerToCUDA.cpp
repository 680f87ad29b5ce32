//===- LowerToCUDA.cpp - The qcc-lower-to-cuda pipeline -------------------===//
//
// The CUDA counterpart of qcc-lower-to-cpu. The qcc ops are written in the
// kernel form (the same IR qcc-lower-to-cpu{kernel-form} runs on the CPU),
// bufferized like the CPU path, mapped to gpu.launch by qcc-kernels-to-gpu,
// and then taken through upstream's GPU passes: outlining into a gpu.module,
// NVVM, PTX (gpu-module-to-binary), and the host side to LLVM calls of the
// mgpu* launch ABI that runtime/lib/cuda implements over the CUDA driver.
//
//===----------------------------------------------------------------------===//

#include "qcc/Pipelines/Pipelines.h"

#include "qcc/Conversion/Passes.h"
#include "qcc/Dialect/Qcc/Transforms/Passes.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Bufferization/Pipelines/Passes.h"
#include "mlir/Dialect/Bufferization/Transforms/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Dialect/LLVMIR/Transforms/OptimizeForNVVM.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Transforms/Passes.h"

#include "llvm/Support/FileSystem.h"

#include <cstdlib>

using namespace mlir;

void mlir::qcc::buildQccCUDALoweringPipeline(
    OpPassManager &pm, const LowerToCUDAOptions &options) {
  if (options.outlineKernels)
    pm.addPass(createOutlineKernels());
  LowerQccToLoopsOptions loops;
  loops.kernelForm = true;
  pm.addPass(createLowerQccToLoops(loops));

  // Buffers as on the CPU, but no stack buffers on the host: every buffer
  // becomes device memory.
  addStepBufferization(pm, options.outlineKernels,
                       /*hoistStaticAllocs=*/false);
  // Upstream's deallocation pipeline, with the kernel-form grids mapped to
  // launches before its first canonicalization: a grid of one block would
  // otherwise be folded into its body, and its phases would become
  // separate kernels without shared memory. (No memref.realloc is ever
  // created here, so its expansion is left out.)
  pm.addPass(bufferization::createOwnershipBasedBufferDeallocationPass());
  QccKernelsToGPUOptions grids;
  grids.gridsOnly = true;
  pm.addPass(createQccKernelsToGPU(grids));
  pm.addPass(createCanonicalizerPass());
  pm.addPass(bufferization::createBufferDeallocationSimplificationPass());
  pm.addPass(bufferization::createLowerDeallocationsPass());
  pm.addPass(createCSEPass());
  pm.addPass(createCanonicalizerPass());
  pm.addNestedPass<func::FuncOp>(createConvertLinalgToParallelLoopsPass());
  pm.addPass(createCanonicalizerPass());

  // Threads.
  pm.addPass(createQccKernelsToGPU());
  pm.addPass(createGpuLaunchSinkIndexComputationsPass());
  pm.addPass(createGpuKernelOutliningPass());
  pm.addPass(createQccMergeGpuModules());
  // Host-side gpu ops on a stream (tokens), as gpu-to-llvm lowers them.
  pm.addNestedPass<func::FuncOp>(createGpuAsyncRegionPass());

  // Device and host to LLVM, as upstream's gpu-lower-to-nvvm-pipeline does,
  // with the host functions on the bare-pointer convention of step ABI.
  pm.addPass(createConvertVectorToSCFPass());
  pm.addPass(createSCFToControlFlowPass());
  ConvertFuncToLLVMPassOptions func;
  func.useBarePtrCallConv = true;
  pm.addPass(createConvertFuncToLLVMPass(func));
  pm.addPass(memref::createExpandStridedMetadataPass());
  GpuNVVMAttachTargetOptions target;
  target.chip = options.chip;
  target.features = options.features;
  target.optLevel = 3;
  if (!options.deviceEncoders.empty())
    target.linkLibs.push_back(options.deviceEncoders);
  pm.addPass(createGpuNVVMAttachTarget(target));
  pm.addPass(createLowerAffinePass());
  pm.addPass(createArithToLLVMConversionPass());
  pm.addPass(createConvertIndexToLLVMPass());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());

  // Kernels take bare pointers, like the host functions: the host passes
  // memref operands of launches as bare pointers under that convention, so
  // both sides must agree (every kernel operand is statically shaped).
  ConvertGpuOpsToNVVMOpsOptions kernels;
  kernels.useBarePtrCallConv = true;
  pm.addNestedPass<gpu::GPUModuleOp>(createConvertGpuOpsToNVVMOps(kernels));
  pm.addNestedPass<gpu::GPUModuleOp>(LLVM::createNVVMOptimizeForTargetPass());
  pm.addNestedPass<gpu::GPUModuleOp>(createCanonicalizerPass());
  pm.addNestedPass<gpu::GPUModuleOp>(createCSEPass());
  pm.addNestedPass<gpu::GPUModuleOp>(createReconcileUnrealizedCastsPass());
  if (!options.toBinary)
    return;

  GpuToLLVMConversionPassOptions host;
  host.hostBarePtrCallConv = true;
  host.kernelBarePtrCallConv = true;
  pm.addPass(createGpuToLLVMConversionPass(host));
  GpuModuleToBinaryPassOptions binary;
  binary.compilationTarget = options.format;
  // libdevice (math functions as __nv_* calls) comes with the toolkit.
  std::string toolkit = options.toolkit;
  if (toolkit.empty()) {
    if (const char *home = std::getenv("CUDA_HOME"))
      toolkit = home;
    else if (llvm::sys::fs::exists("/usr/local/cuda/nvvm/libdevice"))
      toolkit = "/usr/local/cuda";
  }
  binary.toolkitPath = toolkit;
  pm.addPass(createGpuModuleToBinaryPass(binary));
  pm.addPass(createConvertMathToLLVMPass());
  pm.addPass(createFinalizeMemRefToLLVMConversionPass());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  pm.addPass(createReconcileUnrealizedCastsPass());
}

void mlir::qcc::buildLowerToCUDAPipeline(OpPassManager &pm,
                                         const LowerToCUDAOptions &options) {
  // Weight updates stay unfused: qcc.weight_update has no kernel form (its
  // gradient contraction, update rule and carry update become separate
  // kernels instead).
  LowerToCPUOptions tensor;
  tensor.fuseWeightUpdate = false;
  buildQccTensorPipeline(pm, tensor);
  buildQccCUDALoweringPipeline(pm, options);
}
