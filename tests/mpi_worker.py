"""What the ranks of test_mpi.py run: ``mpiexec -n N python tests/mpi_worker.py CASE OUT [...]``.

equivalence DTYPE BATCH STEPS LR [BACKEND]: N ranks train the narrow test network for STEPS steps at global
    batch BATCH (shards may be uneven) with synchronized batch norm; rank 0 trains the same network
    in one process in float64 on the whole batches alongside. float64: the two trajectories are
    compared (the largest weight difference at the end). float32: before each step the ranks take
    the float64 run's weights and velocities, and the step's gradients are compared with the
    float64 ones, as are those of one float32 process (a float32 trajectory is not compared whole:
    it drifts by round-off until a ReLU or max-pool decision tips, and from then on it measures
    the tipping, not the step). BACKEND cupy: the ranks run on CuPy (the strict stand-in where
    there is no GPU), their all-reduces through NCCL or host copies.
train ITERATIONS FOLDER [FAIL]: train() on the tiny shapes run in float64, data-parallel,
    checkpoints in FOLDER; FAIL = "raise:K" or "kill:K" makes rank 1 raise or die (SIGKILL) in its K-th step,
    after writing the time to OUT.
version: rank 1 pretends to run other code; the set-up check must refuse.
"""
import json
import os
import signal
import sys
import time

import numpy as np

from helpers import TINY_NET, TINY_RUN
from minirattn import backend as B
from minirattn import distributed as D
from minirattn.models import build
from minirattn.training import TrainConfig, train, train_step
from minirattn.training.optim import SGD


def equivalence(out, dtype, batch, steps, lr, backend="numpy"):
    batch, steps, lr = int(batch), int(steps), float(lr)
    comm = D.MPICommunicator()

    def network(dt, where="numpy"):
        model = build("attention56", num_classes=3, seed=0, input_size=16, **TINY_NET)
        model.to(where, dtype=dt)
        return model, SGD(model, lr=lr, momentum=0.9, weight_decay=1e-4)

    def grads(model):
        return {name: B.to_numpy(g) for name, _, g in model.named_parameters()}

    def gap(model, ref):
        """Largest gradient difference over the largest gradient, over the whole network."""
        mine, theirs = grads(model), grads(ref)
        return (max(float(np.abs(mine[k] - theirs[k]).max()) for k in theirs)
                / max(float(np.abs(g).max()) for g in theirs.values()))

    def take(model, opt, state):                       # rank 0's state on every rank
        if comm.rank == 0:
            model.load_state_dict(state[0])
            opt.load_state_dict(state[1])
        D.broadcast_model(model, comm)
        for v in opt._velocity.values():
            comm.broadcast(v)
    initial = network("float64")[0].state_dict()
    model, opt = network(dtype, backend)
    D.sync_batchnorm(model, comm)
    D.broadcast_model(model, comm)
    if comm.rank == 0:
        ref, ref_opt = network("float64")
        single, single_opt = network("float32")
    rng = np.random.default_rng(1)
    gaps, single_gaps = [], []
    for _ in range(steps):
        x = rng.standard_normal((batch, 3, 16, 16))
        y = rng.integers(0, 3, batch)
        lo, hi = D.shard(batch, comm.rank, comm.size)
        state = None
        if comm.rank == 0:
            state = ({k: v.copy() for k, v in ref.state_dict().items()},
                     {k: v.copy() for k, v in ref_opt.state_dict().items()})
        if dtype == "float32":
            take(model, opt, state)
        train_step(model, opt, B.to_device(x[lo:hi].astype(dtype), backend),
                   B.to_device(y[lo:hi], backend), lr, comm=comm, global_batch=batch)
        if comm.rank == 0:
            train_step(ref, ref_opt, x, y, lr)
            if dtype == "float32":
                single.load_state_dict(state[0])
                single_opt.load_state_dict(state[1])
                train_step(single, single_opt, x.astype(dtype), y, lr)
                gaps.append(gap(model, ref))
                single_gaps.append(gap(single, ref))
    if comm.rank == 0:
        mine = {k: B.to_numpy(v) for k, v in model.state_dict().items()}
        theirs = ref.state_dict()
        if dtype == "float64":
            gaps = [max(float(np.abs(mine[k] - theirs[k]).max() / max(np.abs(theirs[k]).max(),
                                                                       1e-30)) for k in mine)]
        moved = max(float(np.abs(theirs[k] - initial[k]).max()) for k in grads(ref))
        with open(out, "w") as f:
            json.dump(dict(worst_relative=max(gaps), single_process=max(single_gaps, default=0),
                           moved=moved, ranks=comm.size), f)


def run_training(out, iterations, folder, fail=""):
    mode, _, at = fail.partition(":")
    calls = [0]

    def step(*args, **kwargs):
        calls[0] += 1
        if mode and D.launched_rank() == 1 and calls[0] == int(at):
            with open(out, "w") as f:
                f.write(str(time.time()))
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("a failure injected by the test")
        return train_step(*args, **kwargs)
    settings = dict(TINY_RUN, iterations=int(iterations), eval_every=4, log_every=2,
                    dtype="float64", checkpoint_dir=folder, resume="auto", keep_checkpoints=10, progress=True)
    result = train(TrainConfig(distributed=True, **settings), step=step)
    if D.launched_rank() == 0 and not mode:
        with open(out, "w") as f:
            json.dump(dict(accuracy=result.final_test_accuracy, ranks=result.config["ranks"],
                           history=result.history), f)


def version(out):
    if D.launched_rank() == 1:
        D.code_fingerprint = lambda: "0123456789abcdef"
    train(TrainConfig(distributed=True, **TINY_RUN, checkpoint_dir=None))


def _real_gpu():
    try:
        B.get("cupy")
        return True
    except B.BackendError:
        return False


if __name__ == "__main__":
    case, out, *rest = sys.argv[1:]
    if case == "equivalence" and rest[4:] == ["cupy"] and not _real_gpu():
        from cupy_standin import installed             # the strict stand-in, as the gpu tests
        with installed():
            equivalence(out, *rest)
    elif case == "equivalence":
        equivalence(out, *rest)
    elif case == "train":
        run_training(out, *rest)
    elif case == "version":
        version(out)
    else:
        sys.exit(f"unknown case {case}")
