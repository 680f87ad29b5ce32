// RUN: qcc-opt %s -pass-pipeline='builtin.module(func.func(qcc-free-buffers-early))' -split-input-file | FileCheck %s

// Each buffer is freed right after the last op that uses it or a view of it.
// CHECK-LABEL: func.func @chain
// CHECK: %[[A:.+]] = memref.alloc() : memref<16xf32>
// CHECK-NEXT: call @k(%[[A]])
// CHECK-NEXT: %[[V:.+]] = memref.expand_shape %[[A]]
// CHECK-NEXT: call @k2(%[[V]])
// CHECK-NEXT: memref.dealloc %[[A]]
// CHECK-NEXT: %[[B:.+]] = memref.alloc() : memref<16xf32>
// CHECK-NEXT: call @k(%[[B]])
// CHECK-NEXT: memref.dealloc %[[B]]
// CHECK-NEXT: return
func.func private @k(memref<16xf32>)
func.func private @k2(memref<4x4xf32>)
func.func @chain() {
  %a = memref.alloc() : memref<16xf32>
  call @k(%a) : (memref<16xf32>) -> ()
  %v = memref.expand_shape %a [[0, 1]] output_shape [4, 4] : memref<16xf32> into memref<4x4xf32>
  call @k2(%v) : (memref<4x4xf32>) -> ()
  %b = memref.alloc() : memref<16xf32>
  call @k(%b) : (memref<16xf32>) -> ()
  memref.dealloc %a : memref<16xf32>
  memref.dealloc %b : memref<16xf32>
  return
}

// -----

// A use inside a loop keeps the buffer until after the loop; a buffer of
// the loop's body is left to the body's own dealloc; a function argument's
// dealloc does not move.
// CHECK-LABEL: func.func @loop
// CHECK: %[[A:.+]] = memref.alloc()
// CHECK: scf.for
// CHECK: call @k(%[[A]])
// CHECK: }
// CHECK-NEXT: memref.dealloc %[[A]]
// CHECK-NEXT: call @k(%{{.+}})
// CHECK-NEXT: memref.dealloc %arg0
func.func private @k(memref<16xf32>)
func.func @loop(%arg0: memref<16xf32>, %n: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %a = memref.alloc() : memref<16xf32>
  scf.for %i = %c0 to %n step %c1 {
    func.call @k(%a) : (memref<16xf32>) -> ()
  }
  call @k(%arg0) : (memref<16xf32>) -> ()
  memref.dealloc %a : memref<16xf32>
  memref.dealloc %arg0 : memref<16xf32>
  return
}
