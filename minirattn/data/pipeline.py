"""From uint8 images to training batches: per-pixel mean subtraction, the paper's augmentation
(zero-pad 4, random crop back to size, random horizontal flip), seeded batch order.

The batch at iteration i is a pure function of (seed, i): epoch e = i // batches_per_epoch
is shuffled by default_rng([seed, e]) and batch i is augmented by default_rng([seed, 1, i]).
So a run resumed at iteration k sees exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

from .. import backend
from ..checks import check_positive_int


def pixel_mean(x_uint8):
    """Per-pixel mean (C, H, W) of a uint8 training set, on the [0, 1] scale, float32."""
    np = backend.numpy
    return (x_uint8.mean(axis=0, dtype=np.float64) / 255.0).astype(np.float32)


def normalize(x_uint8, mean, std=None):
    """uint8 (N, C, H, W) -> float32 x / 255 - mean, divided by ``std`` when given (folder data
    sets: per-channel mean and std of shape (C, 1, 1))."""
    np = backend.numpy
    x = x_uint8.astype(np.float32) / np.float32(255.0) - mean
    return x if std is None else x / std


def augment(x, rng, pad: int = 4, flip: bool = True):
    """Zero-pad by ``pad``, crop a random window of the original size, flip half horizontally.

    x: float32 (N, C, H, W), already normalised (so the padding is the mean image's zero).
    """
    np = backend.numpy
    N, C, H, W = x.shape
    padded = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=x.dtype)
    padded[:, :, pad:pad + H, pad:pad + W] = x
    oy = rng.integers(0, 2 * pad + 1, N)
    ox = rng.integers(0, 2 * pad + 1, N)
    out = np.empty_like(x)
    for n in range(N):
        out[n] = padded[n, :, oy[n]:oy[n] + H, ox[n]:ox[n] + W]
    if flip:
        f = rng.random(N) < 0.5
        out[f] = out[f, :, :, ::-1]
    return out


class BatchStream:
    """Seeded, resumable training batches (drop-last epochs)."""

    def __init__(self, x_uint8, y, mean, batch_size: int, seed: int = 0, augment_data: bool = True):
        check_positive_int("batch_size", batch_size)
        if batch_size > len(y):
            raise ValueError(f"batch_size {batch_size} is larger than the training set ({len(y)} "
                             f"images)")
        self.x, self.y, self.mean = x_uint8, y, mean
        self.batch_size, self.seed, self.augment_data = batch_size, seed, augment_data
        self.batches_per_epoch = len(y) // batch_size
        self._perm_epoch, self._perm = None, None

    def batch(self, iteration: int, lo: int = 0, hi: int | None = None):
        """(x float32 (B, C, H, W), y int64 (B,)) for ``iteration`` (0-based); images lo:hi of
        it only when given (a data-parallel rank's shard)."""
        np = backend.numpy
        epoch, pos = divmod(iteration, self.batches_per_epoch)
        if self._perm_epoch != epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.y))
            self._perm_epoch = epoch
        idx = self._perm[pos * self.batch_size:(pos + 1) * self.batch_size]
        x = normalize(self.x[idx], self.mean)
        if self.augment_data:         # drawn for the whole batch: every shard sees the same draws
            x = augment(x, np.random.default_rng([self.seed, 1, iteration]))
        return x[lo:hi], self.y[idx][lo:hi]

    def close(self):
        """Nothing to release (the folder stream's ``close`` ends its decoding threads)."""


def eval_batches(x_uint8, y, mean, batch_size: int, std=None, lo: int = 0, hi: int | None = None):
    """Unaugmented, in-order batches of images ``lo:hi`` (all by default) for evaluation
    (``x_uint8`` an array, or a folder split that decodes each batch as it is sliced)."""
    hi = len(y) if hi is None else hi
    for s in range(lo, hi, batch_size):
        e = min(s + batch_size, hi)
        yield normalize(x_uint8[s:e], mean, std), y[s:e]
