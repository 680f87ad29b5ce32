// RUN: qcc-opt %s -qcc-lower-to-loops -canonicalize -split-input-file | FileCheck %s

// qcc.weight_update works a tile of 128 rows (128 x 256 f32 = 128 KiB) at a
// time: the tile's gradient from the micro-GEMM, its decoded weights, the
// body per element, then the runtime's carry update of the tile's rows.
// No f32 buffer of the weight's shape (512 x 256) is ever allocated: only
// the bf16 carry and momentum, which are state.
// CHECK-LABEL: func.func @momentum
// CHECK-NOT: memref<512x256xf32>
// CHECK-NOT: memref<131072xf32>
// CHECK: scf.parallel (%[[R0:.+]]) = (%{{.+}}) to (%{{.+}}) step (%[[C128:.+]]) {
// CHECK: %[[ROWS:.+]] = arith.minsi %{{.+}}, %{{.+}} : index
// CHECK: %[[G:.+]] = memref.alloca() : memref<32768xf32>
// CHECK: call @qcc_rt_gemm_f32
// CHECK: %[[WT:.+]] = memref.alloca() : memref<32768xf32>
// CHECK: call @__qcc_decode_rows_q4_K_73728_256_32768(%{{.+}}, %[[R0]], %[[ROWS]], %{{.+}})
// CHECK: scf.for %[[I:.+]] = %{{.+}} to %[[ROWS]]
// CHECK: scf.for %[[J:.+]] =
// CHECK: memref.load %[[G]]
// CHECK: memref.load %[[WT]]
// CHECK: memref.store %{{.+}}, %[[G]]
// CHECK: memref.store %{{.+}}, %{{.+}} : memref<512x256xbf16>
// CHECK: call @qcc_rt_carry_update
// CHECK-NOT: memref<512x256xf32>
func.func @momentum(%gy: tensor<8x512xf32>, %x: tensor<8x256xf32>, %w: !qcc.qtensor<512x256xq4_K>,
                    %c: tensor<512x256xbf16>, %m: tensor<512x256xbf16>, %lr: f32)
    -> (!qcc.qtensor<512x256xq4_K>, tensor<512x256xbf16>, tensor<512x256xbf16>) {
  %w2, %c2, %m2 = qcc.weight_update %gy, %x, %w, %c ins(%m : tensor<512x256xbf16>)
      : tensor<8x512xf32>, tensor<8x256xf32>, !qcc.qtensor<512x256xq4_K>, tensor<512x256xbf16> -> tensor<512x256xbf16> {
  ^bb0(%g: f32, %wv: f32, %mi: bf16):
    %m32 = arith.extf %mi : bf16 to f32
    %mn = arith.addf %m32, %g : f32
    %decay = arith.mulf %wv, %lr : f32
    %step = arith.mulf %mn, %lr : f32
    %d = arith.addf %step, %decay : f32
    %mo = arith.truncf %mn : f32 to bf16
    qcc.yield %d, %mo : f32, bf16
  }
  return %w2, %c2, %m2 : !qcc.qtensor<512x256xq4_K>, tensor<512x256xbf16>, tensor<512x256xbf16>
}

// -----

// A body that ignores the weight decodes nothing.
// CHECK-LABEL: func.func @sgd
// CHECK-NOT: __qcc_decode_rows
// CHECK: call @qcc_rt_gemm_f32
// CHECK: call @qcc_rt_carry_update
func.func @sgd(%gy: tensor<8x512xf32>, %x: tensor<8x256xf32>, %w: !qcc.qtensor<512x256xq8_0>,
               %c: tensor<512x256xf32>, %lr: f32) -> (!qcc.qtensor<512x256xq8_0>, tensor<512x256xf32>) {
  %w2, %c2 = qcc.weight_update %gy, %x, %w, %c
      : tensor<8x512xf32>, tensor<8x256xf32>, !qcc.qtensor<512x256xq8_0>, tensor<512x256xf32> {
  ^bb0(%g: f32, %wv: f32):
    %d = arith.mulf %g, %lr : f32
    qcc.yield %d : f32
  }
  return %w2, %c2 : !qcc.qtensor<512x256xq8_0>, tensor<512x256xf32>
}

// -----

// A guard: one pass over gy and x adds v - v (0, or NaN for a non-finite v)
// to it, and the whole update runs only when the sum is finite.
// CHECK-LABEL: func.func @guarded
// CHECK: %[[L:.+]] = tensor.extract %{{.+}}[] : tensor<f32>
// CHECK: %[[S1:.+]] = scf.for {{.+}} iter_args(%[[A1:.+]] = %[[L]]) -> (f32)
// CHECK: arith.subf
// CHECK: %[[S2:.+]] = scf.for {{.+}} iter_args(%{{.+}} = %[[S1]]) -> (f32)
// CHECK: %[[ABS:.+]] = math.absf %[[S2]] : f32
// CHECK: %[[OK:.+]] = arith.cmpf olt, %[[ABS]], %{{.+}} : f32
// CHECK: scf.if %[[OK]] {
// CHECK: scf.parallel
// CHECK: call @qcc_rt_carry_update
func.func @guarded(%gy: tensor<8x512xf32>, %x: tensor<8x256xf32>, %w: !qcc.qtensor<512x256xq8_0>,
                   %c: tensor<512x256xf32>, %lr: f32, %loss: tensor<f32>) -> (!qcc.qtensor<512x256xq8_0>, tensor<512x256xf32>) {
  %w2, %c2 = qcc.weight_update %gy, %x, %w, %c guard(%loss : tensor<f32>)
      : tensor<8x512xf32>, tensor<8x256xf32>, !qcc.qtensor<512x256xq8_0>, tensor<512x256xf32> {
  ^bb0(%g: f32, %wv: f32):
    %d = arith.mulf %g, %lr : f32
    qcc.yield %d : f32
  }
  return %w2, %c2 : !qcc.qtensor<512x256xq8_0>, tensor<512x256xf32>
}
