//===- QccOps.cpp - qcc operation verifiers and folders -------------------===//
//
// Verifier messages start with the constraint label that the op's
// description lists (e.g. `dequant_c1`), so docs, code and
// test/Dialect/Qcc/invalid.mlir can be matched up.
//
//===----------------------------------------------------------------------===//

#include "qcc/Dialect/Qcc/IR/QccOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/TypeUtilities.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/MathExtras.h"

using namespace mlir;
using namespace mlir::qcc;

#define GET_OP_CLASSES
#include "qcc/Dialect/Qcc/IR/QccOps.cpp.inc"

/// Dimensions agree when equal or when either is dynamic.
static bool dimsCompatible(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b) || a == b;
}

static bool shapesCompatible(ArrayRef<int64_t> a, ArrayRef<int64_t> b) {
  return a.size() == b.size() &&
         llvm::all_of(llvm::zip_equal(a, b), [](auto pair) {
           return dimsCompatible(std::get<0>(pair), std::get<1>(pair));
         });
}

static std::string shapeString(ArrayRef<int64_t> shape) {
  std::string out;
  llvm::raw_string_ostream os(out);
  os << "[";
  llvm::interleave(
      shape, os,
      [&](int64_t d) {
        if (ShapedType::isDynamic(d))
          os << "?";
        else
          os << d;
      },
      ", ");
  os << "]";
  return out;
}

/// The weight's shape with the innermost dimension divided by `divisor` and
/// multiplied by `factor` (block grids and JL carries).
static SmallVector<int64_t> scaledInnerShape(ArrayRef<int64_t> shape,
                                             int64_t divisor, int64_t factor) {
  SmallVector<int64_t> out(shape);
  if (!ShapedType::isDynamic(out.back()))
    out.back() = out.back() / divisor * factor;
  return out;
}

//===----------------------------------------------------------------------===//
// DequantOp
//===----------------------------------------------------------------------===//

LogicalResult DequantOp::verify() {
  ArrayRef<int64_t> in = getInput().getType().getShape();
  ArrayRef<int64_t> out = getResult().getType().getShape();
  if (!shapesCompatible(in, out))
    return emitOpError("dequant_c1: result shape ")
           << shapeString(out) << " differs from the input shape "
           << shapeString(in);
  return success();
}

//===----------------------------------------------------------------------===//
// GatherOp
//===----------------------------------------------------------------------===//

LogicalResult GatherOp::verify() {
  ArrayRef<int64_t> table = getTable().getType().getShape();
  if (table.size() != 2)
    return emitOpError("gather_c1: the table has rank ")
           << table.size() << "; it must be 2-D [rows, columns]";
  ArrayRef<int64_t> out = getResult().getType().getShape();
  int64_t n = getIds().getType().getShape()[0];
  SmallVector<int64_t> want = {n, table[1]};
  if (!shapesCompatible(out, want))
    return emitOpError("gather_c2: result shape ")
           << shapeString(out) << " is not " << shapeString(want)
           << " (one table row per id)";
  return success();
}

//===----------------------------------------------------------------------===//
// RequantOp
//===----------------------------------------------------------------------===//

LogicalResult RequantOp::verify() {
  QTensorType resultType = getResult().getType();
  ArrayRef<int64_t> in = getInput().getType().getShape();
  ArrayRef<int64_t> out = resultType.getShape();
  if (!shapesCompatible(in, out))
    return emitOpError("requant_c1: result shape ")
           << shapeString(out) << " differs from the input shape "
           << shapeString(in);
  if (Value importance = getImportance()) {
    auto impType = cast<RankedTensorType>(importance.getType());
    if (impType.getRank() != 1 ||
        !dimsCompatible(impType.getDimSize(0), out.back()))
      return emitOpError("requant_c2: importance must be 1-D with one weight "
                         "per column (")
             << shapeString({out.back()}) << "), got "
             << shapeString(impType.getShape());
  } else if (::qcc::formatRequiresImportance(
                 static_cast<::qcc::Format>(resultType.getFormat()))) {
    return emitOpError("requant_c3: format '")
           << stringifyQuantFormat(resultType.getFormat())
           << "' needs an importance operand";
  }
  return success();
}

