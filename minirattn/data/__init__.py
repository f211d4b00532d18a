"""Data sets (CIFAR-10/100, Fashion-MNIST, the embedded `shapes`), augmentation and batching."""
from __future__ import annotations

from .base import Dataset, DataError
from .cifar import load_cifar, write_cifar_archive
from .fashion_mnist import load_fashion_mnist
from .shapes import make_shapes
from .folder import FolderImages, FolderStream, channel_stats, load_folder
from .pipeline import BatchStream, augment, eval_batches, normalize, pixel_mean

from ..checks import check_choice, check_positive_int

DATASETS = ("cifar10", "cifar100", "fashion-mnist", "shapes", "folder")

#: How many ``shapes`` images are generated when a size is left None: (train, test).
SHAPES_SIZES = (10000, 2000)


def load_dataset(name: str, data_dir=None, download=False, *, n_train=None, n_test=None, seed=0,
                 need_train=True, progress=False, image_size=None, workers=4) -> Dataset:
    """The one entry point to the data sets: "cifar10", "cifar100", "fashion-mnist", "shapes",
    "folder" (``data_dir``/train/<class>/<image> and val/...; images decoded when indexed, at
    ``image_size`` pixels, 224 when None, by ``workers`` threads: data/folder.py).

    n_train / n_test keep the first images of each split (``shapes`` generates that many,
    :data:`SHAPES_SIZES` when None, from ``seed``); need_train=False leaves the training split
    empty (evaluation reads only the test split). Training, evaluation and the mask pictures all
    load their data here, so they see the same images.
    """
    check_choice("dataset", name, DATASETS)
    for what, n in (("n_train", n_train), ("n_test", n_test)):
        if n is not None:
            check_positive_int(what, n)
    if name == "shapes":
        data = make_shapes(n_train or SHAPES_SIZES[0], n_test or SHAPES_SIZES[1], seed=seed,
                           train=need_train)
    elif name == "folder":
        data = load_folder(data_dir, image_size or 224, workers)
    elif name == "fashion-mnist":
        data = load_fashion_mnist(data_dir)
    else:
        data = load_cifar(name, data_dir, download, progress=progress)
    if name == "folder":              # a folder split is sliced by its file list, not decoded
        if not need_train:
            n_train = None
            data.x_train.paths, data.y_train = [], data.y_train[:0]
        # n images spread evenly over the sorted file list, so every class keeps its share
        for split, n in (("train", n_train), ("test", n_test)):
            images, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
            if n and n < len(y):
                keep = [round(i * (len(y) - 1) / max(n - 1, 1)) for i in range(n)]
                images.paths = [images.paths[i] for i in keep]
                setattr(data, f"y_{split}", y[keep])
        return data
    if image_size is not None:
        raise ValueError(f"image_size applies to the folder data set only; {name} images are "
                         f"{data.image_shape[1]} pixels")
    if not need_train:
        data.x_train, data.y_train = data.x_train[:0], data.y_train[:0]
    elif n_train:
        data.x_train, data.y_train = data.x_train[:n_train], data.y_train[:n_train]
    if n_test:
        data.x_test, data.y_test = data.x_test[:n_test], data.y_test[:n_test]
    return data


__all__ = [
    "Dataset",
    "DataError",
    "DATASETS",
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
