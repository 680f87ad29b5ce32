// RUN: qcc-opt %s -qcc-fuse-dequant-into-matmul -split-input-file | FileCheck %s

// Forward: linalg.matmul with transposed-rhs maps, x · Ŵᵀ, zero init.
// CHECK-LABEL: func.func @fwd_matmul
// CHECK-SAME: (%[[X:.+]]: tensor<8x512xf32>, %[[W:.+]]: !qcc.qtensor<256x512xq4_K>)
// CHECK-NOT: qcc.dequant
// CHECK-NOT: linalg.matmul
// CHECK: %[[Y:.+]] = qcc.qmatmul fwd %[[X]], %[[W]] : tensor<8x512xf32>, !qcc.qtensor<256x512xq4_K> -> tensor<8x256xf32>
// CHECK: return %[[Y]]
func.func @fwd_matmul(%x: tensor<8x512xf32>, %w: !qcc.qtensor<256x512xq4_K>) -> tensor<8x256xf32> {
  %wf = qcc.dequant %w : !qcc.qtensor<256x512xq4_K> -> tensor<256x512xf32>
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<8x256xf32>
  %init = linalg.fill ins(%zero : f32) outs(%e : tensor<8x256xf32>) -> tensor<8x256xf32>
  %y = linalg.matmul indexing_maps = [affine_map<(m, n, k) -> (m, k)>,
                                      affine_map<(m, n, k) -> (n, k)>,
                                      affine_map<(m, n, k) -> (m, n)>]
      ins(%x, %wf : tensor<8x512xf32>, tensor<256x512xf32>)
      outs(%init : tensor<8x256xf32>) -> tensor<8x256xf32>
  return %y : tensor<8x256xf32>
}

// -----

// Backward-data: the default linalg.matmul g · Ŵ is qmatmul bwd. A non-zero
// init is added back.
// CHECK-LABEL: func.func @bwd_matmul_accumulate
// CHECK-SAME: (%[[G:.+]]: tensor<8x256xf32>, %[[W:.+]]: !qcc.qtensor<256x512xq8_0>, %[[ACC:.+]]: tensor<8x512xf32>)
// CHECK: %[[P:.+]] = qcc.qmatmul bwd %[[G]], %[[W]]
// CHECK: %[[S:.+]] = linalg.add ins(%[[P]], %[[ACC]] : {{.*}}) outs(%[[ACC]] : {{.*}})
// CHECK: return %[[S]]
func.func @bwd_matmul_accumulate(%g: tensor<8x256xf32>, %w: !qcc.qtensor<256x512xq8_0>, %acc: tensor<8x512xf32>) -> tensor<8x512xf32> {
  %wf = qcc.dequant %w : !qcc.qtensor<256x512xq8_0> -> tensor<256x512xf32>
  %y = linalg.matmul ins(%g, %wf : tensor<8x256xf32>, tensor<256x512xf32>)
      outs(%acc : tensor<8x512xf32>) -> tensor<8x512xf32>
  return %y : tensor<8x512xf32>
}

// -----