//===----------------------------------------------------------------------===//
// QMatmulOp
//===----------------------------------------------------------------------===//

LogicalResult QMatmulOp::verify() {
  auto lhsType = cast<RankedTensorType>(getLhs().getType());
  QTensorType weightType = getWeight().getType();
  auto resultType = cast<RankedTensorType>(getResult().getType());
  int64_t rank = lhsType.getRank();
  if (rank < 2 || (weightType.getRank() != 2 && weightType.getRank() != rank))
    return emitOpError("qmatmul_c1: lhs must have rank >= 2 and the weight "
                       "rank 2 or the lhs's rank; got ")
           << rank << " and " << weightType.getRank();

  ArrayRef<int64_t> lhs = lhsType.getShape();
  ArrayRef<int64_t> weight = weightType.getShape();
  ArrayRef<int64_t> result = resultType.getShape();
  ArrayRef<int64_t> batch = lhs.drop_back(2);
  bool weightBatchOk =
      weightType.getRank() == 2 ||
      shapesCompatible(weight.drop_back(2), batch);
  if (resultType.getRank() != rank || !weightBatchOk ||
      !shapesCompatible(result.drop_back(2), batch))
    return emitOpError("qmatmul_c2: batch dimensions of the weight ")
           << shapeString(weight) << " and result " << shapeString(result)
           << " must match the lhs's " << shapeString(lhs);

  int64_t m = lhs[rank - 2], lhsInner = lhs.back();
  int64_t n = weight[weight.size() - 2], k = weight.back();
  bool fwd = getOrientation() == MatmulOrientation::Fwd;
  int64_t contracted = fwd ? k : n;
  if (!dimsCompatible(lhsInner, contracted))
    return emitOpError("qmatmul_c3: contracted dimension of the lhs (")
           << lhsInner << ") differs from the weight's "
           << (fwd ? "input dimension K (" : "output dimension N (")
           << contracted << ")";
  int64_t expectedInner = fwd ? n : k;
  if (!dimsCompatible(result[rank - 2], m) ||
      !dimsCompatible(result.back(), expectedInner))
    return emitOpError("qmatmul_c4: result shape ")
           << shapeString(result) << " must end in [" << m << ", "
           << expectedInner << "]";
  return success();
}

//===----------------------------------------------------------------------===//
// SteGradOp
//===----------------------------------------------------------------------===//

/// The rules for a per-block tensor (an lsq scale gradient, a scale
/// delta): the format has block scales, and `blockTensor` has the weight's
/// shape with the innermost dimension divided by the block length. `label`
/// prefixes the messages; `what` names the tensor.
static LogicalResult verifyBlockGrid(Operation *op, QTensorType weightType,
                                     Value blockTensor, StringRef label,
                                     StringRef what) {
  if (weightType.getBlockElems() == 1)
    return op->emitOpError(label)
           << ": format '" << stringifyQuantFormat(weightType.getFormat())
           << "' has no block scale to learn";
  SmallVector<int64_t> grid = scaledInnerShape(
      weightType.getShape(), weightType.getBlockElems(), 1);
  ArrayRef<int64_t> got =
      cast<RankedTensorType>(blockTensor.getType()).getShape();
  if (!shapesCompatible(got, grid))
    return op->emitOpError(label)
           << ": " << what << " shape " << shapeString(got)
           << " is not the block grid " << shapeString(grid);
  return success();
}

