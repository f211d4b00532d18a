"""Batch normalisation over (N, H, W) for each channel of an NCHW batch.

Derivation: docs/math/batchnorm.md

Conventions (docs/conventions.md): the batch is normalised with the biased variance, the
running variance is updated with the unbiased one, momentum 0.1 as PyTorch
(running = (1 - momentum) running + momentum batch), eps = 1e-5.
Pure: the running statistics are not part of the differentiable op. The forward keeps the
batch's statistics in its cache and :func:`batchnorm2d_running_stats` returns the updated
running pair from them; the backward returns the three gradients only.

Synchronized (data-parallel) batch norm is the same pair with a ``reduce`` argument: a function
that sums a 1-D array over all ranks (``minirattn.distributed``; derivation:
docs/math/sync_batchnorm.md). The statistics are then those of the global batch, shards of
unequal size included; ``reduce=None`` is ordinary batch norm.

``relu=True`` applies the ReLU that follows a batch norm in the same pass (y = max(BN(x), 0)) and
takes its backward (dy [y > 0]) into the batch norm's: the BN-ReLU pair of every unit, one op.

On CuPy each step is one kernel (``backend.fuse``): forward, sum x, sum (x - mu)^2 and the
normalisation (+ ReLU); backward, sum dy, sum dy xhat and dx. Nothing per channel gets a kernel of
its own: mu = total / count and 1 / sqrt(var + eps) are recomputed inside each kernel from the
sums the cache keeps (docs/architecture.md, "One kernel per step on the GPU"). On NumPy, where
what costs is passes over memory and fresh arrays, the same formulas run in place on one centred
array (``_normalize_in_place``, ``_backward_in_place``); the tests hold both paths to 1e-10.
"""
from __future__ import annotations

from typing import NamedTuple

from .. import backend
from ..checks import check_array, check_number, check_same_dtype
from ._reduce import channel_dot, channel_sum
from .activations import relu_grad


class BatchNormCache(NamedTuple):
    """What the backward and the running-statistics update need. The per-channel numbers are
    kept as sums: mean = total / count, var = squares / count (biased); in evaluation mode
    total and squares are the running mean and variance and count is 1."""
    x: object           # the input, (N, C, H, W) (kept, not copied: write nothing into it)
    y: object           # the output (read by the backward only after a ReLU)
    gamma: object       # (C,)
    total: object       # sum x over the batch (C,) (all ranks with reduce), or the running mean
    squares: object     # sum (x - mean)^2 (C,), or the running variance
    count: object       # values per channel: N H W, over all ranks (a 0-d array) with reduce; 1
    eps: float
    training: bool
    relu: bool = False
    reduce: object = None   # the cross-rank sum of the forward, used again by the backward

    @property
    def mean(self):
        return self.total / self.count

    @property
    def var(self):
        return self.squares / self.count

    @property
    def inv_std(self):
        return _mean_inv_std(backend.xp_of(self.x), self.total, self.squares, self.count,
                             self.eps)[1]


def _check_channels(x, **vectors):
    for name, a in vectors.items():
        check_array(f"batchnorm {name}", a, ndim=1)
        if a.shape[0] != x.shape[1]:
            raise ValueError(f"batchnorm: {name} has {a.shape[0]} entries but the input has "
                             f"{x.shape[1]} channels")


def _column(v):
    """(C,) -> (1, C, 1, 1), a view that broadcasts against the NCHW batch."""
    return v.reshape(1, -1, 1, 1)


# -- the math as CuPy runs it, each function one fused kernel (NumPy: see _backward_in_place) --
def _mean_inv_std(xp, total, squares, count, eps):
    """mu and 1 / sqrt(var + eps) from the sums."""
    return total / count, 1.0 / xp.sqrt(squares / count + eps)


def _bn(xp, x, total, squares, count, eps, gamma, beta):
    mu, inv_std = _mean_inv_std(xp, total, squares, count, eps)
    return (x - mu) * (gamma * inv_std) + beta


