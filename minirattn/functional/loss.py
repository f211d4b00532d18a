"""Softmax cross-entropy over a batch, stable through log-sum-exp.

Derivation: docs/math/loss.md
"""
from __future__ import annotations

from .. import backend
from ..checks import check_array


def log_softmax(logits):
    """logits: (N, K) -> log p: (N, K), computed as z - max - log sum exp(z - max)."""
    xp = backend.xp_of(logits)
    z = logits - logits.max(axis=1, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=1, keepdims=True))


def softmax_cross_entropy(logits, labels, validate=True):
    """Mean loss L = -1/N sum_n log p[n, y_n] and its gradient dL/dlogits = (p - onehot(y)) / N.

    logits: (N, K) float; labels: (N,) integers in [0, K).
    Returns (loss as a 0-d array on the logits' device, dlogits (N, K)).
    ``validate=False`` skips the label range and finiteness checks, which reads the labels back
    from the device (the training loop checks its labels once, up front).
    """
    check_array("logits", logits, ndim=2)
    check_array("labels", labels, ndim=1, floating=False)
    xp = backend.xp_of(logits)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels: expected an integer array, got dtype {labels.dtype}")
    N, K = logits.shape
    if labels.shape[0] != N:
        raise ValueError(f"labels: expected {N} labels (one per row of logits), got "
                         f"{labels.shape[0]}")
    if N == 0:
        raise ValueError("softmax_cross_entropy: expected a non-empty batch, got 0 rows")
    lo, hi = (int(labels.min()), int(labels.max())) if validate else (0, 0)
    if lo < 0 or hi >= K:
        raise ValueError(f"labels: expected values in [0, {K}), got range [{lo}, {hi}]")
    if validate and not bool(xp.isfinite(logits).all()):
        raise ValueError("logits: expected finite values, got NaN or inf (the forward pass "
                         "diverged)")
    logp = log_softmax(logits)
    rows = xp.arange(N)
    loss = -logp[rows, labels].mean()
    dlogits = xp.exp(logp)
    dlogits[rows, labels] -= 1.0
    dlogits /= N
    return loss, dlogits
