// RUN: qcc-opt %s -qcc-lower-ste -qcc-fuse-weight-update -split-input-file | FileCheck %s

#id = affine_map<(i, j) -> (i, j)>
#scalar = affine_map<(i, j) -> ()>

// SGD: g = gyᵀ·x, delta = -lr·g. The contraction and the generic move into
// the fused op's body; nothing of the weight's shape is left in f32.
// CHECK-LABEL: func.func @sgd
// CHECK-SAME: (%[[GY:.+]]: tensor<8x64xf32>, %[[X:.+]]: tensor<8x256xf32>, %[[W:.+]]: !qcc.qtensor<64x256xq4_K>, %[[C:.+]]: tensor<64x256xbf16>, %[[NLR:.+]]: f32)
// CHECK-NOT: linalg.matmul
// CHECK-NOT: linalg.generic
// CHECK: %[[W2:.+]], %[[C2:.+]] = qcc.weight_update %[[GY]], %[[X]], %[[W]], %[[C]] : tensor<8x64xf32>, tensor<8x256xf32>, !qcc.qtensor<64x256xq4_K>, tensor<64x256xbf16> {
// CHECK-NEXT: ^bb0(%[[G:.+]]: f32, %{{.+}}: f32):
// CHECK-NEXT: %[[D:.+]] = arith.mulf %[[G]], %[[NLR]] : f32
// CHECK-NEXT: qcc.yield %[[D]] : f32
// CHECK-NOT: qcc.carry_update
// CHECK: return %[[W2]], %[[C2]]
func.func @sgd(%gy: tensor<8x64xf32>, %x: tensor<8x256xf32>, %w: !qcc.qtensor<64x256xq4_K>,
               %c: tensor<64x256xbf16>, %neg_lr: f32) -> (!qcc.qtensor<64x256xq4_K>, tensor<64x256xbf16>) {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<64x256xf32>
  %g0 = linalg.fill ins(%zero : f32) outs(%e : tensor<64x256xf32>) -> tensor<64x256xf32>
  %g = linalg.matmul indexing_maps = [affine_map<(n, k, m) -> (m, n)>,
                                      affine_map<(n, k, m) -> (m, k)>,
                                      affine_map<(n, k, m) -> (n, k)>]
      ins(%gy, %x : tensor<8x64xf32>, tensor<8x256xf32>) outs(%g0 : tensor<64x256xf32>) -> tensor<64x256xf32>
  %d = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%g : tensor<64x256xf32>) outs(%e : tensor<64x256xf32>) {
  ^bb0(%gi: f32, %o: f32):
    %di = arith.mulf %gi, %neg_lr : f32
    linalg.yield %di : f32
  } -> tensor<64x256xf32>
  %w2, %c2 = qcc.carry_update %w, %c, %d : !qcc.qtensor<64x256xq4_K>, tensor<64x256xbf16>, tensor<64x256xf32>
  return %w2, %c2 : !qcc.qtensor<64x256xq4_K>, tensor<64x256xbf16>
}

// -----

#id = affine_map<(i, j) -> (i, j)>
#scalar = affine_map<(i, j) -> ()>

