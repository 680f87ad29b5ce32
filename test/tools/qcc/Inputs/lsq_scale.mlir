// LSQ: the block-scale gradient of q4_K weights, and the scale update that
// writes learned scales back into the block headers.
func.func @lsq(%g: tensor<16x512xf32>, %w: !qcc.qtensor<16x512xq4_K>) -> (tensor<16x512xf32>, tensor<16x2xf32>) {
  %d, %s = qcc.ste_grad lsq %g, %w : tensor<16x512xf32>, !qcc.qtensor<16x512xq4_K> -> tensor<16x512xf32>, tensor<16x2xf32>
  return %d, %s : tensor<16x512xf32>, tensor<16x2xf32>
}
func.func @update(%w: !qcc.qtensor<16x512xq4_K>, %delta: tensor<16x2xf32>) -> !qcc.qtensor<16x512xq4_K> {
  %0 = qcc.scale_update %w, %delta : !qcc.qtensor<16x512xq4_K>, tensor<16x2xf32>
  return %0 : !qcc.qtensor<16x512xq4_K>
}
