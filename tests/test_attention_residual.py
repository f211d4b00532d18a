"""The ARL/NAL combination (Eq. 3) and the mask as a gradient filter (Eq. 2)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minirattn import functional as F, gradcheck


@st.composite
def nchw(draw, min_hw=1):
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(min_hw, 4)), draw(st.integers(min_hw, 4)))
    return shape, draw(st.integers(0, 2**31 - 1))


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
