"""Batch norm's compiled path (``method="compiled"``: NumPy, with numba installed): the textbook
formulas as loops over every value, each pass over memory one kernel (:func:`backend.jit`).

Derivation: docs/math/batchnorm.md

NumPy makes one pass over memory per operation, and a thread gives up and takes back the GIL at
each: the in-place path's backward makes about ten, its forward six. Here the forward makes
three (sum x, a matrix product; sum (x - mu)^2; y) and the backward two (the two sums; dx), each
kernel running without the GIL, so that threads over the batch run them at once. Every sum is
accumulated in float64, each (n, c) row first, and given back in the data's type.

The kernels read (N, C, P) views of NCHW arrays (P = H W); per-channel factors are (C,) arrays
in the data's type. The tests hold this path to the textbook pair at 1e-12 in float64, and run
the kernels' plain Python too (``.plain``), so a machine without numba checks the same loops.
"""
from __future__ import annotations

from .. import backend
from .batchnorm_fast import mean_inv_std, over_ranks, total_and_count


# -- the kernels: one pass each ----------------------------------------------------------------
@backend.jit(sums=True)
def _centred_squares(x, mu, out):
    """out[c] = sum over n, p of (x[n, c, p] - mu[c])^2 (out: float64 (C,), zeros)."""
    N, C, P = x.shape
    for n in range(N):
        for c in range(C):
            m, acc = mu[c], 0.0
            for p in range(P):
                d = x[n, c, p] - m
                acc += d * d
            out[c] += acc


@backend.jit
def _normalize(x, mu, scale, beta, relu, y):
    """y = (x - mu) scale + beta per channel (scale = gamma / sqrt(var + eps)), or max(that, 0)."""
    N, C, P = x.shape
    for n in range(N):
        for c in range(C):
            m, s, b = mu[c], scale[c], beta[c]
            for p in range(P):
                v = (x[n, c, p] - m) * s + b
                y[n, c, p] = v if not relu or v > 0 else 0


@backend.jit(sums=True)
def _gradient_sums(dy, y, x, mu, relu, sum_g, sum_g_centred):
    """sum g and sum g (x - mu) per channel (float64 (C,), zeros), g = dy or, after the ReLU,
    dy [y > 0] (``y`` is read only then)."""
    N, C, P = x.shape
    for n in range(N):
        for c in range(C):
            m, a, b = mu[c], 0.0, 0.0
            for p in range(P):
                g = dy[n, c, p] if not relu or y[n, c, p] > 0 else 0
                a += g
                b += g * (x[n, c, p] - m)
            sum_g[c] += a
            sum_g_centred[c] += b


@backend.jit
def _input_grad(dy, y, x, mu, k, a, b, relu, plus, has_plus, dx):
    """dx = k g + a (x - mu) + b (+ plus) per channel, g as in :func:`_gradient_sums`
    (``plus`` is read only where ``has_plus``)."""
    N, C, P = x.shape
    for n in range(N):
        for c in range(C):
            m, kc, ac, bc = mu[c], k[c], a[c], b[c]
            for p in range(P):
                g = dy[n, c, p] if not relu or y[n, c, p] > 0 else 0
                v = kc * g + ac * (x[n, c, p] - m) + bc
                dx[n, c, p] = v + plus[n, c, p] if has_plus else v


# -- the path ------------------------------------------------------------------------------------
def _rows(a):
    """(N, C, H, W) -> the (N, C, H W) view the kernels read (a contiguous copy if need be)."""
    N, C, H, W = a.shape
    return backend.numpy.ascontiguousarray(a).reshape(N, C, H * W)


def statistics(x, training, running_mean, running_var, reduce):
    """(total, squares, count) as the cache keeps them: training, sum x, sum (x - mean)^2 and
    N H W, each over all ranks with ``reduce`` (two reductions, as the in-place path);
    evaluation, the running mean and variance and a count of 1."""
    if not training:
        return running_mean.astype(x.dtype), running_var.astype(x.dtype), 1
    total, M = total_and_count(x, reduce)
    squares = backend.numpy.zeros(x.shape[1])
    _centred_squares(_rows(x), (total / M).astype(x.dtype, copy=False), squares)
    squares = squares.astype(x.dtype)
    return total, (reduce(squares) if reduce is not None else squares), M


def forward(x, total, squares, count, eps, gamma, beta, relu):
    """y = (x - mu) gamma / sqrt(var + eps) + beta (then max(y, 0)), one kernel."""
    np = backend.numpy
    rows = _rows(x)
    y = np.empty(x.shape, dtype=x.dtype)
    scale = gamma / np.sqrt(squares / count + eps)      # as the in-place path: the same bits
    _normalize(rows, total / count, scale, beta.astype(x.dtype, copy=False), bool(relu),
               y.reshape(rows.shape))
    return y


def backward(dy, cache, plus=None):
    """(dx, dgamma, dbeta): the sums in one kernel, dx (with ``plus``) in another. With
    k = gamma inv_std, the textbook's dx = k (g - sum g / M - xhat sum(g xhat) / M) is
    k g + a (x - mu) + b, a = -k inv_std sum(g xhat) / M and b = -k sum(g) / M."""
    np = backend.numpy
    x, M = cache.x, cache.count
    mu, inv_std = mean_inv_std(np, cache.total, cache.squares, M, cache.eps)
    rows_x, rows_dy = _rows(x), _rows(dy)
    rows_y = _rows(cache.y) if cache.relu else rows_dy
    C = x.shape[1]
    sum_g, sum_g_centred = np.zeros(C), np.zeros(C)
    _gradient_sums(rows_dy, rows_y, rows_x, mu, cache.relu, sum_g, sum_g_centred)
    dbeta = sum_g.astype(x.dtype)
    dgamma = (sum_g_centred * inv_std).astype(x.dtype)
    k = cache.gamma * inv_std
    if cache.training:
        sum_g, sum_g_xhat = over_ranks(cache.reduce, dbeta, dgamma)
        a, b = -k * inv_std * sum_g_xhat / M, -k * sum_g / M
    else:                                          # mu and var are constants: dx = k g
        a = b = np.zeros(C, dtype=x.dtype)
    dx = np.empty(x.shape, dtype=x.dtype)
    has_plus = plus is not None
    _input_grad(rows_dy, rows_y, rows_x, mu, k.astype(x.dtype, copy=False),
                a.astype(x.dtype, copy=False), b.astype(x.dtype, copy=False), cache.relu,
                _rows(plus) if has_plus else rows_dy, has_plus, dx.reshape(rows_x.shape))
    return dx, dgamma, dbeta
