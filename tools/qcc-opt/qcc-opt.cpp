//===- qcc-opt.cpp - MlirOptMain with the qcc dialect and passes ----------===//

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "qcc/Conversion/Passes.h"
#include "qcc/Dialect/Qcc/IR/QccDialect.h"
#include "qcc/Dialect/Qcc/Transforms/Passes.h"
#include "qcc/Pipelines/Pipelines.h"

int main(int argc, char **argv) {
  mlir::registerAllPasses();
  mlir::qcc::registerQccPasses();
  mlir::qcc::registerQccConversionPasses();
  mlir::qcc::registerQccPipelines();
  mlir::DialectRegistry registry;
  registry.insert<mlir::qcc::QccDialect>();
  // Later pipelines lower through func/linalg/tensor/scf/vector/LLVM and
  // gpu/NVVM, so every upstream dialect is available to parse and print.
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "qcc optimizer driver\n", registry));
}