@backend.fuse
def _normalize(xp, x, total, squares, count, eps, gamma, beta):
    """y = (x - mu) gamma / sqrt(var + eps) + beta."""
    return _bn(xp, x, total, squares, count, eps, gamma, beta)


@backend.fuse
def _normalize_relu(xp, x, total, squares, count, eps, gamma, beta):
    """y = max((x - mu) gamma / sqrt(var + eps) + beta, 0)."""
    return xp.maximum(_bn(xp, x, total, squares, count, eps, gamma, beta), 0)


def _input_grad_of(xp, g, x, total, squares, count, eps, gamma, sum_g, sum_g_xhat):
    """dx = gamma inv_std (g - sum(g) / M - xhat sum(g xhat) / M), xhat = (x - mu) inv_std."""
    mu, inv_std = _mean_inv_std(xp, total, squares, count, eps)
    return ((g - sum_g / count - (x - mu) * (inv_std * sum_g_xhat / count))
            * (gamma * inv_std))


@backend.fuse
def _input_grad(xp, dy, x, total, squares, count, eps, gamma, sum_g, sum_g_xhat):
    return _input_grad_of(xp, dy, x, total, squares, count, eps, gamma, sum_g, sum_g_xhat)


@backend.fuse
def _input_grad_relu(xp, dy, y, x, total, squares, count, eps, gamma, sum_g, sum_g_xhat):
    """As :func:`_input_grad` for g = dy [y > 0], the gradient through the ReLU."""
    return _input_grad_of(xp, dy * (y > 0), x, total, squares, count, eps, gamma, sum_g,
                          sum_g_xhat)


@backend.fuse
def _sum_centred_squares(xp, x, total, count):
    """sum (x - mu)^2 with mu = total / count: the two-pass variance's second pass (float32 keeps
    its digits, unlike sum(x^2) - M mu^2)."""
    return xp.sum((x - total / count) * (x - total / count), axis=(0, 2, 3))


@backend.fuse
def _eval_input_grad(xp, g, squares, count, eps, gamma):
    """dx = g gamma / sqrt(var + eps): in evaluation mode mu and var are constants."""
    return g * (gamma / xp.sqrt(squares / count + eps))


@backend.fuse
def _sum_g_xhat(xp, dy, x, total, squares, count, eps):
    mu, inv_std = _mean_inv_std(xp, total, squares, count, eps)
    return xp.sum(dy * ((x - mu) * inv_std), axis=(0, 2, 3))


@backend.fuse
def _sum_g_relu(xp, dy, y):
    return xp.sum(dy * (y > 0), axis=(0, 2, 3))


@backend.fuse
def _sum_g_xhat_relu(xp, dy, y, x, total, squares, count, eps):
    mu, inv_std = _mean_inv_std(xp, total, squares, count, eps)
    return xp.sum(dy * (y > 0) * ((x - mu) * inv_std), axis=(0, 2, 3))


@backend.fuse
def _running(xp, running_mean, running_var, total, squares, count, count_less_one, keep,
             momentum):
    """keep running + momentum batch (keep = 1 - momentum), the batch variance made unbiased.
    (No arithmetic between two scalars inside a fused function: cupy.fuse would make its result
    a float64 that turns the float32 arrays it meets into float64.)"""
    return (keep * running_mean + momentum * (total / count),
            keep * running_var + momentum * (squares / count_less_one))


# -- NumPy: the same formulas in place on one centred array (a pass over memory and a fresh array
# cost there what a kernel launch costs on the GPU) ------------------------------------------
def _centred_squares(x, total, count):
    """(sum (x - mean)^2 per channel, x - mean) on NumPy, where the forward normalises the centred
    array in place; (the sum, None) on CuPy, one fused reduction that keeps nothing."""
    if backend.xp_of(x) is backend.numpy:
        centred = x - _column(total / count)
        return channel_dot(centred, centred), centred
    return _sum_centred_squares(x, _column(total), count), None


