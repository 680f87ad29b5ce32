// Collectives built for different rank counts in one entry.
func.func @step(%g: tensor<4x64xf32> {qcc.name = "g", qcc.role = "input"})
    -> (tensor<4x64xf32>, tensor<4x64xf32>) {
  %0 = qcc.all_reduce %g ranks 2 : tensor<4x64xf32>
  %1 = qcc.all_reduce %g ranks 4 : tensor<4x64xf32>
  return %0, %1 : tensor<4x64xf32>, tensor<4x64xf32>
}
