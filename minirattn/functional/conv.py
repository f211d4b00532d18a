"""2-D convolution (cross-correlation, as every framework), forward and backward.

Derivation: docs/math/conv.md

Four paths, all plain slicing and matrix products (no fancy indexing, no ``as_strided``):

* 1x1 with no padding needs no im2col at all: one matrix product over channels.
* stride 1 (every 3x3 convolution of the networks but the down-sampling ones) uses
  *flat windows*: in a zero-padded image flattened row by row (rows W + p wide: a
  row's right padding is the next row's left padding), the inputs kernel offset
  (u, v) reads for a whole row-major output grid of that width form ONE contiguous
  run starting at u (W + p) + v. im2col is then kh kw contiguous copies, the
  wrapped columns past Wo of each output row are discarded, and dx is the same
  kind of convolution of the padded dy with the flipped kernel, whose columns
  also give dw: backward needs no col2im and one im2col.
* strides above 1 split the zero-padded input into its s_h s_w *phases* (rows
  a, a + s_h, .., columns b, b + s_w, ..), each flattened like the flat windows:
  kernel offset (u, v) then reads one contiguous run of phase (u % s_h, v % s_w),
  and backward adds each offset's column gradients back onto that run (a col2im
  without strided writes) before interleaving the phases into dx once.
* anything else (a 1x1 kernel with padding, stride 1 with padding >= k) uses the
  classic slice-loop im2col (one strided slice copy per kernel offset) and col2im
  (the same loop with ``+=``), kept as the general path and as the tests' oracle.

The im2col buffer is never larger than :data:`MAX_COL_BYTES` or one sample's columns,
whichever is larger: the batch is processed in chunks of samples, and backward
recomputes the columns instead of keeping them.
"""
from __future__ import annotations

from .. import backend
from ._checks import check_array, check_same_dtype, pair
from ._reduce import channel_sum

