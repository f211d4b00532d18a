"""Fashion-MNIST from the official gzip IDX files.

Looked for in ``data_dir`` when one is given, else where Debian's ``dataset-fashion-mnist``
package puts them (/usr/share/datasets/fashion-mnist). The 28x28 images are zero-padded to 32x32
(``pad_to``) so the networks' pools halve them exactly.
"""
from __future__ import annotations

import gzip
import os

from .. import backend
from .base import DataError, Dataset

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]


def read_idx(path: str):
    """Read a (gzip) IDX file: magic 0x0000 08 <ndim>, big-endian dims, uint8 data."""
    np = backend.numpy
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable (gzip) IDX file: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: expected an unsigned-byte IDX file (magic 0x000008..), got "
                        f"{raw[:4]!r}")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: the IDX header announces {ndim} dimensions but the file ends "
                        f"after {len(raw)} bytes, inside the header")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        how = "truncated" if data.size < int(np.prod(dims)) else "longer than its header says"
        raise DataError(f"{path}: header says {dims} ({int(np.prod(dims))} bytes) but {data.size} "
                        f"follow; the file is {how}")
    return data.reshape(dims)


def find_fashion_mnist(data_dir: str | None = None) -> str:
    """The folder holding the four files: ``data_dir`` if given (and only it), else Debian's."""
    candidates = [data_dir] if data_dir else [DEBIAN_DIR]
    for d in candidates:
        if d and all(os.path.exists(os.path.join(d, f)) for f in FILES):
            return d
    where = " or ".join(c for c in candidates if c)
    raise DataError(f"Fashion-MNIST not found in {where}: expected {', '.join(FILES)}; install "
                    f"Debian's dataset-fashion-mnist package (apt-get install "
                    f"dataset-fashion-mnist) or pass data_dir")


def load_fashion_mnist(data_dir: str | None = None, pad_to: int = 32) -> Dataset:
    np = backend.numpy
    d = find_fashion_mnist(data_dir)
    xtr, ytr, xte, yte = (read_idx(os.path.join(d, f)) for f in FILES)
    for name, a, ndim in zip(FILES, (xtr, ytr, xte, yte), (3, 1, 3, 1)):
        if a.ndim != ndim:
            raise DataError(f"{os.path.join(d, name)}: expected {ndim} dimensions "
                            f"({'images, rows, columns' if ndim == 3 else 'labels'}), got shape "
                            f"{a.shape}")
    for name, y in ((FILES[1], ytr), (FILES[3], yte)):
        if len(y) and y.max() >= len(CLASSES):
            raise DataError(f"{os.path.join(d, name)}: labels must lie in [0, {len(CLASSES)}), got "
                            f"a label {int(y.max())}")
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise DataError(f"{d}: image and label counts differ ({len(xtr)}/{len(ytr)}, "
                        f"{len(xte)}/{len(yte)})")
    p = max(0, (pad_to - xtr.shape[1]) // 2)

    def prep(x):
        x = x[:, None]
        return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
    return Dataset(
        "fashion-mnist",
        prep(xtr),
        ytr.astype(np.int64),
        prep(xte),
        yte.astype(np.int64),
        list(CLASSES),
    )
