"""CIFAR-10 and CIFAR-100 from the official python tarballs.

Looked for in ``data_dir``: the extracted folder (``cifar-10-batches-py/`` or
``cifar-100-python/``), else the tarball (read in place, after its MD5 is checked), else,
with ``download=True``, the tarball is fetched from the official address (see download.py).
The pickles are read with ``encoding="bytes"`` as the official page says.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile

from .. import backend
from ..checks import check_choice
from .base import DataError, Dataset
from .download import download as fetch, md5_of

SOURCES = {
    "cifar10": dict(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        file="cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        train=[f"data_batch_{i}" for i in range(1, 6)],
        test=["test_batch"],
        meta="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
        classes=10,
    ),
    "cifar100": dict(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        file="cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        train=["train"],
        test=["test"],
        meta="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
        classes=100,
    ),
}


def _unpickle(raw: bytes, what: str):
    try:
        return pickle.loads(raw, encoding="bytes")
    except Exception as exc:
        raise DataError(f"{what} is not a readable CIFAR pickle ({exc}); the files are damaged: "
                        f"delete them and download again") from exc


def _batch_arrays(b, src, what, n_classes):
    """(images (n, 3, 32, 32) uint8, labels (n,) int64) of one official batch, or a DataError
    naming the member and what it holds instead of the official layout."""
    np = backend.numpy
    if not isinstance(b, dict) or b"data" not in b or src["label_key"] not in b:
        raise DataError(f"{what}: expected a dict with b'data' and {src['label_key']!r} (an "
                        f"official CIFAR batch), got {type(b).__name__}")
    data, labels = b[b"data"], b[src["label_key"]]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        desc = (f"dtype {data.dtype}, shape {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise DataError(f"{what}: expected b'data' as a uint8 array of shape (n, 3072), got {desc}")
    try:
        labels = np.asarray(labels)
    except Exception as exc:                    # ragged or otherwise not a list of numbers
        raise DataError(f"{what}: its labels are not a list of integers ({exc})") from exc
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{what}: expected the labels as a list of integers, got dtype "
                        f"{labels.dtype}, shape {labels.shape}")
    if len(labels) != len(data):
        raise DataError(f"{what}: {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"{what}: labels must lie in [0, {n_classes}), got range "
                        f"[{labels.min()}, {labels.max()}]")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _stack(batches, src, where, names, n_classes):
    np = backend.numpy
    parts = [_batch_arrays(b, src, f"{where}/{n}", n_classes) for n, b in zip(names, batches)]
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def _read(open_member, src, where):
    train = [_unpickle(open_member(n), f"{where}/{n}") for n in src["train"]]
    test = [_unpickle(open_member(n), f"{where}/{n}") for n in src["test"]]
    meta = _unpickle(open_member(src["meta"]), f"{where}/{src['meta']}")
    if not isinstance(meta, dict):
        raise DataError(f"{where}/{src['meta']}: expected a dict of class names, got "
                        f"{type(meta).__name__}")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(src["names_key"], [])]
    x_train, y_train = _stack(train, src, where, src["train"], src["classes"])
    x_test, y_test = _stack(test, src, where, src["test"], src["classes"])
    return x_train, y_train, x_test, y_test, names


def load_cifar(name: str = "cifar10", data_dir: str | None = None, download: bool = False,
               url: str | None = None, md5: str | None = None, progress: bool = False) -> Dataset:
    """Load CIFAR-10 (``name="cifar10"``) or CIFAR-100 (``"cifar100"``, fine labels)."""
    check_choice("CIFAR variant", name, sorted(SOURCES))
    src = SOURCES[name]
    url, md5 = url or src["url"], md5 or src["md5"]
    data_dir = os.path.expanduser(data_dir or os.path.join("~", ".cache", "minirattn"))
    folder = os.path.join(data_dir, src["folder"])
    tarball = os.path.join(data_dir, src["file"])
    if os.path.isdir(folder):
        def open_member(n):
            path = os.path.join(folder, n)
            if not os.path.exists(path):
                raise DataError(f"{folder} lacks {n}: the extracted {name} folder is incomplete; "
                                f"delete it and extract or download the archive again")
            with open(path, "rb") as f:
                return f.read()
        parts = _read(open_member, src, folder)
    else:
        if not os.path.exists(tarball):
            if not download:
                raise DataError(f"{name} not found in {data_dir}: expected the folder "
                                f"{src['folder']}/ or the "
                                f"archive {src['file']}; pass download=True (--download) to fetch "
                                f"it from {url}")
            fetch(url, tarball, md5, progress=progress)
        else:
            got = md5_of(tarball)
            if got != md5:
                raise DataError(f"{tarball} is corrupt or truncated (MD5 {got}, expected {md5}); "
                                f"delete it and download again (download=True)")
        with tarfile.open(tarball, "r:gz") as tar:
            def open_member(n):
                try:
                    return tar.extractfile(f"{src['folder']}/{n}").read()
                except KeyError as exc:
                    raise DataError(
                        f"{tarball} lacks {src['folder']}/{n}: not the official archive"
                    ) from exc
            parts = _read(open_member, src, tarball)
    x_train, y_train, x_test, y_test, names = parts
    n_classes = src["classes"]
    names = names if len(names) == n_classes else [str(i) for i in range(n_classes)]
    return Dataset(name, x_train, y_train, x_test, y_test, names)


def write_cifar_archive(path: str, name: str = "cifar10", n_train_per_batch: int = 10,
                        n_test: int = 10, seed: int = 0) -> str:
    """Write a tiny archive in the exact official format (for tests and offline demos).

    Returns its MD5. Same member names, pickled dicts with bytes keys and uint8 rows of 3072.
    """
    np = backend.numpy
    src = SOURCES[name]
    rng = np.random.default_rng(seed)
    k = 10 if name == "cifar10" else 100

    def batch(n, label):
        d = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            src["label_key"]: [int(v) for v in rng.integers(0, k, n)],
            b"batch_label": label.encode(),
        }
        if name == "cifar100":
            d[b"coarse_labels"] = [int(v) // 5 for v in d[src["label_key"]]]
        return d
    members = {n: batch(n_train_per_batch, n) for n in src["train"]}
    members.update({n: batch(n_test, n) for n in src["test"]})
    members[src["meta"]] = {src["names_key"]: [f"class{i}".encode() for i in range(k)]}
    with tarfile.open(path, "w:gz") as tar:
        for n, obj in members.items():
            raw = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"{src['folder']}/{n}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return md5_of(path)
