"""Max pooling and global average pooling.

Derivation: docs/math/pool.md

``method="textbook"`` is the definition, :func:`_maxpool_textbook` / :func:`_unpool_textbook`:
the kh kw strided views of the padded input stacked, their max and the index of the first view
that reaches it (row-major window order, so on ties the whole gradient goes to the first maximum,
as docs/conventions.md decides); the backward adds dy back through the view that won.

``method="separable"`` (what ``"auto"`` runs) gives the same numbers with kh + kw views instead of
kh kw, and without the stacked copy: the max over a kh x kw window is the max over its rows of the
max along each row. Forward takes the running max along rows (kw strided slices), then along
columns (kh slices), keeping in each pass the first offset that reaches the max (a later value
must be strictly greater to win). The first row holding the window's max, and the first column of
that row holding it, is exactly the first maximum in row-major order. Backward routes each dy to
that element: on NumPy by one ``bincount`` over flat indices, on CuPy by the reverse of the two
passes (no host read-back, a fixed order of sums). Padding is -inf, so it never wins.
"""
from __future__ import annotations

from .. import backend
from ..checks import check_array, check_choice, pair
from .conv import conv_output_size

#: The values of ``maxpool2d_forward(..., method=...)``.
POOL_METHODS = ("auto", "textbook", "separable")


def _windows(xpad, kh, kw, sh, sw, Ho, Wo):
    """The kh kw strided views of the padded input, one per window offset (u, v) in row-major
    order: view k = u kw + v holds, at output (i, j), xpad[sh i + u, sw j + v]."""
    return [xpad[:, :, u:u + sh * (Ho - 1) + 1:sh, v:v + sw * (Wo - 1) + 1:sw]
            for u in range(kh) for v in range(kw)]


# -- the textbook pair ------------------------------------------------------------------------
def _maxpool_textbook(xpad, kh, kw, sh, sw, Ho, Wo):
    """y = the max over each window; arg = the offset k of its first maximum."""
    windows = backend.xp_of(xpad).stack(_windows(xpad, kh, kw, sh, sw, Ho, Wo))
    return windows.max(axis=0), windows.argmax(axis=0)   # argmax: the first maximum


def _unpool_textbook(dy, arg, padded_shape, kh, kw, sh, sw):
    """dxpad[sh i + u, sw j + v] += dy[i, j] where window (i, j)'s first maximum is k = u kw + v."""
    xp = backend.xp_of(dy)
    dxpad = xp.zeros(padded_shape, dtype=dy.dtype)
    Ho, Wo = dy.shape[2:]
    for k, view in enumerate(_windows(dxpad, kh, kw, sh, sw, Ho, Wo)):
        view += dy * (arg == k)
    return dxpad


@backend.fuse
def _first_max(xp, *views):
    """(the elementwise max over equally shaped views, the index (uint8) of the first view that
    reaches it): one kernel on CuPy. Where v > y (strictly: ties keep the first maximum) the
    index becomes k; k grows from view to view, so that is a max (and ~40x faster on NumPy than
    ``copyto(arg, k, where=v > y)`` or ``where()``)."""
    if len(views) == 1:                                 # a window one wide
        return views[0] * 1, (views[0] != views[0]) * xp.uint8(0)
    arg = (views[1] > views[0]) * xp.uint8(1)
    y = xp.maximum(views[0], views[1])
    for k, v in enumerate(views[2:], start=2):       # in place: on NumPy no new arrays
        xp.maximum(arg, (v > y) * xp.uint8(k), out=arg)
        xp.maximum(y, v, out=y)
    return y, arg


@backend.fuse
def _add_where(xp, target, g, offsets, u):
    """target += g where offsets == u, in place."""
    target += g * (offsets == u)


def maxpool2d_forward(x, kernel_size=3, stride=2, padding=1, *, method="auto"):
    """x: (N, C, H, W) -> y: (N, C, Ho, Wo), Ho = floor((H + 2p - k) / s) + 1.
    method: "auto" (= "separable") | "textbook" | "separable" (module docstring)."""
    check_array("maxpool input x", x, ndim=4)
    check_choice("maxpool method", method, POOL_METHODS)
    kh, kw = pair("kernel_size", kernel_size, 1)
    sh, sw = pair("stride", stride, 1)
    ph, pw = pair("padding", padding, 0)
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"maxpool: padding {(ph, pw)} must be at most half the kernel {(kh, kw)}")
    N, C, H, W = x.shape
    if kh > H + 2 * ph or kw > W + 2 * pw:
        raise ValueError(f"maxpool: kernel {kh}x{kw} is larger than the padded input "
                         f"{H + 2 * ph}x{W + 2 * pw}")
    if max(kh, kw) > 255:
        raise ValueError(f"maxpool: kernel {kh}x{kw} has a side longer than 255")
    Ho, Wo = conv_output_size(H, kh, sh, ph), conv_output_size(W, kw, sw, pw)
    xpad = backend.pad(x, ph, pw, value=-float("inf"))
    if method == "textbook":
        y, arg = _maxpool_textbook(xpad, kh, kw, sh, sw, Ho, Wo)
        return y, ("textbook", x.shape, arg, (kh, kw), (sh, sw), (ph, pw))
    # along each row: r[..., h, j] = max_v xpad[..., h, sw j + v], a_w = the first such v
    r, a_w = _first_max(*[xpad[:, :, :, v:v + sw * (Wo - 1) + 1:sw] for v in range(kw)])
    # along each column of r: y[..., i, j] = max_u r[..., sh i + u, j], a_h = the first such u
    y, a_h = _first_max(*[r[:, :, u:u + sh * (Ho - 1) + 1:sh, :] for u in range(kh)])
    return y, ("separable", x.shape, (a_h, a_w), (kh, kw), (sh, sw), (ph, pw))


