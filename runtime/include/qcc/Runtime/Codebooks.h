//===- Codebooks.h - Codebook tables of the iq / fp4 formats --------------===//
//
// The lookup tables that some GGUF formats are defined by: the iq lattice
// grids, the iq2 sign patterns and the non-linear 4-bit value sets. They are
// format data, not derivable, so Codebooks.cpp is generated from the `gguf`
// Python package by scripts/gen_codebooks.py (see there for provenance).
//
// Each grid row is stored as ggml's dequantizers read it: one byte per
// entry, entry k of a row in byte k (little endian) of its integer. Shared
// by the decoders and the encoders of runtime/lib/formats, and by the
// compiler, which embeds these very arrays (linked from qcc_codecs) as
// constant tables of the decoders it emits, so there is one copy of the data.
//
//===----------------------------------------------------------------------===//

#ifndef QCC_RUNTIME_CODEBOOKS_H
#define QCC_RUNTIME_CODEBOOKS_H

#include <cstdint>

namespace qcc {
namespace codebooks {

/// iq2_xxs: 256 rows of 8 magnitudes, each one of {0x08, 0x19, 0x2b}.
extern const uint64_t kIQ2XXSGrid[256];
/// iq2_xs: 512 rows of 8 magnitudes in {0x08, 0x19, 0x2b}.
extern const uint64_t kIQ2XSGrid[512];
/// iq2_s: 1024 rows of 8 magnitudes in {0x08, 0x19, 0x2b}.
extern const uint64_t kIQ2SGrid[1024];
/// iq1_s / iq1_m: 2048 rows of 8 int8 values in {-1, 0, +1} (two's
/// complement bytes, so -1 is 0xff).
extern const uint64_t kIQ1SGrid[2048];
/// iq3_xxs: 256 rows of 4 magnitudes in {4, 12, ..., 62}.
extern const uint32_t kIQ3XXSGrid[256];
/// iq3_s: 512 rows of 4 magnitudes in {1, 3, ..., 15}.
extern const uint32_t kIQ3SGrid[512];

/// iq2_xxs / iq2_xs / iq3_xxs: 7 stored sign bits -> 8 sign bits (the 8th
/// makes the number of minus signs even).
extern const uint8_t kSignsIQ2XS[128];
/// Bit k selects the sign of entry k of a grid row.
inline constexpr uint8_t kMaskIQ2XS[8] = {1, 2, 4, 8, 16, 32, 64, 128};

/// iq4_nl / iq4_xs: the 16 non-linear 4-bit values.
extern const int8_t kValuesIQ4NL[16];
/// mxfp4 / nvfp4: e2m1 values doubled (so they are integers); the block
/// scale carries the compensating factor 1/2.
extern const int8_t kValuesMXFP4[16];

/// iq1_s / iq1_m: the shift added to every grid value (sign from the block).
inline constexpr float kIQ1Delta = 0.125f;

} // namespace codebooks
} // namespace qcc

#endif // QCC_RUNTIME_CODEBOOKS_H
