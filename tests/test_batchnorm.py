"""batch norm 2d: statistics conventions, running averages, both modes' gradients, every path
equal to the textbook pair, errors."""
import contextlib
import os

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from minirattn import backend, distributed as D, functional as F, gradcheck
from minirattn.functional import batchnorm_compiled
from minirattn.functional.batchnorm import batchnorm_method


def _method_param(m):
    """The compiled path needs numba (the fast extra, which the README's test command
    installs); without it its cases skip, saying so, unless MINIRATTN_REQUIRE_JIT=1 (CI)."""
    if m != "compiled" or backend.jit_available():
        return m
    if os.environ.get("MINIRATTN_REQUIRE_JIT") == "1":
        raise RuntimeError("MINIRATTN_REQUIRE_JIT=1 but numba is missing: pip install -e '.[fast]'")
    return pytest.param(m, marks=pytest.mark.skip(reason="needs numba: pip install -e '.[fast]'"))


FAST_METHODS = [_method_param(m) for m in F.BATCHNORM_METHODS if m != "textbook"]


@st.composite
def bn_case(draw):
    N, C = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    H, W = draw(st.integers(1, 4)), draw(st.integers(2, 4))
    momentum = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    return N, C, H, W, momentum, draw(st.integers(0, 2**31 - 1))


def make(case):
    N, C, H, W, momentum, seed = case
    rng = np.random.default_rng(seed)
    # non-degenerate variance: a per-channel scale in [0.5, 2] and offset
    x = rng.standard_normal((N, C, H, W)) * rng.uniform(0.5, 2, (1, C, 1, 1)) + rng.uniform(-1, 1, (1, C, 1, 1))
    gamma, beta = rng.uniform(0.5, 1.5, C), rng.standard_normal(C)
    rm, rv = rng.standard_normal(C), rng.uniform(0.5, 2, C)
    return x, gamma, beta, rm, rv, momentum


@given(bn_case())
def test_training_forward_conventions(case):
    x, g, b, rm, rv, mom = make(case)
    args = [a.copy() for a in (x, g, b, rm, rv)]
    y, cache = F.batchnorm2d_forward(x, g, b, rm, rv, training=True)
    nm, nv = F.batchnorm2d_running_stats(cache, rm, rv, momentum=mom)
    mu, var = x.mean((0, 2, 3)), x.var((0, 2, 3))                  # biased to normalise
    M = x.shape[0] * x.shape[2] * x.shape[3]
    ref = (x - mu[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5) * g[:, None, None] + b[:, None, None]
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(nm, (1 - mom) * rm + mom * mu, rtol=1e-12)
    np.testing.assert_allclose(nv, (1 - mom) * rv + mom * var * M / (M - 1), rtol=1e-12)  # unbiased
    for a, a0 in zip((x, g, b, rm, rv), args):
        np.testing.assert_array_equal(a, a0)                         # pure: nothing mutated


@given(bn_case())
def test_eval_forward_uses_running_stats(case):
    x, g, b, rm, rv, _ = make(case)
    y, cache = F.batchnorm2d_forward(x, g, b, rm, rv, training=False)
    nm, nv = F.batchnorm2d_running_stats(cache, rm, rv)
    ref = (x - rm[:, None, None]) / np.sqrt(rv[:, None, None] + 1e-5) * g[:, None, None] + b[:, None, None]
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)
    assert nm is rm and nv is rv


