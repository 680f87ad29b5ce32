//===- CApi.cpp - The C API of the qcc runtime ----------------------------===//

#include "qcc/Runtime/qcc_runtime.h"

#include "qcc/Runtime/Communicator.h"
#include "qcc/Runtime/Gguf.h"
#include "qcc/Runtime/Session.h"

#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

struct qcc_session {
  std::unique_ptr<qcc::rt::StepLibrary> library;
  std::unique_ptr<qcc::gguf::File> model;
  std::unique_ptr<qcc::rt::Session> session;
  std::string profileText; ///< what qcc_session_profile* last returned
};

static int report(char **error, const std::string &message) {
  if (error)
    *error = strdup(message.c_str());
  return 1;
}

/// Runs `body`; a C++ exception (a failed allocation of the runtime's own
/// buffers above all) must not cross the C boundary, so it becomes one line
/// in `*error` and `failed` is returned.
template <typename R, typename F>
static R guarded(char **error, const char *what, R failed, F body) {
  try {
    return body();
  } catch (const std::bad_alloc &) {
    report(error, std::string(what) + ": out of memory");
  } catch (const std::length_error &) {
    report(error, std::string(what) + ": out of memory (a size too large)");
  } catch (const std::exception &e) {
    report(error, std::string(what) + ": " + e.what());
  }
  return failed;
}

extern "C" qcc_session *qcc_session_open(const char *stepPath,
                                         const char *entry,
                                         const char *modelPath, char **error) {
  return qcc_session_open_device(stepPath, entry, modelPath, nullptr, error);
}

static qcc_session *openSession(const char *stepPath, const char *entry,
                                const char *modelPath, const char *deviceName,
                                char **error) {
  if (!stepPath || !modelPath) {
    report(error, "qcc_session_open: null path");
    return nullptr;
  }
  qcc::rt::Device device = qcc::rt::Device::Cpu;
  if (deviceName && !qcc::rt::parseDevice(deviceName, device)) {
    report(error, std::string("unknown device '") + deviceName +
                      "' (expected cpu or cuda)");
    return nullptr;
  }
  auto s = std::make_unique<qcc_session>();
  std::string message;
  s->library = qcc::rt::StepLibrary::load(stepPath, &message);
  if (!s->library) {
    report(error, message);
    return nullptr;
  }
  s->model = qcc::gguf::File::open(modelPath, &message);
  if (!s->model) {
    report(error, std::string(modelPath) + ": " + message);
    return nullptr;
  }
  std::string name = entry ? entry
                     : s->library->entries().size() == 1
                         ? s->library->entries()[0].name
                         : "train_step";
  s->session = qcc::rt::Session::create(*s->library, name, *s->model,
                                        &message, /*seed=*/0, device);
  if (!s->session) {
    report(error, message);
    return nullptr;
  }
  return s.release();
}

extern "C" qcc_session *qcc_session_open_device(const char *stepPath,
                                                const char *entry,
                                                const char *modelPath,
                                                const char *deviceName,
                                                char **error) {
  return guarded<qcc_session *>(error, "qcc_session_open", nullptr, [&] {
    return openSession(stepPath, entry, modelPath, deviceName, error);
  });
}

extern "C" const char *qcc_session_device(const qcc_session *s) {
  return s ? qcc::rt::deviceName(s->session->device()) : nullptr;
}

extern "C" int qcc_session_set_input(qcc_session *s, const char *name,
                                     const void *data, size_t bytes,
                                     char **error) {
  std::string message;
  if (!s || !name)
    return report(error, "qcc_session_set_input: null argument");
  return guarded(error, "qcc_session_set_input", 1, [&] {
    return s->session->setArgument(name, data, bytes, &message)
               ? 0
               : report(error, message);
  });
}

extern "C" int qcc_session_run(qcc_session *s, char **error) {
  std::string message;
  if (!s)
    return report(error, "qcc_session_run: null session");
  qcc::rt::Session::Outcome outcome = qcc::rt::Session::Outcome::Failed;
  if (guarded(error, "qcc_session_run", 1, [&] {
        outcome = s->session->run(&message);
        return 0;
      }))
    return 1;
  switch (outcome) {
  case qcc::rt::Session::Outcome::Applied:
    return 0;
  case qcc::rt::Session::Outcome::Skipped:
    report(error, message);
    return 2;
  case qcc::rt::Session::Outcome::Failed:
    break;
  }
  return report(error, message);
}

extern "C" const void *qcc_session_result(const qcc_session *s,
                                          const char *name, size_t *bytes) {
  const std::vector<uint8_t> *r =
      s && name ? s->session->result(name) : nullptr;
  if (bytes)
    *bytes = r ? r->size() : 0;
  return r ? r->data() : nullptr;
}

extern "C" uint64_t qcc_session_steps(const qcc_session *s) {
  return s ? s->session->steps() : 0;
}

extern "C" int qcc_session_save(const qcc_session *s, const char *path,
                                char **error) {
  std::string message;
  if (!s || !path)
    return report(error, "qcc_session_save: null argument");
  return guarded(error, "qcc_session_save", 1, [&] {
    return s->session->save(path, &message) ? 0 : report(error, message);
  });
}

extern "C" const void *qcc_session_argument(const qcc_session *s,
                                            const char *name, size_t *bytes) {
  const std::vector<uint8_t> *a =
      s && name ? s->session->argument(name) : nullptr;
  if (bytes)
    *bytes = a ? a->size() : 0;
  return a ? a->data() : nullptr;
}

