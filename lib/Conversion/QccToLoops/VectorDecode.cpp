//===- VectorDecode.cpp - Block decoders on 16-lane vectors ---------------===//
//
// Each vector decoder mirrors its scalar emitter (DecodeLegacy.cpp,
// DecodeKQuants.cpp) and so the runtime's reference in
// runtime/lib/formats/Decode.cpp: the same integer codes, converted with
// sitofp and scaled with the same f32 multiplies and subtractions, in the
// same order, so each lane is bit-equal to the reference element
// (test/python/test_compiled_ops.py checks the products; the scalar emitters
// are proven bit-exact by test_emitted_decode_bitexact.py).
//
//===----------------------------------------------------------------------===//

#include "VectorDecode.h"

#include "DecodeEmitter.h"

#include "mlir/Dialect/Math/IR/Math.h"

using namespace mlir;
using namespace mlir::qcc;
using namespace mlir::qcc::detail;

namespace {

/// The scalar vocabulary (f16 scales) on the same block.
DecodeEmitter scalarEmitter(VecEmitter &e) {
  return DecodeEmitter(e.b, e.loc, {e.bytes, e.blockByte, Value(), Value()});
}

/// q4_0 (18 B): f16 d @0, qs[16] @2; element j < 16 is the low nibble of
/// qs[j], j + 16 the high one.  y = (q - 8) * d
void decodeQ4_0(VecEmitter &e, VectorSink sink) {
  DecodeEmitter s = scalarEmitter(e);
  Value d = e.splatF(s.f16At(0));
  Value q = e.u8s(2);
  sink(e.mulf(e.sitofp(e.subi(e.andi(q, 0xf), 8)), d), 0);
  sink(e.mulf(e.sitofp(e.subi(e.shrui(q, 4), 8)), d), 16);
}

/// q8_0 (34 B): f16 d @0, qs[32] (int8) @2.  y = q * d
void decodeQ8_0(VecEmitter &e, VectorSink sink) {
  DecodeEmitter s = scalarEmitter(e);
  Value d = e.splatF(s.f16At(0));
  for (int64_t h = 0; h < 2; ++h)
    sink(e.mulf(e.sitofp(e.s8s(2 + 16 * h)), d), 16 * h);
}

/// The (d * sc, dmin * m) products of a q4_K block's eight sub-blocks, as
/// two vector<8xf32>. The 6-bit pairs of scaleMinK4 are unpacked on 8 lanes
/// at once: pair j < 4 is (b[j] & 63, b[j + 4] & 63), pair j >= 4 is
/// ((b[j + 4] & 15) | (b[j - 4] >> 6) << 4, (b[j + 4] >> 4) | (b[j] >> 6) << 4)
/// with b the 12 scale bytes; each product is the reference's one multiply.
std::pair<Value, Value> q4KScaleProducts(VecEmitter &e) {
  DecodeEmitter s = scalarEmitter(e);
  Value sb = e.u8s(4); // bytes 4..19: the 12 scale bytes, then qs
  Value zero = e.splatI(0, sb);
  auto pick = [&](ArrayRef<int64_t> lanes) {
    return vector::ShuffleOp::create(e.b, e.loc, sb, zero, lanes).getResult();
  };
  // Lane 16 of the shuffles is a zero: pairs j < 4 have no high bits.
  Value hiBits = e.shli(e.shrui(pick({16, 16, 16, 16, 0, 1, 2, 3}), 6), 4);
  Value sc = e.ori(e.andi(pick({0, 1, 2, 3, 8, 9, 10, 11}),
                          e.constI({63, 63, 63, 63, 15, 15, 15, 15})),
                   hiBits);
  Value mnLow = e.andi(e.shrui(pick({4, 5, 6, 7, 8, 9, 10, 11}),
                               e.constI({0, 0, 0, 0, 4, 4, 4, 4})),
                       e.constI({63, 63, 63, 63, 15, 15, 15, 15}));
  Value mn = e.ori(mnLow,
                   e.shli(e.shrui(pick({16, 16, 16, 16, 4, 5, 6, 7}), 6), 4));
  Value ds = e.mulf(e.splatF(s.f16At(0), 8), e.sitofp(sc));
  Value dm = e.mulf(e.splatF(s.f16At(2), 8), e.sitofp(mn));
  return {ds, dm};
}

/// q4_K (144 B): f16 d @0, f16 dmin @2, scales[12] @4, qs[128] @16. Chunk
/// c of 64 elements is the low then the high nibbles of qs[32c..32c+31].
/// y = (d * sc) * q - (dmin * m)
void decodeQ4_K(VecEmitter &e, VectorSink sink) {
  auto [ds, dm] = q4KScaleProducts(e);
  for (int64_t c = 0; c < 4; ++c) {
    Value d1 = e.laneSplat(ds, 2 * c), m1 = e.laneSplat(dm, 2 * c);
    Value d2 = e.laneSplat(ds, 2 * c + 1), m2 = e.laneSplat(dm, 2 * c + 1);
    Value q[2] = {e.u8s(16 + 32 * c), e.u8s(16 + 32 * c + 16)};
    for (int64_t h = 0; h < 2; ++h)
      sink(e.subf(e.mulf(d1, e.sitofp(e.andi(q[h], 0xf))), m1),
           64 * c + 16 * h);
    for (int64_t h = 0; h < 2; ++h)
      sink(e.subf(e.mulf(d2, e.sitofp(e.shrui(q[h], 4))), m2),
           64 * c + 32 + 16 * h);
  }
}

/// q6_K (210 B): ql[128] @0, qh[64] @128, scales[16] (int8) @192, f16 d
/// @208. Half h, elements l < 32: q of element 128h + 32k + l is a nibble
/// of ql[64h + l + 32(k & 1)] (low for k < 2) with bits 2k..2k+1 of
/// qh[32h + l] above it, scale 8h + l / 16 + 2k.  y = (d * sc) * (q - 32)
void decodeQ6_K(VecEmitter &e, VectorSink sink) {
  DecodeEmitter s = scalarEmitter(e);
  Value ds = e.mulf(e.splatF(s.f16At(208)), e.sitofp(e.s8s(192)));
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t is = 0; is < 2; ++is) {
      int64_t l = 16 * is;
      Value qlA = e.u8s(64 * h + l), qlB = e.u8s(64 * h + 32 + l);
      Value qh = e.u8s(128 + 32 * h + l);
      Value low[4] = {e.andi(qlA, 0xf), e.andi(qlB, 0xf), e.shrui(qlA, 4),
                      e.shrui(qlB, 4)};
      for (int64_t k = 0; k < 4; ++k) {
        Value q = e.subi(
            e.ori(low[k], e.shli(e.andi(e.shrui(qh, 2 * k), 3), 4)), 32);
        sink(e.mulf(e.laneSplat(ds, 8 * h + is + 2 * k), e.sitofp(q)),
             128 * h + 32 * k + l);
      }
    }
}

