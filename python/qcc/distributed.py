"""The ranks of a data-parallel job (docs/distributed.md).

A job is N processes started by `mpirun -np N`; each runs the same step on
its shard of every batch, and the step's collectives (`qcc.all_reduce`,
`qcc.all_gather`) make them apply the same update. `job()` joins it through
the runtime's communicator (MPI, in libqcc_runtime.so); a process started
without a launcher is rank 0 of 1 and never touches MPI.

    j = job()
    if j.root: print(...)
    j.agree("the training data", digest)    # every rank, same order
"""

import ctypes
import hashlib
import os

from . import runtime

_JOB = None

_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE")


class JobError(RuntimeError):
    """Something every rank found alike (so every rank stops alike)."""


def launched_by_mpi():
    return any(v in os.environ for v in _LAUNCHER_VARS)


_SETTLE_BYTES = 1024


class Job:
    def __init__(self, rank=0, size=1, mpi=False):
        self.rank, self.size, self.mpi = rank, size, mpi
        # Until a host's last start-up settle(): a rank that fails before it
        # joins the others' next settle() with its message (see settle).
        self.starting = True

    def settle(self, error=None, last=False):
        """A start-up checkpoint that every rank reaches: a rank passes the
        error that stopped it (a string), the others None. Raises JobError
        on every rank, with the first failing rank's message, when any
        rank failed; so a bad input on one rank stops the whole job cleanly
        instead of leaving the others waiting in a collective."""
        if last:
            self.starting = False
        if not self.parallel:
            if error is not None:
                raise JobError(error)
            return
        msg = b"" if error is None else ("\1" + error).encode()[:_SETTLE_BYTES]
        for r, m in enumerate(self.all_gather(msg.ljust(_SETTLE_BYTES, b"\0"))):
            if m[:1] == b"\1":
                text = m[1:].rstrip(b"\0").decode("utf-8", "replace")
                raise JobError(text if r == 0 else f"rank {r}: {text}")

    @property
    def root(self):
        return self.rank == 0

    @property
    def parallel(self):
        return self.size > 1

    def local_size(self):
        """Ranks of this job on this machine (for the default thread count)."""
        for v in ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"):
            if os.environ.get(v, "").isdigit():
                return max(1, int(os.environ[v]))
        return self.size

    def all_gather(self, data):
        """Every rank's `data` (bytes of the same length on every rank), as a
        list in rank order."""
        data = bytes(data)
        if not self.parallel:
            return [data]
        n = len(data)
        out = ctypes.create_string_buffer(max(1, n * self.size))
        src = ctypes.create_string_buffer(data, max(1, n))
        err = ctypes.c_void_p()
        if runtime.library().qcc_dist_all_gather(src, out, n, ctypes.byref(err)):
            raise RuntimeError(runtime._take(err))
        raw = out.raw
        return [raw[i * n:(i + 1) * n] for i in range(self.size)]

    def barrier(self):
        self.all_gather(b"\0")

    def agree(self, what, value):
        """Raises JobError on every rank when the ranks' `value`s (bytes or
        str) differ, naming `what` and the ranks that differ from rank 0."""
        if not self.parallel:
            return
        if isinstance(value, str):
            value = value.encode()
        digest = hashlib.sha256(value).digest()
        got = self.all_gather(digest)
        bad = [r for r, d in enumerate(got) if d != got[0]]
        if bad:
            who = (f"rank {bad[0]} differs" if len(bad) == 1 else
                   f"ranks {', '.join(map(str, bad))} differ")
            raise JobError(f"the ranks were started with different {what}: "
                           f"{who} from rank 0; start every rank with the "
                           "same inputs")

    def all_ok(self, ok):
        """Whether `ok` holds on every rank (each rank's own truth in, the
        same answer out)."""
        if not self.parallel:
            return ok
        return all(b == b"\1" for b in self.all_gather(b"\1" if ok else b"\0"))

    def bytes_received(self):
        if not self.mpi:
            return 0
        return int(runtime.library().qcc_dist_bytes_received())

    def abort(self, code):
        """Ends every rank of the job (MPI_Abort)."""
        if self.mpi:
            runtime.library().qcc_dist_abort(code)
        os._exit(code)

    def finalize(self):
        if self.mpi:
            runtime.library().qcc_dist_finalize()


def joined():
    """Whether job() has been called (and succeeded) in this process."""
    return _JOB is not None


def job():
    """This process's job: joined once (MPI_Init) when an MPI launcher
    started it, else a single rank."""
    global _JOB
    if _JOB is None:
        if not launched_by_mpi():
            _JOB = Job()
        else:
            rank, size = ctypes.c_int(), ctypes.c_int()
            err = ctypes.c_void_p()
            lib = runtime.library()
            if lib.qcc_dist_init(ctypes.byref(rank), ctypes.byref(size),
                                 ctypes.byref(err)):
                raise RuntimeError(runtime._take(err))
            _JOB = Job(rank.value, size.value, mpi=True)
    return _JOB
