// RUN: qcc-opt %s -qcc-lower-to-loops | FileCheck %s
// RUN: qcc-opt %s -qcc-lower-to-loops | FileCheck %s --check-prefix=NOQCC
// RUN: qcc-opt %s -qcc-lower-to-loops | FileCheck %s --check-prefix=ONCE
// The i-quant block decoders that -qcc-lower-to-loops emits for qcc.dequant:
// structure only; bit-exactness against the runtime's Decode.cpp is
// test/python/test_emitted_decode_bitexact.py.

// Nothing of the qcc dialect is left (types or ops).
// NOQCC-NOT: qcc.

// The codebooks are the runtime's arrays as private constant byte globals,
// grid rows in the byte order ggml reads them (row 1 of the iq2 grids is
// 0x080808080808082b: entry 0 is 0x2b).
// CHECK-DAG: memref.global "private" constant @qcc_iq2xxs_grid : memref<2048xi8> = dense<"0x08080808080808082B08080808080808
// CHECK-DAG: memref.global "private" constant @qcc_iq2xs_grid : memref<4096xi8> = dense<"0x08080808080808082B08080808080808
// CHECK-DAG: memref.global "private" constant @qcc_iq2s_grid : memref<8192xi8> = dense<"0x08080808080808082B08080808080808
// CHECK-DAG: memref.global "private" constant @qcc_iq3xxs_grid : memref<1024xi8> = dense<"0x0404040414040404
// CHECK-DAG: memref.global "private" constant @qcc_iq3s_grid : memref<2048xi8> = dense<"0x0101010103010101
// CHECK-DAG: memref.global "private" constant @qcc_iq1s_grid : memref<16384xi8> = dense<"0xFFFFFFFFFFFFFFFF01FFFFFFFFFFFFFF
// CHECK-DAG: memref.global "private" constant @qcc_iq2xs_signs : memref<128xi8> = dense<"0x0081820384
// CHECK-DAG: memref.global "private" constant @qcc_iq4nl_values : memref<16xi8> = dense<[-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]>

// A table shared by several formats (iq1_s / iq1_m, the iq2 signs) and
// decoded by several functions is created once per module.
// ONCE: memref.global {{.*}} @qcc_iq1s_grid :
// ONCE-NOT: memref.global {{.*}} @qcc_iq1s_grid :
// ONCE: func.func @iq2_xxs

// iq2_xxs: f16 d, then per group of 32 (an scf.for over the 8 groups) the
// scale (d * (0.5 + s)) * 0.25, per 8-element row a sign byte from the
// signs table, and per element the grid byte times the scale with the sign
// applied as an explicit negation (negf + select, never a multiply by -1).
// CHECK-LABEL: func.func @iq2_xxs(
// CHECK-SAME: memref<2x66xi8>
// CHECK: %[[DH:.*]] = arith.bitcast %{{.*}} : i16 to f16
// CHECK: %[[D:.*]] = arith.extf %[[DH]] : f16 to f32
// CHECK: %[[GRID:.*]] = memref.get_global @qcc_iq2xxs_grid : memref<2048xi8>
// CHECK: %[[SIGNS:.*]] = memref.get_global @qcc_iq2xs_signs : memref<128xi8>
// CHECK: scf.for
// CHECK: %[[S:.*]] = arith.addf %{{.*}}, %{{.*}} : f32
// CHECK: %[[DS:.*]] = arith.mulf %[[D]], %[[S]] : f32
// CHECK: %[[DB:.*]] = arith.mulf %[[DS]], %{{.*}} : f32
// CHECK: scf.for
// CHECK: memref.load %[[SIGNS]]
// CHECK: scf.for
// CHECK: memref.load %[[GRID]]
// CHECK: %[[V:.*]] = arith.mulf %[[DB]], %{{.*}} : f32
// CHECK: %[[NEG:.*]] = arith.negf %[[V]] : f32
// CHECK: %[[Y:.*]] = arith.select %{{.*}}, %[[NEG]], %[[V]] : f32
// CHECK: memref.store %[[Y]]
// CHECK: return
func.func @iq2_xxs(%w: !qcc.qtensor<2x256xiq2_xxs>) -> tensor<2x256xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<2x256xiq2_xxs> -> tensor<2x256xf32>
  return %0 : tensor<2x256xf32>
}

