"""Files written whole or not at all, and folders tested before anything is written there: what
checkpoints, metrics.json, pictures and ONNX files share."""
from __future__ import annotations

import os
import tempfile


def write_atomically(path: str, data: bytes, suffix: str = ".part") -> str:
    """Write ``data`` to a temporary file beside ``path``, fsync it and rename it into place: a
    reader sees the old file or the whole new one, and a failed write leaves no temporary."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix,
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def probe_folder(folder: str, what: str, advice: str = "", error=OSError) -> None:
    """Create ``folder`` and write a test file there; ``error`` naming ``what`` (e.g.
    "checkpoint_dir runs/a"), the cause and ``advice`` when it is a file or cannot be written."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise error(f"{what} is a file, not a folder{advice}")
    probe = os.path.join(folder, ".write-test")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"minirattn")
        os.remove(probe)
    except OSError as exc:
        raise error(f"cannot write in {what}: {exc.strerror or exc}{advice}") from exc
