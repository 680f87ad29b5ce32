//===- Session.h - Run compiled steps over a GGUF model ---------*- C++ -*-===//
//
// Loads a step library (docs/runtime.md), checks its manifest against a GGUF
// model and binds each argument: frozen weights point straight into the
// read-only mapping, trainable weights (those a result of the same name
// replaces) get a private copy, state starts at zero, float parameters
// (role "param", e.g. LoRA matrices) are initialized from the session's
// seeded RNG, inputs are supplied by the caller. Each run calls the entry and
// feeds results back into the arguments of the same name, so
// `train_step(w, carry, x) -> (w, carry, loss)` trains when run repeatedly.
// The model file is never written; save(), saveCheckpoint(),
// saveLoraAdapter() and saveMerged() write new GGUFs atomically.
//
// A session runs on the CPU or, for steps compiled with --target=cuda, on
// device 0 of the CUDA driver (Device::Cuda, docs/runtime.md#cuda): the
// same binding and training loop with every tensor in device memory.
//
//===----------------------------------------------------------------------===//

#ifndef QCC_RUNTIME_SESSION_H
#define QCC_RUNTIME_SESSION_H

#include "qcc/Runtime/Gguf.h"
#include "qcc/Runtime/SplitMix64.h"
#include "qcc/Runtime/StepRuntime.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace qcc::rt {

/// Where a session runs its step: the CPU (steps compiled with
/// --target=cpu, the default) or device 0 of the CUDA driver (steps
/// compiled with --target=cuda; docs/runtime.md#cuda).
enum class Device { Cpu, Cuda };
/// "cpu" or "cuda"; false for anything else.
bool parseDevice(const std::string &name, Device &device);
const char *deviceName(Device device);

/// One argument or result, as the manifest describes it.
struct ValueDesc {
  size_t index = 0;
  std::string name, role, kind; ///< kind: qtensor | tensor | scalar
  std::string type;             ///< format (qtensor) or dtype
  uint32_t ggmlType = 0;        ///< GGUF type id of `type`
  std::vector<int64_t> shape;   ///< MLIR order, outermost first
  uint64_t bytes = 0;
  std::string init;             ///< param: "zeros" | "kaiming_uniform"
  bool inplace = false; ///< result: may be written into its argument's buffer
  std::string loraBase;         ///< param: the weight a LoRA matrix adapts
  std::string loraPart;         ///< "a" ([r, in]) | "b" ([out, r])
  double loraAlpha = 0;
};

struct EntryDesc {
  std::string name, symbol;
  std::vector<ValueDesc> args, results;
  /// 16 hex digits identifying the entry's manifest (its arguments and
  /// results, in order, with every attribute, except the inputs and the
  /// rank count, which a checkpoint does not depend on): checkpoints
  /// record it.
  std::string fingerprint;
  /// The ranks of the data-parallel job the entry's collectives were built
  /// for (docs/distributed.md); 1 for a step without collectives.
  int64_t ranks = 1;
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
  /// The first CUDA failure the step's mgpu functions recorded
  /// (qcc_cuda_take_error, CUDA steps only), or "".
  std::string takeCudaError() const;
  /// The manifest's "target": "cpu" (also when absent) or "cuda", and its
  /// "gpu_arch" ("sm_90"; empty for CPU steps).
  const std::string &target() const { return Target; }
  const std::string &gpuArch() const { return GpuArch; }
  /// Points the library's collectives at a communicator (StepRuntime.h);
  /// false for a library built before steps had them.
  bool setCollectives(const qcc_step_collectives &table) const;

