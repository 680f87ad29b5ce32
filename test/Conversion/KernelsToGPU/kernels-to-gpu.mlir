// RUN: qcc-opt %s --qcc-kernels-to-gpu --split-input-file --verify-diagnostics | FileCheck %s

// A kernel-form grid: one block per iteration, its alloca in workgroup
// memory, each phase a strided loop of the thread followed by a barrier.
// CHECK-LABEL: func.func @grid
// CHECK: %[[T:.+]] = arith.constant 128 : index
// CHECK: gpu.launch blocks(%[[B:.+]], %{{.+}}, %{{.+}}) in (%{{.+}} = %c4, %{{.+}}) threads(%[[TID:[^,]+]], %{{.+}}, %{{.+}}) in (%{{.+}} = %[[T]], {{.+}}) workgroup(%[[TILE:.+]] : memref<256xf32, #gpu.address_space<workgroup>>)
// CHECK: arith.muli %[[B]], %c256
// CHECK: scf.for %[[I:.+]] = %{{.+}} to %c256 step %{{.+}} {
// CHECK:   memref.store %{{.+}}, %[[TILE]][%[[I]]] : memref<256xf32, #gpu.address_space<workgroup>>
// CHECK: }
// CHECK-NEXT: gpu.barrier
// CHECK: scf.for
// CHECK:   memref.load %[[TILE]]
// CHECK: }
// CHECK-NEXT: gpu.barrier
// CHECK-NEXT: gpu.terminator
// CHECK-NOT: scf.parallel
func.func @grid(%a: memref<1024xf32>, %b: memref<1024xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  %c256 = arith.constant 256 : index
  scf.parallel (%blk) = (%c0) to (%c4) step (%c1) {
    %tile = memref.alloca() : memref<256xf32>
    %base = arith.muli %blk, %c256 : index
    scf.parallel (%t) = (%c0) to (%c256) step (%c1) {
      %i = arith.addi %base, %t : index
      %v = memref.load %a[%i] : memref<1024xf32>
      memref.store %v, %tile[%t] : memref<256xf32>
      scf.reduce
    } {qcc.thread_phase = 128 : i64}
    scf.parallel (%t) = (%c0) to (%c256) step (%c1) {
      %r = arith.subi %c256, %t : index
      %j = arith.subi %r, %c1 : index
      %v = memref.load %tile[%j] : memref<256xf32>
      %i = arith.addi %base, %t : index
      memref.store %v, %b[%i] : memref<1024xf32>
      scf.reduce
    } {qcc.thread_phase = 128 : i64}
    scf.reduce
  } {qcc.kernel_threads = 128 : i64}
  return
}

// -----

// Any other parallel loop: linearized, one iteration per thread, guarded.
// CHECK-LABEL: func.func @flat
// CHECK: %[[TOTAL:.+]] = arith.muli %{{.+}}, %{{.+}} : index
// CHECK: %[[BLOCKS:.+]] = arith.ceildivui %[[TOTAL]], %c256
// CHECK: gpu.launch blocks(%[[B:[^,]+]], {{.+}}) in (%{{.+}} = %[[BLOCKS]], {{.+}}) threads(%[[TID:[^,]+]], {{.+}}) in (%{{.+}} = %c256,
// CHECK:   %[[L0:.+]] = arith.muli %[[B]], %c256
// CHECK:   %[[L:.+]] = arith.addi %[[L0]], %[[TID]]
// CHECK:   %[[IN:.+]] = arith.cmpi ult, %[[L]], %[[TOTAL]]
// CHECK:   scf.if %[[IN]] {
// CHECK:     arith.remui %[[L]]
// CHECK:     arith.divui %[[L]]
// CHECK:     memref.load
// CHECK:     arith.mulf
// CHECK:     memref.store
func.func @flat(%a: memref<3x100xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c3 = arith.constant 3 : index
  %c100 = arith.constant 100 : index
  scf.parallel (%i, %j) = (%c0, %c0) to (%c3, %c100) step (%c1, %c1) {
    %v = memref.load %a[%i, %j] : memref<3x100xf32>
    %w = arith.mulf %v, %v : f32
    memref.store %w, %a[%i, %j] : memref<3x100xf32>
    scf.reduce
  }
  return
}

// -----

// Host buffers become device buffers; a copy becomes a kernel; a host loop
// over memory becomes a single-thread kernel; the scalar the host reads and
// writes back crosses by copies through a host slot.
// CHECK-LABEL: func.func @host
// CHECK: %[[TMP:.+]] = gpu.alloc () : memref<4xf32>
// CHECK: gpu.launch
// CHECK:   memref.load %{{.+}}[%{{.+}}] : memref<4xf32>
// CHECK:   memref.store %{{.+}}, %[[TMP]]
// CHECK: %[[IN:.+]] = memref.alloca() {qcc.host_slot} : memref<f32>
// CHECK: gpu.memcpy %[[IN]], %[[A:.+]] : memref<f32>, memref<f32>
// CHECK: %[[V:.+]] = memref.load %[[IN]][] : memref<f32>
// CHECK: %[[W:.+]] = arith.addf %[[V]], %[[V]]
// CHECK: %[[OUT:.+]] = memref.alloca() {qcc.host_slot} : memref<f32>
// CHECK: memref.store %[[W]], %[[OUT]][] : memref<f32>
// CHECK: gpu.memcpy %[[A]], %[[OUT]] : memref<f32>, memref<f32>
// CHECK: gpu.launch
// CHECK:   scf.for
// CHECK:     memref.load %[[TMP]]
// CHECK: gpu.dealloc %[[TMP]]
// CHECK-NOT: memref.copy
// CHECK-NOT: memref.alloc()
func.func @host(%a: memref<f32>, %b: memref<4xf32>) {
  %tmp = memref.alloc() : memref<4xf32>
  memref.copy %b, %tmp : memref<4xf32> to memref<4xf32>
  %v = memref.load %a[] : memref<f32>
  %w = arith.addf %v, %v : f32
  memref.store %w, %a[] : memref<f32>
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  scf.for %i = %c0 to %c4 step %c1 {
    %x = memref.load %tmp[%i] : memref<4xf32>
    memref.store %x, %b[%i] : memref<4xf32>
  }
  memref.dealloc %tmp : memref<4xf32>
  return
}

// -----

// The host cannot branch on a value in a device buffer larger than a
// scalar (only one-element buffers are copied to the host).
func.func @host_reads(%a: memref<4xf32>, %b: memref<f32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  // expected-note @below {{read here}}
  %v = memref.load %a[%c0] : memref<4xf32>
  %zero = arith.constant 0.0 : f32
  scf.parallel (%i) = (%c0) to (%c1) step (%c1) {
    // expected-error @below {{uses a value read from a buffer in host code}}
    %s = arith.maximumf %v, %zero : f32
    memref.store %s, %b[] : memref<f32>
    scf.reduce
  }
  return
}
