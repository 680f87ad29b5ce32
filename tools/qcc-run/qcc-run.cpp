//===- qcc-run.cpp - Run a compiled step over a GGUF model ----------------===//
//
//   qcc-run step.so --weights model.gguf [--entry NAME] [--inputs FILE]
//           [--steps N] [--seed N] [--save OUT.gguf]
//           [--checkpoint CKPT.gguf [--save-every K]] [--resume CKPT.gguf]
//           [--save-lora ADAPTER.gguf] [--save-merged OUT.gguf]
//           [--device cpu|cuda] [--profile] [--profile-trace TRACE.json]
//   mpirun -np N qcc-run step.so ...   (a step built for N ranks)
//
// Binds the entry's weights to the model's tensors (checked by name, type and
// shape), its inputs to the tensors of the same name in --inputs (a GGUF
// file), runs it N times feeding results back into the arguments of the same
// name, shows progress, and saves the updated weights as a new GGUF, the
// training state as a checkpoint, and LoRA params as a llama.cpp adapter or
// merged into the model. Under mpirun each rank runs the step on its share
// of every input (docs/distributed.md); rank 0 reports and writes the files.
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/Communicator.h"
#include "qcc/Runtime/Cuda.h"
#include "qcc/Runtime/Gguf.h"
#include "qcc/Runtime/Session.h"

#include <cerrno>
#include <climits>
#include <chrono>
#include <cmath>
#include <functional>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <unistd.h>

using namespace qcc;

static void usage(FILE *out) {
  std::fprintf(out,
               "usage: qcc-run STEP.so --weights MODEL.gguf [--entry NAME]\n"
               "               [--inputs FILE.gguf] [--steps N] [--seed N] "
               "[--save OUT.gguf]\n"
               "               [--checkpoint CKPT.gguf [--save-every K]] "
               "[--resume CKPT.gguf]\n"
               "               [--save-lora ADAPTER.gguf] "
               "[--save-merged OUT.gguf] [--no-in-place]\n"
               "               [--device cpu|cuda] [--profile] "
               "[--profile-trace TRACE.json]\n"
               "\n"
               "Runs entry NAME (default: the library's only entry, or "
               "train_step) of a\n"
               "step library compiled by qcc, with its weights bound to the "
               "tensors of\n"
               "MODEL.gguf and its inputs to the tensors of FILE.gguf; "
               "results replace\n"
               "the arguments of the same name after each step. With "
               "--resume, --steps\n"
               "counts the steps to run after the checkpoint's. --device "
               "cuda runs a step\n"
               "compiled with qcc --target=cuda on the GPU (default: cpu). "
               "Under\n"
               "mpirun -np N, a step built for N ranks runs data-parallel: "
               "each rank takes\n"
               "its share of every input whose size is N times the step's, "
               "and rank 0\n"
               "reports and writes the files. --profile prints the time "
               "per kernel of a step\n"
               "compiled with qcc --profile; --profile-trace also writes "
               "its calls as a\n"
               "Chrome trace. See docs/qcc-run.md and docs/distributed.md.\n");
}

/// The job this process is a rank of (one rank without mpirun).
static rt::Communicator *job = nullptr;

static int die(const std::string &message) {
  if (job && job->size() > 1) {
    // The other ranks may be waiting in a collective: end them all.
    std::fprintf(stderr, "qcc-run: rank %d: error: %s\n", job->rank(),
                 message.c_str());
    job->abort(1);
  }
  std::fprintf(stderr, "qcc-run: error: %s\n", message.c_str());
  return 1;
}

/// A positive (or, with `allowZero`, non-negative) decimal integer, or exit
/// with status 2.
static unsigned long long integerFlag(const char *flag, const char *v,
                                      bool allowZero) {
  char *end = nullptr;
  errno = 0;
  unsigned long long n = std::strtoull(v, &end, 10);
  if (!*v || *end || *v == '-' || errno || (!allowZero && n == 0)) {
    std::fprintf(stderr,
                 "qcc-run: error: %s expects a %s integer, got '%s'\n", flag,
                 allowZero ? "non-negative" : "positive", v);
    std::exit(2);
  }
  return n;
}

