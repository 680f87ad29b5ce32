// One GEMV row against a q4_K weight (test/tools/qcc/gemv-int8.test).
func.func @gemv(%x: tensor<1x512xf32>, %w: !qcc.qtensor<64x512xq4_K>) -> tensor<1x64xf32> {
  %0 = qcc.qmatmul fwd %x, %w : tensor<1x512xf32>, !qcc.qtensor<64x512xq4_K> -> tensor<1x64xf32>
  return %0 : tensor<1x64xf32>
}
