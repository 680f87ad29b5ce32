// Every elementwise straight-through estimator, as the CUDA target gets
// them after qcc-lower-ste: identity (nothing to compute), clipped (needs
// the decoded weight: a dequant kernel), ewgs (elementwise on the residual).
func.func @identity(%g: tensor<16x512xf32>, %w: !qcc.qtensor<16x512xq4_K>) -> tensor<16x512xf32> {
  %d = qcc.ste_grad identity %g, %w : tensor<16x512xf32>, !qcc.qtensor<16x512xq4_K> -> tensor<16x512xf32>
  return %d : tensor<16x512xf32>
}
func.func @clipped(%g: tensor<16x512xf32>, %w: !qcc.qtensor<16x512xq4_K>, %r: tensor<16x512xf32>) -> tensor<16x512xf32> {
  %d = qcc.ste_grad clipped %g, %w residual(%r : tensor<16x512xf32>) {threshold = 0.02 : f32} : tensor<16x512xf32>, !qcc.qtensor<16x512xq4_K> -> tensor<16x512xf32>
  return %d : tensor<16x512xf32>
}
func.func @ewgs(%g: tensor<16x512xf32>, %w: !qcc.qtensor<16x512xq4_K>, %r: tensor<16x512xf32>) -> tensor<16x512xf32> {
  %d = qcc.ste_grad ewgs %g, %w residual(%r : tensor<16x512xf32>) {lambda = 40.0 : f32} : tensor<16x512xf32>, !qcc.qtensor<16x512xq4_K> -> tensor<16x512xf32>
  return %d : tensor<16x512xf32>
}