/// 16 consecutive elements of f32 / f16 / bf16.
void decodePlain16(VecEmitter &e, QuantFormat format, VectorSink sink) {
  switch (format) {
  case QuantFormat::F32:
    sink(vector::BitCastOp::create(e.b, e.loc, e.vecF(),
                                   e.loadBytes(0, 4 * kLanes)),
         0);
    return;
  case QuantFormat::F16: {
    Value h = vector::BitCastOp::create(
        e.b, e.loc, VectorType::get({kLanes}, e.b.getF16Type()),
        e.loadBytes(0, 2 * kLanes));
    sink(arith::ExtFOp::create(e.b, e.loc, e.vecF(), h), 0);
    return;
  }
  case QuantFormat::BF16: {
    Value h = vector::BitCastOp::create(e.b, e.loc, e.vecI(kLanes, 16),
                                        e.loadBytes(0, 2 * kLanes));
    sink(arith::BitcastOp::create(e.b, e.loc, e.vecF(),
                                  e.shli(e.zext(h), 16)),
         0);
    return;
  }
  default:
    llvm_unreachable("not a one-element format");
  }
}

bool isPlain(QuantFormat format) {
  return format == QuantFormat::F32 || format == QuantFormat::F16 ||
         format == QuantFormat::BF16;
}

} // namespace

int64_t mlir::qcc::detail::vectorUnitElems(QuantFormat format,
                                           int64_t blockElems) {
  return isPlain(format) ? kLanes : blockElems;
}

bool mlir::qcc::detail::hasVectorDecoder(QuantFormat format) {
  switch (format) {
  case QuantFormat::F32:
  case QuantFormat::F16:
  case QuantFormat::BF16:
  case QuantFormat::Q4_0:
  case QuantFormat::Q8_0:
  case QuantFormat::Q4_K:
  case QuantFormat::Q6_K:
    return true;
  default:
    return false;
  }
}

