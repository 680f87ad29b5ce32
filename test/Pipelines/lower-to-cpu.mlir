// RUN: qcc-opt %s -qcc-lower-to-cpu | FileCheck %s
// RUN: qcc-opt %s -qcc-lower-to-cpu=threads=1 | FileCheck %s --check-prefix=SERIAL

// The whole pipeline: the dequant feeding a matmul is fused, everything is
// lowered to the LLVM dialect with bare-pointer arguments (the weight bytes,
// the activations, then the result as an out-parameter), and parallel loops
// become OpenMP unless threads=1.
// CHECK-LABEL: llvm.func @linear
// CHECK-SAME: (%{{.+}}: !llvm.ptr, %{{.+}}: !llvm.ptr, %{{.+}}: !llvm.ptr)
// CHECK: omp.parallel
// CHECK-NOT: qcc.
// SERIAL-LABEL: llvm.func @linear
// SERIAL-NOT: omp.parallel
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
