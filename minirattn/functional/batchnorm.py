"""Batch normalisation over (N, H, W) for each channel of an NCHW batch.

Derivation: docs/math/batchnorm.md

Conventions (DESIGN.md): the batch is normalised with the biased variance, the
running variance is updated with the unbiased one, momentum 0.1 as PyTorch
(running = (1 - momentum) running + momentum batch), eps = 1e-5.
Pure: the running statistics go in as arguments and the updated ones come back.
"""
from __future__ import annotations

from .. import backend
from ._checks import check_array, check_same_dtype
from ._reduce import channel_dot, channel_sum


def batchnorm2d_forward(x, gamma, beta, running_mean, running_var, training=True,
                        momentum=0.1, eps=1e-5):
    """y = gamma (x - mu) / sqrt(var + eps) + beta.

    x: (N, C, H, W); gamma, beta, running_mean, running_var: (C,).
    training=True uses the batch statistics; False uses the running ones.
    Returns (y, cache, new_running_mean, new_running_var); the inputs are not modified.
    """
    check_array("batchnorm input x", x, ndim=4)
    for name, a in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                    ("running_var", running_var)):
        check_array(f"batchnorm {name}", a, ndim=1)
        if a.shape[0] != x.shape[1]:
            raise ValueError(f"batchnorm: {name} has {a.shape[0]} entries but the input has {x.shape[1]} channels")
    check_same_dtype(x=x, gamma=gamma, beta=beta)
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"batchnorm: momentum must lie in [0, 1], got {momentum}")
    if eps <= 0:
        raise ValueError(f"batchnorm: eps must be > 0, got {eps}")
    xp = backend.xp_of(x)
    N, C, H, W = x.shape
    M = N * H * W
    if training:
        if M < 2:
            raise ValueError(f"batchnorm in training mode needs more than one value per channel, got input shape {tuple(x.shape)}")
        mu = channel_sum(x) / M
        xc = x - mu.reshape(1, C, 1, 1)
        var = channel_dot(xc, xc) / M
        new_mean = (1 - momentum) * running_mean + momentum * mu.astype(running_mean.dtype)
        new_var = (1 - momentum) * running_var + momentum * (var * (M / (M - 1))).astype(running_var.dtype)
    else:
        mu, var = running_mean.astype(x.dtype), running_var.astype(x.dtype)
        xc = x - mu.reshape(1, C, 1, 1)
        new_mean, new_var = running_mean, running_var
    inv_std = 1.0 / xp.sqrt(var + eps)
    # y = xc (gamma inv_std) + beta: two passes, and x - mu is kept for backward rather than
    # x-hat = xc inv_std, which would cost a third pass here (backward folds inv_std in instead)
    y = xc * (gamma * inv_std).reshape(1, C, 1, 1)
    y += beta.reshape(1, C, 1, 1)
    cache = (xc, gamma, inv_std, training)
    return y, cache, new_mean, new_var


def batchnorm2d_backward(dy, cache):
    """Returns (dx, dgamma, dbeta).

    Training: dx = gamma inv_std / M * (M dy - sum(dy) - xhat sum(dy xhat)) with
    xhat = (x - mu) inv_std: two reductions and four elementwise passes.
    Evaluation: dx = gamma inv_std dy.
    """
    xc, gamma, inv_std, training = cache
    N, C, H, W = xc.shape
    M = N * H * W
    dbeta = channel_sum(dy)
    dgamma = channel_dot(dy, xc) * inv_std               # sum(dy xhat)
    scale = gamma * inv_std
    if not training:
        return dy * scale.reshape(1, C, 1, 1), dgamma, dbeta
    dx = xc * (dgamma * inv_std / M).reshape(1, C, 1, 1)        # xhat sum(dy xhat) / M
    xp = backend.xp_of(dy)
    xp.subtract(dy, dx, out=dx)
    dx -= (dbeta / M).reshape(1, C, 1, 1)
    dx *= scale.reshape(1, C, 1, 1)
    return dx, dgamma, dbeta
