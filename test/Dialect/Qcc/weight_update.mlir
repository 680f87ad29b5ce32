// RUN: qcc-opt %s | qcc-opt | FileCheck %s
// RUN: qcc-opt %s --mlir-print-op-generic | qcc-opt | FileCheck %s
// Round trip of qcc.weight_update and qcc.yield.

// Plain SGD: the body scales the gradient.
// CHECK-LABEL: func.func @sgd
// CHECK-SAME: (%[[GY:.+]]: tensor<8x64xf32>, %[[X:.+]]: tensor<8x256xf32>, %[[W:.+]]: !qcc.qtensor<64x256xq4_K>, %[[C:.+]]: tensor<64x256xbf16>, %[[LR:.+]]: f32)
// CHECK: %[[W2:.+]], %[[C2:.+]] = qcc.weight_update %[[GY]], %[[X]], %[[W]], %[[C]] : tensor<8x64xf32>, tensor<8x256xf32>, !qcc.qtensor<64x256xq4_K>, tensor<64x256xbf16> {
// CHECK: ^bb0(%[[G:.+]]: f32, %{{.+}}: f32):
// CHECK: %[[D:.+]] = arith.mulf %[[G]], %[[LR]] : f32
// CHECK: qcc.yield %[[D]] : f32
// CHECK: return %[[W2]], %[[C2]]
func.func @sgd(%gy: tensor<8x64xf32>, %x: tensor<8x256xf32>, %w: !qcc.qtensor<64x256xq4_K>,
               %c: tensor<64x256xbf16>, %lr: f32) -> (!qcc.qtensor<64x256xq4_K>, tensor<64x256xbf16>) {
  %w2, %c2 = qcc.weight_update %gy, %x, %w, %c : tensor<8x64xf32>, tensor<8x256xf32>, !qcc.qtensor<64x256xq4_K>, tensor<64x256xbf16> {
  ^bb0(%g: f32, %wv: f32):
    %d = arith.mulf %g, %lr : f32
    qcc.yield %d : f32
  }
  return %w2, %c2 : !qcc.qtensor<64x256xq4_K>, tensor<64x256xbf16>
}

// Momentum read elementwise and returned as an extra result; a JL carry.
// CHECK-LABEL: func.func @momentum_jl
// CHECK: %{{.+}}, %{{.+}}, %[[M2:.+]] = qcc.weight_update %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} ins(%{{.+}} : tensor<64x256xbf16>) {jl = #qcc.jl<dim = 16, chunk = 256, seed = 3>} : tensor<8x64xf32>, tensor<8x256xf32>, !qcc.qtensor<64x256xq4_K>, tensor<64x16xf32> -> tensor<64x256xbf16> {
// CHECK: ^bb0(%{{.+}}: f32, %{{.+}}: f32, %[[MI:.+]]: bf16):
// CHECK: qcc.yield %{{.+}}, %{{.+}} : f32, bf16
// CHECK: return %[[M2]]
func.func @momentum_jl(%gy: tensor<8x64xf32>, %x: tensor<8x256xf32>, %w: !qcc.qtensor<64x256xq4_K>,
                       %c: tensor<64x16xf32>, %m: tensor<64x256xbf16>, %lr: f32) -> tensor<64x256xbf16> {
  %w2, %c2, %m2 = qcc.weight_update %gy, %x, %w, %c ins(%m : tensor<64x256xbf16>) {jl = #qcc.jl<dim = 16, chunk = 256, seed = 3>}
      : tensor<8x64xf32>, tensor<8x256xf32>, !qcc.qtensor<64x256xq4_K>, tensor<64x16xf32> -> tensor<64x256xbf16> {
  ^bb0(%g: f32, %wv: f32, %mi: bf16):
    %m32 = arith.extf %mi : bf16 to f32
    %mn = arith.addf %m32, %g : f32
    %d = arith.mulf %mn, %lr : f32
    %mo = arith.truncf %mn : f32 to bf16
    qcc.yield %d, %mo : f32, bf16
  }
  return %m2 : tensor<64x256xbf16>
}
