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
"""
from __future__ import annotations

from typing import NamedTuple

from .. import backend
from ..checks import check_array, check_number, check_same_dtype
from ._reduce import channel_dot, channel_sum


class BatchNormCache(NamedTuple):
    """What the backward and the running-statistics update need."""
    xc: object          # x - mu, (N, C, H, W)
    gamma: object       # (C,)
    inv_std: object     # 1 / sqrt(var + eps), (C,)
    training: bool
    mean: object        # the batch mean (C,), or the running mean in evaluation
    var: object         # the batch's biased variance (C,), or the running variance
    count: object       # values per channel: N H W, or over all ranks (a 0-d array) with reduce
    reduce: object = None   # the cross-rank sum of the forward, used again by the backward


def _check_channels(x, **vectors):
    for name, a in vectors.items():
        check_array(f"batchnorm {name}", a, ndim=1)
        if a.shape[0] != x.shape[1]:
            raise ValueError(f"batchnorm: {name} has {a.shape[0]} entries but the input has "
                             f"{x.shape[1]} channels")


def batchnorm2d_forward(x, gamma, beta, running_mean=None, running_var=None, training=True,
                        eps=1e-5, reduce=None):
    """y = gamma (x - mu) / sqrt(var + eps) + beta.

    x: (N, C, H, W); gamma, beta: (C,). training=True uses the batch statistics (the running
    ones may be None); False uses ``running_mean``, ``running_var`` (C,).
    reduce: None, or ``reduce(v) -> sum of v over the ranks`` for a 1-D array ``v`` (it may
    overwrite ``v``); every rank calls it the same number of times in the same order. In training
    mode mu and var are then the global batch's: one reduction of (sum x, count) and one of
    sum (x - mu)^2 (two passes, so float32 keeps its digits). Unused in evaluation mode.
    Returns (y, cache); the inputs are not modified.
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
        mu = total[:C] / M
        xc = x - mu.reshape(1, C, 1, 1)
        var = reduce(channel_dot(xc, xc)) / M
    elif training:
        if M < 2:
            raise ValueError(f"batchnorm in training mode needs more than one value per channel, "
                             f"got input shape {tuple(x.shape)}")
        mu = channel_sum(x) / M
        xc = x - mu.reshape(1, C, 1, 1)
        var = channel_dot(xc, xc) / M
    else:
        mu, var = running_mean.astype(x.dtype), running_var.astype(x.dtype)
        xc = x - mu.reshape(1, C, 1, 1)
    inv_std = 1.0 / xp.sqrt(var + eps)
    # y = xc (gamma inv_std) + beta: two passes, and x - mu is kept for backward rather than
    # x-hat = xc inv_std, which would cost a third pass here (backward folds inv_std in instead)
    y = xc * (gamma * inv_std).reshape(1, C, 1, 1)
    y += beta.reshape(1, C, 1, 1)
    return y, BatchNormCache(xc, gamma, inv_std, training, mu, var, M,
                             reduce if training else None)


def batchnorm2d_running_stats(cache, running_mean, running_var, momentum=0.1):
    """The running statistics after a training-mode forward: (new_mean, new_var), each
    (1 - momentum) running + momentum batch, the batch variance made unbiased (M / (M - 1)).
    In evaluation mode the running pair comes back unchanged."""
    check_number("batchnorm momentum", momentum, 0.0, 1.0)
    if not cache.training:
        return running_mean, running_var
    M = cache.count
    new_mean = (1 - momentum) * running_mean + momentum * cache.mean.astype(running_mean.dtype,
                                                                            copy=False)
    unbiased = (cache.var * (M / (M - 1))).astype(running_var.dtype, copy=False)
    return new_mean, (1 - momentum) * running_var + momentum * unbiased


def batchnorm2d_backward(dy, cache):
    """Returns (dx, dgamma, dbeta).

    Training: dx = gamma inv_std / M * (M dy - sum(dy) - xhat sum(dy xhat)) with
    xhat = (x - mu) inv_std: two reductions and four elementwise passes.
    Evaluation: dx = gamma inv_std dy.
    Synchronized (the forward had a ``reduce``): the two sums in dx are over all ranks (one
    reduction of both), M is the global count; dgamma and dbeta are this rank's share, which
    the data-parallel all-reduce of the parameter gradients adds up like every other one.
    """
    xc, gamma, inv_std, training, M = (
        cache.xc,
        cache.gamma,
        cache.inv_std,
        cache.training,
        cache.count,
    )
    C = xc.shape[1]
    dbeta = channel_sum(dy)
    dgamma = channel_dot(dy, xc) * inv_std               # sum(dy xhat)
    scale = gamma * inv_std
    if not training:
        return dy * scale.reshape(1, C, 1, 1), dgamma, dbeta
    xp = backend.xp_of(dy)
    sum_dy, sum_dy_xhat = dbeta, dgamma
    if cache.reduce is not None:
        total = cache.reduce(xp.concatenate((dbeta, dgamma)))
        sum_dy, sum_dy_xhat = total[:C], total[C:]
    dx = xc * (sum_dy_xhat * inv_std / M).reshape(1, C, 1, 1)   # xhat sum(dy xhat) / M
    xp.subtract(dy, dx, out=dx)
    dx -= (sum_dy / M).reshape(1, C, 1, 1)
    dx *= scale.reshape(1, C, 1, 1)
    return dx, dgamma, dbeta
