// RUN: qcc-opt %s -split-input-file -verify-diagnostics
// One case per qcc op verifier message; labels match the op descriptions.

// dequant_c1: the result must have the input's shape.
func.func @dequant_c1(%w: !qcc.qtensor<4x64xq8_0>) {
  // expected-error @below {{'qcc.dequant' op dequant_c1: result shape [4, 32] differs from the input shape [4, 64]}}
  %0 = qcc.dequant %w : !qcc.qtensor<4x64xq8_0> -> tensor<4x32xf32>
  return
}

// -----

// dequant decodes to float types only.
func.func @dequant_int(%w: !qcc.qtensor<4x64xq8_0>) {
  // expected-error @below {{'qcc.dequant' op result #0 must be ranked tensor of 32-bit float or bfloat16 type or 16-bit float values}}
  %0 = qcc.dequant %w : !qcc.qtensor<4x64xq8_0> -> tensor<4x64xi8>
  return
}

// -----

// requant_c1: the result must have the input's shape.
func.func @requant_c1(%x: tensor<4x64xf32>) {
  // expected-error @below {{'qcc.requant' op requant_c1: result shape [4, 128] differs from the input shape [4, 64]}}
  %0 = qcc.requant %x : tensor<4x64xf32> -> !qcc.qtensor<4x128xq8_0>
  return
}

// -----

// requant_c2: importance has one weight per column.
func.func @requant_c2(%x: tensor<4x64xf32>, %imp: tensor<32xf32>) {
  // expected-error @below {{'qcc.requant' op requant_c2: importance must be 1-D with one weight per column ([64]), got [32]}}
  %0 = qcc.requant %x importance(%imp : tensor<32xf32>) : tensor<4x64xf32> -> !qcc.qtensor<4x64xq8_0>
  return
}

// -----

// requant_c3: iq2_xxs, iq2_xs and iq1_s cannot be encoded without importance.
func.func @requant_c3(%x: tensor<4x256xf32>) {
  // expected-error @below {{'qcc.requant' op requant_c3: format 'iq1_s' needs an importance operand}}
  %0 = qcc.requant %x : tensor<4x256xf32> -> !qcc.qtensor<4x256xiq1_s>
  return
}

// -----

// qmatmul_c1: the lhs needs a row dimension.
func.func @qmatmul_c1_lhs(%x: tensor<512xf32>, %w: !qcc.qtensor<256x512xq4_K>) {
  // expected-error @below {{'qcc.qmatmul' op qmatmul_c1: lhs must have rank >= 2 and the weight rank 2 or the lhs's rank; got 1 and 2}}
  %0 = qcc.qmatmul fwd %x, %w : tensor<512xf32>, !qcc.qtensor<256x512xq4_K> -> tensor<256xf32>
  return
}

// -----

// qmatmul_c1: a weight must be 2-D or batched like the lhs.
func.func @qmatmul_c1_weight(%x: tensor<8x512xf32>, %w: !qcc.qtensor<512xq4_K>) {
  // expected-error @below {{'qcc.qmatmul' op qmatmul_c1: lhs must have rank >= 2 and the weight rank 2 or the lhs's rank; got 2 and 1}}
  %0 = qcc.qmatmul fwd %x, %w : tensor<8x512xf32>, !qcc.qtensor<512xq4_K> -> tensor<8x1xf32>
  return
}

// -----

// qmatmul_c2: batch dimensions must agree.
func.func @qmatmul_c2(%x: tensor<2x8x64xf32>, %w: !qcc.qtensor<3x32x64xq4_0>) {
  // expected-error @below {{'qcc.qmatmul' op qmatmul_c2: batch dimensions of the weight [3, 32, 64] and result [2, 8, 32] must match the lhs's [2, 8, 64]}}
  %0 = qcc.qmatmul fwd %x, %w : tensor<2x8x64xf32>, !qcc.qtensor<3x32x64xq4_0> -> tensor<2x8x32xf32>
  return
}

// -----

// qmatmul_c3: forward contracts over the weight's K.
func.func @qmatmul_c3_fwd(%x: tensor<8x256xf32>, %w: !qcc.qtensor<256x512xq4_K>) {
  // expected-error @below {{'qcc.qmatmul' op qmatmul_c3: contracted dimension of the lhs (256) differs from the weight's input dimension K (512)}}
  %0 = qcc.qmatmul fwd %x, %w : tensor<8x256xf32>, !qcc.qtensor<256x512xq4_K> -> tensor<8x256xf32>
  return
}

