"""What sets the data sets apart, each kind in one place: how it is loaded and thinned, how its
images are normalised and streamed, and which of the paper's recipes trains on it.

Two kinds:

- :class:`ArrayKind` (CIFAR-10/100, Fashion-MNIST, the embedded ``shapes``): the whole split is a
  uint8 array in memory; normalisation subtracts the per-pixel mean image of the training split
  (Sec. 4.1); augmentation pads, crops and flips (pipeline.py); the paper's CIFAR recipe.
- :class:`FolderKind` (``folder``: ``data_dir``/train/<class>/ and val/<class>/, ImageNet's layout):
  images are decoded when a batch is sliced (folder.py), at ``image_size`` pixels; normalisation is
  per channel with ImageNet's mean and std; thinning keeps images spread evenly over the sorted
  file list (every class keeps its share); the paper's ImageNet recipe (batch 256, 530k
  iterations and its milestones: training/optim.py) is the default.

The training loop, the configuration and evaluation ask :func:`kind` and never test a data set's
name themselves.
"""
from __future__ import annotations

from .. import backend
from .base import Dataset, DataError
from .cifar import load_cifar
from .fashion_mnist import load_fashion_mnist
from .folder import FolderStream, centre_crop, channel_stats, eval_crop, load_folder, load_rgb
from .pipeline import BatchStream, pixel_mean
from .shapes import make_shapes

#: How many ``shapes`` images are generated when a size is left None: (train, test).
SHAPES_SIZES = (10000, 2000)

#: The smallest side of a picture :meth:`ArrayKind.image_input` takes (smaller holds too little
#: to crop a network input from).
MIN_IMAGE_SIDE = 8


class ArrayKind:
    """A data set held as uint8 arrays: the per-pixel mean image, the CIFAR recipe."""

    recipe = "cifar"                  # the paper's schedule it scales (training/optim.py)
    sized = False                     # whether image_size applies

    def __init__(self, name: str, loader, verb: str = "loading", pad: int = 0):
        self.name, self.loader, self.verb = name, loader, verb
        self.pad = pad                # zero border the data set's images have (Fashion-MNIST: 2)

    def load(self, data_dir, download, *, seed, n_train, n_test, need_train, progress,
             image_size, workers) -> Dataset:
        """The full data set (``shapes``: generated, n_train / n_test images from ``seed``)."""
        if image_size is not None:
            raise ValueError(f"image_size applies to the folder data set only; {self.name} "
                             f"images have a fixed size")
        return self.loader(data_dir=data_dir, download=download, seed=seed, n_train=n_train,
                           n_test=n_test, need_train=need_train, progress=progress)

    def thin(self, data: Dataset, n_train, n_test, need_train: bool) -> Dataset:
        """Keep the first ``n_train`` / ``n_test`` images (none of the training split without
        ``need_train``)."""
        if not need_train:
            data.x_train, data.y_train = data.x_train[:0], data.y_train[:0]
        elif n_train:
            data.x_train, data.y_train = data.x_train[:n_train], data.y_train[:n_train]
        if n_test:
            data.x_test, data.y_test = data.x_test[:n_test], data.y_test[:n_test]
        return data

    def normalization(self, x_train):
        """(mean, std) the run's images are normalised with: the per-pixel mean image of the
        training split, and no std."""
        return pixel_mean(x_train), None

    def saved_std(self):
        """The std a trained run divided by (its mean is saved in the checkpoint): None."""
        return None

    def stream(self, x_train, y_train, mean, std, batch_size, *, seed, augment):
        """The seeded stream of (augmented) training batches."""
        return BatchStream(x_train, y_train, mean, batch_size, seed=seed, augment_data=augment)

    def test_split_args(self, saved: dict, n_test) -> dict:
        """How the test split of a saved run is loaded again: the same generated images
        (``seed``, ``n_test`` of the run); thinned to ``n_test`` afterwards."""
        return dict(n_test=saved.get("n_test"), seed=saved["seed"])

    def image_input(self, path: str, image_shape) -> object:
        """uint8 (C, H, W) from the picture at ``path`` (any size, any Pillow mode), made as the
        data set's own images are: greyscale or RGB as C says, the shorter side resized to the
        image size (less the data set's zero border), the centre crop, the border added back.
        DataError when it is not a picture or is smaller than :data:`MIN_IMAGE_SIDE`."""
        c, h, _ = image_shape
        im = _checked(load_rgb(path, advice=""), path)
        inner, p = h - 2 * self.pad, self.pad
        x = centre_crop(im.convert("L") if c == 1 else im, inner, inner)
        return backend.numpy.pad(x, ((0, 0), (p, p), (p, p))) if p else x


