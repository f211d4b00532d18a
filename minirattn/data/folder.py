"""Folders of images: ``root/train/<class>/<image>`` and ``root/val/<class>/<image>`` (ImageNet's
layout, and most user data sets'), with the paper's ImageNet augmentation.

- Classes are the sub-folder names in sorted order (label i = the i-th name), the same in both
  splits. Files ending in .jpg/.jpeg/.png/.bmp/.gif/.webp (any case) are images; others are
  ignored. Decoding is Pillow's; every mode (greyscale, RGBA, CMYK, palette, 16-bit) is
  converted to RGB (alpha dropped).
- Training crops: scale and aspect-ratio augmentation (Szegedy et al. 2015, as the paper's ImageNet
  recipe: a window of 8%-100% of the image's area with aspect ratio 3/4-4/3, log-uniform, up to 10
  draws, else the largest centred window of a ratio in range), resized to ``size`` x ``size``
  (bilinear), flipped horizontally with probability 1/2.
- Evaluation crops: the shorter side resized to ``size / 0.875``, the centre ``size`` x ``size``.
- Normalisation: per channel, (x / 255 - mean) / std with ImageNet's statistics.
- A file Pillow cannot decode stops the run with a :class:`DataError` naming it (the checkpoints
  stay; remove or replace the file and resume). Images smaller than the crop are enlarged: a
  warning at the first of a split, ``FolderImages.n_small`` counts them.
- Batch ``i`` of a run is a pure function of (seed, i) as in pipeline.py: exact resume. Images are
  decoded by ``workers`` threads (Pillow releases the GIL while decoding and resizing), and the
  next batch is decoded while the network trains on this one.
"""
from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

from .. import backend
from ..checks import check_positive_int
from .base import DataError, Dataset
from .pipeline import normalize

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
#: per-channel statistics of ImageNet's training set, on the [0, 1] scale (RGB)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the paper's (Szegedy et al.'s) scale and aspect-ratio ranges of a training crop
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
EVAL_CROP_FRACTION = 0.875
#: where the test split is looked for, in order (train is always data_dir/train)
TEST_SPLITS = ("val", "test")


def _pil():
    try:
        from PIL import Image
    except ImportError as e:                                     # pragma: no cover
        raise DataError("folder data sets need Pillow: pip install 'minirattn[images]'") from e
    return Image


def scan_split(folder: str):
    """(paths, labels int64, classes) of ``folder/<class>/<image>``; a clear DataError for a
    missing folder, fewer than two classes, or a class folder without images."""
    np = backend.numpy
    if not os.path.isdir(folder):
        raise DataError(f"no folder {folder!r}: expected <data_dir>/train/<class>/<image> and "
                        f"<data_dir>/val/<class>/<image>")
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    if len(classes) < 2:
        raise DataError(f"{folder!r} has {len(classes)} class folder(s) ({classes}): "
                        f"classification needs at least 2, one sub-folder per class")
    paths, labels = [], []
    for i, name in enumerate(classes):
        sub = os.path.join(folder, name)
        files = sorted(f for f in os.listdir(sub) if f.lower().endswith(IMAGE_EXTENSIONS)
                       and os.path.isfile(os.path.join(sub, f)))
        if not files:
            raise DataError(f"class folder {sub!r} holds no images (files ending in "
                            f"{', '.join(IMAGE_EXTENSIONS)})")
        paths += [os.path.join(sub, f) for f in files]
        labels += [i] * len(files)
    return paths, np.asarray(labels, dtype=np.int64), classes


TRAINING_ADVICE = "; remove or replace it and run again (resume=True keeps the checkpoints)"


def load_rgb(path: str, advice: str = TRAINING_ADVICE):
    """The image at ``path`` as an RGB Pillow image (decoded now); DataError if it cannot be,
    naming the file and the cause, then ``advice``."""
    Image = _pil()
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):     # 16/32-bit greyscale: scale to 8
                im = im.point(lambda v: v / 256).convert("L")
            return im.convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:  # Pillow's UnidentifiedImageError is OSError
        raise DataError(f"cannot decode image {path!r} ({type(e).__name__}: {e}){advice}") from e


