// One SGD step of a linear layer y = x · Wᵀ trained through its q4_K
// weights, with a bf16 carry buffer and a mean-squared-error loss:
//   L = 1/(2·B) · Σ (y - t)²,  dL/dy = (y - t) / B,  dL/dŴ = (dL/dy)ᵀ · x.
// `make demo` verifies and canonicalizes it with qcc-opt; the compiler core
// (qcc-fuse-dequant-into-matmul, qcc-lower-to-cpu) turns it into step.so.
func.func @train_step(%w: !qcc.qtensor<256x512xq4_K>, %carry: tensor<256x512xbf16>,
                      %x: tensor<8x512xf32>, %t: tensor<8x256xf32>, %lr: f32)
    -> (!qcc.qtensor<256x512xq4_K>, tensor<256x512xbf16>, tensor<8x256xf32>) {
  // Incoherence processing: rotate activations; the rotation and its
  // inverse cancel (the canonicalizer removes both).
  %xr = qcc.hadamard %x block 64 seed 17 : tensor<8x512xf32>
  %xb = qcc.hadamard %xr block 64 seed 17 inverse : tensor<8x512xf32>

  // Forward: y = x · dequant(W)ᵀ, decoded tile by tile.
  %y = qcc.qmatmul fwd %xb, %w : tensor<8x512xf32>, !qcc.qtensor<256x512xq4_K> -> tensor<8x256xf32>

  // dL/dy = (y - t) / B.
  %e0 = tensor.empty() : tensor<8x256xf32>
  %inv_b = arith.constant 0.125 : f32
  %gy = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>,
                       affine_map<(i, j) -> (i, j)>],
      iterator_types = ["parallel", "parallel"]}
      ins(%y, %t : tensor<8x256xf32>, tensor<8x256xf32>) outs(%e0 : tensor<8x256xf32>) {
    ^bb0(%a: f32, %b: f32, %o: f32):
      %d = arith.subf %a, %b : f32
      %s = arith.mulf %d, %inv_b : f32
      linalg.yield %s : f32
  } -> tensor<8x256xf32>

  // dL/dŴ = gyᵀ · x  ([256, 8] · [8, 512]).
  %zero = arith.constant 0.0 : f32
  %e1 = tensor.empty() : tensor<256x512xf32>
  %acc = linalg.fill ins(%zero : f32) outs(%e1 : tensor<256x512xf32>) -> tensor<256x512xf32>
  %gw = linalg.matmul
      indexing_maps = [affine_map<(n, k, m) -> (m, n)>, affine_map<(n, k, m) -> (m, k)>,
                       affine_map<(n, k, m) -> (n, k)>]
      ins(%gy, %xb : tensor<8x256xf32>, tensor<8x512xf32>)
      outs(%acc : tensor<256x512xf32>) -> tensor<256x512xf32>

  // Straight-through estimate, then the SGD update -lr · g.
  %g = qcc.ste_grad identity %gw, %w : tensor<256x512xf32>, !qcc.qtensor<256x512xq4_K> -> tensor<256x512xf32>
  %e2 = tensor.empty() : tensor<256x512xf32>
  %neg_lr = arith.negf %lr : f32
  %delta = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>],
      iterator_types = ["parallel", "parallel"]}
      ins(%g : tensor<256x512xf32>) outs(%e2 : tensor<256x512xf32>) {
    ^bb0(%a: f32, %o: f32):
      %s = arith.mulf %a, %neg_lr : f32
      linalg.yield %s : f32
  } -> tensor<256x512xf32>

  // Sub-step updates collect in the carry until they move a code.
  %w2, %c2 = qcc.carry_update %w, %carry, %delta
      : !qcc.qtensor<256x512xq4_K>, tensor<256x512xbf16>, tensor<256x512xf32>
  return %w2, %c2, %y : !qcc.qtensor<256x512xq4_K>, tensor<256x512xbf16>, tensor<8x256xf32>
}