class FolderKind(ArrayKind):
    """Folders of images, decoded when sliced: ImageNet's statistics and recipe."""

    recipe = "imagenet"
    sized = True

    def __init__(self, name: str = "folder"):
        super().__init__(name, load_folder)

    def load(self, data_dir, download, *, seed, n_train, n_test, need_train, progress,
             image_size, workers) -> Dataset:
        return self.loader(data_dir, image_size or 224, workers)

    def thin(self, data: Dataset, n_train, n_test, need_train: bool) -> Dataset:
        """``n`` images spread evenly over each split's sorted file list (a folder split is sliced
        by its file list, not decoded), so every class keeps its share."""
        if not need_train:
            n_train = None
            data.x_train.paths, data.y_train = [], data.y_train[:0]
        for split, n in (("train", n_train), ("test", n_test)):
            images, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
            if n and n < len(y):
                keep = [round(i * (len(y) - 1) / max(n - 1, 1)) for i in range(n)]
                images.paths = [images.paths[i] for i in keep]
                setattr(data, f"y_{split}", y[keep])
        return data

    def normalization(self, x_train):
        """ImageNet's per-channel (mean, std), whatever the images."""
        return channel_stats()

    def saved_std(self):
        return channel_stats()[1]

    def stream(self, x_train, y_train, mean, std, batch_size, *, seed, augment):
        return FolderStream(x_train, y_train, mean, std, batch_size, seed=seed,
                            augment_data=augment)

    def test_split_args(self, saved: dict, n_test) -> dict:
        """Thinned while loading (a folder split decodes when sliced), at the run's crop size."""
        return dict(n_test=n_test or saved.get("n_test"), image_size=saved.get("image_size"))

    def image_input(self, path: str, image_shape) -> object:
        """The evaluation crop of the folder data set: RGB, the shorter side resized to
        size / 0.875, the centre (folder.py)."""
        return eval_crop(_checked(load_rgb(path, advice=""), path), image_shape[1])


def _checked(im, path):
    if min(im.width, im.height) < MIN_IMAGE_SIDE:
        raise DataError(f"{path} is {im.width}x{im.height} pixels: too small to crop a network "
                        f"input from (at least {MIN_IMAGE_SIDE} pixels on each side)")
    return im


def _cifar(name):
    return lambda data_dir, download, progress, **_: load_cifar(name, data_dir, download,
                                                               progress=progress)


def _shapes(seed, n_train, n_test, need_train, **_):
    return make_shapes(n_train or SHAPES_SIZES[0], n_test or SHAPES_SIZES[1], seed=seed,
                       train=need_train)


KINDS = {
    "cifar10": ArrayKind("cifar10", _cifar("cifar10")),
    "cifar100": ArrayKind("cifar100", _cifar("cifar100")),
    "fashion-mnist": ArrayKind("fashion-mnist", lambda data_dir, **_: load_fashion_mnist(data_dir),
                               pad=2),
    "shapes": ArrayKind("shapes", _shapes, verb="generating"),
    "folder": FolderKind(),
}
DATASETS = tuple(KINDS)


def kind(name: str) -> ArrayKind:
    """The kind of data set ``name`` (one of :data:`DATASETS`; checked by the caller)."""
    return KINDS[name]
