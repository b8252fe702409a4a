"""Data parallelism: one model trained by N processes (ranks), each on part of every batch.

Every rank holds the same θ and the whole data set. A global batch of B samples is split
into N shards, rank r taking n_r of them. With J the mean loss of the global batch and J_r
the mean loss of rank r's shard,

    J = (1/B) Σ_i ℓ_i = Σ_r (n_r / B) J_r,      so      ∇J = Σ_r (n_r / B) ∇J_r.

So each rank computes ∇J_r by backpropagation as usual, scales it by n_r / B (one array
operation), and one all-reduce (a sum over the ranks) of the flat ∇θ leaves ∇J on every
rank: exactly the gradient one process would compute on the whole batch, up to the order
of the floating-point sums. Every rank then takes the same optimizer step, and θ stays
identical everywhere without being sent again. (A penalty P(θ) that each rank adds to J_r
comes out once: Σ_r (n_r / B) ∇P = ∇P.)

The engine is MPI, through mpi4py (``pip install 'nnscratch[mpi]'`` brings mpi4py and an
MPICH with ``mpiexec``); it is imported only when the process was started by an MPI
launcher with more than one rank. Arrays in host memory (NumPy, PyTorch on the CPU,
array-api-strict) are summed in place through a DLPack view of their memory; CuPy arrays
are summed on the GPU by NCCL, one GPU per rank (``_NCCL``, below); arrays that are in
neither place are copied to the host and back.

    comm = nn.distributed.init()     # size 1, and no mpi4py, without an MPI launch
    model.fit(X, y, ..., communicator=comm)
    model.evaluate(X_test, y_test, communicator=comm)

    mpiexec -n 4 python train.py     # four ranks, one model

``run(main)`` calls a script's ``main`` so that a failure on any rank ends every rank.

Every rank runs the whole script; rank 0 alone should print and write files. ``fit`` shows
progress (``verbose``) on rank 0 only and tells callbacks ``info["rank"]``; pass callbacks
that write (``nn.Checkpoint``, plots) only where ``comm.rank == 0``, and those that decide
(``EarlyStopping``) on every rank: the logs they see are the same everywhere, and if any
rank's callback stops training, every rank stops. Resuming, every rank reads rank 0's
checkpoint (on a cluster: a file system all nodes share).

Not covered: Dropout draws its masks per rank, from the same seeded stream, so a run with
Dropout is not the one-process run (ranks with equal shard sizes even draw equal masks).
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .backend import (
    THREAD_VARIABLES,
    get_backend,
    library_of,
    limit_threads,
    mutable,
    namespace,
    set_all,
    use_backend,
)
from .errors import BackendError, ConfigError

# Environment variables by which MPI launchers tell a process its world size:
# PMI_SIZE (MPICH's and Intel MPI's Hydra mpiexec, Slurm's srun with PMI-2),
# OMPI_COMM_WORLD_SIZE (Open MPI's mpirun), MV2_COMM_WORLD_SIZE (MVAPICH2).
LAUNCH_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
# A launcher that gives the rank but not the size (PMIx: Open MPI 5, srun --mpi=pmix).
LAUNCH_RANK_VARIABLES = ("PMIX_RANK",)
EXIT_INTERRUPTED = 130  # the shell's code for "ended by SIGINT"
ABORT_GRACE_SECONDS = 1.0  # for the launcher to pass on a failing rank's last words
MPI_INSTALL_HINT = ("pip install 'nnscratch[mpi]' (mpi4py, MPICH with its mpiexec, and "
                    "threadpoolctl)")


class Communicator:
    """One process alone: rank 0 of 1. Every collective operation is the identity.

    The MPI communicator below has the same methods; code written against this one runs
    unchanged on N ranks.
    """

    rank = 0
    size = 1
    local_rank = 0  # the rank among the processes on this machine (selects the GPU)
    local_size = 1  # the ranks on this machine, which share its cores
    threads: int | None = None  # BLAS/OpenMP threads per rank (None: the libraries' choice)

    def describe(self) -> str:
        """The processes and threads of the run, e.g. ``2 ranks × 1 thread``."""
        ranks = f"{self.size} rank{'s' * (self.size != 1)}"
        if self.threads is None:
            return ranks
        return f"{ranks} × {self.threads} thread{'s' * (self.threads != 1)}"

    def allreduce_(self, array: Any) -> Any:
        """Sum ``array`` over the ranks, in place on every rank; returns it."""
        return array

    def allreduce_scalars(self, values: Sequence[float]) -> list[float]:
        """The sums over the ranks of a few numbers (float64, on the host)."""
        return [float(value) for value in values]

    def broadcast_(self, array: Any, root: int = 0) -> Any:
        """Overwrite ``array``, in place on every rank, with its value on ``root``."""
        return array

    def allgather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (small Python data), in rank order."""
        return [value]

    def barrier(self) -> None:
        """Wait until every rank has got here."""

    def abort(self, code: int = 1) -> None:
        """End every rank now with exit status ``code`` (after flushing the output)."""
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


