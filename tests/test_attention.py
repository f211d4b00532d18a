"""The mask activations f1/f2/f3 and the ARL/NAL combination (Eq. 3) with its gradient filter (Eq. 2)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy.special import expit

from minirattn import functional as F, gradcheck
from helpers import away_from_zero


@st.composite
def nchw(draw, min_hw=1):
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(min_hw, 4)), draw(st.integers(min_hw, 4)))
    return shape, draw(st.integers(0, 2**31 - 1))


@given(nchw())
def test_f1_mixed(case):
    shape, seed = case
    x = np.random.default_rng(seed).standard_normal(shape) * 3
    np.testing.assert_allclose(F.f1_mixed_forward(x)[0], expit(x), rtol=1e-13)
    gradcheck(F.f1_mixed_forward, [x], F.f1_mixed_backward)


@given(nchw())
def test_f2_channel(case):
    shape, seed = case
    x = away_from_zero(np.random.default_rng(seed), shape, low=0.3)   # channel norms away from 0
    m, _ = F.f2_channel_forward(x)
    np.testing.assert_allclose(np.sqrt((m ** 2).sum(axis=1)), 1.0, rtol=1e-10)   # unit norm at each position
    np.testing.assert_allclose(m, x / np.linalg.norm(x, axis=1, keepdims=True), rtol=1e-10)
    gradcheck(F.f2_channel_forward, [x], F.f2_channel_backward)


@given(nchw(min_hw=2))
def test_f3_spatial(case):
    shape, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * rng.uniform(0.5, 2.0, shape[:2] + (1, 1))   # non-degenerate variance
    m, _ = F.f3_spatial_forward(x)
    mu, sd = x.mean((2, 3), keepdims=True), np.sqrt(x.var((2, 3), keepdims=True) + 1e-5)
    np.testing.assert_allclose(m, expit((x - mu) / sd), rtol=1e-12)
    gradcheck(F.f3_spatial_forward, [x], F.f3_spatial_backward)


@pytest.mark.parametrize("attention", F.ATTENTION_TYPES)
def test_dispatch(attention):
    x = away_from_zero(np.random.default_rng(1), (2, 3, 4, 4))
    gradcheck(lambda x: F.mask_activation_forward(x, attention), [x], F.mask_activation_backward)


@pytest.mark.parametrize("learning", F.LEARNING_RULES)
@given(case=nchw())
def test_combination_and_its_gradients(learning, case):
    shape, seed = case
    rng = np.random.default_rng(seed)
    t, m = rng.standard_normal(shape), rng.uniform(0, 1, shape)
    h, _ = F.attention_residual_forward(t, m, learning)
    np.testing.assert_allclose(h, (1 + m) * t if learning == "arl" else m * t, rtol=1e-15)
    gradcheck(lambda t, m: F.attention_residual_forward(t, m, learning), [t, m], F.attention_residual_backward)


def test_eq2_mask_is_a_gradient_filter():
    """dL/dT = dL/dH * M (NAL), dL/dH * (1 + M) (ARL); where M = 0, NAL passes nothing and ARL passes dL/dH."""
    rng = np.random.default_rng(0)
    t, dh = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    m = rng.uniform(0, 1, t.shape)
    m[:, :, :2] = 0.0
    dt_nal, _ = F.attention_residual_backward(dh, F.attention_residual_forward(t, m, "nal")[1])
    dt_arl, _ = F.attention_residual_backward(dh, F.attention_residual_forward(t, m, "arl")[1])
    np.testing.assert_array_equal(dt_nal, dh * m)
    np.testing.assert_array_equal(dt_arl, dh * (1 + m))
    assert (dt_nal[:, :, :2] == 0).all()
    np.testing.assert_array_equal(dt_arl[:, :, :2], dh[:, :, :2])


def test_bad_input():
    z = np.zeros((1, 2, 3, 3))
    with pytest.raises(ValueError, match="unknown learning 'foo'"):
        F.attention_residual_forward(z, z, "foo")
    with pytest.raises(ValueError, match=r"trunk T has shape \(1, 2, 3, 3\) but mask M has \(1, 2, 2, 2\)"):
        F.attention_residual_forward(z, np.zeros((1, 2, 2, 2)))
    with pytest.raises(ValueError, match="unknown attention 'soft'"):
        F.mask_activation_forward(z, "soft")
    with pytest.raises(ValueError, match="4-D"):
        F.f2_channel_forward(np.zeros((2, 3)))
