//===- QccOps.td - qcc operations --------------------------*- tablegen -*-===//
//
// The operations of a training step through quantized weights. Verifier
// messages carry the labels (`/*dequant_c1*/` ...) named in each op's
// description; test/Dialect/Qcc/invalid.mlir has one case per label.
//
//===----------------------------------------------------------------------===//

#ifndef QCC_DIALECT_QCC_IR_QCCOPS_TD
#define QCC_DIALECT_QCC_IR_QCCOPS_TD

include "qcc/Dialect/Qcc/IR/QccTypes.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/ControlFlowInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/IR/OpBase.td"

def Qcc_FloatTensor : RankedTensorOf<[F32, BF16, F16]>;
def Qcc_F32Tensor : RankedTensorOf<[F32]>;
def Qcc_CarryTensor : RankedTensorOf<[F32, BF16]>;
def Qcc_GatherTensor : RankedTensorOf<[F32, BF16, F16, I32]>;

//===----------------------------------------------------------------------===//
// dequant
//===----------------------------------------------------------------------===//

def Qcc_DequantOp : Qcc_Op<"dequant", [Pure]> {
  let summary = "decode GGUF blocks into a float tensor";
  let description = [{
    Decodes every block of `input` exactly as ggml's dequantizer does. For
    each row `r` and block `b` of the innermost dimension (block length `B`):

        result[r, b*B + j] = round_T(decode_F(input[r, block b])[j]),  0 <= j < B

    where `decode_F` is the format's f32 decode (docs/formats.md gives each
    one) and `round_T` rounds to the result element type `T` (identity for
    f32, round-to-nearest-even for bf16 and f16).

    ```mlir
    %wf = qcc.dequant %w : !qcc.qtensor<256x512xq4_K> -> tensor<256x512xf32>
    ```

    The verifier rejects:
    - `dequant_c1`: a result shape that is not the input's shape.
  }];
  let arguments = (ins Qcc_QTensorType:$input);
  let results = (outs Qcc_FloatTensor:$result);
  let assemblyFormat = [{
    $input attr-dict `:` qualified(type($input)) `->` type($result)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// gather
//===----------------------------------------------------------------------===//

def Qcc_GatherOp : Qcc_Op<"gather", [Pure]> {
  let summary = "decode the rows of a quantized table picked by integer ids";
  let description = [{
    With `T = dequant(table)` of shape `[V, D]` (an embedding table, blocks
    along `D`), decodes only the rows that `ids` names:

        result[i, :] = T[ids[i], :]   if 0 <= ids[i] < V
        result[i, :] = 0              otherwise

    exactly as `dequant` followed by a gather, without decoding (or
    allocating) the whole table: an embedding lookup of N tokens decodes
    N·D values instead of V·D.

    ```mlir
    %e = qcc.gather %table[%ids] : !qcc.qtensor<262144x640xq8_0>, tensor<512xi32> -> tensor<512x640xf32>
    ```

    The verifier rejects:
    - `gather_c1`: a table that is not 2-D;
    - `gather_c2`: a result that is not `[N, D]` for `N` ids and `D`
      columns of the table.
  }];
  let arguments = (ins Qcc_QTensorType:$table,
                       1DTensorOf<[I32, I64]>:$ids);
  let results = (outs Qcc_F32Tensor:$result);
  let assemblyFormat = [{
    $table `[` $ids `]` attr-dict `:` qualified(type($table)) `,` type($ids)
    `->` type($result)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// requant
//===----------------------------------------------------------------------===//

def Qcc_RequantOp : Qcc_Op<"requant", [Pure]> {
  let summary = "encode a float tensor into GGUF blocks";
  let description = [{
    Encodes each block of `input` (rows along the innermost dimension) into
    the result's format, choosing scales and codes to minimise the
    importance-weighted squared error of the block:

        result[r, block b] = encode_F(input[r, b*B .. b*B+B-1], w[b*B .. b*B+B-1])

    with `w = importance` when given and `w = 1` otherwise. `importance` is a
    1-D tensor with one non-negative weight per column (the innermost
    dimension), shared by all rows — llama.cpp's importance matrix.

    `requant` is lossy, so `dequant(requant(x))` is not `x` and is never
    folded to it; neither is `requant(dequant(w))` folded to `w`, because an
    encoder that searches scales need not reproduce the block it was given.

    ```mlir
    %q = qcc.requant %x : tensor<16x512xf32> -> !qcc.qtensor<16x512xq4_K>
    %r = qcc.requant %x importance(%imp : tensor<512xf32>)
           : tensor<16x512xf32> -> !qcc.qtensor<16x512xiq2_xxs>
    ```

    The verifier rejects:
    - `requant_c1`: a result shape that is not the input's shape;
    - `requant_c2`: an importance operand that is not 1-D with the length of
      the innermost dimension;
    - `requant_c3`: a missing importance operand for a format that needs one
      (iq2_xxs, iq2_xs, iq1_s).
  }];
  let arguments = (ins Qcc_FloatTensor:$input,
                       Optional<Qcc_F32Tensor>:$importance);
  let results = (outs Qcc_QTensorType:$result);
  let assemblyFormat = [{
    $input (`importance` `(` $importance^ `:` type($importance) `)`)?
    attr-dict `:` type($input) `->` qualified(type($result))
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// qmatmul
//===----------------------------------------------------------------------===//

def Qcc_QMatmulOp : Qcc_Op<"qmatmul", [Pure]> {
  let summary = "matrix product with a quantized weight, decoded on the fly";
  let description = [{
    With `W = dequant(weight)` of shape `[N, K]` (GGUF's Linear layout:
    `N` outputs, `K` inputs, blocks along `K`), computes in f32:

    - `fwd`: `result[..., m, n] = sum_k lhs[..., m, k] * W[n, k]`
      (`y = x · Wᵀ`, the forward pass of a Linear layer);
    - `bwd`: `result[..., m, k] = sum_n lhs[..., m, n] * W[n, k]`
      (`dx = g · W`, the backward-data pass).

    `lhs` may have leading batch dimensions `...`; the weight is either 2-D
    (shared by every batch) or carries the same batch dimensions. The result
    is rounded to its element type after accumulation.

    ```mlir
    %y  = qcc.qmatmul fwd %x, %w : tensor<8x512xf32>, !qcc.qtensor<256x512xq4_K> -> tensor<8x256xf32>
    %dx = qcc.qmatmul bwd %g, %w : tensor<4x8x256xf32>, !qcc.qtensor<256x512xq4_K> -> tensor<4x8x512xf32>
    ```

    The verifier rejects:
    - `qmatmul_c1`: an lhs of rank < 2, or a weight that is neither 2-D nor of
      the lhs's rank;
    - `qmatmul_c2`: batch dimensions of the weight or the result that differ
      from the lhs's;
    - `qmatmul_c3`: a contracted dimension that differs between lhs and
      weight (`K` for fwd, `N` for bwd);
    - `qmatmul_c4`: a result whose last two dimensions are not `[M, N]`
      (fwd) or `[M, K]` (bwd).
  }];
  let arguments = (ins EnumProp<Qcc_MatmulOrientation>:$orientation,
                       Qcc_FloatTensor:$lhs, Qcc_QTensorType:$weight);
  let results = (outs Qcc_FloatTensor:$result);
  let assemblyFormat = [{
    $orientation $lhs `,` $weight attr-dict `:` type($lhs) `,`
    qualified(type($weight)) `->` type($result)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// ste_grad
//===----------------------------------------------------------------------===//

def Qcc_SteGradOp : Qcc_Op<"ste_grad", [Pure]> {
  let summary = "straight-through estimator for a quantized weight";
  let description = [{
    Maps `grad`, the gradient of the loss with respect to `Ŵ = dequant(weight)`,
    to `direction`, the gradient used to update the stored weight. Per
    element `i` (all tensors have the weight's shape):

    - `identity`: `direction[i] = grad[i]`;
    - `clipped` (`threshold = t > 0`):
      `direction[i] = |Ŵ[i] + res[i]| <= t ? grad[i] : 0`;
    - `ewgs` (`lambda = λ >= 0`, element-wise gradient scaling):
      `direction[i] = grad[i] * (1 + λ * sign(grad[i]) * res[i])`;
    - `lsq`: `direction[i] = grad[i]`, and a second result `scale_grad` holds
      for every block `b` the gradient with respect to the block's scale
      field `d_b` (the f16 `d` of the block header, or the format's
      counterpart): `scale_grad[b] = sum_{i in b} grad[i] * ∂Ŵ[i]/∂d_b`.
      As `Ŵ` is linear in `d_b` apart from a `d_b`-independent offset (the
      `dmin·m` term of q4_1/q5_1/K-quants), `∂Ŵ[i]/∂d_b = (Ŵ[i] - off[i]) / d_b`.

    `res` is the optional `residual` operand (the latent weight minus the
    stored one, i.e. a dense carry), taken as zero when absent. `scale_grad`
    has the weight's shape with the innermost dimension divided by the block
    length.

    ```mlir
    %g = qcc.ste_grad identity %gw, %w : tensor<256x512xf32>, !qcc.qtensor<256x512xq4_K> -> tensor<256x512xf32>
    %h = qcc.ste_grad clipped %gw, %w {threshold = 0.5 : f32} : tensor<256x512xf32>, !qcc.qtensor<256x512xq4_K> -> tensor<256x512xf32>
    %d, %s = qcc.ste_grad lsq %gw, %w : tensor<256x512xf32>, !qcc.qtensor<256x512xq4_K> -> tensor<256x512xf32>, tensor<256x2xf32>
    ```

    The verifier rejects:
    - `ste_grad_c1`: a grad, residual or direction whose shape is not the
      weight's;
    - `ste_grad_c2`: `clipped` without a positive `threshold`, `ewgs` without
      a non-negative `lambda`, or either attribute on a mode that does not use
      it;
    - `ste_grad_c3`: a `scale_grad` result on a mode other than `lsq`, or
      `lsq` without one;
    - `ste_grad_c4`: `lsq` on a format with no block scale (f32, f16, bf16),
      or a `scale_grad` whose shape is not the block grid.
  }];
  let arguments = (ins EnumProp<Qcc_SteMode>:$mode,
                       Qcc_FloatTensor:$grad, Qcc_QTensorType:$weight,
                       Optional<Qcc_CarryTensor>:$residual,
                       OptionalAttr<F32Attr>:$threshold,
                       OptionalAttr<F32Attr>:$lambda);
  let results = (outs Qcc_FloatTensor:$direction,
                      Optional<Qcc_F32Tensor>:$scale_grad);
  let assemblyFormat = [{
    $mode $grad `,` $weight
    (`residual` `(` $residual^ `:` type($residual) `)`)?
    attr-dict `:` type($grad) `,` qualified(type($weight)) `->`
    type($direction) (`,` type($scale_grad)^)?
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// carry_update
//===----------------------------------------------------------------------===//

def Qcc_CarryUpdateOp : Qcc_Op<"carry_update", [Pure,
    AllTypesMatch<["weight", "new_weight"]>,
    AllTypesMatch<["carry", "new_carry"]>]> {
  let summary = "apply an update to quantized weights through a carry buffer";
  let description = [{
    Adds `delta` to the weight, keeping in `carry` whatever part of the
    running update the blocks cannot yet represent. For every block `b`
    (block length `B`, `Ŵ_b = decode(weight_b)`):

        r_b = carry_b                       (dense carry)
            = Pᵀ · carry_b                  (JL carry, per chunk; see #qcc.jl)
        v_b = Ŵ_b + r_b + delta_b           (the latent value, in f32)

    The block is **re-encoded** exactly when its fresh encoding represents
    the latent value strictly better than the stored block: with
    `q = encode(v_b)` (as `qcc.requant` without importance),
    `new_weight_b = q` if `q != weight_b` and
    `||v_b - decode(q)||² < ||v_b - decode(weight_b)||²`, else
    `new_weight_b = weight_b`. In both cases

        new_carry_b = v_b - decode(new_weight_b)              (dense)
                    = P · (v_b - decode(new_weight_b))        (JL)

    rounded to the carry's element type. Hence, up to that rounding (and the
    JL estimate), `decode(new_weight) + new_carry = decode(weight) + carry +
    delta`: nothing of an update is lost; an update too small to be
    represented accumulates in the carry until it moves a code; and with no
    update and an empty carry nothing changes (the stored block represents
    itself exactly). A block whose latent value is not finite keeps its
    weights and carry, and the error is reported to the host.

    The carry is dense (the weight's shape, f32 or bf16) unless a `jl`
    attribute makes it a Johnson-Lindenstrauss sketch, whose shape is the
    weight's with the innermost dimension `K` replaced by `(K / chunk) * dim`.

    ```mlir
    %w2, %c2 = qcc.carry_update %w, %c, %d
        : !qcc.qtensor<256x512xq4_K>, tensor<256x512xbf16>, tensor<256x512xf32>
    %w3, %c3 = qcc.carry_update %w, %j, %d {jl = #qcc.jl<dim = 16, chunk = 256, seed = 7>}
        : !qcc.qtensor<256x512xq4_K>, tensor<256x32xbf16>, tensor<256x512xf32>
    ```

    The verifier rejects:
    - `carry_update_c1`: a delta whose shape is not the weight's;
    - `carry_update_c2`: a dense carry whose shape is not the weight's;
    - `carry_update_c3`: a JL chunk that is not a multiple of the block length
      or does not divide the innermost dimension, or a JL carry whose shape
      is not the weight's with innermost dimension `(K / chunk) * dim`.
  }];
  let arguments = (ins Qcc_QTensorType:$weight, Qcc_CarryTensor:$carry,
                       Qcc_FloatTensor:$delta,
                       OptionalAttr<Qcc_JLCarryAttr>:$jl);
  let results = (outs Qcc_QTensorType:$new_weight,
                      Qcc_CarryTensor:$new_carry);
  let assemblyFormat = [{
    $weight `,` $carry `,` $delta attr-dict `:` qualified(type($weight)) `,`
    type($carry) `,` type($delta)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// hadamard
//===----------------------------------------------------------------------===//

def Qcc_HadamardOp : Qcc_Op<"hadamard", [Pure, SameOperandsAndResultType]> {
  let summary = "randomized Walsh-Hadamard rotation along the innermost dimension";
  let description = [{
    Splits the innermost dimension into blocks of `n = block` elements and
    rotates each block `x` by the orthogonal matrix `(1/√n)·H_n·diag(s)`:

        forward:  y = (1/√n) · H_n · diag(s) · x
        inverse:  x = diag(s) · (1/√n) · H_n · y

    `H_n` is the Sylvester Hadamard matrix, `H_n[i][j] = (-1)^popcount(i & j)`.
    The signs are `s_j = -1` when bit 63 of `splitmix64(seed + j)` is set and
    `+1` otherwise, for `0 <= j < n`, the same for every block; without a
    `seed`, `s = 1`. As `(1/√n)·H_n` is symmetric and orthogonal and
    `diag(s)² = I`, the inverse undoes the forward rotation exactly (up to
    rounding), which the canonicalizer uses: a `hadamard` whose operand is a
    `hadamard` of the opposite direction with the same `block` and `seed`
    folds to that operand's input.

    ```mlir
    %y = qcc.hadamard %x block 64 seed 7 : tensor<8x512xf32>
    %x2 = qcc.hadamard %y block 64 seed 7 inverse : tensor<8x512xf32>
    ```

    The verifier rejects:
    - `hadamard_c1`: a block that is not a power of two;
    - `hadamard_c2`: an innermost dimension that is dynamic or not divisible
      by the block.
  }];
  let arguments = (ins Qcc_FloatTensor:$input,
                       ConfinedAttr<I64Attr, [IntPositive]>:$block,
                       OptionalAttr<I64Attr>:$seed, UnitAttr:$inverse);
  let results = (outs Qcc_FloatTensor:$result);
  let assemblyFormat = [{
    $input `block` $block (`seed` $seed^)? (`inverse` $inverse^)? attr-dict
    `:` type($input)
  }];
  let hasVerifier = 1;
  let hasFolder = 1;
}

//===----------------------------------------------------------------------===//
// all_reduce, all_gather: data parallelism
//===----------------------------------------------------------------------===//

// The collectives of a data-parallel step (docs/distributed.md). Every rank
// runs the same step on its shard of the batch; these ops are where the
// ranks exchange values. They are not Pure: each is a call that all ranks
// make in the same order, so none may be removed, merged or reordered.
def Qcc_AllReduceOp : Qcc_Op<"all_reduce", [SameOperandsAndResultType,
    MemoryEffects<[MemRead, MemWrite]>]> {
  let summary = "sum a tensor over the ranks of a data-parallel job";
  let description = [{
    The element-wise sum of `input` over the `ranks` ranks of the job, in
    rank order (`((x_0 + x_1) + x_2) + …`), so that every rank gets the same
    bits and a rerun gets them again. With one rank it is `input`. A step
    that holds collectives runs only in a job of exactly `ranks` ranks (the
    manifest records `ranks`; docs/runtime.md).

    ```mlir
    %g = qcc.all_reduce %grad ranks 2 : tensor<16x640xf32>
    ```

    The verifier rejects:
    - `all_reduce_c1`: `ranks` less than 1.
  }];
  let arguments = (ins Qcc_F32Tensor:$input, I64Attr:$ranks);
  let results = (outs Qcc_F32Tensor:$result);
  let assemblyFormat = [{
    $input `ranks` $ranks attr-dict `:` type($input)
  }];
  let hasVerifier = 1;
}

def Qcc_AllGatherOp : Qcc_Op<"all_gather", [MemoryEffects<[MemRead, MemWrite]>]> {
  let summary = "concatenate a tensor of every rank along dimension 0";
  let description = [{
    The `input` of every rank of the job, concatenated along the outermost
    dimension in rank order: rows `[r·n, (r+1)·n)` of the result are rank
    `r`'s `n` rows. With it a weight's gradient `gyᵀ·x` over the global
    batch is one contraction of gathered rows, which the compiler still fuses
    into the weight's update, so that every rank applies the same update
    without the gradient ever being materialized. i32 tensors (token ids)
    gather too.

    ```mlir
    %x = qcc.all_gather %rows ranks 2 : tensor<512x640xf32> -> tensor<1024x640xf32>
    ```

    The verifier rejects:
    - `all_gather_c1`: `ranks` less than 1;
    - `all_gather_c2`: a result whose element type, rank or inner dimensions
      are not the input's, or whose outermost dimension is not `ranks` times
      the input's (both static).
  }];
  let arguments = (ins Qcc_GatherTensor:$input, I64Attr:$ranks);
  let results = (outs Qcc_GatherTensor:$result);
  let assemblyFormat = [{
    $input `ranks` $ranks attr-dict `:` type($input) `->` type($result)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// weight_update
//===----------------------------------------------------------------------===//

def Qcc_WeightUpdateOp : Qcc_Op<"weight_update", [
    RecursiveMemoryEffects, SingleBlock, AttrSizedOperandSegments,
    AttrSizedResultSegments,
    AllTypesMatch<["weight", "new_weight"]>,
    AllTypesMatch<["carry", "new_carry"]>]> {
  let summary = "weight gradient, update rule and carry update in one pass over W";
  let description = [{
    The fused form of a full-weight update of a quantized `[N, K]` weight
    (built by `qcc-fuse-weight-update`). With `gy` the gradient of the loss
    with respect to the layer's output (`[M, N]`) and `x` its input
    (`[M, K]`), it computes for every element `(n, k)` of the weight

        g[n, k]      = Σ_m gy[m, n] · x[m, k]          (the weight gradient)
        delta[n, k], r_1[n, k], … = body(g[n, k], Ŵ[n, k], a_1[n, k], …)

    where `Ŵ = dequant(weight)`, `a_i` are the `ins` tensors (each of the
    weight's shape: optimizer moments, a dense carry read by an estimator)
    and `body` is the region: its block arguments are `g` (f32), `Ŵ` (f32)
    and one element of each `ins` tensor; it yields `delta` (f32) and one
    element of each extra result `r_i`. Then, exactly as `qcc.carry_update`,

        new_weight, new_carry = carry_update(weight, carry, delta)

    The op never needs `g` or `delta` as whole tensors: the lowering forms
    them a tile of rows at a time (a GEMM of the tile, the body, the carry
    update of the tile's blocks), so the f32 gradient of W is never
    materialized. Values the body uses from above (a learning rate, a clip
    factor) are read as they are.

    With `lsq`, the op also yields `scale_grad`, the block-scale gradient of
    `qcc.ste_grad lsq` taken of `g` (one value per block), formed tile by
    tile as well; the direction of that estimator is `g` itself.

    An optional `guard` (a 0-d f32 tensor, normally the step's loss) makes
    the update conditional: when the guard or any element of `gy` or `x` is
    not finite, nothing is computed or written — the results are then
    unspecified, and a host that reuses the inputs' buffers for the results
    (docs/runtime.md, in-place results) keeps the weights, carry and state
    exactly as they were.

    ```mlir
    %w2, %c2, %m2 = qcc.weight_update %gy, %x, %w, %c ins(%m : tensor<256x512xbf16>)
        : tensor<8x256xf32>, tensor<8x512xf32>, !qcc.qtensor<256x512xq4_K>,
          tensor<256x512xbf16> -> tensor<256x512xbf16> {
    ^bb0(%g: f32, %wv: f32, %mi: bf16):
      %m32 = arith.extf %mi : bf16 to f32
      %mb = arith.mulf %m32, %beta : f32
      %mn = arith.addf %mb, %g : f32
      %d = arith.mulf %mn, %neg_lr : f32
      %mo = arith.truncf %mn : f32 to bf16
      qcc.yield %d, %mo : f32, bf16
    }
    ```

    The verifier rejects:
    - `weight_update_c1`: a weight that is not 2-D, or `gy`/`x` whose shapes
      are not `[M, N]` / `[M, K]` for the weight's `[N, K]`;
    - `weight_update_c2`: an `ins` tensor or extra result whose shape is not
      the weight's;
    - `weight_update_c3`: a carry that does not fit the weight, with the
      rules of `carry_update_c2` / `carry_update_c3`;
    - `weight_update_c4`: block arguments that are not `(f32, f32, element
      type of each ins)`, or a yield that is not `(f32, element type of each
      extra result)`;
    - `weight_update_c5`: a guard that is not a 0-d tensor;
    - `weight_update_c6`: a `scale_grad` whose shape is not the block grid,
      or on a format without block scales.
  }];
  let arguments = (ins Qcc_F32Tensor:$grad_out, Qcc_F32Tensor:$input,
                       Qcc_QTensorType:$weight, Qcc_CarryTensor:$carry,
                       Variadic<AnyRankedTensor>:$ins,
                       Optional<Qcc_F32Tensor>:$guard,
                       OptionalAttr<Qcc_JLCarryAttr>:$jl);
  let results = (outs Qcc_QTensorType:$new_weight,
                      Qcc_CarryTensor:$new_carry,
                      Optional<Qcc_F32Tensor>:$scale_grad,
                      Variadic<AnyRankedTensor>:$extra_results);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    $grad_out `,` $input `,` $weight `,` $carry
    (`ins` `(` $ins^ `:` type($ins) `)`)?
    (`guard` `(` $guard^ `:` type($guard) `)`)? attr-dict
    `:` type($grad_out) `,` type($input) `,` qualified(type($weight)) `,`
    type($carry) (`lsq` `(` type($scale_grad)^ `)`)?
    (`->` type($extra_results)^)? $body
  }];
  let hasVerifier = 1;
  let hasRegionVerifier = 1;
  let skipDefaultBuilders = 1;
  let builders = [
    OpBuilder<(ins "Value":$gradOut, "Value":$input, "Value":$weight,
                   "Value":$carry, "ValueRange":$ins,
                   "TypeRange":$extraResultTypes, "JLCarryAttr":$jl,
                   CArg<"Type", "{}">:$scaleGradType)>
  ];
}

def Qcc_YieldOp : Qcc_Op<"yield", [Pure, ReturnLike, Terminator,
                                   HasParent<"WeightUpdateOp">]> {
  let summary = "yield the elementwise results of a qcc.weight_update body";
  let description = [{
    Ends the body of `qcc.weight_update`: the first operand is the element of
    `delta`, the others the elements of the extra results, in order.
  }];
  let arguments = (ins Variadic<AnyType>:$values);
  let assemblyFormat = "$values attr-dict `:` type($values)";
}

//===----------------------------------------------------------------------===//
// scale_update
//===----------------------------------------------------------------------===//

def Qcc_ScaleUpdateOp : Qcc_Op<"scale_update", [Pure,
    AllTypesMatch<["weight", "result"]>]> {
  let summary = "move each block's scale field, in the format's own encoding";
  let description = [{
    The update half of LSQ (learned step size): `ste_grad lsq` gives the
    gradient with respect to every block's scale field `d_b`; an optimizer
    turns it into `delta` (one value per block, the shape of that
    `scale_grad`), and this op writes `d_b + delta[b]` back into the block
    header, rounded to the field's encoding:

    - an f16 `d` (the legacy, K- and most i-quant formats): round to nearest
      even f16;
    - iq1_m's f16 spread over the top nibbles of its four scale words: the
      same, re-spread;
    - mxfp4's e8m0 exponent: the nearest power of two (by log2), so a block
      scale moves only once the accumulated change crosses half an octave.

    Codes, sub-block scales and minimums are left as they are, so every
    element of the block is rescaled by `(d_b + delta[b]) / d_b` (up to the
    rounding of the field). A block whose new scale is not finite, or would
    reach zero or change sign, keeps its old one, and the error is reported
    to the host.

    ```mlir
    %w2 = qcc.scale_update %w, %ds : !qcc.qtensor<256x512xq4_K>, tensor<256x2xf32>
    ```

    The verifier rejects:
    - `scale_update_c1`: a delta whose shape is not the block grid (the
      weight's shape with the innermost dimension divided by the block
      length);
    - `scale_update_c2`: a format without a block scale field (f32, f16,
      bf16; nvfp4, whose scales are per 16-element sub-block).
  }];
  let arguments = (ins Qcc_QTensorType:$weight, Qcc_F32Tensor:$delta);
  let results = (outs Qcc_QTensorType:$result);
  let assemblyFormat = [{
    $weight `,` $delta attr-dict `:` qualified(type($weight)) `,` type($delta)
  }];
  let hasVerifier = 1;
}

#endif // QCC_DIALECT_QCC_IR_QCCOPS_TD
