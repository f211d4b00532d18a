"""How large a convolution's column buffer may be, and the batch chunks that keep it there.

Shared by the textbook im2col path (``conv.py``) and the phase-plane path (``conv_planes.py``).
"""
from __future__ import annotations

from .. import backend

#: Upper bound in bytes of one column buffer on NumPy; the batch is chunked to stay below it (a
#: chunk holds at least one sample). Small is fast: 2 MiB chunks are written and read back while
#: they sit in cache, and made a whole Attention-56 training step ~10% faster than 64 MiB
#: (benchmarks/README.md).
MAX_COL_BYTES = 2 * 2**20

#: The same bound on CuPy. A GPU has no cache to fit and pays a kernel launch per copy, so few
#: large chunks: 256 MiB holds a whole batch of 64 at the networks' shapes. Not yet measured on a
#: GPU; benchmarks/bench.py's GPU half is where to tune it.
MAX_COL_BYTES_CUPY = 256 * 2**20


def chunks(N, bytes_per_sample, like, max_col_bytes=None):
    """[(start, end), ...] covering range(N), each chunk's columns within ``max_col_bytes``
    (default: MAX_COL_BYTES, or MAX_COL_BYTES_CUPY for a CuPy array ``like``), >= 1 sample each."""
    if max_col_bytes is None:
        max_col_bytes = MAX_COL_BYTES_CUPY if backend.name_of(like) == "cupy" else MAX_COL_BYTES
    step = max(1, int(max_col_bytes // max(1, bytes_per_sample)))
    return [(s, min(N, s + step)) for s in range(0, N, step)]
