// RUN: qcc-opt %s -qcc-outline-kernels -split-input-file | FileCheck %s

// Two qmatmuls on weights of the same type share one kernel; the one on a
// different shape gets its own. Both elementwise adds share one, with the
// tensor.empty init recreated inside it.
// CHECK-LABEL: func.func @layers
// CHECK-SAME: (%[[X:.+]]: tensor<8x256xf32>, %[[W0:.+]]: !qcc.qtensor<256x256xq4_K>, %[[W1:.+]]: !qcc.qtensor<256x256xq4_K>, %[[W2:.+]]: !qcc.qtensor<512x256xq4_K>)
// CHECK-NOT: tensor.empty
// CHECK: %[[A:.+]] = call @[[MM:__qcc_kernel_qcc_qmatmul_[0-9]+]](%[[X]], %[[W0]])
// CHECK: %[[B:.+]] = call @[[MM]](%[[A]], %[[W1]])
// CHECK: %[[S:.+]] = call @[[ADD:__qcc_kernel_linalg_add_[0-9]+]](%[[A]], %[[B]])
// CHECK: %[[T:.+]] = call @[[ADD]](%[[S]], %[[X]])
// CHECK: %[[C:.+]] = call @[[MM2:__qcc_kernel_qcc_qmatmul_[0-9]+]](%[[T]], %[[W2]])
// CHECK: return %[[T]], %[[C]]
// CHECK: func.func private @[[MM]](%[[KX:.+]]: tensor<8x256xf32>, %[[KW:.+]]: !qcc.qtensor<256x256xq4_K>) -> tensor<8x256xf32>
// CHECK-SAME: attributes {llvm.linkage = #llvm.linkage<internal>, passthrough = ["noinline"], qcc.kernel}
// CHECK-NEXT: %[[R:.+]] = qcc.qmatmul fwd %[[KX]], %[[KW]]
// CHECK-NEXT: return %[[R]]
// CHECK: func.func private @[[ADD]](%[[KA:.+]]: tensor<8x256xf32>, %[[KB:.+]]: tensor<8x256xf32>)
// CHECK-NEXT: %[[E:.+]] = tensor.empty() : tensor<8x256xf32>
// CHECK-NEXT: %[[R2:.+]] = linalg.add ins(%[[KA]], %[[KB]] : {{.*}}) outs(%[[E]] : tensor<8x256xf32>)
// CHECK-NEXT: return %[[R2]]
// CHECK: func.func private @[[MM2]]({{.*}}: tensor<8x256xf32>, {{.*}}: !qcc.qtensor<512x256xq4_K>) -> tensor<8x512xf32>
func.func @layers(%x: tensor<8x256xf32>, %w0: !qcc.qtensor<256x256xq4_K>,
                  %w1: !qcc.qtensor<256x256xq4_K>, %w2: !qcc.qtensor<512x256xq4_K>)
    -> (tensor<8x256xf32>, tensor<8x512xf32>) {
  %a = qcc.qmatmul fwd %x, %w0 : tensor<8x256xf32>, !qcc.qtensor<256x256xq4_K> -> tensor<8x256xf32>
  %b = qcc.qmatmul fwd %a, %w1 : tensor<8x256xf32>, !qcc.qtensor<256x256xq4_K> -> tensor<8x256xf32>
  %e0 = tensor.empty() : tensor<8x256xf32>
  %s = linalg.add ins(%a, %b : tensor<8x256xf32>, tensor<8x256xf32>) outs(%e0 : tensor<8x256xf32>) -> tensor<8x256xf32>
  %e1 = tensor.empty() : tensor<8x256xf32>
  %t = linalg.add ins(%s, %x : tensor<8x256xf32>, tensor<8x256xf32>) outs(%e1 : tensor<8x256xf32>) -> tensor<8x256xf32>
  %c = qcc.qmatmul fwd %t, %w2 : tensor<8x256xf32>, !qcc.qtensor<512x256xq4_K> -> tensor<8x512xf32>
  return %t, %c : tensor<8x256xf32>, tensor<8x512xf32>
}

// -----