extern "C" uint64_t qcc_session_runs(const qcc_session *s) {
  return s ? s->session->runs() : 0;
}

extern "C" int qcc_session_seed(qcc_session *s, uint64_t seed, char **error) {
  std::string message;
  if (!s)
    return report(error, "qcc_session_seed: null session");
  return guarded(error, "qcc_session_seed", 1, [&] {
    return s->session->reseed(seed, &message) ? 0 : report(error, message);
  });
}

extern "C" void qcc_session_disable_in_place(qcc_session *s) {
  if (s)
    s->session->disableInPlace();
}

extern "C" uint64_t qcc_session_random(qcc_session *s) {
  return s ? s->session->rng().next() : 0;
}

/// Calls a Session member that writes or reads `path`.
template <typename S, typename F>
static int withPath(S *s, const char *path, char **error, const char *what,
                    F f) {
  std::string message;
  if (!s || !path)
    return report(error, std::string(what) + ": null argument");
  return guarded(error, what, 1, [&] {
    return f(*s->session, path, &message) ? 0 : report(error, message);
  });
}

extern "C" int qcc_session_save_checkpoint(const qcc_session *s,
                                           const char *path, char **error) {
  return withPath(s, path, error, "qcc_session_save_checkpoint",
                  [](const qcc::rt::Session &session, const char *p,
                     std::string *m) { return session.saveCheckpoint(p, m); });
}

extern "C" int qcc_session_load_checkpoint(qcc_session *s, const char *path,
                                           char **error) {
  return withPath(s, path, error, "qcc_session_load_checkpoint",
                  [](qcc::rt::Session &session, const char *p,
                     std::string *m) { return session.loadCheckpoint(p, m); });
}

extern "C" int qcc_session_save_lora(const qcc_session *s, const char *path,
                                     char **error) {
  return withPath(s, path, error, "qcc_session_save_lora",
                  [](const qcc::rt::Session &session, const char *p,
                     std::string *m) { return session.saveLoraAdapter(p, m); });
}

extern "C" int qcc_session_save_merged(const qcc_session *s, const char *path,
                                       char **error) {
  return withPath(s, path, error, "qcc_session_save_merged",
                  [](const qcc::rt::Session &session, const char *p,
                     std::string *m) { return session.saveMerged(p, m); });
}

extern "C" void qcc_session_close(qcc_session *s) { delete s; }

extern "C" const char *qcc_session_profile(qcc_session *s, int reset) {
  if (!s || !s->library->profiled())
    return nullptr;
  s->profileText = s->library->profile(reset != 0);
  return s->profileText.c_str();
}

extern "C" const char *qcc_session_profile_table(qcc_session *s,
                                                 double wallSeconds) {
  if (!s || !s->library->profiled())
    return nullptr;
  s->profileText = s->library->profileTable(wallSeconds);
  return s->profileText.c_str();
}

extern "C" void qcc_session_profile_trace(qcc_session *s, int64_t maxEvents) {
  if (s)
    s->library->traceProfile(maxEvents);
}

extern "C" int qcc_session_write_profile_trace(qcc_session *s,
                                               const char *path,
                                               char **error) {
  if (!s || !path)
    return report(error, "qcc_session_write_profile_trace: null argument");
  std::string message;
  if (!s->library->writeProfileTrace(path, &message))
    return report(error, std::string(path) + ": " + message);
  return 0;
}

extern "C" int qcc_dist_init(int *rank, int *size, char **error) {
  std::string message;
  qcc::rt::Communicator *comm = qcc::rt::Communicator::world(&message);
  if (!comm)
    return report(error, message);
  if (rank)
    *rank = comm->rank();
  if (size)
    *size = comm->size();
  return 0;
}

extern "C" int qcc_dist_all_gather(const void *src, void *dst, size_t bytes,
                                   char **error) {
  std::string message;
  qcc::rt::Communicator *comm = qcc::rt::Communicator::world(&message);
  if (!comm || !src || !dst)
    return report(error, comm ? "qcc_dist_all_gather: null buffer" : message);
  if (!comm->allGather(src, dst, bytes, &message))
    return report(error, message);
  return 0;
}

extern "C" uint64_t qcc_dist_bytes_received(void) {
  std::string message;
  qcc::rt::Communicator *comm = qcc::rt::Communicator::world(&message);
  return comm ? comm->bytesReceived() : 0;
}

extern "C" void qcc_dist_abort(int code) {
  std::string message;
  if (qcc::rt::Communicator *comm = qcc::rt::Communicator::world(&message))
    comm->abort(code);
  std::exit(code);
}

extern "C" void qcc_dist_finalize(void) {
  std::string message;
  if (qcc::rt::Communicator *comm = qcc::rt::Communicator::world(&message))
    comm->finalize();
}

extern "C" int qcc_session_check_replicas(const qcc_session *s,
                                          char **error) {
  if (!s)
    return report(error, "qcc_session_check_replicas: null session");
  return guarded(error, "replica check", 1, [&] {
    std::string message;
    return s->session->checkReplicas(&message) ? 0 : report(error, message);
  });
}

extern "C" const char *qcc_session_model_fingerprint(const qcc_session *s) {
  return s ? s->session->modelFingerprint().c_str() : "";
}

extern "C" void qcc_free_error(char *error) { std::free(error); }
