// RUN: qcc-opt %s -qcc-lower-ste -split-input-file | FileCheck %s

// identity becomes a copy-through generic (with a conversion where the
// direction's type differs from the gradient's).
// CHECK-LABEL: func.func @identity_bf16
// CHECK-NOT: qcc.ste_grad
// CHECK: linalg.generic
// CHECK-SAME: ins(%{{.+}} : tensor<4x32xbf16>) outs(%{{.+}} : tensor<4x32xf32>)
// CHECK: ^bb0(%[[G:.+]]: bf16, %{{.+}}: f32):
// CHECK: %[[E:.+]] = arith.extf %[[G]] : bf16 to f32
// CHECK: linalg.yield %[[E]] : f32
func.func @identity_bf16(%g: tensor<4x32xbf16>, %w: !qcc.qtensor<4x32xq8_0>) -> tensor<4x32xf32> {
  %0 = qcc.ste_grad identity %g, %w : tensor<4x32xbf16>, !qcc.qtensor<4x32xq8_0> -> tensor<4x32xf32>
  return %0 : tensor<4x32xf32>
}

// -----

// clipped decodes the weight, adds the residual and masks the gradient
// where |Ŵ + res| > t.
// CHECK-LABEL: func.func @clipped
// CHECK-SAME: (%[[GR:.+]]: tensor<4x32xf32>, %[[W:.+]]: !qcc.qtensor<4x32xq8_0>, %[[R:.+]]: tensor<4x32xbf16>)
// CHECK-DAG: %[[Z:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-DAG: %[[T:.+]] = arith.constant 5.000000e-01 : f32
// CHECK: %[[WF:.+]] = qcc.dequant %[[W]] : !qcc.qtensor<4x32xq8_0> -> tensor<4x32xf32>
// CHECK: linalg.generic {{.*}} ins(%[[GR]], %[[WF]], %[[R]] :
// CHECK: ^bb0(%[[G:.+]]: f32, %[[V:.+]]: f32, %[[RES:.+]]: bf16, %{{.+}}: f32):
// CHECK: %[[RE:.+]] = arith.extf %[[RES]]
// CHECK: %[[L:.+]] = arith.addf %[[V]], %[[RE]]
// CHECK: %[[A:.+]] = math.absf %[[L]]
// CHECK: %[[IN:.+]] = arith.cmpf ole, %[[A]], %[[T]]
// CHECK: %[[S:.+]] = arith.select %[[IN]], %[[G]], %[[Z]]
// CHECK: linalg.yield %[[S]]
func.func @clipped(%g: tensor<4x32xf32>, %w: !qcc.qtensor<4x32xq8_0>, %r: tensor<4x32xbf16>) -> tensor<4x32xf32> {
  %0 = qcc.ste_grad clipped %g, %w residual(%r : tensor<4x32xbf16>) {threshold = 0.5 : f32} : tensor<4x32xf32>, !qcc.qtensor<4x32xq8_0> -> tensor<4x32xf32>
  return %0 : tensor<4x32xf32>
}

// -----

// ewgs scales the gradient by 1 + λ·sign(g)·res.
// CHECK-LABEL: func.func @ewgs
// CHECK-DAG: %[[LAM:.+]] = arith.constant 2.500000e-01 : f32
// CHECK-DAG: %[[ONE:.+]] = arith.constant 1.000000e+00 : f32
// CHECK-NOT: qcc.dequant
// CHECK: linalg.generic
// CHECK: ^bb0(%[[G:.+]]: f32, %[[RES:.+]]: f32, %{{.+}}: f32):
// CHECK: arith.cmpf ogt, %[[G]]
// CHECK: arith.cmpf olt, %[[G]]
// CHECK: arith.select
// CHECK: %[[SIGN:.+]] = arith.select
// CHECK: %[[SR:.+]] = arith.mulf %[[SIGN]], %[[RES]]
// CHECK: %[[LSR:.+]] = arith.mulf %[[SR]], %[[LAM]]
// CHECK: %[[F:.+]] = arith.addf %[[LSR]], %[[ONE]]
// CHECK: %[[OUT:.+]] = arith.mulf %[[G]], %[[F]]
// CHECK: linalg.yield %[[OUT]]
func.func @ewgs(%g: tensor<4x32xf32>, %w: !qcc.qtensor<4x32xq8_0>, %r: tensor<4x32xf32>) -> tensor<4x32xf32> {
  %0 = qcc.ste_grad ewgs %g, %w residual(%r : tensor<4x32xf32>) {lambda = 0.25 : f32} : tensor<4x32xf32>, !qcc.qtensor<4x32xq8_0> -> tensor<4x32xf32>
  return %0 : tensor<4x32xf32>
}

// -----

// Dynamic shapes size the result with tensor.dim.
// CHECK-LABEL: func.func @dynamic
// CHECK: %[[D:.+]] = tensor.dim
// CHECK: tensor.empty(%[[D]]) : tensor<?x32xf32>
func.func @dynamic(%g: tensor<?x32xf32>, %w: !qcc.qtensor<?x32xq8_0>) -> tensor<?x32xf32> {
  %0 = qcc.ste_grad identity %g, %w : tensor<?x32xf32>, !qcc.qtensor<?x32xq8_0> -> tensor<?x32xf32>
  return %0 : tensor<?x32xf32>
}

// -----

// lsq is left for qcc-lower-to-loops (its scale gradient is a runtime call).
// CHECK-LABEL: func.func @lsq_kept
// CHECK: qcc.ste_grad lsq
func.func @lsq_kept(%g: tensor<4x32xf32>, %w: !qcc.qtensor<4x32xq8_0>) -> (tensor<4x32xf32>, tensor<4x1xf32>) {
  %0, %1 = qcc.ste_grad lsq %g, %w : tensor<4x32xf32>, !qcc.qtensor<4x32xq8_0> -> tensor<4x32xf32>, tensor<4x1xf32>
  return %0, %1 : tensor<4x32xf32>, tensor<4x1xf32>
}
