//===- LoweringUtils.h - Shared pieces of qcc-to-loops lowerings -*- C++
//-*-===//
//
// Buffers, casts, block decoding and runtime calls used by the per-op-family
// lowerings of qcc-lower-to-loops (DequantToLoops.cpp, GatherToLoops.cpp,
// QMatmulToLoops.cpp, RuntimeCallLowerings.cpp, HadamardToLoops.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef QCC_LIB_CONVERSION_QCCTOLOOPS_LOWERINGUTILS_H
#define QCC_LIB_CONVERSION_QCCTOLOOPS_LOWERINGUTILS_H

#include "qcc/Conversion/QccToLoops/QccToLoops.h"
#include "qcc/Dialect/Qcc/IR/QccOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/Builders.h"
#include "mlir/Transforms/DialectConversion.h"

namespace mlir::qcc::detail {

constexpr StringLiteral kGemmFn = "qcc_rt_gemm_f32";
constexpr StringLiteral kGemmBf16Fn = "qcc_rt_gemm_bf16";
constexpr StringLiteral kCarryUpdateFn = "qcc_rt_carry_update";

Value cIndex(OpBuilder &b, Location loc, int64_t v);

/// The memref with all dimensions folded into one (identity layouts only).
Value flatten(OpBuilder &b, Location loc, Value memref);

/// memref<b... x M x C> -> memref<(b...·M) x C> (identity layouts only).
Value collapseToMatrix(OpBuilder &b, Location loc, Value memref);

/// Product of all dimensions of a memref, as an index value.
Value numElements(OpBuilder &b, Location loc, Value memref);

/// An uninitialized buffer of `type`, sized from `like` (a buffer of the
/// same rank) where dimensions are dynamic.
Value allocBuffer(OpBuilder &b, Location loc, MemRefType type, Value like);

/// An uninitialized buffer shaped like `tensorType`, sized from `like`.
Value allocLike(OpBuilder &b, Location loc, RankedTensorType tensorType,
                Value like);

Value toTensor(OpBuilder &b, Location loc, Value buffer, Type tensorType);

Value toBuffer(OpBuilder &b, Location loc, Value tensor);

/// f32 -> `to` (f32, f16 or bf16), rounding to nearest even exactly as the
/// runtime's converters do. bf16 is rounded with integer ops: arith.truncf
/// may become an instruction (AVX512-BF16 vcvtneps2bf16) that flushes f32
/// subnormals to zero, which the runtime, and ggml, do not.
Value castFromF32(OpBuilder &b, Location loc, Value v, Type to);

Value castToF32(OpBuilder &b, Location loc, Value v);

/// Decodes `numBlocks` consecutive blocks starting at block `firstBlock` of
/// the flat storage `bytes` into the flat f32 buffer `out` at element
/// `outBase`, one block after the other.
LogicalResult decodeBlocks(OpBuilder &b, Location loc, QTensorType type,
                           Value bytes, Value firstBlock, Value numBlocks,
                           Value out, Value outBase);

/// The declaration of runtime function `name` (runtime/include/qcc/Runtime/
/// StepRuntime.h) in the module of `from`, created on first use.
func::FuncOp getOrDeclareRuntimeFunction(OpBuilder &b, Operation *from,
                                         StringRef name, FunctionType type);

/// The data pointer of an identity-layout memref, as an !llvm.ptr.
Value dataPointer(OpBuilder &b, Location loc, Value memref);

/// A float tensor as an f32 buffer (widened into a new one when narrower).
Value toF32Buffer(OpBuilder &b, Location loc, Value tensor);

/// The address of element (row, col) of a row-major f32 buffer whose rows
/// are `ld` floats apart, as an !llvm.ptr.
Value elementPointer(OpBuilder &b, Location loc, Value memref, Value row,
                     Value col, Value ld);

/// The address `byteOffset` bytes into an identity-layout memref, as an
/// !llvm.ptr.
Value bytePointer(OpBuilder &b, Location loc, Value memref, Value byteOffset);

/// qcc_rt_gemm_f32, or with `bf16` qcc_rt_gemm_bf16 (the same signature).
func::FuncOp getOrDeclareGemm(OpBuilder &b, Operation *from, bool bf16);

/// qcc_rt_carry_update: (ggml type, w_in, carry_in, delta, w_out, carry_out,
/// rows, row_len, carry_bf16, jl_dim, jl_chunk, jl_seed) -> i32.
func::FuncOp getOrDeclareCarryUpdate(OpBuilder &b, Operation *from);

/// C += op(A) · op(B) through the runtime's micro-GEMM; `a`, `b`, `c` are
/// element pointers, the leading dimensions index values; the bf16 GEMM
/// where `options.bf16Gemm`.
void callGemm(OpBuilder &b, Location loc, Operation *from,
              const QccToLoopsOptions &options, Value m, Value n, Value k,
              Value a, Value lda, bool aTransposed, Value bPtr, Value ldb,
              bool bTransposed, Value c, Value ldc);

/// qmatmuls with at most this many activation rows (static) decode W
/// straight into vector registers instead of tiles for the micro-GEMM
/// (QMatmulSmallN.cpp). Backward accumulates in memory, m rows at a time,
/// and loses to the tiles sooner. Measured on the dev machine
/// (docs/benchmarks.md).
constexpr int64_t kSmallNMaxRowsFwd = 8;
constexpr int64_t kSmallNMaxRowsBwd = 4;
/// Forward few-rows qmatmuls (f32 and int8): W rows per iteration of the
/// parallel loop.
constexpr int64_t kSmallNRowsPerTask = 16;

/// Whether a qmatmul with `rows` activation rows (per weight matrix) takes
/// the few-rows path.
bool useSmallNQMatmul(int64_t rows, bool fwd);

/// The few-rows qmatmul of one weight matrix: `m` activation rows starting
/// at row `rowBase` of `lhs2d` (and of `out2d`, the f32/f16/bf16 result),
/// against the W rows starting at `wRowBase` of the flat block storage
/// `bytes`. Emits an scf.parallel at the builder's insertion point.
/// With `options.int8Activations`, a forward qmatmul of a format that
/// supportsInt8Gemv quantizes the activations to int8 blocks first
/// (QMatmulInt8.cpp).
LogicalResult emitSmallNQMatmul(OpBuilder &b, Location loc, Operation *from,
                                QTensorType wType, bool fwd, int64_t m,
                                Value bytes, Value lhs2d, Value out2d,
                                Value rowBase, Value wRowBase,
                                const QccToLoopsOptions &options);

/// Helpers of the few-rows paths (QMatmulSmallN.cpp): "4x32xf32" for a
/// memref type; a private function `name` of the module of `from`, built by
/// `body` on first use; prefetches of W ahead of [byte, byte + count).
std::string memrefShapeName(MemRefType t);
FailureOr<func::FuncOp> getOrCreatePrivateFunction(
    OpBuilder &b, Operation *from, StringRef name, ArrayRef<Type> argTypes,
    function_ref<LogicalResult(OpBuilder &, ValueRange)> body);
void prefetchWeight(OpBuilder &b, Location loc, Value bytes, Value byte,
                    int64_t count);

/// Whether the int8-activation GEMV handles `wType` (q4_0, q8_0, q4_K,
/// q6_K with K a multiple of the block).
bool supportsInt8Gemv(QTensorType wType);

/// The int8-activation forward qmatmul of `m` rows (see emitSmallNQMatmul):
/// the quantization prologue at the builder's insertion point, then an
/// scf.parallel over chunks of W rows calling a function per format and
/// shape.
LogicalResult emitInt8SmallNQMatmul(OpBuilder &b, Location loc,
                                    Operation *from, QTensorType wType,
                                    int64_t m, Value bytes, Value lhs2d,
                                    Value out2d, Value rowBase, Value wRowBase,
                                    Int8Dot dot);

/// The buffers of a qcc.gather lowering: the table's flat block bytes, the
/// ids as a buffer, their count, the table's row count, and the f32 result
/// (shaped and flat); fails when a row is not whole blocks.
struct GatherBuffers {
  Value bytes, ids, numIds, numRows, out, flatOut;
  int64_t blocksPerRow;
};
FailureOr<GatherBuffers> prepareGather(OpBuilder &b, Location loc, GatherOp op,
                                       Value table, Value ids);

// Pattern sets of the op families.
void populateDequantToLoopsPatterns(TypeConverter &converter,
                                    RewritePatternSet &patterns);
void populateGatherToLoopsPatterns(TypeConverter &converter,
                                   RewritePatternSet &patterns);
void populateQMatmulToLoopsPatterns(TypeConverter &converter,
                                    RewritePatternSet &patterns,
                                    const QccToLoopsOptions &options);
/// f32 contractions (batched or not) on the micro-GEMM
/// (ContractionToGemm.cpp).
void populateContractionToGemmPatterns(TypeConverter &converter,
                                       RewritePatternSet &patterns,
                                       const QccToLoopsOptions &options);
void populateRuntimeCallPatterns(TypeConverter &converter,
                                 RewritePatternSet &patterns);
void populateHadamardToLoopsPatterns(TypeConverter &converter,
                                     RewritePatternSet &patterns);
void populateWeightUpdateToLoopsPatterns(TypeConverter &converter,
                                         RewritePatternSet &patterns,
                                         const QccToLoopsOptions &options);
/// The kernel-form lowerings of dequant and qmatmul (KernelFormLowerings.cpp,
/// qcc/Conversion/KernelForm.h), at a higher benefit than the CPU ones.
void populateKernelFormPatterns(TypeConverter &converter,
                                RewritePatternSet &patterns);

/// Whether `op` is an f32 contraction that becomes micro-GEMM calls
/// (ContractionToGemm.cpp).
bool isGemmCandidate(Operation *op);

} // namespace mlir::qcc::detail

#endif // QCC_LIB_CONVERSION_QCCTOLOOPS_LOWERINGUTILS_H
