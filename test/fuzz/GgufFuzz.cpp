//===- GgufFuzz.cpp - libFuzzer target for the GGUF reader ----------------===//
//
// Parses arbitrary bytes with File::openMemory. Whatever parses must be
// safe to use: every tensor's bytes are touched (so ASan checks they lie in
// the input), every value is rendered, and the file is written back to
// memory and re-parsed, which must succeed with the same contents. Built by
// scripts/fuzz with clang++ -fsanitize=fuzzer,address,undefined.
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/Gguf.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>

using namespace qcc::gguf;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string err;
  auto file = File::openMemory(data, size, &err);
  if (!file) {
    // A rejection must still be a well-formed one-line message.
    if (err.rfind("rule ", 0) != 0 || err.find('\n') != std::string::npos)
      std::abort();
    return 0;
  }
  volatile uint8_t sink = 0;
  for (const TensorInfo &t : file->tensors()) {
    if (t.nbytes) {
      sink = sink ^ t.data[0] ^ t.data[t.nbytes - 1];
    }
    if (file->findTensor(t.name) != &t)
      std::abort();
  }
  for (const auto &kv : file->metadata()) {
    (void)kv.second.toString(4);
    if (file->find(kv.first) != &kv.second)
      std::abort();
  }
  std::vector<uint8_t> out;
  if (!Writer::fromFile(*file).writeToMemory(out, &err))
    std::abort(); // what the reader accepts the writer must accept
  auto again = File::openMemory(out.data(), out.size(), &err);
  if (!again || again->metadata().size() != file->metadata().size() ||
      again->tensors().size() != file->tensors().size())
    std::abort();
  for (size_t k = 0; k < file->metadata().size(); ++k)
    if (again->metadata()[k] != file->metadata()[k])
      std::abort();
  for (size_t k = 0; k < file->tensors().size(); ++k)
    if (std::memcmp(again->tensors()[k].data, file->tensors()[k].data,
                    file->tensors()[k].nbytes) != 0)
      std::abort();
  return 0;
}
