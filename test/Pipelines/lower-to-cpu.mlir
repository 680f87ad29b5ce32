// RUN: qcc-opt %s -qcc-lower-to-cpu | FileCheck %s
// RUN: qcc-opt %s -qcc-lower-to-cpu=threads=1 | FileCheck %s --check-prefix=SERIAL
// RUN: qcc-opt %s -qcc-lower-to-cpu=outline-kernels=false | FileCheck %s --check-prefix=INPLACE

// The whole pipeline: the dequant feeding a matmul is fused, everything is
// lowered to the LLVM dialect with bare-pointer arguments (the weight bytes,
// the activations, then the result as an out-parameter), and parallel loops
// become OpenMP unless threads=1. The matmul is outlined into a kernel
// (internal, not inlined) that writes straight into the out-parameter,
// unless outline-kernels=false.
// CHECK-LABEL: llvm.func @linear
// CHECK-SAME: (%[[X:.+]]: !llvm.ptr, %[[W:.+]]: !llvm.ptr, %[[OUT:.+]]: !llvm.ptr)
// CHECK-NOT: omp.parallel
// CHECK: llvm.call @[[K:__qcc_kernel_qcc_qmatmul_[0-9]+]](%[[X]], %[[W]], %[[OUT]])
// CHECK-NOT: llvm.call @memcpy
// CHECK: llvm.return
// CHECK: llvm.func internal @[[K]](%{{.+}}: !llvm.ptr, %{{.+}}: !llvm.ptr, %{{.+}}: !llvm.ptr)
// CHECK-SAME: passthrough = ["noinline"]
// CHECK: omp.parallel
// CHECK-NOT: qcc.
// SERIAL-LABEL: llvm.func @linear
// SERIAL-NOT: omp.parallel
// INPLACE-LABEL: llvm.func @linear
// INPLACE-NOT: llvm.call @__qcc_kernel
// INPLACE: omp.parallel
// INPLACE-NOT: __qcc_kernel
func.func @linear(%x: tensor<4x64xf32>, %w: !qcc.qtensor<256x64xq8_0>) -> tensor<4x256xf32> {
  %wf = qcc.dequant %w : !qcc.qtensor<256x64xq8_0> -> tensor<256x64xf32>
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<4x256xf32>
  %init = linalg.fill ins(%zero : f32) outs(%e : tensor<4x256xf32>) -> tensor<4x256xf32>
  %y = linalg.matmul indexing_maps = [affine_map<(m, n, k) -> (m, k)>,
                                      affine_map<(m, n, k) -> (n, k)>,
                                      affine_map<(m, n, k) -> (m, n)>]
      ins(%x, %wf : tensor<4x64xf32>, tensor<256x64xf32>)
      outs(%init : tensor<4x256xf32>) -> tensor<4x256xf32>
  return %y : tensor<4x256xf32>
}
