"""The attention combination (Eq. 3): the trunk's output T filtered by the mask M.

Derivations: docs/math/attention_residual.md

ARL:         H = (1 + M) * T     (attention residual learning, the default)
NAL:         H = M * T           (naive attention learning)

The mask activations that make M are in ``mask.py``.
"""
from __future__ import annotations

from .. import backend
from ..checks import check_array, check_choice

#: The values of the ``learning`` argument.
LEARNING_RULES = ("arl", "nal")


def attention_residual_forward(t, m, learning="arl"):
    """t: trunk output T, m: mask M, same shape (N, C, H, W).

    "arl": H = (1 + M) * T (Eq. 3); "nal": H = M * T. The mask acts as a gradient
    filter (Eq. 2): dL/dT = dL/dH * (1 + M) for ARL and dL/dH * M for NAL.
    """
    check_choice("learning", learning, LEARNING_RULES)
    check_array("attention trunk T", t, ndim=4)
    check_array("attention mask M", m, ndim=4)
    if t.shape != m.shape:
        raise ValueError(f"attention: trunk T has shape {tuple(t.shape)} but mask M has "
                         f"{tuple(m.shape)}")
    h = _arl(t, m) if learning == "arl" else m * t
    return h, (t, m, learning)


def attention_residual_backward(dh, cache):
    """Returns (dT, dM): dT = dH (1 + M) or dH M; dM = dH T."""
    t, m, learning = cache
    return (_arl_grads if learning == "arl" else _nal_grads)(dh, t, m)


@backend.fuse
def _arl(xp, t, m):
    """H = (1 + M) T, one kernel on CuPy."""
    return (1.0 + m) * t


@backend.fuse
def _arl_grads(xp, dh, t, m):
    """(dH (1 + M), dH T), one kernel on CuPy."""
    return dh * (1.0 + m), dh * t


@backend.fuse
def _nal_grads(xp, dh, t, m):
    """(dH M, dH T), one kernel on CuPy."""
    return dh * m, dh * t
