"""Data-parallel training: the same run on any number of ranks (MPI; NCCL between GPUs).

    minirattn train ...                              # one rank per core, started by itself
    mpiexec -n 4 minirattn train ...                 # the CLI joins the ranks by itself
    mpiexec -n 4 python -c "import minirattn; minirattn.train(distributed=True, ...)"

The scheme (docs/architecture.md, "Data-parallel training"; derivation of the synchronized batch
norm: docs/math/sync_batchnorm.md):

* every rank builds the same global batch of iteration ``i`` (order, augmentation and label noise
  are functions of the seed and ``i``) and takes its slice (:func:`shard`);
* the loss gradient of rank r is scaled by ``n_r / B`` (its share of the global batch), so the
  ranks' parameter gradients *sum* to the gradient of the global batch's mean loss, uneven
  shards included; the flat gradient buffer is all-reduced once per dtype (:func:`train_step`
  in ``training/loop.py`` does both);
* batch norm sums its statistics over the ranks (:func:`sync_batchnorm`), so N ranks at global
  batch B compute the step one process computes at batch B;
* rank 0's weights are broadcast at the start (:func:`broadcast_model`); ranks compare weight
  checksums at every evaluation (:func:`check_same_weights`) and stop if they differ;
* rank 0 alone writes checkpoints and metrics and shows progress. A checkpoint holds nothing
  that depends on the number of ranks, so it resumes on any number.

A :class:`Communicator` is the single-process do-nothing version; :class:`MPICommunicator` runs
over ``mpi4py`` (in-place ``Allreduce`` on host buffers) and, for CuPy arrays, over NCCL when CuPy
has it (the unique id broadcast through MPI), else through host copies after a device sync.
:class:`ThreadRanks` simulates N ranks with threads in one process (tests, tutorials).

:class:`BatchThreads` is the same scheme inside one process, for speed: N threads, each running
its slice of the batch through a :meth:`~minirattn.nn.Module.replica` of the model (the same
parameter arrays, gradients of its own), batch norm summed over the threads, the replicas'
gradients added into the model's; each thread's matrix products on one BLAS thread. NumPy
releases the GIL inside its large operations, so the threads use the cores for all of the step,
not only for the matrix products (docs/architecture.md, "Threads over the batch").
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import backend as B

#: Variables a launcher sets to the number of ranks (MPICH/Hydra and Intel MPI, Open MPI,
#: MVAPICH, Slurm's srun).
LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_NTASKS")
#: ... and to this rank's index.
LAUNCHER_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "SLURM_PROCID")


class DistributedError(RuntimeError):
    """A data-parallel set-up that cannot run, or ranks that no longer agree.

    Raised on every rank alike (after the ranks compared notes), so the job ends cleanly."""

    all_ranks = True


def launched_ranks(environ=None) -> int:
    """The number of ranks a launcher (``mpiexec``, ``srun``) started, from its environment
    variables; 1 when not launched by one. Reads no MPI library."""
    environ = os.environ if environ is None else environ
    for name in LAUNCHER_SIZE_VARS:
        value = environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def launched_rank(environ=None) -> int:
    """This process's rank as the launcher's environment says (0 when not launched by one)."""
    environ = os.environ if environ is None else environ
    for name in LAUNCHER_RANK_VARS:
        value = environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def shard(n: int, rank: int, size: int) -> tuple:
    """(start, stop) of rank ``rank``'s slice of ``n`` items: the first ``n % size`` ranks take
    one more, so sizes differ by at most one and the slices tile ``range(n)`` in rank order."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def code_fingerprint() -> str:
    """A short hash of minirattn's own source files: ranks running other code are refused."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


# ---- communicators -----------------------------------------------------------------------
class Communicator:
    """One process: every collective is the identity. The interface every communicator has.

    ``allreduce(a)`` sums the array ``a`` (NumPy or CuPy, contiguous) over the ranks in place and
    returns it; ``broadcast(a)`` copies rank 0's ``a`` into everyone's; the ``*_object`` ones move
    small picklable Python values; ``fail(exc)`` ends the whole job."""

    rank, size = 0, 1

    def allreduce(self, a):
        return a

    def broadcast(self, a, root: int = 0):
        return a

    def broadcast_object(self, obj, root: int = 0):
        return obj

    def allgather_object(self, obj) -> list:
        return [obj]

    def sum_numbers(self, values) -> list:
        """Sums of a few host numbers over the ranks (logging, evaluation counts)."""
        return [float(v) for v in values]

    def fail(self, exc: BaseException) -> None:
        """A rank that cannot go on: nothing to tell in one process (the caller re-raises)."""

    @property
    def reduce(self):
        """The ``reduce`` argument of the synchronized batch norm: None in one process."""
        return None if self.size == 1 else self.allreduce

    def collective(self, fn, *args, **kwargs):
        """Run ``fn`` on rank 0 only and give every rank its result; if it raised, every rank
        raises the same error (so a refused resume or a full disk ends all ranks alike)."""
        if self.size == 1:
            return fn(*args, **kwargs)
        outcome = None
        if self.rank == 0:
            try:
                outcome = (True, fn(*args, **kwargs))
            except Exception as exc:                     # re-raised on every rank below
                outcome = (False, exc)
        ok, value = self.broadcast_object(outcome)
        if not ok:
            try:
                value.all_ranks = True                   # every rank raises it: no abort needed
            except AttributeError:                      # pragma: no cover - exotic exceptions
                pass
            raise value
        return value


class MPICommunicator(Communicator):
    """The ranks of ``MPI.COMM_WORLD`` (or ``comm``) through mpi4py; CuPy arrays go through NCCL
    where CuPy has it. Each rank takes GPU ``local rank`` when arrays are on CuPy."""

    def __init__(self, comm=None):
        try:
            from mpi4py import MPI                      # noqa: WPS433 (an optional dependency)
        except ImportError as exc:
            raise DistributedError(
                f"distributed training needs mpi4py and an MPI library: pip install "
                f"'minirattn[dist]' (installs mpi4py and MPICH; no system MPI needed). Import "
                f"failed with: {exc}") from exc
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        self._nccl = None

    # host buffers through MPI, device buffers through NCCL (or host copies)
    def allreduce(self, a):
        if B.name_of(a) == "numpy":
            self.comm.Allreduce(self.MPI.IN_PLACE, a, op=self.MPI.SUM)
            return a
        nccl = self._nccl_comm()
        if nccl is not None:
            module = B.nccl()
            kind = {"float32": module.NCCL_FLOAT32, "float64": module.NCCL_FLOAT64}[str(a.dtype)]
            nccl.allReduce(a.data.ptr, a.data.ptr, a.size, kind, module.NCCL_SUM,
                           B.current_stream_ptr())     # queued on the stream: no host sync
            return a
        host = B.to_numpy(a)                            # waits for the device
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        a[...] = B.to_device(host, "cupy")
        return a

    def broadcast(self, a, root: int = 0):
        if B.name_of(a) == "numpy":
            self.comm.Bcast(a, root=root)
            return a
        host = B.to_numpy(a)
        self.comm.Bcast(host, root=root)
        a[...] = B.to_device(host, "cupy")
        return a

    def broadcast_object(self, obj, root: int = 0):
        return self.comm.bcast(obj, root=root)

    def allgather_object(self, obj) -> list:
        return self.comm.allgather(obj)

    def sum_numbers(self, values) -> list:
        host = B.numpy.asarray([float(v) for v in values], dtype=B.numpy.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        return host.tolist()

    def fail(self, exc: BaseException) -> None:
        """Say which rank failed and why on stderr, then end every rank (``MPI_Abort``): the job
        stops within a second instead of waiting forever in the next collective."""
        if isinstance(exc, KeyboardInterrupt):
            # Ctrl-C reaches every rank: each ends the job at once; rank 0 says so, unless the
            # command that started the ranks (launch_ranks) is there to say it once
            if self.rank == 0 and os.environ.get(LAUNCHED_BY) != "1":
                self._say(interrupted_line(self.size))
            self.comm.Abort(INTERRUPTED)
            os._exit(INTERRUPTED)            # pragma: no cover - Abort does not return
        self._say(f"minirattn: rank {self.rank} of {self.size} failed ({type(exc).__name__}: "
                  f"{exc}); ending all {self.size} ranks\n")
        self.comm.Abort(1)
        os._exit(1)                          # pragma: no cover

    @staticmethod
    def _say(line: str) -> None:
        """Write ``line`` to stderr and give the launcher a moment to forward it: MPI_Abort makes
        it end every process at once, and a line still in the pipe would be lost with them."""
        sys.stderr.write(line)
        sys.stderr.flush()
        time.sleep(OUTPUT_GRACE)

    def _nccl_comm(self):
        """NCCL needs a GPU of its own for every rank: with fewer GPUs than ranks on a machine (or
        CuPy without NCCL) the device arrays go through host copies instead. The ranks decide
        together: NCCL only if every rank can use it."""
        if self._nccl is None:
            module = B.nccl()
            mine = module is not None and self.local_size <= B.device_count()
            if not all(self.comm.allgather(mine)):
                self._nccl = False
            else:
                uid = self.comm.bcast(module.get_unique_id() if self.rank == 0 else None, root=0)
                self._nccl = module.NcclCommunicator(self.size, uid, self.rank)
        return self._nccl or None


class ThreadRanks:
    """N simulated ranks in one process, one thread each, for tests and tutorials.

    ``ThreadRanks(n).run(fn, args)`` calls ``fn(comm, *args[r])`` in thread r, where ``comm`` is
    that rank's communicator; their ``allreduce`` adds the ranks' arrays in rank order (so every
    rank gets bit-identical sums). Returns the results in rank order; an error in one rank is
    raised after the others are released."""

    def __init__(self, size: int, timeout: float | None = 60.0):
        self.size, self.timeout = size, timeout
        self._cond = threading.Condition()
        self._calls = [0] * size                        # collectives each rank has entered
        self._rounds = {}                               # call number -> {rank: value}
        self._failed = None

    def _exchange(self, rank, value):
        """Every rank's ``value`` of this rank's next collective, in rank order. A round all
        ranks reached completes even if a rank fails later; one a rank never reaches raises."""
        with self._cond:
            k = self._calls[rank]
            self._calls[rank] += 1
            round_ = self._rounds.setdefault(k, {})
            round_[rank] = value
            self._cond.notify_all()
            self._cond.wait_for(lambda: len(round_) == self.size or self._failed is not None,
                                self.timeout)
            if len(round_) < self.size:
                raise threading.BrokenBarrierError(
                    f"simulated rank {rank}: rank {self._failed} failed or the others did not "
                    f"reach collective {k}" + (f" within {self.timeout} s" if self.timeout
                                               else ""))
            values = [round_[r] for r in range(self.size)]
            if all(c > k for c in self._calls) and k - 1 in self._rounds:
                del self._rounds[k - 1]                 # everyone is past the one before
            return values

    def _fail(self, rank):
        with self._cond:
            self._failed = rank
            self._cond.notify_all()

    def communicator(self, rank: int) -> Communicator:
        ranks = self

        class Simulated(Communicator):
            def allreduce(self, a):
                parts = ranks._exchange(self.rank, a.copy())
                total = parts[0].copy()
                for p in parts[1:]:
                    total += p
                a[...] = total
                return a

            def broadcast(self, a, root: int = 0):
                a[...] = ranks._exchange(self.rank, a.copy())[root]
                return a

            def broadcast_object(self, obj, root: int = 0):
                return ranks._exchange(self.rank, obj)[root]

            def allgather_object(self, obj) -> list:
                return ranks._exchange(self.rank, obj)

            def sum_numbers(self, values) -> list:
                parts = ranks._exchange(self.rank, [float(v) for v in values])
                return [sum(col) for col in zip(*parts)]

        comm = Simulated()
        comm.rank, comm.size = rank, self.size
        return comm

    def run(self, fn, args) -> list:
        results, errors = [None] * self.size, [None] * self.size

        def body(r):
            try:
                results[r] = fn(self.communicator(r), *args[r])
            except BaseException as exc:                # noqa: B902 - re-raised below
                errors[r] = exc
                self._fail(r)                           # release the others

        threads = [threading.Thread(target=body, args=(r,), daemon=True)
                   for r in range(self.size)]
        for t in threads:
            t.start()
        try:
            for t in threads:
                t.join()
        except BaseException:              # Ctrl-C in the waiting thread: stop the ranks at
            self._fail(-1)                 # their next collective, wait for them, re-raise
            for t in threads:
                t.join()
            raise
        real = [e for e in errors if e is not None
                and not isinstance(e, threading.BrokenBarrierError)]
        broken = [e for e in errors if e is not None]
        if real or broken:
            raise (real or broken)[0]
        return results


class BatchThreads:
    """One process, ``size`` threads, each running a slice of the batch through its own replica
    of ``model``: the data-parallel scheme above with threads for ranks.

    ``run(fn, x, y)`` calls ``fn(replica, x_r, y_r, share_r)`` in thread r (replica 0 is the
    model itself; ``share_r = n_r / n``, the slice's share of the batch), with every batch norm
    summing its statistics over the threads (so the step is the one-thread step, to round-off),
    then adds the replicas' gradients into the model's in thread order and returns the ``fn``
    results in thread order. Replicas share the model's parameter arrays (an optimiser update is
    seen by all) and are laid out again if the model's flat buffers change (``to()``). Inside,
    each thread's matrix products run on one BLAS thread (:func:`minirattn.backend.blas_threads`).
    A batch smaller than ``size`` runs on as many threads as it has images. NumPy only: on CuPy
    one device runs one stream of kernels, and ``size`` must be 1."""

    def __init__(self, model, size: int):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"BatchThreads: expected a number of threads >= 1, got {size!r}")
        if size > 1 and model.backend != "numpy":
            raise ValueError(f"BatchThreads: threads over the batch are for the NumPy backend; "
                             f"this model is on {model.backend!r} (use 1 thread)")
        self.model, self.size = model, size
        self._replicas, self._layers, self._layout = [], [], None

    def _ready(self, n: int):
        """The first ``n`` replicas and their batch norms, made (again) where the model's flat
        buffers changed."""
        layout = tuple(id(g.params) for g in self.model.flat_groups.values())
        if layout != self._layout or not self._replicas:
            self._replicas, self._layers = [self.model], [batch_norms(self.model)]
            self._layout = layout
        if any(m.reduce is not None for m in self._layers[0]):
            raise ValueError("BatchThreads: this model's batch norm already sums over ranks "
                             "(sync_batchnorm); threads over the batch run on one process only")
        while len(self._replicas) < n:
            self._replicas.append(self.model.replica())
            self._layers.append(batch_norms(self._replicas[-1]))
        for rep in self._replicas[1:n]:
            rep.train(self.model.training)
        return self._replicas[:n], self._layers[:n]

    def run(self, fn, x, y) -> list:
        n = min(self.size, len(y))
        replicas, layers = self._ready(n)
        if n == 1:
            return [fn(self.model, x, y, 1.0)]
        ranks = ThreadRanks(n, timeout=None)

        def body(comm, rep, xs, ys, bns):
            for m in bns:
                m.reduce = comm.allreduce
            try:
                return fn(rep, xs, ys, len(ys) / len(y))
            finally:
                for m in bns:
                    m.reduce = None

        args = []
        for r in range(n):
            lo, hi = shard(len(y), r, n)
            args.append((replicas[r], x[lo:hi], y[lo:hi], layers[r]))
        with B.blas_threads(1):
            results = ranks.run(body, args)
        self._add_gradients(replicas)
        return results

    def _add_gradients(self, replicas):
        """The model's gradients += each replica's, in thread order (as the all-reduce sums)."""
        groups = self.model.flat_groups
        for rep in replicas[1:]:
            if groups:
                for name, group in groups.items():
                    group.grads += rep.flat_groups[name].grads
            else:
                for (_, _, g), (_, _, h) in zip(self.model.named_parameters(),
                                                rep.named_parameters()):
                    g += h


def communicator(distributed) -> Communicator:
    """The communicator of a run: ``distributed`` False -> one process; True -> MPI (an error
    without mpi4py); "auto" -> MPI when a launcher started more than one rank."""
    if distributed is True or (distributed == "auto" and launched_ranks() > 1):
        return MPICommunicator()
    return Communicator()


# ---- the model across ranks --------------------------------------------------------------
def batch_norms(model) -> list:
    """The batch-norm layers of ``model``: those with a ``reduce`` to synchronise."""
    return [m for m in model.modules() if hasattr(m, "reduce") and "running_mean" in m.buffers]


def sync_batchnorm(model, comm: Communicator, enabled: bool = True) -> int:
    """Make every batch norm of ``model`` sum its statistics over ``comm``'s ranks (or, with
    ``enabled=False``, normalise each rank's shard alone). Returns how many it changed."""
    layers = batch_norms(model)
    for m in layers:
        m.reduce = comm.reduce if enabled else None
    return len(layers)


