// RUN: qcc-opt %s -canonicalize -split-input-file | FileCheck %s
// Canonicalization of qcc ops: what folds, and what must not.

// A rotation followed by its inverse (same block, same seed) is the identity.
// CHECK-LABEL: func.func @hadamard_roundtrip
// CHECK-SAME: (%[[X:.+]]: tensor<8x512xf32>)
// CHECK-NOT: qcc.hadamard
// CHECK: return %[[X]]
func.func @hadamard_roundtrip(%x: tensor<8x512xf32>) -> tensor<8x512xf32> {
  %0 = qcc.hadamard %x block 64 seed 7 : tensor<8x512xf32>
  %1 = qcc.hadamard %0 block 64 seed 7 inverse : tensor<8x512xf32>
  return %1 : tensor<8x512xf32>
}

// -----

// The inverse followed by the forward rotation is the identity too.
// CHECK-LABEL: func.func @hadamard_inverse_first
// CHECK-SAME: (%[[X:.+]]: tensor<4x64xf32>)
// CHECK-NOT: qcc.hadamard
// CHECK: return %[[X]]
func.func @hadamard_inverse_first(%x: tensor<4x64xf32>) -> tensor<4x64xf32> {
  %0 = qcc.hadamard %x block 64 inverse : tensor<4x64xf32>
  %1 = qcc.hadamard %0 block 64 : tensor<4x64xf32>
  return %1 : tensor<4x64xf32>
}

// -----

// Different seeds give different signs: nothing folds.
// CHECK-LABEL: func.func @hadamard_other_seed
// CHECK: qcc.hadamard %{{.+}} block 64 seed 7
// CHECK: qcc.hadamard %{{.+}} block 64 seed 8 inverse
func.func @hadamard_other_seed(%x: tensor<8x512xf32>) -> tensor<8x512xf32> {
  %0 = qcc.hadamard %x block 64 seed 7 : tensor<8x512xf32>
  %1 = qcc.hadamard %0 block 64 seed 8 inverse : tensor<8x512xf32>
  return %1 : tensor<8x512xf32>
}

// -----

// Different block sizes are different rotations: nothing folds.
// CHECK-LABEL: func.func @hadamard_other_block
// CHECK: qcc.hadamard %{{.+}} block 64
// CHECK: qcc.hadamard %{{.+}} block 128 inverse
func.func @hadamard_other_block(%x: tensor<8x512xf32>) -> tensor<8x512xf32> {
  %0 = qcc.hadamard %x block 64 : tensor<8x512xf32>
  %1 = qcc.hadamard %0 block 128 inverse : tensor<8x512xf32>
  return %1 : tensor<8x512xf32>
}

// -----

// Two forward rotations are not the identity (H·D·H·D ≠ I in general).
// CHECK-LABEL: func.func @hadamard_twice_forward
// CHECK-COUNT-2: qcc.hadamard
func.func @hadamard_twice_forward(%x: tensor<8x64xf32>) -> tensor<8x64xf32> {
  %0 = qcc.hadamard %x block 64 seed 3 : tensor<8x64xf32>
  %1 = qcc.hadamard %0 block 64 seed 3 : tensor<8x64xf32>
  return %1 : tensor<8x64xf32>
}

// -----

// dequant(requant(x)) is lossy and must survive canonicalization.
// CHECK-LABEL: func.func @requant_dequant_kept
// CHECK: %[[Q:.+]] = qcc.requant
// CHECK: %[[D:.+]] = qcc.dequant %[[Q]]
// CHECK: return %[[D]]
func.func @requant_dequant_kept(%x: tensor<4x256xf32>) -> tensor<4x256xf32> {
  %0 = qcc.requant %x : tensor<4x256xf32> -> !qcc.qtensor<4x256xq4_K>
  %1 = qcc.dequant %0 : !qcc.qtensor<4x256xq4_K> -> tensor<4x256xf32>
  return %1 : tensor<4x256xf32>
}
