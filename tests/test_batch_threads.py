"""Threads over the batch in one process (minirattn.distributed.BatchThreads): replicas that
share the model's weights, batch norm summed over the threads, gradients added into the model's.
The step must be the one-thread step (float64 to round-off), whatever the batch and the number
of threads; errors and Ctrl-C must leave no thread running and the model as it was."""
import signal
import threading
import time

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minirattn import distributed as D
from minirattn.distributed import batch_norms
from minirattn.models import build
from minirattn.training import SGD, TrainConfig, train, train_step
from minirattn.training.loop import forward_backward

from helpers import TINY_NET, TINY_RUN


def tiny(seed=0, dtype="float64"):
    return build("attention56", num_classes=3, seed=seed, input_size=16,
                 **TINY_NET).to(dtype=dtype)


def batch(n, seed=1, dtype="float64"):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 16, 16)).astype(dtype), rng.integers(0, 3, n)


def alive():
    """Threads still running (an interrupted join can leave a finished thread listed a moment)."""
    return sum(t.is_alive() for t in threading.enumerate())


def test_a_replica_shares_the_parameters_and_has_gradients_buffers_and_caches_of_its_own():
    model = tiny()
    SGD(model)                                               # flat buffers, as in training
    x, y = batch(4)
    forward_backward(model, x, y)                            # caches and gradients to leave out
    rep = model.replica()
    assert all(p is q for p, q in zip(model.parameters(), rep.parameters()))
    group, rgroup = model.flat_groups["float64"], rep.flat_groups["float64"]
    assert rgroup.params is group.params and rgroup.grads is not group.grads
    assert not rgroup.grads.any() and group.grads.any()
    for (_, _, g) in rep.named_parameters():                 # views into its own buffer
        assert np.shares_memory(g, rgroup.grads) and not np.shares_memory(g, group.grads)
    for m, r in zip(batch_norms(model), batch_norms(rep)):
        assert r.buffers["running_mean"] is not m.buffers["running_mean"]
        np.testing.assert_array_equal(r.buffers["running_mean"], m.buffers["running_mean"])
        assert r._cache is None and m._cache is not None
    group.params *= 1.5                                      # an update reaches the replica:
    with model.mode(False), rep.mode(False):                 # the same logits, evaluated
        np.testing.assert_array_equal(rep(x), model(x))


@given(n=st.integers(1, 7), threads=st.integers(1, 4), seed=st.integers(0, 3))
def test_threads_give_the_one_thread_step_in_float64(n, threads, seed):
    """Three steps on the same batches: weights, running statistics, loss and the number
    correct equal to round-off; uneven slices and more threads than images included."""
    one, many = tiny(seed), tiny(seed)
    opt_one, opt_many = SGD(one, lr=0.05), SGD(many, lr=0.05)
    bt = D.BatchThreads(many, threads)
    for step in range(3):
        x, y = batch(n, seed + step)
        loss1, right1 = train_step(one, opt_one, x, y, 0.05)
        loss2, right2 = train_step(many, opt_many, x, y, 0.05, threads=bt)
        assert abs(float(loss1) - float(loss2)) <= 1e-12 * max(1.0, abs(float(loss1)))
        assert int(right1) == int(right2)
    moved = 0.0
    for (k, a), (_, b) in zip(one.state_dict().items(), many.state_dict().items()):
        scale = max(float(np.abs(a).max()), 1e-6)
        assert float(np.abs(a - b).max()) <= 1e-10 * scale, k
    for a, b in zip(tiny(seed).parameters(), one.parameters()):
        moved = max(moved, float(np.abs(a - b).max()))
    assert moved > 1e-3                                      # the steps changed the weights
    assert all(m.reduce is None for m in batch_norms(many))  # nothing left synchronised