LogicalResult SteGradOp::verify() {
  QTensorType weightType = getWeight().getType();
  ArrayRef<int64_t> weight = weightType.getShape();
  auto checkShape = [&](Value v, StringRef what) -> LogicalResult {
    ArrayRef<int64_t> shape = cast<RankedTensorType>(v.getType()).getShape();
    if (shapesCompatible(shape, weight))
      return success();
    return emitOpError("ste_grad_c1: ")
           << what << " shape " << shapeString(shape)
           << " differs from the weight shape " << shapeString(weight);
  };
  if (failed(checkShape(getGrad(), "grad")) ||
      failed(checkShape(getDirection(), "direction")))
    return failure();
  if (getResidual() && failed(checkShape(getResidual(), "residual")))
    return failure();

  SteMode mode = getMode();
  std::optional<APFloat> threshold = getThreshold();
  std::optional<APFloat> lambda = getLambda();
  if (mode == SteMode::Clipped) {
    if (!threshold || !(threshold->convertToFloat() > 0.0f))
      return emitOpError("ste_grad_c2: mode 'clipped' needs a positive "
                         "'threshold'");
  } else if (threshold) {
    return emitOpError("ste_grad_c2: 'threshold' only applies to mode "
                       "'clipped'");
  }
  if (mode == SteMode::Ewgs) {
    if (!lambda || !(lambda->convertToFloat() >= 0.0f))
      return emitOpError("ste_grad_c2: mode 'ewgs' needs a non-negative "
                         "'lambda'");
  } else if (lambda) {
    return emitOpError("ste_grad_c2: 'lambda' only applies to mode 'ewgs'");
  }

  Value scaleGrad = getScaleGrad();
  if ((mode == SteMode::Lsq) != static_cast<bool>(scaleGrad))
    return emitOpError("ste_grad_c3: mode 'lsq' yields a scale gradient as a "
                       "second result, and only it does");
  if (mode == SteMode::Lsq)
    return verifyBlockGrid(*this, weightType, scaleGrad, "ste_grad_c4",
                           "scale_grad");
  return success();
}

//===----------------------------------------------------------------------===//
// CarryUpdateOp
//===----------------------------------------------------------------------===//

/// The carry rules shared by carry_update and weight_update: a dense carry
/// has the weight's shape; a JL carry's chunk is a multiple of the block
/// length dividing K, and its shape is the weight's with K replaced by
/// (K / chunk) * dim. `dense` and `sketch` are the constraint labels.
static LogicalResult verifyCarry(Operation *op, QTensorType weightType,
                                 Type carryType, JLCarryAttr jl,
                                 StringRef dense, StringRef sketch) {
  ArrayRef<int64_t> weight = weightType.getShape();
  ArrayRef<int64_t> carry = cast<RankedTensorType>(carryType).getShape();
  if (!jl) {
    if (!shapesCompatible(carry, weight))
      return op->emitOpError(dense)
             << ": dense carry shape " << shapeString(carry)
             << " differs from the weight shape " << shapeString(weight);
    return success();
  }
  int64_t chunk = jl.getChunk(), blockElems = weightType.getBlockElems();
  int64_t inner = weight.back();
  if (chunk % blockElems != 0 ||
      (!ShapedType::isDynamic(inner) && inner % chunk != 0))
    return op->emitOpError(sketch)
           << ": JL chunk " << chunk
           << " must be a multiple of the block length " << blockElems
           << " and divide the innermost dimension " << inner;
  SmallVector<int64_t> expected = scaledInnerShape(weight, chunk, jl.getDim());
  if (!shapesCompatible(carry, expected))
    return op->emitOpError(sketch)
           << ": JL carry shape " << shapeString(carry) << " must be "
           << shapeString(expected) << " (innermost = K / chunk * dim)";
  return success();
}

LogicalResult CarryUpdateOp::verify() {
  QTensorType weightType = getWeight().getType();
  ArrayRef<int64_t> weight = weightType.getShape();
  ArrayRef<int64_t> delta =
      cast<RankedTensorType>(getDelta().getType()).getShape();
  if (!shapesCompatible(delta, weight))
    return emitOpError("carry_update_c1: delta shape ")
           << shapeString(delta) << " differs from the weight shape "
           << shapeString(weight);
  return verifyCarry(*this, weightType, getCarry().getType(), getJlAttr(),
                     "carry_update_c2", "carry_update_c3");
}

