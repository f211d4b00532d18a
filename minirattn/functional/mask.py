"""The paper's mask activations (Sec. 3.3): what turns the soft mask branch's output into M.

Derivations: docs/math/attention.md

f1 mixed:    M = sigmoid(x), per channel and position.
f2 channel:  M = x / sqrt(sum_c x_c^2 + eps), the L2 normalisation over channels at each position.
f3 spatial:  M = sigmoid((x - mean) / sqrt(var + eps)), mean and biased var per sample and
             channel over the H x W positions.

The networks' ``attention`` argument names one of them (the paper's Table 1: mixed, channel
and spatial attention).
"""
from __future__ import annotations

from .. import backend
from ..checks import check_array, check_choice
from .activations import sigmoid, sigmoid_grad

#: The values of the ``attention`` argument: f1, f2, f3 by the paper's names.
ATTENTION_TYPES = ("mixed", "channel", "spatial")


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


_FORWARD = {"mixed": f1_mixed_forward, "channel": f2_channel_forward, "spatial": f3_spatial_forward}
_BACKWARD = {
    "mixed": f1_mixed_backward,
    "channel": f2_channel_backward,
    "spatial": f3_spatial_backward,
}


def mask_activation_forward(x, attention="mixed"):
    """Dispatch to f1/f2/f3 by the paper's names "mixed" | "channel" | "spatial"."""
    check_choice("attention", attention, ATTENTION_TYPES)
    m, cache = _FORWARD[attention](x)
    return m, (attention, cache)


def mask_activation_backward(dm, cache):
    """dx of whichever activation made ``cache``."""
    attention, inner = cache
    return _BACKWARD[attention](dm, inner)
