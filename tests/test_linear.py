"""linear layer y = x W^T + b."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minirattn import functional as F, gradcheck
from helpers import noncontiguous


@given(st.integers(1, 4), st.integers(1, 6), st.integers(1, 5), st.booleans(), st.integers(0, 2**31 - 1))
def test_linear(N, D_in, D_out, bias, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((N, D_in)), rng.standard_normal((D_out, D_in))
    b = rng.standard_normal(D_out) if bias else None
    y, _ = F.linear_forward(noncontiguous(x), w, b)
    np.testing.assert_allclose(y, x @ w.T + (b if bias else 0), rtol=1e-12)
    inputs = [x, w] + ([b] if bias else [])
    grads = F.linear_backward(rng.standard_normal(y.shape), F.linear_forward(x, w, b)[1])
    assert len(grads) == len(inputs)                       # one gradient per input given
    gradcheck(F.linear_forward, inputs, F.linear_backward)


def test_bad_input():
    with pytest.raises(ValueError, match="input has 3 features but the weight expects 4"):
        F.linear_forward(np.zeros((2, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="2-D"):
        F.linear_forward(np.zeros((2, 3, 1)), np.zeros((5, 3)))
    with pytest.raises(TypeError, match="floating-point"):
        F.linear_forward(np.zeros((2, 3), dtype=int), np.zeros((5, 3)))
