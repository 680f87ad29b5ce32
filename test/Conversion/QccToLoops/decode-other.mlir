// RUN: qcc-opt %s -qcc-lower-to-loops | FileCheck %s
// RUN: qcc-opt %s -qcc-lower-to-loops | FileCheck %s --check-prefix=NOQCC
// The ternary, fp4 and 1/2-bit block decoders that -qcc-lower-to-loops emits
// for qcc.dequant: structure only; bit-exactness against the runtime's
// Decode.cpp is test/python/test_emitted_decode_bitexact.py.

// Nothing of the qcc dialect is left (types or ops).
// NOQCC-NOT: qcc.

// The fp4 value set is the runtime's kValuesMXFP4 (doubled e2m1 values).
// CHECK: memref.global "private" constant @qcc_mxfp4_values : memref<16xi8> = dense<[0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12]>

// tq1_0: f16 d at byte 52; three scf.for runs over the trit bytes (32, 16
// and 4 bytes), each digit extracted as ((uint8(q * 3^n) * 3) >> 8) - 1.
// CHECK-LABEL: func.func @tq1_0(
// CHECK-SAME: memref<2x54xi8>
// CHECK: %[[DH:.*]] = arith.bitcast %{{.*}} : i16 to f16
// CHECK: %[[D:.*]] = arith.extf %[[DH]] : f16 to f32
// CHECK: scf.for %{{.*}} = %{{.*}} to %c32{{[_0-9]*}} step
// CHECK: %[[R:.*]] = arith.andi %{{.*}}, %c255_i32{{[_0-9]*}} : i32
// CHECK: %[[R3:.*]] = arith.muli %[[R]], %c3_i32{{[_0-9]*}} : i32
// CHECK: %[[SH:.*]] = arith.shrui %[[R3]], %c8_i32{{[_0-9]*}} : i32
// CHECK: %[[T:.*]] = arith.subi %[[SH]], %c1_i32{{[_0-9]*}} : i32
// CHECK: %[[TF:.*]] = arith.sitofp %[[T]] : i32 to f32
// CHECK: arith.mulf %[[TF]], %[[D]] : f32
// CHECK: scf.for %{{.*}} = %{{.*}} to %c16{{[_0-9]*}} step
// CHECK: scf.for %{{.*}} = %{{.*}} to %c4{{[_0-9]*}} step
// CHECK: return
func.func @tq1_0(%w: !qcc.qtensor<2x256xtq1_0>) -> tensor<2x256xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<2x256xtq1_0> -> tensor<2x256xf32>
  return %0 : tensor<2x256xf32>
}

// tq2_0: f16 d at byte 64; one scf.for over 32 byte columns storing the 8
// elements (2 halves x 4 bit pairs) of each, y = (q - 1) * d.
// CHECK-LABEL: func.func @tq2_0(
// CHECK-SAME: memref<2x66xi8>
// CHECK: %[[DH:.*]] = arith.bitcast %{{.*}} : i16 to f16
// CHECK: %[[D:.*]] = arith.extf %[[DH]] : f16 to f32
// CHECK: scf.for
// CHECK-COUNT-8: memref.store
// CHECK-NOT: scf.for
// CHECK: return
func.func @tq2_0(%w: !qcc.qtensor<2x256xtq2_0>) -> tensor<2x256xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<2x256xtq2_0> -> tensor<2x256xf32>
  return %0 : tensor<2x256xf32>
}

// mxfp4: the e8m0 scale is built as bits (subnormal 0x00200000 << e for
// e < 2, else (e - 1) << 23) and bitcast to f32; no f16 load.
// CHECK-LABEL: func.func @mxfp4(
// CHECK-SAME: memref<2x34xi8>
// CHECK-NOT: i16 to f16
// CHECK: %[[LT:.*]] = arith.cmpi ult, %{{.*}}, %c2_i32{{[_0-9]*}} : i32
// CHECK: %[[BITS:.*]] = arith.select %[[LT]], %{{.*}}, %{{.*}} : i32
// CHECK: %[[D:.*]] = arith.bitcast %[[BITS]] : i32 to f32
// CHECK: %[[KV:.*]] = memref.get_global @qcc_mxfp4_values
// CHECK: scf.for
// CHECK: memref.load %[[KV]]
// CHECK: arith.mulf %{{.*}}, %[[D]] : f32
// CHECK: return
func.func @mxfp4(%w: !qcc.qtensor<2x64xmxfp4>) -> tensor<2x64xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<2x64xmxfp4> -> tensor<2x64xf32>
  return %0 : tensor<2x64xf32>
}