// A zero-filled init is recreated inside the contraction's kernel (the fill
// is not a kernel of its own), and a scalar the body captures from the
// caller becomes an argument. Generics that differ only in a constant of
// their body do not share a kernel.
// CHECK-LABEL: func.func @captures
// CHECK-SAME: (%[[G:.+]]: tensor<8x16xf32>, %[[X:.+]]: tensor<8x32xf32>, %[[LR:.+]]: f32)
// CHECK-NOT: linalg.fill
// CHECK: %[[NEG:.+]] = arith.negf %[[LR]]
// CHECK: %[[DW:.+]] = call @[[GEMM:__qcc_kernel_linalg_matmul_[0-9]+]](%[[G]], %[[X]])
// CHECK: %[[D:.+]] = call @[[SCALE:__qcc_kernel_linalg_generic_[0-9]+]](%[[DW]], %[[NEG]])
// CHECK: %[[H:.+]] = call @[[HALF:__qcc_kernel_linalg_generic_[0-9]+]](%[[D]])
// CHECK: %[[Q:.+]] = call @[[QUARTER:__qcc_kernel_linalg_generic_[0-9]+]](%[[H]])
// CHECK: return %[[Q]]
// CHECK: func.func private @[[GEMM]]
// CHECK-DAG: %[[Z:.+]] = arith.constant 0.000000e+00 : f32
// CHECK-DAG: %[[E:.+]] = tensor.empty() : tensor<16x32xf32>
// CHECK: %[[F:.+]] = linalg.fill ins(%[[Z]] : f32) outs(%[[E]] : tensor<16x32xf32>)
// CHECK: linalg.matmul {{.*}} outs(%[[F]] : tensor<16x32xf32>)
// CHECK: func.func private @[[SCALE]]({{.*}}: tensor<16x32xf32>, %[[S:.+]]: f32)
// CHECK: arith.mulf %{{.+}}, %[[S]] : f32
// CHECK: func.func private @[[HALF]]
// CHECK: arith.constant 5.000000e-01 : f32
// CHECK: func.func private @[[QUARTER]]
// CHECK: arith.constant 2.500000e-01 : f32
#id = affine_map<(i, j) -> (i, j)>
func.func @captures(%g: tensor<8x16xf32>, %x: tensor<8x32xf32>, %lr: f32) -> tensor<16x32xf32> {
  %zero = arith.constant 0.0 : f32
  %neg = arith.negf %lr : f32
  %e = tensor.empty() : tensor<16x32xf32>
  %z = linalg.fill ins(%zero : f32) outs(%e : tensor<16x32xf32>) -> tensor<16x32xf32>
  %dw = linalg.matmul indexing_maps = [affine_map<(n, k, m) -> (m, n)>, affine_map<(n, k, m) -> (m, k)>, affine_map<(n, k, m) -> (n, k)>]
      ins(%g, %x : tensor<8x16xf32>, tensor<8x32xf32>) outs(%z : tensor<16x32xf32>) -> tensor<16x32xf32>
  %e1 = tensor.empty() : tensor<16x32xf32>
  %d = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%dw : tensor<16x32xf32>) outs(%e1 : tensor<16x32xf32>) {
  ^bb0(%a: f32, %o: f32):
    %m = arith.mulf %a, %neg : f32
    linalg.yield %m : f32
  } -> tensor<16x32xf32>
  %h = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%d : tensor<16x32xf32>) outs(%e1 : tensor<16x32xf32>) {
  ^bb0(%a: f32, %o: f32):
    %c = arith.constant 0.5 : f32
    %m = arith.mulf %a, %c : f32
    linalg.yield %m : f32
  } -> tensor<16x32xf32>
  %q = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%h : tensor<16x32xf32>) outs(%e1 : tensor<16x32xf32>) {
  ^bb0(%a: f32, %o: f32):
    %c = arith.constant 0.25 : f32
    %m = arith.mulf %a, %c : f32
    linalg.yield %m : f32
  } -> tensor<16x32xf32>
  return %q : tensor<16x32xf32>
}

// -----

// Dynamic shapes cannot cross the bare-pointer calling convention: the op
// stays in place. Kernels are not outlined again.
// CHECK-LABEL: func.func @dynamic
// CHECK: qcc.dequant
// CHECK-NOT: call
func.func @dynamic(%w: !qcc.qtensor<?x32xq8_0>) -> tensor<?x32xf32> {
  %0 = qcc.dequant %w : !qcc.qtensor<?x32xq8_0> -> tensor<?x32xf32>
  return %0 : tensor<?x32xf32>
}