def broadcast_model(model, comm: Communicator) -> None:
    """Copy rank 0's parameters and buffers (running statistics) into every rank's model."""
    if comm.size == 1:
        return
    for prefix, m in model.named_modules():
        for store in (m.params, m.buffers):
            for k, v in store.items():
                comm.broadcast(v)


def allreduce_gradients(model, comm: Communicator) -> None:
    """Sum the gradients over the ranks: one all-reduce of each flat gradient buffer (the
    optimiser lays them out), else one per tensor."""
    if comm.size == 1:
        return
    groups = model.flat_groups
    if groups:
        for group in groups.values():
            comm.allreduce(group.grads)
        return
    for _, _, g in model.named_parameters():
        comm.allreduce(g)


def weights_checksum(model) -> str:
    """A hash of the exact bytes of every parameter and buffer (one copy to the host)."""
    h = hashlib.sha256()
    for name, v in model.state_dict().items():
        h.update(name.encode())
        h.update(B.numpy.ascontiguousarray(B.to_numpy(v)).tobytes())
    return h.hexdigest()[:16]


def check_same_weights(model, comm: Communicator, iteration: int) -> None:
    """Raise :class:`DistributedError` on every rank if the ranks' weights are not bit-identical
    (they are kept so by the all-reduce: every rank applies the same summed gradient)."""
    if comm.size == 1:
        return
    sums = comm.allgather_object(weights_checksum(model))
    if len(set(sums)) > 1:
        groups = {}
        for r, s in enumerate(sums):
            groups.setdefault(s, []).append(r)
        raise DistributedError(
            f"the ranks' weights differ at iteration {iteration} (ranks grouped by checksum: "
            f"{sorted(groups.values())}); training stopped. Something made the ranks compute "
            f"different steps (other code or data on some machine, a non-deterministic "
            f"reduction); the last checkpoint holds rank 0's weights")


