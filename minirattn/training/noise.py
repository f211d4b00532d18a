"""Label noise as the paper's Eq. (7).

Each training label is kept with probability r; otherwise it is replaced by one of the
other K - 1 classes, chosen uniformly (never the true class). The noise level is 1 - r.
The confusion matrix Q has q_ii = r and q_ij = (1 - r) / (K - 1) for i != j.
"""
from __future__ import annotations

from .. import backend
from ..checks import check_number, check_positive_int


def add_label_noise(labels, noise: float, num_classes: int, seed: int = 0):
    """Returns (noisy_labels, flipped_indices); the input is not modified.

    labels: int array (N,); noise = 1 - r in [0, 1).
    """
    np = backend.numpy
    check_number("label_noise", noise, 0.0, 1.0, high_open=True)
    check_positive_int("label noise num_classes", num_classes, 2)
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 0x6E6F6973])
    flip = rng.random(len(labels)) < noise
    idx = np.flatnonzero(flip)
    # a uniform choice among the K - 1 other classes: add 1..K-1 modulo K
    shift = rng.integers(1, num_classes, len(idx))
    noisy = labels.copy()
    noisy[idx] = (labels[idx] + shift) % num_classes
    return noisy, idx
