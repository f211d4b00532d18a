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
    xhat = xc
    xhat *= inv_std.reshape(1, C, 1, 1)          # xc is ours: normalise in place
    y = xhat * gamma.reshape(1, C, 1, 1)
    y += beta.reshape(1, C, 1, 1)
    cache = (xhat, gamma, inv_std, training)
    return y, cache, new_mean, new_var


def batchnorm2d_backward(dy, cache):
    """Returns (dx, dgamma, dbeta).

    Training: dx = gamma inv_std / M * (M dy - sum(dy) - xhat sum(dy xhat)),
    two reductions and one elementwise pass. Evaluation: dx = gamma inv_std dy.
    """
    xhat, gamma, inv_std, training = cache
    N, C, H, W = xhat.shape
    M = N * H * W
    dbeta = channel_sum(dy)
    dgamma = channel_dot(dy, xhat)
    scale = (gamma * inv_std).reshape(1, C, 1, 1)
    if not training:
        return dy * scale, dgamma, dbeta
    dx = dy - (dbeta / M).reshape(1, C, 1, 1)
    dx -= xhat * (dgamma / M).reshape(1, C, 1, 1)
    dx *= scale
    return dx, dgamma, dbeta