def check_setup(comm: Communicator, *, batch_size: int, backend: str, dtype=None) -> None:
    """Before any training: every rank must run the same code on the same backend and dtype, and
    the global batch must split evenly. Raises :class:`DistributedError` on every rank."""
    if comm.size == 1:
        return
    if batch_size % comm.size:
        lower = batch_size - batch_size % comm.size
        raise DistributedError(
            f"batch_size {batch_size} does not split evenly over {comm.size} ranks: choose a "
            f"multiple of {comm.size} (e.g. {lower or comm.size} or {lower + comm.size}), so that "
            f"every rank does the same work")
    mine = dict(version=_version(), code=code_fingerprint(), backend=backend, dtype=str(dtype),
                python=sys.version.split()[0])
    everyone = comm.allgather_object(mine)
    for key in mine:
        values = [e[key] for e in everyone]
        if len(set(values)) > 1:
            raise DistributedError(
                f"the ranks do not agree on {key}: "
                + ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))
                + ". Every rank must run the same minirattn on the same backend")


def describe_ranks(comm: Communicator) -> str:
    """'rank 0: pid 812 on node1, rank 1: ...' (a collective): a launcher's report of a killed
    process names its pid, this says which rank that was."""
    import socket
    where = comm.allgather_object((os.getpid(), socket.gethostname()))
    return ", ".join(f"rank {r}: pid {pid} on {host}" for r, (pid, host) in enumerate(where))


