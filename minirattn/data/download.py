"""Downloads that never leave a half-written file where a good one is expected.

The bytes go to ``<dest>.part``; an interrupted download keeps the part and the next
call resumes it with an HTTP Range request (starting over if the server ignores it).
Only when the whole file's MD5 matches is the part fsync'ed and renamed to ``dest``.
"""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request

from .base import DataError

CHUNK = 1 << 20


def md5_of(path: str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: str, md5: str, progress: bool = False, timeout: float = 60.0) -> str:
    """Fetch ``url`` to ``dest`` (resuming ``dest + '.part'``), check ``md5``, rename.
    Returns dest."""
    part = dest + ".part"
    os.makedirs(os.path.dirname(os.path.abspath(dest)) or ".", exist_ok=True)
    have = os.path.getsize(part) if os.path.exists(part) else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    bar = None
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resumed = have > 0 and resp.status == 206
            mode = "ab" if resumed else "wb"
            if not resumed:
                have = 0
            total = resp.headers.get("Content-Length")
            total = int(total) + have if total is not None else None
            if progress:
                bar = _bar(total, have, os.path.basename(dest))
            with open(part, mode) as f:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    f.write(block)
                    if bar is not None:
                        bar.update(len(block))
                f.flush()
                os.fsync(f.fileno())
            got = os.path.getsize(part)
            if total is not None and got < total:
                raise ConnectionError(f"the connection closed after {got} of {total} bytes")
    except (urllib.error.URLError, OSError, ConnectionError) as exc:
        got = os.path.getsize(part) if os.path.exists(part) else 0
        raise DataError(f"download of {url} failed after {got} bytes ({exc}); the partial file "
                        f"{part} is kept and the next attempt resumes it") from exc
    finally:
        if bar is not None:
            bar.close()
    got = md5_of(part)
    if got != md5:
        os.remove(part)
        raise DataError(f"downloaded {url} but its MD5 is {got}, expected {md5}: the file was "
                        f"corrupt or truncated and has been deleted; try again")
    os.replace(part, dest)
    return dest


def _bar(total, initial, desc):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc=desc)
