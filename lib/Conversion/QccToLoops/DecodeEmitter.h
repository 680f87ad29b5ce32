//===- DecodeEmitter.h - Builder helpers for block decoders -----*- C++ -*-===//
//
// Small vocabulary the per-format emitters are written in, so that each one
// reads like its C++ reference in runtime/lib/formats/Decode.cpp: byte and
// little-endian word loads relative to the block, f16 scales, integer bit
// operations in i32, f32 arithmetic without fast-math (no contraction, so
// results match the reference bit for bit), loops over elements, and
// constant tables.
//
//===----------------------------------------------------------------------===//

#ifndef QCC_LIB_CONVERSION_QCCTOLOOPS_DECODEEMITTER_H
#define QCC_LIB_CONVERSION_QCCTOLOOPS_DECODEEMITTER_H

#include "qcc/Conversion/QccToLoops/BlockDecode.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

namespace mlir::qcc::detail {

class DecodeEmitter {
public:
  DecodeEmitter(OpBuilder &b, Location loc, const BlockDecodeSite &site)
      : b(b), loc(loc), site(site) {}

  OpBuilder &b;
  Location loc;
  BlockDecodeSite site;

  // Constants.
  Value index(int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); }
  Value i32(int64_t v) {
    return arith::ConstantIntOp::create(b, loc, b.getI32Type(), v);
  }
  Value f32(float v) {
    return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
  }

