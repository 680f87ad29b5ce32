// RUN: qcc-opt %s -qcc-lower-to-loops | FileCheck %s
// RUN: qcc-opt %s -qcc-lower-to-loops | FileCheck %s --check-prefix=NOQCC
// The K-quant block decoders (q2_K..q6_K) that -qcc-lower-to-loops emits for
// qcc.dequant: structure only; bit-exactness against the runtime's
// Decode.cpp is test/python/test_emitted_decode_bitexact.py.

// Nothing of the qcc dialect is left (types or ops).
// NOQCC-NOT: qcc.

// q2_K: f16 d and dmin at bytes 80/82, then the 16 sub-blocks as one scf.for
// (not unrolled) with the (d * sc, dmin * m) products once per sub-block and
// an inner scf.for over 16 elements computing (d * sc) * q - (dmin * m).
// CHECK-LABEL: func.func @q2_K(
// CHECK-SAME: memref<2x84xi8>
// CHECK: scf.parallel
// CHECK: %[[DH:.*]] = arith.bitcast %{{.*}} : i16 to f16
// CHECK: %[[D:.*]] = arith.extf %[[DH]] : f16 to f32
// CHECK: %[[MH:.*]] = arith.bitcast %{{.*}} : i16 to f16
// CHECK: %[[DMIN:.*]] = arith.extf %[[MH]] : f16 to f32
// CHECK: scf.for
// CHECK-DAG: %[[DL:.*]] = arith.mulf %[[D]], %{{.*}} : f32
// CHECK-DAG: %[[ML:.*]] = arith.mulf %[[DMIN]], %{{.*}} : f32
// CHECK: scf.for
// CHECK: %[[P:.*]] = arith.mulf %[[DL]], %{{.*}} : f32
// CHECK: %[[Y:.*]] = arith.subf %[[P]], %[[ML]] : f32
// CHECK: memref.store %[[Y]], %{{.*}} : memref<512xf32>
// CHECK-NOT: scf.for
// CHECK: return
func.func @q2_K(%w: !qcc.qtensor<2x256xq2_K>) -> tensor<2x256xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<2x256xq2_K> -> tensor<2x256xf32>
  return %0 : tensor<2x256xf32>
}

// q3_K: one f16 scale (byte 108); per sub-block the signed 6-bit scale
// (minus 32) times d; per element a clear hmask bit subtracts 4 (a select
// between 0 and 4) and y = (d * sc) * q, with no min term.
// CHECK-LABEL: func.func @q3_K(
// CHECK-SAME: memref<2x110xi8>
// CHECK: %[[DH:.*]] = arith.bitcast %{{.*}} : i16 to f16
// CHECK: %[[D:.*]] = arith.extf %[[DH]] : f16 to f32
// CHECK: scf.for
// CHECK: %[[SC:.*]] = arith.subi %{{.*}}, %c32_i32{{[_0-9]*}} : i32
// CHECK: %[[SCF:.*]] = arith.sitofp %[[SC]] : i32 to f32
// CHECK: %[[DL:.*]] = arith.mulf %[[D]], %[[SCF]] : f32
// CHECK: scf.for
// CHECK: %[[HB:.*]] = arith.select %{{.*}}, %{{.*}}, %{{.*}} : i32
// CHECK: %[[Q:.*]] = arith.subi %{{.*}}, %[[HB]] : i32
// CHECK: %[[QF:.*]] = arith.sitofp %[[Q]] : i32 to f32
// CHECK: %[[Y:.*]] = arith.mulf %[[DL]], %[[QF]] : f32
// CHECK: memref.store %[[Y]]
// CHECK-NOT: arith.subf
// CHECK: return
func.func @q3_K(%w: !qcc.qtensor<2x256xq3_K>) -> tensor<2x256xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<2x256xq3_K> -> tensor<2x256xf32>
  return %0 : tensor<2x256xf32>
}

// q4_K: the 4 chunks of 64 are unrolled (constant scale offsets), each an
// scf.for over 32 byte pairs storing a low and a high nibble element.
// CHECK-LABEL: func.func @q4_K(
// CHECK-SAME: memref<2x144xi8>
// CHECK-COUNT-2: arith.bitcast %{{.*}} : i16 to f16
// CHECK-COUNT-4: scf.for %{{.*}} = %{{.*}} to %c32{{.*}} step
// CHECK-NOT: scf.for
// CHECK: return
func.func @q4_K(%w: !qcc.qtensor<2x256xq4_K>) -> tensor<2x256xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<2x256xq4_K> -> tensor<2x256xf32>
  return %0 : tensor<2x256xf32>
}

// q5_K: as q4_K, plus the fifth bit from qh.
// CHECK-LABEL: func.func @q5_K(
// CHECK-SAME: memref<2x176xi8>
// CHECK-COUNT-2: arith.bitcast %{{.*}} : i16 to f16
// CHECK-COUNT-4: scf.for %{{.*}} = %{{.*}} to %c32{{.*}} step
// CHECK-NOT: scf.for
// CHECK: return
func.func @q5_K(%w: !qcc.qtensor<2x256xq5_K>) -> tensor<2x256xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<2x256xq5_K> -> tensor<2x256xf32>
  return %0 : tensor<2x256xf32>
}

// q6_K: f16 d at byte 208, signed 8-bit scales (extsi), y = (d * sc) * q.
// CHECK-LABEL: func.func @q6_K(
// CHECK-SAME: memref<2x210xi8>
// CHECK: %[[DH:.*]] = arith.bitcast %{{.*}} : i16 to f16
// CHECK: %[[D:.*]] = arith.extf %[[DH]] : f16 to f32
// CHECK: scf.for
// CHECK: %[[SC:.*]] = arith.extsi %{{.*}} : i8 to i32
// CHECK: %[[SCF:.*]] = arith.sitofp %[[SC]] : i32 to f32
// CHECK: %[[DS:.*]] = arith.mulf %[[D]], %[[SCF]] : f32
// CHECK: arith.mulf %[[DS]], %{{.*}} : f32
// CHECK: return
func.func @q6_K(%w: !qcc.qtensor<2x256xq6_K>) -> tensor<2x256xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<2x256xq6_K> -> tensor<2x256xf32>
  return %0 : tensor<2x256xf32>
}