//===----------------------------------------------------------------------===//
// ScaleUpdateOp
//===----------------------------------------------------------------------===//

LogicalResult ScaleUpdateOp::verify() {
  QTensorType weightType = getWeight().getType();
  QuantFormat format = weightType.getFormat();
  if (weightType.getBlockElems() == 1 || format == QuantFormat::NVFP4)
    return emitOpError("scale_update_c2: format '")
           << stringifyQuantFormat(format) << "' has no block scale field";
  return verifyBlockGrid(*this, weightType, getDelta(), "scale_update_c1",
                         "delta");
}

//===----------------------------------------------------------------------===//
// WeightUpdateOp
//===----------------------------------------------------------------------===//

void WeightUpdateOp::build(OpBuilder &builder, OperationState &state,
                           Value gradOut, Value input, Value weight,
                           Value carry, ValueRange ins,
                           TypeRange extraResultTypes, JLCarryAttr jl,
                           Type scaleGradType) {
  state.addOperands({gradOut, input, weight, carry});
  state.addOperands(ins);
  state.getOrAddProperties<Properties>().operandSegmentSizes = {
      1, 1, 1, 1, static_cast<int32_t>(ins.size()), 0};
  if (jl)
    state.addAttribute(getJlAttrName(state.name), jl);
  state.addTypes({weight.getType(), carry.getType()});
  if (scaleGradType)
    state.addTypes(scaleGradType);
  state.addTypes(extraResultTypes);
  state.getOrAddProperties<Properties>().resultSegmentSizes = {
      1, 1, scaleGradType ? 1 : 0, static_cast<int32_t>(extraResultTypes.size())};
  Region *body = state.addRegion();
  SmallVector<Type> argTypes(2, builder.getF32Type());
  SmallVector<Location> argLocs(2, state.location);
  for (Value v : ins) {
    argTypes.push_back(getElementTypeOrSelf(v.getType()));
    argLocs.push_back(v.getLoc());
  }
  OpBuilder::InsertionGuard guard(builder);
  builder.createBlock(body, body->end(), argTypes, argLocs);
}

LogicalResult WeightUpdateOp::verify() {
  QTensorType weightType = getWeight().getType();
  ArrayRef<int64_t> weight = weightType.getShape();
  ArrayRef<int64_t> gy =
      cast<RankedTensorType>(getGradOut().getType()).getShape();
  ArrayRef<int64_t> x = cast<RankedTensorType>(getInput().getType()).getShape();
  if (weight.size() != 2)
    return emitOpError("weight_update_c1: the weight must be 2-D, got ")
           << shapeString(weight);
  if (gy.size() != 2 || x.size() != 2 || !dimsCompatible(gy[0], x[0]) ||
      !dimsCompatible(gy[1], weight[0]) || !dimsCompatible(x[1], weight[1]))
    return emitOpError("weight_update_c1: gy ")
           << shapeString(gy) << " and x " << shapeString(x)
           << " must be [M, N] and [M, K] for the weight's [N, K] = "
           << shapeString(weight);
  for (Value v : llvm::concat<Value>(getIns(), getExtraResults())) {
    ArrayRef<int64_t> shape = cast<RankedTensorType>(v.getType()).getShape();
    if (!shapesCompatible(shape, weight))
      return emitOpError("weight_update_c2: elementwise operand or result "
                         "shape ")
             << shapeString(shape) << " differs from the weight shape "
             << shapeString(weight);
  }
  if (Value guard = getGuard();
      guard && cast<RankedTensorType>(guard.getType()).getRank() != 0)
    return emitOpError("weight_update_c5: the guard must be a 0-d tensor");
  if (Value scaleGrad = getScaleGrad();
      scaleGrad && failed(verifyBlockGrid(*this, weightType, scaleGrad,
                                          "weight_update_c6", "scale_grad")))
    return failure();
  return verifyCarry(*this, weightType, getCarry().getType(), getJlAttr(),
                     "weight_update_c3", "weight_update_c3");
}

