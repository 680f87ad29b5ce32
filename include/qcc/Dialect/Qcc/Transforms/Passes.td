//===- Passes.td - qcc dialect passes ----------------------*- tablegen -*-===//

#ifndef QCC_DIALECT_QCC_TRANSFORMS_PASSES_TD
#define QCC_DIALECT_QCC_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def FuseDequantIntoMatmul : Pass<"qcc-fuse-dequant-into-matmul"> {
  let summary = "Fold qcc.dequant into the matmuls that consume it";
  let description = [{
    Rewrites a contraction whose right operand is a `qcc.dequant` into a
    `qcc.qmatmul`, which decodes the weight tile by tile instead of
    materializing the whole float matrix. Any linalg contraction qualifies —
    `linalg.matmul` and `linalg.batch_matmul` with default or transposed
    `indexing_maps`, and an equivalent `linalg.generic` — as long as its
    maps are one of

    - `lhs[b…, m, k] · Ŵ[b…?, n, k] -> out[b…, m, n]`: `qcc.qmatmul fwd`;
    - `lhs[b…, m, k] · Ŵ[b…?, k, n] -> out[b…, m, n]`: `qcc.qmatmul bwd`.

    A zero-filled init is dropped; any other init is added back with
    `linalg.add`. A dequant is left alone when any of its users is not such
    a contraction: that user needs the whole float tensor anyway, so fusing
    the others would only decode the weight twice.

    Before:
    ```mlir
    %wf = qcc.dequant %w : !qcc.qtensor<256x512xq4_K> -> tensor<256x512xf32>
    %y = linalg.matmul indexing_maps = [affine_map<(m, n, k) -> (m, k)>,
                                        affine_map<(m, n, k) -> (n, k)>,
                                        affine_map<(m, n, k) -> (m, n)>]
        ins(%x, %wf : tensor<8x512xf32>, tensor<256x512xf32>)
        outs(%zero : tensor<8x256xf32>) -> tensor<8x256xf32>
    ```
    After:
    ```mlir
    %y = qcc.qmatmul fwd %x, %w : tensor<8x512xf32>, !qcc.qtensor<256x512xq4_K> -> tensor<8x256xf32>
    ```
  }];
  let dependentDialects = ["::mlir::linalg::LinalgDialect",
                           "::mlir::qcc::QccDialect"];
  let statistics = [
    Statistic<"numFusedFwd", "fused-fwd",
              "Contractions fused into qcc.qmatmul fwd">,
    Statistic<"numFusedBwd", "fused-bwd",
              "Contractions fused into qcc.qmatmul bwd">,
    Statistic<"numDequantsKept", "dequants-kept",
              "Dequants left alone because another user needs the float tensor">
  ];
}

