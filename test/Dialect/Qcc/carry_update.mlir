// RUN: qcc-opt %s | qcc-opt | FileCheck %s
// RUN: qcc-opt %s --mlir-print-op-generic | qcc-opt | FileCheck %s
// Round trip of qcc.carry_update with a dense and a JL-compressed carry.

// Dense bf16 carry of the weight's shape.
// CHECK-LABEL: func.func @dense
// CHECK-SAME: (%[[W:.+]]: !qcc.qtensor<256x512xq4_K>, %[[C:.+]]: tensor<256x512xbf16>, %[[D:.+]]: tensor<256x512xf32>)
// CHECK: %[[W2:.+]], %[[C2:.+]] = qcc.carry_update %[[W]], %[[C]], %[[D]] : !qcc.qtensor<256x512xq4_K>, tensor<256x512xbf16>, tensor<256x512xf32>
// CHECK: return %[[W2]], %[[C2]]
func.func @dense(%w: !qcc.qtensor<256x512xq4_K>, %c: tensor<256x512xbf16>, %d: tensor<256x512xf32>)
    -> (!qcc.qtensor<256x512xq4_K>, tensor<256x512xbf16>) {
  %w2, %c2 = qcc.carry_update %w, %c, %d : !qcc.qtensor<256x512xq4_K>, tensor<256x512xbf16>, tensor<256x512xf32>
  return %w2, %c2 : !qcc.qtensor<256x512xq4_K>, tensor<256x512xbf16>
}

// JL sketch: 512 / 256 chunks per row, 16 dimensions each.
// CHECK-LABEL: func.func @jl
// CHECK: qcc.carry_update %{{.+}}, %{{.+}}, %{{.+}} {jl = #qcc.jl<dim = 16, chunk = 256, seed = 7>} : !qcc.qtensor<256x512xq4_K>, tensor<256x32xf32>, tensor<256x512xf32>
func.func @jl(%w: !qcc.qtensor<256x512xq4_K>, %c: tensor<256x32xf32>, %d: tensor<256x512xf32>)
    -> (!qcc.qtensor<256x512xq4_K>, tensor<256x32xf32>) {
  %w2, %c2 = qcc.carry_update %w, %c, %d {jl = #qcc.jl<dim = 16, chunk = 256, seed = 7>} : !qcc.qtensor<256x512xq4_K>, tensor<256x32xf32>, tensor<256x512xf32>
  return %w2, %c2 : !qcc.qtensor<256x512xq4_K>, tensor<256x32xf32>
}
