// RUN: qcc-opt %s -qcc-lower-to-loops -split-input-file | FileCheck %s

// A qtensor argument becomes the memref of its block bytes (q8_0: 34 bytes
// per 32 elements), and dequant becomes a parallel loop over blocks.
// CHECK-LABEL: func.func @dequant
// CHECK-SAME: (%[[W:.+]]: memref<4x68xi8>) -> tensor<4x64xf32>
// CHECK: %[[FLAT:.+]] = memref.collapse_shape %[[W]] {{\[\[}}0, 1]] : memref<4x68xi8> into memref<272xi8>
// CHECK: %[[OUT:.+]] = memref.alloc() : memref<4x64xf32>
// CHECK: scf.parallel
// CHECK: memref.load %[[FLAT]]
// CHECK: arith.bitcast %{{.+}} : i16 to f16
// CHECK: arith.extf %{{.+}} : f16 to f32
// CHECK: bufferization.to_tensor %[[OUT]] restrict writable
// CHECK-NOT: qcc.
func.func @dequant(%w: !qcc.qtensor<4x64xq8_0>) -> tensor<4x64xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<4x64xq8_0> -> tensor<4x64xf32>
  return %0 : tensor<4x64xf32>
}

// -----

// qmatmul with more than 8 activation rows decodes tiles of W into a
// 128 x 512 scratch (an alloca of 65536 f32), multiplies with the runtime
// micro-GEMM, and never allocates the f32 weight matrix [256, 512].
// CHECK-LABEL: func.func @qmatmul_fwd
// CHECK-SAME: memref<256x288xi8>
// CHECK-NOT: memref<256x512xf32>
// CHECK: scf.parallel
// CHECK: memref.alloca() : memref<65536xf32>
// CHECK: scf.for
// CHECK: call @qcc_rt_gemm_f32
// CHECK-NOT: memref<256x512xf32>
// CHECK: return
func.func @qmatmul_fwd(%x: tensor<9x512xf32>, %w: !qcc.qtensor<256x512xq4_K>) -> tensor<9x256xf32> {
  %0 = qcc.qmatmul fwd %x, %w : tensor<9x512xf32>, !qcc.qtensor<256x512xq4_K> -> tensor<9x256xf32>
  return %0 : tensor<9x256xf32>
}

// -----

// A qmatmul with one activation row (a GEMV) takes the few-rows path: an
// scf.parallel over chunks of W rows calls a per-shape function that
// decodes each q4_K block with vector ops (byte vector loads, nibble masks,
// sitofp) straight into vector.fma accumulators, reduced once per row. Its
// offsets (the mins) meet sums of x per 32 columns computed before the
// loop. Neither the f32 weight [256, 512] nor a tile of it exists, and the
// micro-GEMM is not called.
// CHECK-LABEL: func.func private @__qcc_qmatmul_fwd_m1_q4_K_256x512_73728_1x512xf32_1x256xf32
// CHECK-SAME: (%[[B:.+]]: memref<73728xi8>, %[[X:.+]]: memref<1x512xf32>, %{{.+}}: memref<1x256xf32>, %{{.+}}: index, %{{.+}}: index, %{{.+}}: index, %{{.+}}: index, %[[XS:.+]]: memref<1x16xf32>)
// CHECK-NOT: xf32> = memref.alloc
// CHECK: scf.for
// CHECK: memref.prefetch %[[B]]
// CHECK: vector.load %[[B]][%{{.+}}] : memref<73728xi8>, vector<16xi8>
// CHECK: arith.extui %{{.+}} : vector<16xi8> to vector<16xi32>
// CHECK: arith.andi %{{.+}} : vector<16xi32>
// CHECK: arith.sitofp %{{.+}} : vector<16xi32> to vector<16xf32>
// CHECK: vector.load %[[X]][%{{.+}}] : memref<1x512xf32>, vector<16xf32>
// CHECK: vector.fma %{{.+}} : vector<16xf32>
// CHECK: vector.load %[[XS]][%{{.+}}] : memref<1x16xf32>, vector<8xf32>
// CHECK: vector.fma %{{.+}} : vector<8xf32>
// CHECK: vector.reduction <add>, %{{.+}} fastmath<reassoc> : vector<16xf32> into f32
// CHECK-LABEL: func.func @gemv
// CHECK-NOT: memref<256x512xf32>
// CHECK-NOT: memref.alloca
// CHECK-NOT: qcc_rt_gemm_f32
// CHECK: memref.alloc() : memref<1x16xf32>
// CHECK: scf.parallel
// CHECK: func.call @__qcc_qmatmul_fwd_m1_q4_K_256x512_73728_1x512xf32_1x256xf32
// CHECK-NOT: qcc_rt_gemm_f32
// CHECK: return
func.func @gemv(%x: tensor<1x512xf32>, %w: !qcc.qtensor<256x512xq4_K>) -> tensor<1x256xf32> {
  %0 = qcc.qmatmul fwd %x, %w : tensor<1x512xf32>, !qcc.qtensor<256x512xq4_K> -> tensor<1x256xf32>
  return %0 : tensor<1x256xf32>
}