  /// Profiling (a step compiled with qcc --profile; Profile.cpp): whether
  /// the library counts its kernels' calls.
  bool profiled() const { return ProfileTable != nullptr; }
  /// JSON array, one object per kernel: the compiler's description (id,
  /// kernel, op, type, loc, flops, bytes per call) with the counters so far
  /// (calls, ns); "" when not profiled. `reset` zeroes the counters.
  std::string profile(bool reset) const;
  /// Keeps up to `maxEvents` kernel calls from now on (0: stop tracing).
  void traceProfile(int64_t maxEvents) const;
  /// Writes the calls kept as a Chrome trace (chrome://tracing, Perfetto:
  /// one complete event per call, named by op and kernel), atomically.
  bool writeProfileTrace(const std::string &path, std::string *error) const;
  /// The per-kernel table a host prints: kernels by total time, the top
  /// `top` and one line for the rest, with calls, ms, share of the kernels'
  /// time and of `wallSeconds` (the steps' time; 0: not shown), GFLOP/s,
  /// GB/s and the first call site.
  std::string profileTable(double wallSeconds, int top = 25) const;

private:
  StepLibrary() = default;
  void *Handle = nullptr;
  std::vector<EntryDesc> Entries;
  std::vector<void (*)(void **)> Functions; ///< parallel to Entries
  const char *(*TakeError)() = nullptr;
  const char *(*TakeCudaError)() = nullptr;
  void (*SetCollectives)(const qcc_step_collectives *) = nullptr;
  const char *(*ProfileTable)() = nullptr;
  int64_t (*ProfileCounters)(int64_t *, int64_t *, int64_t, int32_t) = nullptr;
  void (*ProfileTrace)(int64_t) = nullptr;
  int64_t (*ProfileEvents)(int32_t *, int64_t *, int64_t *, int64_t) = nullptr;
  std::string Target = "cpu", GpuArch;
};

/// An entry of a step library bound to a model.
class Session {
public:
  /// Checks the entry's weights against `model` (names, types, shapes) and
  /// binds every argument; params are initialized from an RNG seeded with
  /// `seed`. `model` must outlive the session.
  /// With Device::Cuda every tensor argument and result lives in device
  /// memory (weights uploaded as their raw GGUF blocks); the host keeps
  /// mirrors that it refreshes when asked for values (argument(),
  /// result(), saves).
  static std::unique_ptr<Session> create(const StepLibrary &library,
                                         const std::string &entry,
                                         const gguf::File &model,
                                         std::string *error,
                                         uint64_t seed = 0,
                                         Device device = Device::Cpu);
  /// Whether `library` can run on `device`: its manifest's target matches,
  /// and for CUDA the driver loads (create() checks this first).
  static bool checkDevice(const StepLibrary &library, Device device,
                          std::string *error);
  Device device() const { return Dev; }
  ~Session();

  /// Re-seeds the RNG and initializes the params again from it; only
  /// before the first run.
  bool reseed(uint64_t seed, std::string *error);
  /// The session's random stream (splitmix64). Params are drawn from it at
  /// creation; hosts draw from it for data sampling so that a checkpoint,
  /// which saves its state, resumes the same sequence.
  SplitMix64Stream &rng() { return Rng; }

  /// Sets an input, state or param argument from raw bytes (its exact size).
  bool setArgument(const std::string &name, const void *data, size_t bytes,
                   std::string *error);
  /// The current value of a trainable weight (its GGUF bytes), param,
  /// state or input, or nullptr (frozen weights and unknown names).
  const std::vector<uint8_t> *argument(const std::string &name) const;
  /// Results the manifest marks `inplace` are written straight into the
  /// buffer of their argument (one copy of each trainable weight, carry and
  /// moment instead of two). This turns that off, e.g. to compare; call it
  /// before the first run.
  void disableInPlace();
  /// Whether result `i` is written into its argument's buffer.
  bool resultInPlace(size_t i) const { return i < InPlace.size() && InPlace[i]; }

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

  /// The latest value of a result, or nullptr (also when a device copy
  /// fails).
  const std::vector<uint8_t> *result(const std::string &name) const;
  /// The latest value of a scalar f32 result named `name`, or NaN.
  float scalarResult(const std::string &name) const;
  const EntryDesc &entry() const { return Entry; }
  /// Names of the weights the step updates.
  std::vector<std::string> trainableWeights() const;
  /// Names of the float parameters (role "param").
  std::vector<std::string> params() const;
  /// Steps applied so far (skipped ones not counted).
  uint64_t steps() const { return Steps; }
  /// Runs attempted so far, skipped ones included.
  uint64_t runs() const { return Runs; }

