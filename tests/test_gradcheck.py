"""The gradient checker itself: it must catch wrong backwards and say where."""
import numpy as np
import pytest

from minirattn import GradcheckError, functional as F, gradcheck, nn


def test_catches_a_wrong_backward_and_names_the_tensor():
    x = np.random.default_rng(0).standard_normal((3, 4))
    wrong = lambda dy, c: (2.1 * dy * c,)                     # d(x^2)/dx is 2x, not 2.1x
    with pytest.raises(GradcheckError, match=r"FAILED.*inputs\[0\]"):
        gradcheck(lambda x: (x * x, x), [x], wrong)


def test_catches_batchnorm_without_its_variance_term():
    """The classic pitfall: a batch-norm backward missing its variance term."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 2, 3, 3))
    c2 = np.ones(2)

    def incomplete(dy, cache):
        x, gamma, inv_std = cache.x, cache.gamma, cache.inv_std
        M = x.size // x.shape[1]
        dx = (dy - dy.sum((0, 2, 3), keepdims=True) / M) * (gamma * inv_std)[:, None, None]
        return dx, None, None
    fwd = lambda x: F.batchnorm2d_forward(x, c2, 0 * c2)
    with pytest.raises(GradcheckError):
        gradcheck(fwd, [x], incomplete)
    res = gradcheck(fwd, [x], F.batchnorm2d_backward)     # dgamma, dbeta: of arrays fwd fixes
    assert res.ok and res.worst_error < 1e-6


def test_report_has_rows_and_location():
    res = gradcheck(lambda x: (np.sin(x), x), [np.linspace(0, 1, 6).reshape(2, 3)],
                    lambda dy, x: (dy * np.cos(x),))
    assert res.ok
    assert {r[1] for r in res.rows} >= {"direction 0", "elementwise"}
    assert "passed" in str(res)


def test_refuses_float32_and_missing_backward():
    with pytest.raises(TypeError, match="float64"):
        gradcheck(nn.ReLU(), [np.ones((2, 2), np.float32)])
    with pytest.raises(TypeError, match="backward"):
        gradcheck(lambda x: x, [np.ones(2)])


def test_does_not_mutate_inputs_or_parameters():
    m = nn.Conv2d(2, 2, 3, padding=1, rng=0, dtype="float64")
    w0 = m.params["weight"].copy()
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 3))
    x0 = x.copy()
    gradcheck(m, [x])
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(m.params["weight"], w0)


def test_no_op_mutates_its_inputs_or_its_upstream_gradient():
    """Every op of `minirattn check`: forward and backward leave x, parameters and dy untouched."""
    from minirattn.selfcheck import _cases
    rng = np.random.default_rng(0)
    for name, (fwd, inputs, bwd) in _cases(rng).items():
        before = [a.copy() for a in inputs]
        y, cache = fwd(*inputs)
        dy = rng.standard_normal(np.shape(y))
        dy0 = dy.copy()
        bwd(dy, cache)
        for a, b in zip(inputs, before):
            np.testing.assert_array_equal(a, b, err_msg=name)
        np.testing.assert_array_equal(dy, dy0, err_msg=name)


def test_selfcheck_passes():
    from minirattn.selfcheck import _cases, run_selfcheck
    lines = []
    assert run_selfcheck(echo=lines.append)
    assert len(lines) == len(_cases(np.random.default_rng(0))) + 1
    assert lines[-1] == "all gradients agree with finite differences"


def test_selfcheck_reaches_every_op(monkeypatch):
    """`minirattn check` runs every forward of minirattn.functional (and the loss): a new op that
    it does not check fails here."""
    from minirattn import functional
    from minirattn.selfcheck import run_selfcheck
    ops = [n for n in functional.__all__ if n.endswith("_forward") and n != "mask_activation_forward"]
    ops.append("softmax_cross_entropy")
    called = set()
    for name in ops:
        def spy(*a, _f=getattr(functional, name), _n=name, **k):
            called.add(_n)
            return _f(*a, **k)
        monkeypatch.setattr(functional, name, spy)
    assert run_selfcheck(echo=lambda *a: None)
    assert called == set(ops), f"not checked by `minirattn check`: {sorted(set(ops) - called)}"


def test_integer_inputs_take_no_gradient_position():
    """The op contract: gradients go to the floating-point inputs only, in order; an integer input
    in between (labels, indices) gets none."""
    rng = np.random.default_rng(0)
    x, idx, w = rng.standard_normal(4), np.array([2, 0, 1, 3]), rng.standard_normal(4)

    def fwd(x, idx, w):
        return x[idx] * w, (x, idx, w)

    def bwd(dy, cache):
        x, idx, w = cache
        dx = np.zeros_like(x)
        dx[idx] = dy * w
        return dx, dy * x[idx]                      # dx, dw: nothing for idx
    assert gradcheck(fwd, [x, idx, w], bwd).ok
    with pytest.raises(GradcheckError, match="returned 1 gradient.*2 floating-point inputs"):
        gradcheck(fwd, [x, idx, w], lambda dy, c: bwd(dy, c)[0])
