"""Fully connected layer y = x W^T + b (PyTorch's weight layout (out, in)).

Derivation: docs/math/linear.md
"""
from __future__ import annotations

from ..checks import check_array, check_same_dtype


def linear_forward(x, w, b=None):
    """x: (N, D_in); w: (D_out, D_in); b: (D_out,) or None -> y: (N, D_out)."""
    check_array("linear input x", x, ndim=2)
    check_array("linear weight w", w, ndim=2)
    if b is not None:
        check_array("linear bias b", b, ndim=1)
    check_same_dtype(x=x, w=w, b=b)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"linear: input has {x.shape[1]} features but the weight expects "
                         f"{w.shape[1]}")
    if b is not None and b.shape[0] != w.shape[0]:
        raise ValueError(f"linear: bias has {b.shape[0]} entries, expected {w.shape[0]}")
    y = x @ w.T
    if b is not None:
        y += b
    return y, (x, w, b is not None)


def linear_backward(dy, cache):
    """Returns (dx, dw), and db after them when the forward had a bias: dx = dy W, dW = dy^T x,
    db = sum_n dy."""
    x, w, has_bias = cache
    grads = (dy @ w, dy.T @ x)
    return grads + (dy.sum(axis=0),) if has_bias else grads