// -----

// qmatmul_c3: backward contracts over the weight's N.
func.func @qmatmul_c3_bwd(%g: tensor<8x512xf32>, %w: !qcc.qtensor<256x512xq4_K>) {
  // expected-error @below {{'qcc.qmatmul' op qmatmul_c3: contracted dimension of the lhs (512) differs from the weight's output dimension N (256)}}
  %0 = qcc.qmatmul bwd %g, %w : tensor<8x512xf32>, !qcc.qtensor<256x512xq4_K> -> tensor<8x512xf32>
  return
}

// -----

// qmatmul_c4: the result is [M, N] for fwd.
func.func @qmatmul_c4(%x: tensor<8x512xf32>, %w: !qcc.qtensor<256x512xq4_K>) {
  // expected-error @below {{'qcc.qmatmul' op qmatmul_c4: result shape [8, 512] must end in [8, 256]}}
  %0 = qcc.qmatmul fwd %x, %w : tensor<8x512xf32>, !qcc.qtensor<256x512xq4_K> -> tensor<8x512xf32>
  return
}

// -----

// ste_grad_c1: the gradient has the weight's shape.
func.func @ste_grad_c1(%g: tensor<16x128xf32>, %w: !qcc.qtensor<16x256xq4_K>) {
  // expected-error @below {{'qcc.ste_grad' op ste_grad_c1: grad shape [16, 128] differs from the weight shape [16, 256]}}
  %0 = qcc.ste_grad identity %g, %w : tensor<16x128xf32>, !qcc.qtensor<16x256xq4_K> -> tensor<16x256xf32>
  return
}

// -----

// ste_grad_c1: so does the residual.
func.func @ste_grad_c1_residual(%g: tensor<16x256xf32>, %w: !qcc.qtensor<16x256xq4_K>, %r: tensor<8x256xf32>) {
  // expected-error @below {{'qcc.ste_grad' op ste_grad_c1: residual shape [8, 256] differs from the weight shape [16, 256]}}
  %0 = qcc.ste_grad ewgs %g, %w residual(%r : tensor<8x256xf32>) {lambda = 0.5 : f32} : tensor<16x256xf32>, !qcc.qtensor<16x256xq4_K> -> tensor<16x256xf32>
  return
}

// -----

// ste_grad_c2: clipped needs a positive threshold.
func.func @ste_grad_c2_threshold(%g: tensor<16x256xf32>, %w: !qcc.qtensor<16x256xq4_K>) {
  // expected-error @below {{'qcc.ste_grad' op ste_grad_c2: mode 'clipped' needs a positive 'threshold'}}
  %0 = qcc.ste_grad clipped %g, %w {threshold = 0.0 : f32} : tensor<16x256xf32>, !qcc.qtensor<16x256xq4_K> -> tensor<16x256xf32>
  return
}

// -----

// ste_grad_c2: a threshold on another mode is a mistake, not ignored.
func.func @ste_grad_c2_stray_threshold(%g: tensor<16x256xf32>, %w: !qcc.qtensor<16x256xq4_K>) {
  // expected-error @below {{'qcc.ste_grad' op ste_grad_c2: 'threshold' only applies to mode 'clipped'}}
  %0 = qcc.ste_grad identity %g, %w {threshold = 1.0 : f32} : tensor<16x256xf32>, !qcc.qtensor<16x256xq4_K> -> tensor<16x256xf32>
  return
}

// -----

// ste_grad_c2: ewgs needs a non-negative lambda.
func.func @ste_grad_c2_lambda(%g: tensor<16x256xf32>, %w: !qcc.qtensor<16x256xq4_K>) {
  // expected-error @below {{'qcc.ste_grad' op ste_grad_c2: mode 'ewgs' needs a non-negative 'lambda'}}
  %0 = qcc.ste_grad ewgs %g, %w {lambda = -1.0 : f32} : tensor<16x256xf32>, !qcc.qtensor<16x256xq4_K> -> tensor<16x256xf32>
  return
}

// -----

// ste_grad_c2: a lambda on another mode is a mistake, not ignored.
func.func @ste_grad_c2_stray_lambda(%g: tensor<16x256xf32>, %w: !qcc.qtensor<16x256xq4_K>) {
  // expected-error @below {{'qcc.ste_grad' op ste_grad_c2: 'lambda' only applies to mode 'ewgs'}}
  %0 = qcc.ste_grad identity %g, %w {lambda = 1.0 : f32} : tensor<16x256xf32>, !qcc.qtensor<16x256xq4_K> -> tensor<16x256xf32>
  return
}

