// RUN: qcc-opt %s -pass-pipeline='builtin.module(func.func(qcc-guard-updates))' -split-input-file | FileCheck %s

// The returned loss guards the update it dominates.
// CHECK-LABEL: func.func @guarded
// CHECK: %[[L:.+]] = tensor.from_elements
// CHECK: qcc.weight_update %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} guard(%[[L]] : tensor<f32>)
func.func @guarded(%gy: tensor<8x64xf32>, %x: tensor<8x256xf32>, %w: !qcc.qtensor<64x256xq4_K>,
                   %c: tensor<64x256xbf16>, %lr: f32, %l: f32)
    -> (!qcc.qtensor<64x256xq4_K>, tensor<64x256xbf16>, tensor<f32> {qcc.name = "loss"}) {
  %loss = tensor.from_elements %l : tensor<f32>
  %w2, %c2 = qcc.weight_update %gy, %x, %w, %c : tensor<8x64xf32>, tensor<8x256xf32>, !qcc.qtensor<64x256xq4_K>, tensor<64x256xbf16> {
  ^bb0(%g: f32, %wv: f32):
    %d = arith.mulf %g, %lr : f32
    qcc.yield %d : f32
  }
  return %w2, %c2, %loss : !qcc.qtensor<64x256xq4_K>, tensor<64x256xbf16>, tensor<f32>
}

// -----

// No result named loss: nothing to guard with.
// CHECK-LABEL: func.func @no_loss
// CHECK-NOT: guard(
func.func @no_loss(%gy: tensor<8x64xf32>, %x: tensor<8x256xf32>, %w: !qcc.qtensor<64x256xq4_K>,
                   %c: tensor<64x256xbf16>, %lr: f32, %l: f32)
    -> (!qcc.qtensor<64x256xq4_K>, tensor<64x256xbf16>, tensor<f32> {qcc.name = "objective"}) {
  %loss = tensor.from_elements %l : tensor<f32>
  %w2, %c2 = qcc.weight_update %gy, %x, %w, %c : tensor<8x64xf32>, tensor<8x256xf32>, !qcc.qtensor<64x256xq4_K>, tensor<64x256xbf16> {
  ^bb0(%g: f32, %wv: f32):
    %d = arith.mulf %g, %lr : f32
    qcc.yield %d : f32
  }
  return %w2, %c2, %loss : !qcc.qtensor<64x256xq4_K>, tensor<64x256xbf16>, tensor<f32>
}

// -----

// A loss computed after the update (here: from its result) cannot guard it.
// CHECK-LABEL: func.func @loss_after
// CHECK-NOT: guard(
func.func @loss_after(%gy: tensor<8x64xf32>, %x: tensor<8x256xf32>, %w: !qcc.qtensor<64x256xq4_K>,
                      %c: tensor<64x256xbf16>, %lr: f32)
    -> (!qcc.qtensor<64x256xq4_K>, tensor<64x256xbf16>, tensor<f32> {qcc.name = "loss"}) {
  %w2, %c2 = qcc.weight_update %gy, %x, %w, %c : tensor<8x64xf32>, tensor<8x256xf32>, !qcc.qtensor<64x256xq4_K>, tensor<64x256xbf16> {
  ^bb0(%g: f32, %wv: f32):
    %d = arith.mulf %g, %lr : f32
    qcc.yield %d : f32
  }
  %c0 = arith.constant 0 : index
  %e = tensor.extract %c2[%c0, %c0] : tensor<64x256xbf16>
  %f = arith.extf %e : bf16 to f32
  %loss = tensor.from_elements %f : tensor<f32>
  return %w2, %c2, %loss : !qcc.qtensor<64x256xq4_K>, tensor<64x256xbf16>, tensor<f32>
}