// -----

// Backward with two rows, in a format without a vector decoder (iq2_xs):
// each block is decoded by the scalar emitter into a block-sized stack
// buffer (256 f32, allocated once per call of the strip function) and read
// back as vectors for the AXPYs into the strip of dx.
// CHECK-LABEL: func.func private @__qcc_qmatmul_bwd_m2_iq2_xs_256x512
// CHECK-DAG: memref.alloca() : memref<2x{{[0-9]+}}xf32>
// CHECK-DAG: memref.alloca() : memref<256xf32>
// CHECK-NOT: memref<256x512xf32>
// CHECK: scf.for
// CHECK: memref.store %{{.+}} : memref<256xf32>
// CHECK: vector.load %{{.+}} : memref<256xf32>, vector<16xf32>
// CHECK: vector.fma %{{.+}} : vector<16xf32>
// CHECK-LABEL: func.func @gemv_bwd
// CHECK-NOT: qcc_rt_gemm_f32
// CHECK: scf.parallel
// CHECK: func.call @__qcc_qmatmul_bwd_m2_iq2_xs_256x512
func.func @gemv_bwd(%g: tensor<2x256xf32>, %w: !qcc.qtensor<256x512xiq2_xs>) -> tensor<2x512xf32> {
  %0 = qcc.qmatmul bwd %g, %w : tensor<2x256xf32>, !qcc.qtensor<256x512xiq2_xs> -> tensor<2x512xf32>
  return %0 : tensor<2x512xf32>
}

// -----

// Calls and returns of qtensors convert with the signatures.
// CHECK-LABEL: func.func private @callee(memref<2x36xi8>) -> memref<2x36xi8>
// CHECK-LABEL: func.func @caller
// CHECK-SAME: (%[[W:.+]]: memref<2x36xi8>) -> memref<2x36xi8>
// CHECK: %[[R:.+]] = call @callee(%[[W]]) : (memref<2x36xi8>) -> memref<2x36xi8>
// CHECK: return %[[R]]
func.func private @callee(!qcc.qtensor<2x64xq4_0>) -> !qcc.qtensor<2x64xq4_0>
func.func @caller(%w: !qcc.qtensor<2x64xq4_0>) -> !qcc.qtensor<2x64xq4_0> {
  %0 = call @callee(%w) : (!qcc.qtensor<2x64xq4_0>) -> !qcc.qtensor<2x64xq4_0>
  return %0 : !qcc.qtensor<2x64xq4_0>
}

// -----

