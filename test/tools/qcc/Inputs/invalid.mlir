// Contracts the wrong dimension: K of the weight is 512, not 256.
func.func @bad(%x: tensor<8x256xf32>, %w: !qcc.qtensor<256x512xq4_K>) -> tensor<8x256xf32> {
  // The verifier points here.
  %0 = qcc.qmatmul fwd %x, %w : tensor<8x256xf32>, !qcc.qtensor<256x512xq4_K> -> tensor<8x256xf32>
  return %0 : tensor<8x256xf32>
}
