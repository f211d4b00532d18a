"""relu and sigmoid: values, stability for |x| up to 1e4, gradients away from kinks."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy.special import expit

from minirattn import functional as F, gradcheck
from helpers import away_from_zero

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


@given(shapes, st.integers(0, 2**31 - 1))
def test_relu(shape, seed):
    x = away_from_zero(np.random.default_rng(seed), shape)   # |x| >= 0.1: no kink within eps
    x0 = x.copy()
    y, _ = F.relu_forward(x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    gradcheck(F.relu_forward, [x], lambda dy, c: F.relu_backward(dy, c))
    np.testing.assert_array_equal(x, x0)


@given(shapes, st.integers(0, 2**31 - 1))
def test_relu_inplace_writes_into_its_arguments_and_agrees(shape, seed):
    rng = np.random.default_rng(seed)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    y_ref, mask = F.relu_forward(x)
    dx_ref = F.relu_backward(dy, mask)
    x_in, dy_in = x.copy(), dy.copy()
    y, c = F.relu_forward(x_in, inplace=True)
    dx = F.relu_backward(dy_in, c, inplace=True)
    assert y is x_in and dx is dy_in                      # no new arrays: the point of inplace
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)


def test_relu_layer_inplace():
    from minirattn import nn
    rng = np.random.default_rng(0)
    x = away_from_zero(rng, (2, 3, 4, 4))
    layer, ref = nn.ReLU(inplace=True), nn.ReLU()
    assert "inplace=True" in repr(layer) and "inplace" not in repr(ref)
    y_ref = ref(x)
    x_in = x.copy()
    y = layer(x_in)
    assert y is x_in
    np.testing.assert_array_equal(y, y_ref)
    dy = rng.standard_normal(x.shape)
    dx_ref = ref.backward(dy)
    dy_in = dy.copy()
    assert layer.backward(dy_in) is dy_in
    np.testing.assert_array_equal(dy_in, dx_ref)


@given(shapes, st.integers(0, 2**31 - 1), st.floats(0.1, 30))
def test_sigmoid(shape, seed, scale):
    x = np.random.default_rng(seed).standard_normal(shape) * scale
    y, _ = F.sigmoid_forward(x)
    np.testing.assert_allclose(y, expit(x), rtol=1e-13, atol=0)   # scipy's expit: the reference
    gradcheck(F.sigmoid_forward, [x], F.sigmoid_backward)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_finite_and_accurate_at_extremes(dtype):
    x = np.array([-1e4, -800, -100, -30, 0, 30, 100, 800, 1e4], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # underflow to 0 is right
        y, c = F.sigmoid_forward(x)
        dx = F.sigmoid_backward(np.ones_like(x), c)
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    assert y.dtype == dtype
    assert y[0] == 0 and y[-1] == 1 and y[4] == 0.5
    # relative accuracy in the far tail, where 1 - sigmoid would cancel: sigmoid(-30) = e^-30 / (1 + e^-30)
    np.testing.assert_allclose(y[3], np.exp(-30.0) / (1 + np.exp(-30.0)), rtol=1e-6)
    np.testing.assert_allclose(y[2], np.exp(-100.0) if dtype == np.float64 else y[2], rtol=1e-12)


def test_bad_input():
    with pytest.raises(TypeError, match="floating-point"):
        F.relu_forward(np.arange(3))
    with pytest.raises(TypeError, match="array"):
        F.sigmoid_forward([1.0, 2.0])
