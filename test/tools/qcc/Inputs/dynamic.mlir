// Entry points need static shapes: the runtime allocates every buffer from
// the manifest.
func.func @dyn(%x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  return %x : tensor<?x64xf32>
}
