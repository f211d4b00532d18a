"""Checkpoints written atomically and verified when read.

File layout: the 8-byte magic ``RATTNCK1``, the 64-character hex SHA-256 of the payload,
then the payload: an ``.npz`` (no pickle) holding every array plus one JSON document of
metadata. Written to a temporary file in the same folder, flushed, fsync'ed, renamed over
the target, and the folder fsync'ed: a write killed midway leaves the previous checkpoint
untouched. Reading recomputes the hash and refuses a file that does not match.
"""
from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import re

from .. import backend
from ..files import write_atomically

MAGIC = b"RATTNCK1"


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated or corrupt."""


class CheckpointWriteError(OSError):
    """A checkpoint, metrics file or checkpoint folder cannot be written; the message names the
    path, the cause and what to do."""


def save_checkpoint(path: str, arrays: dict, meta: dict) -> str:
    """Atomically write ``arrays`` (name -> array, any backend) and JSON-able ``meta`` to
    ``path``."""
    np = backend.numpy
    buf = io.BytesIO()
    host = {k: backend.to_numpy(v) for k, v in arrays.items()}
    host["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(buf, **host)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    write_atomically(path, MAGIC + digest + payload, suffix=".ckpt")
    try:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - some filesystems refuse directory fsync
        pass
    return path


def load_checkpoint(path: str):
    """Read and verify a checkpoint; returns (arrays as NumPy, meta)."""
    np = backend.numpy
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} is a folder, not a checkpoint file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    if len(raw) < 72 or raw[:8] != MAGIC:
        raise CheckpointError(f"{path} is not a minirattn checkpoint (bad header) or is truncated")
    digest, payload = raw[8:72].decode(errors="replace"), raw[72:]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"{path} is corrupt: its SHA-256 does not match the one recorded "
                              f"when it was written")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    except Exception as exc:      # a consistent hash over a payload that is not ours
        raise CheckpointError(f"{path} is not a minirattn checkpoint: its payload cannot be read "
                              f"({exc})") from exc
    return arrays, meta


_NAME = re.compile(r"ckpt-(\d+)\.rattn$")


def checkpoint_name(iteration: int) -> str:
    return f"ckpt-{iteration:08d}.rattn"


def list_checkpoints(folder: str):
    """Checkpoint paths in ``folder``, oldest first."""
    paths = [p for p in glob.glob(os.path.join(folder, "ckpt-*.rattn")) if _NAME.search(p)]
    return sorted(paths, key=lambda p: int(_NAME.search(p).group(1)))


def latest_valid_checkpoint(folder: str, warn=print):
    """The newest checkpoint that verifies, skipping (and reporting) damaged ones; None if none."""
    for path in reversed(list_checkpoints(folder)):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as exc:
            warn(f"skipping damaged checkpoint: {exc}")
    return None


def remove_stale_temporaries(folder: str) -> list:
    """Delete the temporary files that writes killed midway left in ``folder`` (``.tmp-*.ckpt``
    of :func:`save_checkpoint`, ``.tmp-*.part`` of :func:`~minirattn.files.write_atomically`, and
    ``metrics.json.tmp`` of earlier versions); returns their paths."""
    stale = glob.glob(os.path.join(folder, ".tmp-*.ckpt")) + \
        glob.glob(os.path.join(folder, ".tmp-*.part")) + \
        glob.glob(os.path.join(folder, "metrics.json.tmp"))
    for path in stale:
        os.remove(path)
    return stale


def prune_checkpoints(folder: str, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    for path in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        os.remove(path)
