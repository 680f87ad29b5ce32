//===- DecodeIQuants.cpp - i-quant block decoders -------------------------===//
//
// Mirrors the "i-quants" section of runtime/lib/formats/Decode.cpp. The
// codebooks are the runtime's own arrays (qcc/Runtime/Codebooks.h, linked
// from qcc_codecs), embedded once per module as byte tables, so compiler and
// runtime cannot disagree on the data.
//
// Shape of the IR: the 256-element i-quant blocks are 8 groups of 32 with
// per-group scales read from group-dependent offsets; unrolling the groups
// would multiply the (large) group body by 8, so groups are an scf.for with
// the scale computed once per iteration, then scf.for over the 4 rows of 8
// (or 4 + 4) elements and over the entries of a row. The f32 operations per
// element are exactly the reference's: the scale products once per group,
// then one multiply (and add, for iq1) per element and the explicit sign.
//
//===----------------------------------------------------------------------===//

#include "DecodeEmitter.h"

#include "qcc/Runtime/Codebooks.h"

using namespace mlir;
using namespace mlir::qcc;
using namespace mlir::qcc::detail;
namespace cb = ::qcc::codebooks;

/// (d * (0.5 + s)) * factor, the iq2 / iq3_xxs group scale (s an i32).
static Value halfStepScale(DecodeEmitter &e, Value d, Value s, float factor) {
  return e.mulf(e.mulf(d, e.addf(e.f32(0.5f), e.sitofp(s))), e.f32(factor));
}

static Value signsTable(DecodeEmitter &e) {
  return e.byteTable("qcc_iq2xs_signs", ArrayRef<uint8_t>(cb::kSignsIQ2XS));
}

/// Stores applySign(db * grid[row][j], signs, j) for the 8 entries of a
/// 64-bit grid row at out[base + j].
static void emitSignedRow8(DecodeEmitter &e, Value grid, Value row, Value db,
                           Value signs, Value base) {
  e.forEach(8, [&](Value j) {
    Value j32 = e.toI32(j);
    Value mag = e.tableU8(grid, e.addi(e.muli(row, 8), j32));
    e.store(e.applySign(e.mulf(db, e.sitofp(mag)), signs, j32),
            e.addIndex(base, j));
  });
}

/// iq2_xxs (66 B): f16 d @0; group g at 2 + 8g: 4 grid indices, then a u32
/// of 4 x 7 sign-table indices and the 4-bit scale (top).
/// y = ((d * (0.5 + s)) * 0.25) * grid * sign
static void emitIQ2XXS(DecodeEmitter &e) {
  Value d = e.f16At(0);
  Value grid =
      e.wordTable("qcc_iq2xxs_grid", ArrayRef<uint64_t>(cb::kIQ2XXSGrid));
  Value signsT = signsTable(e);
  e.forEach(8, [&](Value g) {
    Value q = e.addIndex(e.mulIndex(g, 8), 2);
    Value aux = e.u32(e.addIndex(q, 4));
    Value db = halfStepScale(e, d, e.shrui(aux, 28), 0.25f);
    e.forEach(4, [&](Value l) {
      Value signIdx = e.bits(aux, e.muli(e.toI32(l), 7), 127);
      emitSignedRow8(e, grid, e.u8(e.addIndex(q, l)), db,
                     e.tableU8(signsT, signIdx),
                     e.addIndex(e.mulIndex(g, 32), e.mulIndex(l, 8)));
    });
  });
}

/// The two half-group scales of iq2_xs / iq2_s group g: the nibbles of the
/// scale byte at `at`; rows l < 2 of the group use the low one.
static std::pair<Value, Value> iq2Scales(DecodeEmitter &e, Value d, Value at) {
  Value sc = e.u8(at);
  return {halfStepScale(e, d, e.andi(sc, 0xf), 0.25f),
          halfStepScale(e, d, e.shrui(sc, 4), 0.25f)};
}

/// iq2_xs (74 B): f16 d @0, u16 qs[32] @2 (9-bit grid index | 7-bit sign
/// index << 9), scales[8] @66 (a 4-bit scale per 16 elements).
static void emitIQ2XS(DecodeEmitter &e) {
  Value d = e.f16At(0);
  Value grid =
      e.wordTable("qcc_iq2xs_grid", ArrayRef<uint64_t>(cb::kIQ2XSGrid));
  Value signsT = signsTable(e);
  e.forEach(8, [&](Value g) {
    Value db0, db1; // (not structured bindings: lambdas capture them)
    std::tie(db0, db1) = iq2Scales(e, d, e.addIndex(g, 66));
    e.forEach(4, [&](Value l) {
      Value db = e.select(e.ultIndex(l, 2), db0, db1);
      Value k = e.addIndex(e.mulIndex(g, 4), l);
      Value q = e.u16(e.addIndex(e.mulIndex(k, 2), 2));
      emitSignedRow8(e, grid, e.andi(q, 511), db,
                     e.tableU8(signsT, e.shrui(q, 9)), e.mulIndex(k, 8));
    });
  });
}

