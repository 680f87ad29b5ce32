// RUN: qcc-opt %s | qcc-opt | FileCheck %s
// RUN: qcc-opt %s --mlir-print-op-generic | qcc-opt | FileCheck %s
// Round trip of qcc.gather with i32 and i64 ids, static and dynamic counts.

// CHECK-LABEL: func.func @gather_i32
// CHECK-SAME: (%[[T:.+]]: !qcc.qtensor<262144x640xq8_0>, %[[I:.+]]: tensor<512xi32>)
// CHECK: %[[R:.+]] = qcc.gather %[[T]][%[[I]]] : !qcc.qtensor<262144x640xq8_0>, tensor<512xi32> -> tensor<512x640xf32>
// CHECK: return %[[R]]
func.func @gather_i32(%t: !qcc.qtensor<262144x640xq8_0>, %ids: tensor<512xi32>) -> tensor<512x640xf32> {
  %0 = qcc.gather %t[%ids] : !qcc.qtensor<262144x640xq8_0>, tensor<512xi32> -> tensor<512x640xf32>
  return %0 : tensor<512x640xf32>
}

// CHECK-LABEL: func.func @gather_dynamic
// CHECK: qcc.gather %{{.+}}[%{{.+}}] : !qcc.qtensor<100x256xq4_K>, tensor<?xi64> -> tensor<?x256xf32>
func.func @gather_dynamic(%t: !qcc.qtensor<100x256xq4_K>, %ids: tensor<?xi64>) -> tensor<?x256xf32> {
  %0 = qcc.gather %t[%ids] : !qcc.qtensor<100x256xq4_K>, tensor<?xi64> -> tensor<?x256xf32>
  return %0 : tensor<?x256xf32>
}
