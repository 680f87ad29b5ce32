// A Linear layer bound to a GGUF tensor name through argument attributes.
func.func @linear(%x: tensor<4x64xf32> {qcc.name = "x", qcc.role = "input"},
                  %w: !qcc.qtensor<32x64xq8_0> {qcc.name = "blk.0.ffn_up.weight"})
    -> tensor<4x32xf32> {
  %0 = qcc.qmatmul fwd %x, %w : tensor<4x64xf32>, !qcc.qtensor<32x64xq8_0> -> tensor<4x32xf32>
  return %0 : tensor<4x32xf32>
}
