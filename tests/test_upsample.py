"""bilinear upsampling, align_corners=True: definition, adjoint, corners, any ratio."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minirattn import functional as F, gradcheck
from helpers import bilinear_backward_naive, bilinear_naive, noncontiguous

sizes = st.integers(1, 9)


@given(st.integers(1, 2), st.integers(1, 3), sizes, sizes, sizes, sizes, st.integers(0, 2**31 - 1))
def test_forward_backward_adjoint(N, C, H, W, Ho, Wo, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W))
    y, c = F.bilinear_forward(noncontiguous(x), (Ho, Wo))
    np.testing.assert_allclose(y, bilinear_naive(x, Ho, Wo), rtol=1e-12, atol=1e-12)
    gradcheck(lambda x: F.bilinear_forward(x, (Ho, Wo)), [x], F.bilinear_backward)
    u = rng.standard_normal(y.shape)
    lhs, rhs = (y * u).sum(), (x * F.bilinear_backward(u, c)).sum()
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


@pytest.mark.parametrize("kron_max", [0, 10**9])      # force the separable / the Kronecker path
@given(st.integers(1, 2), st.integers(1, 3), sizes, sizes, sizes, sizes, st.integers(0, 2**31 - 1))
def test_both_paths_match_the_oracle(kron_max, N, C, H, W, Ho, Wo, seed):
    import minirattn.functional.upsample as up
    old, up.KRON_MAX_ENTRIES = up.KRON_MAX_ENTRIES, kron_max
    try:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((N, C, H, W))
        y, c = F.bilinear_forward(x, (Ho, Wo))
        assert c[0] == ("kron" if kron_max else "separable")
        np.testing.assert_allclose(y, bilinear_naive(x, Ho, Wo), rtol=1e-12, atol=1e-12)
        u = rng.standard_normal(y.shape)
        np.testing.assert_allclose(F.bilinear_backward(u, c), bilinear_backward_naive(u, H, W),
                                   rtol=1e-12, atol=1e-12)
    finally:
        up.KRON_MAX_ENTRIES = old


@pytest.mark.parametrize("n_in,n_out", [(8, 16), (7, 16), (4, 8), (2, 32), (16, 16), (5, 3)])
def test_interpolation_matrix_rows_are_convex_and_corners_align(n_in, n_out):
    A = F.interpolation_matrix(n_out, n_in, np, np.float64)
    np.testing.assert_allclose(A.sum(axis=1), 1.0, rtol=1e-14)
    assert (A >= 0).all() and ((A > 0).sum(axis=1) <= 2).all()
    assert A[0, 0] == 1.0 and A[-1, -1] == 1.0                 # align_corners=True
    np.testing.assert_allclose(A @ np.arange(n_in, dtype=float),
                               np.arange(n_out) * (n_in - 1) / max(n_out - 1, 1), atol=1e-12)


def test_identity_when_sizes_match_and_constant_preserved():
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 6))
    np.testing.assert_allclose(F.bilinear_forward(x, (5, 6))[0], x, rtol=1e-15)
    np.testing.assert_allclose(F.bilinear_forward(np.full((1, 1, 7, 7), 3.0), 16)[0], 3.0, rtol=1e-14)


def test_bad_input():
    with pytest.raises(ValueError, match=">= 1, got 0"):
        F.bilinear_forward(np.zeros((1, 1, 4, 4)), (0, 8))
    with pytest.raises(ValueError, match=">= 1, got -2"):
        F.bilinear_forward(np.zeros((1, 1, 4, 4)), -2)
    with pytest.raises(ValueError, match="4-D"):
        F.bilinear_forward(np.zeros((4, 4)), 8)