def _normalize_in_place(centred, squares, count, eps, gamma, beta, relu):
    """y = (x - mu) gamma inv_std + beta (then max(y, 0)), written into ``centred``."""
    np = backend.numpy
    y = centred
    y *= _column(gamma / np.sqrt(squares / count + eps))
    y += _column(beta)
    return np.maximum(y, 0, out=y) if relu else y


def _backward_in_place(dy, cache):
    """:func:`batchnorm2d_backward` on NumPy: g = dy [y > 0], x - mu made once, dx written into
    it: the passes of the formula and two new arrays (g, x - mu)."""
    np = backend.numpy
    x, C, M = cache.x, cache.x.shape[1], cache.count
    mu, inv_std = _mean_inv_std(np, cache.total, cache.squares, M, cache.eps)
    g = relu_grad(dy, cache.y) if cache.relu else dy
    dx = x - _column(mu)
    dbeta, dgamma = channel_sum(g), channel_dot(g, dx) * inv_std
    if not cache.training:
        return np.multiply(g, _column(cache.gamma * inv_std), out=dx), dgamma, dbeta
    sum_g, sum_g_xhat = dbeta, dgamma
    if cache.reduce is not None:
        total = cache.reduce(np.concatenate((dbeta, dgamma)))
        sum_g, sum_g_xhat = total[:C], total[C:]
    dx *= _column(-inv_std * sum_g_xhat / M)          # - xhat sum(g xhat) / M, over inv_std
    dx += g
    dx -= _column(sum_g / M)
    dx *= _column(cache.gamma * inv_std)
    return dx, dgamma, dbeta


def batchnorm2d_forward(x, gamma, beta, running_mean=None, running_var=None, training=True,
                        eps=1e-5, reduce=None, relu=False):
    """y = gamma (x - mu) / sqrt(var + eps) + beta, or max of that and 0 with ``relu=True``.

    x: (N, C, H, W); gamma, beta: (C,). training=True uses the batch statistics (the running
    ones may be None); False uses ``running_mean``, ``running_var`` (C,).
    reduce: None, or ``reduce(v) -> sum of v over the ranks`` for a 1-D array ``v`` (it may
    overwrite ``v``); every rank calls it the same number of times in the same order. In training
    mode mu and var are then the global batch's: one reduction of (sum x, count) and one of
    sum (x - mu)^2 (two passes, so float32 keeps its digits). Unused in evaluation mode.
    Returns (y, cache); the inputs are not modified (the cache refers to x and y: write into
    neither before the backward).
    """
    check_array("batchnorm input x", x, ndim=4)
    _check_channels(x, gamma=gamma, beta=beta)
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError("batchnorm in evaluation mode needs running_mean and running_var")
        _check_channels(x, running_mean=running_mean, running_var=running_var)
    check_same_dtype(x=x, gamma=gamma, beta=beta)
    if not eps > 0:
        raise ValueError(f"batchnorm: eps must be > 0, got {eps}")
    xp = backend.xp_of(x)
    N, C, H, W = x.shape
    M = N * H * W
    if training and reduce is not None:
        total = reduce(xp.concatenate((channel_sum(x), xp.full(1, M, dtype=x.dtype))))
        M = total[C]      # values per channel over all ranks, kept on the device (no sync)
        if xp is backend.numpy and M < 2:              # free to check on the host only
            raise ValueError(f"synchronized batchnorm needs more than one value per channel over "
                             f"all ranks, got {int(M)}")
        total = total[:C]
        squares, centred = _centred_squares(x, total, M)
        squares = reduce(squares)
    elif training:
        if M < 2:
            raise ValueError(f"batchnorm in training mode needs more than one value per channel, "
                             f"got input shape {tuple(x.shape)}")
        total = channel_sum(x)
        squares, centred = _centred_squares(x, total, M)
    else:
        total, squares, M = running_mean.astype(x.dtype), running_var.astype(x.dtype), 1
        centred = x - _column(total) if xp is backend.numpy else None
    if xp is backend.numpy:
        y = _normalize_in_place(centred, squares, M, eps, gamma, beta, relu)
    else:
        y = (_normalize_relu if relu else _normalize)(
            x, _column(total), _column(squares), M, eps, _column(gamma), _column(beta))
    return y, BatchNormCache(x, y, gamma, total, squares, M, eps, training, bool(relu),
                             reduce if training else None)