def maxpool2d_backward(dy, cache):
    """dx: every dy goes to the (first) maximum of its window.

    After the textbook forward, :func:`_unpool_textbook`. After the separable one, two ways, the
    same sums: on NumPy :func:`_backward_by_bincount` (one pass, the fastest there); on CuPy
    :func:`_backward_by_offsets`, because CuPy's ``bincount`` reads its input's range back to the
    host (two device syncs) and sums with atomics (last bits vary from run to run), while the
    offsets way reads nothing back and adds in a fixed order (docs/math/pool.md).
    """
    method, shape, arg, (kh, kw), (sh, sw), (ph, pw) = cache
    if method == "textbook":
        N, C, H, W = shape
        dxpad = _unpool_textbook(dy, arg, (N, C, H + 2 * ph, W + 2 * pw), kh, kw, sh, sw)
        return backend.xp_of(dy).ascontiguousarray(dxpad[:, :, ph:ph + H, pw:pw + W])
    if backend.name_of(dy) == "numpy":
        return _backward_by_bincount(dy, cache)
    return _backward_by_offsets(dy, cache)


def _backward_by_bincount(dy, cache):
    """The maximum of output (i, j) sits at padded row sh i + u and column sw j + v, with u = a_h
    and v = a_w at that row; dy is summed into those flat positions with one ``bincount`` (windows
    overlap when the stride is below the kernel, so several outputs may pick the same input)."""
    _, shape, (a_h, a_w), (kh, kw), (sh, sw), (ph, pw) = cache
    xp = backend.xp_of(dy)
    N, C, H, W = shape
    Ho, Wo = dy.shape[2], dy.shape[3]
    Hp, Wp = H + 2 * ph, W + 2 * pw
    v = xp.zeros(dy.shape, dtype=xp.uint8)          # the column offset in the winning row
    for u in range(kh):
        v += (a_h == u) * a_w[:, :, u:u + sh * (Ho - 1) + 1:sh, :]
    idx = a_h.astype(xp.intp)  # flat index into the padded (N, C, Hp, Wp) input
    idx *= Wp
    idx += v
    idx += (xp.arange(Ho) * (sh * Wp)).reshape(Ho, 1) + xp.arange(Wo) * sw       # window corners
    idx += (xp.arange(N * C) * (Hp * Wp)).reshape(N, C, 1, 1)                    # planes
    dxpad = xp.bincount(idx.ravel(), weights=dy.ravel(), minlength=N * C * Hp * Wp)
    return xp.ascontiguousarray(
        dxpad.reshape(N, C, Hp, Wp)[:, :, ph:ph + H, pw:pw + W], dtype=dy.dtype
    )


def _backward_by_offsets(dy, cache):
    """The reverse of the two separable passes: dy goes down the columns to the row maximum it came
    from (row offset u = a_h), then along that row to the input it came from (column offset
    v = a_w). Each pass is one strided add per kernel offset, masked by the recorded offset:
    kh + kw adds in a fixed order, no scatter, nothing read back to the host."""
    _, shape, (a_h, a_w), (kh, kw), (sh, sw), (ph, pw) = cache
    xp = backend.xp_of(dy)
    N, C, H, W = shape
    Ho, Wo = dy.shape[2], dy.shape[3]
    Hp, Wp = H + 2 * ph, W + 2 * pw
    dr = xp.zeros((N, C, Hp, Wo), dtype=dy.dtype)      # the gradient of the row maxima r
    for u in range(kh):
        _add_where(dr[:, :, u:u + sh * (Ho - 1) + 1:sh, :], dy, a_h, xp.uint8(u))
    dxpad = xp.zeros((N, C, Hp, Wp), dtype=dy.dtype)
    for v in range(kw):
        _add_where(dxpad[:, :, :, v:v + sw * (Wo - 1) + 1:sw], dr, a_w, xp.uint8(v))
    return xp.ascontiguousarray(dxpad[:, :, ph:ph + H, pw:pw + W])


def global_avgpool_forward(x):
    """x: (N, C, H, W) -> y: (N, C), the mean over positions."""
    check_array("global average pool input x", x, ndim=4)
    return x.mean(axis=(2, 3)), x.shape


def global_avgpool_backward(dy, cache):
    """dx[n, c, h, w] = dy[n, c] / (H W)."""
    N, C, H, W = cache
    xp = backend.xp_of(dy)
    return xp.broadcast_to((dy / (H * W)).reshape(N, C, 1, 1), cache).copy()
