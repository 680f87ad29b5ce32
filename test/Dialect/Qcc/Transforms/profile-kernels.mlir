// RUN: qcc-opt %s -qcc-outline-kernels -qcc-profile-kernels | FileCheck %s
// RUN: qcc-opt %s -qcc-outline-kernels -qcc-profile-kernels -qcc-profile-kernels | FileCheck %s --check-prefix=ONCE

// Every kernel call is bracketed by enter/exit with its kernel's id (the two
// qmatmuls share kernel 0 and so its id); the table names each kernel's op,
// its first call site and the work of one call: 2·8·256·256 flops for the
// qmatmul, 8·256·4 + 256·256/256·144 + 8·256·4 bytes; none for the add.
// CHECK-LABEL: func.func @layers
// CHECK: %[[C0:.+]] = arith.constant 0 : i32
// CHECK: call @qcc_rt_profile_enter(%[[C0]])
// CHECK-NEXT: call @[[MM:__qcc_kernel_qcc_qmatmul_[0-9]+]]
// CHECK-NEXT: call @qcc_rt_profile_exit(%[[C0]])
// CHECK: %[[C0B:.+]] = arith.constant 0 : i32
// CHECK: call @qcc_rt_profile_enter(%[[C0B]])
// CHECK-NEXT: call @[[MM]]
// CHECK-NEXT: call @qcc_rt_profile_exit(%[[C0B]])
// CHECK: %[[C1:.+]] = arith.constant 1 : i32
// CHECK: call @qcc_rt_profile_enter(%[[C1]])
// CHECK-NEXT: call @__qcc_kernel_linalg_add
// CHECK-NEXT: call @qcc_rt_profile_exit(%[[C1]])
// CHECK: func.func private @qcc_rt_profile_enter(i32)
// CHECK: func.func private @qcc_rt_profile_exit(i32)
// CHECK: llvm.mlir.global private constant @__qcc_profile_table
// CHECK-SAME: \22bytes\22:53248,\22flops\22:1048576,\22id\22:0,\22kernel\22:\22[[MM]]\22,\22loc\22:\22{{.*}}profile-kernels.mlir:{{[0-9]+}}:{{[0-9]+}}\22,\22op\22:\22qcc.qmatmul\22
// CHECK-SAME: \22flops\22:0,\22id\22:1,{{.*}}\22op\22:\22linalg.add\22
// CHECK: llvm.func @qcc_step_profile_table() -> !llvm.ptr
// CHECK-NEXT: llvm.mlir.addressof @__qcc_profile_table
// A second run leaves a profiled module as it is.
// ONCE-COUNT-3: call @qcc_rt_profile_enter
// ONCE-NOT: call @qcc_rt_profile_enter
func.func @layers(%x: tensor<8x256xf32>, %w0: !qcc.qtensor<256x256xq4_K>,
                  %w1: !qcc.qtensor<256x256xq4_K>) -> tensor<8x256xf32> {
  %a = qcc.qmatmul fwd %x, %w0 : tensor<8x256xf32>, !qcc.qtensor<256x256xq4_K> -> tensor<8x256xf32>
  %b = qcc.qmatmul fwd %a, %w1 : tensor<8x256xf32>, !qcc.qtensor<256x256xq4_K> -> tensor<8x256xf32>
  %e = tensor.empty() : tensor<8x256xf32>
  %s = linalg.add ins(%a, %b : tensor<8x256xf32>, tensor<8x256xf32>) outs(%e : tensor<8x256xf32>) -> tensor<8x256xf32>
  return %s : tensor<8x256xf32>
}
