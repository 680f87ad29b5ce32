// RUN: qcc-opt %s | qcc-opt | FileCheck %s
// RUN: qcc-opt %s --mlir-print-op-generic | qcc-opt | FileCheck %s
// Round trip of qcc.hadamard with and without seed, forward and inverse.

// CHECK-LABEL: func.func @rotations
// CHECK: %[[A:.+]] = qcc.hadamard %{{.+}} block 64 seed 7 : tensor<8x512xf32>
// CHECK: %[[B:.+]] = qcc.hadamard %[[A]] block 128 inverse : tensor<8x512xf32>
// CHECK: return %[[B]]
func.func @rotations(%x: tensor<8x512xf32>) -> tensor<8x512xf32> {
  %0 = qcc.hadamard %x block 64 seed 7 : tensor<8x512xf32>
  %1 = qcc.hadamard %0 block 128 inverse : tensor<8x512xf32>
  return %1 : tensor<8x512xf32>
}
