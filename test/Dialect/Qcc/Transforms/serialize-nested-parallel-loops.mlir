// RUN: qcc-opt %s -qcc-serialize-nested-parallel-loops -split-input-file | FileCheck %s

// The outermost parallel loop stays; the one inside its reduction loop
// becomes an scf.for.
// CHECK-LABEL: func.func @nested
// CHECK: scf.parallel (%{{.+}}) =
// CHECK: scf.for
// CHECK-NEXT: scf.for
// CHECK-NOT: scf.parallel
func.func @nested(%a: memref<8x16xf32>, %c: memref<8x16xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c8 = arith.constant 8 : index
  %c16 = arith.constant 16 : index
  scf.parallel (%i) = (%c0) to (%c8) step (%c1) {
    scf.for %k = %c0 to %c16 step %c1 {
      scf.parallel (%j) = (%c0) to (%c16) step (%c1) {
        %x = memref.load %a[%i, %k] : memref<8x16xf32>
        %y = memref.load %c[%i, %j] : memref<8x16xf32>
        %z = arith.addf %x, %y : f32
        memref.store %z, %c[%i, %j] : memref<8x16xf32>
      }
    }
  }
  return
}

// -----

// A function called from a parallel body runs inside it: its own parallel
// loops become scf.for nests (2-D: two loops). The caller's loop stays.
// CHECK-LABEL: func.func private @callee
// CHECK-NOT: scf.parallel
// CHECK: scf.for
// CHECK-NEXT: scf.for
// CHECK-LABEL: func.func @caller
// CHECK: scf.parallel
// CHECK: call @callee
func.func private @callee(%c: memref<4x4xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  %zero = arith.constant 0.0 : f32
  scf.parallel (%i, %j) = (%c0, %c0) to (%c4, %c4) step (%c1, %c1) {
    memref.store %zero, %c[%i, %j] : memref<4x4xf32>
  }
  return
}
func.func @caller(%c: memref<4x4xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  scf.parallel (%i) = (%c0) to (%c4) step (%c1) {
    func.call @callee(%c) : (memref<4x4xf32>) -> ()
  }
  return
}

// -----

// A top-level parallel loop with nothing around it is left alone.
// CHECK-LABEL: func.func @alone
// CHECK: scf.parallel
// CHECK-NOT: scf.for
func.func @alone(%c: memref<4xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  %zero = arith.constant 0.0 : f32
  scf.parallel (%i) = (%c0) to (%c4) step (%c1) {
    memref.store %zero, %c[%i] : memref<4xf32>
  }
  return
}