LogicalResult WeightUpdateOp::verifyRegions() {
  Block &block = getBody().front();
  Type f32 = Float32Type::get(getContext());
  SmallVector<Type> expectedArgs{f32, f32};
  for (Value v : getIns())
    expectedArgs.push_back(getElementTypeOrSelf(v.getType()));
  if (TypeRange(block.getArgumentTypes()) != TypeRange(expectedArgs))
    return emitOpError("weight_update_c4: the body takes (f32 gradient, f32 "
                       "weight, one element per ins tensor), i.e. ")
           << expectedArgs.size() << " arguments of types "
           << TypeRange(expectedArgs);
  auto yield = dyn_cast<YieldOp>(block.getTerminator());
  if (!yield)
    return emitOpError("weight_update_c4: the body must end in qcc.yield");
  SmallVector<Type> expectedYield{f32};
  for (Value v : getExtraResults())
    expectedYield.push_back(getElementTypeOrSelf(v.getType()));
  if (yield.getValues().getTypes() != TypeRange(expectedYield))
    return emitOpError("weight_update_c4: the body must yield (f32 delta, one "
                       "element per extra result), i.e. ")
           << expectedYield.size() << " values of types "
           << TypeRange(expectedYield);
  return success();
}

//===----------------------------------------------------------------------===//
// HadamardOp
//===----------------------------------------------------------------------===//

/// The `<op>_c1` check of a collective: a job has at least one rank.
static LogicalResult verifyRanks(Operation *op, StringRef label,
                                 int64_t ranks) {
  if (ranks < 1)
    return op->emitOpError(label) << ": ranks " << ranks
                                  << " must be at least 1";
  return success();
}

LogicalResult AllReduceOp::verify() {
  return verifyRanks(*this, "all_reduce_c1", getRanksAttr().getInt());
}

LogicalResult AllGatherOp::verify() {
  int64_t ranks = getRanksAttr().getInt();
  if (failed(verifyRanks(*this, "all_gather_c1", ranks)))
    return failure();
  auto in = cast<RankedTensorType>(getInput().getType());
  auto out = cast<RankedTensorType>(getResult().getType());
  bool ok = in.getElementType() == out.getElementType() &&
            in.getRank() == out.getRank() && in.getRank() >= 1 &&
            in.hasStaticShape() && out.hasStaticShape();
  for (int64_t i = 1; ok && i < in.getRank(); ++i)
    ok = in.getDimSize(i) == out.getDimSize(i);
  if (ok)
    ok = out.getDimSize(0) == ranks * in.getDimSize(0);
  if (!ok)
    return emitOpError("all_gather_c2: result ")
           << out << " must be " << in << " with its outermost dimension "
           << "multiplied by ranks " << ranks;
  return success();
}

LogicalResult HadamardOp::verify() {
  int64_t block = static_cast<int64_t>(getBlock());
  if (!llvm::isPowerOf2_64(block))
    return emitOpError("hadamard_c1: block ")
           << block << " is not a power of two";
  int64_t inner = cast<RankedTensorType>(getInput().getType()).getShape().back();
  if (ShapedType::isDynamic(inner) || inner % block != 0)
    return emitOpError("hadamard_c2: innermost dimension ")
           << (ShapedType::isDynamic(inner) ? std::string("?")
                                            : std::to_string(inner))
           << " must be static and divisible by the block " << block;
  return success();
}

// hadamard(hadamard(x, inverse = a), inverse = !a) = x for equal block and
// seed, because the rotation (1/√n)·H·diag(s) is orthogonal and its inverse
// diag(s)·(1/√n)·H is exactly the other direction.
OpFoldResult HadamardOp::fold(FoldAdaptor) {
  auto producer = getInput().getDefiningOp<HadamardOp>();
  if (!producer || producer.getBlock() != getBlock() ||
      producer.getSeed() != getSeed() ||
      producer.getInverse() == getInverse())
    return {};
  return producer.getInput();
}
