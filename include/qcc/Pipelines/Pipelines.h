//===- Pipelines.h - The qcc compilation pipelines --------------*- C++ -*-===//
//
// Each pipeline is defined once here; qcc-opt registers it under its flag and
// the qcc driver runs the same builder.
//
//===----------------------------------------------------------------------===//

#ifndef QCC_PIPELINES_PIPELINES_H
#define QCC_PIPELINES_PIPELINES_H

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassOptions.h"

namespace mlir::qcc {

struct LowerToCPUOptions : public PassPipelineOptions<LowerToCPUOptions> {
  PassOptions::Option<unsigned> threads{
      *this, "threads",
      llvm::cl::desc("Threads for scf.parallel loops (OpenMP); 1 keeps the "
                     "code serial, 0 lets the OpenMP runtime choose"),
      llvm::cl::init(0)};
  PassOptions::Option<bool> fuseWeightUpdate{
      *this, "fuse-weight-update",
      llvm::cl::desc("Fuse weight gradients, update rules and carry updates "
                     "into qcc.weight_update (qcc-fuse-weight-update)"),
      llvm::cl::init(true)};
  PassOptions::Option<bool> outlineKernels{
      *this, "outline-kernels",
      llvm::cl::desc("Move each qcc and linalg op into a private function "
                     "shared by identical ops (qcc-outline-kernels) before "
                     "lowering; false lowers every op in place"),
      llvm::cl::init(true)};
  PassOptions::Option<bool> profile{
      *this, "profile",
      llvm::cl::desc("Time every call of an outlined kernel "
                     "(qcc-profile-kernels; the host reads the counters)"),
      llvm::cl::init(false)};
  PassOptions::Option<bool> kernelForm{
      *this, "kernel-form",
      llvm::cl::desc("Lower dequant and qmatmul through the kernel form that "
                     "the CUDA target maps to GPU threads (to run and test "
                     "the GPU kernels' code on the CPU)"),
      llvm::cl::init(false)};
  PassOptions::Option<bool> int8Activations{
      *this, "int8-activations",
      llvm::cl::desc("Forward few-rows qmatmuls (GEMV) on q4_0, q8_0, q4_K, "
                     "q6_K quantize the activations to int8 blocks and take "
                     "integer dot products (qcc-lower-to-loops "
                     "int8-activations; inexact, off by default)"),
      llvm::cl::init(false)};
  PassOptions::Option<std::string> int8Dot{
      *this, "int8-dot",
      llvm::cl::desc("The int8 dot products' instructions: generic, avx2 or "
                     "avx512vnni (qcc-lower-to-loops int8-dot)"),
      llvm::cl::init("generic")};
  PassOptions::Option<bool> bf16Gemm{
      *this, "gemm-bf16",
      llvm::cl::desc("The micro-GEMM rounds its operands to bf16 "
                     "(qcc-lower-to-loops gemm-bf16; inexact, off by "
                     "default)"),
      llvm::cl::init(false)};
};

struct LowerToCUDAOptions : public PassPipelineOptions<LowerToCUDAOptions> {
  PassOptions::Option<std::string> chip{
      *this, "chip", llvm::cl::desc("GPU architecture (sm_80, sm_90)"),
      llvm::cl::init("sm_80")};
  PassOptions::Option<std::string> features{
      *this, "features",
      llvm::cl::desc("PTX ISA version of the generated PTX (LLVM feature)"),
      llvm::cl::init("+ptx80")};
  PassOptions::Option<std::string> format{
      *this, "format",
      llvm::cl::desc("What gpu-module-to-binary embeds: isa (PTX text, "
                     "JIT-compiled by the driver at load) or bin/fatbin "
                     "(assembled with ptxas at compile time)"),
      llvm::cl::init("isa")};
  PassOptions::Option<std::string> toolkit{
      *this, "toolkit",
      llvm::cl::desc("CUDA toolkit whose libdevice provides the math "
                     "functions kernels call (default: $CUDA_HOME, else "
                     "/usr/local/cuda when present)"),
      llvm::cl::init("")};
  PassOptions::Option<std::string> deviceEncoders{
      *this, "device-encoders",
      llvm::cl::desc("LLVM bitcode of qcc_rt_encode_block for NVPTX "
                     "(qcc_device_encoders.bc, built with the runtime), "
                     "linked into the GPU module; carry_update kernels call "
                     "it"),
      llvm::cl::init("")};
  PassOptions::Option<bool> outlineKernels{
      *this, "outline-kernels",
      llvm::cl::desc("As for qcc-lower-to-cpu"), llvm::cl::init(true)};
  PassOptions::Option<bool> toBinary{
      *this, "to-binary",
      llvm::cl::desc("Serialize the GPU module (gpu-module-to-binary) and "
                     "finish the host code; false stops with the kernels in "
                     "the NVVM/LLVM dialects (for tests)"),
      llvm::cl::init(true)};
};

/// `qcc-lower-to-cuda`: the tensor passes of qcc-lower-to-cpu, qcc ops in
/// the kernel form, bufferization, parallel loops mapped to gpu.launch
/// (qcc-kernels-to-gpu), kernels outlined into a gpu.module lowered to NVVM
/// and serialized to PTX, host code to LLVM with the bare-pointer calling
/// convention (every buffer argument is a device pointer; docs/cuda.md).
void buildLowerToCUDAPipeline(OpPassManager &pm,
                              const LowerToCUDAOptions &options);

/// The part of qcc-lower-to-cuda after the tensor passes.
void buildQccCUDALoweringPipeline(OpPassManager &pm,
                                  const LowerToCUDAOptions &options);

/// `qcc-lower-to-cpu`: qcc + linalg on tensors -> LLVM dialect. Fusion,
/// STE lowering, outlining of ops into shared kernels, qcc ops to loops,
/// one-shot bufferization (results become out-parameters), deallocation,
/// scf.parallel to OpenMP, and conversion of everything to LLVM with the
/// bare-pointer calling convention (statically shaped memref arguments are
/// plain pointers, see docs/runtime.md).
void buildLowerToCPUPipeline(OpPassManager &pm,
                             const LowerToCPUOptions &options);

/// The first part of qcc-lower-to-cpu, on tensors: fusion (dequant into
/// matmuls, weight updates), estimators lowered, updates guarded by the
/// loss. What a step computes and which results can reuse their arguments'
/// buffers is decided here (the driver reads it off before lowering).
void buildQccTensorPipeline(OpPassManager &pm,
                            const LowerToCPUOptions &options);

/// The rest: qcc ops to loops, bufferization, LLVM.
void buildQccLoweringPipeline(OpPassManager &pm,
                              const LowerToCPUOptions &options);

/// One-shot bufferization of a step, shared by both pipelines: function
/// boundaries with identity layouts, results as out-parameters (the
/// outlined kernels' first). `hoistStaticAllocs` moves static result
/// buffers to the stack (CPU only: on CUDA every buffer is device memory).
void addStepBufferization(OpPassManager &pm, bool outlineKernels,
                          bool hoistStaticAllocs);

/// Registers the pipelines with the global pass registry (for qcc-opt).
void registerQccPipelines();

} // namespace mlir::qcc

#endif // QCC_PIPELINES_PIPELINES_H