def pick_device(comm: Communicator, backend: str) -> None:
    """On CuPy, rank r takes the GPU of its local rank (one GPU per rank on each machine; MPI
    tells the local rank: the ranks on one machine share a communicator). Simulated ranks
    (threads of one process) share device 0."""
    if backend == "cupy" and comm.size > 1:
        B.use_device(getattr(comm, "local_rank", 0))


# ---- every core by default: the command starts its own ranks --------------------------------
#: The thread-count variables set to 1 in every rank a command starts (one thread per rank).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
#: How long a launcher waits for its ranks after Ctrl-C before it kills them (seconds).
INTERRUPT_GRACE = 10
#: Set in the ranks :func:`launch_ranks` starts (the launcher reports a Ctrl-C itself).
LAUNCHED_BY = "MINIRATTN_LAUNCHED_RANKS"
#: Seconds a failing rank waits after saying why, before it ends the job (see MPICommunicator).
OUTPUT_GRACE = 0.2
#: The exit status of ranks ended by Ctrl-C (128 + SIGINT, as a shell reports it).
INTERRUPTED = 130


def interrupted_line(n: int) -> str:
    return (f"minirattn: interrupted; ending all {n} ranks (the checkpoints written so far "
            f"stay)\n")


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                               # pragma: no cover - not Linux
        return os.cpu_count() or 1


