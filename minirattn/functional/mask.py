"""The paper's mask activations (Sec. 3.3): what turns the soft mask branch's output into M.

Derivations: docs/math/mask_activations.md

f1 mixed:    M = sigmoid(x), per channel and position.
f2 channel:  M = x / sqrt(sum_c x_c^2 + eps), the L2 normalisation over channels at each position.
f3 spatial:  M = sigmoid((x - mean) / sqrt(var + eps)), mean and biased var per sample and
             channel over the H x W positions.

The networks' ``mask_activation`` argument names one of them (the paper's Table 1: mixed,
channel and spatial attention). :data:`MASK_ACTIVATIONS` is the one registry of their
forward/backward pairs: a new activation is a pair of functions and one entry there.
"""
from __future__ import annotations

from .. import backend
from ..checks import check_array, check_choice
from .activations import sigmoid, sigmoid_grad

def f1_mixed_forward(x):
    """x: (N, C, H, W) -> M = sigmoid(x); the cache is M."""
    check_array("f1 mixed input x", x, ndim=4)
    m = sigmoid(x)
    return m, m


def f1_mixed_backward(dm, cache):
    """dx = dM * M (1 - M)."""
    return sigmoid_grad(dm, cache)


def f2_channel_forward(x, eps=1e-12):
    """x: (N, C, H, W) -> M = x / n with n = sqrt(sum_c x^2 + eps) at every (n, h, w)."""
    check_array("f2 channel input x", x, ndim=4)
    xp = backend.xp_of(x)
    norm = xp.sqrt((x * x).sum(axis=1, keepdims=True) + eps)
    m = x / norm
    return m, (m, norm)


def f2_channel_backward(dm, cache):
    """dx = (dM - M sum_c(dM M)) / n."""
    m, norm = cache
    return (dm - m * (dm * m).sum(axis=1, keepdims=True)) / norm


def f3_spatial_forward(x, eps=1e-5):
    """x: (N, C, H, W) -> M = sigmoid(z), z = (x - mu) / sqrt(var + eps) over H, W per (n, c)."""
    check_array("f3 spatial input x", x, ndim=4)
    xp = backend.xp_of(x)
    mu = x.mean(axis=(2, 3), keepdims=True)
    xc = x - mu
    inv_std = 1.0 / xp.sqrt((xc * xc).mean(axis=(2, 3), keepdims=True) + eps)
    z = xc
    z *= inv_std
    m = sigmoid(z)
    return m, (m, z, inv_std)


def f3_spatial_backward(dm, cache):
    """dz = dM M (1 - M); dx = inv_std (dz - mean(dz) - z mean(dz z)), means over H, W."""
    m, z, inv_std = cache
    dz = sigmoid_grad(dm, m)
    dx = dz - dz.mean(axis=(2, 3), keepdims=True)
    dx -= z * (dz * z).mean(axis=(2, 3), keepdims=True)
    dx *= inv_std
    return dx


#: name -> (forward, backward): the values of the ``mask_activation`` argument, f1, f2, f3 by the
#: paper's names.
MASK_ACTIVATIONS = {
    "mixed": (f1_mixed_forward, f1_mixed_backward),
    "channel": (f2_channel_forward, f2_channel_backward),
    "spatial": (f3_spatial_forward, f3_spatial_backward),
}


def mask_activation_forward(x, activation="mixed"):
    """Dispatch to f1/f2/f3 by the paper's names "mixed" | "channel" | "spatial"."""
    check_choice("mask_activation", activation, tuple(MASK_ACTIVATIONS))
    m, cache = MASK_ACTIVATIONS[activation][0](x)
    return m, (activation, cache)


def mask_activation_backward(dm, cache):
    """dx of whichever activation made ``cache``."""
    activation, inner = cache
    return MASK_ACTIVATIONS[activation][1](dm, inner)
