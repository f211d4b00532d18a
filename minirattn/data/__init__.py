"""Data sets (CIFAR-10/100, Fashion-MNIST, the embedded `shapes`), augmentation and batching."""
from __future__ import annotations

from .base import Dataset, DataError
from .cifar import load_cifar, write_cifar_archive
from .fashion_mnist import load_fashion_mnist
from .shapes import make_shapes
from .folder import FolderImages, FolderStream, channel_stats, load_folder
from .pipeline import BatchStream, augment, eval_batches, normalize, pixel_mean

from .kinds import DATASETS, KINDS, SHAPES_SIZES, kind

from ..checks import check_choice, check_positive_int


def load_dataset(name: str, data_dir=None, download=False, *, n_train=None, n_test=None, seed=0,
                 need_train=True, progress=False, image_size=None, workers=4) -> Dataset:
    """The one entry point to the data sets: "cifar10", "cifar100", "fashion-mnist", "shapes",
    "folder" (``data_dir``/train/<class>/<image> and val/...; images decoded when indexed, at
    ``image_size`` pixels, 224 when None, by ``workers`` threads: data/folder.py).

    n_train / n_test keep the first images of each split (``shapes`` generates that many,
    :data:`SHAPES_SIZES` when None, from ``seed``; a folder keeps images spread over its file
    list: data/kinds.py); need_train=False leaves the training split empty (evaluation reads only
    the test split). Training, evaluation and the mask pictures all load their data here, so they
    see the same images.
    """
    check_choice("dataset", name, DATASETS)
    for what, n in (("n_train", n_train), ("n_test", n_test)):
        if n is not None:
            check_positive_int(what, n)
    k = kind(name)
    data = k.load(data_dir, download, seed=seed, n_train=n_train, n_test=n_test,
                  need_train=need_train, progress=progress, image_size=image_size, workers=workers)
    return k.thin(data, n_train, n_test, need_train)


__all__ = [
    "Dataset",
    "DataError",
    "DATASETS",
    "KINDS",
    "kind",
    "load_dataset",
    "load_cifar",
    "write_cifar_archive",
    "load_fashion_mnist",
    "make_shapes",
    "load_folder",
    "FolderImages",
    "FolderStream",
    "channel_stats",
    "SHAPES_SIZES",
    "BatchStream",
    "augment",
    "eval_batches",
    "normalize",
    "pixel_mean",
]
