"""The Dataset container every loader returns."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Dataset:
    """Images as uint8 (N, C, H, W) on the host, labels as int64 (N,)."""
    name: str
    x_train: object
    y_train: object
    x_test: object
    y_test: object
    classes: list = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])

    def __repr__(self):
        return (f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}, "
                f"test={tuple(self.x_test.shape)}, classes={self.num_classes})")


class DataError(ValueError):
    """A data set could not be found or read; the message says what to do."""
