// RUN: qcc-opt %s | qcc-opt | FileCheck %s
// RUN: qcc-opt %s --mlir-print-op-generic | qcc-opt | FileCheck %s
// Round trip of qcc.scale_update: one delta per block (256-element K-quant
// blocks, 32-element legacy blocks).

// CHECK-LABEL: func.func @q4_K
// CHECK: %[[R:.+]] = qcc.scale_update %{{.+}}, %{{.+}} : !qcc.qtensor<256x512xq4_K>, tensor<256x2xf32>
// CHECK: return %[[R]]
func.func @q4_K(%w: !qcc.qtensor<256x512xq4_K>, %d: tensor<256x2xf32>) -> !qcc.qtensor<256x512xq4_K> {
  %r = qcc.scale_update %w, %d : !qcc.qtensor<256x512xq4_K>, tensor<256x2xf32>
  return %r : !qcc.qtensor<256x512xq4_K>
}

// CHECK-LABEL: func.func @mxfp4
// CHECK: qcc.scale_update %{{.+}}, %{{.+}} : !qcc.qtensor<4x64xmxfp4>, tensor<4x2xf32>
func.func @mxfp4(%w: !qcc.qtensor<4x64xmxfp4>, %d: tensor<4x2xf32>) -> !qcc.qtensor<4x64xmxfp4> {
  %r = qcc.scale_update %w, %d : !qcc.qtensor<4x64xmxfp4>, tensor<4x2xf32>
  return %r : !qcc.qtensor<4x64xmxfp4>
}
