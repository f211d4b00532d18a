"""Max pooling and global average pooling.

Derivation: docs/math/pool.md

Max pooling walks the kernel offsets in row-major order and keeps the first
maximum (a later value must be strictly greater to win), so on ties the whole
gradient goes to the first maximum in the window, as DESIGN.md decides. Padding
is -inf, so it never wins. Forward stores the winning offset per output (uint8);
backward adds dy back at that offset, one strided slice per offset: no scatter.
"""
from __future__ import annotations

from .. import backend
from ._checks import check_array, pair
from .conv import conv_output_size


def maxpool2d_forward(x, kernel_size=3, stride=2, padding=1):
    """x: (N, C, H, W) -> y: (N, C, Ho, Wo), Ho = floor((H + 2p - k) / s) + 1."""
    check_array("maxpool input x", x, ndim=4)
    kh, kw = pair("kernel_size", kernel_size, 1)
    sh, sw = pair("stride", stride, 1)
    ph, pw = pair("padding", padding, 0)
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"maxpool: padding {(ph, pw)} must be at most half the kernel {(kh, kw)}")
    N, C, H, W = x.shape
    if kh > H + 2 * ph or kw > W + 2 * pw:
        raise ValueError(f"maxpool: kernel {kh}x{kw} is larger than the padded input {H + 2 * ph}x{W + 2 * pw}")
    if kh * kw > 255:
        raise ValueError(f"maxpool: kernel {kh}x{kw} has more than 255 offsets")
    xp = backend.xp_of(x)
    Ho, Wo = conv_output_size(H, kh, sh, ph), conv_output_size(W, kw, sw, pw)
    xpad = backend.pad(x, ph, pw, value=-float("inf"))
    y = xpad[:, :, 0:sh * (Ho - 1) + 1:sh, 0:sw * (Wo - 1) + 1:sw].copy()
    arg = xp.zeros((N, C, Ho, Wo), dtype=xp.uint8)
    for k in range(1, kh * kw):
        i, j = divmod(k, kw)
        v = xpad[:, :, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw]
        better = v > y                       # strictly greater: ties keep the first maximum
        xp.copyto(arg, k, where=better)
        xp.maximum(y, v, out=y)
    return y, (x.shape, arg, (kh, kw), (sh, sw), (ph, pw))


def maxpool2d_backward(dy, cache):
    """dx: every dy goes to the (first) maximum of its window."""
    shape, arg, (kh, kw), (sh, sw), (ph, pw) = cache
    xp = backend.xp_of(dy)
    N, C, H, W = shape
    Ho, Wo = dy.shape[2], dy.shape[3]
    dxpad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=dy.dtype)
    for k in range(kh * kw):
        i, j = divmod(k, kw)
        dxpad[:, :, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw] += xp.where(arg == k, dy, 0)
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


