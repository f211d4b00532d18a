"""Per-channel reductions over (N, H, W) of NCHW arrays, shared by batch norm and conv.

On NumPy the sums of products are matrix products, which run about twice as fast as
``a.sum(axis=(0, 2, 3))`` there; on CuPy each function is one reduction kernel (a matrix product
would cost a ones vector, the product and a sum over N: three launches), the elementwise part
fused into it (``backend.fuse``). The result is the same sum either way.
"""
from __future__ import annotations

from .. import backend

_AXES = (0, 2, 3)


@backend.fuse
def _sum_of_products(xp, a, b):
    return xp.sum(a * b, axis=_AXES)


def channel_sum(a):
    """sum over N, H, W of an (N, C, H, W) array -> (C,)."""
    xp = backend.xp_of(a)
    if xp is not backend.numpy:
        return a.sum(axis=_AXES)
    N, C, H, W = a.shape           # (H W spelled out: an empty batch reshapes too, giving zeros)
    return xp.matmul(a.reshape(N, C, H * W), xp.ones(H * W, dtype=a.dtype)).sum(axis=0)


def _dot_rows(a, b):
    """NumPy: sum over N, H, W of a * b without materialising the product: one dot product per
    (n, c) row as a batched (1, P) @ (P, 1) matrix product (about twice as fast as
    ``einsum("ncp,ncp->c")``), then a sum over n."""
    N, C, H, W = a.shape
    rows = backend.numpy.matmul(a.reshape(N, C, 1, H * W), b.reshape(N, C, H * W, 1))   # (N,C,1,1)
    return rows.reshape(N, C).sum(axis=0)


def channel_dot(a, b):
    """sum over N, H, W of a * b -> (C,)."""
    if backend.xp_of(a) is not backend.numpy:
        return _sum_of_products(a, b)
    return _dot_rows(a, b)


_CONSTANTS = {}


def device_constant(xp, host):
    """The small NumPy array ``host`` as an array of module ``xp``, made once per device (a
    constant the kernels read: no copy to the device inside a step)."""
    key = (backend.device_key(xp), host.dtype.str, host.shape, host.tobytes())
    if key not in _CONSTANTS:
        _CONSTANTS[key] = xp.asarray(host)
    return _CONSTANTS[key]


def sum_over_batch(t, into=None):
    """t.sum(axis=0); or, given ``into`` (t.shape[1:]'s size), that sum added into it in place
    and ``into`` returned: on CuPy a row of ones times t, one GEMM with beta = 1 (the sum and
    the addition without a kernel of their own); on NumPy the sum and an in-place addition (a
    product with one row is slower there)."""
    if into is None:
        return t.sum(axis=0)
    xp, n = backend.xp_of(t), t.shape[0]
    if xp is backend.numpy or not into.flags.c_contiguous:   # (no flat view to write through)
        into += t.sum(axis=0).reshape(into.shape)
        return into
    ones = device_constant(xp, backend.numpy.ones((1, n), dtype=t.dtype))
    backend.matmul(ones, t.reshape(n, -1), out=into.reshape(1, -1), accumulate=True)
    return into
