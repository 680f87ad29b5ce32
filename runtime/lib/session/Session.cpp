//===- Session.cpp - Run compiled steps over a GGUF model -----------------===//

#include "qcc/Runtime/Session.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <dlfcn.h>
#include <sstream>

namespace qcc::rt {

/// The step ABI version this runtime speaks (docs/runtime.md).
static constexpr int kStepAbiVersion = 1;

static std::string join(const std::vector<int64_t> &v) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < v.size(); ++i)
    os << (i ? ", " : "") << v[i];
  os << "]";
  return os.str();
}

static bool fail(std::string *error, std::string message) {
  if (error)
    *error = std::move(message);
  return false;
}

//===----------------------------------------------------------------------===//
// StepLibrary
//===----------------------------------------------------------------------===//

static bool parseValue(const nlohmann::json &j, ValueDesc &v,
                       std::string *error) {
  try {
    v.index = j.at("index").get<size_t>();
    v.name = j.at("name").get<std::string>();
    v.role = j.at("role").get<std::string>();
    v.kind = j.at("kind").get<std::string>();
    v.type = v.kind == "qtensor" ? j.at("format").get<std::string>()
                                 : j.at("dtype").get<std::string>();
    v.shape = j.at("shape").get<std::vector<int64_t>>();
    v.bytes = j.at("bytes").get<uint64_t>();
    if (const FormatInfo *info = gguf::lookupTensorType(v.type))
      v.ggmlType = info->ggmlId;
  } catch (const nlohmann::json::exception &e) {
    return fail(error, std::string("malformed step manifest: ") + e.what());
  }
  return true;
}

std::unique_ptr<StepLibrary> StepLibrary::load(const std::string &path,
                                               std::string *error) {
  std::unique_ptr<StepLibrary> lib(new StepLibrary());
  lib->Handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib->Handle) {
    fail(error, std::string("cannot load step library: ") + dlerror());
    return nullptr;
  }
  auto manifestFn = reinterpret_cast<const char *(*)()>(
      dlsym(lib->Handle, "qcc_step_manifest"));
  if (!manifestFn) {
    fail(error, path + " has no qcc_step_manifest: not a qcc step library");
    return nullptr;
  }
  lib->TakeError = reinterpret_cast<const char *(*)()>(
      dlsym(lib->Handle, "qcc_step_take_error"));
  nlohmann::json manifest = nlohmann::json::parse(manifestFn(), nullptr,
                                                  /*allow_exceptions=*/false);
  if (manifest.is_discarded() || !manifest.is_object()) {
    fail(error, path + ": its manifest is not valid JSON");
    return nullptr;
  }
  int abi = manifest.value("qcc_abi", -1);
  if (abi != kStepAbiVersion) {
    fail(error, path + " uses step ABI v" + std::to_string(abi) +
                    "; this runtime speaks v" +
                    std::to_string(kStepAbiVersion) + " (recompile it)");
    return nullptr;
  }
  for (const auto &e : manifest.value("entries", nlohmann::json::array())) {
    EntryDesc entry;
    entry.name = e.value("name", "");
    entry.symbol = e.value("symbol", "");
    for (const auto &a : e.value("args", nlohmann::json::array())) {
      entry.args.emplace_back();
      if (!parseValue(a, entry.args.back(), error))
        return nullptr;
    }
    for (const auto &r : e.value("results", nlohmann::json::array())) {
      entry.results.emplace_back();
      if (!parseValue(r, entry.results.back(), error))
        return nullptr;
    }
    auto fn = reinterpret_cast<void (*)(void **)>(
        dlsym(lib->Handle, entry.symbol.c_str()));
    if (!fn) {
      fail(error, path + ": the manifest names entry symbol '" + entry.symbol +
                      "', which the library does not export");
      return nullptr;
    }
    lib->Entries.push_back(std::move(entry));
    lib->Functions.push_back(fn);
  }
  return lib;
}

