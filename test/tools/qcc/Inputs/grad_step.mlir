// A gradient step that every target compiles: a Walsh-Hadamard rotation of
// the activations, the forward qmatmul, a squared-error loss (a full
// reduction), the backward-data qmatmul, the weight gradient (a linalg
// contraction) and a clipped straight-through estimate.
func.func @grad_step(%w: !qcc.qtensor<64x256xq4_K> {qcc.name = "w"},
                     %x: tensor<4x256xf32> {qcc.name = "x"},
                     %t: tensor<4x64xf32> {qcc.name = "t"})
    -> (tensor<f32> {qcc.name = "loss"}, tensor<4x256xf32> {qcc.name = "dx"},
        tensor<64x256xf32> {qcc.name = "dw"}) {
  %xr = qcc.hadamard %x block 64 seed 3 : tensor<4x256xf32>
  %y = qcc.qmatmul fwd %xr, %w : tensor<4x256xf32>, !qcc.qtensor<64x256xq4_K> -> tensor<4x64xf32>
  %e0 = tensor.empty() : tensor<4x64xf32>
  %gy = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>,
                       affine_map<(i, j) -> (i, j)>],
      iterator_types = ["parallel", "parallel"]}
      ins(%y, %t : tensor<4x64xf32>, tensor<4x64xf32>) outs(%e0 : tensor<4x64xf32>) {
    ^bb0(%a: f32, %b: f32, %o: f32):
      %d = arith.subf %a, %b : f32
      linalg.yield %d : f32
  } -> tensor<4x64xf32>
  %zero = arith.constant 0.0 : f32
  %l0 = tensor.empty() : tensor<f32>
  %l1 = linalg.fill ins(%zero : f32) outs(%l0 : tensor<f32>) -> tensor<f32>
  %loss = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> ()>],
      iterator_types = ["reduction", "reduction"]}
      ins(%gy : tensor<4x64xf32>) outs(%l1 : tensor<f32>) {
    ^bb0(%a: f32, %acc: f32):
      %sq = arith.mulf %a, %a : f32
      %s = arith.addf %acc, %sq : f32
      linalg.yield %s : f32
  } -> tensor<f32>
  %dx = qcc.qmatmul bwd %gy, %w : tensor<4x64xf32>, !qcc.qtensor<64x256xq4_K> -> tensor<4x256xf32>
  %e1 = tensor.empty() : tensor<64x256xf32>
  %acc = linalg.fill ins(%zero : f32) outs(%e1 : tensor<64x256xf32>) -> tensor<64x256xf32>
  %gw = linalg.matmul
      indexing_maps = [affine_map<(n, k, m) -> (m, n)>, affine_map<(n, k, m) -> (m, k)>,
                       affine_map<(n, k, m) -> (n, k)>]
      ins(%gy, %xr : tensor<4x64xf32>, tensor<4x256xf32>)
      outs(%acc : tensor<64x256xf32>) -> tensor<64x256xf32>
  %dw = qcc.ste_grad clipped %gw, %w {threshold = 0.05 : f32} : tensor<64x256xf32>, !qcc.qtensor<64x256xq4_K> -> tensor<64x256xf32>
  return %loss, %dx, %dw : tensor<f32>, tensor<4x256xf32>, tensor<64x256xf32>
}