  // Index arithmetic.
  Value addIndex(Value a, Value c) {
    return arith::AddIOp::create(b, loc, a, c);
  }
  Value addIndex(Value a, int64_t c) { return c ? addIndex(a, index(c)) : a; }
  Value mulIndex(Value a, int64_t c) {
    return arith::MulIOp::create(b, loc, a, index(c));
  }
  Value shrIndex(Value a, int64_t s) {
    return arith::ShRUIOp::create(b, loc, a, index(s));
  }
  Value toIndex(Value i) {
    return arith::IndexCastUIOp::create(b, loc, b.getIndexType(), i);
  }
  Value toI32(Value idx) {
    return arith::IndexCastUIOp::create(b, loc, b.getI32Type(), idx);
  }
  /// Index `a` (a loop counter) < c.
  Value ultIndex(Value a, int64_t c) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, a,
                                 index(c));
  }

  // Block bytes, relative to the block's first byte. Results are i32.
  Value u8(Value rel) {
    Value byte = memref::LoadOp::create(b, loc, site.bytes,
                                        addIndex(site.byteOffset, rel));
    return arith::ExtUIOp::create(b, loc, b.getI32Type(), byte);
  }
  Value u8(int64_t rel) { return u8(index(rel)); }
  Value s8(Value rel) {
    Value byte = memref::LoadOp::create(b, loc, site.bytes,
                                        addIndex(site.byteOffset, rel));
    return arith::ExtSIOp::create(b, loc, b.getI32Type(), byte);
  }
  Value u16(Value rel) { return ori(u8(rel), shli(u8(addIndex(rel, 1)), 8)); }
  Value u16(int64_t rel) { return u16(index(rel)); }
  Value u32(Value rel) {
    return ori(
        ori(u8(rel), shli(u8(addIndex(rel, 1)), 8)),
        ori(shli(u8(addIndex(rel, 2)), 16), shli(u8(addIndex(rel, 3)), 24)));
  }
  Value u32(int64_t rel) {
    return ori(ori(u8(rel), shli(u8(rel + 1), 8)),
               ori(shli(u8(rel + 2), 16), shli(u8(rel + 3), 24)));
  }
  /// IEEE half at `rel`, widened exactly to f32.
  Value f16At(int64_t rel) { return halfBitsToF32(u16(rel)); }
  Value halfBitsToF32(Value bitsI32) {
    Value h = arith::TruncIOp::create(b, loc, b.getI16Type(), bitsI32);
    Value f = arith::BitcastOp::create(b, loc, b.getF16Type(), h);
    return arith::ExtFOp::create(b, loc, b.getF32Type(), f);
  }
  Value bf16BitsToF32(Value bitsI32) {
    return arith::BitcastOp::create(b, loc, b.getF32Type(), shli(bitsI32, 16));
  }

  // i32 bit operations.
  Value andi(Value a, int64_t m) { return andi(a, i32(m)); }
  Value andi(Value a, Value c) { return arith::AndIOp::create(b, loc, a, c); }
  Value ori(Value a, Value c) { return arith::OrIOp::create(b, loc, a, c); }
  Value shli(Value a, int64_t s) { return shli(a, i32(s)); }
  Value shli(Value a, Value s) { return arith::ShLIOp::create(b, loc, a, s); }
  Value shrui(Value a, int64_t s) { return shrui(a, i32(s)); }
  Value shrui(Value a, Value s) { return arith::ShRUIOp::create(b, loc, a, s); }
  Value addi(Value a, int64_t c) { return addi(a, i32(c)); }
  Value addi(Value a, Value c) { return arith::AddIOp::create(b, loc, a, c); }
  Value subi(Value a, int64_t c) { return subi(a, i32(c)); }
  Value subi(Value a, Value c) { return arith::SubIOp::create(b, loc, a, c); }
  Value muli(Value a, int64_t c) { return muli(a, i32(c)); }
  Value muli(Value a, Value c) { return arith::MulIOp::create(b, loc, a, c); }
  /// (a >> s) & mask, the common bit-field read.
  Value bits(Value a, Value s, int64_t mask) { return andi(shrui(a, s), mask); }
  Value bits(Value a, int64_t s, int64_t mask) {
    return andi(shrui(a, s), mask);
  }
  Value isNonZero(Value a) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne, a, i32(0));
  }
  Value eqi(Value a, int64_t c) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, a, i32(c));
  }
  Value ulti(Value a, int64_t c) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, a, i32(c));
  }
  Value select(Value c, Value t, Value f) {
    return arith::SelectOp::create(b, loc, c, t, f);
  }

  // f32 arithmetic (no fast-math flags: never contracted into FMAs).
  Value sitofp(Value i) {
    return arith::SIToFPOp::create(b, loc, b.getF32Type(), i);
  }
  Value mulf(Value a, Value c) { return arith::MulFOp::create(b, loc, a, c); }
  Value addf(Value a, Value c) { return arith::AddFOp::create(b, loc, a, c); }
  Value subf(Value a, Value c) { return arith::SubFOp::create(b, loc, a, c); }
  Value negf(Value a) { return arith::NegFOp::create(b, loc, a); }
  /// The f32 whose bits are the i32 `bitsI32`.
  Value bitsToF32(Value bitsI32) {
    return arith::BitcastOp::create(b, loc, b.getF32Type(), bitsI32);
  }
  /// Decode.cpp's applySign: bit j (i32) of `signs` set -> -v, else v. An
  /// explicit negation (never a multiply by -1), so a NaN's sign flips too.
  Value applySign(Value v, Value signs, Value j) {
    return select(isNonZero(bits(signs, j, 1)), negf(v), v);
  }

  /// out[outOffset + rel] = v.
  void store(Value v, Value rel) {
    memref::StoreOp::create(b, loc, v, site.out, addIndex(site.outOffset, rel));
  }
  void store(Value v, int64_t rel) { store(v, index(rel)); }

  /// for (j = 0; j < n; ++j) body(j) with j an index.
  void forEach(int64_t n, function_ref<void(Value)> body) {
    scf::ForOp loop = scf::ForOp::create(b, loc, index(0), index(n), index(1));
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(loop.getBody());
    body(loop.getInductionVar());
  }

  /// A constant table of bytes (signed or unsigned i8 entries, or wider
  /// integers split into little-endian bytes by the caller), stored once per
  /// module as memref.global `name`.
  Value byteTable(StringRef name, ArrayRef<uint8_t> bytes);
  /// A table of signed bytes (e.g. the non-linear 4-bit value sets).
  Value byteTable(StringRef name, ArrayRef<int8_t> bytes) {
    return byteTable(
        name, ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(bytes.data()),
                                bytes.size()));
  }
  /// A table of grid rows held as little-endian integers (the runtime's
  /// uint64_t / uint32_t codebooks), laid out as the bytes ggml reads: entry
  /// k of row r is byte r * sizeof(Word) + k. Split explicitly, so the
  /// result does not depend on the compiler host's byte order.
  template <typename Word>
  Value wordTable(StringRef name, ArrayRef<Word> words) {
    SmallVector<uint8_t> bytes;
    bytes.reserve(words.size() * sizeof(Word));
    for (Word w : words)
      for (unsigned k = 0; k < sizeof(Word); ++k)
        bytes.push_back(static_cast<uint8_t>(w >> (8 * k)));
    return byteTable(name, bytes);
  }
  /// Entry `i` (i32 index) of a byte table, zero- or sign-extended to i32.
  Value tableU8(Value table, Value i) {
    Value v = memref::LoadOp::create(b, loc, table, toIndex(i));
    return arith::ExtUIOp::create(b, loc, b.getI32Type(), v);
  }
  Value tableS8(Value table, Value i) {
    Value v = memref::LoadOp::create(b, loc, table, toIndex(i));
    return arith::ExtSIOp::create(b, loc, b.getI32Type(), v);
  }
};

/// Per-family emitters, each handling the formats its file names.
bool emitLegacyDecode(DecodeEmitter &e, QuantFormat format);
bool emitKQuantDecode(DecodeEmitter &e, QuantFormat format);
bool emitIQuantDecode(DecodeEmitter &e, QuantFormat format);
bool emitOtherDecode(DecodeEmitter &e, QuantFormat format);

} // namespace mlir::qcc::detail

#endif // QCC_LIB_CONVERSION_QCCTOLOOPS_DECODEEMITTER_H
