"""The per-channel reductions batch norm and conv share, against plain NumPy sums."""
import numpy as np
from hypothesis import given, strategies as st

from minirattn.functional._reduce import channel_dot, channel_sum

from helpers import noncontiguous

shapes = st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 6), st.integers(1, 6))


@given(shape=shapes, seed=st.integers(0, 2**16), dtype=st.sampled_from(["float64", "float32"]),
       strided=st.booleans())
def test_channel_sum_and_dot_match_numpy(shape, seed, dtype, strided):
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    if strided:
        a, b = noncontiguous(a), noncontiguous(b)
    tol = 1e-12 if dtype == "float64" else 1e-5
    s, d = channel_sum(a), channel_dot(a, b)
    assert s.shape == d.shape == (shape[1],) and s.dtype == d.dtype == np.dtype(dtype)
    np.testing.assert_allclose(s, a.astype(np.float64).sum(axis=(0, 2, 3)), rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(d, (a.astype(np.float64) * b).sum(axis=(0, 2, 3)), rtol=tol, atol=tol * 10)
