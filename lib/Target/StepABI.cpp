//===- StepABI.cpp - Manifest and entry points of step libraries ----------===//

#include "qcc/Target/StepABI.h"

#include "qcc/Dialect/Qcc/IR/QccOps.h"
#include "qcc/Dialect/Qcc/IR/QccTypes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinTypes.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/Module.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <map>
#include <optional>
#include <set>

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

/// Reads the attributes of a `param` argument (initializer, LoRA role) into
/// its manifest entry `v`, rejecting combinations the runtime cannot honour.
static LogicalResult describeParam(Location loc, Type type,
                                   DictionaryAttr attrs, json &v) {
  auto get = [&](StringRef key) { return attrs ? attrs.get(key) : Attribute(); };
  std::string name = v["name"];
  std::string role = v["role"];
  Attribute init = get("qcc.init");
  Attribute base = get("qcc.lora.base"), part = get("qcc.lora.part"),
            alpha = get("qcc.lora.alpha");
  bool isParam = role == "param";
  if (!isParam) {
    for (auto [key, attr] : {std::pair<StringRef, Attribute>{"qcc.init", init},
                             {"qcc.lora.base", base},
                             {"qcc.lora.part", part},
                             {"qcc.lora.alpha", alpha}})
      if (attr)
        return emitError(loc) << "argument '" << name << "' has " << key
                              << " but role '" << role
                              << "'; only role \"param\" takes it";
    return success();
  }
  auto t = dyn_cast<RankedTensorType>(type);
  if (!t || !t.getElementType().isIntOrFloat() ||
      !(t.getElementType().isF32() || t.getElementType().isF16() ||
        t.getElementType().isBF16()))
    return emitError(loc) << "param '" << name << "' must be a tensor of "
                          << "f32, f16 or bf16, not " << type;
  std::string initName = "zeros";
  if (init) {
    auto s = dyn_cast<StringAttr>(init);
    if (!s || (s.getValue() != "zeros" && s.getValue() != "kaiming_uniform"))
      return emitError(loc) << "param '" << name << "': qcc.init must be "
                            << "\"zeros\" or \"kaiming_uniform\", not "
                            << init;
    initName = s.str();
  }
  if (initName == "kaiming_uniform" && t.getRank() < 2)
    return emitError(loc) << "param '" << name << "': kaiming_uniform needs "
                          << "a tensor of rank 2 or more (its fan-in is the "
                          << "product of the dimensions after the first)";
  v["init"] = initName;
  if (!base && !part && !alpha)
    return success();
  auto baseName = dyn_cast_if_present<StringAttr>(base);
  auto partName = dyn_cast_if_present<StringAttr>(part);
  auto alphaValue = dyn_cast_if_present<FloatAttr>(alpha);
  if (!baseName || !partName || !alphaValue)
    return emitError(loc) << "param '" << name << "': a LoRA matrix needs "
                          << "qcc.lora.base (string), qcc.lora.part (string) "
                          << "and qcc.lora.alpha (float)";
  if (partName.getValue() != "a" && partName.getValue() != "b")
    return emitError(loc) << "param '" << name << "': qcc.lora.part must be "
                          << "\"a\" or \"b\", not \"" << partName.getValue()
                          << "\"";
  double a = alphaValue.getValueAsDouble();
  if (!(a > 0) || !std::isfinite(a))
    return emitError(loc) << "param '" << name << "': qcc.lora.alpha must be "
                          << "a positive finite number, not " << a;
  if (t.getRank() != 2)
    return emitError(loc) << "param '" << name << "': a LoRA matrix must be "
                          << "2-D, not " << type;
  v["lora"] = {{"base", baseName.str()},
               {"part", partName.str()},
               {"alpha", a}};
  return success();
}

