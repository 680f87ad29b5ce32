// RUN: qcc-opt %s | qcc-opt | FileCheck %s
// RUN: qcc-opt %s --mlir-print-op-generic | qcc-opt | FileCheck %s
// Round trip of qcc.dequant to each float element type, static and dynamic.

// CHECK-LABEL: func.func @dequant_f32
// CHECK-SAME: (%[[W:.+]]: !qcc.qtensor<256x512xq4_K>)
// CHECK: %[[R:.+]] = qcc.dequant %[[W]] : !qcc.qtensor<256x512xq4_K> -> tensor<256x512xf32>
// CHECK: return %[[R]]
func.func @dequant_f32(%w: !qcc.qtensor<256x512xq4_K>) -> tensor<256x512xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<256x512xq4_K> -> tensor<256x512xf32>
  return %0 : tensor<256x512xf32>
}

// Decoding straight to bf16 and f16 halves the bytes of the result.
// CHECK-LABEL: func.func @dequant_half
// CHECK: qcc.dequant %{{.+}} : !qcc.qtensor<8x64xq8_0> -> tensor<8x64xbf16>
// CHECK: qcc.dequant %{{.+}} : !qcc.qtensor<8x64xq8_0> -> tensor<8x64xf16>
func.func @dequant_half(%w: !qcc.qtensor<8x64xq8_0>) -> (tensor<8x64xbf16>, tensor<8x64xf16>) {
  %0 = qcc.dequant %w : !qcc.qtensor<8x64xq8_0> -> tensor<8x64xbf16>
  %1 = qcc.dequant %w : !qcc.qtensor<8x64xq8_0> -> tensor<8x64xf16>
  return %0, %1 : tensor<8x64xbf16>, tensor<8x64xf16>
}

// A dynamic outer dimension may be refined to a static one in the result.
// CHECK-LABEL: func.func @dequant_dynamic
// CHECK: qcc.dequant %{{.+}} : !qcc.qtensor<?x256xiq4_xs> -> tensor<?x256xf32>
func.func @dequant_dynamic(%w: !qcc.qtensor<?x256xiq4_xs>) -> tensor<?x256xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<?x256xiq4_xs> -> tensor<?x256xf32>
  return %0 : tensor<?x256xf32>
}
