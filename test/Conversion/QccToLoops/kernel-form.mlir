// RUN: qcc-opt %s --qcc-lower-to-loops=kernel-form --split-input-file --verify-diagnostics | FileCheck %s

// Forward qmatmul in the kernel form: a grid over (32-column output tiles,
// 32-row activation tiles, batches) of 256-thread blocks; per step of 256
// along K the threads decode W blocks into the shared tile (rows padded to
// 257 floats), then each output adds its products; W is never expanded.
// CHECK-LABEL: func.func @fwd
// CHECK-SAME: %[[W:.+]]: memref<40x288xi8>
// CHECK: %[[OUT:.+]] = memref.alloc() : memref<5x40xf32>
// CHECK: scf.parallel (%{{.+}}, %{{.+}}, %{{.+}}) =
// CHECK:   %[[WS:.+]] = memref.alloca() : memref<8224xf32>
// CHECK:   %[[ACC:.+]] = memref.alloca() : memref<1024xf32>
// CHECK:   scf.parallel
// CHECK:     memref.store %{{.+}}, %[[ACC]]
// CHECK:   } {qcc.thread_phase = 256 : i64}
// CHECK:   scf.for %{{.+}} = %{{.+}} to %c512 step %c256 {
// CHECK:     scf.parallel
// CHECK:       scf.if
// CHECK:         memref.load %{{.+}} : memref<11520xi8>
// CHECK:         memref.store %{{.+}}, %[[WS]]
// CHECK:     } {qcc.thread_phase = 256 : i64}
// CHECK:     scf.parallel
// CHECK:       scf.for {{.+}} iter_args
// CHECK:         memref.load %[[WS]]
// CHECK:         arith.mulf
// CHECK:         arith.addf
// CHECK:       memref.store %{{.+}}, %[[ACC]]
// CHECK:     } {qcc.thread_phase = 256 : i64}
// CHECK:   }
// CHECK:   scf.parallel
// CHECK:     memref.store %{{.+}}, %[[OUT]]
// CHECK:   } {qcc.thread_phase = 256 : i64}
// CHECK: } {qcc.kernel_threads = 256 : i64}
// CHECK-NOT: memref<40x512xf32>
// CHECK-NOT: call
func.func @fwd(%x: tensor<5x512xf32>, %w: !qcc.qtensor<40x512xq4_K>) -> tensor<5x40xf32> {
  %y = qcc.qmatmul fwd %x, %w : tensor<5x512xf32>, !qcc.qtensor<40x512xq4_K> -> tensor<5x40xf32>
  return %y : tensor<5x40xf32>
}

// -----

// Backward: tiles of 256 output columns (whole q4_K blocks) and 8 rows,
// 32 W rows per step (32 x 256 floats of shared tile).
// CHECK-LABEL: func.func @bwd
// CHECK: scf.parallel
// CHECK:   memref.alloca() : memref<8192xf32>
// CHECK:   memref.alloca() : memref<2048xf32>
// CHECK:   scf.for %{{.+}} = %{{.+}} to %c40 step %c32
// CHECK: } {qcc.kernel_threads = 256 : i64}
func.func @bwd(%g: tensor<5x40xf32>, %w: !qcc.qtensor<40x512xq4_K>) -> tensor<5x512xf32> {
  %y = qcc.qmatmul bwd %g, %w : tensor<5x40xf32>, !qcc.qtensor<40x512xq4_K> -> tensor<5x512xf32>
  return %y : tensor<5x512xf32>
}

// -----

// dequant: a block per phase iteration, 256 per grid block.
// CHECK-LABEL: func.func @deq
// CHECK: %[[N:.+]] = arith.ceildivui %{{.+}}, %c256
// CHECK: scf.parallel (%{{.+}}) = (%{{.+}}) to (%[[N]])
// CHECK:   scf.parallel
// CHECK:     scf.if
// CHECK:   } {qcc.thread_phase = 256 : i64}
// CHECK: } {qcc.kernel_threads = 256 : i64}
func.func @deq(%w: !qcc.qtensor<40x512xq8_0>) -> tensor<40x512xf32> {
  %y = qcc.dequant %w : !qcc.qtensor<40x512xq8_0> -> tensor<40x512xf32>
  return %y : tensor<40x512xf32>
}

// -----

// carry_update: a block per phase iteration, re-encoded by the runtime's
// block encoder (linked as device bitcode on the GPU).
// CHECK-LABEL: func.func @carry
// CHECK: scf.parallel
// CHECK:   scf.parallel
// CHECK:     memref.alloca() : memref<34xi8>
// CHECK:     func.call @qcc_rt_encode_block(%{{.+}}, %{{.+}}, %{{.+}}) : (i32, !llvm.ptr, !llvm.ptr) -> i32
// CHECK:   } {qcc.thread_phase = 256 : i64}
// CHECK: } {qcc.kernel_threads = 256 : i64}
func.func @carry(%w: !qcc.qtensor<4x32xq8_0>, %c: tensor<4x32xf32>, %d: tensor<4x32xf32>) -> (!qcc.qtensor<4x32xq8_0>, tensor<4x32xf32>) {
  %0, %1 = qcc.carry_update %w, %c, %d : !qcc.qtensor<4x32xq8_0>, tensor<4x32xf32>, tensor<4x32xf32>
  return %0, %1 : !qcc.qtensor<4x32xq8_0>, tensor<4x32xf32>
}