// nvfp4: four ue4m3 sub-block scales (unrolled, constant offsets), each
// 0 for the codes 0 and 0x7f, else the exact power-of-two product halved,
// followed by an scf.for over 8 bytes.
// CHECK-LABEL: func.func @nvfp4(
// CHECK-SAME: memref<2x36xi8>
// CHECK-NOT: i16 to f16
// CHECK: arith.cmpi eq, %{{.*}}, %c127_i32{{[_0-9]*}} : i32
// CHECK: scf.for %{{.*}} = %{{.*}} to %c8{{[_0-9]*}} step
// CHECK: arith.cmpi eq, %{{.*}}, %c127_i32{{[_0-9]*}} : i32
// CHECK: scf.for %{{.*}} = %{{.*}} to %c8{{[_0-9]*}} step
// CHECK: arith.cmpi eq, %{{.*}}, %c127_i32{{[_0-9]*}} : i32
// CHECK: scf.for %{{.*}} = %{{.*}} to %c8{{[_0-9]*}} step
// CHECK: arith.cmpi eq, %{{.*}}, %c127_i32{{[_0-9]*}} : i32
// CHECK: scf.for %{{.*}} = %{{.*}} to %c8{{[_0-9]*}} step
// CHECK: return
func.func @nvfp4(%w: !qcc.qtensor<2x64xnvfp4>) -> tensor<2x64xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<2x64xnvfp4> -> tensor<2x64xf32>
  return %0 : tensor<2x64xf32>
}

// q1_0: +d or -d per bit; -d is one negf of the scale, selected per element.
// CHECK-LABEL: func.func @q1_0(
// CHECK-SAME: memref<2x18xi8>
// CHECK: %[[DH:.*]] = arith.bitcast %{{.*}} : i16 to f16
// CHECK: %[[D:.*]] = arith.extf %[[DH]] : f16 to f32
// CHECK: %[[NEG:.*]] = arith.negf %[[D]] : f32
// CHECK: scf.for %{{.*}} = %{{.*}} to %c128{{[_0-9]*}} step
// CHECK: %[[Y:.*]] = arith.select %{{.*}}, %[[D]], %[[NEG]] : f32
// CHECK: memref.store %[[Y]]
// CHECK-NOT: arith.mulf
// CHECK: return
func.func @q1_0(%w: !qcc.qtensor<2x128xq1_0>) -> tensor<2x128xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<2x128xq1_0> -> tensor<2x128xf32>
  return %0 : tensor<2x128xf32>
}

// q2_0: 2-bit codes stored as q + 1, y = (q - 1) * d over 64 elements.
// CHECK-LABEL: func.func @q2_0(
// CHECK-SAME: memref<2x18xi8>
// CHECK: %[[DH:.*]] = arith.bitcast %{{.*}} : i16 to f16
// CHECK: %[[D:.*]] = arith.extf %[[DH]] : f16 to f32
// CHECK: scf.for %{{.*}} = %{{.*}} to %c64{{[_0-9]*}} step
// CHECK: %[[Q:.*]] = arith.subi %{{.*}}, %c1_i32{{[_0-9]*}} : i32
// CHECK: %[[QF:.*]] = arith.sitofp %[[Q]] : i32 to f32
// CHECK: arith.mulf %[[QF]], %[[D]] : f32
// CHECK: return
func.func @q2_0(%w: !qcc.qtensor<2x64xq2_0>) -> tensor<2x64xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<2x64xq2_0> -> tensor<2x64xf32>
  return %0 : tensor<2x64xf32>
}
