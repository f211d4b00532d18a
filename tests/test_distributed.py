"""Data parallelism in one process: synchronized batch norm across simulated ranks (threads),
proven by finite differences and against batch norm on the concatenated batch; shards,
collectives, set-up checks. The tests that launch ``mpiexec`` are in test_mpi.py."""
import threading

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minirattn import distributed as D, functional as F, gradcheck
from minirattn.models import build
from minirattn.training.optim import SGD

from helpers import TINY_NET


def tiny(seed):
    return build("attention56", num_classes=3, seed=seed, input_size=16, **TINY_NET)


@given(st.integers(0, 50), st.integers(1, 8))
def test_shards_tile_the_batch_in_rank_order_and_differ_by_at_most_one(n, size):
    bounds = [D.shard(n, r, size) for r in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@st.composite
def sync_case(draw):
    """A global batch split over 2-3 ranks into shards of any sizes >= 1 (uneven included)."""
    size = draw(st.integers(2, 3))
    shards = [draw(st.integers(1, 3)) for _ in range(size)]
    C, H, W = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return shards, C, H, W, draw(st.integers(0, 2**31 - 1))


def make(case):
    shards, C, H, W, seed = case
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((sum(shards), C, H, W)) * rng.uniform(0.5, 2, (1, C, 1, 1))
         + rng.uniform(-1, 1, (1, C, 1, 1)))
    parts = np.split(x, np.cumsum(shards)[:-1])
    return x, parts, rng.uniform(0.5, 1.5, C), rng.standard_normal(C), rng


def run_ranks(parts, gamma, beta, dy_parts=None, momentum=0.1):
    """Forward (and backward) of the synchronized batch norm on len(parts) simulated ranks."""
    C = gamma.shape[0]

    def rank(comm, x, dy):
        y, cache = F.batchnorm2d_forward(x, gamma, beta, reduce=comm.reduce)
        stats = F.batchnorm2d_running_stats(cache, np.zeros(C), np.ones(C), momentum)
        grads = F.batchnorm2d_backward(dy, cache) if dy is not None else None
        return y, stats, grads

    dy_parts = dy_parts or [None] * len(parts)
    return D.ThreadRanks(len(parts)).run(rank, list(zip(parts, dy_parts)))


@given(sync_case())
def test_synchronized_batchnorm_equals_batchnorm_on_the_concatenated_batch(case):
    x, parts, g, b, rng = make(case)
    dy = rng.standard_normal(x.shape)
    dy_parts = np.split(dy, np.cumsum([len(p) for p in parts])[:-1])
    y, cache = F.batchnorm2d_forward(x, g, b)
    mean, var = F.batchnorm2d_running_stats(cache, np.zeros_like(g), np.ones_like(g))
    dx, dg, db = F.batchnorm2d_backward(dy, cache)
    out = run_ranks(parts, g, b, dy_parts)
    np.testing.assert_allclose(np.concatenate([o[0] for o in out]), y, rtol=1e-12, atol=1e-12)
    for o in out:                                   # every rank: the global running statistics
        np.testing.assert_allclose(o[1][0], mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(o[1][1], var, rtol=1e-12)
    np.testing.assert_allclose(np.concatenate([o[2][0] for o in out]), dx, rtol=1e-10,
                               atol=1e-12)
    # the parameter gradients are each rank's share; their sum (the gradient all-reduce) is dg
    np.testing.assert_allclose(sum(o[2][1] for o in out), dg, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sum(o[2][2] for o in out), db, rtol=1e-10, atol=1e-12)


@given(sync_case())
def test_synchronized_batchnorm_backward_matches_finite_differences_across_ranks(case):
    """The whole multi-rank computation as one function of every rank's input and the shared
    gamma, beta: its gradient by finite differences against the ranks' backward."""
    x, parts, g, b, _ = make(case)
    n = len(parts)
    cut = np.cumsum([len(p) for p in parts])[:-1]

    def forward(*args):
        out = run_ranks(list(args[:n]), args[n], args[n + 1])
        return np.concatenate([o[0] for o in out]), (args, cut)

    def backward(dy, cache):
        args, cut = cache
        out = run_ranks(list(args[:n]), args[n], args[n + 1], np.split(dy, cut))
        return ([o[2][0] for o in out] + [sum(o[2][1] for o in out), sum(o[2][2] for o in out)])

    gradcheck(forward, parts + [g, b], backward, tol=1e-6)


def test_one_process_reduction_is_ordinary_batchnorm_bit_for_bit():
    x, _, g, b, rng = make(([4], 3, 2, 2, 5))
    comm = D.Communicator()
    assert comm.reduce is None
    y0, c0 = F.batchnorm2d_forward(x, g, b)
    y1, c1 = F.batchnorm2d_forward(x, g, b, reduce=lambda v: v)    # a do-nothing reduction
    dy = rng.standard_normal(x.shape)
    np.testing.assert_array_equal(y0, y1)
    for a, a1 in zip(F.batchnorm2d_backward(dy, c0), F.batchnorm2d_backward(dy, c1)):
        np.testing.assert_array_equal(a, a1)


def test_synchronized_batchnorm_needs_two_values_per_channel_over_all_ranks():
    x = np.ones((1, 2, 1, 1))
    with pytest.raises(ValueError, match="more than one value per channel over all ranks, got 1"):
        F.batchnorm2d_forward(x, np.ones(2), np.zeros(2), reduce=lambda v: v)


def test_evaluation_mode_never_calls_the_reduction():
    calls = []
    x = np.random.default_rng(0).standard_normal((2, 3, 2, 2))
    y, c = F.batchnorm2d_forward(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3),
                                 training=False, reduce=lambda v: calls.append(v) or v)
    F.batchnorm2d_backward(y, c)
    assert calls == [] and c.reduce is None