/// Checks that every LoRA matrix of an entry names a 2-D weight argument and
/// comes in an (A [r, in], B [out, r]) pair with one alpha.
static LogicalResult checkLoraPairs(func::FuncOp func, const json &args) {
  std::map<std::string, std::pair<const json *, const json *>> pairs;
  for (const json &a : args) {
    if (!a.contains("lora"))
      continue;
    std::string base = a["lora"]["base"], part = a["lora"]["part"];
    auto &slot = part == "a" ? pairs[base].first : pairs[base].second;
    if (slot)
      return emitError(func.getArgument(a["index"].get<unsigned>()).getLoc())
             << "params '" << (*slot)["name"].get<std::string>() << "' and '"
             << a["name"].get<std::string>() << "' are both LoRA part \""
             << part << "\" of '" << base << "'";
    slot = &a;
  }
  for (auto &[base, ab] : pairs) {
    const json *w = nullptr;
    for (const json &a : args)
      if (a["name"] == base && a["role"] == "weight")
        w = &a;
    const json *some = ab.first ? ab.first : ab.second;
    Location loc = func.getArgument((*some)["index"].get<unsigned>()).getLoc();
    if (!w)
      return emitError(loc) << "param '" << (*some)["name"].get<std::string>()
                            << "' is a LoRA matrix of '" << base
                            << "', which is not a weight argument of @"
                            << func.getSymName();
    if (!ab.first || !ab.second)
      return emitError(loc) << "LoRA of '" << base << "' has no part \""
                            << (ab.first ? "b" : "a")
                            << "\": give both A [r, in] and B [out, r]";
    std::vector<int64_t> ws = (*w)["shape"], as = (*ab.first)["shape"],
                         bs = (*ab.second)["shape"];
    if (ws.size() != 2)
      return emitError(loc) << "LoRA base '" << base << "' must be 2-D";
    if (as[1] != ws[1] || bs[0] != ws[0] || as[0] != bs[1])
      return emitError(loc)
             << "LoRA of '" << base << "' [" << ws[0] << ", " << ws[1]
             << "] needs A [r, " << ws[1] << "] and B [" << ws[0]
             << ", r]; got A [" << as[0] << ", " << as[1] << "] and B ["
             << bs[0] << ", " << bs[1] << "]";
    if ((*ab.first)["lora"]["alpha"] != (*ab.second)["lora"]["alpha"])
      return emitError(loc) << "LoRA A and B of '" << base
                            << "' disagree on qcc.lora.alpha";
  }
  return success();
}

/// Whether `use` only reads its tensor, keeping nothing that aliases it
/// (bufferized, a DPS input or a qcc op's operand is read, never viewed).
static bool readsWithoutView(OpOperand &use) {
  Operation *user = use.getOwner();
  if (isa<QMatmulOp, DequantOp, SteGradOp, HadamardOp, tensor::ExtractOp>(
          user))
    return true;
  if (auto linalgOp = dyn_cast<linalg::LinalgOp>(user))
    return linalgOp.isDpsInput(&use);
  return false;
}

