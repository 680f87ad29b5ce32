// RUN: qcc-opt %s | qcc-opt | FileCheck %s
// RUN: qcc-opt %s --mlir-print-op-generic | qcc-opt | FileCheck %s
// Round trip of qcc.requant with and without importance weights.

// CHECK-LABEL: func.func @requant_plain
// CHECK-SAME: (%[[X:.+]]: tensor<16x512xf32>)
// CHECK: qcc.requant %[[X]] : tensor<16x512xf32> -> !qcc.qtensor<16x512xq4_K>
func.func @requant_plain(%x: tensor<16x512xf32>) -> !qcc.qtensor<16x512xq4_K> {
  %0 = qcc.requant %x : tensor<16x512xf32> -> !qcc.qtensor<16x512xq4_K>
  return %0 : !qcc.qtensor<16x512xq4_K>
}

// iq2_xxs needs an importance matrix: one weight per column.
// CHECK-LABEL: func.func @requant_importance
// CHECK-SAME: (%[[X:.+]]: tensor<16x512xbf16>, %[[I:.+]]: tensor<512xf32>)
// CHECK: qcc.requant %[[X]] importance(%[[I]] : tensor<512xf32>) : tensor<16x512xbf16> -> !qcc.qtensor<16x512xiq2_xxs>
func.func @requant_importance(%x: tensor<16x512xbf16>, %imp: tensor<512xf32>) -> !qcc.qtensor<16x512xiq2_xxs> {
  %0 = qcc.requant %x importance(%imp : tensor<512xf32>) : tensor<16x512xbf16> -> !qcc.qtensor<16x512xiq2_xxs>
  return %0 : !qcc.qtensor<16x512xiq2_xxs>
}
