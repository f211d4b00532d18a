"""Data sets (CIFAR-10/100, Fashion-MNIST, the embedded `shapes`), augmentation and batching."""
from __future__ import annotations

from .base import Dataset, DataError
from .cifar import load_cifar, write_cifar_archive
from .fashion_mnist import load_fashion_mnist
from .shapes import make_shapes
from .pipeline import BatchStream, augment, eval_batches, normalize, pixel_mean

DATASETS = ("cifar10", "cifar100", "fashion-mnist", "shapes")


def load_dataset(name: str, data_dir=None, download=False, progress=False, **kwargs) -> Dataset:
    """Load a data set by name: "cifar10", "cifar100", "fashion-mnist" or "shapes"."""
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, data_dir, download, progress=progress, **kwargs)
    if name == "fashion-mnist":
        return load_fashion_mnist(data_dir, **kwargs)
    if name == "shapes":
        return make_shapes(**kwargs)
    raise ValueError(f"unknown dataset {name!r}: expected one of {DATASETS}")


__all__ = ["Dataset", "DataError", "DATASETS", "load_dataset", "load_cifar", "write_cifar_archive",
           "load_fashion_mnist", "make_shapes", "BatchStream", "augment", "eval_batches", "normalize",
           "pixel_mean"]
