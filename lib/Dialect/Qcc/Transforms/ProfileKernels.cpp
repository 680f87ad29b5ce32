//===- ProfileKernels.cpp - Time every call of an outlined kernel ---------===//
//
// qcc --profile: each call of a kernel (qcc-outline-kernels) is bracketed by
// the step runtime's qcc_rt_profile_enter / qcc_rt_profile_exit with the
// kernel's id, and the step library gets qcc_step_profile_table(), a JSON
// description of every id (op, types, first call site, work per call) that
// the host joins with the runtime's counters.
//
//===----------------------------------------------------------------------===//

#include "qcc/Dialect/Qcc/IR/QccOps.h"
#include "qcc/Dialect/Qcc/IR/QccTypes.h"
#include "qcc/Dialect/Qcc/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

namespace mlir::qcc {
#define GEN_PASS_DEF_PROFILEKERNELS
#include "qcc/Dialect/Qcc/Transforms/Passes.h.inc"
} // namespace mlir::qcc

using namespace mlir;
using namespace mlir::qcc;

namespace {

constexpr StringLiteral kEnterFn = "qcc_rt_profile_enter";
constexpr StringLiteral kExitFn = "qcc_rt_profile_exit";
constexpr StringLiteral kTableFn = "qcc_step_profile_table";

/// Bytes of a value of type `t`: a float or integer tensor's elements, a
/// qtensor's blocks; 0 for anything else.
int64_t bytesOf(Type t) {
  if (auto q = dyn_cast<QTensorType>(t)) {
    int64_t elems = 1;
    for (int64_t d : q.getShape())
      elems *= d;
    return elems / q.getBlockElems() * q.getBlockBytes();
  }
  if (auto r = dyn_cast<RankedTensorType>(t); r && r.hasStaticShape())
    return r.getNumElements() *
           int64_t((r.getElementType().getIntOrFloatBitWidth() + 7) / 8);
  if (t.isIntOrFloat())
    return (t.getIntOrFloatBitWidth() + 7) / 8;
  return 0;
}

/// Multiply-adds x 2 of one call of `op`: a qmatmul's M x N x K, a linalg
/// contraction's whole iteration space; 0 for other ops.
int64_t flopsOf(Operation *op) {
  if (auto mm = dyn_cast<QMatmulOp>(op)) {
    auto lhs = cast<RankedTensorType>(mm.getLhs().getType());
    auto out = cast<RankedTensorType>(mm.getResult().getType());
    if (!lhs.hasStaticShape() || !out.hasStaticShape())
      return 0;
    // lhs [.., m, c] x W -> out [.., m, o]: m x c x o multiply-adds.
    return 2 * lhs.getNumElements() * out.getShape().back();
  }
  if (auto up = dyn_cast<WeightUpdateOp>(op)) {
    // The fused gradient gyᵀ·x: gy [m, n], x [m, k].
    auto gy = cast<RankedTensorType>(up.getGradOut().getType());
    auto x = cast<RankedTensorType>(up.getInput().getType());
    if (!gy.hasStaticShape() || !x.hasStaticShape())
      return 0;
    return 2 * gy.getNumElements() * x.getShape().back();
  }
  auto linalgOp = dyn_cast<linalg::LinalgOp>(op);
  if (!linalgOp || linalgOp.getNumReductionLoops() == 0)
    return 0;
  int64_t n = 1;
  for (int64_t r : linalgOp.getStaticLoopRanges()) {
    if (ShapedType::isDynamic(r))
      return 0;
    n *= r;
  }
  return 2 * n;
}

/// The op a kernel holds: the one that defines what it returns (before it
/// may stand the constants and empty tensors recreated inside the kernel).
Operation *kernelOp(func::FuncOp kernel) {
  Operation *term = kernel.getBody().front().getTerminator();
  for (Value v : term->getOperands())
    if (Operation *def = v.getDefiningOp())
      return def;
  return nullptr;
}

/// `file:line:col` of a location (through names, call sites and fusions),
/// with the name of a NameLoc in front: "attention: gemma3.py:88:9".
std::string locationText(Location loc) {
  if (auto f = dyn_cast<FileLineColLoc>(loc))
    return (f.getFilename().getValue() + ":" + Twine(f.getLine()) + ":" +
            Twine(f.getColumn()))
        .str();
  if (auto n = dyn_cast<NameLoc>(loc)) {
    std::string inner = locationText(n.getChildLoc());
    return n.getName().getValue().str() + (inner.empty() ? "" : ": " + inner);
  }
  if (auto c = dyn_cast<CallSiteLoc>(loc))
    return locationText(c.getCallee());
  if (auto f = dyn_cast<FusedLoc>(loc))
    for (Location l : f.getLocations())
      if (std::string t = locationText(l); !t.empty())
        return t;
  return "";
}

func::FuncOp declare(ModuleOp module, StringRef name, OpBuilder &b) {
  if (auto f = module.lookupSymbol<func::FuncOp>(name))
    return f;
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToEnd(module.getBody());
  auto f = func::FuncOp::create(b, module.getLoc(), name,
                                b.getFunctionType({b.getI32Type()}, {}));
  f.setPrivate();
  return f;
}

struct ProfileKernelsPass
    : public mlir::qcc::impl::ProfileKernelsBase<ProfileKernelsPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (module.lookupSymbol(kTableFn))
      return; // profiled already
    OpBuilder b(module.getContext());
    llvm::DenseMap<Operation *, int32_t> ids;
    llvm::json::Array table;
    SmallVector<func::CallOp> calls;
    module.walk([&](func::CallOp call) {
      auto caller = call->getParentOfType<func::FuncOp>();
      if (caller && caller->hasAttr("qcc.kernel"))
        return;
      auto callee = module.lookupSymbol<func::FuncOp>(call.getCallee());
      if (callee && callee->hasAttr("qcc.kernel"))
        calls.push_back(call);
    });
    func::FuncOp enter = declare(module, kEnterFn, b);
    func::FuncOp exit = declare(module, kExitFn, b);
    for (func::CallOp call : calls) {
      auto callee = module.lookupSymbol<func::FuncOp>(call.getCallee());
      auto [it, fresh] = ids.try_emplace(callee, int32_t(ids.size()));
      if (fresh) {
        Operation *op = kernelOp(callee);
        int64_t bytes = 0;
        for (Type t : callee.getFunctionType().getInputs())
          bytes += bytesOf(t);
        for (Type t : callee.getFunctionType().getResults())
          bytes += bytesOf(t);
        std::string type;
        llvm::raw_string_ostream os(type);
        callee.getFunctionType().print(os);
        table.push_back(llvm::json::Object{
            {"id", it->second},
            {"kernel", callee.getSymName().str()},
            {"op", op ? op->getName().getStringRef().str() : std::string()},
            {"type", type},
            {"loc", locationText(call.getLoc())},
            {"flops", op ? flopsOf(op) : 0},
            {"bytes", bytes}});
      }
      b.setInsertionPoint(call);
      Value id = arith::ConstantIntOp::create(b, call.getLoc(),
                                              b.getI32Type(), it->second);
      func::CallOp::create(b, call.getLoc(), enter, ValueRange{id});
      b.setInsertionPointAfter(call);
      func::CallOp::create(b, call.getLoc(), exit, ValueRange{id});
    }

    // const char *qcc_step_profile_table(void): the JSON above.
    std::string json;
    llvm::raw_string_ostream os(json);
    os << llvm::json::Value(std::move(table));
    json.push_back('\0');
    b.setInsertionPointToEnd(module.getBody());
    Location loc = module.getLoc();
    auto array = LLVM::LLVMArrayType::get(b.getI8Type(), json.size());
    auto global = LLVM::GlobalOp::create(
        b, loc, array, /*isConstant=*/true, LLVM::Linkage::Private,
        "__qcc_profile_table", b.getStringAttr(json));
    auto ptr = LLVM::LLVMPointerType::get(b.getContext());
    auto fn = LLVM::LLVMFuncOp::create(b, loc, kTableFn,
                                       LLVM::LLVMFunctionType::get(ptr, {}));
    Block *body = fn.addEntryBlock(b);
    b.setInsertionPointToStart(body);
    Value address = LLVM::AddressOfOp::create(b, loc, global);
    LLVM::ReturnOp::create(b, loc, address);
  }
};

} // namespace