/// iq2_s (82 B): f16 d @0, qs[32] @2 (low 8 index bits), signs[32] @34
/// (explicit sign bytes), qh[8] @66 (2 high index bits per row), scales[8]
/// @74 (as iq2_xs).
static void emitIQ2S(DecodeEmitter &e) {
  Value d = e.f16At(0);
  Value grid = e.wordTable("qcc_iq2s_grid", ArrayRef<uint64_t>(cb::kIQ2SGrid));
  e.forEach(8, [&](Value g) {
    Value db0, db1; // (not structured bindings: lambdas capture them)
    std::tie(db0, db1) = iq2Scales(e, d, e.addIndex(g, 74));
    Value qh = e.u8(e.addIndex(g, 66));
    e.forEach(4, [&](Value l) {
      Value db = e.select(e.ultIndex(l, 2), db0, db1);
      Value k = e.addIndex(e.mulIndex(g, 4), l);
      // idx = qs[l] | ((qh[g] << (8 - 2l)) & 0x300)
      Value shift = e.subi(e.i32(8), e.muli(e.toI32(l), 2));
      Value idx =
          e.ori(e.u8(e.addIndex(k, 2)), e.andi(e.shli(qh, shift), 0x300));
      emitSignedRow8(e, grid, idx, db, e.u8(e.addIndex(k, 34)),
                     e.mulIndex(k, 8));
    });
  });
}

/// Stores the 8 elements of two 4-entry iq3 grid rows r1, r2 at out[base..]:
/// applySign(db * g1[j], signs, j) and applySign(db * g2[j], signs, j + 4).
static void emitSignedRows4(DecodeEmitter &e, Value grid, Value r1, Value r2,
                            Value db, Value signs, Value base) {
  e.forEach(4, [&](Value j) {
    Value j32 = e.toI32(j);
    Value m1 = e.tableU8(grid, e.addi(e.muli(r1, 4), j32));
    Value m2 = e.tableU8(grid, e.addi(e.muli(r2, 4), j32));
    e.store(e.applySign(e.mulf(db, e.sitofp(m1)), signs, j32),
            e.addIndex(base, j));
    e.store(e.applySign(e.mulf(db, e.sitofp(m2)), signs, e.addi(j32, 4)),
            e.addIndex(e.addIndex(base, j), 4));
  });
}

/// iq3_xxs (98 B): f16 d @0, qs[64] @2 (a 4-entry grid index per 4
/// elements), a u32 per group @66 + 4g (4 x 7-bit sign index, 4-bit scale).
/// y = ((d * (0.5 + s)) * 0.5) * grid * sign
static void emitIQ3XXS(DecodeEmitter &e) {
  Value d = e.f16At(0);
  Value grid =
      e.wordTable("qcc_iq3xxs_grid", ArrayRef<uint32_t>(cb::kIQ3XXSGrid));
  Value signsT = signsTable(e);
  e.forEach(8, [&](Value g) {
    Value aux = e.u32(e.addIndex(e.mulIndex(g, 4), 66));
    Value db = halfStepScale(e, d, e.shrui(aux, 28), 0.5f);
    e.forEach(4, [&](Value l) {
      Value signs = e.tableU8(signsT, e.bits(aux, e.muli(e.toI32(l), 7), 127));
      Value qs = e.addIndex(e.addIndex(e.mulIndex(g, 8), e.mulIndex(l, 2)), 2);
      emitSignedRows4(e, grid, e.u8(qs), e.u8(e.addIndex(qs, 1)), db, signs,
                      e.addIndex(e.mulIndex(g, 32), e.mulIndex(l, 8)));
    });
  });
}