LogicalResult mlir::qcc::detail::emitVectorUnitDecode(VecEmitter &e,
                                                      QuantFormat format,
                                                      Value scratch,
                                                      VectorSink sink) {
  switch (format) {
  case QuantFormat::F32:
  case QuantFormat::F16:
  case QuantFormat::BF16:
    decodePlain16(e, format, sink);
    return success();
  case QuantFormat::Q4_0:
    decodeQ4_0(e, sink);
    return success();
  case QuantFormat::Q8_0:
    decodeQ8_0(e, sink);
    return success();
  case QuantFormat::Q4_K:
    decodeQ4_K(e, sink);
    return success();
  case QuantFormat::Q6_K:
    decodeQ6_K(e, sink);
    return success();
  default:
    break;
  }
  // Any other format: the scalar emitter into the L1-resident scratch block,
  // read back 16 elements at a time.
  Value c0 = e.index(0);
  if (failed(emitBlockDecode(e.b, e.loc, format,
                             {e.bytes, e.blockByte, scratch, c0})))
    return failure();
  int64_t elems = cast<MemRefType>(scratch.getType()).getNumElements();
  for (int64_t v = 0; v < elems; v += kLanes)
    sink(vector::LoadOp::create(e.b, e.loc, e.vecF(), scratch,
                                ValueRange{e.index(v)}),
         v);
  return success();
}

FailureOr<Value> mlir::qcc::detail::emitVectorTailDecode(VecEmitter &e,
                                                        QuantFormat format,
                                                        int64_t blockBytes,
                                                        int64_t count,
                                                        Value scratch) {
  Value zero = arith::ConstantOp::create(
      e.b, e.loc, e.vecF(),
      DenseElementsAttr::get(e.vecF(), e.b.getF32FloatAttr(0)));
  vector::StoreOp::create(e.b, e.loc, zero, scratch, ValueRange{e.index(0)});
  for (int64_t t = 0; t < count; ++t)
    if (failed(emitBlockDecode(e.b, e.loc, format,
                               {e.bytes, e.at(t * blockBytes), scratch,
                                e.index(t)})))
      return failure();
  return vector::LoadOp::create(e.b, e.loc, e.vecF(), scratch,
                                ValueRange{e.index(0)})
      .getResult();
}

//===----------------------------------------------------------------------===//
// Forward dot kernels
//===----------------------------------------------------------------------===//

std::optional<DotKernelInfo>
mlir::qcc::detail::getDotKernel(QuantFormat format) {
  switch (format) {
  case QuantFormat::Q4_0:
    return DotKernelInfo{32, 1, 8.0f};
  case QuantFormat::Q8_0:
    return DotKernelInfo{0, 0, 0.0f};
  case QuantFormat::Q4_K:
    return DotKernelInfo{32, 8, 1.0f};
  case QuantFormat::Q6_K:
    return DotKernelInfo{16, 16, 32.0f};
  default:
    return std::nullopt;
  }
}

