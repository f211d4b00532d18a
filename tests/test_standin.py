"""The CuPy stand-in itself: it refuses what CuPy refuses, counts what a GPU would do, and catches
the mistakes that break code on a real GPU. Then the training step under its strict mode."""
import numpy as np
import pytest

import cupy_standin
from cupy_standin import COUNT
from minirattn import backend, functional as F
from helpers import TINY_NET



@pytest.fixture
def cp():
    with cupy_standin.installed() as cupy:
        yield cupy


def test_mixing_host_and_device_arrays_raises(cp):
    d, h = cp.asarray(np.ones(3)), np.ones(3)
    for mistake in (lambda: d + h, lambda: h + d, lambda: d * h, lambda: cp.matmul(d, h),
                    lambda: cp.maximum(d, h), lambda: d[np.array([0, 1])], lambda: d.__setitem__(
                        slice(None), h), lambda: cp.stack([d, h])):
        with pytest.raises(TypeError, match="host|Unsupported"):
            mistake()
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(d)
    d[...] = 2.0                                            # Python scalars are fine
    d += np.float32(1)                                      # and NumPy scalars
    np.testing.assert_array_equal(d.get(), [3.0, 3.0, 3.0])


def test_only_cupy_names_exist(cp):
    d = cp.zeros(3)
    with pytest.raises(AttributeError, match="has no attribute 'not_in_cupy'"):
        cp.not_in_cupy
    with pytest.raises(AttributeError, match="has no attribute 'tostring'"):
        d.tostring                                          # NumPy's, not CuPy's
    with pytest.raises(NotImplementedError, match="cupy.fft exists in CuPy but not in the stand-in"):
        cp.fft
    assert {"matmul", "zeros", "fuse", "bincount"} <= cupy_standin.MODULE_NAMES
    assert backend.name_of(d) == "cupy" and backend.xp_of(d) is cp


def test_syncs_transfers_and_launches_are_counted(cp):
    COUNT.reset()
    a = cp.asarray(np.arange(6.0).reshape(2, 3))            # one transfer
    b = a + 1                                               # one kernel
    c = cp.matmul(a, b.T)                                   # one kernel, b.T is F-contiguous: no copy
    e = cp.matmul(a[:, ::2], b[:, ::2].T)                   # two operands copied first
    assert (COUNT.h2d, COUNT.launches, len(COUNT.syncs)) == (1, 1 + 1 + 3, 0)
    total = float(c.sum()) + float(e.sum())                 # two reductions, two syncs
    assert COUNT.launches == 7 and len(COUNT.syncs) == 2 and COUNT.d2h == 2
    assert COUNT.syncs[0][0] == "float" and "test_standin.py" in COUNT.syncs[0][1]
    assert total == pytest.approx((np.arange(6.0).reshape(2, 3) @ (np.arange(6.0).reshape(2, 3) + 1).T).sum()
                                  + (np.arange(6.0).reshape(2, 3)[:, ::2] @ (np.arange(6.0).reshape(2, 3)
                                                                              + 1)[:, ::2].T).sum())
    with cupy_standin.strict():
        with pytest.raises(RuntimeError, match="synchronisation \\(int\\) is not allowed"):
            int(a.sum())
    COUNT.reset()
    cp.bincount(cp.asarray(np.array([0, 1, 1])))
    assert [what for what, _ in COUNT.syncs][0].startswith("bincount")


def _step(cp, net, opt, x, y):
    from minirattn.training import train_step
    return train_step(net, opt, x, y, 0.1)


def _tiny(cp):
    from minirattn.models import build
    from minirattn.training import SGD
    net = build("attention56", num_classes=10, seed=0, **TINY_NET).to("cupy")
    rng = np.random.default_rng(0)
    x = cp.asarray(rng.standard_normal((4, 3, 32, 32)).astype(np.float32))
    y = cp.asarray(rng.integers(0, 10, 4))
    return net, SGD(net, lr=0.1), x, y


def test_a_training_step_makes_no_device_sync(cp):
    net, opt, x, y = _tiny(cp)
    with cupy_standin.strict():
        loss, correct = _step(cp, net, opt, x, y)          # raises on any sync
    assert np.isfinite(float(loss)) and 0 <= int(correct) <= 4


def test_the_stand_in_catches_an_extra_read_back_per_step(cp):
    """A step that reads the loss back (float(loss)) every iteration fails under the strict mode."""
    net, opt, x, y = _tiny(cp)

    def chatty_step(cp, net, opt, x, y):
        loss, correct = _step(cp, net, opt, x, y)
        print(f"loss {float(loss):.3f}")                    # the mistake: a sync per step
        return loss, correct
    with cupy_standin.strict(), pytest.raises(RuntimeError, match="synchronisation \\(float\\)"):
        chatty_step(cp, net, opt, x, y)


def test_the_stand_in_catches_a_host_array_in_a_device_op(cp, monkeypatch):
    """A mask activation that calls NumPy directly (instead of the input's array module) still
    works on NumPy, and fails on the stand-in, as it would on a GPU."""
    import minirattn.functional.mask as mask
    monkeypatch.setattr(mask, "sigmoid", lambda x: 1.0 / (1.0 + np.exp(-x)))   # the mistake
    net, _, x, _ = _tiny(cp)
    with pytest.raises(TypeError):
        net(x)
    net.to("numpy")
    assert net(x.get()).shape == (4, 10)