#: Upper bound in bytes of one im2col buffer; the batch is chunked to stay below it (a chunk
#: holds at least one sample). Small is fast: 2 MiB chunks are written and read back while
#: they sit in cache, and made a whole Attention-56 training step ~10% faster than 64 MiB
#: (benchmarks/README.md).
MAX_COL_BYTES = 2 * 2**20


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """floor((size + 2 padding - kernel) / stride) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def _im2col(xp_, kh, kw, sh, sw, Ho, Wo):
    """(n, C, Hp, Wp) padded input -> (n, C*kh*kw, Ho*Wo) columns."""
    xp = backend.xp_of(xp_)
    n, C = xp_.shape[:2]
    cols = xp.empty((n, C, kh, kw, Ho, Wo), dtype=xp_.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp_[:, :, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw]
    return cols.reshape(n, C * kh * kw, Ho * Wo)


def _col2im(dcols, out, kh, kw, sh, sw, Ho, Wo):
    """Adjoint of _im2col: add (n, C*kh*kw, Ho*Wo) columns into padded ``out`` (n, C, Hp, Wp)."""
    n, C = out.shape[:2]
    dc = dcols.reshape(n, C, kh, kw, Ho, Wo)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw] += dc[:, :, i, j]
    return out


def _flat_planes(x, top, left, kw):
    """(N, C, H, W) -> (N, C, R (W + left)) zero-padded planes, flattened row by row.

    Each row holds ``left`` zeros, then its W values; the next row's zeros double as this row's
    right padding, so rows are W + left wide, not W + 2 left. ``top`` zero rows above and below,
    and spare zero rows for the last window's overrun of kw - 1 elements.
    """
    xp = backend.xp_of(x)
    N, C, H, W = x.shape
    Wr = W + left
    rows = H + 2 * top + -(-(kw - 1) // Wr)
    planes = xp.zeros((N, C, rows, Wr), dtype=x.dtype)
    planes[:, :, top:top + H, left:] = x
    return planes.reshape(N, C, -1)


def _flat_windows(planes, kh, kw, row, length):
    """(n, C, S) flattened padded planes of row width ``row`` -> (n, C*kh*kw, length) columns.

    Column block (u, v) is the contiguous run planes[..., u row + v : u row + v + length]."""
    xp = backend.xp_of(planes)
    n, C = planes.shape[:2]
    cols = xp.empty((n, C, kh, kw, length), dtype=planes.dtype)
    for u in range(kh):
        for v in range(kw):
            cols[:, :, u, v] = planes[:, :, u * row + v:u * row + v + length]
    return cols.reshape(n, C * kh * kw, length)


def _uses_flat_windows(stride, padding, kh, kw):
    """Stride 1 and padding at most k - 1 (so dx is a valid convolution of the padded dy)."""
    return stride == (1, 1) and padding[0] <= kh - 1 and padding[1] <= kw - 1


def _uses_phases(stride, kh, kw):
    """Strides above 1 (but a 1x1 kernel, which needs no columns at all)."""
    return stride != (1, 1) and (kh, kw) != (1, 1)


def _phase_geometry(H, W, sh, sw, ph, pw):
    """Rows and row width of each phase plane: ceil((H + 2 ph) / sh) + 1 spare row (the runs overrun
    the last row by at most (kw - 1) // sw < row width), and ceil((W + 2 pw) / sw)."""
    return -(-(H + 2 * ph) // sh) + 1, -(-(W + 2 * pw) // sw)


def _phase_slices(size, stride, pad):
    """For each phase a: (first x index, its position in the phase, count) of the x indices i
    whose padded index i + pad is a modulo stride."""
    out = []
    for a in range(stride):
        i0 = (a - pad) % stride
        out.append((i0, (i0 + pad) // stride, len(range(i0, size, stride))))
    return out


def _phase_planes(x, sh, sw, ph, pw):
    """(N, C, H, W) -> (sh, sw, N, C, R Wr): phase (a, b) holds the zero-padded input's rows a, a + sh, ..
    and columns b, b + sw, .., flattened row by row (docs/math/conv.md)."""
    xp = backend.xp_of(x)
    N, C, H, W = x.shape
    rows, Wr = _phase_geometry(H, W, sh, sw, ph, pw)
    planes = xp.zeros((sh, sw, N, C, rows, Wr), dtype=x.dtype)
    for a, (h0, r0, nh) in enumerate(_phase_slices(H, sh, ph)):
        for b, (w0, c0, nw) in enumerate(_phase_slices(W, sw, pw)):
            if nh and nw:
                planes[a, b, :, :, r0:r0 + nh, c0:c0 + nw] = x[:, :, h0::sh, w0::sw]
    return planes.reshape(sh, sw, N, C, rows * Wr)


def _phase_runs(kh, kw, sh, sw, Wr):
    """For each kernel offset (u, v): the phase it reads and where its run starts in that phase."""
    return [(u, v, u % sh, v % sw, (u // sh) * Wr + v // sw) for u in range(kh) for v in range(kw)]


def _phase_windows(planes, s, e, kh, kw, sh, sw, Wr, length):
    """Columns (n, C kh kw, length) of samples s..e: offset (u, v) is one contiguous run of a phase."""
    xp = backend.xp_of(planes)
    C = planes.shape[3]
    cols = xp.empty((e - s, C, kh, kw, length), dtype=planes.dtype)
    for u, v, a, b, start in _phase_runs(kh, kw, sh, sw, Wr):
        cols[:, :, u, v] = planes[a, b, s:e, :, start:start + length]
    return cols.reshape(e - s, C * kh * kw, length)


def _chunks(N, bytes_per_sample):
    """[(start, end), ...] covering range(N) with at most MAX_COL_BYTES of columns each (>= 1 sample)."""
    step = max(1, int(MAX_COL_BYTES // max(1, bytes_per_sample)))
    return [(s, min(N, s + step)) for s in range(0, N, step)]


def _validate(x, w, b, stride, padding):
    check_array("conv2d input x", x, ndim=4)
    check_array("conv2d weight w", w, ndim=4)
    if b is not None:
        check_array("conv2d bias b", b, ndim=1)
    check_same_dtype(x=x, w=w, b=b)
    sh, sw = pair("stride", stride, 1)
    ph, pw = pair("padding", padding, 0)
    N, C, H, W = x.shape
    F, Cw, kh, kw = w.shape
    if C != Cw:
        raise ValueError(f"conv2d: input has {C} channels but the weight expects {Cw} (weight shape {tuple(w.shape)})")
    if b is not None and b.shape[0] != F:
        raise ValueError(f"conv2d: bias has {b.shape[0]} entries, expected {F} (one per output channel)")
    if kh > H + 2 * ph or kw > W + 2 * pw:
        raise ValueError(
            f"conv2d: kernel {kh}x{kw} is larger than the padded input {H + 2 * ph}x{W + 2 * pw}")
    return (sh, sw), (ph, pw)


def conv2d_forward(x, w, b=None, stride=1, padding=0):
    """y[n,f] = sum_c w[f,c] (*) x[n,c] + b[f].

    x: (N, C, H, W); w: (F, C, kh, kw); b: (F,) or None.
    Returns y: (N, F, Ho, Wo) with Ho = floor((H + 2 ph - kh) / sh) + 1, and the cache.
    """
    (sh, sw), (ph, pw) = _validate(x, w, b, stride, padding)
    xp = backend.xp_of(x, w)
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    Ho, Wo = conv_output_size(H, kh, sh, ph), conv_output_size(W, kw, sw, pw)
    w2 = w.reshape(F, C * kh * kw)
    kept = x
    if kh == kw == 1 and ph == pw == 0:
        xs = x[:, :, ::sh, ::sw] if (sh, sw) != (1, 1) else x
        y = xp.matmul(w2, xs.reshape(N, C, Ho * Wo)).reshape(N, F, Ho, Wo)
    elif _uses_flat_windows((sh, sw), (ph, pw), kh, kw) or _uses_phases((sh, sw), kh, kw):
        stride_1 = (sh, sw) == (1, 1)                  # flat windows; else phase planes
        Wr = W + pw if stride_1 else _phase_geometry(H, W, sh, sw, ph, pw)[1]   # output row width
        planes = _flat_planes(x, ph, pw, kw) if stride_1 else _phase_planes(x, sh, sw, ph, pw)
        y = xp.empty((N, F, Ho, Wo), dtype=x.dtype)
        for s, e in _chunks(N, C * kh * kw * Ho * Wr * x.dtype.itemsize):
            cols = (_flat_windows(planes[s:e], kh, kw, Wr, Ho * Wr) if stride_1 else
                    _phase_windows(planes, s, e, kh, kw, sh, sw, Wr, Ho * Wr))
            y[s:e] = xp.matmul(w2, cols).reshape(e - s, F, Ho, Wr)[:, :, :, :Wo]   # drop wrapped columns
        kept = planes               # backward reads the padded planes again: keep them instead of x
    else:
        xpad = backend.pad(x, ph, pw)
        y = xp.empty((N, F, Ho, Wo), dtype=x.dtype)
        for s, e in _chunks(N, C * kh * kw * Ho * Wo * x.dtype.itemsize):
            cols = _im2col(xpad[s:e], kh, kw, sh, sw, Ho, Wo)
            y[s:e] = xp.matmul(w2, cols).reshape(e - s, F, Ho, Wo)
    if b is not None:
        y += b.reshape(1, F, 1, 1)
    return y, (kept, w, b is not None, (sh, sw), (ph, pw), (N, C, H, W))


def conv2d_backward(dy, cache):
    """Returns (dx, dw, db); db is None when the forward had no bias.

    db = sum over n, h, w of dy on every path. 1x1: dx = w^T dy, dw = sum_n dy_n x_n^T. Stride 1
    (flat windows): dx is a convolution of the padded dy with the flipped kernel, and dw comes
    from the same columns. Strides above 1 (phase planes) and the general path: dw =
    sum_n dy_n cols_n^T and dx = col2im(w^T dy), onto the phases' runs or by strided slices.
    (A batched matmul against the transposed view and a sum over n is ~3x faster here than
    tensordot, which copies both operands into 2-D layouts.)
    """
    x, w, has_bias, (sh, sw), (ph, pw), (N, C, H, W) = cache      # x: flat or phase planes on those paths
    xp = backend.xp_of(x, w)
    F, _, kh, kw = w.shape
    Ho, Wo = dy.shape[2], dy.shape[3]
    w2 = w.reshape(F, C * kh * kw)
    dy3 = dy.reshape(N, F, Ho * Wo)
    db = channel_sum(dy) if has_bias else None
    if kh == kw == 1 and ph == pw == 0:
        xs = x[:, :, ::sh, ::sw] if (sh, sw) != (1, 1) else x
        dw2 = xp.matmul(dy3, xs.reshape(N, C, Ho * Wo).transpose(0, 2, 1)).sum(axis=0)
        dxs = xp.matmul(w2.T, dy3).reshape(N, C, Ho, Wo)
        if (sh, sw) == (1, 1):
            dx = dxs
        else:
            dx = xp.zeros_like(x)
            dx[:, :, ::sh, ::sw] = dxs
        return dx, dw2.reshape(w.shape), db
    if _uses_flat_windows((sh, sw), (ph, pw), kh, kw):
        return _flat_backward(dy, x, (N, C, H, W), w, ph, pw) + (db,)
    if _uses_phases((sh, sw), kh, kw):
        return _phase_backward(dy, x, (N, C, H, W), w, (sh, sw), (ph, pw)) + (db,)
    xpad = backend.pad(x, ph, pw)
    dxpad = xp.zeros(xpad.shape, dtype=x.dtype)
    dw2 = xp.zeros((F, C * kh * kw), dtype=x.dtype)
    for s, e in _chunks(N, C * kh * kw * Ho * Wo * x.dtype.itemsize):
        cols = _im2col(xpad[s:e], kh, kw, sh, sw, Ho, Wo)
        dw2 += xp.matmul(dy3[s:e], cols.transpose(0, 2, 1)).sum(axis=0)
        _col2im(xp.matmul(w2.T, dy3[s:e]), dxpad[s:e], kh, kw, sh, sw, Ho, Wo)
    dx = xp.ascontiguousarray(dxpad[:, :, ph:ph + H, pw:pw + W])
    return dx, dw2.reshape(w.shape), db


def _flat_backward(dy, planes, x_shape, w, ph, pw):
    """Stride-1 backward with flat windows: (dx, dw), from the forward's padded ``planes``.

    dx is the valid convolution of dy zero-padded by q = k - 1 - p with the kernel flipped in
    space and transposed in channels: columns ``cols`` of the padded dy, one product per chunk.
    The same columns give dw, against x laid out on the same grid (rows W + pw wide, zeros past
    W), which is a plain window of ``planes``: dw[f, c, u, v] = sum cols[(f, k-1-u, k-1-v)] x[c]
    (docs/math/conv.md).
    """
    xp = backend.xp_of(planes, w)
    N, C, H, W = x_shape
    F, _, kh, kw = w.shape
    Wr, (qh, qw) = W + pw, (kh - 1 - ph, kw - 1 - pw)
    dy_planes = _flat_planes(dy, qh, qw, kw)              # rows Wo + qw = W + pw = Wr wide too
    w_flip = xp.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(C, F * kh * kw)
    x_grid = planes[:, :, ph * Wr + pw:ph * Wr + pw + H * Wr]     # x on dx's grid, zeros past W
    dw_flip = xp.zeros((F * kh * kw, C), dtype=planes.dtype)
    dx = xp.empty(x_shape, dtype=planes.dtype)
    for s, e in _chunks(N, F * kh * kw * H * Wr * planes.dtype.itemsize):
        cols = _flat_windows(dy_planes[s:e], kh, kw, Wr, H * Wr)
        dx[s:e] = xp.matmul(w_flip, cols).reshape(e - s, C, H, Wr)[:, :, :, :W]
        dw_flip += xp.matmul(cols, x_grid[s:e].transpose(0, 2, 1)).sum(axis=0)
    dw = dw_flip.reshape(F, kh, kw, C)[:, ::-1, ::-1, :].transpose(0, 3, 1, 2)
    return dx, xp.ascontiguousarray(dw)


def _phase_backward(dy, planes, x_shape, w, stride, padding):
    """Strided backward from the forward's phase planes: (dx, dw).

    dy is laid on the output grid of phase row width Wr with zeros in the wrapped columns (dz);
    dw = sum_n dz_n cols_n^T; dx: w^T dz gives every column's gradient, each kernel offset's block
    is added back onto its contiguous run of its phase (a col2im with no strided writes), and the
    phases are interleaved into dx once.
    """
    xp = backend.xp_of(planes, w)
    (sh, sw), (ph, pw) = stride, padding
    N, C, H, W = x_shape
    F, _, kh, kw = w.shape
    Ho, Wo = dy.shape[2], dy.shape[3]
    rows, Wr = _phase_geometry(H, W, sh, sw, ph, pw)
    L = Ho * Wr
    dz = xp.zeros((N, F, Ho, Wr), dtype=dy.dtype)
    dz[:, :, :, :Wo] = dy
    dz = dz.reshape(N, F, L)
    w2 = w.reshape(F, C * kh * kw)
    dw2 = xp.zeros((F, C * kh * kw), dtype=planes.dtype)
    dplanes = xp.zeros(planes.shape, dtype=planes.dtype)
    for s, e in _chunks(N, C * kh * kw * L * planes.dtype.itemsize):
        cols = _phase_windows(planes, s, e, kh, kw, sh, sw, Wr, L)
        dw2 += xp.matmul(dz[s:e], cols.transpose(0, 2, 1)).sum(axis=0)
        dcols = xp.matmul(w2.T, dz[s:e]).reshape(e - s, C, kh, kw, L)
        for u, v, a, b, start in _phase_runs(kh, kw, sh, sw, Wr):
            dplanes[a, b, s:e, :, start:start + L] += dcols[:, :, u, v]
    dplanes = dplanes.reshape(sh, sw, N, C, rows, Wr)
    dx = xp.empty(x_shape, dtype=planes.dtype)
    for a, (h0, r0, nh) in enumerate(_phase_slices(H, sh, ph)):
        for b, (w0, c0, nw) in enumerate(_phase_slices(W, sw, pw)):
            if nh and nw:
                dx[:, :, h0::sh, w0::sw] = dplanes[a, b, :, :, r0:r0 + nh, c0:c0 + nw]
    return dx, dw2.reshape(w.shape)
