//===- test_decode_codebooks.cpp - Properties of the generated tables -----===//
//
// Codebooks.cpp is generated from the gguf package; these checks catch a
// wrong unpacking (value sets, sign parity, distinct rows) without copying
// the tables a second time.
//
//===----------------------------------------------------------------------===//

#include "Codebooks.h"

#include <gtest/gtest.h>

#include <set>

using namespace qcc::codebooks;

namespace {

template <typename T, size_t N>
void expectRowsOver(const T (&grid)[N], std::set<int> values, bool isSigned) {
  std::set<T> rows;
  for (size_t r = 0; r < N; ++r) {
    rows.insert(grid[r]);
    for (size_t j = 0; j < sizeof(T); ++j) {
      const uint8_t b = uint8_t(grid[r] >> (8 * j));
      const int v = isSigned ? int(int8_t(b)) : int(b);
      ASSERT_TRUE(values.count(v)) << "row " << r << " entry " << j << " " << v;
    }
  }
  EXPECT_EQ(rows.size(), N) << "rows must be distinct";
}

TEST(Codebooks, GridValueSets) {
  expectRowsOver(kIQ2XXSGrid, {0x08, 0x19, 0x2b}, false);
  expectRowsOver(kIQ2XSGrid, {0x08, 0x19, 0x2b}, false);
  expectRowsOver(kIQ2SGrid, {0x08, 0x19, 0x2b}, false);
  expectRowsOver(kIQ3XXSGrid, {4, 12, 20, 28, 36, 44, 52, 62}, false);
  expectRowsOver(kIQ3SGrid, {1, 3, 5, 7, 9, 11, 13, 15}, false);
  expectRowsOver(kIQ1SGrid, {-1, 0, 1}, true);
  // Known first rows (ggml's tables start with the all-smallest row).
  EXPECT_EQ(kIQ2XXSGrid[0], 0x0808080808080808ull);
  EXPECT_EQ(kIQ1SGrid[0], 0xffffffffffffffffull);
}

TEST(Codebooks, SignsHaveEvenParity) {
  for (int i = 0; i < 128; ++i) {
    EXPECT_EQ(kSignsIQ2XS[i] & 127, i);
    EXPECT_EQ(__builtin_popcount(kSignsIQ2XS[i]) % 2, 0) << i;
  }
}

TEST(Codebooks, FourBitValueSets) {
  const int iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                         1,    13,   25,  38,  53,  69,  89,  113};
  const int e2m1x2[16] = {0, 1,  2,  3,  4,  6,  8,  12,
                          0, -1, -2, -3, -4, -6, -8, -12};
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(kValuesIQ4NL[i], iq4nl[i]);
    EXPECT_EQ(kValuesMXFP4[i], e2m1x2[i]);
  }
}

} // namespace