// -----

// ste_grad_c3: lsq yields the scale gradient.
func.func @ste_grad_c3_lsq(%g: tensor<16x256xf32>, %w: !qcc.qtensor<16x256xq4_K>) {
  // expected-error @below {{'qcc.ste_grad' op ste_grad_c3: mode 'lsq' yields a scale gradient as a second result, and only it does}}
  %0 = qcc.ste_grad lsq %g, %w : tensor<16x256xf32>, !qcc.qtensor<16x256xq4_K> -> tensor<16x256xf32>
  return
}

// -----

// ste_grad_c3: other modes do not.
func.func @ste_grad_c3_identity(%g: tensor<16x256xf32>, %w: !qcc.qtensor<16x256xq4_K>) {
  // expected-error @below {{'qcc.ste_grad' op ste_grad_c3: mode 'lsq' yields a scale gradient as a second result, and only it does}}
  %0, %1 = qcc.ste_grad identity %g, %w : tensor<16x256xf32>, !qcc.qtensor<16x256xq4_K> -> tensor<16x256xf32>, tensor<16x1xf32>
  return
}

// -----

// ste_grad_c4: f32 storage has no scale to learn.
func.func @ste_grad_c4_format(%g: tensor<16x256xf32>, %w: !qcc.qtensor<16x256xf32>) {
  // expected-error @below {{'qcc.ste_grad' op ste_grad_c4: format 'f32' has no block scale to learn}}
  %0, %1 = qcc.ste_grad lsq %g, %w : tensor<16x256xf32>, !qcc.qtensor<16x256xf32> -> tensor<16x256xf32>, tensor<16x256xf32>
  return
}

// -----

// ste_grad_c4: one scale gradient per block.
func.func @ste_grad_c4_grid(%g: tensor<16x256xf32>, %w: !qcc.qtensor<16x256xq8_0>) {
  // expected-error @below {{'qcc.ste_grad' op ste_grad_c4: scale_grad shape [16, 1] is not the block grid [16, 8]}}
  %0, %1 = qcc.ste_grad lsq %g, %w : tensor<16x256xf32>, !qcc.qtensor<16x256xq8_0> -> tensor<16x256xf32>, tensor<16x1xf32>
  return
}

// -----

// carry_update_c1: delta has the weight's shape.
func.func @carry_update_c1(%w: !qcc.qtensor<4x256xq4_K>, %c: tensor<4x256xf32>, %d: tensor<4x128xf32>) {
  // expected-error @below {{'qcc.carry_update' op carry_update_c1: delta shape [4, 128] differs from the weight shape [4, 256]}}
  %0, %1 = qcc.carry_update %w, %c, %d : !qcc.qtensor<4x256xq4_K>, tensor<4x256xf32>, tensor<4x128xf32>
  return
}

// -----

// carry_update_c2: a dense carry has the weight's shape.
func.func @carry_update_c2(%w: !qcc.qtensor<4x256xq4_K>, %c: tensor<4x16xf32>, %d: tensor<4x256xf32>) {
  // expected-error @below {{'qcc.carry_update' op carry_update_c2: dense carry shape [4, 16] differs from the weight shape [4, 256]}}
  %0, %1 = qcc.carry_update %w, %c, %d : !qcc.qtensor<4x256xq4_K>, tensor<4x16xf32>, tensor<4x256xf32>
  return
}

// -----

