//===- Communicator.h - The ranks of a data-parallel job -------*- C++ -*-===//
//
// A data-parallel job (docs/distributed.md) is N processes started by an MPI
// launcher (`mpirun -np N ...`), each running the same step on its shard of
// the batch. The communicator is MPI_COMM_WORLD when the process was started
// that way and a single rank, without MPI, otherwise. Steps reach it through
// the table qcc_step_set_collectives() installs (StepRuntime.h); hosts use it
// directly to agree on their inputs and to compare replicas.
//
//===----------------------------------------------------------------------===//

#ifndef QCC_RUNTIME_COMMUNICATOR_H
#define QCC_RUNTIME_COMMUNICATOR_H

#include "qcc/Runtime/StepRuntime.h"

#include <cstddef>
#include <cstdint>
#include <string>

namespace qcc::rt {

class Communicator {
public:
  /// The job's communicator, set up on first use (MPI_Init_thread when an
  /// MPI launcher started the process). Null, with `error`, when it was
  /// started by one but this runtime was built without MPI, or MPI fails.
  static Communicator *world(std::string *error);
  /// Whether an MPI launcher started this process (its environment says
  /// so: OMPI_COMM_WORLD_SIZE, PMIX_RANK or PMI_SIZE).
  static bool launchedByMpi();
  /// Whether this runtime was built with MPI.
  static bool available();

  int rank() const { return Rank; }
  int size() const { return Size; }

  /// Every rank's `bytes` of `src`, in rank order, into `dst` (size() x
  /// bytes). A failure of the transport (a rank died) is not recoverable in
  /// a data-parallel step: it prints one line and ends the whole job
  /// (MPI_Abort), so this only returns false for a size no rank can send.
  bool allGather(const void *src, void *dst, size_t bytes, std::string *error);
  /// Bytes this rank has received through allGather so far.
  uint64_t bytesReceived() const { return Received; }

  /// Ends every rank of the job with `code` (MPI_Abort; exit() for one rank).
  [[noreturn]] void abort(int code);
  /// MPI_Finalize, once, where MPI was started; nothing otherwise.
  void finalize();

  /// The table a data-parallel step's collectives call.
  qcc_step_collectives stepCollectives();

private:
  Communicator() = default;
  int Rank = 0, Size = 1;
  bool Mpi = false, Finalized = false;
  uint64_t Received = 0;
};

} // namespace qcc::rt

#endif // QCC_RUNTIME_COMMUNICATOR_H