StepLibrary::~StepLibrary() {
  if (Handle)
    dlclose(Handle);
}

const EntryDesc *StepLibrary::findEntry(const std::string &name) const {
  for (const EntryDesc &e : Entries)
    if (e.name == name)
      return &e;
  return nullptr;
}

void StepLibrary::call(const EntryDesc &entry, void **args) const {
  Functions[size_t(&entry - Entries.data())](args);
}

std::string StepLibrary::takeError() const {
  const char *message = TakeError ? TakeError() : nullptr;
  return message ? message : "";
}

//===----------------------------------------------------------------------===//
// Session
//===----------------------------------------------------------------------===//

std::unique_ptr<Session> Session::create(const StepLibrary &library,
                                         const std::string &entryName,
                                         const gguf::File &model,
                                         std::string *error) {
  const EntryDesc *entry = library.findEntry(entryName);
  if (!entry) {
    std::string names;
    for (const EntryDesc &e : library.entries())
      names += (names.empty() ? "" : ", ") + e.name;
    fail(error, "the step has no entry '" + entryName + "' (entries: " +
                    names + ")");
    return nullptr;
  }
  std::unique_ptr<Session> s(new Session(library, *entry, model));
  auto producedByResult = [&](const std::string &name) {
    for (const ValueDesc &r : entry->results)
      if (r.name == name)
        return true;
    return false;
  };
  for (const ValueDesc &arg : entry->args) {
    Slot slot;
    slot.desc = &arg;
    if (arg.role == "weight") {
      const gguf::TensorInfo *t = model.findTensor(arg.name);
      if (!t) {
        fail(error, "weight '" + arg.name + "' is not in the model");
        return nullptr;
      }
      if (t->ggmlType != arg.ggmlType) {
        const FormatInfo *has = gguf::lookupTensorType(t->ggmlType);
        fail(error, "weight '" + arg.name + "' is " +
                        (has ? std::string(has->name) : "?") +
                        " in the model; the step expects " + arg.type);
        return nullptr;
      }
      std::vector<int64_t> ne(t->ne, t->ne + t->nDims);
      std::vector<int64_t> expected(arg.shape.rbegin(), arg.shape.rend());
      if (ne != expected) {
        fail(error, "weight '" + arg.name + "' has ne " + join(ne) +
                        " in the model; the step expects ne " +
                        join(expected) + " (shape " + join(arg.shape) + ")");
        return nullptr;
      }
      if (t->nbytes != arg.bytes) {
        fail(error, "weight '" + arg.name + "' has " +
                        std::to_string(t->nbytes) + " bytes in the model; "
                        "the step expects " + std::to_string(arg.bytes));
        return nullptr;
      }
      if (producedByResult(arg.name))
        slot.owned.assign(t->data, t->data + t->nbytes); // trainable copy
      else
        slot.frozen = t->data; // zero-copy, read-only
      slot.hasValue = true;
    } else {
      slot.owned.assign(arg.bytes, 0);
      // State starts at zero; inputs must be given.
      slot.hasValue = arg.role == "state";
    }
    s->Args.push_back(std::move(slot));
  }
  for (const ValueDesc &r : entry->results)
    s->Results.emplace_back(r.bytes, 0);
  return s;
}

bool Session::setArgument(const std::string &name, const void *data,
                          size_t bytes, std::string *error) {
  for (Slot &slot : Args) {
    if (slot.desc->name != name)
      continue;
    if (slot.desc->role == "weight")
      return fail(error, "'" + name + "' is a weight; weights come from the "
                         "model");
    if (bytes != slot.desc->bytes)
      return fail(error, "'" + name + "' expects " +
                             std::to_string(slot.desc->bytes) + " bytes (" +
                             slot.desc->type + " " + join(slot.desc->shape) +
                             "), got " + std::to_string(bytes));
    std::memcpy(slot.owned.data(), data, bytes);
    slot.hasValue = true;
    return true;
  }
  return fail(error, "the entry '" + Entry.name + "' has no argument '" +
                         name + "'");
}