def crop_window(width: int, height: int, rng, scale=CROP_SCALE, ratio=CROP_RATIO):
    """A random (left, top, w, h) window of ``scale`` of the area and aspect ``ratio`` (w/h)."""
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    # fallback: the whole image, trimmed to the nearest ratio in range, centred
    aspect = min(max(width / height, ratio[0]), ratio[1])
    w, h = (width, int(round(width / aspect))) if width / height < aspect else \
        (int(round(height * aspect)), height)
    w, h = min(w, width), min(h, height)
    return (width - w) // 2, (height - h) // 2, w, h


def train_crop(im, size: int, rng):
    """uint8 (3, size, size): a random window (crop_window), resized, flipped with p = 1/2."""
    np = backend.numpy
    left, top, w, h = crop_window(im.width, im.height, rng)
    out = im.resize((size, size), resample=_pil().Resampling.BILINEAR,
                    box=(left, top, left + w, top + h))
    x = np.asarray(out, dtype=np.uint8).transpose(2, 0, 1)
    return x[:, :, ::-1] if rng.random() < 0.5 else x


def centre_crop(im, short: int, size: int):
    """uint8 (C, size, size) of a Pillow image: the shorter side resized (bilinear) to ``short``
    (>= size), the centre ``size`` x ``size``; C = 1 for a greyscale image, else 3."""
    np = backend.numpy
    scale = short / min(im.width, im.height)
    w, h = max(size, int(round(im.width * scale))), max(size, int(round(im.height * scale)))
    im = im.resize((w, h), resample=_pil().Resampling.BILINEAR)
    left, top = (w - size) // 2, (h - size) // 2
    x = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return x[None] if x.ndim == 2 else x.transpose(2, 0, 1)


def eval_crop(im, size: int):
    """uint8 (3, size, size): the shorter side resized to size / 0.875, the centre crop."""
    return centre_crop(im, max(size, int(round(size / EVAL_CROP_FRACTION))), size)


class FolderImages:
    """One split as an array-like of uint8 (3, size, size) centre crops: ``len``, ``shape`` and
    indexing by a slice or index array (decoded then, by ``workers`` threads). Enough for
    evaluation code written for in-memory arrays."""

    def __init__(self, paths, size: int, workers: int = 4, name: str = "images"):
        self.paths, self.size, self.workers, self.name = list(paths), size, workers, name
        self._pool = None
        self.n_small = 0                   # images so far smaller than the crop (enlarged)

    @property
    def shape(self):
        return (len(self.paths), 3, self.size, self.size)

    @property
    def dtype(self):
        return backend.numpy.dtype("uint8")

    def __len__(self):
        return len(self.paths)

    def pool(self):
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers,
                                            thread_name_prefix="minirattn-decode")
        return self._pool

    def open(self, i: int):
        im = load_rgb(self.paths[i])
        if min(im.width, im.height) < self.size:
            self.n_small += 1
            if self.n_small == 1:               # once: a data set of small images is no surprise
                warnings.warn(f"{self.name}: images smaller than the {self.size}-pixel crop are "
                              f"enlarged (the first: {self.paths[i]!r}, {im.width}x{im.height}; "
                              f"n_small counts them)", stacklevel=2)
        return im

    def decode(self, indices, fn, slots=False):
        """uint8 (len(indices), 3, size, size) from ``fn(i, image)`` (``i`` the position in
        ``indices`` when ``slots``, else the image's index), in the pool."""
        np = backend.numpy
        crops = list(self.pool().map(
            lambda ji: fn(ji[0] if slots else ji[1], self.open(int(ji[1]))), enumerate(indices)))
        return np.stack(crops) if crops else np.zeros((0,) + self.shape[1:], np.uint8)

    def __getitem__(self, key):
        np = backend.numpy
        indices = range(len(self))[key] if isinstance(key, slice) else np.asarray(key).reshape(-1)
        return self.decode(indices, lambda i, im: eval_crop(im, self.size))