// iq2_xs: two half-group scales per group, chosen per row by a select; the
// 9-bit grid index and the sign index come from one u16.
// CHECK-LABEL: func.func @iq2_xs(
// CHECK-SAME: memref<2x74xi8>
// CHECK: arith.bitcast %{{.*}} : i16 to f16
// CHECK: memref.get_global @qcc_iq2xs_grid
// CHECK: memref.get_global @qcc_iq2xs_signs
// CHECK: scf.for
// CHECK: scf.for
// CHECK: arith.select %{{.*}}, %{{.*}}, %{{.*}} : f32
// CHECK: scf.for
// CHECK: arith.negf
// CHECK: return
func.func @iq2_xs(%w: !qcc.qtensor<2x256xiq2_xs>) -> tensor<2x256xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<2x256xiq2_xs> -> tensor<2x256xf32>
  return %0 : tensor<2x256xf32>
}

// iq2_s: explicit sign bytes in the block (no signs table).
// CHECK-LABEL: func.func @iq2_s(
// CHECK-SAME: memref<2x82xi8>
// CHECK: arith.bitcast %{{.*}} : i16 to f16
// CHECK: memref.get_global @qcc_iq2s_grid
// CHECK-NOT: @qcc_iq2xs_signs
// CHECK: arith.negf
// CHECK: return
func.func @iq2_s(%w: !qcc.qtensor<2x256xiq2_s>) -> tensor<2x256xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<2x256xiq2_s> -> tensor<2x256xf32>
  return %0 : tensor<2x256xf32>
}

// iq3_xxs: 4-entry grid rows, two per 8 elements; scale factor 0.5.
// CHECK-LABEL: func.func @iq3_xxs(
// CHECK-SAME: memref<2x98xi8>
// CHECK: arith.bitcast %{{.*}} : i16 to f16
// CHECK: memref.get_global @qcc_iq3xxs_grid : memref<1024xi8>
// CHECK: memref.get_global @qcc_iq2xs_signs
// CHECK: arith.constant 5.000000e-01 : f32
// CHECK: arith.negf
// CHECK: arith.negf
// CHECK: return
func.func @iq3_xxs(%w: !qcc.qtensor<2x256xiq3_xxs>) -> tensor<2x256xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<2x256xiq3_xxs> -> tensor<2x256xf32>
  return %0 : tensor<2x256xf32>
}

// iq3_s: 9-bit indices into the 512-row grid, scale d * (1 + 2s).
// CHECK-LABEL: func.func @iq3_s(
// CHECK-SAME: memref<2x110xi8>
// CHECK: arith.bitcast %{{.*}} : i16 to f16
// CHECK: memref.get_global @qcc_iq3s_grid : memref<2048xi8>
// CHECK: arith.negf
// CHECK: return
func.func @iq3_s(%w: !qcc.qtensor<2x256xiq3_s>) -> tensor<2x256xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<2x256xiq3_s> -> tensor<2x256xf32>
  return %0 : tensor<2x256xf32>
}