std::vector<std::string> Session::missingArguments() const {
  std::vector<std::string> missing;
  for (const Slot &slot : Args)
    if (!slot.hasValue)
      missing.push_back(slot.desc->name);
  return missing;
}

Session::Outcome Session::run(std::string *message) {
  std::vector<std::string> missing = missingArguments();
  if (!missing.empty()) {
    fail(message, "argument '" + missing.front() + "' has no value");
    return Outcome::Failed;
  }
  std::vector<void *> pointers;
  for (Slot &slot : Args)
    pointers.push_back(const_cast<uint8_t *>(slot.data()));
  for (std::vector<uint8_t> &r : Results)
    pointers.push_back(r.data());
  Library.call(Entry, pointers.data());
  ++Runs;
  // A non-finite loss explains more than the update it poisoned, so it is
  // reported first; the runtime's own error is taken (cleared) either way.
  std::string stepError = Library.takeError();
  if (std::string lossError = nonFiniteLoss(); !lossError.empty())
    stepError = lossError;
  if (!stepError.empty()) {
    fail(message,
         "step " + std::to_string(Runs) + " was skipped: " + stepError);
    return Outcome::Skipped;
  }
  // Results feed the arguments of the same name (weights, state). The
  // buffers are swapped, not copied: the entry writes every byte of its
  // results, so the argument's old buffer is simply the next call's output.
  for (size_t i = 0; i < Results.size(); ++i)
    if (Slot *slot = fedBy(i))
      std::swap(slot->owned, Results[i]);
  ++Steps;
  return Outcome::Applied;
}

std::string Session::nonFiniteLoss() const {
  for (size_t i = 0; i < Results.size(); ++i) {
    if (Entry.results[i].name != "loss" || Entry.results[i].type != "f32")
      continue;
    const std::vector<uint8_t> &r = Results[i];
    for (size_t j = 0; j + 4 <= r.size(); j += 4) {
      float v;
      std::memcpy(&v, r.data() + j, 4);
      if (!std::isfinite(v))
        return "the loss is not finite";
    }
  }
  return "";
}

Session::Slot *Session::fedBy(size_t result) {
  for (Slot &slot : Args)
    if (slot.desc->name == Entry.results[result].name && !slot.frozen &&
        slot.owned.size() == Results[result].size())
      return &slot;
  return nullptr;
}

const std::vector<uint8_t> *Session::result(const std::string &name) const {
  for (size_t i = 0; i < Results.size(); ++i) {
    if (Entry.results[i].name != name)
      continue;
    // A result fed back into its argument lives there after a run.
    if (Steps > 0)
      if (Slot *slot = const_cast<Session *>(this)->fedBy(i))
        return &slot->owned;
    return &Results[i];
  }
  return nullptr;
}

float Session::scalarResult(const std::string &name) const {
  for (size_t i = 0; i < Results.size(); ++i)
    if (Entry.results[i].name == name && Entry.results[i].type == "f32" &&
        Results[i].size() == 4) {
      float v;
      std::memcpy(&v, Results[i].data(), 4);
      return v;
    }
  return NAN;
}

std::vector<std::string> Session::trainableWeights() const {
  std::vector<std::string> names;
  for (const Slot &slot : Args)
    if (slot.desc->role == "weight" && !slot.frozen)
      names.push_back(slot.desc->name);
  return names;
}

bool Session::save(const std::string &path, std::string *error) const {
  gguf::Writer writer = gguf::Writer::fromFile(Model);
  for (const Slot &slot : Args)
    if (slot.desc->role == "weight" && !slot.frozen &&
        !writer.replaceTensor(slot.desc->name, slot.desc->ggmlType,
                              slot.owned))
      return fail(error, "cannot replace tensor '" + slot.desc->name + "'");
  writer.set("qcc.train.steps", gguf::Value::makeU64(Steps));
  return writer.write(path, error);
}

} // namespace qcc::rt