class FolderStream:
    """Seeded, resumable training batches from a FolderImages split (drop-last epochs), with the
    next batch decoded in the background. Same contract as pipeline.BatchStream."""

    def __init__(self, images: FolderImages, y, mean, std, batch_size: int, seed: int = 0,
                 augment_data: bool = True):
        check_positive_int("batch_size", batch_size)
        if batch_size > len(y):
            raise ValueError(f"batch_size {batch_size} is larger than the training set ({len(y)} "
                             f"images)")
        self.images, self.y, self.mean, self.std = images, y, mean, std
        self.batch_size, self.seed, self.augment_data = batch_size, seed, augment_data
        self.batches_per_epoch = len(y) // batch_size
        self._ahead = None                               # ((iteration, lo, hi), future)
        self._perms = {}                                 # epoch -> permutation (the last two)
        # its own thread: a prefetch waiting on the decoding pool must not occupy a decoder
        self._prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minirattn-prefetch")

    def _indices(self, iteration):
        np = backend.numpy
        epoch, pos = divmod(iteration, self.batches_per_epoch)
        perm = self._perms.get(epoch)
        if perm is None:             # both threads may compute it: the same array either way
            perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.y))
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = perm
        return perm[pos * self.batch_size:(pos + 1) * self.batch_size]

    def _decode(self, iteration, lo=0, hi=None):
        np = backend.numpy
        idx = self._indices(iteration)[lo:hi]
        if not self.augment_data:
            return self.images[idx], idx
        seed = self.seed

        def crop(j, im):
            # a generator per slot of the global batch: image j's crop depends neither on the
            # decoding order nor on which rank's shard it falls in
            return train_crop(im, self.images.size,
                              np.random.default_rng([seed, 1, iteration, lo + j]))
        return self.images.decode(idx, crop, slots=True), idx

    def batch(self, iteration: int, lo: int = 0, hi: int | None = None):
        """(x float32 (B, 3, size, size), y int64 (B,)) for ``iteration`` (0-based); only
        images lo:hi of it are decoded when given (a data-parallel rank's shard)."""
        key = (iteration, lo, hi)
        if self._ahead is not None and self._ahead[0] == key:
            x_uint8, idx = self._ahead[1].result()
        else:
            x_uint8, idx = self._decode(*key)
        self._ahead = None
        if self._prefetch is not None:
            self._ahead = ((iteration + 1, lo, hi),
                           self._prefetch.submit(self._decode, iteration + 1, lo, hi))
        return normalize(x_uint8, self.mean, self.std), self.y[idx]

    def close(self):
        """Stop decoding ahead: the batch after the last one asked for is dropped if it has not
        started, and the prefetch thread ends. Later ``batch`` calls still work, decoding each
        batch when asked (the training loop closes its stream when it ends)."""
        if self._prefetch is not None:
            self._prefetch.shutdown(wait=False, cancel_futures=True)
            self._prefetch, self._ahead = None, None


def channel_stats():
    """(mean, std) float32 (3, 1, 1): ImageNet's, used for every folder data set."""
    np = backend.numpy
    return (np.asarray(IMAGENET_MEAN, np.float32).reshape(3, 1, 1),
            np.asarray(IMAGENET_STD, np.float32).reshape(3, 1, 1))


def load_folder(data_dir, size: int = 224, workers: int = 4) -> Dataset:
    """``data_dir/train`` and ``data_dir/val`` (or ``test``) as a Dataset of FolderImages."""
    check_positive_int("image_size", size, 8)
    check_positive_int("workers", workers)
    if not data_dir:
        raise DataError("the folder data set needs data_dir (--data-dir): a folder holding "
                        "train/<class>/<image> and val/<class>/<image>")
    train_paths, y_train, classes = scan_split(os.path.join(data_dir, "train"))
    test_dir = next((os.path.join(data_dir, s) for s in TEST_SPLITS
                     if os.path.isdir(os.path.join(data_dir, s))), os.path.join(data_dir, "val"))
    test_paths, y_test, test_classes = scan_split(test_dir)
    if test_classes != classes:
        missing = sorted(set(classes) ^ set(test_classes))
        raise DataError(f"the class folders of {test_dir!r} differ from train's: {missing} are in "
                        f"one but not the other (labels come from the sorted names, so both "
                        f"splits need the same classes)")
    return Dataset("folder", FolderImages(train_paths, size, workers, "train"), y_train,
                   FolderImages(test_paths, size, workers, os.path.basename(test_dir)), y_test,
                   classes)
