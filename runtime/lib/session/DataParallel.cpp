//===- DataParallel.cpp - A session as one rank of a data-parallel job ----===//
//
// docs/distributed.md. Every rank binds the same step to the same model and
// runs it on its shard of each batch; the step's collectives make the ranks
// apply identical updates. Here: joining the job (the rank count the step
// was built for), and checking that the replicas are still identical.
//
//===----------------------------------------------------------------------===//

#include "qcc/Runtime/Communicator.h"
#include "qcc/Runtime/Session.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>

using namespace qcc::rt;

namespace {

/// 64-bit FNV-1a over 8-byte words (then the tail bytes): a replica check
/// hashes every trainable byte after every step, so it reads a word at a
/// time. Not cryptographic: it detects divergence, not tampering.
uint64_t hashBytes(const uint8_t *p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  const uint64_t prime = 0x100000001b3ull;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * prime;
  }
  for (; i < n; ++i)
    h = (h ^ p[i]) * prime;
  return h ^ n;
}

std::string hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

} // namespace

bool Session::joinJob(const StepLibrary &library, const EntryDesc &entry,
                      Device device, std::string *error) {
  if (entry.ranks == 1)
    return true;
  auto fail = [&](const std::string &message) {
    if (error)
      *error = message;
    return false;
  };
  std::string why;
  Communicator *comm = Communicator::world(&why);
  if (!comm)
    return fail(why);
  if (device != Device::Cpu)
    return fail("entry '" + entry.name + "' is data-parallel; such steps run "
                "on the CPU only");
  if (comm->size() != entry.ranks)
    return fail("entry '" + entry.name + "' was built for a data-parallel "
                "job of " + std::to_string(entry.ranks) + " ranks; this job "
                "has " + std::to_string(comm->size()) +
                (comm->size() == 1 ? " (start it with mpirun -np " +
                                         std::to_string(entry.ranks) + ")"
                                   : ""));
  if (!library.setCollectives(comm->stepCollectives()))
    return fail("the step library has no collectives (built by an older "
                "qcc): recompile it");
  return true;
}

bool StepLibrary::setCollectives(const qcc_step_collectives &table) const {
  if (!SetCollectives)
    return false;
  SetCollectives(&table);
  return true;
}

bool Session::checkReplicas(std::string *error) const {
  std::string why;
  Communicator *comm = Communicator::world(&why);
  if (!comm) {
    if (error)
      *error = why;
    return false;
  }
  if (comm->size() == 1)
    return true;
  if (!pullCheckpointed(error))
    return false;
  // First what is compared (the entry and how many tensors), then one hash
  // per checkpointed tensor, in argument order.
  std::vector<const Slot *> slots;
  for (const Slot &slot : Args)
    if (checkpointed(slot))
      slots.push_back(&slot);
  const int n = comm->size();
  uint64_t head[3] = {hashBytes(reinterpret_cast<const uint8_t *>(
                                    Entry.fingerprint.data()),
                                Entry.fingerprint.size()),
                      slots.size(), Steps};
  std::vector<uint64_t> heads(3 * size_t(n));
  if (!comm->allGather(head, heads.data(), sizeof head, error))
    return false;
  for (int r = 1; r < n; ++r)
    if (std::memcmp(&heads[0], &heads[3 * size_t(r)], sizeof head) != 0) {
      if (error)
        *error = "rank " + std::to_string(r) + " runs another step, or is at "
                 "another step count, than rank 0 (steps " +
                 std::to_string(heads[3 * size_t(r) + 2]) + " and " +
                 std::to_string(heads[2]) + ")";
      return false;
    }
  std::vector<uint64_t> mine(slots.size()), all(slots.size() * size_t(n));
  for (size_t i = 0; i < slots.size(); ++i)
    mine[i] = hashBytes(slots[i]->data(), slots[i]->desc->bytes);
  if (!slots.empty() &&
      !comm->allGather(mine.data(), all.data(), mine.size() * 8, error))
    return false;
  for (size_t i = 0; i < slots.size(); ++i)
    for (int r = 1; r < n; ++r) {
      uint64_t theirs = all[size_t(r) * slots.size() + i], root = all[i];
      if (theirs == root)
        continue;
      if (error)
        *error = "the replicas have diverged after step " +
                 std::to_string(Steps) + ": '" + slots[i]->desc->name +
                 "' on rank " + std::to_string(r) + " (hash " + hex(theirs) +
                 ") differs from rank 0's (hash " + hex(root) + ")";
      return false;
    }
  return true;
}
