// RUN: qcc-opt %s -qcc-lower-to-loops="gemm-bf16=true" -split-input-file | FileCheck %s
// RUN: qcc-opt %s -qcc-lower-to-loops -split-input-file | FileCheck %s --check-prefix=F32

// With gemm-bf16 every caller of the micro-GEMM (a qmatmul's tiles, an f32
// contraction, a fused weight update's gradient) calls qcc_rt_gemm_bf16,
// with the f32 GEMM's arguments; without it they call qcc_rt_gemm_f32.

// CHECK-LABEL: func.func @qmatmul_fwd
// CHECK: call @qcc_rt_gemm_bf16
// CHECK-NOT: qcc_rt_gemm_f32
// F32-LABEL: func.func @qmatmul_fwd
// F32: call @qcc_rt_gemm_f32
// F32-NOT: qcc_rt_gemm_bf16
func.func @qmatmul_fwd(%x: tensor<9x512xf32>, %w: !qcc.qtensor<256x512xq4_K>) -> tensor<9x256xf32> {
  %0 = qcc.qmatmul fwd %x, %w : tensor<9x512xf32>, !qcc.qtensor<256x512xq4_K> -> tensor<9x256xf32>
  return %0 : tensor<9x256xf32>
}

// -----

// CHECK-LABEL: func.func @contraction
// CHECK: call @qcc_rt_gemm_bf16(%{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}) : (i64, i64, i64, !llvm.ptr, i64, i32, !llvm.ptr, i64, i32, !llvm.ptr, i64) -> ()
// F32-LABEL: func.func @contraction
// F32: call @qcc_rt_gemm_f32
func.func @contraction(%a: tensor<16x32xf32>, %b: tensor<32x64xf32>, %acc: tensor<16x64xf32>) -> tensor<16x64xf32> {
  %0 = linalg.matmul ins(%a, %b : tensor<16x32xf32>, tensor<32x64xf32>)
      outs(%acc : tensor<16x64xf32>) -> tensor<16x64xf32>
  return %0 : tensor<16x64xf32>
}

// -----

// CHECK-LABEL: func.func @sgd
// CHECK: call @qcc_rt_gemm_bf16
// CHECK: call @qcc_rt_carry_update
// F32-LABEL: func.func @sgd
// F32: call @qcc_rt_gemm_f32
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
