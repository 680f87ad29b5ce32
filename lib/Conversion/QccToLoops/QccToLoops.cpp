//===- QccToLoops.cpp - qtensors to byte buffers, qcc ops to loops --------===//
//
// The step from the qcc dialect to plain buffers: a !qcc.qtensor becomes the
// memref of its GGUF block bytes (the shape with the innermost dimension in
// bytes), and each qcc op becomes loops over blocks that call the block
// decoders of BlockDecode.h, or a call of the step runtime. Float tensors
// around the ops are bridged with bufferization.to_buffer / to_tensor so
// that one-shot bufferization can take the rest of the function afterwards.
// The lowerings live one op family per file (see LoweringUtils.h).
//
//===----------------------------------------------------------------------===//

#include "qcc/Conversion/QccToLoops/QccToLoops.h"
#include "qcc/Conversion/Passes.h"

#include "LoweringUtils.h"

#include "qcc/Conversion/KernelForm.h"

#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Func/Transforms/FuncConversions.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include "llvm/ADT/StringSwitch.h"

#define DEBUG_TYPE "qcc-lower-to-loops"

namespace mlir::qcc {
#define GEN_PASS_DEF_LOWERQCCTOLOOPS
#include "qcc/Conversion/Passes.h.inc"
} // namespace mlir::qcc

using namespace mlir;
using namespace mlir::qcc;

MemRefType mlir::qcc::getStorageType(QTensorType type) {
  SmallVector<int64_t> shape(type.getShape());
  int64_t inner = shape.back();
  if (!ShapedType::isDynamic(inner))
    shape.back() = inner / type.getBlockElems() * type.getBlockBytes();
  return MemRefType::get(shape, IntegerType::get(type.getContext(), 8));
}

std::optional<Int8Dot> mlir::qcc::parseInt8Dot(llvm::StringRef name) {
  return llvm::StringSwitch<std::optional<Int8Dot>>(name)
      .Case("generic", Int8Dot::Generic)
      .Case("avx2", Int8Dot::Avx2)
      .Case("avx512vnni", Int8Dot::Avx512Vnni)
      .Default(std::nullopt);
}

void mlir::qcc::populateQccToLoopsPatterns(TypeConverter &converter,
                                           RewritePatternSet &patterns,
                                           const QccToLoopsOptions &options) {
  mlir::qcc::detail::populateDequantToLoopsPatterns(converter, patterns);
  mlir::qcc::detail::populateGatherToLoopsPatterns(converter, patterns);
  mlir::qcc::detail::populateQMatmulToLoopsPatterns(converter, patterns,
                                                    options);
  mlir::qcc::detail::populateContractionToGemmPatterns(converter, patterns,
                                                       options);
  mlir::qcc::detail::populateRuntimeCallPatterns(converter, patterns);
  mlir::qcc::detail::populateHadamardToLoopsPatterns(converter, patterns);
  mlir::qcc::detail::populateWeightUpdateToLoopsPatterns(converter, patterns,
                                                         options);
}

namespace {

// The pass
//===----------------------------------------------------------------------===//

struct LowerQccToLoopsPass
    : public mlir::qcc::impl::LowerQccToLoopsBase<LowerQccToLoopsPass> {
  using LowerQccToLoopsBase::LowerQccToLoopsBase;

  void runOnOperation() override {
    MLIRContext *ctx = &getContext();
    QccToLoopsOptions options;
    options.int8Activations = int8Activations;
    std::optional<Int8Dot> dot = parseInt8Dot(int8Dot);
    if (!dot) {
      getOperation().emitError("qcc-lower-to-loops: int8-dot must be "
                               "generic, avx2 or avx512vnni, not '")
          << int8Dot << "'";
      return signalPassFailure();
    }
    options.int8Dot = *dot;
    options.bf16Gemm = bf16Gemm;
    options.threads = threads;
    TypeConverter converter;
    converter.addConversion([](Type t) { return t; });
    converter.addConversion(
        [](QTensorType t) -> Type { return getStorageType(t); });

    // The kernel form has no runtime to call (it also becomes GPU code):
    // requant (export-time re-encoding with an optional importance matrix)
    // and the fused weight_update have no kernel form.
    if (kernelForm) {
      WalkResult unsupported = getOperation().walk([](Operation *op) {
        if (!isa<RequantOp, WeightUpdateOp, AllReduceOp, AllGatherOp>(op))
          return WalkResult::advance();
        op->emitOpError()
            << "is not supported by the kernel form (--target=cuda) yet"
            << (isa<WeightUpdateOp>(op)
                    ? " (the CUDA target keeps weight updates unfused)"
                : isa<AllReduceOp, AllGatherOp>(op)
                    ? " (data-parallel steps run on the CPU target)"
                    : "");
        return WalkResult::interrupt();
      });
      if (unsupported.wasInterrupted())
        return signalPassFailure();
    }

    ConversionTarget target(*ctx);
    target.addLegalDialect<arith::ArithDialect,
                           bufferization::BufferizationDialect,
                           LLVM::LLVMDialect, math::MathDialect,
                           memref::MemRefDialect, scf::SCFDialect,
                           vector::VectorDialect>();
    target.addIllegalDialect<QccDialect>();
    target.addDynamicallyLegalOp<func::FuncOp>([&](func::FuncOp op) {
      return converter.isSignatureLegal(op.getFunctionType()) &&
             converter.isLegal(&op.getBody());
    });
    target.addDynamicallyLegalOp<func::ReturnOp, func::CallOp>(
        [&](Operation *op) { return converter.isLegal(op); });
    target.markUnknownOpDynamicallyLegal([](Operation *) { return true; });
    // f32 contractions go to the micro-GEMM where the pattern applies; the
    // rest of linalg stays for one-shot bufferization and loops.
    // (In the kernel form all of linalg stays: it becomes parallel loops.)
    bool gemmCalls = !kernelForm;
    target.addDynamicallyLegalDialect<linalg::LinalgDialect>(
        [gemmCalls](Operation *op) {
          return !gemmCalls || !mlir::qcc::detail::isGemmCandidate(op);
        });

    RewritePatternSet patterns(ctx);
    if (kernelForm)
      mlir::qcc::detail::populateKernelFormPatterns(converter, patterns);
    populateQccToLoopsPatterns(converter, patterns, options);
    populateFunctionOpInterfaceTypeConversionPattern<func::FuncOp>(patterns,
                                                                   converter);
    populateReturnOpTypeConversionPattern(patterns, converter);
    populateCallOpTypeConversionPattern(patterns, converter);
    if (failed(applyPartialConversion(getOperation(), target,
                                      std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
