// One SGD step of the demo model's blk.0.ffn_up.weight (q4_K, 256 -> 512),
// trained through its quantized blocks on a mean-squared-error regression:
//   y = x · Ŵᵀ,  L = Σ (y - t)² / (2B),  dL/dy = (y - t) / B,
//   dL/dŴ = (dL/dy)ᵀ · x,  delta = -lr · ste(dL/dŴ),
//   (W, carry) <- carry_update(W, carry, delta).
// Results named like arguments replace them for the next step (qcc-run).
func.func @train_step(
    %w: !qcc.qtensor<512x256xq4_K> {qcc.name = "blk.0.ffn_up.weight"},
    %carry: tensor<512x256xbf16> {qcc.name = "carry", qcc.role = "state"},
    %x: tensor<8x256xf32> {qcc.name = "x"},
    %t: tensor<8x512xf32> {qcc.name = "target"},
    %lr: f32 {qcc.name = "lr"})
    -> (!qcc.qtensor<512x256xq4_K> {qcc.name = "blk.0.ffn_up.weight"},
        tensor<512x256xbf16> {qcc.name = "carry", qcc.role = "state"},
        tensor<f32> {qcc.name = "loss"}) {
  %zero = arith.constant 0.0 : f32
  %inv_b = arith.constant 0.125 : f32
  %half_inv_b = arith.constant 0.0625 : f32

  // Forward (fused into qcc.qmatmul by the pipeline).
  %wf = qcc.dequant %w : !qcc.qtensor<512x256xq4_K> -> tensor<512x256xf32>
  %e0 = tensor.empty() : tensor<8x512xf32>
  %y0 = linalg.fill ins(%zero : f32) outs(%e0 : tensor<8x512xf32>) -> tensor<8x512xf32>
  %y = linalg.matmul indexing_maps = [affine_map<(m, n, k) -> (m, k)>,
                                      affine_map<(m, n, k) -> (n, k)>,
                                      affine_map<(m, n, k) -> (m, n)>]
      ins(%x, %wf : tensor<8x256xf32>, tensor<512x256xf32>)
      outs(%y0 : tensor<8x512xf32>) -> tensor<8x512xf32>

  // Loss and dL/dy.
  %l0 = tensor.empty() : tensor<f32>
  %lacc = linalg.fill ins(%zero : f32) outs(%l0 : tensor<f32>) -> tensor<f32>
  %loss = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>,
                       affine_map<(i, j) -> ()>],
      iterator_types = ["reduction", "reduction"]}
      ins(%y, %t : tensor<8x512xf32>, tensor<8x512xf32>) outs(%lacc : tensor<f32>) {
    ^bb0(%a: f32, %b: f32, %acc: f32):
      %d = arith.subf %a, %b : f32
      %sq = arith.mulf %d, %d : f32
      %s = arith.mulf %sq, %half_inv_b : f32
      %r = arith.addf %acc, %s : f32
      linalg.yield %r : f32
  } -> tensor<f32>
  %gy = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>,
                       affine_map<(i, j) -> (i, j)>],
      iterator_types = ["parallel", "parallel"]}
      ins(%y, %t : tensor<8x512xf32>, tensor<8x512xf32>) outs(%e0 : tensor<8x512xf32>) {
    ^bb0(%a: f32, %b: f32, %o: f32):
      %d = arith.subf %a, %b : f32
      %s = arith.mulf %d, %inv_b : f32
      linalg.yield %s : f32
  } -> tensor<8x512xf32>

  // dL/dŴ = gyᵀ · x: [512, 8] · [8, 256].
  %e1 = tensor.empty() : tensor<512x256xf32>
  %g0 = linalg.fill ins(%zero : f32) outs(%e1 : tensor<512x256xf32>) -> tensor<512x256xf32>
  %gw = linalg.matmul indexing_maps = [affine_map<(n, k, m) -> (m, n)>,
                                       affine_map<(n, k, m) -> (m, k)>,
                                       affine_map<(n, k, m) -> (n, k)>]
      ins(%gy, %x : tensor<8x512xf32>, tensor<8x256xf32>)
      outs(%g0 : tensor<512x256xf32>) -> tensor<512x256xf32>

  // Straight-through estimate, SGD step, carry update.
  %g = qcc.ste_grad identity %gw, %w : tensor<512x256xf32>, !qcc.qtensor<512x256xq4_K> -> tensor<512x256xf32>
  %neg_lr = arith.negf %lr : f32
  %delta = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>],
      iterator_types = ["parallel", "parallel"]}
      ins(%g : tensor<512x256xf32>) outs(%e1 : tensor<512x256xf32>) {
    ^bb0(%a: f32, %o: f32):
      %s = arith.mulf %a, %neg_lr : f32
      linalg.yield %s : f32
  } -> tensor<512x256xf32>
  %w2, %c2 = qcc.carry_update %w, %carry, %delta
      : !qcc.qtensor<512x256xq4_K>, tensor<512x256xbf16>, tensor<512x256xf32>
  return %w2, %c2, %loss : !qcc.qtensor<512x256xq4_K>, tensor<512x256xbf16>, tensor<f32>
}
