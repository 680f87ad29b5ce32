//===- LoweringUtils.cpp - Shared pieces of the qcc-to-loops lowerings ----===//

#include "LoweringUtils.h"

#include "qcc/Conversion/QccToLoops/BlockDecode.h"

#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"

using namespace mlir;
using namespace mlir::qcc;

namespace mlir::qcc::detail {

Value cIndex(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIndexOp::create(b, loc, v);
}

/// The memref with all dimensions folded into one (identity layouts only).
Value flatten(OpBuilder &b, Location loc, Value memref) {
  auto type = cast<MemRefType>(memref.getType());
  if (type.getRank() == 1)
    return memref;
  ReassociationIndices all;
  for (int64_t i = 0; i < type.getRank(); ++i)
    all.push_back(i);
  return memref::CollapseShapeOp::create(b, loc, memref,
                                         ArrayRef<ReassociationIndices>{all});
}

Value collapseToMatrix(OpBuilder &b, Location loc, Value memref) {
  auto type = cast<MemRefType>(memref.getType());
  if (type.getRank() == 2)
    return memref;
  ReassociationIndices outer;
  for (int64_t i = 0; i + 1 < type.getRank(); ++i)
    outer.push_back(i);
  ReassociationIndices inner{type.getRank() - 1};
  return memref::CollapseShapeOp::create(
      b, loc, memref, ArrayRef<ReassociationIndices>{outer, inner});
}

/// Product of all dimensions of a memref, as an index value.
Value numElements(OpBuilder &b, Location loc, Value memref) {
  auto type = cast<MemRefType>(memref.getType());
  Value n = cIndex(b, loc, 1);
  for (int64_t i = 0; i < type.getRank(); ++i) {
    Value dim = type.isDynamicDim(i)
                    ? memref::DimOp::create(b, loc, memref, i).getResult()
                    : cIndex(b, loc, type.getDimSize(i));
    n = arith::MulIOp::create(b, loc, n, dim);
  }
  return n;
}

/// An uninitialized buffer of `type`, sized from `like` (a buffer of the
/// same rank) where dimensions are dynamic.
Value allocBuffer(OpBuilder &b, Location loc, MemRefType type, Value like) {
  SmallVector<Value> dynamic;
  for (int64_t i = 0; i < type.getRank(); ++i)
    if (type.isDynamicDim(i))
      dynamic.push_back(memref::DimOp::create(b, loc, like, i));
  return memref::AllocOp::create(b, loc, type, dynamic);
}

/// An uninitialized buffer shaped like `tensorType`, sized from `like`.
Value allocLike(OpBuilder &b, Location loc, RankedTensorType tensorType,
                Value like) {
  return allocBuffer(
      b, loc,
      MemRefType::get(tensorType.getShape(), tensorType.getElementType()),
      like);
}

Value toTensor(OpBuilder &b, Location loc, Value buffer, Type tensorType) {
  return bufferization::ToTensorOp::create(b, loc, tensorType, buffer,
                                           b.getUnitAttr(), b.getUnitAttr());
}

Value toBuffer(OpBuilder &b, Location loc, Value tensor) {
  auto type = cast<RankedTensorType>(tensor.getType());
  return bufferization::ToBufferOp::create(
      b, loc, MemRefType::get(type.getShape(), type.getElementType()), tensor,
      /*read_only=*/true);
}

/// f32 -> `to` (f32, f16 or bf16), rounding to nearest even exactly as the
/// runtime's converters do. bf16 is rounded with integer ops: arith.truncf
/// may become an instruction (AVX512-BF16 vcvtneps2bf16) that flushes f32
/// subnormals to zero, which the runtime, and ggml, do not.
Value castFromF32(OpBuilder &b, Location loc, Value v, Type to) {
  if (to.isF32())
    return v;
  if (!to.isBF16())
    return arith::TruncFOp::create(b, loc, to, v);
  Type i32 = b.getI32Type();
  auto c = [&](int64_t x) {
    return arith::ConstantIntOp::create(b, loc, i32, x).getResult();
  };
  Value u = arith::BitcastOp::create(b, loc, i32, v);
  Value hi = arith::ShRUIOp::create(b, loc, u, c(16));
  // Round to nearest even: add 0x7fff plus the lowest kept bit.
  Value lsb = arith::AndIOp::create(b, loc, hi, c(1));
  Value rounded = arith::ShRUIOp::create(
      b, loc,
      arith::AddIOp::create(b, loc, u,
                            arith::AddIOp::create(b, loc, c(0x7fff), lsb)),
      c(16));
  // NaNs keep their sign and high payload and stay NaN (quiet bit set).
  Value isNaN = arith::CmpIOp::create(
      b, loc, arith::CmpIPredicate::ugt,
      arith::AndIOp::create(b, loc, u, c(0x7fffffff)), c(0x7f800000));
  Value bits = arith::SelectOp::create(
      b, loc, isNaN, arith::OrIOp::create(b, loc, hi, c(64)), rounded);
  Value bits16 = arith::TruncIOp::create(b, loc, b.getI16Type(), bits);
  return arith::BitcastOp::create(b, loc, to, bits16);
}

Value castToF32(OpBuilder &b, Location loc, Value v) {
  return v.getType().isF32()
             ? v
             : arith::ExtFOp::create(b, loc, b.getF32Type(), v).getResult();
}

/// Decodes `numBlocks` consecutive blocks starting at block `firstBlock` of
/// the flat storage `bytes` into the flat f32 buffer `out` at element
/// `outBase`, one block after the other.
LogicalResult decodeBlocks(OpBuilder &b, Location loc, QTensorType type,
                           Value bytes, Value firstBlock, Value numBlocks,
                           Value out, Value outBase) {
  int64_t blockElems = type.getBlockElems(), blockBytes = type.getBlockBytes();
  auto loop = scf::ForOp::create(b, loc, cIndex(b, loc, 0), numBlocks,
                                 cIndex(b, loc, 1));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(loop.getBody());
  Value i = loop.getInductionVar();
  Value block = arith::AddIOp::create(b, loc, firstBlock, i);
  Value byteOffset =
      arith::MulIOp::create(b, loc, block, cIndex(b, loc, blockBytes));
  Value outOffset = arith::AddIOp::create(
      b, loc, outBase,
      arith::MulIOp::create(b, loc, i, cIndex(b, loc, blockElems)));
  return emitBlockDecode(b, loc, type.getFormat(),
                         {bytes, byteOffset, out, outOffset});
}

/// The declaration of runtime function `name` (runtime/include/qcc/Runtime/
/// StepRuntime.h) in the module of `from`, created on first use.
func::FuncOp getOrDeclareRuntimeFunction(OpBuilder &b, Operation *from,
                                         StringRef name, FunctionType type) {
  auto module = from->getParentOfType<ModuleOp>();
  if (auto fn = module.lookupSymbol<func::FuncOp>(name))
    return fn;
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(module.getBody());
  auto fn = func::FuncOp::create(b, from->getLoc(), name, type);
  fn.setPrivate();
  return fn;
}

/// The data pointer of an identity-layout memref, as an !llvm.ptr.
Value dataPointer(OpBuilder &b, Location loc, Value memref) {
  Value index = memref::ExtractAlignedPointerAsIndexOp::create(b, loc, memref);
  Value i64 = arith::IndexCastOp::create(b, loc, b.getI64Type(), index);
  return LLVM::IntToPtrOp::create(
      b, loc, LLVM::LLVMPointerType::get(b.getContext()), i64);
}

/// A float tensor as an f32 buffer (widened into a new one when narrower).
Value toF32Buffer(OpBuilder &b, Location loc, Value tensor) {
  auto type = cast<RankedTensorType>(tensor.getType());
  Value buffer = toBuffer(b, loc, tensor);
  if (type.getElementType().isF32())
    return buffer;
  Value wide = allocLike(b, loc, type.clone(b.getF32Type()), buffer);
  Value flatIn = flatten(b, loc, buffer), flatWide = flatten(b, loc, wide);
  auto loop =
      scf::ForOp::create(b, loc, cIndex(b, loc, 0), numElements(b, loc, buffer),
                         cIndex(b, loc, 1));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(loop.getBody());
  Value v = memref::LoadOp::create(b, loc, flatIn, loop.getInductionVar());
  memref::StoreOp::create(b, loc, castToF32(b, loc, v), flatWide,
                          loop.getInductionVar());
  return wide;
}

/// The address of element (row, col) of a row-major f32 buffer whose rows
/// are `ld` floats apart, as an !llvm.ptr.
Value elementPointer(OpBuilder &b, Location loc, Value memref, Value row,
                     Value col, Value ld) {
  Value base = memref::ExtractAlignedPointerAsIndexOp::create(b, loc, memref);
  Value elem = arith::AddIOp::create(
      b, loc, arith::MulIOp::create(b, loc, row, ld), col);
  Value addr = arith::AddIOp::create(
      b, loc, base,
      arith::MulIOp::create(b, loc, elem,
                            arith::ConstantIndexOp::create(b, loc, 4)));
  Value i64 = arith::IndexCastOp::create(b, loc, b.getI64Type(), addr);
  return LLVM::IntToPtrOp::create(
      b, loc, LLVM::LLVMPointerType::get(b.getContext()), i64);
}

Value bytePointer(OpBuilder &b, Location loc, Value memref, Value byteOffset) {
  Value base = memref::ExtractAlignedPointerAsIndexOp::create(b, loc, memref);
  Value addr = arith::AddIOp::create(b, loc, base, byteOffset);
  Value i64 = arith::IndexCastOp::create(b, loc, b.getI64Type(), addr);
  return LLVM::IntToPtrOp::create(
      b, loc, LLVM::LLVMPointerType::get(b.getContext()), i64);
}

/// qcc_rt_carry_update (runtime/lib/step/CarryUpdate.cpp).
func::FuncOp getOrDeclareCarryUpdate(OpBuilder &b, Operation *from) {
  Type ptr = LLVM::LLVMPointerType::get(b.getContext());
  Type i32 = b.getI32Type(), i64 = b.getI64Type();
  return getOrDeclareRuntimeFunction(
      b, from, kCarryUpdateFn,
      b.getFunctionType(
          {i32, ptr, ptr, ptr, ptr, ptr, i64, i64, i32, i64, i64, i64}, {i32}));
}

/// The runtime's micro-GEMMs (runtime/lib/step/Gemm.cpp, GemmBf16.cpp).
func::FuncOp getOrDeclareGemm(OpBuilder &b, Operation *from, bool bf16) {
  Type ptr = LLVM::LLVMPointerType::get(b.getContext());
  Type i64 = b.getI64Type(), i32 = b.getI32Type();
  return getOrDeclareRuntimeFunction(
      b, from, bf16 ? kGemmBf16Fn : kGemmFn,
      b.getFunctionType({i64, i64, i64, ptr, i64, i32, ptr, i64, i32, ptr, i64},
                        {}));
}

/// C += op(A) · op(B) through the runtime's micro-GEMM; `a`, `b`, `c` are
/// element pointers, the leading dimensions index values.
void callGemm(OpBuilder &b, Location loc, Operation *from,
              const QccToLoopsOptions &options, Value m, Value n, Value k,
              Value a, Value lda, bool aTransposed, Value bPtr, Value ldb,
              bool bTransposed, Value c, Value ldc) {
  auto i64 = [&](Value index) -> Value {
    return arith::IndexCastOp::create(b, loc, b.getI64Type(), index);
  };
  auto flag = [&](bool v) -> Value {
    return arith::ConstantIntOp::create(b, loc, b.getI32Type(), v ? 1 : 0);
  };
  func::CallOp::create(b, loc, getOrDeclareGemm(b, from, options.bf16Gemm),
                       ValueRange{i64(m), i64(n), i64(k), a, i64(lda),
                                  flag(aTransposed), bPtr, i64(ldb),
                                  flag(bTransposed), c, i64(ldc)});
}

} // namespace mlir::qcc::detail