/// iq3_s (110 B): f16 d @0, qs[64] @2 (low 8 index bits), qh[8] @66 (9th
/// index bits), signs[32] @74 (explicit sign bytes), scales[4] @106 (4-bit,
/// group g in nibble g%2 of byte g/2).  y = (d * (1 + 2s)) * grid * sign
static void emitIQ3S(DecodeEmitter &e) {
  Value d = e.f16At(0);
  Value grid = e.wordTable("qcc_iq3s_grid", ArrayRef<uint32_t>(cb::kIQ3SGrid));
  e.forEach(8, [&](Value g) {
    Value g32 = e.toI32(g);
    Value sByte = e.u8(e.addIndex(e.shrIndex(g, 1), 106));
    Value s = e.bits(sByte, e.muli(e.andi(g32, 1), 4), 0xf);
    Value db = e.mulf(d, e.sitofp(e.addi(e.muli(s, 2), 1)));
    Value qh = e.u8(e.addIndex(g, 66));
    e.forEach(4, [&](Value l) {
      Value l2 = e.muli(e.toI32(l), 2);
      Value qs = e.addIndex(e.addIndex(e.mulIndex(g, 8), e.mulIndex(l, 2)), 2);
      // i1 = qs[2l] | ((qh << (8 - 2l)) & 256), i2 with 7 - 2l.
      Value i1 = e.ori(e.u8(qs), e.andi(e.shli(qh, e.subi(e.i32(8), l2)), 256));
      Value i2 = e.ori(e.u8(e.addIndex(qs, 1)),
                       e.andi(e.shli(qh, e.subi(e.i32(7), l2)), 256));
      Value k = e.addIndex(e.mulIndex(g, 4), l);
      emitSignedRows4(e, grid, i1, i2, db, e.u8(e.addIndex(k, 74)),
                      e.mulIndex(k, 8));
    });
  });
}

/// y[base + j] = dl * (float(grid[idx][j]) + delta) over an int8 iq1 row.
static void emitIQ1Row(DecodeEmitter &e, Value grid, Value idx, Value dl,
                       Value delta, Value base) {
  e.forEach(8, [&](Value j) {
    Value v = e.tableS8(grid, e.addi(e.muli(idx, 8), e.toI32(j)));
    e.store(e.mulf(dl, e.addf(e.sitofp(v), delta)), e.addIndex(base, j));
  });
}

/// +-kIQ1Delta: minus where `bit` (i32) is non-zero.
static Value iq1Delta(DecodeEmitter &e, Value bit) {
  return e.select(e.isNonZero(bit), e.f32(-cb::kIQ1Delta),
                  e.f32(cb::kIQ1Delta));
}

/// iq1_s (50 B): f16 d @0, qs[32] @2 (low 8 index bits per row), u16 qh[8]
/// @34: 4 x 3 high index bits, 3-bit scale @12, delta sign @15.
/// y = (d * (2s + 1)) * (grid + delta)
static void emitIQ1S(DecodeEmitter &e) {
  Value d = e.f16At(0);
  Value grid = e.wordTable("qcc_iq1s_grid", ArrayRef<uint64_t>(cb::kIQ1SGrid));
  e.forEach(8, [&](Value g) {
    Value qh = e.u16(e.addIndex(e.mulIndex(g, 2), 34));
    Value dl = e.mulf(d, e.sitofp(e.addi(e.muli(e.bits(qh, 12, 7), 2), 1)));
    Value delta = iq1Delta(e, e.andi(qh, 0x8000));
    e.forEach(4, [&](Value l) {
      Value k = e.addIndex(e.mulIndex(g, 4), l);
      Value hi = e.bits(qh, e.muli(e.toI32(l), 3), 7);
      Value idx = e.ori(e.u8(e.addIndex(k, 2)), e.shli(hi, 8));
      emitIQ1Row(e, grid, idx, dl, delta, e.mulIndex(k, 8));
    });
  });
}

