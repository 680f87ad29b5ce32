//===- Passes.td - qcc conversion passes -------------------*- tablegen -*-===//

#ifndef QCC_CONVERSION_PASSES_TD
#define QCC_CONVERSION_PASSES_TD

include "mlir/Pass/PassBase.td"

def LowerQccToLoops : Pass<"qcc-lower-to-loops", "::mlir::ModuleOp"> {
  let summary = "Lower qcc ops to scf loops over GGUF block bytes";
  let description = [{
    Turns every `!qcc.qtensor` into the memref of its block bytes (the shape
    with the innermost dimension in bytes: `!qcc.qtensor<256x512xq4_K>` ->
    `memref<256x288xi8>`), in function signatures, calls and returns, and
    lowers the qcc ops to loops that decode blocks with the per-format
    emitters of `BlockDecode.h`:

    - `qcc.dequant`: an `scf.parallel` over blocks, each decoded into the
      result buffer (through a block-sized scratch for bf16/f16 results);
    - `qcc.qmatmul`: an `scf.parallel` over tiles of output columns; each
      iteration decodes a tile of W (128 x 512 forward, 32 x 512 backward)
      into a `memref.alloca`, through a tile-decoder function shared by all
      qmatmuls of the same format and weight size, and accumulates its
      product with the activations with the runtime micro-GEMM
      `qcc_rt_gemm_f32`. With a static count of at most 8 activation rows
      (forward) or 4 (backward) per weight matrix, the few-rows path
      instead decodes each block into 16-lane `vector` values in registers
      (byte vector loads, masks, shifts, `sitofp`, scale multiplies) and
      multiplies them straight into `vector.fma` accumulators: forward, an
      `scf.parallel` over chunks of W rows, each row reduced once
      (`vector.reduction` with `reassoc`); backward, an `scf.parallel` over
      strips of output columns accumulated on the stack. The linear
      formats (q4_0, q4_1, q5_0, q5_1, q8_0, q2_K..q6_K, tq2_0) apply their
      scales and offsets per group of 16, 32 or 256 elements (offsets
      against sums of x per group); f32/f16/bf16 are loaded as vectors; the
      codebook formats decode blocks with the scalar emitter into a small
      stack buffer read back as vectors. W is prefetched ahead
      (`memref.prefetch`). These loops live in a function per format and
      shape, shared like the tile decoders. The f32 weight matrix is never
      materialized;
    - `qcc.qmatmul` with `int8-activations`: a forward few-rows qmatmul
      on q4_0, q8_0, q4_K or q6_K weights (K a multiple of the block) first quantizes
      each activation row to int8 codes (per 32 elements for q4_0/q8_0,
      per 256 for the K-quants: `d = max|x| / 127`, codes
      `roundeven(x / d)`) with the f32 scale per block and `d · Σ codes`
      per scale group of the weight, into heap buffers, once per call;
      the row loop then multiplies the weight's integer codes with those
      int8 codes 64 at a time (unsigned x signed bytes summed in fours into
      i32 lanes, as `vpdpbusd` does, emitted as chosen by `int8-dot`; the
      avx2 / avx512vnni forms are calls of `__qcc_i8dot_*` functions whose
      `llvm.call_intrinsic` bodies the `qcc-lower-to-cpu` pipeline adds
      after buffer deallocation),
      converts the lane sums to f32 and applies the weight scale times the
      activation scale per group, and the offsets (q4_0's 8, q6_K's 32,
      q4_K's mins) against the activation code sums. The other formats,
      backward qmatmuls and larger row counts are lowered as without the
      option;
    - `qcc.hadamard`: an `scf.parallel` over blocks, each a fast
      Walsh-Hadamard transform with the signs as a constant table;
    - `qcc.requant`: a call to the runtime encoder `qcc_rt_encode_rows`
      (runtime/include/qcc/Runtime/StepRuntime.h), linked into every step
      library, on the f32 rows (widened first from bf16/f16);
    - `qcc.carry_update`: a call to `qcc_rt_carry_update`, the runtime's
      implementation of the op's semantics (it re-encodes blocks, which
      takes the encoders), on fresh output buffers;
    - `qcc.ste_grad lsq`: the direction is the gradient; the block-scale
      gradient is a call to `qcc_rt_lsq_scale_grad`. (The other estimators
      are elementwise and lowered by `qcc-lower-ste`, which runs first.)

    2-D f32 linalg contractions on static tensors (weight gradients
    `dŴ = gᵀ·x`, any operand orientation) become calls of the same micro-GEMM
    that `qcc.qmatmul` uses; every other linalg op is left for one-shot
    bufferization.

    With `kernel-form`, the ops are written in the device-neutral kernel
    form instead (qcc/Conversion/KernelForm.h, used by the CUDA target and
    runnable on the CPU): grids of 256-thread blocks whose phases decode
    blocks of W into a block-shared buffer (one block per thread) and
    multiply from it (`qcc.qmatmul`), decode a block per thread
    (`qcc.dequant`), re-encode a block or JL chunk per thread through
    `qcc_rt_encode_block`, the runtime's encoder that also builds for the
    device (`qcc.carry_update`), or read and write block scale fields
    (`ste_grad lsq`, `qcc.scale_update`); linalg ops are all left for
    bufferization (no micro-GEMM calls); `qcc.requant` and the fused
    `qcc.weight_update` are rejected with an error.

    Float tensors entering or leaving an op are bridged with
    `bufferization.to_buffer` / `to_tensor`, so the rest of the function is
    left to one-shot bufferization.

    Before:
    ```mlir
    func.func @f(%w: !qcc.qtensor<4x32xq8_0>) -> tensor<4x32xf32> {
      %0 = qcc.dequant %w : !qcc.qtensor<4x32xq8_0> -> tensor<4x32xf32>
      return %0 : tensor<4x32xf32>
    }
    ```
    After (abridged):
    ```mlir
    func.func @f(%w: memref<4x34xi8>) -> tensor<4x32xf32> {
      %flat = memref.collapse_shape %w [[0, 1]] : memref<4x34xi8> into memref<136xi8>
      %out = memref.alloc() : memref<4x32xf32>
      scf.parallel (%blk) = (%c0) to (%c4) step (%c1) {
        ... arith on memref.load %flat[...] ... memref.store ...
      }
      %t = bufferization.to_tensor %out restrict writable : memref<4x32xf32> to tensor<4x32xf32>
      return %t : tensor<4x32xf32>
    }
    ```
  }];
  let options = [
    Option<"kernelForm", "kernel-form", "bool", /*default=*/"false",
           "Lower dequant and qmatmul to the GPU-shaped kernel form">,
    Option<"int8Activations", "int8-activations", "bool", /*default=*/"false",
           "Forward few-rows qmatmuls (GEMV) on q4_0, q8_0, q4_K and q6_K "
           "quantize each activation row to int8 blocks once per call and "
           "take integer dot products against the weight codes (ggml's "
           "method; not exact: the activations are rounded to 8 bits per "
           "block). Default false: the exact f32 decode-and-FMA path">,
    Option<"int8Dot", "int8-dot", "std::string", /*default=*/"\"generic\"",
           "How the int8 dot products are emitted: generic (portable "
           "vector-dialect extui/extsi/muli and lane sums), avx2 "
           "(llvm.x86.avx2.pmadd.ub.sw + pmadd.wd), avx512vnni "
           "(llvm.x86.avx512.vpdpbusd.512). The target must have the named "
           "instructions; all three give bit-identical results">,
    Option<"bf16Gemm", "gemm-bf16", "bool", /*default=*/"false",
           "Every micro-GEMM call (qmatmul tiles, f32 contractions, weight "
           "gradients) goes to qcc_rt_gemm_bf16, which rounds both operands "
           "to bf16 and sums the exact products in f32 (torch's bf16 "
           "autocast trade; AVX512-BF16's vdpbf16ps where the CPU has it). "
           "Not exact: 8 bits of mantissa per operand. Default false: "
           "qcc_rt_gemm_f32">,
    Option<"threads", "threads", "unsigned", /*default=*/"0",
           "The threads the step will run on (qcc --threads): a qmatmul's "
           "parallel loop over output columns is cut into a multiple of "
           "that many iterations of nearly equal width, so no thread waits "
           "on a wider last one. 0 (unknown): a multiple of 4; 1: the "
           "widest tiles">,
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::bufferization::BufferizationDialect",
                           "::mlir::func::FuncDialect",
                           "::mlir::linalg::LinalgDialect",
                           "::mlir::LLVM::LLVMDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::vector::VectorDialect"];
}