def test_float32_threads_stay_as_close_to_float64_as_one_thread():
    x, y = batch(8, dtype="float64")
    exact = tiny()
    forward_backward(exact, x, y)
    g64 = np.concatenate([g.ravel() for _, _, g in exact.named_parameters()])
    far = {}
    for threads in (1, 2):
        model = tiny(dtype="float32")
        D.BatchThreads(model, threads).run(forward_backward, x.astype("float32"), y)
        g = np.concatenate([g.ravel() for _, _, g in model.named_parameters()])
        far[threads] = np.linalg.norm(g - g64) / np.linalg.norm(g64)
    assert far[2] < 1e-4 and far[2] <= 3 * far[1] + 1e-7, far


def test_the_replicas_follow_a_model_laid_out_again_and_its_mode():
    model = tiny()
    opt = SGD(model)
    bt = D.BatchThreads(model, 2)
    x, y = batch(6)
    train_step(model, opt, x, y, 0.05, threads=bt)
    first = bt._replicas[1]
    model.to(dtype="float64")                                # lays the flat buffers out again
    opt = SGD(model)
    train_step(model, opt, x, y, 0.05, threads=bt)
    assert bt._replicas[1] is not first
    assert all(p is q for p, q in zip(model.parameters(), bt._replicas[1].parameters()))
    model.eval()
    bt.run(lambda rep, xs, ys, share: None, x, y)
    assert not bt._replicas[1].training


def test_an_error_in_one_thread_is_raised_and_leaves_no_thread_and_no_synchronised_layer():
    model = tiny()
    bt = D.BatchThreads(model, 2)
    x, y = batch(6)
    before = alive()

    def fails_in_thread_1(rep, xs, ys, share):
        if rep is not model:
            raise FloatingPointError("thread 1 went wrong")
        return forward_backward(rep, xs, ys, share)          # thread 0 waits at a batch norm
    with pytest.raises(FloatingPointError, match="thread 1 went wrong"):
        bt.run(fails_in_thread_1, x, y)
    assert alive() == before
    assert all(m.reduce is None for rep in bt._replicas for m in batch_norms(rep))
    loss, _ = bt.run(forward_backward, x, y)[0]              # and the next step works
    assert np.isfinite(float(loss))


class Interrupted(Exception):
    pass


def test_ctrl_c_while_the_threads_run_stops_them_and_is_raised():
    """SIGINT reaches the thread that waits for the others (the main thread): the threads are
    released at their next batch norm, joined, and the interruption is raised."""
    model = tiny()
    bt = D.BatchThreads(model, 2)
    x, y = batch(4)
    before = alive()

    def slow(rep, xs, ys, share):
        for _ in range(500):                                 # 10 s unless stopped
            forward_backward(rep, xs, ys, share)
            time.sleep(0.02)

    def interrupt(signum, frame):
        raise Interrupted
    previous = signal.signal(signal.SIGINT, interrupt)
    timer = threading.Timer(0.5, signal.pthread_kill, (threading.main_thread().ident,
                                                        signal.SIGINT))
    try:
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(Interrupted):
            bt.run(slow, x, y)
        assert time.monotonic() - t0 < 5
    finally:
        timer.cancel()
        timer.join()                                         # the timer's thread has ended too
        signal.signal(signal.SIGINT, previous)
    assert alive() == before


def test_bad_thread_counts_and_backends_are_refused():
    model = tiny()
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="number of threads"):
            D.BatchThreads(model, bad)
    for bad in (0, "two", 2.0, True):
        with pytest.raises(ValueError, match="threads: expected 'auto' or an int >= 1"):
            TrainConfig(threads=bad)
    comm = D.ThreadRanks(1).communicator(0)
    for m in batch_norms(model):
        m.reduce = comm.allreduce                            # as under several ranks
    with pytest.raises(ValueError, match="already sums over ranks"):
        D.BatchThreads(model, 2).run(forward_backward, *batch(4))


