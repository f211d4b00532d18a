"""max pool (ties to the first maximum, padding never wins) and global average pool."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minirattn import functional as F, gradcheck
from minirattn.functional import pool
from helpers import maxpool_backward_naive, maxpool_naive, shuffled_linspace, noncontiguous


@st.composite
def pool_case(draw):
    k = draw(st.integers(1, 4))
    s = draw(st.integers(1, 3))
    p = draw(st.integers(0, k // 2))
    H, W = draw(st.integers(max(1, k - 2 * p), 8)), draw(st.integers(max(1, k - 2 * p), 8))
    N, C = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    return (N, C, H, W), k, s, p, draw(st.integers(0, 2**31 - 1))


@given(pool_case())
def test_forward_matches_naive(case):
    shape, k, s, p, seed = case
    x = np.random.default_rng(seed).standard_normal(shape)
    y, _ = F.maxpool2d_forward(x, k, s, p)
    np.testing.assert_array_equal(y, maxpool_naive(x, k, s, p))


#: The two ways of the backward: NumPy's (bincount) and CuPy's (the reversed passes), each checked
#: here on NumPy arrays.
BACKWARDS = [pool._backward_by_bincount, pool._backward_by_offsets]


@pytest.mark.parametrize("backward", BACKWARDS, ids=lambda f: f.__name__)
@given(case=pool_case())
def test_backward_matches_finite_differences(backward, case):
    shape, k, s, p, seed = case
    x = shuffled_linspace(np.random.default_rng(seed), shape)   # distinct values: no ties
    gradcheck(lambda x: F.maxpool2d_forward(x, k, s, p), [noncontiguous(x)], backward)


@given(case=pool_case())
def test_the_textbook_pair_is_the_oracle_and_passes_finite_differences(case):
    """method="textbook" (stacked windows, argmax) against the loop oracle with ties everywhere,
    equal to the separable path the networks run, and proven by finite differences."""
    shape, k, s, p, seed = case
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, shape).astype(np.float64)
    y, c = F.maxpool2d_forward(x, k, s, p, method="textbook")
    dy = rng.integers(1, 1000, y.shape).astype(np.float64)
    np.testing.assert_array_equal(y, maxpool_naive(x, k, s, p))
    np.testing.assert_array_equal(F.maxpool2d_backward(dy, c), maxpool_backward_naive(x, dy, k, s, p))
    y_auto, c_auto = F.maxpool2d_forward(x, k, s, p)
    np.testing.assert_array_equal(y_auto, y)
    np.testing.assert_array_equal(F.maxpool2d_backward(dy, c_auto), F.maxpool2d_backward(dy, c))
    x = shuffled_linspace(rng, shape)                               # distinct values: no ties
    gradcheck(lambda x: F.maxpool2d_forward(x, k, s, p, method="textbook"), [noncontiguous(x)],
              F.maxpool2d_backward)


def test_the_networks_pool_3_2_1_halves_the_size():
    y, _ = F.maxpool2d_forward(np.zeros((1, 1, 32, 32)), 3, 2, 1)
    assert y.shape == (1, 1, 16, 16)
    y, _ = F.maxpool2d_forward(np.zeros((1, 1, 7, 7)), 3, 2, 1)
    assert y.shape == (1, 1, 4, 4)


def test_ties_send_the_gradient_to_the_first_maximum():
    x = np.zeros((1, 1, 2, 2))                        # every value ties
    y, c = F.maxpool2d_forward(x, 2, 2, 0)
    dx = F.maxpool2d_backward(np.array([[[[3.0]]]]), c)
    np.testing.assert_array_equal(dx, [[[[3.0, 0.0], [0.0, 0.0]]]])
    x = np.array([[[[1.0, 5.0], [5.0, 5.0]]]])         # first maximum in row-major order
    y, c = F.maxpool2d_forward(x, 2, 2, 0)
    np.testing.assert_array_equal(F.maxpool2d_backward(np.ones((1, 1, 1, 1)), c), [[[[0, 1.0], [0, 0]]]])


@pytest.mark.parametrize("backward", BACKWARDS, ids=lambda f: f.__name__)
@given(case=pool_case())
def test_ties_everywhere_match_the_first_maximum_oracle(backward, case):
    """Inputs from {0, 1, 2}: most windows hold ties. The separable forward (rows, then columns)
    must route every dy exactly where the window-by-window row-major argmax does, both ways."""
    shape, k, s, p, seed = case
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, shape).astype(np.float64)
    y, c = F.maxpool2d_forward(x, k, s, p)
    dy = rng.integers(1, 1000, y.shape).astype(np.float64)     # integer sums: exact in any order
    np.testing.assert_array_equal(backward(dy, c), maxpool_backward_naive(x, dy, k, s, p))


@given(pool_case())
def test_the_two_backwards_agree_and_the_offsets_one_is_bit_reproducible(case):
    shape, k, s, p, seed = case
    rng = np.random.default_rng(seed)
    y, c = F.maxpool2d_forward(rng.standard_normal(shape).astype(np.float32), k, s, p)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    a, b = pool._backward_by_bincount(dy, c), pool._backward_by_offsets(dy, c)
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(b, pool._backward_by_offsets(dy, c))


def test_padding_never_wins_even_for_very_negative_inputs():
    x = np.full((1, 1, 3, 3), -1e30)
    y, c = F.maxpool2d_forward(x, 3, 2, 1)
    assert (y == -1e30).all()
    dx = F.maxpool2d_backward(np.ones_like(y), c)
    assert dx.sum() == y.size


@given(pool_case())
def test_gradient_mass_is_conserved(case):
    """Every dy lands on exactly one input: sum(dx) = sum(dy)."""
    shape, k, s, p, seed = case
    rng = np.random.default_rng(seed)
    y, c = F.maxpool2d_forward(rng.standard_normal(shape), k, s, p)
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(F.maxpool2d_backward(dy, c).sum(), dy.sum(), rtol=1e-10, atol=1e-12)


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_global_average_pool(N, C, H, W, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W))
    y, c = F.global_avgpool_forward(x)
    np.testing.assert_allclose(y, x.mean(axis=(2, 3)), rtol=1e-12)
    gradcheck(F.global_avgpool_forward, [x], F.global_avgpool_backward)
    u = rng.standard_normal(y.shape)                    # adjoint identity
    lhs, rhs = (y * u).sum(), (x * F.global_avgpool_backward(u, c)).sum()
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


def test_bad_input():
    with pytest.raises(ValueError, match="4-D"):
        F.maxpool2d_forward(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="larger than the padded input"):
        F.maxpool2d_forward(np.zeros((1, 1, 2, 2)), 5, 1, 1)
    with pytest.raises(ValueError, match="at most half the kernel"):
        F.maxpool2d_forward(np.zeros((1, 1, 8, 8)), 3, 2, 2)
    with pytest.raises(ValueError, match=">= 1"):
        F.maxpool2d_forward(np.zeros((1, 1, 8, 8)), 3, 0, 1)
    with pytest.raises(ValueError, match="maxpool method"):
        F.maxpool2d_forward(np.zeros((1, 1, 8, 8)), 3, 2, 1, method="naive")
    with pytest.raises(TypeError, match="floating-point"):
        F.global_avgpool_forward(np.zeros((1, 1, 2, 2), dtype=np.int32))