// iq1_s: signed grid bytes (extsi), y = dl * (grid + delta) with delta a
// select of -1/8 or +1/8.
// CHECK-LABEL: func.func @iq1_s(
// CHECK-SAME: memref<2x50xi8>
// CHECK: arith.bitcast %{{.*}} : i16 to f16
// CHECK: %[[GRID:.*]] = memref.get_global @qcc_iq1s_grid : memref<16384xi8>
// CHECK: %[[DELTA:.*]] = arith.select %{{.*}}, %{{.*}}, %{{.*}} : f32
// CHECK: %[[G:.*]] = memref.load %[[GRID]]
// CHECK: %[[GI:.*]] = arith.extsi %[[G]] : i8 to i32
// CHECK: %[[GF:.*]] = arith.sitofp %[[GI]] : i32 to f32
// CHECK: %[[SUM:.*]] = arith.addf %[[GF]], %[[DELTA]] : f32
// CHECK: arith.mulf %{{.*}}, %[[SUM]] : f32
// CHECK-NOT: arith.negf
// CHECK: return
func.func @iq1_s(%w: !qcc.qtensor<2x256xiq1_s>) -> tensor<2x256xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<2x256xiq1_s> -> tensor<2x256xf32>
  return %0 : tensor<2x256xf32>
}

// iq1_m: the f16 block scale is assembled from the top nibbles of the four
// u16 scale words before the bitcast; decoding to bf16 goes through the
// block-sized f32 scratch, rounded to bf16 with integer ops.
// CHECK-LABEL: func.func @iq1_m(
// CHECK-SAME: memref<2x56xi8>
// CHECK: memref.get_global @qcc_iq1s_grid
// CHECK: arith.andi %{{.*}}, %c61440_i32
// CHECK: arith.bitcast %{{.*}} : i16 to f16
// CHECK: arith.extsi %{{.*}} : i8 to i32
// CHECK: arith.bitcast %{{.*}} : i16 to bf16
// CHECK: return
func.func @iq1_m(%w: !qcc.qtensor<2x256xiq1_m>) -> tensor<2x256xbf16> {
  %0 = qcc.dequant %w : !qcc.qtensor<2x256xiq1_m> -> tensor<2x256xbf16>
  return %0 : tensor<2x256xbf16>
}

// iq4_nl: y = d * kvalues[q] with the signed 16-entry value table.
// CHECK-LABEL: func.func @iq4_nl(
// CHECK-SAME: memref<2x18xi8>
// CHECK: %[[DH:.*]] = arith.bitcast %{{.*}} : i16 to f16
// CHECK: %[[D:.*]] = arith.extf %[[DH]] : f16 to f32
// CHECK: %[[KV:.*]] = memref.get_global @qcc_iq4nl_values : memref<16xi8>
// CHECK: scf.for
// CHECK: %[[K:.*]] = memref.load %[[KV]]
// CHECK: %[[KI:.*]] = arith.extsi %[[K]] : i8 to i32
// CHECK: %[[KF:.*]] = arith.sitofp %[[KI]] : i32 to f32
// CHECK: arith.mulf %[[D]], %[[KF]] : f32
// CHECK: return
func.func @iq4_nl(%w: !qcc.qtensor<2x32xiq4_nl>) -> tensor<2x32xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<2x32xiq4_nl> -> tensor<2x32xf32>
  return %0 : tensor<2x32xf32>
}

// iq4_xs: per group the 6-bit scale minus 32 times d, then as iq4_nl.
// CHECK-LABEL: func.func @iq4_xs(
// CHECK-SAME: memref<2x136xi8>
// CHECK: %[[DH:.*]] = arith.bitcast %{{.*}} : i16 to f16
// CHECK: %[[D:.*]] = arith.extf %[[DH]] : f16 to f32
// CHECK: memref.get_global @qcc_iq4nl_values
// CHECK: scf.for
// CHECK: %[[LS:.*]] = arith.subi %{{.*}}, %c32_i32{{[_0-9]*}} : i32
// CHECK: %[[LF:.*]] = arith.sitofp %[[LS]] : i32 to f32
// CHECK: %[[DL:.*]] = arith.mulf %[[D]], %[[LF]] : f32
// CHECK: scf.for
// CHECK: arith.mulf %[[DL]], %{{.*}} : f32
// CHECK: return
func.func @iq4_xs(%w: !qcc.qtensor<2x256xiq4_xs>) -> tensor<2x256xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<2x256xiq4_xs> -> tensor<2x256xf32>
  return %0 : tensor<2x256xf32>
}