// batch_matmul with a batched weight, both orientations via maps.
// CHECK-LABEL: func.func @batch_fwd
// CHECK: qcc.qmatmul fwd %{{.+}}, %{{.+}} : tensor<2x8x64xf32>, !qcc.qtensor<2x32x64xq4_0> -> tensor<2x8x32xf32>
func.func @batch_fwd(%x: tensor<2x8x64xf32>, %w: !qcc.qtensor<2x32x64xq4_0>) -> tensor<2x8x32xf32> {
  %wf = qcc.dequant %w : !qcc.qtensor<2x32x64xq4_0> -> tensor<2x32x64xf32>
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<2x8x32xf32>
  %init = linalg.fill ins(%zero : f32) outs(%e : tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
  %y = linalg.batch_matmul indexing_maps = [affine_map<(b, m, n, k) -> (b, m, k)>,
                                            affine_map<(b, m, n, k) -> (b, n, k)>,
                                            affine_map<(b, m, n, k) -> (b, m, n)>]
      ins(%x, %wf : tensor<2x8x64xf32>, tensor<2x32x64xf32>)
      outs(%init : tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
  return %y : tensor<2x8x32xf32>
}

// -----

// An equivalent linalg.generic contraction with a 2-D weight shared by a
// batch of activations (bwd orientation).
// CHECK-LABEL: func.func @generic_bwd_broadcast
// CHECK-NOT: linalg.generic
// CHECK: qcc.qmatmul bwd %{{.+}}, %{{.+}} : tensor<4x8x32xf32>, !qcc.qtensor<32x64xq8_0> -> tensor<4x8x64xf32>
func.func @generic_bwd_broadcast(%g: tensor<4x8x32xf32>, %w: !qcc.qtensor<32x64xq8_0>) -> tensor<4x8x64xf32> {
  %wf = qcc.dequant %w : !qcc.qtensor<32x64xq8_0> -> tensor<32x64xf32>
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<4x8x64xf32>
  %init = linalg.fill ins(%zero : f32) outs(%e : tensor<4x8x64xf32>) -> tensor<4x8x64xf32>
  %y = linalg.generic {
      indexing_maps = [affine_map<(b, m, n, k) -> (b, m, k)>,
                       affine_map<(b, m, n, k) -> (k, n)>,
                       affine_map<(b, m, n, k) -> (b, m, n)>],
      iterator_types = ["parallel", "parallel", "parallel", "reduction"]}
      ins(%g, %wf : tensor<4x8x32xf32>, tensor<32x64xf32>) outs(%init : tensor<4x8x64xf32>) {
    ^bb0(%a: f32, %b: f32, %c: f32):
      %p = arith.mulf %a, %b : f32
      %s = arith.addf %c, %p : f32
      linalg.yield %s : f32
  } -> tensor<4x8x64xf32>
  return %y : tensor<4x8x64xf32>
}

// -----

// Forward and backward uses of one dequant both fuse; the dequant vanishes.
// CHECK-LABEL: func.func @fwd_and_bwd
// CHECK-NOT: qcc.dequant
// CHECK: qcc.qmatmul fwd
// CHECK: qcc.qmatmul bwd
func.func @fwd_and_bwd(%x: tensor<8x64xf32>, %g: tensor<8x32xf32>, %w: !qcc.qtensor<32x64xq8_0>) -> (tensor<8x32xf32>, tensor<8x64xf32>) {
  %wf = qcc.dequant %w : !qcc.qtensor<32x64xq8_0> -> tensor<32x64xf32>
  %zero = arith.constant 0.0 : f32
  %e0 = tensor.empty() : tensor<8x32xf32>
  %i0 = linalg.fill ins(%zero : f32) outs(%e0 : tensor<8x32xf32>) -> tensor<8x32xf32>
  %y = linalg.matmul indexing_maps = [affine_map<(m, n, k) -> (m, k)>,
                                      affine_map<(m, n, k) -> (n, k)>,
                                      affine_map<(m, n, k) -> (m, n)>]
      ins(%x, %wf : tensor<8x64xf32>, tensor<32x64xf32>) outs(%i0 : tensor<8x32xf32>) -> tensor<8x32xf32>
  %e1 = tensor.empty() : tensor<8x64xf32>
  %i1 = linalg.fill ins(%zero : f32) outs(%e1 : tensor<8x64xf32>) -> tensor<8x64xf32>
  %dx = linalg.matmul ins(%g, %wf : tensor<8x32xf32>, tensor<32x64xf32>) outs(%i1 : tensor<8x64xf32>) -> tensor<8x64xf32>
  return %y, %dx : tensor<8x32xf32>, tensor<8x64xf32>
}

// -----

// Another user needs the whole float tensor: nothing fuses, the decode
// happens once.
// CHECK-LABEL: func.func @kept_for_other_user
// CHECK: %[[WF:.+]] = qcc.dequant
// CHECK: linalg.matmul {{.*}} ins(%{{.+}}, %[[WF]]
// CHECK-NOT: qcc.qmatmul
// CHECK: return {{.*}}%[[WF]]
func.func @kept_for_other_user(%x: tensor<8x64xf32>, %w: !qcc.qtensor<32x64xq8_0>) -> (tensor<8x32xf32>, tensor<32x64xf32>) {
  %wf = qcc.dequant %w : !qcc.qtensor<32x64xq8_0> -> tensor<32x64xf32>
  %zero = arith.constant 0.0 : f32
  %e0 = tensor.empty() : tensor<8x32xf32>
  %i0 = linalg.fill ins(%zero : f32) outs(%e0 : tensor<8x32xf32>) -> tensor<8x32xf32>
  %y = linalg.matmul indexing_maps = [affine_map<(m, n, k) -> (m, k)>,
                                      affine_map<(m, n, k) -> (n, k)>,
                                      affine_map<(m, n, k) -> (m, n)>]
      ins(%x, %wf : tensor<8x64xf32>, tensor<32x64xf32>) outs(%i0 : tensor<8x32xf32>) -> tensor<8x32xf32>
  return %y, %wf : tensor<8x32xf32>, tensor<32x64xf32>
}

// -----

// The dequantized matrix on the left (Ŵ · x) is not a Linear layer: kept.
// CHECK-LABEL: func.func @weight_on_left
// CHECK: qcc.dequant
// CHECK: linalg.matmul
// CHECK-NOT: qcc.qmatmul
func.func @weight_on_left(%w: !qcc.qtensor<32x64xq8_0>, %x: tensor<64x8xf32>, %acc: tensor<32x8xf32>) -> tensor<32x8xf32> {
  %wf = qcc.dequant %w : !qcc.qtensor<32x64xq8_0> -> tensor<32x64xf32>
  %y = linalg.matmul ins(%wf, %x : tensor<32x64xf32>, tensor<64x8xf32>) outs(%acc : tensor<32x8xf32>) -> tensor<32x8xf32>
  return %y : tensor<32x8xf32>
}

