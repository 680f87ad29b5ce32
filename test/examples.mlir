// RUN: qcc-opt %qcc_src_root/examples/train_step.mlir -canonicalize | FileCheck %s
// The bundled example train step verifies, and canonicalization removes the
// Hadamard rotation pair while keeping every training op.

// CHECK-LABEL: func.func @train_step
// CHECK-NOT: qcc.hadamard
// CHECK: qcc.qmatmul fwd
// CHECK: linalg.matmul
// CHECK: qcc.ste_grad identity
// CHECK: qcc.carry_update
// CHECK-NOT: qcc.hadamard