def test_auto_is_one_thread_per_core_in_one_process_and_one_under_ranks():
    assert D.DataParallel(D.Communicator(), 8).thread_count("numpy") == 1     # the default
    assert TrainConfig().threads == 1
    one = D.DataParallel(D.Communicator(), 8, threads="auto")
    assert one.thread_count("numpy") == D.cores()
    assert one.thread_count("cupy") == 1
    comm = D.ThreadRanks(2).communicator(0)
    ranks = D.DataParallel(comm, 8, threads="auto")
    assert ranks.thread_count("numpy") == 1
    with pytest.raises(ValueError, match="one process only"):
        D.DataParallel(comm, 8, threads=2).thread_count("numpy")


def test_a_run_on_two_threads_trains_the_run_one_thread_trains(tmp_path):
    """train() in float64: the same weights and history to round-off; the record says how many
    threads, and a resume on another count says so."""
    results = {}
    for threads in (1, 2):
        config = TrainConfig(**TINY_RUN, iterations=4, eval_every=2, dtype="float64",
                             threads=threads, checkpoint_dir=str(tmp_path / str(threads)))
        results[threads] = train(config, echo=lambda *a, **k: None)
    one, two = results[1], results[2]
    assert two.config["threads"] == 2 and one.config["threads"] == 1
    for (k, a), (_, b) in zip(one.model.state_dict().items(), two.model.state_dict().items()):
        assert float(np.abs(a - b).max()) <= 1e-9 * max(float(np.abs(a).max()), 1e-6), k
    assert abs(one.history[-1]["loss"] - two.history[-1]["loss"]) < 1e-9
    lines = []                         # two threads stopped at 2, resumed on one: the same run
    half = TrainConfig(**TINY_RUN, iterations=4, eval_every=2, dtype="float64", threads=2,
                       checkpoint_dir=str(tmp_path / "r"))
    train(half, echo=lambda *a, **k: None, callbacks=[lambda run: setattr(
        run, "stop", run.iteration == 2)])
    resumed = train(half.replace(threads=1, resume=True), echo=lines.append)
    assert any("threads 2 -> 1" in line for line in lines), lines
    for (k, a), (_, b) in zip(one.model.state_dict().items(),
                              resumed.model.state_dict().items()):
        assert float(np.abs(a - b).max()) <= 1e-9 * max(float(np.abs(a).max()), 1e-6), k


def test_a_step_of_five_arguments_runs_the_run_on_one_thread():
    calls = []

    def five(model, optimizer, x, y, lr):
        calls.append(len(y))
        return train_step(model, optimizer, x, y, lr)
    r = train(TrainConfig(**TINY_RUN, iterations=2, eval_every=2, threads=2,
                          checkpoint_dir=None), step=five, echo=lambda *a, **k: None)
    assert r.config["threads"] == 1 and calls == [8, 8]


def test_the_command_line_takes_threads_and_refuses_them_beside_ranks(tmp_path, capsys):
    from minirattn.cli import main
    from minirattn.training import load_checkpoint
    tiny = ["--iterations", "2", "--eval-every", "2", "--n-train", "64", "--n-test", "32",
            "--batch-size", "16", "--no-progress"]
    assert main(["train", "--procs", "1", "--threads", "2", *tiny,
                 "--checkpoint-dir", str(tmp_path / "t")]) == 0
    _, meta = load_checkpoint(str(tmp_path / "t" / "ckpt-00000002.rattn"))
    assert meta["config"]["threads"] == 2 and meta["config"]["ranks"] == 1
    capsys.readouterr()
    assert main(["train", "--procs", "1", "--threads", "two", *tiny]) == 2
    assert "--threads: expected 'auto' or a number of threads >= 1, got 'two'" in \
        capsys.readouterr().err
    if D.mpi_launcher()[1] is None:                  # with the dist extra: ranks and threads
        assert main(["train", "--procs", "2", "--threads", "2", *tiny]) == 2
        assert "threads over the batch run in one process" in capsys.readouterr().err