// carry_update_c3: a JL chunk covers whole blocks.
func.func @carry_update_c3_chunk(%w: !qcc.qtensor<4x512xq4_K>, %c: tensor<4x64xf32>, %d: tensor<4x512xf32>) {
  // expected-error @below {{'qcc.carry_update' op carry_update_c3: JL chunk 128 must be a multiple of the block length 256 and divide the innermost dimension 512}}
  %0, %1 = qcc.carry_update %w, %c, %d {jl = #qcc.jl<dim = 16, chunk = 128, seed = 1>} : !qcc.qtensor<4x512xq4_K>, tensor<4x64xf32>, tensor<4x512xf32>
  return
}

// -----

// carry_update_c3: a JL carry holds dim values per chunk.
func.func @carry_update_c3_shape(%w: !qcc.qtensor<4x512xq4_K>, %c: tensor<4x16xf32>, %d: tensor<4x512xf32>) {
  // expected-error @below {{'qcc.carry_update' op carry_update_c3: JL carry shape [4, 16] must be [4, 32] (innermost = K / chunk * dim)}}
  %0, %1 = qcc.carry_update %w, %c, %d {jl = #qcc.jl<dim = 16, chunk = 256, seed = 1>} : !qcc.qtensor<4x512xq4_K>, tensor<4x16xf32>, tensor<4x512xf32>
  return
}

// -----

// A JL sketch larger than its chunk saves nothing.
func.func @jl_attr(%w: !qcc.qtensor<4x256xq4_K>, %c: tensor<4x512xf32>, %d: tensor<4x256xf32>) {
  // expected-error @below {{JL carry dimension 512 exceeds its chunk 256}}
  %0, %1 = qcc.carry_update %w, %c, %d {jl = #qcc.jl<dim = 512, chunk = 256, seed = 1>} : !qcc.qtensor<4x256xq4_K>, tensor<4x512xf32>, tensor<4x256xf32>
  return
}

// -----

// A JL sketch needs at least one dimension.
func.func @jl_attr_dim(%w: !qcc.qtensor<4x256xq4_K>, %c: tensor<4x0xf32>, %d: tensor<4x256xf32>) {
  // expected-error @below {{JL carry dimension must be positive, got 0}}
  %0, %1 = qcc.carry_update %w, %c, %d {jl = #qcc.jl<dim = 0, chunk = 256, seed = 1>} : !qcc.qtensor<4x256xq4_K>, tensor<4x0xf32>, tensor<4x256xf32>
  return
}

// -----

// JL chunks are positive.
func.func @jl_attr_chunk(%w: !qcc.qtensor<4x256xq4_K>, %c: tensor<4x1xf32>, %d: tensor<4x256xf32>) {
  // expected-error @below {{JL chunk must be positive, got -256}}
  %0, %1 = qcc.carry_update %w, %c, %d {jl = #qcc.jl<dim = 1, chunk = -256, seed = 1>} : !qcc.qtensor<4x256xq4_K>, tensor<4x1xf32>, tensor<4x256xf32>
  return
}

// -----

// hadamard_c1: Sylvester matrices exist for powers of two only.
func.func @hadamard_c1(%x: tensor<8x96xf32>) {
  // expected-error @below {{'qcc.hadamard' op hadamard_c1: block 48 is not a power of two}}
  %0 = qcc.hadamard %x block 48 : tensor<8x96xf32>
  return
}

// -----

// hadamard_c2: the innermost dimension holds whole blocks.
func.func @hadamard_c2(%x: tensor<8x96xf32>) {
  // expected-error @below {{'qcc.hadamard' op hadamard_c2: innermost dimension 96 must be static and divisible by the block 64}}
  %0 = qcc.hadamard %x block 64 : tensor<8x96xf32>
  return
}

// -----

// hadamard_c2: a dynamic innermost dimension cannot be checked.
func.func @hadamard_c2_dynamic(%x: tensor<8x?xf32>) {
  // expected-error @below {{'qcc.hadamard' op hadamard_c2: innermost dimension ? must be static and divisible by the block 64}}
  %0 = qcc.hadamard %x block 64 : tensor<8x?xf32>
  return
}

// -----

// In generic form, an orientation outside the enum is rejected.
func.func @qmatmul_bad_orientation(%x: tensor<8x512xf32>, %w: !qcc.qtensor<256x512xq4_K>) {
  // expected-error @below {{'qcc.qmatmul' op property 'orientation' failed to satisfy constraint: which product qcc.qmatmul computes}}
  %0 = "qcc.qmatmul"(%x, %w) <{orientation = 5 : i32}> : (tensor<8x512xf32>, !qcc.qtensor<256x512xq4_K>) -> tensor<8x256xf32>
  return
}

// -----

// weight_update_c1: the weight is 2-D.
func.func @weight_update_c1_rank(%gy: tensor<8x4xf32>, %x: tensor<8x256xf32>, %w: !qcc.qtensor<2x4x256xq4_K>, %c: tensor<2x4x256xf32>) {
  // expected-error @below {{'qcc.weight_update' op weight_update_c1: the weight must be 2-D, got [2, 4, 256]}}
  %0, %1 = qcc.weight_update %gy, %x, %w, %c : tensor<8x4xf32>, tensor<8x256xf32>, !qcc.qtensor<2x4x256xq4_K>, tensor<2x4x256xf32> {
  ^bb0(%g: f32, %wv: f32):
    qcc.yield %g : f32
  }
  return
}

// -----

// weight_update_c1: gy is [M, N] and x is [M, K].
func.func @weight_update_c1_shapes(%gy: tensor<8x4xf32>, %x: tensor<6x256xf32>, %w: !qcc.qtensor<4x256xq4_K>, %c: tensor<4x256xf32>) {
  // expected-error @below {{'qcc.weight_update' op weight_update_c1: gy [8, 4] and x [6, 256] must be [M, N] and [M, K] for the weight's [N, K] = [4, 256]}}
  %0, %1 = qcc.weight_update %gy, %x, %w, %c : tensor<8x4xf32>, tensor<6x256xf32>, !qcc.qtensor<4x256xq4_K>, tensor<4x256xf32> {
  ^bb0(%g: f32, %wv: f32):
    qcc.yield %g : f32
  }
  return
}

// -----

// weight_update_c2: elementwise operands have the weight's shape.
func.func @weight_update_c2(%gy: tensor<8x4xf32>, %x: tensor<8x256xf32>, %w: !qcc.qtensor<4x256xq4_K>, %c: tensor<4x256xf32>, %m: tensor<4x128xf32>) {
  // expected-error @below {{'qcc.weight_update' op weight_update_c2: elementwise operand or result shape [4, 128] differs from the weight shape [4, 256]}}
  %0, %1 = qcc.weight_update %gy, %x, %w, %c ins(%m : tensor<4x128xf32>) : tensor<8x4xf32>, tensor<8x256xf32>, !qcc.qtensor<4x256xq4_K>, tensor<4x256xf32> {
  ^bb0(%g: f32, %wv: f32, %mi: f32):
    qcc.yield %g : f32
  }
  return
}

// -----

// weight_update_c3: the carry rules of carry_update.
func.func @weight_update_c3(%gy: tensor<8x4xf32>, %x: tensor<8x256xf32>, %w: !qcc.qtensor<4x256xq4_K>, %c: tensor<4x16xf32>) {
  // expected-error @below {{'qcc.weight_update' op weight_update_c3: dense carry shape [4, 16] differs from the weight shape [4, 256]}}
  %0, %1 = qcc.weight_update %gy, %x, %w, %c : tensor<8x4xf32>, tensor<8x256xf32>, !qcc.qtensor<4x256xq4_K>, tensor<4x16xf32> {
  ^bb0(%g: f32, %wv: f32):
    qcc.yield %g : f32
  }
  return
}

// -----

// weight_update_c4: the body takes (f32, f32, element of each ins).
func.func @weight_update_c4_args(%gy: tensor<8x4xf32>, %x: tensor<8x256xf32>, %w: !qcc.qtensor<4x256xq4_K>, %c: tensor<4x256xf32>) {
  // expected-error @below {{'qcc.weight_update' op weight_update_c4: the body takes (f32 gradient, f32 weight, one element per ins tensor), i.e. 2 arguments of types 'f32', 'f32'}}
  %0, %1 = qcc.weight_update %gy, %x, %w, %c : tensor<8x4xf32>, tensor<8x256xf32>, !qcc.qtensor<4x256xq4_K>, tensor<4x256xf32> {
  ^bb0(%g: f32):
    qcc.yield %g : f32
  }
  return
}

// -----

// weight_update_c4: the body yields (f32 delta, element of each extra result).
func.func @weight_update_c4_yield(%gy: tensor<8x4xf32>, %x: tensor<8x256xf32>, %w: !qcc.qtensor<4x256xq4_K>, %c: tensor<4x256xf32>) {
  // expected-error @below {{'qcc.weight_update' op weight_update_c4: the body must yield (f32 delta, one element per extra result), i.e. 2 values of types 'f32', 'bf16'}}
  %0, %1, %2 = qcc.weight_update %gy, %x, %w, %c : tensor<8x4xf32>, tensor<8x256xf32>, !qcc.qtensor<4x256xq4_K>, tensor<4x256xf32> -> tensor<4x256xbf16> {
  ^bb0(%g: f32, %wv: f32):
    qcc.yield %g : f32
  }
  return
}

// -----

// scale_update_c1: one delta per block.
func.func @scale_update_c1(%w: !qcc.qtensor<4x512xq4_K>, %d: tensor<4x512xf32>) {
  // expected-error @below {{'qcc.scale_update' op scale_update_c1: delta shape [4, 512] is not the block grid [4, 2]}}
  %0 = qcc.scale_update %w, %d : !qcc.qtensor<4x512xq4_K>, tensor<4x512xf32>
  return
}

// -----

// scale_update_c2: only formats with a block scale field.
func.func @scale_update_c2(%w: !qcc.qtensor<4x64xnvfp4>, %d: tensor<4x1xf32>) {
  // expected-error @below {{'qcc.scale_update' op scale_update_c2: format 'nvfp4' has no block scale field}}
  %0 = qcc.scale_update %w, %d : !qcc.qtensor<4x64xnvfp4>, tensor<4x1xf32>
  return
}

// -----

// weight_update_c5: the guard is a 0-d tensor.
func.func @weight_update_c5(%gy: tensor<8x4xf32>, %x: tensor<8x256xf32>, %w: !qcc.qtensor<4x256xq4_K>, %c: tensor<4x256xf32>, %l: tensor<2xf32>) {
  // expected-error @below {{'qcc.weight_update' op weight_update_c5: the guard must be a 0-d tensor}}
  %0, %1 = qcc.weight_update %gy, %x, %w, %c guard(%l : tensor<2xf32>) : tensor<8x4xf32>, tensor<8x256xf32>, !qcc.qtensor<4x256xq4_K>, tensor<4x256xf32> {
  ^bb0(%g: f32, %wv: f32):
    qcc.yield %g : f32
  }
  return
}

// -----

// weight_update_c6: an lsq scale gradient has one value per block.
func.func @weight_update_c6(%gy: tensor<8x4xf32>, %x: tensor<8x256xf32>, %w: !qcc.qtensor<4x256xq4_K>, %c: tensor<4x256xf32>) {
  // expected-error @below {{'qcc.weight_update' op weight_update_c6: scale_grad shape [4, 2] is not the block grid [4, 1]}}
  %0, %1, %2 = qcc.weight_update %gy, %x, %w, %c : tensor<8x4xf32>, tensor<8x256xf32>, !qcc.qtensor<4x256xq4_K>, tensor<4x256xf32> lsq(tensor<4x2xf32>) {
  ^bb0(%g: f32, %wv: f32):
    qcc.yield %g : f32
  }
  return
}

// -----

// gather_c1: the table must be 2-D.
func.func @gather_c1(%t: !qcc.qtensor<2x4x64xq8_0>, %ids: tensor<3xi32>) {
  // expected-error @below {{'qcc.gather' op gather_c1: the table has rank 3; it must be 2-D [rows, columns]}}
  %0 = qcc.gather %t[%ids] : !qcc.qtensor<2x4x64xq8_0>, tensor<3xi32> -> tensor<3x64xf32>
  return
}

// -----

// gather_c2: one table row per id.
func.func @gather_c2(%t: !qcc.qtensor<8x64xq8_0>, %ids: tensor<3xi32>) {
  // expected-error @below {{'qcc.gather' op gather_c2: result shape [4, 64] is not [3, 64] (one table row per id)}}
  %0 = qcc.gather %t[%ids] : !qcc.qtensor<8x64xq8_0>, tensor<3xi32> -> tensor<4x64xf32>
  return
}

// -----

// all_reduce_c1: at least one rank.
func.func @all_reduce_c1(%g: tensor<4x8xf32>) {
  // expected-error @below {{'qcc.all_reduce' op all_reduce_c1: ranks 0 must be at least 1}}
  %0 = qcc.all_reduce %g ranks 0 : tensor<4x8xf32>
  return
}

// -----

// all_gather_c1: at least one rank.
func.func @all_gather_c1(%x: tensor<4x8xf32>) {
  // expected-error @below {{'qcc.all_gather' op all_gather_c1: ranks -1 must be at least 1}}
  %0 = qcc.all_gather %x ranks -1 : tensor<4x8xf32> -> tensor<4x8xf32>
  return
}

// -----

// all_gather_c2: the outermost dimension times the ranks, the rest as is.
func.func @all_gather_c2(%x: tensor<4x8xf32>) {
  // expected-error @below {{'qcc.all_gather' op all_gather_c2: result 'tensor<12x8xf32>' must be 'tensor<4x8xf32>' with its outermost dimension multiplied by ranks 2}}
  %0 = qcc.all_gather %x ranks 2 : tensor<4x8xf32> -> tensor<12x8xf32>
  return
}
