// RUN: qcc-opt %s | qcc-opt | FileCheck %s
// RUN: qcc-opt %s --mlir-print-op-generic | qcc-opt | FileCheck %s
// Round trip of !qcc.qtensor for every GGUF block format in the enum, with
// static, dynamic-outer and 1-D to 4-D shapes.

// CHECK-LABEL: func.func private @every_format
// CHECK-SAME: !qcc.qtensor<256xf32>
// CHECK-SAME: !qcc.qtensor<256xf16>
// CHECK-SAME: !qcc.qtensor<256xbf16>
// CHECK-SAME: !qcc.qtensor<256xq4_0>
// CHECK-SAME: !qcc.qtensor<256xq4_1>
// CHECK-SAME: !qcc.qtensor<256xq5_0>
// CHECK-SAME: !qcc.qtensor<256xq5_1>
// CHECK-SAME: !qcc.qtensor<256xq8_0>
// CHECK-SAME: !qcc.qtensor<256xq2_K>
// CHECK-SAME: !qcc.qtensor<256xq3_K>
// CHECK-SAME: !qcc.qtensor<256xq4_K>
// CHECK-SAME: !qcc.qtensor<256xq5_K>
// CHECK-SAME: !qcc.qtensor<256xq6_K>
// CHECK-SAME: !qcc.qtensor<256xiq2_xxs>
// CHECK-SAME: !qcc.qtensor<256xiq2_xs>
// CHECK-SAME: !qcc.qtensor<256xiq2_s>
// CHECK-SAME: !qcc.qtensor<256xiq3_xxs>
// CHECK-SAME: !qcc.qtensor<256xiq3_s>
// CHECK-SAME: !qcc.qtensor<256xiq1_s>
// CHECK-SAME: !qcc.qtensor<256xiq1_m>
// CHECK-SAME: !qcc.qtensor<256xiq4_nl>
// CHECK-SAME: !qcc.qtensor<256xiq4_xs>
// CHECK-SAME: !qcc.qtensor<256xtq1_0>
// CHECK-SAME: !qcc.qtensor<256xtq2_0>
// CHECK-SAME: !qcc.qtensor<256xmxfp4>
// CHECK-SAME: !qcc.qtensor<256xnvfp4>
// CHECK-SAME: !qcc.qtensor<256xq1_0>
// CHECK-SAME: !qcc.qtensor<256xq2_0>
func.func private @every_format(
  !qcc.qtensor<256xf32>, !qcc.qtensor<256xf16>, !qcc.qtensor<256xbf16>,
  !qcc.qtensor<256xq4_0>, !qcc.qtensor<256xq4_1>, !qcc.qtensor<256xq5_0>,
  !qcc.qtensor<256xq5_1>, !qcc.qtensor<256xq8_0>, !qcc.qtensor<256xq2_K>,
  !qcc.qtensor<256xq3_K>, !qcc.qtensor<256xq4_K>, !qcc.qtensor<256xq5_K>,
  !qcc.qtensor<256xq6_K>, !qcc.qtensor<256xiq2_xxs>, !qcc.qtensor<256xiq2_xs>,
  !qcc.qtensor<256xiq2_s>, !qcc.qtensor<256xiq3_xxs>, !qcc.qtensor<256xiq3_s>,
  !qcc.qtensor<256xiq1_s>, !qcc.qtensor<256xiq1_m>, !qcc.qtensor<256xiq4_nl>,
  !qcc.qtensor<256xiq4_xs>, !qcc.qtensor<256xtq1_0>, !qcc.qtensor<256xtq2_0>,
  !qcc.qtensor<256xmxfp4>, !qcc.qtensor<256xnvfp4>, !qcc.qtensor<256xq1_0>,
  !qcc.qtensor<256xq2_0>)

// Ranks 1 to 4, dynamic outer dimensions, and a dynamic innermost dimension
// for a one-element-per-block format.
// CHECK-LABEL: func.func private @shapes
// CHECK-SAME: !qcc.qtensor<32xq8_0>
// CHECK-SAME: !qcc.qtensor<4096x14336xq4_K>
// CHECK-SAME: !qcc.qtensor<?x8x512xq6_K>
// CHECK-SAME: !qcc.qtensor<2x?x3x64xmxfp4>
// CHECK-SAME: !qcc.qtensor<?x?xbf16>
// CHECK-SAME: !qcc.qtensor<0x256xq4_K>
func.func private @shapes(!qcc.qtensor<32xq8_0>, !qcc.qtensor<4096x14336xq4_K>,
  !qcc.qtensor<?x8x512xq6_K>, !qcc.qtensor<2x?x3x64xmxfp4>,
  !qcc.qtensor<?x?xbf16>, !qcc.qtensor<0x256xq4_K>)