// hadamard: the signs become a constant global of ±1.
// CHECK: memref.global "private" constant @__qcc_hadamard_signs_8_3 : memref<8xf32> = dense<[1.000000e+00, 1.000000e+00, 1.000000e+00, -1.000000e+00, 1.000000e+00, -1.000000e+00, -1.000000e+00, 1.000000e+00]>
// CHECK-LABEL: func.func @hadamard
// CHECK: memref.get_global @__qcc_hadamard_signs_8_3
// CHECK: scf.parallel
// CHECK-NOT: qcc.hadamard
func.func @hadamard(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  %0 = qcc.hadamard %x block 8 seed 3 : tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

// requant calls the runtime encoder on the f32 rows (bf16 widened first),
// with the ggml type id (12 = q4_K), rows and row length, and a null
// importance pointer when there is none.
// CHECK: func.func private @qcc_rt_encode_rows(i32, !llvm.ptr, !llvm.ptr, i64, i64, !llvm.ptr) -> i32
// CHECK-LABEL: func.func @requant
// CHECK-SAME: -> memref<4x144xi8>
// CHECK: arith.extf %{{.+}} : bf16 to f32
// CHECK: %[[OUT:.+]] = memref.alloc() : memref<4x144xi8>
// CHECK: %[[NULL:.+]] = llvm.mlir.zero : !llvm.ptr
// CHECK: %[[TYPE:.+]] = arith.constant 12 : i32
// CHECK: call @qcc_rt_encode_rows(%[[TYPE]], %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %[[NULL]])
// CHECK: return %[[OUT]]
func.func @requant(%x: tensor<4x256xbf16>) -> !qcc.qtensor<4x256xq4_K> {
  %0 = qcc.requant %x : tensor<4x256xbf16> -> !qcc.qtensor<4x256xq4_K>
  return %0 : !qcc.qtensor<4x256xq4_K>
}

// -----

// carry_update calls the runtime with the ggml type (8 = q8_0), the weight,
// carry and delta pointers, fresh output buffers, rows and row length, a
// bf16-carry flag, and the JL sketch's dim, chunk and seed.
// CHECK: func.func private @qcc_rt_carry_update(i32, !llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, i32, i64, i64, i64) -> i32
// CHECK-LABEL: func.func @carry_update
// CHECK-SAME: -> (memref<2x68xi8>, tensor<2x4xbf16>)
// CHECK-DAG: %[[TYPE:.+]] = arith.constant 8 : i32
// CHECK-DAG: %[[BF16:.+]] = arith.constant 1 : i32
// CHECK-DAG: %[[DIM:.+]] = arith.constant 2 : i64
// CHECK-DAG: %[[CHUNK:.+]] = arith.constant 32 : i64
// CHECK-DAG: %[[SEED:.+]] = arith.constant 7 : i64
// CHECK: call @qcc_rt_carry_update(%[[TYPE]], {{.*}}, %[[BF16]], %[[DIM]], %[[CHUNK]], %[[SEED]])
func.func @carry_update(%w: !qcc.qtensor<2x64xq8_0>, %c: tensor<2x4xbf16>, %d: tensor<2x64xf32>)
    -> (!qcc.qtensor<2x64xq8_0>, tensor<2x4xbf16>) {
  %w2, %c2 = qcc.carry_update %w, %c, %d {jl = #qcc.jl<dim = 2, chunk = 32, seed = 7>}
      : !qcc.qtensor<2x64xq8_0>, tensor<2x4xbf16>, tensor<2x64xf32>
  return %w2, %c2 : !qcc.qtensor<2x64xq8_0>, tensor<2x4xbf16>
}

// -----

// qcc.gather decodes one block of a picked row per parallel iteration
// (rows of 64 q8_0 values: 2 blocks of 34 bytes), straight into the result;
// an id outside the table (an unsigned compare catches negatives) zeroes
// its block instead.
// CHECK-LABEL: func.func @gather_rows
// CHECK-SAME: (%[[T:.+]]: memref<8x68xi8>, %[[I:.+]]: tensor<5xi32>)
// CHECK: %[[IDS:.+]] = bufferization.to_buffer %[[I]]
// CHECK: %[[OUT:.+]] = memref.alloc() : memref<5x64xf32>
// CHECK: scf.parallel (%[[R:.+]], %[[B:.+]]) = ({{.+}}) to ({{.+}}, %c2) step
// CHECK: %[[ID:.+]] = memref.load %[[IDS]][%[[R]]]
// CHECK: %[[ROW:.+]] = arith.index_cast %[[ID]] : i32 to index
// CHECK: arith.cmpi ult, %[[ROW]]
// CHECK: scf.if
// CHECK: } else {
// CHECK: scf.for
// CHECK: memref.store %{{.+}}, %{{.+}}[%{{.+}}] : memref<320xf32>
func.func @gather_rows(%t: !qcc.qtensor<8x64xq8_0>, %ids: tensor<5xi32>) -> tensor<5x64xf32> {
  %0 = qcc.gather %t[%ids] : !qcc.qtensor<8x64xq8_0>, tensor<5xi32> -> tensor<5x64xf32>
  return %0 : tensor<5x64xf32>
}
