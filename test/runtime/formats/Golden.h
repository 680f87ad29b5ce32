//===- Golden.h - ggml's golden vectors for the codec tests ----*- C++ -*-===//
//
// The golden file (test/data/golden/ggml-golden.gguf, made by ggml itself),
// opened once per test binary through the project's own reader.
//
//===----------------------------------------------------------------------===//

#ifndef QCC_TEST_RUNTIME_FORMATS_GOLDEN_H
#define QCC_TEST_RUNTIME_FORMATS_GOLDEN_H

#include "qcc/Runtime/Gguf.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>

namespace qcc::test {

inline const gguf::File &golden() {
  static std::unique_ptr<gguf::File> file = [] {
    std::string err;
    auto f = gguf::File::open(QCC_GOLDEN_GGUF, &err);
    if (!f)
      ADD_FAILURE() << "cannot open " << QCC_GOLDEN_GGUF << ": " << err;
    return f;
  }();
  if (!file)
    std::abort();
  return *file;
}

} // namespace qcc::test

#endif // QCC_TEST_RUNTIME_FORMATS_GOLDEN_H