namespace {

Value fma(VecEmitter &e, Value a, Value b, Value c) {
  return vector::FMAOp::create(e.b, e.loc, a, b, c);
}

/// Σ_l codes[h][l] · x[i, offs[h] + l] over the vectors h, per row i: the
/// first product a multiply, the rest FMAs.
SmallVector<Value> codeDots(VecEmitter &e, DotContext &ctx,
                            ArrayRef<Value> codes, ArrayRef<int64_t> offs) {
  SmallVector<Value> p;
  for (int64_t i = 0; i < ctx.m; ++i) {
    Value acc = e.mulf(codes[0], ctx.x(i, offs[0]));
    for (size_t h = 1; h < codes.size(); ++h)
      acc = fma(e, codes[h], ctx.x(i, offs[h]), acc);
    p.push_back(acc);
  }
  return p;
}

/// main += scale · p[i] for every row, on the next chain.
void addScaled(VecEmitter &e, DotContext &ctx, Value scale,
               ArrayRef<Value> p) {
  int64_t c = ctx.nextChain();
  for (int64_t i = 0; i < ctx.m; ++i)
    ctx.main(i, c) = fma(e, scale, p[i], ctx.main(i, c));
}

/// q4_0: d · (Σ q x) per block; the -8 as 8 · d · Σx (scalar per block).
void dotQ4_0(VecEmitter &e, DotContext &ctx) {
  DecodeEmitter s = scalarEmitter(e);
  Value d = s.f16At(0);
  Value q = e.u8s(2);
  Value codes[2] = {e.sitofp(e.andi(q, 0xf)), e.sitofp(e.shrui(q, 4))};
  addScaled(e, ctx, e.splatF(d), codeDots(e, ctx, codes, {0, 16}));
  for (int64_t i = 0; i < ctx.m; ++i)
    ctx.corr(i) = math::FmaOp::create(e.b, e.loc, d, ctx.xsum(i, 0, 1),
                                      ctx.corr(i));
}

/// q8_0: d · (Σ q x) per block.
void dotQ8_0(VecEmitter &e, DotContext &ctx) {
  DecodeEmitter s = scalarEmitter(e);
  Value d = e.splatF(s.f16At(0));
  Value codes[2] = {e.sitofp(e.s8s(2)), e.sitofp(e.s8s(18))};
  addScaled(e, ctx, d, codeDots(e, ctx, codes, {0, 16}));
}

/// q4_K: (d·sc) · (Σ q x) per 32-element sub-block; the mins as
/// Σ (dmin·m) · Σx over the 8 sub-blocks (one 8-lane FMA per block).
void dotQ4_K(VecEmitter &e, DotContext &ctx) {
  auto [ds, dm] = q4KScaleProducts(e);
  for (int64_t c = 0; c < 4; ++c) {
    Value q[2] = {e.u8s(16 + 32 * c), e.u8s(16 + 32 * c + 16)};
    Value lo[2] = {e.sitofp(e.andi(q[0], 0xf)), e.sitofp(e.andi(q[1], 0xf))};
    Value hi[2] = {e.sitofp(e.shrui(q[0], 4)), e.sitofp(e.shrui(q[1], 4))};
    addScaled(e, ctx, e.laneSplat(ds, 2 * c),
              codeDots(e, ctx, lo, {64 * c, 64 * c + 16}));
    addScaled(e, ctx, e.laneSplat(ds, 2 * c + 1),
              codeDots(e, ctx, hi, {64 * c + 32, 64 * c + 48}));
  }
  for (int64_t i = 0; i < ctx.m; ++i)
    ctx.corr(i) = fma(e, dm, ctx.xsum(i, 0, 8), ctx.corr(i));
}

/// q6_K: (d·sc) · q per element (q without its -32, the codes' 6 bits),
/// the -32 as 32 · Σ (d·sc) · Σx over the 16 sub-blocks.
void dotQ6_K(VecEmitter &e, DotContext &ctx) {
  DecodeEmitter s = scalarEmitter(e);
  Value ds = e.mulf(e.splatF(s.f16At(208)), e.sitofp(e.s8s(192)));
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t is = 0; is < 2; ++is) {
      int64_t l = 16 * is;
      Value qlA = e.u8s(64 * h + l), qlB = e.u8s(64 * h + 32 + l);
      Value qh = e.u8s(128 + 32 * h + l);
      Value low[4] = {e.andi(qlA, 0xf), e.andi(qlB, 0xf), e.shrui(qlA, 4),
                      e.shrui(qlB, 4)};
      for (int64_t k = 0; k < 4; ++k) {
        Value q = e.ori(low[k], e.shli(e.andi(e.shrui(qh, 2 * k), 3), 4));
        Value w = e.mulf(e.laneSplat(ds, 8 * h + is + 2 * k), e.sitofp(q));
        int64_t c = ctx.nextChain();
        for (int64_t i = 0; i < ctx.m; ++i)
          ctx.main(i, c) =
              fma(e, w, ctx.x(i, 128 * h + 32 * k + l), ctx.main(i, c));
      }
    }
  for (int64_t i = 0; i < ctx.m; ++i)
    ctx.corr(i) = fma(e, ds, ctx.xsum(i, 0, 16), ctx.corr(i));
}

} // namespace

void mlir::qcc::detail::emitBlockDot(VecEmitter &e, QuantFormat format,
                                     DotContext &ctx) {
  switch (format) {
  case QuantFormat::Q4_0:
    return dotQ4_0(e, ctx);
  case QuantFormat::Q8_0:
    return dotQ8_0(e, ctx);
  case QuantFormat::Q4_K:
    return dotQ4_K(e, ctx);
  case QuantFormat::Q6_K:
    return dotQ6_K(e, ctx);
  default:
    llvm_unreachable("no dot kernel for the format");
  }
}
