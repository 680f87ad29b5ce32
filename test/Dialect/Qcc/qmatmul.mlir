// RUN: qcc-opt %s | qcc-opt | FileCheck %s
// RUN: qcc-opt %s --mlir-print-op-generic | qcc-opt | FileCheck %s
// Round trip of qcc.qmatmul in both orientations, with batch dimensions.

// Forward, y = x · Wᵀ with W = [N=256, K=512].
// CHECK-LABEL: func.func @fwd
// CHECK-SAME: (%[[X:.+]]: tensor<8x512xf32>, %[[W:.+]]: !qcc.qtensor<256x512xq4_K>)
// CHECK: qcc.qmatmul fwd %[[X]], %[[W]] : tensor<8x512xf32>, !qcc.qtensor<256x512xq4_K> -> tensor<8x256xf32>
func.func @fwd(%x: tensor<8x512xf32>, %w: !qcc.qtensor<256x512xq4_K>) -> tensor<8x256xf32> {
  %0 = qcc.qmatmul fwd %x, %w : tensor<8x512xf32>, !qcc.qtensor<256x512xq4_K> -> tensor<8x256xf32>
  return %0 : tensor<8x256xf32>
}

// Backward-data, dx = g · W, with a leading batch dimension on g only.
// CHECK-LABEL: func.func @bwd_batched
// CHECK: qcc.qmatmul bwd %{{.+}}, %{{.+}} : tensor<4x8x256xf32>, !qcc.qtensor<256x512xq8_0> -> tensor<4x8x512xf32>
func.func @bwd_batched(%g: tensor<4x8x256xf32>, %w: !qcc.qtensor<256x512xq8_0>) -> tensor<4x8x512xf32> {
  %0 = qcc.qmatmul bwd %g, %w : tensor<4x8x256xf32>, !qcc.qtensor<256x512xq8_0> -> tensor<4x8x512xf32>
  return %0 : tensor<4x8x512xf32>
}

// A batched weight (one matrix per batch), bf16 activations, dynamic M.
// CHECK-LABEL: func.func @fwd_batched_weight
// CHECK: qcc.qmatmul fwd %{{.+}}, %{{.+}} : tensor<2x?x64xbf16>, !qcc.qtensor<2x32x64xq4_0> -> tensor<2x?x32xf32>
func.func @fwd_batched_weight(%x: tensor<2x?x64xbf16>, %w: !qcc.qtensor<2x32x64xq4_0>) -> tensor<2x?x32xf32> {
  %0 = qcc.qmatmul fwd %x, %w : tensor<2x?x64xbf16>, !qcc.qtensor<2x32x64xq4_0> -> tensor<2x?x32xf32>
  return %0 : tensor<2x?x32xf32>
}
