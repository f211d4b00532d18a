"""The mask activations f1/f2/f3 (Sec. 3.3, Table 1): values, gradients, the one registry."""
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


@pytest.mark.parametrize("activation", sorted(F.MASK_ACTIVATIONS))
def test_dispatch(activation):
    x = away_from_zero(np.random.default_rng(1), (2, 3, 4, 4))
    gradcheck(lambda x: F.mask_activation_forward(x, activation), [x], F.mask_activation_backward)
    m, (name, _) = F.mask_activation_forward(x, activation)
    np.testing.assert_array_equal(m, F.MASK_ACTIVATIONS[activation][0](x)[0])   # the registry's pair
    assert name == activation


def test_a_new_activation_is_one_registry_entry(monkeypatch):
    """Adding an activation is one entry: dispatch, the module and the networks take it."""
    from minirattn import nn
    from minirattn.models import build
    tanh = (lambda x: (np.tanh(x), np.tanh(x)), lambda dm, t: dm * (1 - t * t))
    monkeypatch.setitem(F.MASK_ACTIVATIONS, "tanh", tanh)
    x = away_from_zero(np.random.default_rng(2), (2, 3, 4, 4))
    gradcheck(lambda x: F.mask_activation_forward(x, "tanh"), [x], F.mask_activation_backward)
    assert repr(nn.MaskActivation("tanh")).endswith("('tanh')")
    net = build("attention56", mask_activation="tanh", widths=(8, 8, 16), stem_width=4,
                final_width=16, final_units=1)
    assert net.config["mask_activation"] == "tanh"




def test_bad_input():
    z = np.zeros((1, 2, 3, 3))
    with pytest.raises(ValueError, match="unknown mask_activation 'soft'"):
        F.mask_activation_forward(z, "soft")
    with pytest.raises(ValueError, match="4-D"):
        F.f2_channel_forward(np.zeros((2, 3)))