/// iq1_m (56 B): qs[32] @0, qh[16] @32 (a nibble per row: 3 high index
/// bits + delta sign), u16 sc[4] @48: 3-bit scales (one per 16 elements)
/// and, in their top nibbles, the f16 block scale.
static void emitIQ1M(DecodeEmitter &e) {
  Value grid = e.wordTable("qcc_iq1s_grid", ArrayRef<uint64_t>(cb::kIQ1SGrid));
  Value sc[4];
  for (int i = 0; i < 4; ++i)
    sc[i] = e.u16(48 + 2 * i);
  Value dBits =
      e.ori(e.ori(e.shrui(sc[0], 12), e.andi(e.shrui(sc[1], 8), 0xf0)),
            e.ori(e.andi(e.shrui(sc[2], 4), 0xf00), e.andi(sc[3], 0xf000)));
  Value d = e.halfBitsToF32(dBits);
  e.forEach(8, [&](Value g) {
    Value g32 = e.toI32(g);
    Value scG = e.u16(e.addIndex(e.mulIndex(e.shrIndex(g, 1), 2), 48));
    Value shift = e.muli(e.andi(g32, 1), 6);
    Value dl1 =
        e.mulf(d, e.sitofp(e.addi(e.muli(e.bits(scG, shift, 7), 2), 1)));
    Value dl2 = e.mulf(
        d, e.sitofp(e.addi(e.muli(e.bits(scG, e.addi(shift, 3), 7), 2), 1)));
    e.forEach(4, [&](Value l) {
      Value l32 = e.toI32(l);
      // Rows 2i and 2i + 1 share qh byte i: low nibble, then high nibble.
      Value qhB =
          e.u8(e.addIndex(e.addIndex(e.mulIndex(g, 2), e.shrIndex(l, 1)), 32));
      Value odd4 = e.muli(e.andi(l32, 1), 4);
      Value k = e.addIndex(e.mulIndex(g, 4), l);
      // idx = qs[l] | ((qh << 8) & 0x700) for even l, << 4 for odd l.
      Value idx =
          e.ori(e.u8(k), e.andi(e.shli(qhB, e.subi(e.i32(8), odd4)), 0x700));
      Value delta = iq1Delta(e, e.andi(qhB, e.shli(e.i32(0x08), odd4)));
      Value dl = e.select(e.ultIndex(l, 2), dl1, dl2);
      emitIQ1Row(e, grid, idx, dl, delta, e.mulIndex(k, 8));
    });
  });
}

static Value iq4Table(DecodeEmitter &e) {
  return e.byteTable("qcc_iq4nl_values", ArrayRef<int8_t>(cb::kValuesIQ4NL));
}

/// iq4_nl (18 B): f16 d @0, qs[16] @2 as q4_0.  y = d * kvalues[q]
static void emitIQ4NL(DecodeEmitter &e) {
  Value d = e.f16At(0);
  Value kv = iq4Table(e);
  e.forEach(16, [&](Value j) {
    Value q = e.u8(e.addIndex(j, 2));
    e.store(e.mulf(d, e.sitofp(e.tableS8(kv, e.andi(q, 0xf)))), j);
    e.store(e.mulf(d, e.sitofp(e.tableS8(kv, e.shrui(q, 4)))),
            e.addIndex(j, 16));
  });
}

/// iq4_xs (136 B): f16 d @0, u16 scales_h @2 (2 high bits per group),
/// scales_l[4] @4 (a nibble per group), qs[128] @8 (16 bytes per group, as
/// iq4_nl).  y = (d * (s - 32)) * kvalues[q]
static void emitIQ4XS(DecodeEmitter &e) {
  Value d = e.f16At(0);
  Value scalesH = e.u16(2);
  Value kv = iq4Table(e);
  e.forEach(8, [&](Value g) {
    Value g32 = e.toI32(g);
    Value lowByte = e.u8(e.addIndex(e.shrIndex(g, 1), 4));
    Value ls = e.ori(e.bits(lowByte, e.muli(e.andi(g32, 1), 4), 0xf),
                     e.shli(e.bits(scalesH, e.muli(g32, 2), 3), 4));
    Value dl = e.mulf(d, e.sitofp(e.subi(ls, 32)));
    Value qs = e.addIndex(e.mulIndex(g, 16), 8);
    Value base = e.mulIndex(g, 32);
    e.forEach(16, [&](Value j) {
      Value q = e.u8(e.addIndex(qs, j));
      e.store(e.mulf(dl, e.sitofp(e.tableS8(kv, e.andi(q, 0xf)))),
              e.addIndex(base, j));
      e.store(e.mulf(dl, e.sitofp(e.tableS8(kv, e.shrui(q, 4)))),
              e.addIndex(e.addIndex(base, j), 16));
    });
  });
}

bool mlir::qcc::detail::emitIQuantDecode(DecodeEmitter &e, QuantFormat format) {
  switch (format) {
  case QuantFormat::IQ2_XXS:
    emitIQ2XXS(e);
    return true;
  case QuantFormat::IQ2_XS:
    emitIQ2XS(e);
    return true;
  case QuantFormat::IQ2_S:
    emitIQ2S(e);
    return true;
  case QuantFormat::IQ3_XXS:
    emitIQ3XXS(e);
    return true;
  case QuantFormat::IQ3_S:
    emitIQ3S(e);
    return true;
  case QuantFormat::IQ1_S:
    emitIQ1S(e);
    return true;
  case QuantFormat::IQ1_M:
    emitIQ1M(e);
    return true;
  case QuantFormat::IQ4_NL:
    emitIQ4NL(e);
    return true;
  case QuantFormat::IQ4_XS:
    emitIQ4XS(e);
    return true;
  default:
    return false;
  }
}
