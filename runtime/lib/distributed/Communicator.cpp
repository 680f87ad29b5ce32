//===- Communicator.cpp - MPI_COMM_WORLD, or one rank ---------------------===//

#include "qcc/Runtime/Communicator.h"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>
#include <vector>

#ifdef QCC_HAVE_MPI
// The C API only: no MPI C++ bindings to link.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

using namespace qcc::rt;

namespace {

/// Where a rank is ended from outside (mpirun kills the job when another
/// rank died, or the user cancelled it), say so in one line: the files the
/// job writes are written atomically, so what is on disk is complete.
int signalRank = 0;
void onTerminate(int sig) {
  char line[200];
  int n = std::snprintf(line, sizeof line,
                        "qcc: rank %d: ended by signal %d from the MPI "
                        "launcher (another rank failed, or the job was "
                        "cancelled); files written so far are complete\n",
                        signalRank, sig);
  if (n > 0)
    (void)!write(2, line, size_t(n));
  _exit(128 + sig);
}

int32_t stepAllGather(void *context, const void *src, void *dst,
                      int64_t bytes) {
  std::string error;
  return static_cast<Communicator *>(context)->allGather(src, dst,
                                                         size_t(bytes), &error)
             ? 0
             : 1;
}

} // namespace

bool Communicator::launchedByMpi() {
  for (const char *v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"})
    if (std::getenv(v))
      return true;
  return false;
}

bool Communicator::available() {
#ifdef QCC_HAVE_MPI
  return true;
#else
  return false;
#endif
}

Communicator *Communicator::world(std::string *error) {
  static Communicator *instance = nullptr;
  static std::string failure;
  if (instance)
    return instance;
  if (!failure.empty()) {
    *error = failure;
    return nullptr;
  }
  auto *c = new Communicator();
  if (launchedByMpi()) {
#ifdef QCC_HAVE_MPI
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) !=
        MPI_SUCCESS) {
      failure = "MPI_Init_thread failed";
      *error = failure;
      delete c;
      return nullptr;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &c->Rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->Size);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    c->Mpi = true;
    signalRank = c->Rank;
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_handler = onTerminate;
    sigaction(SIGTERM, &sa, nullptr);
#else
    failure = "this process was started by an MPI launcher, but this qcc was "
              "built without MPI (install libopenmpi-dev and rebuild: "
              "scripts/setup)";
    *error = failure;
    delete c;
    return nullptr;
#endif
  }
  instance = c;
  return instance;
}

bool Communicator::allGather(const void *src, void *dst, size_t bytes,
                             std::string *error) {
  if (Size == 1) {
    std::memmove(dst, src, bytes);
    return true;
  }
#ifdef QCC_HAVE_MPI
  // MPI counts are ints: larger messages go in pieces through a buffer.
  constexpr size_t kPiece = size_t(1) << 30;
  auto gather = [&](const void *s, void *d, size_t n) {
    int rc = MPI_Allgather(s, int(n), MPI_BYTE, d, int(n), MPI_BYTE,
                           MPI_COMM_WORLD);
    if (rc == MPI_SUCCESS)
      return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    std::fprintf(stderr,
                 "qcc: rank %d: exchanging %zu bytes with the other ranks "
                 "failed (%.*s); ending the job\n",
                 Rank, n, len, text);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::_Exit(1);
  };
  if (bytes <= kPiece) {
    gather(src, dst, bytes);
  } else {
    std::vector<char> piece;
    for (size_t at = 0; at < bytes; at += kPiece) {
      size_t n = std::min(kPiece, bytes - at);
      piece.resize(n * size_t(Size));
      gather(static_cast<const char *>(src) + at, piece.data(), n);
      for (int r = 0; r < Size; ++r)
        std::memcpy(static_cast<char *>(dst) + size_t(r) * bytes + at,
                    piece.data() + size_t(r) * n, n);
    }
  }
  Received += uint64_t(bytes) * uint64_t(Size - 1);
  return true;
#else
  (void)src;
  (void)dst;
  *error = "no MPI";
  return false;
#endif
}

void Communicator::abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
#ifdef QCC_HAVE_MPI
  if (Mpi && Size > 1)
    MPI_Abort(MPI_COMM_WORLD, code);
  if (Mpi && !Finalized) {
    Finalized = true;
    MPI_Finalize();
  }
#endif
  std::exit(code);
}

void Communicator::finalize() {
#ifdef QCC_HAVE_MPI
  if (Mpi && !Finalized) {
    Finalized = true;
    MPI_Finalize();
  }
#endif
}

qcc_step_collectives Communicator::stepCollectives() {
  return qcc_step_collectives{this, Rank, Size, stepAllGather};
}
