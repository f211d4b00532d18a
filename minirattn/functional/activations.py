"""Elementwise activations: ReLU and a sigmoid that is finite and accurate for any |x|.

Derivation: docs/math/activations.md
"""
from __future__ import annotations

from .. import backend
from ..checks import check_array


@backend.fuse
def relu_grad(xp, dy, y):
    """dx = dy [y > 0] from the ReLU's output y (also batch norm's with ``relu=True``)."""
    return dy * (y > 0)


@backend.fuse
def _relu_grad_into(xp, dy, y):
    dy *= y > 0


def relu_forward(x, inplace=False):
    """y = max(x, 0). x: any shape. The cache is y itself (y > 0 exactly where x > 0).

    inplace=True writes y into x and returns x: no new array, for callers (such as a
    BN-ReLU pair) where nothing else reads x afterwards.
    """
    check_array("relu input x", x)
    xp = backend.xp_of(x)
    y = xp.maximum(x, 0, out=x) if inplace else xp.maximum(x, 0)
    return y, y


def relu_backward(dy, cache, inplace=False):
    """dx = dy * [y > 0] (the subgradient at 0 is taken as 0), one fused pass; inplace=True
    writes dx into dy. The cache is the forward's output y: write nothing into it before."""
    if inplace:
        _relu_grad_into(dy, cache)
        return dy
    return relu_grad(dy, cache)


@backend.fuse
def sigmoid(xp, x):
    """1 / (1 + exp(-x)) computed from e = exp(-|x|) <= 1, so nothing overflows.

    For x >= 0: 1 / (1 + e), for x < 0: e / (1 + e). The numerator is max(e, [x >= 0]):
    exactly 1 or exactly e (e <= 1), and cheaper than ``where`` on NumPy. One kernel on CuPy.
    """
    e = xp.exp(-xp.abs(x))
    y = xp.maximum(e, x >= 0)
    e += 1.0                    # in place: on NumPy two passes and no new array
    y /= e
    return y


def sigmoid_forward(x):
    """y = sigmoid(x), any shape; the cache is y."""
    check_array("sigmoid input x", x)
    y = sigmoid(x)
    return y, y


@backend.fuse
def sigmoid_grad(xp, dy, y):
    """dx = dy * y (1 - y) from the sigmoid's output y (also the backward of f1 and f3); one
    kernel on CuPy, one new array and three passes on NumPy."""
    dx = 1.0 - y
    dx *= y
    dx *= dy
    return dx


def sigmoid_backward(dy, cache):
    """dx = dy * y (1 - y)."""
    return sigmoid_grad(dy, cache)