/// Whether result `res` of `func` may be written straight into the buffer
/// of argument `arg` (docs/runtime.md, in-place results): the result comes
/// from a guarded qcc.weight_update that updates that very argument element
/// by element (rows of a tile are read before they are written, nothing
/// else is), every other use of the argument only reads it and comes
/// before the update, and a non-finite loss writes nothing at all.
static bool canUpdateInPlace(func::FuncOp func, unsigned res, unsigned arg) {
  if (!llvm::hasSingleElement(func.getBody()))
    return false;
  Block &body = func.getBody().front();
  auto ret = dyn_cast<func::ReturnOp>(body.getTerminator());
  if (!ret)
    return false;
  Value result = ret.getOperand(res);
  BlockArgument a = func.getArgument(arg);
  if (result.getType() != a.getType() ||
      llvm::count(ret.getOperands(), result) != 1 ||
      llvm::is_contained(ret.getOperands(), a))
    return false;
  auto update = result.getDefiningOp<WeightUpdateOp>();
  if (!update || update->getBlock() != &body || !update.getGuard() ||
      update.getGradOut() == a || update.getInput() == a)
    return false;
  if (result == update.getNewWeight()) {
    if (update.getWeight() != a)
      return false;
  } else if (result == update.getNewCarry()) {
    if (update.getCarry() != a)
      return false;
  } else if (!llvm::is_contained(update.getIns(), a)) {
    return false;
  }
  for (OpOperand &use : a.getUses()) {
    Operation *user = use.getOwner();
    if (user == update.getOperation())
      continue;
    if (user->getBlock() != &body || !user->isBeforeInBlock(update) ||
        !readsWithoutView(use))
      return false;
  }
  return true;
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
    std::set<std::string> names;
    for (auto [i, t] : llvm::enumerate(type.getInputs())) {
      Location loc = func.getArgument(i).getLoc();
      FailureOr<json> v =
          describeValue(func.getLoc(), t, func.getArgAttrDict(i), false, i);
      if (failed(v))
        return failure();
      std::string role = (*v)["role"], name = (*v)["name"];
      if (role != "input" && role != "weight" && role != "state" &&
          role != "param")
        return emitError(loc) << "argument " << i << " ('" << name
                              << "') has role '" << role << "'; the roles "
                              << "are input, weight, state and param";
      if (!names.insert(name).second)
        return emitError(loc) << "two arguments of @" << func.getSymName()
                              << " are named '" << name << "'";
      if (failed(describeParam(loc, t, func.getArgAttrDict(i), *v)))
        return failure();
      entry["args"].push_back(*v);
    }
    if (failed(checkLoraPairs(func, entry["args"])))
      return failure();
    // A data-parallel step runs in a job of exactly as many ranks as its
    // collectives were built for (docs/distributed.md).
    std::optional<int64_t> ranks;
    WalkResult mixed = func.walk([&](Operation *op) {
      std::optional<int64_t> r;
      if (auto reduce = dyn_cast<AllReduceOp>(op))
        r = reduce.getRanksAttr().getInt();
      else if (auto gather = dyn_cast<AllGatherOp>(op))
        r = gather.getRanksAttr().getInt();
      if (!r)
        return WalkResult::advance();
      if (ranks && *ranks != *r) {
        op->emitOpError() << "is built for " << *r << " ranks, but another "
                          << "collective of @" << func.getSymName()
                          << " for " << *ranks;
        return WalkResult::interrupt();
      }
      ranks = r;
      return WalkResult::advance();
    });
    if (mixed.wasInterrupted())
      return failure();
    if (ranks)
      entry["ranks"] = *ranks;
    for (auto [i, t] : llvm::enumerate(type.getResults())) {
      FailureOr<json> v =
          describeValue(func.getLoc(), t, func.getResultAttrDict(i), true, i);
      if (failed(v))
        return failure();
      for (const json &argDesc : entry["args"])
        if (argDesc["name"] == (*v)["name"] &&
            canUpdateInPlace(func, i, argDesc["index"].get<unsigned>()))
          (*v)["inplace"] = true;
      entry["results"].push_back(*v);
    }
    manifest["entries"].push_back(entry);
    // The attributes have been read into the manifest; LLVM would not know
    // what to make of them.
    auto consumed = [](DictionaryAttr attrs) {
      SmallVector<StringAttr> keys;
      if (attrs)
        for (NamedAttribute a : attrs)
          if (a.getName().getValue().starts_with("qcc."))
            keys.push_back(a.getName());
      return keys;
    };
    for (unsigned i = 0; i < func.getNumArguments(); ++i)
      for (StringAttr key : consumed(func.getArgAttrDict(i)))
        func.removeArgAttr(i, key);
    for (unsigned i = 0; i < func.getNumResults(); ++i)
      for (StringAttr key : consumed(func.getResultAttrDict(i)))
        func.removeResultAttr(i, key);
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