// SGD with bf16 momentum, the learning rate as a 0-d tensor, a JL carry:
// the momentum is an elementwise operand, the new momentum (returned) an
// extra result, the learning rate a scalar read before the op.
// CHECK-LABEL: func.func @momentum
// CHECK-SAME: %[[M:[^:]+]]: tensor<64x256xbf16>, %[[LR:[^:]+]]: tensor<f32>
// CHECK: %[[LRS:.+]] = tensor.extract %[[LR]][] : tensor<f32>
// CHECK: %{{.+}}, %{{.+}}, %[[M2:.+]] = qcc.weight_update %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} ins(%[[M]] : tensor<64x256xbf16>) {jl = #qcc.jl<dim = 16, chunk = 256, seed = 5>} : {{.*}} -> tensor<64x256xbf16> {
// CHECK-NEXT: ^bb0(%[[G:.+]]: f32, %{{.+}}: f32, %[[MI:.+]]: bf16):
// CHECK: %[[MF:.+]] = arith.extf %[[MI]]
// CHECK: %[[MB:.+]] = arith.mulf %[[MF]], %{{.+}}
// CHECK: %[[MN:.+]] = arith.addf %[[MB]], %[[G]]
// CHECK: %[[MO:.+]] = arith.truncf %[[MN]]
// CHECK: %[[MR:.+]] = arith.extf %[[MO]]
// CHECK: %[[D:.+]] = arith.mulf %[[MR]], %[[LRS]]
// CHECK: qcc.yield %[[D]], %[[MO]] : f32, bf16
// CHECK: return %{{.+}}, %{{.+}}, %[[M2]]
func.func @momentum(%gy: tensor<8x64xf32>, %x: tensor<8x256xf32>, %w: !qcc.qtensor<64x256xq4_K>,
                    %c: tensor<64x16xbf16>, %m: tensor<64x256xbf16>, %lr: tensor<f32>)
    -> (!qcc.qtensor<64x256xq4_K>, tensor<64x16xbf16>, tensor<64x256xbf16>) {
  %zero = arith.constant 0.0 : f32
  %beta = arith.constant 0.9 : f32
  %e = tensor.empty() : tensor<64x256xf32>
  %eb = tensor.empty() : tensor<64x256xbf16>
  %g0 = linalg.fill ins(%zero : f32) outs(%e : tensor<64x256xf32>) -> tensor<64x256xf32>
  %g = linalg.generic {indexing_maps = [affine_map<(n, k, m) -> (m, n)>,
                                        affine_map<(n, k, m) -> (m, k)>,
                                        affine_map<(n, k, m) -> (n, k)>],
                       iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%gy, %x : tensor<8x64xf32>, tensor<8x256xf32>) outs(%g0 : tensor<64x256xf32>) {
  ^bb0(%a: f32, %b: f32, %acc: f32):
    %p = arith.mulf %a, %b : f32
    %s = arith.addf %acc, %p : f32
    linalg.yield %s : f32
  } -> tensor<64x256xf32>
  %m2 = linalg.generic {indexing_maps = [#id, #id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%m, %g : tensor<64x256xbf16>, tensor<64x256xf32>) outs(%eb : tensor<64x256xbf16>) {
  ^bb0(%mi: bf16, %gi: f32, %o: bf16):
    %mf = arith.extf %mi : bf16 to f32
    %mb = arith.mulf %mf, %beta : f32
    %mn = arith.addf %mb, %gi : f32
    %mo = arith.truncf %mn : f32 to bf16
    linalg.yield %mo : bf16
  } -> tensor<64x256xbf16>
  %d = linalg.generic {indexing_maps = [#id, #scalar, #id], iterator_types = ["parallel", "parallel"]}
      ins(%m2, %lr : tensor<64x256xbf16>, tensor<f32>) outs(%e : tensor<64x256xf32>) {
  ^bb0(%mi: bf16, %l: f32, %o: f32):
    %mf = arith.extf %mi : bf16 to f32
    %di = arith.mulf %mf, %l : f32
    linalg.yield %di : f32
  } -> tensor<64x256xf32>
  %w2, %c2 = qcc.carry_update %w, %c, %d {jl = #qcc.jl<dim = 16, chunk = 256, seed = 5>}
      : !qcc.qtensor<64x256xq4_K>, tensor<64x16xbf16>, tensor<64x256xf32>
  return %w2, %c2, %m2 : !qcc.qtensor<64x256xq4_K>, tensor<64x16xbf16>, tensor<64x256xbf16>
}

// -----

#id = affine_map<(i, j) -> (i, j)>

// The clipped estimator (lowered by qcc-lower-ste) reads the decoded weight
// and the dense carry: the weight becomes the body's second argument, the
// carry an elementwise operand.
// CHECK-LABEL: func.func @clipped
// CHECK-SAME: %[[W:[^:]+]]: !qcc.qtensor<64x256xq8_0>, %[[C:[^:]+]]: tensor<64x256xf32>
// CHECK-NOT: qcc.dequant
// CHECK: qcc.weight_update %{{.+}}, %{{.+}}, %[[W]], %[[C]] ins(%[[C]] : tensor<64x256xf32>)
// CHECK-NEXT: ^bb0(%[[G:.+]]: f32, %[[WV:.+]]: f32, %[[R:.+]]: f32):
// CHECK: %[[L:.+]] = arith.addf %[[WV]], %[[R]]
// CHECK: math.absf %[[L]]
func.func @clipped(%gy: tensor<8x64xf32>, %x: tensor<8x256xf32>, %w: !qcc.qtensor<64x256xq8_0>,
                   %c: tensor<64x256xf32>, %neg_lr: f32) -> (!qcc.qtensor<64x256xq8_0>, tensor<64x256xf32>) {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<64x256xf32>
  %g0 = linalg.fill ins(%zero : f32) outs(%e : tensor<64x256xf32>) -> tensor<64x256xf32>
  %g = linalg.matmul indexing_maps = [affine_map<(n, k, m) -> (m, n)>,
                                      affine_map<(n, k, m) -> (m, k)>,
                                      affine_map<(n, k, m) -> (n, k)>]
      ins(%gy, %x : tensor<8x64xf32>, tensor<8x256xf32>) outs(%g0 : tensor<64x256xf32>) -> tensor<64x256xf32>
  %s = qcc.ste_grad clipped %g, %w residual(%c : tensor<64x256xf32>) {threshold = 1.0 : f32}
      : tensor<64x256xf32>, !qcc.qtensor<64x256xq8_0> -> tensor<64x256xf32>
  %d = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%s : tensor<64x256xf32>) outs(%e : tensor<64x256xf32>) {
  ^bb0(%gi: f32, %o: f32):
    %di = arith.mulf %gi, %neg_lr : f32
    linalg.yield %di : f32
  } -> tensor<64x256xf32>
  %w2, %c2 = qcc.carry_update %w, %c, %d : !qcc.qtensor<64x256xq8_0>, tensor<64x256xf32>, tensor<64x256xf32>
  return %w2, %c2 : !qcc.qtensor<64x256xq8_0>, tensor<64x256xf32>
}

// -----

// The weight gradient is also returned: it must exist whole, so nothing is
// fused.
// CHECK-LABEL: func.func @gradient_escapes
// CHECK: linalg.matmul
// CHECK: qcc.carry_update
// CHECK-NOT: qcc.weight_update
func.func @gradient_escapes(%gy: tensor<8x64xf32>, %x: tensor<8x256xf32>, %w: !qcc.qtensor<64x256xq4_K>,
                            %c: tensor<64x256xf32>) -> (!qcc.qtensor<64x256xq4_K>, tensor<64x256xf32>, tensor<64x256xf32>) {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<64x256xf32>
  %g0 = linalg.fill ins(%zero : f32) outs(%e : tensor<64x256xf32>) -> tensor<64x256xf32>
  %g = linalg.matmul indexing_maps = [affine_map<(n, k, m) -> (m, n)>,
                                      affine_map<(n, k, m) -> (m, k)>,
                                      affine_map<(n, k, m) -> (n, k)>]
      ins(%gy, %x : tensor<8x64xf32>, tensor<8x256xf32>) outs(%g0 : tensor<64x256xf32>) -> tensor<64x256xf32>
  %w2, %c2 = qcc.carry_update %w, %c, %g : !qcc.qtensor<64x256xq4_K>, tensor<64x256xf32>, tensor<64x256xf32>
  return %w2, %c2, %g : !qcc.qtensor<64x256xq4_K>, tensor<64x256xf32>, tensor<64x256xf32>
}

// -----

// A delta that no weight-gradient contraction produces stays a carry_update.
// CHECK-LABEL: func.func @given_delta
// CHECK: qcc.carry_update
// CHECK-NOT: qcc.weight_update
func.func @given_delta(%w: !qcc.qtensor<64x256xq4_K>, %c: tensor<64x256xf32>, %d: tensor<64x256xf32>)
    -> (!qcc.qtensor<64x256xq4_K>, tensor<64x256xf32>) {
  %w2, %c2 = qcc.carry_update %w, %c, %d : !qcc.qtensor<64x256xq4_K>, tensor<64x256xf32>, tensor<64x256xf32>
  return %w2, %c2 : !qcc.qtensor<64x256xq4_K>, tensor<64x256xf32>
}

// -----

#id = affine_map<(i, j) -> (i, j)>

// lsq: the direction is the gradient itself, and the block-scale gradient
// becomes a result of the fused op (computed tile by tile too).
// CHECK-LABEL: func.func @lsq
// CHECK-NOT: qcc.ste_grad
// CHECK: %{{.+}}, %{{.+}}, %[[SG:.+]] = qcc.weight_update {{.*}} lsq(tensor<64x1xf32>) {
// CHECK-NEXT: ^bb0(%[[G:.+]]: f32, %{{.+}}: f32):
// CHECK-NEXT: %[[D:.+]] = arith.mulf %[[G]], %{{.+}} : f32
// CHECK-NEXT: qcc.yield %[[D]] : f32
// CHECK: return %{{.+}}, %{{.+}}, %[[SG]]
func.func @lsq(%gy: tensor<8x64xf32>, %x: tensor<8x256xf32>, %w: !qcc.qtensor<64x256xq4_K>,
               %c: tensor<64x256xf32>, %neg_lr: f32)
    -> (!qcc.qtensor<64x256xq4_K>, tensor<64x256xf32>, tensor<64x1xf32>) {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<64x256xf32>
  %g0 = linalg.fill ins(%zero : f32) outs(%e : tensor<64x256xf32>) -> tensor<64x256xf32>
  %g = linalg.matmul indexing_maps = [affine_map<(n, k, m) -> (m, n)>,
                                      affine_map<(n, k, m) -> (m, k)>,
                                      affine_map<(n, k, m) -> (n, k)>]
      ins(%gy, %x : tensor<8x64xf32>, tensor<8x256xf32>) outs(%g0 : tensor<64x256xf32>) -> tensor<64x256xf32>
  %s, %sg = qcc.ste_grad lsq %g, %w : tensor<64x256xf32>, !qcc.qtensor<64x256xq4_K> -> tensor<64x256xf32>, tensor<64x1xf32>
  %d = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%s : tensor<64x256xf32>) outs(%e : tensor<64x256xf32>) {
  ^bb0(%gi: f32, %o: f32):
    %di = arith.mulf %gi, %neg_lr : f32
    linalg.yield %di : f32
  } -> tensor<64x256xf32>
  %w2, %c2 = qcc.carry_update %w, %c, %d : !qcc.qtensor<64x256xq4_K>, tensor<64x256xf32>, tensor<64x256xf32>
  return %w2, %c2, %sg : !qcc.qtensor<64x256xq4_K>, tensor<64x256xf32>, tensor<64x1xf32>
}
