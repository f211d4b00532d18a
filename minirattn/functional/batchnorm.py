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

``method`` chooses how the numbers are computed; every method gives the same result:
``"textbook"`` is :func:`_forward_textbook` / :func:`_backward_textbook` below, the formulas of
the derivation one array operation a line; ``"fused"`` (one kernel per step on the GPU) and
``"in_place"`` (NumPy, few passes over memory) live in :mod:`.batchnorm_fast`;
``"compiled"`` (NumPy with numba: each pass one kernel that runs without the GIL) in
:mod:`.batchnorm_compiled`; ``"auto"`` (the default) is ``"compiled"`` on NumPy where numba is
installed (``backend.jit_available``), else ``"in_place"``, and ``"fused"`` on CuPy. The backward
takes the path its forward took.
"""
from __future__ import annotations

from typing import NamedTuple

from .. import backend
from ..checks import check_array, check_choice, check_number, check_same_dtype
from . import batchnorm_compiled as compiled
from . import batchnorm_fast as fast
from .batchnorm_fast import column, over_ranks

#: The values of ``batchnorm2d_forward(..., method=...)``.
BATCHNORM_METHODS = ("auto", "textbook", "in_place", "fused", "compiled")


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
    method: str = "textbook"   # the path the forward took, which the backward takes too
    batch_mean: object = None  # the fused path's mean (C,): the next batch's shift
    running: tuple = None      # the fused path's running update: (mean, var, momentum, of what)

    @property
    def mean(self):
        return self.total / self.count

    @property
    def var(self):
        return self.squares / self.count

    @property
    def inv_std(self):
        return 1.0 / backend.xp_of(self.x).sqrt(self.var + self.eps)


# -- the textbook pair: read these first ------------------------------------------------------
def _forward_textbook(x, gamma, beta, running_mean, running_var, training, eps, reduce, relu):
    """y = gamma xhat + beta, xhat = (x - mu) / sqrt(var + eps), with the batch's mu and var
    (training; over all ranks with ``reduce``) or the running ones (evaluation)."""
    xp = backend.xp_of(x)
    N, _, H, W = x.shape
    if training:
        total, count = x.sum(axis=(0, 2, 3)), N * H * W           # sum x, M
        if reduce is not None:                                      # ... over all ranks
            total, count = over_ranks(reduce, total, xp.full(1, count, dtype=x.dtype))
            count = count[0]
        squares = ((x - column(total / count)) ** 2).sum(axis=(0, 2, 3))
        if reduce is not None:
            squares = reduce(squares)                               # sum (x - mu)^2
    else:
        total, squares, count = running_mean.astype(x.dtype), running_var.astype(x.dtype), 1
    mu, var = total / count, squares / count                        # biased variance
    xhat = (x - column(mu)) / column(xp.sqrt(var + eps))
    y = column(gamma) * xhat + column(beta)
    if relu:
        y = xp.maximum(y, 0)
    return y, BatchNormCache(x, y, gamma, total, squares, count, eps, training, relu,
                             reduce if training else None, "textbook")


def _backward_textbook(dy, cache):
    """dx = gamma / sqrt(var + eps) (g - mean(g) - xhat mean(g xhat)), means over the batch
    (all ranks); dgamma = sum g xhat, dbeta = sum g; g = dy, or dy [y > 0] after the ReLU.
    Evaluation: mu and var are constants, dx = gamma g / sqrt(var + eps)."""
    xp = backend.xp_of(dy)
    M = cache.count
    g = dy * (cache.y > 0) if cache.relu else dy
    inv_std = 1.0 / xp.sqrt(cache.var + cache.eps)
    xhat = (cache.x - column(cache.mean)) * column(inv_std)
    dbeta = g.sum(axis=(0, 2, 3))
    dgamma = (g * xhat).sum(axis=(0, 2, 3))
    if not cache.training:
        return g * column(cache.gamma * inv_std), dgamma, dbeta
    sum_g, sum_g_xhat = over_ranks(cache.reduce, dbeta, dgamma)   # the sums in dx: all ranks
    dx = column(cache.gamma * inv_std) * (g - column(sum_g / M) - xhat * column(sum_g_xhat / M))
    return dx, dgamma, dbeta


# -- the public pair --------------------------------------------------------------------------
def _check_channels(x, **vectors):
    for name, a in vectors.items():
        check_array(f"batchnorm {name}", a, ndim=1)
        if a.shape[0] != x.shape[1]:
            raise ValueError(f"batchnorm: {name} has {a.shape[0]} entries but the input has "
                             f"{x.shape[1]} channels")


def batchnorm_method(xp, method="auto") -> str:
    """The path ``batchnorm2d_forward`` takes on array module ``xp``: ``method`` itself, or for
    "auto" "compiled" on NumPy where numba may run, "in_place" on NumPy otherwise and "fused"
    elsewhere."""
    check_choice("batchnorm method", method, BATCHNORM_METHODS)
    if method == "auto":
        if xp is not backend.numpy:
            return "fused"
        return "compiled" if backend.jit_available() else "in_place"
    if method in ("in_place", "compiled") and xp is not backend.numpy:
        raise ValueError(f"batchnorm method {method!r} works on NumPy arrays only; use 'fused' "
                         f"or 'auto' on the GPU")
    if method == "compiled" and not backend.jit_available():
        raise ValueError("batchnorm method 'compiled' needs numba (pip install 'minirattn[fast]') "
                         "and the compiled kernels allowed (MINIRATTN_JIT is not 0); "
                         "'in_place' runs without it")
    return method


def _forward_fast(method, x, gamma, beta, running_mean, running_var, training, eps, reduce,
                  relu, momentum, shift):
    if method == "compiled":
        total, squares, M = compiled.statistics(x, training, running_mean, running_var, reduce)
        y = compiled.forward(x, total, squares, M, eps, gamma, beta, relu)
        return y, BatchNormCache(x, y, gamma, total, squares, M, eps, training, relu,
                                 reduce if training else None, method)
    in_place = method == "in_place"
    mean = update = None
    if training and not in_place:
        running = None if running_mean is None or running_var is None else (running_mean,
                                                                            running_var)
        total, squares, M, mean, update = fast.fused_statistics(x, reduce, shift, running,
                                                                momentum)
        if update is not None:
            update = (*update, momentum, running_mean, running_var)
    else:
        total, squares, M, centred = fast.statistics(x, training, running_mean, running_var,
                                                     reduce, in_place)
    if in_place:
        y = fast.forward_in_place(centred, squares, M, eps, gamma, beta, relu)
    else:
        y = fast.forward_fused(x, gamma, beta, total, squares, M, eps, relu)
    return y, BatchNormCache(x, y, gamma, total, squares, M, eps, training, relu,
                             reduce if training else None, method, mean, update)


def batchnorm2d_forward(x, gamma, beta, running_mean=None, running_var=None, training=True,
                        eps=1e-5, reduce=None, relu=False, *, method="auto", momentum=0.1,
                        shift=None):
    """y = gamma (x - mu) / sqrt(var + eps) + beta, or max of that and 0 with ``relu=True``.

    x: (N, C, H, W); gamma, beta: (C,). training=True uses the batch statistics (the running
    ones may be None); False uses ``running_mean``, ``running_var`` (C,).
    reduce: None, or ``reduce(v) -> sum of v over the ranks`` for a 1-D array ``v`` (it may
    overwrite ``v``); every rank calls it the same number of times in the same order. In training
    mode mu and var are then the global batch's: one reduction of (sum x, count) and one of
    sum (x - mu)^2 (two passes, so float32 keeps its digits; the fused path given a ``shift``: one
    reduction of both sums and the count). Unused in evaluation mode.
    method: "auto" | "textbook" | "in_place" | "fused" | "compiled" (module docstring).
    momentum: the running statistics' (:func:`batchnorm2d_running_stats`), which the fused path
    computes in the forward's own kernels when the running pair is given.
    shift: None, or (C,) values near the batch's means (the previous batch's): the fused path
    then makes its statistics in one pass over x instead of two (``fast.fused_statistics``);
    the others ignore it.
    Returns (y, cache); the inputs are not modified (the cache refers to x and y: write into
    neither before the backward).
    """
    check_array("batchnorm input x", x, ndim=4)
    _check_channels(x, gamma=gamma, beta=beta)
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError("batchnorm in evaluation mode needs running_mean and running_var")
        _check_channels(x, running_mean=running_mean, running_var=running_var)
    if shift is not None:
        _check_channels(x, shift=shift)
    check_number("batchnorm momentum", momentum, 0.0, 1.0)
    check_same_dtype(x=x, gamma=gamma, beta=beta, shift=shift)
    if not eps > 0:
        raise ValueError(f"batchnorm: eps must be > 0, got {eps}")
    xp = backend.xp_of(x)
    method = batchnorm_method(xp, method)
    N, _, H, W = x.shape
    if training and reduce is None and N * H * W < 2:
        raise ValueError(f"batchnorm in training mode needs more than one value per channel, "
                         f"got input shape {tuple(x.shape)}")
    args = (x, gamma, beta, running_mean, running_var, training, eps, reduce, bool(relu))
    if method == "textbook":
        y, cache = _forward_textbook(*args)
    else:
        y, cache = _forward_fast(method, *args, momentum, shift)
    if training and reduce is not None and xp is backend.numpy and cache.count < 2:
        raise ValueError(f"synchronized batchnorm needs more than one value per channel over "
                         f"all ranks, got {int(cache.count)}")   # free to check on the host only
    return y, cache


def batchnorm2d_running_stats(cache, running_mean, running_var, momentum=0.1):
    """The running statistics after a training-mode forward: (new_mean, new_var), each
    (1 - momentum) running + momentum batch, the batch variance made unbiased (M / (M - 1)).
    In evaluation mode the running pair comes back unchanged."""
    check_number("batchnorm momentum", momentum, 0.0, 1.0)
    if not cache.training:
        return running_mean, running_var
    if cache.running is not None:                # the fused forward made them already
        new_mean, new_var, made_with, of_mean, of_var = cache.running
        if made_with == momentum and of_mean is running_mean and of_var is running_var:
            return (new_mean.astype(running_mean.dtype, copy=False),
                    new_var.astype(running_var.dtype, copy=False))
    new_mean, new_var = fast.running(running_mean, running_var, cache.total, cache.squares,
                                     cache.count, cache.count - 1, 1.0 - momentum, momentum)
    return (new_mean.astype(running_mean.dtype, copy=False),
            new_var.astype(running_var.dtype, copy=False))


def batchnorm2d_backward(dy, cache, *, plus=None):
    """Returns (dx, dgamma, dbeta), by the path the forward took (``cache.method``).

    Training: dx = gamma inv_std / M * (M g - sum(g) - xhat sum(g xhat)) with
    xhat = (x - mu) inv_std and g = dy (or dy [y > 0] after the ReLU): two reductions, which are
    also dbeta = sum g and dgamma = sum g xhat, and one elementwise expression
    (docs/math/batchnorm.md). Evaluation: dx = gamma inv_std g.
    Synchronized (the forward had a ``reduce``): the two sums in dx are over all ranks (one
    reduction of both), M is the global count; dgamma and dbeta are this rank's share, which
    the data-parallel all-reduce of the parameter gradients adds up like every other one.
    plus: None, or an array of x's shape added to dx (the gradient another branch sends to the
    same input: a residual unit's identity shortcut); on CuPy in dx's own kernel.
    """
    if plus is not None and tuple(plus.shape) != tuple(cache.x.shape):
        raise ValueError(f"batchnorm backward: plus has shape {tuple(plus.shape)}, expected "
                         f"the input's {tuple(cache.x.shape)}")
    if cache.method == "textbook":
        dx, dgamma, dbeta = _backward_textbook(dy, cache)
        return (dx if plus is None else dx + plus), dgamma, dbeta
    if cache.method == "in_place":
        return fast.backward_in_place(dy, cache, plus)
    if cache.method == "compiled":
        return compiled.backward(dy, cache, plus)
    return fast.backward_fused(dy, cache, plus)
