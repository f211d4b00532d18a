"""`shapes`: the embedded, generated data set, so every command works offline.

32x32 RGB images of 10 classes of objects (disk, ring, square, frame, triangle, plus, star,
bar, crescent, pair of dots), each drawn at a random position, scale (radius 6-10 px),
orientation and bright colour over a darker, cluttered background: a smooth colour gradient,
a random stripe texture, pixel noise, and 3-6 small distractors of any colour (dots and short
strokes). Everything is fixed by the seed.

Because position, colour and clutter vary, raw pixels carry almost no linear signal: a
logistic regression on them scores at most 40% (tested), while a small Residual Attention
Network learns the shapes (see the README's main job).
"""
from __future__ import annotations

from .. import backend
from ..checks import check_positive_int
from .base import Dataset

CLASSES = ["disk", "ring", "square", "frame", "triangle", "plus", "star", "bar", "crescent", "pair"]


def _inside(cls, u, v):
    """Membership of points (u, v), in the object's own frame (radius ~1), of shape ``cls``."""
    np = backend.numpy
    r = np.sqrt(u * u + v * v)
    a = np.maximum(np.abs(u), np.abs(v))
    if cls == 0:
        return r < 1.0
    if cls == 1:
        return (r < 1.0) & (r > 0.6)
    if cls == 2:
        return a < 0.8
    if cls == 3:
        return (a < 0.9) & (a > 0.55)
    if cls == 4:   # equilateral triangle, circumradius 1
        return (v > -0.5) & (v < 1 - np.sqrt(3) * np.abs(u))
    if cls == 5:
        return ((np.abs(u) < 0.3) & (np.abs(v) < 1.0)) | ((np.abs(v) < 0.3) & (np.abs(u) < 1.0))
    if cls == 6:   # five-pointed star
        theta = np.arctan2(v, u)
        return r < 0.45 + 0.55 * np.abs(np.cos(2.5 * theta)) ** 3
    if cls == 7:
        return (np.abs(u) < 1.0) & (np.abs(v) < 0.3)
    if cls == 8:
        return (r < 1.0) & (np.sqrt((u - 0.5) ** 2 + v * v) > 0.75)
    if cls == 9:
        return (np.sqrt((u - 0.55) ** 2 + v * v) < 0.42) | (np.sqrt((u + 0.55) ** 2 + v * v) < 0.42)
    raise ValueError(cls)


def _render(rng, labels, size, clutter=1.0):
    np = backend.numpy
    n = len(labels)
    yy, xx = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    ss = 3   # supersampling for anti-aliased edges
    sub = (np.arange(ss) + 0.5) / ss - 0.5
    img = np.empty((n, size, size, 3))
    for k in range(n):
        # background: a dark colour gradient plus a stripe texture
        c0, c1 = rng.uniform(0, 0.45, 3), rng.uniform(0, 0.45, 3)
        ang = rng.uniform(0, 2 * np.pi)
        t = ((xx * np.cos(ang) + yy * np.sin(ang)) / size + 1) / 2
        bg = c0 * (1 - t[..., None]) + c1 * t[..., None]
        f, phase, sang = rng.uniform(0.15, 0.6), rng.uniform(0, 2 * np.pi), rng.uniform(0, np.pi)
        stripes = np.sin(f * (xx * np.cos(sang) + yy * np.sin(sang)) + phase)
        bg = bg + clutter * rng.uniform(0.03, 0.12) * stripes[..., None] * rng.uniform(-1, 1, 3)
        canvas = bg
        # distractors: small dots and short strokes in random colours
        for _ in range(int(round(clutter * rng.integers(3, 7)))):
            cx, cy = rng.uniform(0, size, 2)
            col = rng.uniform(0, 1, 3)
            if rng.random() < 0.5:
                m = (xx - cx) ** 2 + (yy - cy) ** 2 < rng.uniform(1.0, 2.2) ** 2
            else:
                da = rng.uniform(0, np.pi)
                du = (xx - cx) * np.cos(da) + (yy - cy) * np.sin(da)
                dv = -(xx - cx) * np.sin(da) + (yy - cy) * np.cos(da)
                m = (np.abs(du) < rng.uniform(2, 4)) & (np.abs(dv) < 0.7)
            canvas = np.where(m[..., None], col, canvas)
        # the object: random scale, rotation, position; a colour that stands out from the background
        scale = rng.uniform(6.0, 10.0)
        rot = rng.uniform(0, 2 * np.pi)
        cx, cy = rng.uniform(scale, size - scale, 2)
        cover = np.zeros((size, size))
        for dy_ in sub:
            for dx_ in sub:
                px, py = (xx + dx_ - cx) / scale, (yy + dy_ - cy) / scale
                u = px * np.cos(rot) + py * np.sin(rot)
                v = -px * np.sin(rot) + py * np.cos(rot)
                cover += _inside(int(labels[k]), u, v)
        cover /= ss * ss
        col = rng.uniform(0.55, 1.0, 3)  # a bright object of any hue on the dark ground
        canvas = canvas * (1 - cover[..., None]) + col * cover[..., None]
        img[k] = canvas + rng.normal(0, 0.03, canvas.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(0, 3, 1, 2)


def make_shapes(n_train: int = 10000, n_test: int = 2000, seed: int = 0, size: int = 32,
                clutter: float = 1.0, *, train: bool = True) -> Dataset:
    """Generate the data set; balanced classes, fully determined by ``seed`` (each split by
    its own stream, so the test split does not depend on ``n_train``). train=False generates
    the test split only (the training split comes back empty)."""
    np = backend.numpy
    check_positive_int("shapes n_train", n_train)
    check_positive_int("shapes n_test", n_test)
    check_positive_int("shapes size", size, 16)
    out = []
    for part, n in ((0, n_train if train else 0), (1, n_test)):
        rng = np.random.default_rng([seed, part])
        labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
        out += [_render(rng, labels, size, clutter), labels]
    return Dataset("shapes", out[0], out[1], out[2], out[3], list(CLASSES))
