// RUN: qcc-opt %s | qcc-opt | FileCheck %s
// RUN: qcc-opt %s --mlir-print-op-generic | qcc-opt | FileCheck %s
// Round trip of qcc.ste_grad in each mode.

// CHECK-LABEL: func.func @modes
// CHECK: qcc.ste_grad identity %{{.+}}, %{{.+}} : tensor<16x256xf32>, !qcc.qtensor<16x256xq4_K> -> tensor<16x256xf32>
// CHECK: qcc.ste_grad clipped %{{.+}}, %{{.+}} {threshold = 2.500000e-01 : f32} : tensor<16x256xf32>, !qcc.qtensor<16x256xq4_K> -> tensor<16x256xf32>
// CHECK: qcc.ste_grad ewgs %{{.+}}, %{{.+}} residual(%{{.+}} : tensor<16x256xbf16>) {lambda = 1.000000e-01 : f32} : tensor<16x256xf32>, !qcc.qtensor<16x256xq4_K> -> tensor<16x256xf32>
// CHECK: %{{.+}}, %[[S:.+]] = qcc.ste_grad lsq %{{.+}}, %{{.+}} : tensor<16x256xf32>, !qcc.qtensor<16x256xq4_K> -> tensor<16x256xf32>, tensor<16x1xf32>
// CHECK: return {{.*}}%[[S]]
func.func @modes(%g: tensor<16x256xf32>, %w: !qcc.qtensor<16x256xq4_K>, %r: tensor<16x256xbf16>)
    -> (tensor<16x256xf32>, tensor<16x256xf32>, tensor<16x256xf32>, tensor<16x256xf32>, tensor<16x1xf32>) {
  %0 = qcc.ste_grad identity %g, %w : tensor<16x256xf32>, !qcc.qtensor<16x256xq4_K> -> tensor<16x256xf32>
  %1 = qcc.ste_grad clipped %g, %w {threshold = 0.25 : f32} : tensor<16x256xf32>, !qcc.qtensor<16x256xq4_K> -> tensor<16x256xf32>
  %2 = qcc.ste_grad ewgs %g, %w residual(%r : tensor<16x256xbf16>) {lambda = 0.1 : f32} : tensor<16x256xf32>, !qcc.qtensor<16x256xq4_K> -> tensor<16x256xf32>
  %3, %4 = qcc.ste_grad lsq %g, %w : tensor<16x256xf32>, !qcc.qtensor<16x256xq4_K> -> tensor<16x256xf32>, tensor<16x1xf32>
  return %0, %1, %2, %3, %4 : tensor<16x256xf32>, tensor<16x256xf32>, tensor<16x256xf32>, tensor<16x256xf32>, tensor<16x1xf32>
}