  /// Writes the model with every trainable weight replaced by its current
  /// value, through the atomic writer (never onto the model itself).
  bool save(const std::string &path, std::string *error) const;

  /// Writes a checkpoint (docs/qcc-run.md): every trainable weight (its own
  /// GGUF type), param and state, the step and run counters, the RNG state,
  /// the entry's name and manifest fingerprint and the model's fingerprint.
  /// Atomic; `beforeRename` as for gguf::AtomicFile::commit().
  bool saveCheckpoint(const std::string &path, std::string *error,
                      const std::function<void()> &beforeRename = {}) const;
  /// Restores everything saveCheckpoint() wrote, after checking that it
  /// was written for this entry, step manifest and model; on any error the
  /// session is left unchanged.
  bool loadCheckpoint(const std::string &path, std::string *error);

  /// Writes the LoRA matrices as a llama.cpp adapter: general.type
  /// "adapter", adapter.type "lora", adapter.lora.alpha, the base's
  /// general.architecture, tensors `<base>.lora_a` (ne [in, r]) and
  /// `<base>.lora_b` (ne [r, out]) in the params' own dtype.
  bool saveLoraAdapter(const std::string &path, std::string *error) const;
  /// Writes the model with every LoRA base replaced by
  /// W + (alpha / r)·B·A, re-encoded in the base's own format, and every
  /// trainable weight by its current value; all else (tensors, metadata)
  /// unchanged.
  bool saveMerged(const std::string &path, std::string *error) const;

  /// Data parallelism (docs/distributed.md): hashes every trainable
  /// weight, param and state and compares them across the ranks of the job;
  /// false, naming the first tensor whose bytes differ and the ranks, when
  /// the replicas have diverged. Every rank must call it (a collective);
  /// with one rank it only returns true.
  bool checkReplicas(std::string *error) const;

  /// 16 hex digits identifying the model: its tensor table (names, types,
  /// ne) and the first and last 4 KiB of every tensor's data.
  const std::string &modelFingerprint() const { return ModelFingerprint; }

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
  /// Whether checkpoints hold this argument (trainable weights, params,
  /// state).
  static bool checkpointed(const Slot &slot);
  /// Draws every param from Rng, in argument order.
  void initParams();
  /// (A slot, B slot) of every LoRA pair, in argument order of A; false
  /// when a pair is incomplete or its shapes disagree with its base.
  bool loraPairs(std::vector<std::pair<const Slot *, const Slot *>> &pairs,
                 std::string *error) const;
  Session(const StepLibrary &library, const EntryDesc &entry,
          const gguf::File &model);

  /// CUDA mode (Session.cpp): device buffers and which copy is newer.
  struct DeviceState;
  /// The host value of argument `i` was set: upload it before the next run.
  void hostChanged(size_t i);
  /// Refreshes the host mirror of argument `i` / result `i` when the device
  /// holds a newer value (no-op on the CPU).
  bool pullArgument(size_t i, std::string *error) const;
  bool pullResult(size_t i, std::string *error) const;
  /// pullArgument() of every trainable weight, param and state.
  bool pullCheckpointed(std::string *error) const;
  Outcome runOnDevice(std::string *message);
  /// For an entry built for several ranks: checks that this job has that
  /// many and points the library's collectives at it (DataParallel.cpp).
  static bool joinJob(const StepLibrary &library, const EntryDesc &entry,
                      Device device, std::string *error);

  const StepLibrary &Library;
  const EntryDesc &Entry;
  const gguf::File &Model;
  std::vector<Slot> Args;
  std::vector<std::vector<uint8_t>> Results; ///< empty where in place
  std::vector<bool> InPlace;
  uint64_t Steps = 0; ///< applied
  uint64_t Runs = 0;  ///< attempted, skipped ones included
  SplitMix64Stream Rng;
  std::string ModelFingerprint;
  Device Dev = Device::Cpu;
  std::unique_ptr<DeviceState> Gpu;
};

} // namespace qcc::rt

#endif // QCC_RUNTIME_SESSION_H
