"""softmax cross-entropy: value, stability, gradient."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy.special import logsumexp

from minirattn import functional as F, gradcheck


@given(st.integers(1, 6), st.integers(2, 10), st.floats(0.1, 8), st.integers(0, 2**31 - 1))
def test_value_and_gradient(N, K, scale, seed):
    # scale <= 8: beyond, the loss is a difference of nearly equal logits and finite
    # differences lose digits to that cancellation (stability is tested below)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((N, K)) * scale
    y = rng.integers(0, K, N)
    loss, dz = F.softmax_cross_entropy(z, y)
    ref = np.mean(logsumexp(z, axis=1) - z[np.arange(N), y])
    np.testing.assert_allclose(loss, ref, rtol=1e-12, atol=1e-12)
    f = lambda z: F.softmax_cross_entropy(z, y)
    gradcheck(f, [z], lambda g, dz: (g * dz,), tol=1e-6)


def test_stable_for_huge_logits():
    z = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4, 1e4]], dtype=np.float32)
    loss, dz = F.softmax_cross_entropy(z, np.array([0, 1]))
    assert np.isfinite(loss) and np.isfinite(dz).all()
    np.testing.assert_allclose(loss, 1e4, rtol=1e-6)      # (0 + 2e4) / 2


def test_bad_input():
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"values in \[0, 3\), got range \[0, 3\]"):
        F.softmax_cross_entropy(z, np.array([0, 3]))
    with pytest.raises(ValueError, match="expected 2 labels"):
        F.softmax_cross_entropy(z, np.array([0]))
    with pytest.raises(TypeError, match="integer"):
        F.softmax_cross_entropy(z, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="NaN"):
        F.softmax_cross_entropy(np.array([[np.nan, 0, 0], [0, 0, 0]]), np.array([0, 1]))