def LowerSte : Pass<"qcc-lower-ste"> {
  let summary = "Lower qcc.ste_grad to elementwise linalg code";
  let description = [{
    Replaces each `qcc.ste_grad` by the elementwise formula of its mode
    (docs/spec.md §3.4) as a `linalg.generic`:

    - `identity`: the gradient itself (converted to the result type);
    - `clipped`: `|dequant(w) + res| <= t ? g : 0`;
    - `ewgs`: `g * (1 + λ * sign(g) * res)`, or `g` without a residual.

    `lsq` needs each format's block-scale field and is lowered by
    `qcc-lower-to-loops` (to a runtime call); this pass leaves it in place
    and counts it.

    Before:
    ```mlir
    %d = qcc.ste_grad clipped %g, %w {threshold = 0.5 : f32}
        : tensor<4x32xf32>, !qcc.qtensor<4x32xq8_0> -> tensor<4x32xf32>
    ```
    After:
    ```mlir
    %wf = qcc.dequant %w : !qcc.qtensor<4x32xq8_0> -> tensor<4x32xf32>
    %d = linalg.generic {...} ins(%g, %wf : ...) outs(%e : tensor<4x32xf32>) {
    ^bb0(%gi: f32, %wi: f32, %o: f32):
      %a = math.absf %wi : f32
      %in = arith.cmpf ole, %a, %t : f32
      %r = arith.select %in, %gi, %zero : f32
      linalg.yield %r : f32
    } -> tensor<4x32xf32>
    ```
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::linalg::LinalgDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::tensor::TensorDialect"];
  let statistics = [
    Statistic<"numLowered", "lowered", "ste_grad ops lowered">,
    Statistic<"numLsqKept", "lsq-kept", "ste_grad lsq ops left in place">
  ];
}

def FuseWeightUpdate : Pass<"qcc-fuse-weight-update"> {
  let summary = "Fuse the weight gradient, the update rule and carry_update";
  let description = [{
    Turns the full-weight update of a quantized weight into one
    `qcc.weight_update`, whose lowering makes a single pass over W tile by
    tile and never materializes the f32 weight gradient. It matches a
    `qcc.carry_update` of a 2-D weight whose `delta` is computed from

    - exactly one weight-gradient contraction `g[n, k] = Σ_m gy[m, n] ·
      x[m, k]` (any linalg contraction with those maps on f32 tensors and a
      zero-filled init), whose result has no other user;
    - elementwise `linalg.generic` ops over the weight's shape (identity
      maps; 0-d tensor operands are read as scalars) that do not read their
      `outs` — the lowered straight-through estimator (run `qcc-lower-ste`
      first) and the update rule, e.g. SGD with momentum or AdamW;
    - `qcc.dequant` of the same weight (the estimators' `Ŵ`), and other
      tensors of the weight's shape (optimizer moments, a carry) read
      elementwise.

    The elementwise bodies are cloned into the fused op's body in program
    order. A value of the chain that is also used elsewhere (the new
    momentum, returned as state) becomes an extra result. A carry_update
    whose delta does not have this form is left alone and counted.

    Before:
    ```mlir
    %g0 = linalg.fill ins(%zero : f32) outs(%e : tensor<64x256xf32>) -> tensor<64x256xf32>
    %g = linalg.matmul indexing_maps = [affine_map<(n, k, m) -> (m, n)>,
                                        affine_map<(n, k, m) -> (m, k)>,
                                        affine_map<(n, k, m) -> (n, k)>]
        ins(%gy, %x : tensor<8x64xf32>, tensor<8x256xf32>)
        outs(%g0 : tensor<64x256xf32>) -> tensor<64x256xf32>
    %d = linalg.generic {...} ins(%g : tensor<64x256xf32>) outs(%e : tensor<64x256xf32>) {
    ^bb0(%gi: f32, %o: f32):
      %di = arith.mulf %gi, %neg_lr : f32
      linalg.yield %di : f32
    } -> tensor<64x256xf32>
    %w2, %c2 = qcc.carry_update %w, %c, %d
        : !qcc.qtensor<64x256xq4_K>, tensor<64x256xbf16>, tensor<64x256xf32>
    ```
    After:
    ```mlir
    %w2, %c2 = qcc.weight_update %gy, %x, %w, %c
        : tensor<8x64xf32>, tensor<8x256xf32>, !qcc.qtensor<64x256xq4_K>, tensor<64x256xbf16> {
    ^bb0(%gi: f32, %wi: f32):
      %di = arith.mulf %gi, %neg_lr : f32
      qcc.yield %di : f32
    }
    ```
  }];
  let dependentDialects = ["::mlir::tensor::TensorDialect",
                           "::mlir::qcc::QccDialect"];
  let statistics = [
    Statistic<"numFused", "fused", "carry_updates fused into qcc.weight_update">,
    Statistic<"numNotFused", "not-fused",
              "carry_updates left alone (their delta has another form)">
  ];
}

def GuardUpdates : Pass<"qcc-guard-updates", "::mlir::func::FuncOp"> {
  let summary = "Make a step's weight updates conditional on a finite loss";
  let description = [{
    In a function that returns a 0-d f32 tensor named `loss` (result
    attribute `qcc.name = "loss"`), every `qcc.weight_update` without a guard
    that the loss dominates gets the loss as its `guard`: a step whose loss
    is NaN or infinite then writes nothing. This is what lets a host update
    weights, carries and optimizer state in place and still skip such a
    step without a trace (docs/runtime.md).

    ```mlir
    %w2, %c2 = qcc.weight_update %gy, %x, %w, %c guard(%loss : tensor<f32>) : ...
    ```
  }];
  let statistics = [
    Statistic<"numGuarded", "guarded", "weight_update ops guarded by the loss">
  ];
}

def OutlineKernels : Pass<"qcc-outline-kernels", "::mlir::ModuleOp"> {
  let summary = "Move each qcc and linalg op into a private function shared "
                "by identical ops";
  let description = [{
    Replaces every qcc op and every linalg op on tensors by a `func.call` of
    a private function (a kernel, named `__qcc_kernel_<op>_<n>` and marked
    `qcc.kernel`) that holds the op alone. Kernels are marked for LLVM as
    `noinline` (inlining them back into every caller would undo the
    sharing) with internal linkage (they are no symbols of the step
    library). Ops that are the
    same up to their operands — same op, attributes, types and region — call
    one kernel: in a stack of identical transformer layers, each projection,
    elementwise op and update of a layer becomes one kernel called once per
    layer.

    The point is compile time. Lowered in place, every op becomes its own
    loop nest in the one entry function, and the conversions to LLVM and
    LLVM itself grow faster than linearly with that function's size. With
    kernels, each distinct op is lowered and compiled once, and the entry
    function is a sequence of calls.

    The kernel takes the op's operands and the values its regions capture,
    except values cheaper to recreate inside it: scalar constants,
    `tensor.empty` with a static shape and `linalg.fill` of such values (a
    fill used only by outlined ops is recreated in each of them rather than
    outlined itself). The op's results are the kernel's results, which
    become out-parameters with the rest of the function boundaries in
    bufferization. Ops with dynamic shapes, or operands of other than
    tensor, qtensor or scalar type, stay where they are.

    Before:
    ```mlir
    func.func @step(%x: tensor<8x256xf32>, %w0: !qcc.qtensor<256x256xq4_K>,
                    %w1: !qcc.qtensor<256x256xq4_K>) -> tensor<8x256xf32> {
      %0 = qcc.qmatmul fwd %x, %w0 : tensor<8x256xf32>, !qcc.qtensor<256x256xq4_K> -> tensor<8x256xf32>
      %1 = qcc.qmatmul fwd %0, %w1 : tensor<8x256xf32>, !qcc.qtensor<256x256xq4_K> -> tensor<8x256xf32>
      return %1 : tensor<8x256xf32>
    }
    ```
    After:
    ```mlir
    func.func @step(%x: tensor<8x256xf32>, %w0: !qcc.qtensor<256x256xq4_K>,
                    %w1: !qcc.qtensor<256x256xq4_K>) -> tensor<8x256xf32> {
      %0 = call @__qcc_kernel_qcc_qmatmul_0(%x, %w0) : (tensor<8x256xf32>, !qcc.qtensor<256x256xq4_K>) -> tensor<8x256xf32>
      %1 = call @__qcc_kernel_qcc_qmatmul_0(%0, %w1) : (tensor<8x256xf32>, !qcc.qtensor<256x256xq4_K>) -> tensor<8x256xf32>
      return %1 : tensor<8x256xf32>
    }
    func.func private @__qcc_kernel_qcc_qmatmul_0(%arg0: tensor<8x256xf32>, %arg1: !qcc.qtensor<256x256xq4_K>) -> tensor<8x256xf32>
        attributes {llvm.linkage = #llvm.linkage<internal>,
                    passthrough = ["noinline"], qcc.kernel} {
      %0 = qcc.qmatmul fwd %arg0, %arg1 : tensor<8x256xf32>, !qcc.qtensor<256x256xq4_K> -> tensor<8x256xf32>
      return %0 : tensor<8x256xf32>
    }
    ```
  }];
  let dependentDialects = ["::mlir::func::FuncDialect",
                           "::mlir::LLVM::LLVMDialect"];
  let statistics = [
    Statistic<"numOutlined", "outlined", "Ops replaced by a kernel call">,
    Statistic<"numKernels", "kernels", "Kernel functions created">,
    Statistic<"numShared", "shared",
              "Ops that call a kernel created for an identical op">
  ];
}

def ProfileKernels : Pass<"qcc-profile-kernels", "::mlir::ModuleOp"> {
  let summary = "Time every call of an outlined kernel (qcc --profile)";
  let description = [{
    After `qcc-outline-kernels`, brackets every call of a kernel (a private
    function marked `qcc.kernel`) from the step's other functions with
    `qcc_rt_profile_enter(id)` and `qcc_rt_profile_exit(id)`, one id per
    kernel, which the step runtime turns into call counts, total times and,
    when the host asks, a trace (StepRuntime.h). The kernels themselves are
    untouched, so a profiled step computes the same bits.

    The step library also gets `const char *qcc_step_profile_table(void)`:
    a JSON array with, per id, the kernel's name, its op, its function type,
    the location of its first call (the Python source line of a traced
    model) and the work of one call: `flops` (2 per multiply-add of a
    `qcc.qmatmul` or of a linalg contraction; 0 for other ops) and `bytes`
    (every operand and result once, quantized weights as their blocks). The
    host (docs/qcc-run.md#profiling) prints a table per kernel from them.

    ```mlir
    func.call @qcc_rt_profile_enter(%c3) : (i32) -> ()
    %0 = call @__qcc_kernel_qcc_qmatmul_0(%x, %w) : (...) -> tensor<8x256xf32>
    func.call @qcc_rt_profile_exit(%c3) : (i32) -> ()
    ```
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::func::FuncDialect",
                           "::mlir::LLVM::LLVMDialect"];
}

def KernelResultsToOutParams
    : Pass<"qcc-kernel-results-to-out-params", "::mlir::ModuleOp"> {
  let summary = "Turn the buffer results of outlined kernels into "
                "out-parameters, before those of their callers";
  let description = [{
    Runs upstream `buffer-results-to-out-params` (with static allocations
    hoisted into the out-parameter) on the kernels of `qcc-outline-kernels`
    (functions marked `qcc.kernel`) and their call sites only. Each call then
    writes into a `memref.alloc` of its caller.

    The order matters: when the caller's own results are converted later,
    a returned buffer is that `memref.alloc`, which is hoisted into the
    caller's out-parameter, so the kernel writes straight into the buffer
    the step's host provides. Converted in one go, the caller sees a call
    result instead, and copies it into its out-parameter: every updated
    weight and carry would be copied once per step.

    First, a kernel result that is one of the kernel's own arguments (an op
    that one-shot bufferization placed in its operand's buffer, e.g. the
    softmax that writes attention's probabilities over its scores) is
    dropped, and each call's users take the call's operand: otherwise it
    would get an out-parameter and a copy, two buffers where one suffices.
  }];
  let dependentDialects = ["::mlir::memref::MemRefDialect"];
}

def FreeBuffersEarly : Pass<"qcc-free-buffers-early", "::mlir::func::FuncOp"> {
  let summary = "Move each buffer's dealloc to just after its last use";
  let description = [{
    Ownership-based buffer deallocation frees a buffer at the end of the
    block that allocated it. In a training step that block is the whole
    function, so every intermediate of the forward and backward pass stays
    allocated until the step returns: a step's peak memory becomes the sum
    of all its intermediates rather than what is live at once (measured: a
    Gemma 3 forward pass at 2048 tokens peaked at 6.7 GB).

    For each `memref.dealloc` of a `memref.alloc` in the same block, this
    pass finds the last operation of the block that uses the buffer or any
    of its aliases (views, casts, loop-carried values: upstream
    BufferViewFlowAnalysis), counting an op with regions as using what its
    regions use, and moves the dealloc right after it. Freeing there is
    safe for the same reason freeing at the block's end was: deallocation
    already proved that the buffer does not escape, and no later operation
    of the block touches it. Deallocs of other buffers (function arguments,
    values from other blocks) are left where they are.

    Before:
    ```mlir
    %a = memref.alloc() : memref<1024xf32>
    call @k(%a) : (memref<1024xf32>) -> ()
    %b = memref.alloc() : memref<1024xf32>
    call @k(%b) : (memref<1024xf32>) -> ()
    memref.dealloc %a : memref<1024xf32>
    memref.dealloc %b : memref<1024xf32>
    ```
    After:
    ```mlir
    %a = memref.alloc() : memref<1024xf32>
    call @k(%a) : (memref<1024xf32>) -> ()
    memref.dealloc %a : memref<1024xf32>
    %b = memref.alloc() : memref<1024xf32>
    call @k(%b) : (memref<1024xf32>) -> ()
    memref.dealloc %b : memref<1024xf32>
    ```
  }];
  let dependentDialects = ["::mlir::memref::MemRefDialect"];
}

def SerializeNestedParallelLoops
    : Pass<"qcc-serialize-nested-parallel-loops", "::mlir::ModuleOp"> {
  let summary = "Turn scf.parallel loops that run inside another parallel "
                "loop into sequential scf.for nests";
  let description = [{
    The CPU pipeline lowers linalg ops to `scf.parallel` over their
    parallel dimensions and then every `scf.parallel` to an OpenMP
    parallel region. Only the outermost loop should fork threads: a
    parallel loop inside another one (a linalg op whose parallel dimensions
    sit inside a reduction, e.g. [b, i, k, j] of a batched matmul, or an op
    of a qmatmul's tile loop), or inside a function called from a parallel
    body, would become a nested region per outer iteration, each paying a
    fork without getting any more threads. This pass rewrites those loops
    into nests of `scf.for` (upstream `scf::parallelForToNestedFors`).
    Loops with reductions (`scf.reduce` with operands) stay as they are.

    Before:
    ```mlir
    scf.parallel (%i) = (%c0) to (%n) step (%c1) {
      scf.for %k = %c0 to %m step %c1 {
        scf.parallel (%j) = (%c0) to (%n) step (%c1) { ... }
      }
    }
    ```
    After: the inner loop is `scf.for %j = %c0 to %n step %c1 { ... }`.
  }];
  let dependentDialects = ["::mlir::scf::SCFDialect"];
  let statistics = [
    Statistic<"numSerialized", "serialized",
              "scf.parallel loops rewritten as scf.for nests">
  ];
}

#endif // QCC_DIALECT_QCC_TRANSFORMS_PASSES_TD