def mpi_launcher():
    """(mpiexec, None) when the ``dist`` extra is there (mpi4py, and an mpiexec on PATH or beside
    this Python: the extra's MPICH puts one there), else (None, what is missing)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None, "mpi4py is not installed"
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = shutil.which("mpiexec") or (beside if os.access(beside, os.X_OK) else None)
    return (found, None) if found else (None, "no mpiexec on PATH or beside Python")


def plan_ranks(procs, batch_size: int, backend: str = "numpy"):
    """(ranks, note) for ``--procs``: "auto" is one rank per core on the CPU (the most that split
    ``batch_size`` evenly; one on CuPy, where each rank needs a GPU of its own) and falls back to
    one process, with a one-line note, without the ``dist`` extra; N asks for N (an error without
    the extra or when the batch does not split); 1 is one process."""
    auto = procs == "auto"
    if not auto:
        try:
            n = int(procs)
        except (TypeError, ValueError):
            raise ValueError(f"--procs: expected 'auto' or a number of ranks >= 1, got "
                             f"{procs!r}") from None
        if n < 1:
            raise ValueError(f"--procs: expected 'auto' or a number of ranks >= 1, got {n}")
    else:
        n = 1 if backend != "numpy" else max(
            k for k in range(1, cores() + 1) if batch_size % k == 0)
    if n == 1:
        return 1, None
    if batch_size % n:
        raise ValueError(f"--procs {n}: batch_size {batch_size} does not split evenly over {n} "
                         f"ranks; choose a multiple of {n}")
    _, missing = mpi_launcher()
    if missing and auto:
        return 1, (f"minirattn: one process ({missing}); pip install -e '.[dist]' lets it run "
                   f"{n} ranks, one per core (--procs 1 runs one process and says nothing)")
    if missing:
        raise ValueError(f"--procs {n} needs the dist extra ({missing}): pip install -e "
                         f"'.[dist]', or --procs 1")
    return n, None


def launch_ranks(n: int, argv) -> int:
    """Run ``minirattn ARGV`` on ``n`` ranks of one thread each under the ``dist`` extra's
    mpiexec, and return its exit status. The ranks stay in this terminal's process group, so
    Ctrl-C reaches every one (each stops; the job is aborted); a rank that dies makes mpiexec end
    the others. This process only waits (after Ctrl-C at most INTERRUPT_GRACE seconds, then it
    kills the job) and says once that the job was interrupted, whether Ctrl-C reached it or only
    the ranks (a process started with SIGINT ignored, as a shell's background job is)."""
    mpiexec, missing = mpi_launcher()
    if missing:
        raise DistributedError(f"cannot start {n} ranks: {missing}")
    env = dict(os.environ, **{v: "1" for v in THREAD_VARIABLES}, **{LAUNCHED_BY: "1"})
    proc = subprocess.Popen([mpiexec, "-n", str(n), sys.executable, "-m", "minirattn", *argv],
                            env=env)
    interrupted = False
    try:
        status = proc.wait()
    except KeyboardInterrupt:                # the ranks got it too: give them time to end
        interrupted = True
        try:
            status = proc.wait(timeout=INTERRUPT_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            status = proc.wait()
    if interrupted or status == INTERRUPTED:
        sys.stderr.write(interrupted_line(n))
    return status


# ---- a run's data-parallel behaviour, in one object -----------------------------------------
class DataParallel:
    """What a training run does differently on several ranks, behind one object; on one process
    every method gives the single-process answer (no shard, nothing to synchronise).

    ``batch_size`` is the global batch: rank r trains on its slice :meth:`shard`; batch norm sums
    its statistics over the ranks when ``sync_batchnorm`` (the step then equals one process's);
    rank 0 (:attr:`lead`) alone decides where the run goes (:meth:`collective`), reports, and
    writes; :meth:`fail` ends every rank when one meets an error the others do not."""

    def __init__(self, comm: Communicator, batch_size: int, sync_batchnorm: bool = True,
                 threads=1):
        self.comm, self.batch_size, self.sync = comm, batch_size, sync_batchnorm
        self.threads_asked, self.threads = threads, None

    @classmethod
    def for_run(cls, distributed, batch_size: int, sync_batchnorm: bool = True,
                threads=1):
        """The run's ranks (``distributed`` as TrainConfig's) and ``threads`` over each rank's
        batch (TrainConfig's); refuses ranks a launcher started for a run that says
        ``distributed=False``."""
        if distributed is False and launched_ranks() > 1:
            raise ValueError(f"this process is one of {launched_ranks()} ranks a launcher started, "
                             f"but distributed=False: every rank would train the same run alone "
                             f"and write the same checkpoints. Pass distributed=True or 'auto' "
                             f"(--distributed auto), or run without mpiexec")
        return cls(communicator(distributed), batch_size, sync_batchnorm, threads)

    @property
    def ranks(self) -> int:
        return self.comm.size

    @property
    def lead(self) -> bool:
        return self.comm.rank == 0

    def check_setup(self, backend: str, dtype) -> None:
        """Same code, backend and dtype everywhere and an even split (:func:`check_setup`); each
        rank takes its GPU."""
        check_setup(self.comm, batch_size=self.batch_size, backend=backend, dtype=dtype)
        pick_device(self.comm, backend)

    def collective(self, fn, *args, **kwargs):
        return self.comm.collective(fn, *args, **kwargs)

    def shard(self, n: int) -> tuple:
        """(lo, hi) of this rank's slice of ``n`` items."""
        return shard(n, self.comm.rank, self.comm.size)

    def thread_count(self, backend: str) -> int:
        """Threads over this rank's batch: ``threads`` as asked; "auto" is one per core on NumPy
        in one process, else 1. Several threads under several ranks are refused."""
        asked = self.threads_asked
        if asked == "auto":
            return cores() if self.ranks == 1 and backend == "numpy" else 1
        if asked > 1 and self.ranks > 1:
            raise ValueError(f"threads={asked} on {self.ranks} ranks: threads over the batch run "
                             f"in one process only; use threads=1 or 'auto' with ranks")
        return asked

    def prepare(self, model) -> None:
        """Before the first step: batch norm synchronised (or not) and rank 0's weights
        everywhere; in one process, the threads over the batch (:class:`BatchThreads`)."""
        if self.ranks > 1:
            sync_batchnorm(model, self.comm, self.sync)
            broadcast_model(model, self.comm)
        n = self.thread_count(model.backend)
        self.threads = BatchThreads(model, n) if n > 1 else None

    def step_kwargs(self) -> dict:
        """What a step needs besides its batch: the communicator and the global batch, or the
        threads over the batch."""
        if self.ranks > 1:
            return dict(comm=self.comm, global_batch=self.batch_size)
        return dict(threads=self.threads) if self.threads is not None else {}

    def before_test(self, model) -> None:
        """Unsynchronised batch norm: every rank tests with rank 0's running statistics."""
        if not self.sync:
            broadcast_model(model, self.comm)

    def check_same_weights(self, model, iteration: int) -> None:
        check_same_weights(model, self.comm, iteration)

    def describe(self) -> str:
        """' on 2 ranks (32 images each, ...)' for the run's first line; ' on 2 threads over the
        batch' or '' on one process."""
        if self.ranks == 1:
            return (f" on {self.threads.size} threads over the batch"
                    if self.threads is not None else "")
        return (f" on {self.ranks} ranks ({self.batch_size // self.ranks} images each, batch "
                f"norm {'synchronized' if self.sync else 'per rank'}; {describe_ranks(self.comm)})")

    def fail(self, exc: BaseException) -> None:
        """An error only this rank met ends every rank (``MPI_Abort``); one every rank met alike
        (``all_ranks``) is simply raised on each."""
        if self.ranks > 1 and not getattr(exc, "all_ranks", False):
            self.comm.fail(exc)


def _version() -> str:
    from . import __version__
    return __version__
