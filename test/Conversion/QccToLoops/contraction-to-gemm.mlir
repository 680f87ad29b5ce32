// RUN: qcc-opt %s -qcc-lower-to-loops -split-input-file | FileCheck %s

// An f32 matmul reading its left operand transposed (the weight gradient
// dŴ = gᵀ·x) becomes a call of the runtime micro-GEMM with a_transposed = 1,
// b_transposed = 0, accumulating into a copy of the init.
// CHECK-LABEL: func.func @weight_gradient
// CHECK: %[[C:.+]] = memref.alloc() : memref<32x64xf32>
// CHECK: memref.copy %{{.+}}, %[[C]]
// CHECK-DAG: %[[T:.+]] = arith.constant 1 : i32
// CHECK-DAG: %[[F:.+]] = arith.constant 0 : i32
// CHECK: call @qcc_rt_gemm_f32(%{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %[[T]], %{{.+}}, %{{.+}}, %[[F]], %{{.+}}, %{{.+}})
// CHECK-NOT: linalg.matmul
func.func @weight_gradient(%g: tensor<8x32xf32>, %x: tensor<8x64xf32>, %acc: tensor<32x64xf32>) -> tensor<32x64xf32> {
  %gw = linalg.matmul indexing_maps = [affine_map<(n, k, m) -> (m, n)>,
                                       affine_map<(n, k, m) -> (m, k)>,
                                       affine_map<(n, k, m) -> (n, k)>]
      ins(%g, %x : tensor<8x32xf32>, tensor<8x64xf32>)
      outs(%acc : tensor<32x64xf32>) -> tensor<32x64xf32>
  return %gw : tensor<32x64xf32>
}

// -----

// Attention's scores of grouped-query heads: 4 query heads [b, g, h, i, d]
// against the keys of their group [b, g, d, j] (no h). One scf.parallel
// over the 4 batches (and one block of rows each: 8 rows are too few to
// split); each iteration finds its rows from the batch index (h, the last
// batch dimension, is its remainder by 4) and makes one call, B read as
// stored (b_transposed = 0).
// CHECK-LABEL: func.func @grouped_scores
// CHECK: %[[C:.+]] = memref.alloc() : memref<1x1x4x8x16xf32>
// CHECK: memref.copy %{{.+}}, %[[C]]
// CHECK: %[[C4:.+]] = arith.constant 4 : index
// CHECK: %[[ONE:.+]] = arith.constant 1 : index
// CHECK: scf.parallel (%[[BATCH:.+]], %{{.+}}) = (%{{.+}}, %{{.+}}) to (%[[C4]], %[[ONE]])
// CHECK: arith.remui %[[BATCH]], %{{.+}} : index
// CHECK: %[[F:.+]] = arith.constant 0 : i32
// CHECK: call @qcc_rt_gemm_f32(%{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %[[F]], %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}})
// CHECK-NOT: linalg.generic
#qa = affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2, d3, d4)>
#kb = affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d4, d5)>
#sc = affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2, d3, d5)>
func.func @grouped_scores(%q: tensor<1x1x4x8x32xf32>, %k: tensor<1x1x32x16xf32>,
                          %init: tensor<1x1x4x8x16xf32>) -> tensor<1x1x4x8x16xf32> {
  %s = linalg.generic {indexing_maps = [#qa, #kb, #sc],
                       iterator_types = ["parallel", "parallel", "parallel", "parallel", "reduction", "parallel"]}
      ins(%q, %k : tensor<1x1x4x8x32xf32>, tensor<1x1x32x16xf32>)
      outs(%init : tensor<1x1x4x8x16xf32>) {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %m = arith.mulf %a, %b : f32
    %r = arith.addf %c, %m : f32
    linalg.yield %r : f32
  } -> tensor<1x1x4x8x16xf32>
  return %s : tensor<1x1x4x8x16xf32>
}

// -----

// One batch of 300 rows is split into blocks of rows for the threads
// (4 would have 75 rows, under the 96 that pay for packing B again, so 3
// blocks of 100); B is [n, k] (b_transposed = 1).
// CHECK-LABEL: func.func @row_blocks
// CHECK: %[[C3:.+]] = arith.constant 3 : index
// CHECK: scf.parallel (%{{.+}}, %[[BLK:.+]]) = (%{{.+}}, %{{.+}}) to (%{{.+}}, %[[C3]])
// CHECK: %[[C100:.+]] = arith.constant 100 : index
// CHECK: arith.muli %[[BLK]], %[[C100]] : index
// CHECK: %[[T:.+]] = arith.constant 1 : i32
// CHECK: call @qcc_rt_gemm_f32(%{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %[[T]], %{{.+}}, %{{.+}})
func.func @row_blocks(%a: tensor<300x8xf32>, %b: tensor<16x8xf32>,
                      %init: tensor<300x16xf32>) -> tensor<300x16xf32> {
  %c = linalg.matmul indexing_maps = [affine_map<(m, n, k) -> (m, k)>,
                                      affine_map<(m, n, k) -> (n, k)>,
                                      affine_map<(m, n, k) -> (m, n)>]
      ins(%a, %b : tensor<300x8xf32>, tensor<16x8xf32>)
      outs(%init : tensor<300x16xf32>) -> tensor<300x16xf32>
  return %c : tensor<300x16xf32>
}

// -----

// A contraction whose output does not end in its two matrix dimensions
// stays a linalg op (loops).
// CHECK-LABEL: func.func @not_a_gemm
// CHECK: linalg.generic
// CHECK-NOT: qcc_rt_gemm_f32
#xa = affine_map<(d0, d1, d2, d3) -> (d0, d3, d1)>
#xb = affine_map<(d0, d1, d2, d3) -> (d3, d2)>
#xc = affine_map<(d0, d1, d2, d3) -> (d1, d0, d2)>
func.func @not_a_gemm(%a: tensor<2x8x4xf32>, %b: tensor<8x16xf32>,
                      %init: tensor<4x2x16xf32>) -> tensor<4x2x16xf32> {
  %s = linalg.generic {indexing_maps = [#xa, #xb, #xc],
                       iterator_types = ["parallel", "parallel", "parallel", "reduction"]}
      ins(%a, %b : tensor<2x8x4xf32>, tensor<8x16xf32>)
      outs(%init : tensor<4x2x16xf32>) {
  ^bb0(%x: f32, %y: f32, %z: f32):
    %m = arith.mulf %x, %y : f32
    %r = arith.addf %z, %m : f32
    linalg.yield %r : f32
  } -> tensor<4x2x16xf32>
  return %s : tensor<4x2x16xf32>
}
