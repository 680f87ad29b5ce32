//===- SplitMix64.h - The sign generator of hadamard and JL carries -------===//
//
// docs/spec.md §3.6 and §4 define the random signs of qcc.hadamard and of the
// JL carry sketch through splitmix64; the compiler (constant sign tables)
// and the runtime (carry_update) evaluate this one definition. The same
// generator, as a stream, is the seeded RNG of a training session.
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

/// A splitmix64 stream: the k-th draw (k = 0, 1, ...) after seeding with `s`
/// is splitmix64(s + k·γ), γ = 0x9E3779B97F4A7C15. Its whole state is one
/// integer, so a checkpoint saves and restores it exactly. A Session owns
/// one (seeded by the host) for initialization and data sampling.
class SplitMix64Stream {
public:
  explicit constexpr SplitMix64Stream(uint64_t seed = 0) : State(seed) {}

  constexpr uint64_t next() {
    uint64_t out = splitmix64(State);
    State += 0x9E3779B97F4A7C15ull;
    return out;
  }
  /// Uniform in [0, 1): the top 24 bits of a draw, exact in f32.
  constexpr float uniform() {
    return float(next() >> 40) * (1.0f / 16777216.0f);
  }

  constexpr uint64_t state() const { return State; }
  constexpr void setState(uint64_t state) { State = state; }

private:
  uint64_t State;
};

} // namespace qcc

#endif // QCC_RUNTIME_SPLITMIX64_H