@pytest.mark.parametrize("method", ["textbook", "auto"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("training", [True, False])
@given(case=bn_case())
def test_backward_matches_finite_differences(training, relu, method, case):
    x, g, b, rm, rv, _ = make(case)
    fwd = lambda x, g, b: F.batchnorm2d_forward(x, g, b, rm, rv, training=training, relu=relu,
                                                method=method)
    # the step of 1e-5 must be small against each channel's spread: two values per channel can
    # be drawn 1e-3 apart, where the normalisation's curvature makes any difference quotient off
    assume(training is False or x.std(axis=(0, 2, 3)).min() > 0.05)
    if relu:    # keep the finite differences off the ReLU's kink: no output within 1e-3 of 0
        assume(np.abs(F.batchnorm2d_forward(x, g, b, rm, rv, training=training)[0]).min() > 1e-3)
    gradcheck(fwd, [x, g, b], F.batchnorm2d_backward, tol=1e-6)


@given(bn_case(), st.booleans())
def test_relu_option_is_relu_of_batchnorm(case, training):
    """relu=True gives max(BN(x), 0) and the backward of that pair, in one op."""
    x, g, b, rm, rv, _ = make(case)
    dy = np.random.default_rng(case[-1]).standard_normal(x.shape)
    y, c = F.batchnorm2d_forward(x, g, b, rm, rv, training=training)
    z, rc = F.relu_forward(y)
    y_relu, c_relu = F.batchnorm2d_forward(x, g, b, rm, rv, training=training, relu=True)
    np.testing.assert_array_equal(y_relu, z)
    for a, a_relu in zip(F.batchnorm2d_backward(F.relu_backward(dy, rc), c),
                         F.batchnorm2d_backward(dy, c_relu)):
        np.testing.assert_allclose(a_relu, a, rtol=1e-12, atol=1e-12)


def _equal(fast, textbook, what):
    for name, a, t in zip(("y/dx", "dgamma", "dbeta", "mean", "var"), fast, textbook):
        np.testing.assert_allclose(a, t, rtol=1e-12, atol=1e-12, err_msg=f"{what}: {name}")


def _shift(x, kind, seed):
    """None, or per-channel values near the batch means ("near": 0.1 std away) or far from them
    ("far": 10 std): what fused one-pass statistics are taken about."""
    if kind is None:
        return None
    std = x.std(axis=(0, 2, 3)) + 1e-3
    away = {"near": 0.1, "far": 10.0}[kind] * np.random.default_rng(seed).choice([-1, 1], std.size)
    return x.mean(axis=(0, 2, 3)) + away * std


@pytest.mark.parametrize("method", FAST_METHODS)
@given(case=bn_case(), training=st.booleans(), relu=st.booleans(),
       shift=st.sampled_from([None, "near", "far"]))
def test_every_path_equals_the_textbook_pair(method, case, training, relu, shift):
    """Forward, cache statistics, running statistics and backward of each fast path against the
    textbook pair, float64, in both modes, with and without the fused ReLU, and with the fused
    path's one-pass statistics about a shift near or far from the mean."""
    x, g, b, rm, rv, mom = make(case)
    dy = np.random.default_rng(case[-1] + 1).standard_normal(x.shape)
    shift = _shift(x, shift, case[-1])

    def run(m):
        y, c = F.batchnorm2d_forward(x, g, b, rm, rv, training=training, relu=relu, method=m,
                                     momentum=mom, shift=shift)
        assert c.method == batchnorm_method(np, m)
        return (y, *F.batchnorm2d_running_stats(c, rm, rv, mom)), F.batchnorm2d_backward(dy, c)

    (y, *stats), grads = run(method)
    (y_t, *stats_t), grads_t = run("textbook")
    _equal([y, *stats], [y_t, *stats_t], f"{method} forward")
    _equal(grads, grads_t, f"{method} backward")


@pytest.mark.parametrize("method", FAST_METHODS)
@given(shards=st.lists(st.integers(1, 3), min_size=2, max_size=3), C=st.integers(1, 3),
       relu=st.booleans(), seed=st.integers(0, 2**31 - 1),
       shift=st.sampled_from([None, "near", "far"]), running=st.booleans())
def test_every_path_equals_the_textbook_pair_synchronized(method, shards, C, relu, seed, shift,
                                                          running):
    """The synchronized batch norm over simulated ranks (shards of unequal size included): each
    rank's output, running statistics and gradients by every path equal the textbook pair's,
    also with the fused path's one-pass statistics (one reduction over the ranks) and with the
    running update made in the forward."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((sum(shards), C, 2, 3)) + rng.uniform(-1, 1, (1, C, 1, 1))
    dy = rng.standard_normal(x.shape)
    g, b = rng.uniform(0.5, 1.5, C), rng.standard_normal(C)
    cuts = np.cumsum(shards)[:-1]
    shift = _shift(x, shift, seed)                  # the same on every rank
    rm, rv = (np.zeros(C), np.ones(C))

    def rank(comm, xr, dyr, m):
        y, c = F.batchnorm2d_forward(xr, g, b, *((rm, rv) if running else ()),
                                     reduce=comm.reduce, relu=relu, method=m, shift=shift)
        return (y, *F.batchnorm2d_running_stats(c, rm, rv)), F.batchnorm2d_backward(dyr, c)

    def ranks(m):
        work = [(xr, dyr, m) for xr, dyr in zip(np.split(x, cuts), np.split(dy, cuts))]
        return D.ThreadRanks(len(shards)).run(rank, work)

    for r, ((out, grads), (out_t, grads_t)) in enumerate(zip(ranks(method), ranks("textbook"))):
        _equal(out, out_t, f"{method} rank {r} forward")
        _equal(grads, grads_t, f"{method} rank {r} backward")


def test_auto_is_compiled_or_in_place_on_numpy_and_those_are_refused_elsewhere():
    assert batchnorm_method(np, "auto") == ("compiled" if backend.jit_available() else "in_place")
    assert batchnorm_method(object(), "auto") == "fused"
    for m in ("in_place", "compiled"):
        with pytest.raises(ValueError, match=f"'{m}' works on NumPy arrays only"):
            batchnorm_method(object(), m)
    before = backend.use_jit(False)                 # as MINIRATTN_JIT=0, or numba missing
    try:
        assert batchnorm_method(np, "auto") == "in_place"
        with pytest.raises(ValueError, match=r"'compiled' needs numba \(pip install"):
            batchnorm_method(np, "compiled")
    finally:
        backend.use_jit(before)
    with pytest.raises(ValueError, match="method"):
        F.batchnorm2d_forward(np.ones((2, 3, 2, 2)), np.ones(3), np.zeros(3), method="fast")


@contextlib.contextmanager
def _plain_kernels():
    """The compiled path with its kernels run as the plain Python they are written in."""
    names = ("_centred_squares", "_normalize", "_gradient_sums", "_input_grad")
    kept = {n: getattr(batchnorm_compiled, n) for n in names}
    available = backend.jit_available
    backend.jit_available = lambda: True            # (the method is allowed without numba)
    try:
        for n, kernel in kept.items():
            setattr(batchnorm_compiled, n, kernel.plain)
        yield
    finally:
        for n, kernel in kept.items():
            setattr(batchnorm_compiled, n, kernel)
        backend.jit_available = available


@given(case=bn_case(), training=st.booleans(), relu=st.booleans(), plus=st.booleans())
def test_the_compiled_kernels_loops_equal_the_textbook_pair_as_plain_python(case, training, relu,
                                                                             plus):
    """The loops the compiled path is made of, run as Python (no numba needed), in float64:
    forward, running statistics and backward (with the shortcut's ``plus``) equal the textbook
    pair's to 1e-12 in both modes, with and without the ReLU."""
    x, g, b, rm, rv, mom = make(case)
    rng = np.random.default_rng(case[-1] + 1)
    dy, other = rng.standard_normal(x.shape), (rng.standard_normal(x.shape) if plus else None)

    def run(m):
        y, c = F.batchnorm2d_forward(x, g, b, rm, rv, training=training, relu=relu, method=m,
                                     momentum=mom)
        assert c.method == m
        return ((y, *F.batchnorm2d_running_stats(c, rm, rv, mom)),
                F.batchnorm2d_backward(dy, c, plus=other))

    with _plain_kernels():
        (y, *stats), grads = run("compiled")
    (y_t, *stats_t), grads_t = run("textbook")
    _equal([y, *stats], [y_t, *stats_t], "plain kernels forward")
    _equal(grads, grads_t, "plain kernels backward")


def test_the_textbook_pair_fits_on_one_screen():
    """What a student reads first: the textbook forward and backward, short enough to read at
    once (docstrings included)."""
    import inspect
    from minirattn.functional import batchnorm
    for fn in (batchnorm._forward_textbook, batchnorm._backward_textbook):
        assert len(inspect.getsource(fn).splitlines()) <= 30, fn.__name__


def test_all_ones_upstream_gives_zero_input_gradient_so_we_never_test_with_it():
    """Why random upstream gradients: with dy = 1 the exact dx is 0 in training mode."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 2, 2))
    y, c = F.batchnorm2d_forward(x, np.ones(3), np.zeros(3))
    dx = F.batchnorm2d_backward(np.ones_like(y), c)[0]
    assert np.abs(dx).max() < 1e-12


def test_float32_stays_float32():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    c3 = np.ones(3, np.float32)
    y, c = F.batchnorm2d_forward(x, c3, 0 * c3)
    rm, rv = F.batchnorm2d_running_stats(c, 0 * c3, c3)
    assert y.dtype == rm.dtype == rv.dtype == np.float32
    assert all(g.dtype == np.float32 for g in F.batchnorm2d_backward(y, c))


def test_bad_input_errors():
    c3 = np.ones(3)
    with pytest.raises(ValueError, match="4-D"):
        F.batchnorm2d_forward(np.zeros((2, 3)), c3, c3, c3, c3)
    with pytest.raises(ValueError, match="gamma has 3 entries but the input has 4 channels"):
        F.batchnorm2d_forward(np.zeros((2, 4, 2, 2)), c3, c3, c3, c3)
    with pytest.raises(ValueError, match="more than one value per channel"):
        F.batchnorm2d_forward(np.zeros((1, 3, 1, 1)), c3, c3, c3, c3)
    with pytest.raises(TypeError, match="floating-point"):
        F.batchnorm2d_forward(np.zeros((2, 3, 2, 2), dtype=int), c3, c3, c3, c3)
    with pytest.raises(ValueError, match="momentum"):
        F.batchnorm2d_running_stats(F.batchnorm2d_forward(np.ones((2, 3, 2, 2)), c3, c3)[1], c3, c3,
                                    momentum=1.5)
    with pytest.raises(ValueError, match="evaluation mode needs running_mean"):
        F.batchnorm2d_forward(np.ones((2, 3, 2, 2)), c3, c3, training=False)


@pytest.mark.gpu
def test_the_module_takes_float32_statistics_about_the_previous_batch_mean():
    """On the GPU path nn.BatchNorm2d hands each training forward the previous batch's mean as
    the shift of one-pass statistics: with a mean 1000 times the spread (where sum x^2 - M mu^2
    would lose every digit in float32) the variance stays within 1e-5 of float64's two passes."""
    from minirattn import backend, nn
    rng = np.random.default_rng(0)
    batches = [(1000 + rng.standard_normal((8, 3, 6, 6))).astype(np.float32) for _ in range(3)]
    bn = nn.BatchNorm2d(3).to("cupy")
    shifts = []
    for x in batches:
        shifts.append(getattr(bn, "_cache_shift", None))
        bn(backend.to_device(x, "cupy"))
        c = bn._cache
        var = backend.to_numpy(c.squares) / c.count
        want = x.astype(np.float64).var(axis=(0, 2, 3))
        np.testing.assert_allclose(var, want, rtol=1e-5)
    assert shifts[0] is None and all(s is not None for s in shifts[1:])
    np.testing.assert_allclose(backend.to_numpy(shifts[2]),
                               batches[1].astype(np.float64).mean(axis=(0, 2, 3)), rtol=1e-6)


@pytest.mark.gpu
def test_the_shift_is_run_state_that_checkpoints_keep_and_moves_drop():
    """The previous batch's mean is run state: run_state() names it, load_run_state() puts it
    back on the model's device (a resumed run then goes on bit for bit: test_standin.py), a
    move drops it, and state_dict (PyTorch's names) never holds it."""
    from minirattn import backend, nn
    x = backend.to_device(np.random.default_rng(0).standard_normal((4, 3, 5, 5)), "cupy")
    bn = nn.BatchNorm2d(3, dtype="float64").to("cupy")
    assert bn.run_state() == {}
    bn(x)
    state = bn.run_state()
    assert list(state) == ["shift"] and "shift" not in bn.state_dict()
    other = nn.BatchNorm2d(3, dtype="float64").to("cupy")
    other.load_run_state({k: backend.to_numpy(v) for k, v in state.items()})
    np.testing.assert_array_equal(backend.to_numpy(other.run_state()["shift"]),
                                  backend.to_numpy(state["shift"]))
    assert backend.name_of(other.run_state()["shift"]) == "cupy"
    assert bn.to("numpy").run_state() == {}
