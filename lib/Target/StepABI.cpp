//===- StepABI.cpp - Manifest and entry points of step libraries ----------===//

#include "qcc/Target/StepABI.h"

#include "qcc/Dialect/Qcc/IR/QccTypes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/Module.h"

#include <nlohmann/json.hpp>

using namespace mlir;
using namespace mlir::qcc;
using json = nlohmann::json;

static std::string dtypeName(Type t) {
  if (t.isF32())
    return "f32";
  if (t.isF16())
    return "f16";
  if (t.isBF16())
    return "bf16";
  if (t.isF64())
    return "f64";
  if (auto i = dyn_cast<IntegerType>(t))
    return "i" + std::to_string(i.getWidth());
  return "";
}

/// One argument or result: its kind, element format and size.
static FailureOr<json> describeValue(Location loc, Type type,
                                     DictionaryAttr attrs, bool isResult,
                                     size_t index) {
  json v;
  v["index"] = index;
  auto name = attrs ? attrs.getAs<StringAttr>("qcc.name") : StringAttr();
  auto role = attrs ? attrs.getAs<StringAttr>("qcc.role") : StringAttr();
  v["name"] = name ? name.str()
                   : (isResult ? "result" : "arg") + std::to_string(index);
  if (auto q = dyn_cast<QTensorType>(type)) {
    if (!q.hasStaticShape())
      return emitError(loc) << "entry " << (isResult ? "result " : "argument ")
                            << index << " has a dynamic shape, which the step "
                            << "ABI cannot pass";
    const ::qcc::FormatInfo &info = getFormatInfo(q.getFormat());
    v["kind"] = "qtensor";
    v["format"] = std::string(info.name);
    v["ggml_type"] = info.ggmlId;
    v["shape"] = q.getShape().vec();
    v["bytes"] = q.getStorageBytes();
    v["role"] = role ? role.str() : (isResult ? "output" : "weight");
    return v;
  }
  if (auto t = dyn_cast<RankedTensorType>(type)) {
    std::string dtype = dtypeName(t.getElementType());
    if (!t.hasStaticShape() || dtype.empty())
      return emitError(loc) << "entry " << (isResult ? "result " : "argument ")
                            << index << " of type " << type
                            << " cannot be passed through the step ABI "
                            << "(static shapes of float or integer tensors only)";
    v["kind"] = "tensor";
    v["dtype"] = dtype;
    v["shape"] = t.getShape().vec();
    v["bytes"] = t.getNumElements() * t.getElementTypeBitWidth() / 8;
    v["role"] = role ? role.str() : (isResult ? "output" : "input");
    return v;
  }
  std::string dtype = dtypeName(type);
  if (dtype.empty())
    return emitError(loc) << "entry " << (isResult ? "result " : "argument ")
                          << index << " of type " << type
                          << " cannot be passed through the step ABI";
  if (isResult)
    return emitError(loc) << "entry result " << index << " is a scalar ("
                          << type << "); return a 0-d tensor (tensor<"
                          << type << ">) instead, which the caller provides "
                          << "a buffer for";
  v["kind"] = "scalar";
  v["dtype"] = dtype;
  v["shape"] = json::array();
  v["bytes"] = (type.getIntOrFloatBitWidth() + 7) / 8;
  v["role"] = role ? role.str() : (isResult ? "output" : "input");
  return v;
}

FailureOr<std::string> mlir::qcc::buildStepManifest(ModuleOp module) {
  json manifest;
  manifest["qcc_abi"] = kStepAbiVersion;
  manifest["entries"] = json::array();
  for (auto func : module.getOps<func::FuncOp>()) {
    if (func.isPrivate() || func.isExternal())
      continue;
    json entry;
    entry["name"] = func.getSymName().str();
    entry["symbol"] = "qcc_entry_" + func.getSymName().str();
    entry["args"] = json::array();
    entry["results"] = json::array();
    FunctionType type = func.getFunctionType();
    for (auto [i, t] : llvm::enumerate(type.getInputs())) {
      FailureOr<json> v =
          describeValue(func.getLoc(), t, func.getArgAttrDict(i), false, i);
      if (failed(v))
        return failure();
      entry["args"].push_back(*v);
    }
    for (auto [i, t] : llvm::enumerate(type.getResults())) {
      FailureOr<json> v =
          describeValue(func.getLoc(), t, func.getResultAttrDict(i), true, i);
      if (failed(v))
        return failure();
      entry["results"].push_back(*v);
    }
    manifest["entries"].push_back(entry);
    // The attributes have been read into the manifest; LLVM would not know
    // what to make of them.
    for (unsigned i = 0; i < func.getNumArguments(); ++i)
      for (StringRef attr : {"qcc.name", "qcc.role"})
        func.removeArgAttr(i, StringAttr::get(module.getContext(), attr));
    for (unsigned i = 0; i < func.getNumResults(); ++i)
      for (StringRef attr : {"qcc.name", "qcc.role"})
        func.removeResultAttr(i, StringAttr::get(module.getContext(), attr));
  }
  return manifest.dump(2);
}

LogicalResult mlir::qcc::emitStepEntryPoints(llvm::Module &module,
                                             const std::string &manifestJson,
                                             std::string &error) {
  json manifest = json::parse(manifestJson);
  llvm::LLVMContext &ctx = module.getContext();
  llvm::IRBuilder<> b(ctx);
  llvm::Type *ptr = llvm::PointerType::get(ctx, 0);

  for (const json &entry : manifest["entries"]) {
    std::string name = entry["name"];
    llvm::Function *impl = module.getFunction(name);
    if (!impl) {
      error = "lowered module has no function '" + name + "'";
      return failure();
    }
    size_t expected = entry["args"].size() + entry["results"].size();
    if (impl->arg_size() != expected) {
      error = "function '" + name + "' takes " +
              std::to_string(impl->arg_size()) + " parameters after lowering, "
              "the manifest describes " + std::to_string(expected);
      return failure();
    }
    auto *wrapperType =
        llvm::FunctionType::get(llvm::Type::getVoidTy(ctx), {ptr}, false);
    auto *wrapper =
        llvm::Function::Create(wrapperType, llvm::Function::ExternalLinkage,
                               entry["symbol"].get<std::string>(), module);
    b.SetInsertPoint(llvm::BasicBlock::Create(ctx, "entry", wrapper));
    llvm::Value *args = wrapper->getArg(0);
    SmallVector<llvm::Value *> callArgs;
    for (unsigned i = 0; i < impl->arg_size(); ++i) {
      llvm::Value *slot = b.CreateConstInBoundsGEP1_64(ptr, args, i);
      llvm::Value *p = b.CreateLoad(ptr, slot);
      llvm::Type *param = impl->getArg(i)->getType();
      // Buffers arrive as their data pointer; scalars are read through it.
      callArgs.push_back(param->isPointerTy() ? p : b.CreateLoad(param, p));
    }
    b.CreateCall(impl, callArgs);
    b.CreateRetVoid();
  }

  // const char *qcc_step_manifest(void)
  llvm::Constant *text = llvm::ConstantDataArray::getString(ctx, manifestJson);
  auto *global = new llvm::GlobalVariable(module, text->getType(), true,
                                          llvm::GlobalValue::PrivateLinkage,
                                          text, "__qcc_manifest");
  auto *accessor = llvm::Function::Create(
      llvm::FunctionType::get(ptr, {}, false), llvm::Function::ExternalLinkage,
      "qcc_step_manifest", module);
  b.SetInsertPoint(llvm::BasicBlock::Create(ctx, "entry", accessor));
  b.CreateRet(global);
  return success();
}
