// RUN: qcc-opt %s -qcc-lower-to-loops -split-input-file | FileCheck %s --check-prefix=F32
// RUN: qcc-opt %s -qcc-lower-to-loops="int8-activations=true" -split-input-file | FileCheck %s --check-prefix=GEN
// RUN: qcc-opt %s -qcc-lower-to-loops="int8-activations=true int8-dot=avx512vnni" -split-input-file | FileCheck %s --check-prefix=VNNI
// RUN: qcc-opt %s -qcc-lower-to-loops="int8-activations=true int8-dot=avx2" -split-input-file | FileCheck %s --check-prefix=AVX2
// RUN: not qcc-opt %s -qcc-lower-to-loops="int8-activations=true int8-dot=sse" -split-input-file 2>&1 | FileCheck %s --check-prefix=BAD

// Without the option a GEMV takes the f32 few-rows path; with it, q4_K
// activations are quantized per 256 elements (codes, one scale per block,
// d·Σcodes per 32-element group of the weight) and the row function takes
// byte dot products: inline vector ops (generic), or a call of a function
// that the qcc-lower-to-cpu pipeline defines after buffer deallocation.

// F32-LABEL: func.func @gemv_q4_K
// F32: func.call @__qcc_qmatmul_fwd_m1_q4_K_
// F32-NOT: i8dot
// F32-NOT: __qcc_qmatmul_fwd_i8

// GEN-LABEL: func.func private @__qcc_qmatmul_fwd_i8generic_m1_q4_K_64x512_18432_1x64xf32
// GEN-SAME: (%{{.+}}: memref<18432xi8>, %{{.+}}: memref<1x512xi8>, %{{.+}}: memref<1x2xf32>, %{{.+}}: memref<1x64xf32>, {{.*}}: memref<1x16xf32>)
// GEN: vector.load %{{.+}} : memref<1x512xi8>, vector<64xi8>
// GEN: arith.extui %{{.+}} : vector<64xi8> to vector<64xi16>
// GEN: arith.extsi %{{.+}} : vector<64xi8> to vector<64xi16>
// GEN: arith.muli %{{.+}} : vector<64xi16>
// GEN: arith.sitofp %{{.+}} : vector<16xi32> to vector<16xf32>
// GEN: vector.fma
// GEN-LABEL: func.func @gemv_q4_K
// GEN: memref.alloc() : memref<1x512xi8>
// GEN: math.roundeven
// GEN: arith.fptosi
// GEN: scf.parallel
// GEN: func.call @__qcc_qmatmul_fwd_i8generic_m1_q4_K_

// VNNI: func.func private @__qcc_i8dot_avx512vnni(vector<64xi8>, vector<64xi8>, vector<16xi32>) -> vector<16xi32>
// VNNI-LABEL: func.func private @__qcc_qmatmul_fwd_i8vnni_m1_q4_K_
// VNNI: func.call @__qcc_i8dot_avx512vnni(%{{.+}}, %{{.+}}, %{{.+}}) : (vector<64xi8>, vector<64xi8>, vector<16xi32>) -> vector<16xi32>

// AVX2: func.func private @__qcc_i8dot_avx2(vector<64xi8>, vector<64xi8>, vector<16xi32>) -> vector<16xi32>
// AVX2-LABEL: func.func private @__qcc_qmatmul_fwd_i8avx2_m1_q4_K_

// BAD: int8-dot must be generic, avx2 or avx512vnni, not 'sse'
func.func @gemv_q4_K(%x: tensor<1x512xf32>, %w: !qcc.qtensor<64x512xq4_K>) -> tensor<1x64xf32> {
  %0 = qcc.qmatmul fwd %x, %w : tensor<1x512xf32>, !qcc.qtensor<64x512xq4_K> -> tensor<1x64xf32>
  return %0 : tensor<1x64xf32>
}

// -----

// q8_0 has no offsets (no sums buffer) and moves the weight's sign onto
// the activation bytes; 8 rows still take the int8 path.
// GEN-LABEL: func.func private @__qcc_qmatmul_fwd_i8generic_m8_q8_0_16x96_
// GEN-SAME: (%{{.+}}: memref<1632xi8>, %{{.+}}: memref<8x96xi8>, %{{.+}}: memref<8x3xf32>, %{{.+}}: memref<8x16xf32>, %{{[^:]+}}: index, %{{[^:]+}}: index, %{{[^:]+}}: index, %{{[^:]+}}: index)
// GEN: math.absi %{{.+}} : vector<64xi8>
// GEN: arith.select
func.func @gemv_q8_0(%x: tensor<8x96xf32>, %w: !qcc.qtensor<16x96xq8_0>) -> tensor<8x16xf32> {
  %0 = qcc.qmatmul fwd %x, %w : tensor<8x96xf32>, !qcc.qtensor<16x96xq8_0> -> tensor<8x16xf32>
  return %0 : tensor<8x16xf32>
}

// -----

// Not taken by the int8 path: a format without it (q5_K), the backward
// orientation, and more than 8 rows (the tiled micro-GEMM).
// GEN-LABEL: func.func @fallbacks
// GEN-NOT: __qcc_qmatmul_fwd_i8
// GEN: func.call @__qcc_qmatmul_fwd_m1_q5_K_
// GEN: func.call @__qcc_qmatmul_bwd_m1_q4_K_
// GEN: call @qcc_rt_gemm_f32
// GEN-NOT: __qcc_qmatmul_fwd_i8
func.func @fallbacks(%x: tensor<1x256xf32>, %w5: !qcc.qtensor<32x256xq5_K>,
                     %g: tensor<1x32xf32>, %w4: !qcc.qtensor<32x256xq4_K>,
                     %x9: tensor<9x256xf32>)
    -> (tensor<1x32xf32>, tensor<1x256xf32>, tensor<9x32xf32>) {
  %0 = qcc.qmatmul fwd %x, %w5 : tensor<1x256xf32>, !qcc.qtensor<32x256xq5_K> -> tensor<1x32xf32>
  %1 = qcc.qmatmul bwd %g, %w4 : tensor<1x32xf32>, !qcc.qtensor<32x256xq4_K> -> tensor<1x256xf32>
  %2 = qcc.qmatmul fwd %x9, %w4 : tensor<9x256xf32>, !qcc.qtensor<32x256xq4_K> -> tensor<9x32xf32>
  return %0, %1, %2 : tensor<1x32xf32>, tensor<1x256xf32>, tensor<9x32xf32>
}