def test_launcher_environment_gives_the_number_of_ranks():
    assert D.launched_ranks({}) == 1
    assert D.launched_ranks({"PMI_SIZE": "4"}) == 4
    assert D.launched_ranks({"OMPI_COMM_WORLD_SIZE": "2"}) == 2
    assert D.launched_ranks({"PMI_SIZE": "junk"}) == 1
    assert isinstance(D.communicator(False), D.Communicator)
    assert D.communicator("auto").size == 1             # not launched by mpiexec here


def test_collective_gives_rank_zeros_result_and_raises_its_error_on_every_rank():
    def body(comm, value):
        return comm.collective(lambda: value * 10)
    assert D.ThreadRanks(3).run(body, [(1,), (2,), (3,)]) == [10, 10, 10]

    seen = []

    def failing(comm):
        try:
            comm.collective(lambda: (_ for _ in ()).throw(ValueError("refused on rank 0")))
        except ValueError as exc:
            seen.append((comm.rank, str(exc), exc.all_ranks))
            raise
    with pytest.raises(ValueError, match="refused on rank 0"):
        D.ThreadRanks(2).run(failing, [(), ()])
    assert sorted(seen) == [(0, "refused on rank 0", True), (1, "refused on rank 0", True)]


def test_a_rank_that_raises_releases_the_others():
    def body(comm):
        if comm.rank == 1:
            raise KeyError("rank 1 broke")
        comm.allreduce(np.ones(2))                      # would wait for rank 1 forever
    with pytest.raises(KeyError, match="rank 1 broke"):
        D.ThreadRanks(2, timeout=30).run(body, [(), ()])


def test_setup_check_refuses_uneven_global_batches_and_mixed_backends():
    def uneven(comm):
        D.check_setup(comm, batch_size=7, backend="numpy", dtype="float32")
    with pytest.raises(D.DistributedError, match="batch_size 7 does not split evenly over 2 "
                                                 "ranks: choose a multiple of 2 \\(e.g. 6 or 8\\)"):
        D.ThreadRanks(2).run(uneven, [(), ()])

    def mixed(comm, backend):
        D.check_setup(comm, batch_size=8, backend=backend, dtype="float32")
    with pytest.raises(D.DistributedError, match="do not agree on backend: rank 0: numpy, "
                                                 "rank 1: cupy"):
        D.ThreadRanks(2).run(mixed, [("numpy",), ("cupy",)])
    D.ThreadRanks(2).run(mixed, [("numpy",), ("numpy",)])    # agreeing ranks pass


def test_weight_checksums_catch_ranks_that_drifted_apart():
    def body(comm, nudge):
        model = tiny(0)
        D.broadcast_model(model, comm)
        D.check_same_weights(model, comm, 0)            # identical after the broadcast
        model.parameters()[0][0] += nudge
        D.check_same_weights(model, comm, 5)
    with pytest.raises(D.DistributedError, match=r"weights differ at iteration 5 \(ranks grouped "
                                                 r"by checksum: \[\[0\], \[1\]\]\)"):
        D.ThreadRanks(2).run(body, [(0.0,), (1e-7,)])


def test_broadcast_gives_every_rank_rank_zeros_weights():
    def body(comm, seed):
        model = tiny(seed)
        D.broadcast_model(model, comm)
        return D.weights_checksum(model)
    sums = D.ThreadRanks(3).run(body, [(0,), (1,), (2,)])
    assert len(set(sums)) == 1
    assert sums[0] == D.weights_checksum(tiny(0))


def test_gradient_allreduce_sums_the_flat_buffer_once_per_dtype():
    calls = []

    class Counting(D.Communicator):
        size = 2

        def allreduce(self, a):
            calls.append(a.size)
            a *= 2
            return a
    model = tiny(0)
    SGD(model)                                          # lays the flat buffers out
    for _, _, g in model.named_parameters():
        g[...] = 1
    D.allreduce_gradients(model, Counting())
    assert calls == [model.num_parameters()]
    assert all((g == 2).all() for _, _, g in model.named_parameters())


def test_thread_ranks_do_not_leak_threads():
    before = threading.active_count()
    D.ThreadRanks(3).run(lambda comm: comm.allreduce(np.ones(1)), [(), (), ()])
    assert threading.active_count() == before
