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

// A kernel that returns one of its arguments (an op bufferized in place)
// loses that result: the call's users take the operand, and there is no
// out-parameter to copy it into. Its other results still become ones.
// CHECK-LABEL: func.func @in_place
// CHECK-SAME: (%[[X:.+]]: memref<4xf32>) -> (memref<4xf32>, memref<4xf32>)
// CHECK: %[[B:.+]] = memref.alloc() : memref<4xf32>
// CHECK: call @scale_and_copy(%[[X]], %[[B]]) : (memref<4xf32>, memref<4xf32>) -> ()
// CHECK: return %[[X]], %[[B]]
// CHECK: func.func private @scale_and_copy(%[[SX:.+]]: memref<4xf32>, %[[SO:.+]]: memref<4xf32>)
// CHECK: memref.store
// CHECK-NEXT: memref.copy %[[SX]], %[[SO]]
// CHECK-NEXT: return
// CHECK-NOT: memref.copy
func.func @in_place(%x: memref<4xf32>) -> (memref<4xf32>, memref<4xf32>) {
  %0:2 = call @scale_and_copy(%x) : (memref<4xf32>) -> (memref<4xf32>, memref<4xf32>)
  return %0#0, %0#1 : memref<4xf32>, memref<4xf32>
}
func.func private @scale_and_copy(%x: memref<4xf32>) -> (memref<4xf32>, memref<4xf32>) attributes {qcc.kernel} {
  %c0 = arith.constant 0 : index
  %two = arith.constant 2.0 : f32
  memref.store %two, %x[%c0] : memref<4xf32>
  %a = memref.alloc() : memref<4xf32>
  memref.copy %x, %a : memref<4xf32> to memref<4xf32>
  return %x, %a : memref<4xf32>, memref<4xf32>
}
