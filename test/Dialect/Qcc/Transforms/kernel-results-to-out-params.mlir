// RUN: qcc-opt %s -qcc-kernel-results-to-out-params | FileCheck %s
// RUN: qcc-opt %s -qcc-kernel-results-to-out-params -buffer-results-to-out-params="hoist-static-allocs modify-public-functions" | FileCheck %s --check-prefix=BOTH

// Only kernels (qcc.kernel) and their calls change: the kernel writes its
// result into an out-parameter, the call site allocates it. Other functions
// keep their results for buffer-results-to-out-params.
// CHECK-LABEL: func.func @step
// CHECK-SAME: (%[[X:.+]]: memref<4xf32>) -> (memref<4xf32>, memref<4xf32>)
// CHECK: %[[A:.+]] = memref.alloc() : memref<4xf32>
// CHECK: call @kernel(%[[X]], %[[A]]) : (memref<4xf32>, memref<4xf32>) -> ()
// CHECK: %[[H:.+]] = call @helper(%[[X]]) : (memref<4xf32>) -> memref<4xf32>
// CHECK: return %[[A]], %[[H]]
// CHECK: func.func private @kernel(%[[KX:.+]]: memref<4xf32>, %[[OUT:.+]]: memref<4xf32>)
// CHECK-NOT: memref.alloc
// CHECK: memref.copy %[[KX]], %[[OUT]]
// CHECK-NEXT: return
// CHECK: func.func private @helper({{.*}}) -> memref<4xf32>

// Then, in the caller, the kernel's buffer is the caller's out-parameter
// (no copy), while the helper's result is copied into its own.
// BOTH-LABEL: func.func @step
// BOTH-SAME: (%[[X:.+]]: memref<4xf32>, %[[R0:.+]]: memref<4xf32>, %[[R1:.+]]: memref<4xf32>)
// BOTH: call @kernel(%[[X]], %[[R0]])
// BOTH: %[[H:.+]] = memref.alloc() : memref<4xf32>
// BOTH: call @helper(%[[X]], %[[H]])
// BOTH: memref.copy %[[H]], %[[R1]]
// BOTH-NOT: memref.copy
// BOTH: return
func.func @step(%x: memref<4xf32>) -> (memref<4xf32>, memref<4xf32>) {
  %0 = call @kernel(%x) : (memref<4xf32>) -> memref<4xf32>
  %1 = call @helper(%x) : (memref<4xf32>) -> memref<4xf32>
  return %0, %1 : memref<4xf32>, memref<4xf32>
}
func.func private @kernel(%x: memref<4xf32>) -> memref<4xf32> attributes {qcc.kernel} {
  %a = memref.alloc() : memref<4xf32>
  memref.copy %x, %a : memref<4xf32> to memref<4xf32>
  return %a : memref<4xf32>
}
func.func private @helper(%x: memref<4xf32>) -> memref<4xf32> {
  %a = memref.alloc() : memref<4xf32>
  memref.copy %x, %a : memref<4xf32> to memref<4xf32>
  return %a : memref<4xf32>
}
