"""Bilinear upsampling to an explicit target size, align_corners=True.

Derivation: docs/math/upsample.md

Bilinear interpolation is separable and linear: per channel Y = A_h X A_w^T with
small interpolation matrices (two non-zeros per row). The forward is two matrix
products and the backward is their transpose, dX = A_h^T dY A_w: no scatter-add,
identical on NumPy and CuPy. align_corners=True maps output i to input
i (n_in - 1) / (n_out - 1), so the corner pixels line up (Caffe ``Interp``,
PyTorch ``UpsamplingBilinear2d``).
"""
from __future__ import annotations

from .. import backend
from ._checks import check_array, pair

_cache: dict = {}


def interpolation_matrix(n_out: int, n_in: int, xp, dtype):
    """(n_out, n_in) matrix A with (A v)[i] = v at position i (n_in - 1) / (n_out - 1)."""
    key = (xp.__name__, n_out, n_in, str(dtype))
    if key in _cache:
        return _cache[key]
    np = backend.numpy
    A = np.zeros((n_out, n_in), dtype=np.float64)
    if n_in == 1 or n_out == 1:
        A[:, 0] = 1.0
    else:
        src = np.arange(n_out) * ((n_in - 1) / (n_out - 1))
        i0 = np.minimum(np.floor(src).astype(int), n_in - 2)
        frac = src - i0
        rows = np.arange(n_out)
        A[rows, i0] = 1.0 - frac
        A[rows, i0 + 1] += frac
    A = xp.asarray(A.astype(dtype))
    _cache[key] = A
    return A


def bilinear_forward(x, size):
    """x: (N, C, H, W) -> y: (N, C, Ho, Wo) with (Ho, Wo) = size."""
    check_array("bilinear input x", x, ndim=4)
    Ho, Wo = pair("size", size, 1)
    xp = backend.xp_of(x)
    A_h = interpolation_matrix(Ho, x.shape[2], xp, x.dtype)
    A_w = interpolation_matrix(Wo, x.shape[3], xp, x.dtype)
    y = xp.matmul(A_h, xp.matmul(x, A_w.T))
    return y, (A_h, A_w)


def bilinear_backward(dy, cache):
    """dx = A_h^T dy A_w."""
    A_h, A_w = cache
    xp = backend.xp_of(dy)
    return xp.matmul(A_h.T, xp.matmul(dy, A_w))
