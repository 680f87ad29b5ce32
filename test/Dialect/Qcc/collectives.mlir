// RUN: qcc-opt %s | qcc-opt | FileCheck %s
// RUN: qcc-opt %s --mlir-print-op-generic | qcc-opt | FileCheck %s
// RUN: qcc-opt %s --cse --canonicalize | FileCheck %s --check-prefix=KEEP
// Round trip of qcc.all_reduce and qcc.all_gather; being calls that every
// rank makes in the same order, two identical ones stay two and an unused
// one stays (KEEP).

// CHECK-LABEL: func.func @collectives
// CHECK: %[[R:.+]] = qcc.all_reduce %{{.+}} ranks 2 : tensor<16x64xf32>
// CHECK: %[[G:.+]] = qcc.all_gather %{{.+}} ranks 2 : tensor<4x64xbf16> -> tensor<8x64xbf16>
// CHECK: return %[[R]], %[[G]]
// KEEP-LABEL: func.func @collectives
// KEEP-COUNT-3: qcc.all_reduce
// KEEP: qcc.all_gather
func.func @collectives(%g: tensor<16x64xf32>, %x: tensor<4x64xbf16>)
    -> (tensor<16x64xf32>, tensor<8x64xbf16>) {
  %0 = qcc.all_reduce %g ranks 2 : tensor<16x64xf32>
  %1 = qcc.all_reduce %g ranks 2 : tensor<16x64xf32>
  %2 = qcc.all_reduce %g ranks 2 : tensor<16x64xf32>
  %3 = qcc.all_gather %x ranks 2 : tensor<4x64xbf16> -> tensor<8x64xbf16>
  return %0, %3 : tensor<16x64xf32>, tensor<8x64xbf16>
}
