//===- SplitMix64.h - The sign generator of hadamard and JL carries -------===//
//
// docs/spec.md §3.6 and §4 define the random signs of qcc.hadamard and of the
// JL carry sketch through splitmix64; the compiler (constant sign tables)
// and the runtime (carry_update) evaluate this one definition.
//
//===----------------------------------------------------------------------===//

#ifndef QCC_RUNTIME_SPLITMIX64_H
#define QCC_RUNTIME_SPLITMIX64_H

#include <cstdint>

namespace qcc {

/// splitmix64 of `x` (all arithmetic modulo 2^64).
constexpr uint64_t splitmix64(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// The sign drawn for index `i` under `seed`: -1 when bit 63 of
/// splitmix64(seed + i) is set, else +1.
constexpr float splitmixSign(uint64_t seed, uint64_t i) {
  return (splitmix64(seed + i) >> 63) ? -1.0f : 1.0f;
}

} // namespace qcc

#endif // QCC_RUNTIME_SPLITMIX64_H