def batchnorm2d_running_stats(cache, running_mean, running_var, momentum=0.1):
    """The running statistics after a training-mode forward: (new_mean, new_var), each
    (1 - momentum) running + momentum batch, the batch variance made unbiased (M / (M - 1)).
    In evaluation mode the running pair comes back unchanged."""
    check_number("batchnorm momentum", momentum, 0.0, 1.0)
    if not cache.training:
        return running_mean, running_var
    new_mean, new_var = _running(running_mean, running_var, cache.total, cache.squares,
                                 cache.count, cache.count - 1, 1.0 - momentum, momentum)
    return (new_mean.astype(running_mean.dtype, copy=False),
            new_var.astype(running_var.dtype, copy=False))


def _gradient_sums(dy, cache):
    """CuPy: (sum g, sum g xhat) over this rank's batch, g = dy or, after a ReLU, dy [y > 0];
    and g itself, or None where the kernels mask dy themselves (training with a ReLU)."""
    x, y, (total, squares, M, eps) = cache.x, cache.y, cache[3:7]
    stats = (_column(total), _column(squares), M, eps)
    if not cache.training:
        g = relu_grad(dy, y) if cache.relu else dy
        return channel_sum(g), _sum_g_xhat(g, x, *stats), g
    if cache.relu:
        return _sum_g_relu(dy, y), _sum_g_xhat_relu(dy, y, x, *stats), None
    return channel_sum(dy), _sum_g_xhat(dy, x, *stats), dy


def batchnorm2d_backward(dy, cache):
    """Returns (dx, dgamma, dbeta).

    Training: dx = gamma inv_std / M * (M g - sum(g) - xhat sum(g xhat)) with
    xhat = (x - mu) inv_std and g = dy (or dy [y > 0] after the ReLU): two reductions, which are
    also dbeta = sum g and dgamma = sum g xhat, and one elementwise expression
    (docs/math/batchnorm.md). Evaluation: dx = gamma inv_std g.
    Synchronized (the forward had a ``reduce``): the two sums in dx are over all ranks (one
    reduction of both), M is the global count; dgamma and dbeta are this rank's share, which
    the data-parallel all-reduce of the parameter gradients adds up like every other one.
    """
    if backend.xp_of(dy) is backend.numpy:
        return _backward_in_place(dy, cache)
    x, C = cache.x, cache.x.shape[1]
    dbeta, dgamma, g = _gradient_sums(dy, cache)
    stats = (_column(cache.total), _column(cache.squares), cache.count, cache.eps)
    gamma = _column(cache.gamma)
    if not cache.training:
        return _eval_input_grad(g, *stats[1:], gamma), dgamma, dbeta
    sum_g, sum_g_xhat = dbeta, dgamma
    if cache.reduce is not None:
        total = cache.reduce(backend.xp_of(dy).concatenate((dbeta, dgamma)))
        sum_g, sum_g_xhat = total[:C], total[C:]
    sums = (_column(sum_g), _column(sum_g_xhat))
    if g is not None:
        dx = _input_grad(g, x, *stats, gamma, *sums)
    else:
        dx = _input_grad_relu(dy, cache.y, x, *stats, gamma, *sums)
    return dx, dgamma, dbeta