def QccKernelsToGPU : Pass<"qcc-kernels-to-gpu", "::mlir::ModuleOp"> {
  let summary = "Map parallel loops on buffers to gpu.launch; buffers to the "
                "device";
  let description = [{
    Runs after bufferization (and after linalg has become parallel loops)
    in the CUDA pipeline. In every function, each outermost `scf.parallel`
    becomes a `gpu.launch`:

    - a grid of the kernel form (`qcc.kernel_threads = T`, see
      qcc/Conversion/KernelForm.h) launches one block of T threads per grid
      iteration; the grid's `memref.alloca`s become workgroup attributions
      (shared memory); each `qcc.thread_phase` loop becomes a loop of each
      thread over iterations `tid, tid + T, ...` followed by `gpu.barrier`;
    - any other parallel loop is linearized, one iteration per thread in
      blocks of `threads`, guarded by `linear < total`; parallel loops
      nested inside run sequentially in their thread.

    `memref.copy` outside kernels becomes a parallel copy loop (then a
    kernel); a host `scf.for`/`scf.if` that reads or writes memory becomes a
    single-thread kernel; `memref.alloc`/`alloca`/`dealloc` outside kernels
    become `gpu.alloc`/`gpu.dealloc`. A top-level load or store of a
    one-element buffer (a scalar the host computes with, such as a step
    counter) goes through a host stack slot (`memref.alloca` marked
    `qcc.host_slot`) and a `gpu.memcpy`; host code that reads a larger
    buffer into a value the host uses is rejected.
    `memref.get_global` used in a kernel is re-fetched inside it, so that
    outlining copies the global into the GPU module.
  }];
  let options = [
    Option<"threads", "threads", "int64_t", /*default=*/"256",
           "Threads per block for parallel loops outside the kernel form">,
    Option<"gridsOnly", "grids-only", "bool", /*default=*/"false",
           "Map only the kernel-form grids and leave everything else (run "
           "before canonicalization, which folds a grid of one block into "
           "its body)">,
  ];
  let dependentDialects = ["::mlir::gpu::GPUDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect"];
}

def QccMergeGpuModules : Pass<"qcc-merge-gpu-modules", "::mlir::ModuleOp"> {
  let summary = "Merge the gpu.modules of outlined kernels into one";
  let description = [{
    `gpu-kernel-outlining` makes one `gpu.module` per launch, each with its
    own copy of the globals and functions its kernel uses. This pass moves
    all kernels into a single module (renaming kernels whose names clash,
    keeping one copy of each shared symbol) and retargets the
    `gpu.launch_func`s, so a step carries one PTX module that the driver
    loads once.
  }];
  let options = [
    Option<"moduleName", "module-name", "std::string", /*default=*/"\"qcc_kernels\"",
           "Name of the merged gpu.module">,
  ];
  let dependentDialects = ["::mlir::gpu::GPUDialect"];
}

#endif // QCC_CONVERSION_PASSES_TD
