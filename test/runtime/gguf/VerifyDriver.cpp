//===- VerifyDriver.cpp - Reader driver for sanitizer runs ----------------===//
//
// Built together with the reader and writer sources under AddressSanitizer
// and UBSan (see CMakeLists.txt). For each file: parse it from disk and from
// a heap copy of exactly its size (so any overread hits a redzone), and for
// valid files also write it back to memory and parse that again. Prints the
// same one-line verdict as `qcc-gguf verify`; exit 0 valid, 1 invalid.
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/Gguf.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>

using namespace qcc::gguf;

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s FILE\n", argv[0]);
    return 2;
  }
  std::string err;
  auto file = File::open(argv[1], &err);

  std::ifstream in(argv[1], std::ios::binary);
  std::vector<char> raw(std::istreambuf_iterator<char>(in), {});
  std::unique_ptr<uint8_t[]> copy(new uint8_t[raw.size() ? raw.size() : 1]);
  if (!raw.empty())
    std::memcpy(copy.get(), raw.data(), raw.size());
  std::string err2;
  auto mem = File::openMemory(copy.get(), raw.size(), &err2);
  if (!file != !mem || err != err2) {
    std::fprintf(stderr, "driver: open() and openMemory() disagree\n");
    return 3;
  }
  if (!file) {
    std::fprintf(stderr, "qcc-gguf: %s: %s\n", argv[1], err.c_str());
    return 1;
  }
  // Exercise the writer on what was read: the copy must parse identically.
  std::vector<uint8_t> out;
  if (!Writer::fromFile(*mem).writeToMemory(out, &err)) {
    std::fprintf(stderr, "driver: re-write failed: %s\n", err.c_str());
    return 3;
  }
  auto again = File::openMemory(out.data(), out.size(), &err);
  if (!again || again->tensors().size() != mem->tensors().size() ||
      again->metadata().size() != mem->metadata().size()) {
    std::fprintf(stderr, "driver: re-written file differs: %s\n",
                 err.c_str());
    return 3;
  }
  for (size_t k = 0; k < mem->tensors().size(); ++k)
    if (std::memcmp(again->tensors()[k].data, mem->tensors()[k].data,
                    mem->tensors()[k].nbytes) != 0)
      return 3;
  std::printf("OK %s\n", argv[1]);
  return 0;
}