def test_training_and_resume_run_on_the_stand_in_bit_exact(cp, tmp_path):
    """train_cifar on backend "cupy" (the stand-in): one read-back per log step, and a run resumed
    at iteration 2 ends with exactly the weights of an uninterrupted one."""
    import os
    import shutil
    from minirattn.training import train_cifar
    kw = dict(arch="attention56", dataset="shapes", n_train=32, n_test=16, batch_size=8, iterations=4,
              eval_every=2, log_every=2, backend="cupy", progress=False, model_kwargs=TINY_NET,
              echo=lambda *a: None)
    COUNT.reset()
    full = train_cifar(checkpoint_dir=str(tmp_path / "a"), **kw)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    os.remove(tmp_path / "b" / "ckpt-00000004.rattn")
    resumed = train_cifar(checkpoint_dir=str(tmp_path / "b"), resume=True, **kw)
    for k, v in full.model.state_dict().items():
        np.testing.assert_array_equal(backend.to_numpy(v), backend.to_numpy(resumed.model.state_dict()[k]))


def test_gradcheck_moves_a_callers_dy_to_the_device(cp):
    from minirattn import gradcheck
    x = cp.asarray(np.random.default_rng(0).standard_normal((2, 3)) + 0.5)
    dy = np.ones((2, 3))                                    # a host array, as a caller would pass
    assert gradcheck(F.sigmoid_forward, [x], F.sigmoid_backward, dy=dy).ok


def test_synchronize_waits_for_the_whole_device(cp):
    assert backend.get("cupy") is cp
    COUNT.reset()
    backend.synchronize()
    assert [what for what, _ in COUNT.syncs] == ["device synchronize"]


def test_interpolation_matrices_are_cached_per_device(cp):
    from minirattn.functional.upsample import interpolation_matrix
    a0 = interpolation_matrix(8, 4, cp, "float32")
    assert interpolation_matrix(8, 4, cp, "float32") is a0
    with cp.cuda.Device(1):
        a1 = interpolation_matrix(8, 4, cp, "float32")
    assert a1 is not a0 and interpolation_matrix(8, 4, backend.numpy, "float32") is not a0


#: The launch budget of one Attention-92 training step, as the stand-in estimates it (2,884 on
#: 2026-12-07 at any batch size; real CuPy's count, which tests/test_cupy_sim.py holds to the
#: same budget, was 2,890). At CuPy's 8-15 us of host time per launch, 3,000 launches bound a
#: step at 24-45 ms whatever the GPU.
LAUNCH_BUDGET_ATTENTION92 = 3_000


def test_launches_per_step_stay_within_the_budget():
    """The full-width networks (launches do not depend on the widths' sizes, but the chunking and
    the units do), batch 2: the same count as batch 64."""
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    import launches
    n, syncs, h2d, d2h, _ = launches.count_step("attention92", 2)
    assert syncs == 0 and d2h == 0 and h2d == 2
    assert 2_000 < n <= LAUNCH_BUDGET_ATTENTION92, n
    n56 = launches.count_step("attention56", 2)[0]
    assert 1_000 < n56 < n, n56


def test_fuse_counts_one_kernel_and_refuses_what_cupy_fuse_cannot_fuse(cp):
    """backend.fuse on the stand-in: one launch for the whole function, in-place updates of its
    arguments allowed; a matrix product, a reshape or an operation after the reduction raise."""
    a = cp.asarray(np.arange(6.0).reshape(2, 3))
    acc = cp.zeros((2, 3))
    COUNT.reset()
    chain = backend.fuse(lambda xp, x, y: xp.sqrt(x * x + 1.0) - y)
    out = chain(a, 2.0)
    assert COUNT.launches == 1
    np.testing.assert_allclose(out.get(), np.sqrt(np.arange(6.0).reshape(2, 3) ** 2 + 1) - 2)

    def add_into(xp, acc, g):
        acc += g
    backend.fuse(add_into)(acc, a)
    assert COUNT.launches == 2 and float(acc.sum()) == 15.0

    def total(xp, x):
        return xp.sum(x * x, axis=0)
    np.testing.assert_allclose(backend.fuse(total)(a).get(), [9.0, 17.0, 29.0])
    for bad, what in ((lambda xp, x: xp.matmul(x, x.T), "matmul"),
                      (lambda xp, x: x.reshape(3, 2) + 1, "reshape"),
                      (lambda xp, x: xp.sum(x, axis=0) * 2.0, "after the reduction")):
        with pytest.raises(cupy_standin.FusionError, match=what):
            backend.fuse(bad)(a)
    with pytest.raises(TypeError, match="device arrays and scalars"):
        chain(a, np.ones(3))                    # a host array


def test_fused_scalars_are_weak_but_their_arithmetic_is_float16_and_int8_as_in_cupy_fuse(cp):
    """A Python scalar argument keeps float32 arrays float32; an operation between two scalars
    inside the fused function runs in float16 (floats) or int8 (integers, wrapping), as CuPy
    14.2's fusion types it: 1 - 0.1 loses digits, 65536 - 1 wraps to -1."""
    x = cp.ones(3, dtype=np.float32)
    exact = backend.fuse(lambda xp, x, a: x * a)(x, 0.1)
    assert exact.dtype == np.float32 and float(exact[0]) == np.float32(0.1)
    rounded = backend.fuse(lambda xp, x, a: x * (1.0 - a))(x, 0.1)
    assert rounded.dtype == np.float32 and float(rounded[0]) == float(np.float16(0.9)) != 0.9
    wrapped = backend.fuse(lambda xp, x, m: x * (m - 1))(x, 65536)
    assert float(wrapped[0]) == -1.0


def test_a_float32_step_keeps_every_array_float32(cp):
    net, opt, x, y = _tiny(cp)
    _step(cp, net, opt, x, y)
    assert {str(v.dtype) for v in net.state_dict().values()} == {"float32"}
    assert {str(g.dtype) for _, _, g in net.named_parameters()} == {"float32"}