int main(int argc, char **argv) {
  std::string stepPath, weights, entryName, inputs, savePath;
  std::string checkpointPath, resumePath, loraPath, mergedPath;
  long long steps = 1;
  unsigned long long seed = 0, saveEvery = 0;
  bool inPlace = true, profile = false;
  std::string tracePath;
  rt::Device device = rt::Device::Cpu;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char *flag) -> const char * {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "qcc-run: error: %s needs a value\n", flag);
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--weights")
      weights = value("--weights");
    else if (arg == "--entry")
      entryName = value("--entry");
    else if (arg == "--inputs")
      inputs = value("--inputs");
    else if (arg == "--save")
      savePath = value("--save");
    else if (arg == "--checkpoint")
      checkpointPath = value("--checkpoint");
    else if (arg == "--resume")
      resumePath = value("--resume");
    else if (arg == "--save-lora")
      loraPath = value("--save-lora");
    else if (arg == "--save-merged")
      mergedPath = value("--save-merged");
    else if (arg == "--seed")
      seed = integerFlag("--seed", value("--seed"), /*allowZero=*/true);
    else if (arg == "--device") {
      const char *v = value("--device");
      if (!rt::parseDevice(v, device)) {
        std::fprintf(stderr,
                     "qcc-run: error: --device expects cpu or cuda, got '%s'\n",
                     v);
        return 2;
      }
    } else if (arg == "--no-in-place")
      inPlace = false;
    else if (arg == "--profile")
      profile = true;
    else if (arg == "--profile-trace") {
      tracePath = value("--profile-trace");
      profile = true;
    }
    else if (arg == "--save-every")
      saveEvery = integerFlag("--save-every", value("--save-every"), false);
    else if (arg == "--steps") {
      unsigned long long n = integerFlag("--steps", value("--steps"), false);
      if (n > (unsigned long long)LLONG_MAX) {
        std::fprintf(stderr, "qcc-run: error: --steps %llu is too large\n", n);
        return 2;
      }
      steps = (long long)n;
    } else if (arg == "-h" || arg == "--help") {
      usage(stdout);
      return 0;
    } else if (!arg.empty() && arg[0] == '-') {
      std::fprintf(stderr, "qcc-run: error: unknown option '%s'\n", arg.c_str());
      usage(stderr);
      return 2;
    } else if (stepPath.empty()) {
      stepPath = arg;
    } else {
      std::fprintf(stderr, "qcc-run: error: unexpected argument '%s'\n",
                   arg.c_str());
      return 2;
    }
  }
  if (stepPath.empty() || weights.empty()) {
    usage(stderr);
    return 2;
  }
  if (saveEvery && checkpointPath.empty()) {
    std::fprintf(stderr, "qcc-run: error: --save-every needs --checkpoint\n");
    return 2;
  }

  std::string error;
  job = rt::Communicator::world(&error);
  if (!job)
    return die(error);
  const bool root = job->rank() == 0;
  auto library = rt::StepLibrary::load(stepPath, &error);
  if (!library)
    return die(error);
  if (entryName.empty())
    entryName = library->entries().size() == 1 ? library->entries()[0].name
                                               : "train_step";
  if (!rt::Session::checkDevice(*library, device, &error))
    return die(error);
  if (profile && !library->profiled())
    return die(stepPath + " was not compiled with qcc --profile: recompile "
               "it with that flag to time its kernels");
  auto model = gguf::File::open(weights, &error);
  if (!model)
    return die(weights + ": " + error);
  auto session =
      rt::Session::create(*library, entryName, *model, &error, seed, device);
  if (!session)
    return die(error + " (model " + weights + ")");
  if (job->size() > 1 && session->entry().ranks == 1)
    return die("entry '" + entryName + "' is not data-parallel (built for one "
               "rank): under mpirun -np " + std::to_string(job->size()) +
               " every rank would run the whole batch; build the step for " +
               std::to_string(job->size()) + " ranks (docs/distributed.md)");
  if (!inPlace)
    session->disableInPlace();
  if (!resumePath.empty()) {
    if (!session->loadCheckpoint(resumePath, &error))
      return die(error);
    if (root)
      std::fprintf(stderr, "qcc-run: resumed from %s after step %llu\n",
                   resumePath.c_str(),
                   static_cast<unsigned long long>(session->runs()));
  }
  // Tests kill qcc-run while a checkpoint is being saved: with
  // QCC_TEST_SAVE_STALL_MS set, every save announces that its temporary is
  // complete and waits that long before renaming it over the checkpoint.
  std::function<void()> beforeRename;
  if (const char *stall = std::getenv("QCC_TEST_SAVE_STALL_MS"))
    beforeRename = [ms = std::atol(stall)] {
      std::fprintf(stderr, "qcc-run: test: checkpoint temporary written, "
                   "stalling %ld ms before the rename\n", ms);
      std::fflush(stderr);
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    };
  // Only rank 0 writes files; the replicas are identical (checked below).
  auto saveCheckpoint = [&]() {
    return !root ||
           session->saveCheckpoint(checkpointPath, &error, beforeRename);
  };

  std::unique_ptr<gguf::File> inputFile;
  if (!inputs.empty()) {
    inputFile = gguf::File::open(inputs, &error);
    if (!inputFile)
      return die(inputs + ": " + error);
    for (const std::string &name : session->missingArguments()) {
      const gguf::TensorInfo *t = inputFile->findTensor(name);
      if (!t)
        continue;
      // A data-parallel rank takes its share (along the outermost
      // dimension) of an input that holds every rank's.
      const uint8_t *data = t->data;
      uint64_t bytes = t->nbytes;
      for (const rt::ValueDesc &arg : session->entry().args)
        if (arg.name == name && job->size() > 1 &&
            bytes == arg.bytes * uint64_t(job->size())) {
          bytes = arg.bytes;
          data += bytes * uint64_t(job->rank());
        }
      if (!session->setArgument(name, data, bytes, &error))
        return die(error + " (from " + inputs + ")");
    }
  }
  std::vector<std::string> missing = session->missingArguments();
  if (!missing.empty())
    return die("input '" + missing.front() + "' has no value: give a tensor "
               "of that name in --inputs");

  // Tokens per step: the rows of the first input tensor (its leading
  // dimensions multiplied, all but the innermost), e.g. x[batch, seq, dim].
  int64_t tokensPerStep = 0;
  for (const rt::ValueDesc &arg : session->entry().args)
    if (arg.role == "input" && arg.kind == "tensor" && arg.shape.size() >= 2) {
      tokensPerStep = 1;
      for (size_t i = 0; i + 1 < arg.shape.size(); ++i)
        tokensPerStep *= arg.shape[i];
      break;
    }
  const bool tty = isatty(fileno(stderr)) && root;
  const bool hasLoss = session->result("loss") != nullptr;
  if (root)
    std::fprintf(stderr, "qcc-run: %s: entry '%s'%s, %zu trainable weight(s), "
                 "%zu param(s), %lld step(s)%s\n",
                 stepPath.c_str(), entryName.c_str(),
                 device == rt::Device::Cuda ? " on cuda" : "",
                 session->trainableWeights().size(), session->params().size(),
                 steps,
                 job->size() > 1
                     ? (", data-parallel over " + std::to_string(job->size()) +
                        " ranks").c_str()
                     : "");
  if (device == rt::Device::Cuda)
    if (const cuda::Driver *driver = cuda::Driver::instance(nullptr))
      std::fprintf(stderr, "qcc-run: CUDA device 0: %s (%s), step built for "
                   "%s\n", driver->deviceName().c_str(),
                   driver->computeCapability().c_str(),
                   library->gpuArch().empty() ? "?"
                                              : library->gpuArch().c_str());
  // Steps are numbered from the start of training, across resumes.
  const long long first = static_cast<long long>(session->runs());
  const long long total = first + steps;
  auto start = std::chrono::steady_clock::now();
  long long skipped = 0;
  double stepSeconds = 0; // the steps alone, without checkpoints
  if (profile) {
    library->profile(/*reset=*/true);
    if (!tracePath.empty())
      library->traceProfile(1 << 20);
  }
  for (long long s = 1; s <= steps; ++s) {
    const long long global = first + s;
    if (saveEvery && s > 1 && (global - 1) % saveEvery == 0) {
      // The checkpoint after step global-1, unless that was the resume.
      if (!saveCheckpoint())
        return die(error);
      if (root)
        std::fprintf(stderr, "%sqcc-run: checkpoint %s after step %lld\n",
                     tty ? "\n" : "", checkpointPath.c_str(), global - 1);
    }
    auto stepStart = std::chrono::steady_clock::now();
    rt::Session::Outcome outcome = session->run(&error);
    stepSeconds += std::chrono::duration<double>(
                       std::chrono::steady_clock::now() - stepStart)
                       .count();
    switch (outcome) {
    case rt::Session::Outcome::Applied:
      break;
    case rt::Session::Outcome::Skipped:
      // Non-finite values: the weights keep their last good values and
      // training goes on with the next step.
      ++skipped;
      if (root)
        std::fprintf(stderr, "%sqcc-run: warning: %s\n", tty ? "\n" : "",
                     error.c_str());
      continue;
    case rt::Session::Outcome::Failed:
      if (tty)
        std::fputc('\n', stderr);
      return die(error);
    }
    if (job->size() > 1 && !session->checkReplicas(&error)) {
      // Every rank compared the same hashes: rank 0 says it, all stop.
      if (root)
        std::fprintf(stderr, "%sqcc-run: error: %s\n", tty ? "\n" : "",
                     error.c_str());
      job->finalize();
      return 1;
    }
    if (!root)
      continue;
    double elapsed = std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - start)
                         .count();
    double rate = s / std::max(elapsed, 1e-9);
    double eta = (steps - s) / rate;
    char loss[48] = "", tokens[48] = "";
    if (hasLoss)
      std::snprintf(loss, sizeof loss, "  loss %.5f",
                    double(session->scalarResult("loss")));
    if (tokensPerStep)
      std::snprintf(tokens, sizeof tokens, "  %.0f tokens/s",
                    rate * double(tokensPerStep));
    if (tty) {
      const int width = 30;
      int filled = int(width * s / steps);
      std::fprintf(stderr,
                   "\r[%.*s%*s] step %lld/%lld%s%s  %.1f steps/s  ETA %.0fs ",
                   filled, "==============================", width - filled, "",
                   global, total, loss, tokens, rate, eta);
      if (s == steps)
        std::fputc('\n', stderr);
    } else {
      std::fprintf(stderr, "step %lld/%lld%s%s  %.1f steps/s  ETA %.0fs\n",
                   global, total, loss, tokens, rate, eta);
    }
  }
  if (skipped && root)
    std::fprintf(stderr, "qcc-run: %lld of %lld step(s) skipped for non-finite "
                 "values\n", skipped, steps);
  if (!root) {
    job->finalize();
    return 0;
  }
  if (profile) {
    std::fprintf(stderr, "qcc-run: profile of %lld step(s), rank 0:\n%s",
                 steps, library->profileTable(stepSeconds).c_str());
    if (!tracePath.empty()) {
      if (!library->writeProfileTrace(tracePath, &error))
        return die(tracePath + ": " + error);
      std::fprintf(stderr, "qcc-run: trace of the kernel calls: %s\n",
                   tracePath.c_str());
    }
  }
  if (!checkpointPath.empty()) {
    if (!saveCheckpoint())
      return die(error);
    std::fprintf(stderr, "qcc-run: checkpoint %s after step %lld\n",
                 checkpointPath.c_str(), total);
  }
  if (!savePath.empty()) {
    if (!session->save(savePath, &error))
      return die(error);
    std::fprintf(stderr, "qcc-run: saved %s\n", savePath.c_str());
  }
  if (!loraPath.empty()) {
    if (!session->saveLoraAdapter(loraPath, &error))
      return die(error);
    std::fprintf(stderr, "qcc-run: saved LoRA adapter %s\n", loraPath.c_str());
  }
  if (!mergedPath.empty()) {
    if (!session->saveMerged(mergedPath, &error))
      return die(error);
    std::fprintf(stderr, "qcc-run: saved merged model %s\n",
                 mergedPath.c_str());
  }
  job->finalize();
  return 0;
}