LOCAL = Communicator()


class MPICommunicator(Communicator):
    """``size`` processes started by an MPI launcher, talking through mpi4py."""

    def __init__(self, world: Any, mpi: Any) -> None:
        self.world, self.mpi = world, mpi
        self.rank, self.size = world.Get_rank(), world.Get_size()
        # The ranks that share this machine's memory, in order: the standard MPI-3 way
        # to the local rank, whatever the launcher's environment variables.
        machine = world.Split_type(mpi.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = machine.Get_rank(), machine.Get_size()
        self._nccl: _NCCL | None = None

    def allreduce_(self, array: Any) -> Any:
        if _is_cupy(array):
            return self._gpu().allreduce_(array)
        buffer = _HostBuffer(array)
        with buffer as host:
            self.world.Allreduce(self.mpi.IN_PLACE, host, op=self.mpi.SUM)
        return buffer.array  # ``array``, or (JAX) the new array of the sums

    def allreduce_scalars(self, values: Sequence[float]) -> list[float]:
        buffer = np.asarray(values, dtype=np.float64)
        self.world.Allreduce(self.mpi.IN_PLACE, buffer, op=self.mpi.SUM)
        return buffer.tolist()

    def broadcast_(self, array: Any, root: int = 0) -> Any:
        if _is_cupy(array):
            return self._gpu().broadcast_(array, root)
        buffer = _HostBuffer(array)
        with buffer as host:
            self.world.Bcast(host, root=root)
        return buffer.array

    def allgather(self, value: Any) -> list[Any]:
        return self.world.allgather(value)

    def barrier(self) -> None:
        self.world.Barrier()

    def abort(self, code: int = 1) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        # The launcher forwards each rank's output through pipes and sockets; an abort
        # right away can end it before the last lines (the error message) are through.
        time.sleep(ABORT_GRACE_SECONDS)
        self.world.Abort(code)
        os._exit(code)  # MPICH's MPI_Abort may return before the launcher's kill arrives

    def _gpu(self) -> _NCCL:
        if self._nccl is None:
            self._nccl = _NCCL(self.world)
        return self._nccl


class _HostBuffer:
    """A writable NumPy array over ``array``'s values, for MPI to read and write.

    Where ``array`` lives in host memory, DLPack (part of the Array API standard) gives a
    NumPy view of that very memory: no copy either way. Elsewhere (e.g. PyTorch on a
    GPU) the values are copied to the host, and back when the block ends.
    """

    def __init__(self, array: Any) -> None:
        self.array = array

    def __enter__(self) -> np.ndarray:
        view = _host_view(self.array)
        self.copied = view is None
        self.host = np.ascontiguousarray(get_backend().to_numpy(self.array)) if self.copied \
            else view
        return self.host

    def __exit__(self, *exc_info: object) -> None:
        if self.copied and exc_info[0] is None:
            xp = namespace(self.array)
            self.array = set_all(self.array, xp.asarray(self.host, device=self.array.device))


def _host_view(array: Any) -> np.ndarray | None:
    """A writable, contiguous NumPy view of ``array``'s memory, or None where there is
    none (memory on a GPU, or an immutable JAX array, which must not be written)."""
    if not mutable(array):
        return None
    try:
        view = np.from_dlpack(array)
    except (BufferError, RuntimeError, TypeError, ValueError):
        return None
    return view if view.flags.writeable and view.flags.c_contiguous else None


def _is_cupy(array: Any) -> bool:
    return library_of(array) == "cupy"


class _NCCL:
    """CuPy arrays summed and broadcast on the GPUs by NCCL, one GPU per rank.

    NCCL needs a shared identifier to connect the ranks: rank 0 makes it and MPI
    broadcasts it. Untested in this repository's CI (one machine, no GPU); written
    after CuPy's ``cupy.cuda.nccl`` documentation.
    """

    def __init__(self, world: Any) -> None:
        from cupy.cuda import nccl

        self.nccl = nccl
        unique_id = nccl.get_unique_id() if world.Get_rank() == 0 else None
        unique_id = world.bcast(unique_id, root=0)
        self.comm = nccl.NcclCommunicator(world.Get_size(), unique_id, world.Get_rank())

    def _arguments(self, array: Any) -> tuple[int, int, int, int]:
        """NCCL's view of ``array``: pointer, element count, data type, CUDA stream."""
        import cupy

        if not array.flags.c_contiguous:
            raise BackendError("NCCL sums contiguous arrays only; got a strided view")
        types = {"float32": self.nccl.NCCL_FLOAT32, "float64": self.nccl.NCCL_FLOAT64}
        if str(array.dtype) not in types:
            raise BackendError(f"NCCL all-reduce of {array.dtype} arrays is not supported here")
        return array.data.ptr, array.size, types[str(array.dtype)], \
            cupy.cuda.get_current_stream().ptr

    def allreduce_(self, array: Any) -> Any:
        pointer, count, dtype, stream = self._arguments(array)
        self.comm.allReduce(pointer, pointer, count, dtype, self.nccl.NCCL_SUM, stream)
        return array

    def broadcast_(self, array: Any, root: int) -> Any:
        pointer, count, dtype, stream = self._arguments(array)
        self.comm.broadcast(pointer, pointer, count, dtype, root, stream)
        return array


# -- starting -----------------------------------------------------------------------------


def launched_size() -> int | None:
    """The number of ranks an MPI launcher started, from its environment (None if this
    process was not started by one; 0 if the launcher gives no size)."""
    for name in LAUNCH_SIZE_VARIABLES:
        text = os.environ.get(name, "").strip()
        if text.isdigit():
            return int(text)
    if any(os.environ.get(name) for name in LAUNCH_RANK_VARIABLES):
        return 0
    return None


_current: Communicator | None = None


def init() -> Communicator:
    """The communicator of this process: ``LOCAL`` (rank 0 of 1) unless an MPI launcher
    started several ranks (see ``LAUNCH_SIZE_VARIABLES``), then MPI's world. Idempotent.

    Under MPI, with N > 1 ranks, it also:

    * selects one GPU per rank (``cuda:<local rank>``) when the active backend is CuPy and
      ``NNSCRATCH_DEVICE`` does not choose one: call it after choosing the backend;
    * gives each rank its share of the machine's cores, ⌊cores / ranks on it⌋ BLAS and
      OpenMP threads (threadpoolctl), unless ``OMP_NUM_THREADS`` or the like is set:
      ``comm.threads``, and ``comm.describe()`` says e.g. "2 ranks × 1 thread";
    * makes an uncaught exception on any rank print its traceback, marked with the rank,
      and end every rank (``MPI_Abort``) rather than leave the others waiting forever;
    * makes the ranks other than 0 ignore Ctrl-C (SIGINT, which ``mpiexec`` forwards to
      every rank): rank 0 alone stops, writes what it must, and its exit (through
      ``run``) ends the others, which wait meanwhile in their next collective operation.
    """
    global _current
    if _current is not None:
        return _current
    size = launched_size()
    if size is None or size == 1:
        _current = LOCAL
        return _current
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise BackendError(
            f"this process was started by an MPI launcher ({_launch_variables()}), and "
            f"training on several processes needs mpi4py, which is not installed ({exc}). "
            f"Install it with: {MPI_INSTALL_HINT}"
        ) from exc
    comm = MPICommunicator(MPI.COMM_WORLD, MPI)
    _current = comm
    if comm.size > 1:
        _select_gpu(comm)
        comm.threads = _share_cores(comm)
        sys.excepthook = _aborting_excepthook
        if comm.rank != 0:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    return comm


def _launch_variables() -> str:
    names = LAUNCH_SIZE_VARIABLES + LAUNCH_RANK_VARIABLES
    return ", ".join(f"{name}={os.environ[name]}" for name in names if name in os.environ)


def _select_gpu(comm: Communicator) -> None:
    """One GPU per rank on each machine: CuPy's device ``local_rank``."""
    backend = get_backend()
    if backend.name != "cupy" or os.environ.get("NNSCRATCH_DEVICE", "").strip():
        return
    count = backend._native.cuda.runtime.getDeviceCount()
    if comm.local_rank >= count:
        raise BackendError(
            f"rank {comm.rank} is local rank {comm.local_rank} on its machine, which has "
            f"{count} GPU(s): start at most {count} ranks per machine (one GPU per rank)"
        )
    use_backend("cupy", device=f"cuda:{comm.local_rank}")


def _share_cores(comm: Communicator) -> int | None:
    """Give this rank its share of the machine's cores: ⌊cores / ranks here⌋ threads (at
    least 1, at most the cores it may run on) for BLAS and OpenMP, and return it.

    Left alone, every rank starts a thread per core, and N ranks on C cores run N·C
    threads that wait for each other (2 ranks on 2 cores trained 12 times slower than
    one process). A thread count the user set (``OMP_NUM_THREADS`` and the like) wins:
    it is returned, and nothing is changed."""
    for name in THREAD_VARIABLES:
        text = os.environ.get(name, "").strip()
        if text:
            return int(text) if text.isdigit() else None
    cores = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    threads = max(1, min(usable, cores // comm.local_size))
    if not limit_threads(threads):
        warnings.warn(f"threadpoolctl is not installed, so each of the {comm.local_size} "
                      f"ranks on this machine may start a thread per core; install it with: "
                      f"{MPI_INSTALL_HINT}, or set OMP_NUM_THREADS={threads}", stacklevel=3)
        return None
    return threads


def _aborting_excepthook(kind: type[BaseException], error: BaseException, trace: Any) -> None:
    comm = init()
    _report(comm, kind, error, trace)
    comm.abort(EXIT_INTERRUPTED if issubclass(kind, KeyboardInterrupt) else 1)


def _report(comm: Communicator, kind: type[BaseException], error: BaseException,
            trace: Any) -> None:
    """The traceback of an exception, each line marked with the rank it happened on."""
    lines = "".join(traceback.format_exception(kind, error, trace)).splitlines()
    prefix = f"[rank {comm.rank}/{comm.size}] "
    print("\n".join(prefix + line for line in lines), file=sys.stderr, flush=True)


def run(main: Callable[..., int | None], *args: Any, **kwargs: Any) -> int:
    """``main(*args, **kwargs)``'s exit status; on N > 1 ranks, a failure on any rank
    ends them all.

    One process: ``main`` is simply called (exceptions propagate as usual). Under MPI a
    rank whose ``main`` raises prints the traceback (marked with its rank) and aborts
    every rank with status 1 (130 for Ctrl-C); a rank whose ``main`` returns a non-zero
    status aborts every rank with that status. Without this the other ranks would wait
    forever in their next all-reduce for a rank that is gone::

        if __name__ == "__main__":
            sys.exit(nn.distributed.run(main))
    """
    comm = init()
    if comm.size == 1:
        return _exit_status(main(*args, **kwargs))
    try:
        status = _exit_status(main(*args, **kwargs))
    except SystemExit as exc:
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
        status = _exit_status(exc.code)
    except KeyboardInterrupt:
        print(f"[rank {comm.rank}/{comm.size}] interrupted", file=sys.stderr, flush=True)
        status = EXIT_INTERRUPTED
    except BaseException as exc:  # any failure must end every rank
        _report(comm, type(exc), exc, exc.__traceback__)
        status = 1
    if status != 0:
        comm.abort(status)
    return status


def _exit_status(code: Any) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


# -- what fit and evaluate ask of it -------------------------------------------------------


def shard(start: int, stop: int, rank: int, size: int) -> tuple[int, int]:
    """Rank ``rank``'s rows of the batch ``[start, stop)``: with B = stop − start,

        [start + ⌊r·B/N⌋, start + ⌊(r+1)·B/N⌋),

    consecutive, covering the batch once, sizes ⌊B/N⌋ or ⌈B/N⌉ (uneven remainders
    spread over the ranks)."""
    rows = stop - start
    return start + rank * rows // size, start + (rank + 1) * rows // size


def local_batches(samples: int, batch_size: int, comm: Communicator) \
        -> tuple[np.ndarray, list[tuple[int, int]], list[float]]:
    """This rank's part of an epoch of global batches ``[0, B), [B, 2B), ...``.

    Returns the positions in the epoch's order of this rank's rows (all batches' shards,
    end to end), each step's ``(start, stop)`` within them, and each step's share
    n_r / B of its global batch (the factor of ∇J_r). Raises ``ConfigError`` when a
    batch has fewer samples than there are ranks (a rank would have none).
    """
    last = samples - batch_size * ((samples - 1) // batch_size)
    if last < comm.size:
        raise ConfigError(
            f"{comm.size} ranks cannot share a batch of {last} sample(s): "
            + ("" if last == batch_size else
               f"{samples} samples in global batches of {batch_size} leave {last} for the "
               "last batch; ")
            + "each rank needs at least one sample per batch. Use fewer ranks, a larger "
            "batch size, or a sample count that leaves a larger last batch"
        )
    pieces, bounds, shares = [], [], []
    taken = 0
    for start in range(0, samples, batch_size):
        stop = min(start + batch_size, samples)
        first, end = shard(start, stop, comm.rank, comm.size)
        pieces.append(np.arange(first, end, dtype=np.int64))
        bounds.append((taken, taken + end - first))
        shares.append((end - first) / (stop - start))
        taken += end - first
    return np.concatenate(pieces), bounds, shares


def sum_epoch(comm: Communicator, losses: list[float], shares: list[float],
              correct: float | None) -> tuple[list[float], float | None]:
    """The epoch's per-step losses and correct count over all ranks, in one all-reduce:
    step s's loss is the global batch's mean, J = Σ_r (n_r / B) J_r."""
    weighted = [loss * share for loss, share in zip(losses, shares)]
    sums = comm.allreduce_scalars(weighted + ([] if correct is None else [correct]))
    return sums[:len(losses)], None if correct is None else sums[-1]


def sum_gradients(comm: Communicator, parameters: Any, share: float) -> None:
    """∇θ ← Σ_r share_r · ∇θ_r, on every rank: one scaling and one all-reduce of the
    flat ∇θ (per parameter where the model could not lay θ out as one vector)."""
    vector = getattr(parameters, "vector", None)
    if vector is not None and vector.ready():
        vector.grad *= share
        comm.allreduce_(vector.grad)
        return
    for param in parameters:
        if param.grad is not None:
            param.grad *= share
            summed = comm.allreduce_(param.grad)
            if summed is not param.grad:  # an immutable array (JAX): the new one
                param.grad = summed


def broadcast_parameters(comm: Communicator, parameters: Any) -> None:
    """Every rank's θ ← rank 0's θ (the ranks start from the same weights, whatever
    each built)."""
    vector = getattr(parameters, "vector", None)
    if vector is not None and vector.holds_all():
        comm.broadcast_(vector.value)
        return
    for param in parameters:
        received = comm.broadcast_(param.value)
        if received is not param.value:  # an immutable array (JAX): the new one
            param.value = received


def broadcast_states(comm: Communicator, layers: Any) -> None:
    """Every rank's layer state (``Layer.state()``: BatchNorm's running statistics) ←
    rank 0's, so that the ranks start alike (each updates its own afterwards)."""
    for layer in layers:
        for array in layer.state().values():
            comm.broadcast_(array)


def check_same_run(comm: Communicator, what: dict[str, Any]) -> None:
    """Raise ``ConfigError`` on every rank unless every rank has the same ``what`` (the
    architecture, the data's shape and checksum, the settings that fix the number of
    steps): ranks that disagree would wait for each other forever or train on
    different data."""
    everyone = comm.allgather(what)
    differences = [
        f"{key}: rank 0 has {everyone[0][key]!r}, rank {rank} has {theirs[key]!r}"
        for rank, theirs in enumerate(everyone) for key in what
        if theirs[key] != everyone[0][key]
    ]
    if differences:
        raise ConfigError(
            "the ranks are not training the same run (" + "; ".join(differences[:4])
            + "). Every rank must build the same model, load the same data and call fit "
            "with the same settings"
        )


__all__ = [
    "Communicator", "MPICommunicator", "LOCAL", "init", "run", "launched_size",
    "shard", "local_batches", "sum_epoch", "sum_gradients", "broadcast_parameters",
    "check_same_run",
]
