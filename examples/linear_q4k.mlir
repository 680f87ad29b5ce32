// Forward and backward-data of one q4_K Linear layer of the demo model
// (blk.0.ffn_up.weight: 256 inputs, 512 outputs; ggml ne = [256, 512]).
// The weight stays in its GGUF blocks: qcc-fuse-dequant-into-matmul turns the
// dequant + matmul into qcc.qmatmul, which decodes 16 x 512 tiles on the fly.
func.func @forward(%x: tensor<8x256xf32> {qcc.name = "x", qcc.role = "input"},
                   %w: !qcc.qtensor<512x256xq4_K> {qcc.name = "blk.0.ffn_up.weight"})
    -> tensor<8x512xf32> {
  %wf = qcc.dequant %w : !qcc.qtensor<512x256xq4_K> -> tensor<512x256xf32>
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<8x512xf32>
  %init = linalg.fill ins(%zero : f32) outs(%e : tensor<8x512xf32>) -> tensor<8x512xf32>
  %y = linalg.matmul indexing_maps = [affine_map<(m, n, k) -> (m, k)>,
                                      affine_map<(m, n, k) -> (n, k)>,
                                      affine_map<(m, n, k) -> (m, n)>]
      ins(%x, %wf : tensor<8x256xf32>, tensor<512x256xf32>)
      outs(%init : tensor<8x512xf32>) -> tensor<8x512xf32>
  return %y : tensor<8x512xf32>
}

func.func @backward_data(%g: tensor<8x512xf32> {qcc.name = "dy", qcc.role = "input"},
                         %w: !qcc.qtensor<512x256xq4_K> {qcc.name = "blk.0.ffn_up.weight"})
    -> tensor<8x256xf32> {
  %dx = qcc.qmatmul bwd %g, %w : tensor<8x512xf32>, !qcc.qtensor<512x256xq4_K> -> tensor<8x256xf32>
  return %dx : tensor<8x256xf32>
}
