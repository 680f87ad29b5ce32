//===- Session.h - Run compiled steps over a GGUF model ---------*- C++ -*-===//
//
// Loads a step library (docs/runtime.md), checks its manifest against a GGUF
// model and binds each argument: frozen weights point straight into the
// read-only mapping, trainable weights (those a result of the same name
// replaces) get a private copy, state starts at zero, inputs are supplied by
// the caller. Each run calls the entry and feeds results back into the
// arguments of the same name, so `train_step(w, carry, x) -> (w, carry,
// loss)` trains when run repeatedly. The model file is never written; save()
// writes a new GGUF atomically.
//
//===----------------------------------------------------------------------===//

#ifndef QCC_RUNTIME_SESSION_H
#define QCC_RUNTIME_SESSION_H

#include "qcc/Runtime/Gguf.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace qcc::rt {

/// One argument or result, as the manifest describes it.
struct ValueDesc {
  size_t index = 0;
  std::string name, role, kind; ///< kind: qtensor | tensor | scalar
  std::string type;             ///< format (qtensor) or dtype
  uint32_t ggmlType = 0;        ///< GGUF type id of `type`
  std::vector<int64_t> shape;   ///< MLIR order, outermost first
  uint64_t bytes = 0;
};

struct EntryDesc {
  std::string name, symbol;
  std::vector<ValueDesc> args, results;
};

/// A loaded step library (dlopen'ed, closed on destruction).
class StepLibrary {
public:
  static std::unique_ptr<StepLibrary> load(const std::string &path,
                                           std::string *error);
  ~StepLibrary();

  const std::vector<EntryDesc> &entries() const { return Entries; }
  const EntryDesc *findEntry(const std::string &name) const;
  /// Calls `entry` with one pointer per argument, then per result.
  void call(const EntryDesc &entry, void **args) const;
  /// The first error the step's runtime functions recorded, or "".
  std::string takeError() const;

private:
  StepLibrary() = default;
  void *Handle = nullptr;
  std::vector<EntryDesc> Entries;
  std::vector<void (*)(void **)> Functions; ///< parallel to Entries
  const char *(*TakeError)() = nullptr;
};

/// An entry of a step library bound to a model.
class Session {
public:
  /// Checks the entry's weights against `model` (names, types, shapes) and
  /// binds every argument. `model` must outlive the session.
  static std::unique_ptr<Session> create(const StepLibrary &library,
                                         const std::string &entry,
                                         const gguf::File &model,
                                         std::string *error);

  /// Sets an input or state argument from raw bytes (its exact size).
  bool setArgument(const std::string &name, const void *data, size_t bytes,
                   std::string *error);
  /// Arguments that still need a value before run() (inputs).
  std::vector<std::string> missingArguments() const;

  /// What one run did.
  enum class Outcome {
    Applied, ///< results replaced the arguments of the same name
    Skipped, ///< non-finite values (the loss, or a block the step's runtime
             ///< refused): nothing was fed back, `message` says why
    Failed   ///< the run could not happen (e.g. an input has no value)
  };
  /// One call of the entry; results replace the arguments of the same name
  /// unless the step produced non-finite values, in which case the weights
  /// and state stay as they were and the step is reported as skipped.
  Outcome run(std::string *message);

  /// The latest value of a result, or nullptr.
  const std::vector<uint8_t> *result(const std::string &name) const;
  /// The latest value of a scalar f32 result named `name`, or NaN.
  float scalarResult(const std::string &name) const;
  const EntryDesc &entry() const { return Entry; }
  /// Names of the weights the step updates.
  std::vector<std::string> trainableWeights() const;
  /// Steps applied so far (skipped ones not counted).
  uint64_t steps() const { return Steps; }

  /// Writes the model with every trainable weight replaced by its current
  /// value, through the atomic writer (never onto the model itself).
  bool save(const std::string &path, std::string *error) const;

private:
  struct Slot {
    const ValueDesc *desc = nullptr;
    const uint8_t *frozen = nullptr; ///< points into the model's mapping
    std::vector<uint8_t> owned;      ///< trainable weight, state or input
    bool hasValue = false;
    const uint8_t *data() const { return frozen ? frozen : owned.data(); }
  };
  /// The argument that result `result` replaces after a run, or nullptr.
  Slot *fedBy(size_t result);
  /// "" or why the latest results are unusable (a non-finite f32 `loss`).
  std::string nonFiniteLoss() const;
  Session(const StepLibrary &library, const EntryDesc &entry,
          const gguf::File &model)
      : Library(library), Entry(entry), Model(model) {}

  const StepLibrary &Library;
  const EntryDesc &Entry;
  const gguf::File &Model;
  std::vector<Slot> Args;
  std::vector<std::vector<uint8_t>> Results;
  uint64_t Steps = 0; ///< applied
  uint64_t Runs = 0;  ///< attempted, skipped ones included
};

} // namespace qcc::rt

#endif // QCC_RUNTIME_SESSION_H
