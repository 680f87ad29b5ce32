// One rank's step of a data-parallel job of 2: a gradient summed over the
// ranks, and rows gathered from both.
func.func @step(%g: tensor<4x64xf32> {qcc.name = "g", qcc.role = "input"},
                %x: tensor<4x64xf32> {qcc.name = "x", qcc.role = "input"})
    -> (tensor<4x64xf32>, tensor<8x64xf32>) {
  %0 = qcc.all_reduce %g ranks 2 : tensor<4x64xf32>
  %1 = qcc.all_gather %x ranks 2 : tensor<4x64xf32> -> tensor<8x64xf32>
  return %0, %1 : tensor<4x64xf32>, tensor<8x64xf32>
}
