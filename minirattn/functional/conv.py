"""2-D convolution (cross-correlation, as every framework), forward and backward.

Derivation: docs/math/conv.md

Three paths, all plain slicing and matrix products (no fancy indexing, no ``as_strided``):

* 1x1 with no padding needs no im2col at all: one matrix product over channels.
* every other kernel (the networks' 3x3 convolutions, stride 1 and 2) splits the
  zero-padded input into its s_h s_w *phases* (rows a, a + s_h, .., columns
  b, b + s_w, ..; stride 1 is one phase, the padded input itself), channel-major,
  a chunk's samples side by side in every row, flattened row by row. Kernel offset
  (u, v) then reads ONE contiguous run of phase (u % s_h, v % s_w) for the whole
  chunk: im2col is kh kw contiguous copies and one matrix product per chunk. With
  stride 1 a sample's row is W + p wide (its right padding is the left padding of
  what follows). In backward each phase of dx is a stride-1 convolution of dy with
  that phase's sub-kernel, computed from contiguous runs of dy on the same grid,
  whose columns also give dw: no col2im, one set of columns.
* anything else (a 1x1 kernel with padding, columns of stride 1 padded by kw or
  more) uses the classic slice-loop im2col (one strided slice copy per kernel offset)
  and col2im (the same loop with ``+=``), kept as the general path and as the tests'
  oracle.

The im2col buffer is never larger than :data:`MAX_COL_BYTES` (:data:`MAX_COL_BYTES_CUPY`
on CuPy) or one sample's columns, whichever is larger: the batch is processed in chunks
of samples, and backward recomputes the columns instead of keeping them.
"""
from __future__ import annotations

from .. import backend
from ._checks import check_array, check_same_dtype, pair
from ._reduce import channel_sum

#: Upper bound in bytes of one im2col buffer on NumPy; the batch is chunked to stay below it (a
#: chunk holds at least one sample). Small is fast: 2 MiB chunks are written and read back while
#: they sit in cache, and made a whole Attention-56 training step ~10% faster than 64 MiB
#: (benchmarks/README.md).
MAX_COL_BYTES = 2 * 2**20

#: The same bound on CuPy. A GPU has no cache to fit and pays a kernel launch per copy, so few
#: large chunks: 256 MiB holds a whole batch of 64 at the networks' shapes. Not measured (no GPU
#: was available to this work); benchmarks/bench.py's GPU half is where to tune it.
MAX_COL_BYTES_CUPY = 256 * 2**20


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


def _uses_planes(stride, padding, kh, kw):
    """The phase-plane path: every kernel but 1x1, unless the columns have stride 1 and a padding
    above kw - 1 (a row's zero columns are shared with what follows it, which needs pw <= kw - 1);
    those take the general slice loop."""
    return (kh, kw) != (1, 1) and (stride[1] > 1 or padding[1] <= kw - 1)


def _plane_geometry(H, W, stride, padding, kh, kw):
    """(R, Wr, Dh, Dw): rows and (per sample) row width of a phase plane, and the largest shift
    floor((k - 1) / s) of a kernel offset within its phase, per axis.

    A phase holds R = ceil((H + 2 p) / s) rows of the padded input (stride 1: H + 2 p). Rows are
    ceil((W + 2 p) / s) wide per sample, but with stride 1 W + p: a row's right padding is the
    left padding of what follows it (docs/math/conv.md)."""
    (sh, sw), (ph, pw) = stride, padding
    Wr = W + pw if sw == 1 else -(-(W + 2 * pw) // sw)
    return -(-(H + 2 * ph) // sh), Wr, (kh - 1) // sh, (kw - 1) // sw


def _phase_slices(size, stride, pad):
    """For each phase a: (first x index, its position in the phase, count) of the x indices i
    whose padded index i + pad is a modulo stride."""
    out = []
    for a in range(stride):
        i0 = (a - pad) % stride
        out.append((i0, (i0 + pad) // stride, len(range(i0, size, stride))))
    return out


def _dx_rows(H, sh, ph):
    """(g0, g1): the phase rows that hold some row of x, over all phases (the backward's grid)."""
    held = [(r0, r0 + nh) for _, r0, nh in _phase_slices(H, sh, ph) if nh]
    return min(r for r, _ in held), max(r for _, r in held)


def _phase_planes(x, stride, padding, R, Wr, spare):
    """(n, C, H, W) -> (sh, sw, C, R n Wr + spare): zero-padded phase planes, the samples side by side.

    Phase (a, b) holds the padded input's rows a, a + sh, .. and columns b, b + sw, ..; for each
    channel, row r holds row r of every sample, one after the other (Wr each), and the rows follow
    one another, then ``spare`` zeros (the last row's dropped windows overrun it by up to Dw)."""
    xp = backend.xp_of(x)
    (sh, sw), (ph, pw) = stride, padding
    n, C, H, W = x.shape
    planes = xp.zeros((sh, sw, C, R * n * Wr + spare), dtype=x.dtype)
    grid = planes[:, :, :, :R * n * Wr].reshape(sh, sw, C, R, n, Wr)
    xt = x.transpose(1, 2, 0, 3)                                          # (C, H, n, W)
    for a, (h0, r0, nh) in enumerate(_phase_slices(H, sh, ph)):
        for b, (w0, c0, nw) in enumerate(_phase_slices(W, sw, pw)):
            if nh and nw:
                grid[a, b, :, r0:r0 + nh, :, c0:c0 + nw] = xt[:, h0::sh, :, w0::sw]
    return planes


def _plane_windows(planes, n, kh, kw, stride, Wr, Ho):
    """Columns (C kh kw, Ho n Wr) of a chunk of n samples, for an output grid of Ho rows n Wr wide:
    kernel offset (u, v) reads, for every channel, ONE contiguous run of phase (u mod sh, v mod sw),
    starting floor(u / sh) rows and floor(v / sw) columns in."""
    xp = backend.xp_of(planes)
    sh, sw = stride
    C, row = planes.shape[2], n * Wr
    cols = xp.empty((C, kh, kw, Ho * row), dtype=planes.dtype)
    for u in range(kh):
        for v in range(kw):
            start = (u // sh) * row + v // sw
            cols[:, u, v] = planes[u % sh, v % sw, :, start:start + Ho * row]
    return cols.reshape(C * kh * kw, Ho * row)


def _shifted_runs(dy_planes, n, Dh, Dw, Wr, g0, G):
    """Columns (Dh + 1, Dw + 1, F, G n Wr): for every shift (dr, dc), dy moved down dr rows and
    right dc columns on the grid of phase rows g0..g0 + G - 1, one contiguous run each."""
    xp = backend.xp_of(dy_planes)
    F, row = dy_planes.shape[0], n * Wr
    cols = xp.empty((Dh + 1, Dw + 1, F, G * row), dtype=dy_planes.dtype)
    for dr in range(Dh + 1):
        for dc in range(Dw + 1):
            start = (g0 + Dh - dr) * row + (Dw - dc)
            cols[dr, dc] = dy_planes[:, start:start + G * row]
    return cols


def _phase_kernels(w, stride):
    """For each phase (a, b) that some kernel offset reads: (a, b, blocks), a block being
    (d0, d1, nc, w_block) for the shifts dr in d0..d1-1 and dc in 0..nc-1, with w_block (C, K) the
    offsets (a + sh dr, b + sw dc) in the order of the shifted-run columns. One block when its
    shifts are whole rows of those columns (or one row), else one block per row."""
    xp = backend.xp_of(w)
    (sh, sw), C = stride, w.shape[1]
    Dw = (w.shape[3] - 1) // sw                                   # the largest column shift
    out = []
    for a in range(sh):
        for b in range(sw):
            sub = w[:, :, a::sh, b::sw]                           # (F, C, nr, nc)
            nr, nc = sub.shape[2], sub.shape[3]
            if nr == 0 or nc == 0:
                continue
            w_ab = xp.ascontiguousarray(sub.transpose(1, 2, 3, 0))  # (C, nr, nc, F)
            rows = [(0, nr)] if nc == Dw + 1 or nr == 1 else [(d, d + 1) for d in range(nr)]
            out.append((a, b, [(d0, d1, nc, w_ab[:, d0:d1].reshape(C, -1)) for d0, d1 in rows]))
    return out


def _chunks(N, bytes_per_sample, like):
    """[(start, end), ...] covering range(N) with at most MAX_COL_BYTES (MAX_COL_BYTES_CUPY for a
    CuPy array ``like``) of columns each (>= 1 sample)."""
    budget = MAX_COL_BYTES_CUPY if backend.name_of(like) == "cupy" else MAX_COL_BYTES
    step = max(1, int(budget // max(1, bytes_per_sample)))
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
    elif _uses_planes((sh, sw), (ph, pw), kh, kw):
        R, Wr, Dh, Dw = _plane_geometry(H, W, (sh, sw), (ph, pw), kh, kw)
        g0, g1 = _dx_rows(H, sh, ph)
        y = xp.empty((N, F, Ho, Wo), dtype=x.dtype)
        kept = []           # each chunk's planes: backward reads them again, in the same chunks
        per_sample = max(C * kh * kw * Ho, (Dh + 1) * (Dw + 1) * F * (g1 - g0)) * Wr * x.dtype.itemsize
        for s, e in _chunks(N, per_sample, x):             # the larger of forward's and backward's columns
            planes = _phase_planes(x[s:e], (sh, sw), (ph, pw), R, Wr, Dw)
            z = xp.matmul(w2, _plane_windows(planes, e - s, kh, kw, (sh, sw), Wr, Ho))   # (F, Ho n Wr)
            y[s:e] = z.reshape(F, Ho, e - s, Wr)[..., :Wo].transpose(2, 0, 1, 3)       # drop the rest
            kept.append((s, e, planes))
    else:
        xpad = backend.pad(x, ph, pw)
        y = xp.empty((N, F, Ho, Wo), dtype=x.dtype)
        for s, e in _chunks(N, C * kh * kw * Ho * Wo * x.dtype.itemsize, x):
            cols = _im2col(xpad[s:e], kh, kw, sh, sw, Ho, Wo)
            y[s:e] = xp.matmul(w2, cols).reshape(e - s, F, Ho, Wo)
    if b is not None:
        y += b.reshape(1, F, 1, 1)
    return y, (kept, w, b is not None, (sh, sw), (ph, pw), (N, C, H, W))


def conv2d_backward(dy, cache):
    """Returns (dx, dw, db); db is None when the forward had no bias.

    db = sum over n, h, w of dy on every path. 1x1: dx = w^T dy, dw = sum_n dy_n x_n^T. Phase
    planes: see :func:`_plane_backward`. General path: dw = sum_n dy_n cols_n^T and
    dx = col2im(w^T dy). (A batched matmul against the transposed view and a sum over n is ~3x
    faster here than tensordot, which copies both operands into 2-D layouts.)
    """
    x, w, has_bias, (sh, sw), (ph, pw), (N, C, H, W) = cache      # x: [(s, e, planes)] on that path
    xp = backend.xp_of(dy, w)
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
    if _uses_planes((sh, sw), (ph, pw), kh, kw):
        return _plane_backward(dy, x, (N, C, H, W), w, (sh, sw), (ph, pw)) + (db,)
    xpad = backend.pad(x, ph, pw)
    dxpad = xp.zeros(xpad.shape, dtype=x.dtype)
    dw2 = xp.zeros((F, C * kh * kw), dtype=x.dtype)
    for s, e in _chunks(N, C * kh * kw * Ho * Wo * x.dtype.itemsize, x):
        cols = _im2col(xpad[s:e], kh, kw, sh, sw, Ho, Wo)
        dw2 += xp.matmul(dy3[s:e], cols.transpose(0, 2, 1)).sum(axis=0)
        _col2im(xp.matmul(w2.T, dy3[s:e]), dxpad[s:e], kh, kw, sh, sw, Ho, Wo)
    dx = xp.ascontiguousarray(dxpad[:, :, ph:ph + H, pw:pw + W])
    return dx, dw2.reshape(w.shape), db


def _plane_backward(dy, kept, x_shape, w, stride, padding):
    """Backward of the phase-plane path, from the forward's chunks ``kept`` [(s, e, planes)]: (dx, dw).

    Each phase of dx is a stride-1 convolution of dy with that phase's sub-kernel w[:, :, a::sh, b::sw]
    (transposed in channels): dx_ab[r, c] = sum over its offsets of w[., ., a + sh dr, b + sw dc]^T
    dy[r - dr, c - dc]. So dy is laid on the planes' grid once per chunk (``dy_planes``, shifted by
    (Dh, Dw)), every shift is one contiguous run (``_shifted_runs``), each phase is one product per
    block of its offsets over the part of the runs on its own rows of x, cropped (and, for strides
    above 1, interleaved) into dx; and the same columns times the phase plane give dw:
    dw[f, c, a + sh dr, b + sw dc] = sum runs[dr, dc, f] x_ab[c] (docs/math/conv.md). No col2im,
    one set of columns.
    """
    xp = backend.xp_of(w)
    (sh, sw), (ph, pw) = stride, padding
    N, C, H, W = x_shape
    F, _, kh, kw = w.shape
    Ho, Wo = dy.shape[2], dy.shape[3]
    _, Wr, Dh, Dw = _plane_geometry(H, W, stride, padding, kh, kw)
    g0, g1 = _dx_rows(H, sh, ph)                                        # dx's grid: phase rows g0..g1-1
    phases = _phase_kernels(w, stride)
    rows, cols_of = _phase_slices(H, sh, ph), _phase_slices(W, sw, pw)
    dx = (xp.zeros if kh < sh or kw < sw else xp.empty)(x_shape, dtype=dy.dtype)  # phases no offset reads stay 0
    dw_blocks = [[xp.zeros((w_blk.shape[1], C), dtype=dy.dtype) for *_, w_blk in blocks] for *_, blocks in phases]
    for s, e, planes in kept:
        n = e - s
        row = n * Wr
        dy_planes = xp.zeros((F, (max(Ho, g1) + Dh) * row + Dw), dtype=dy.dtype)
        start = Dh * row + Dw                                           # dy[i, m, j] at start + i row + m Wr + j
        dy_planes[:, start:start + Ho * row].reshape(F, Ho, n, Wr)[..., :Wo] = dy[s:e].transpose(1, 2, 0, 3)
        cols = _shifted_runs(dy_planes, n, Dh, Dw, Wr, g0, g1 - g0)
        for (a, b, blocks), acc in zip(phases, dw_blocks):
            (h0, r0, nh), (w0, c0, nw) = rows[a], cols_of[b]
            if not (nh and nw):
                continue                                                # this phase holds only padding
            x_ab = planes[a, b, :, r0 * row:(r0 + nh) * row]            # (C, nh n Wr): its rows of x only
            dx_ab = None
            for (d0, d1, nc, w_blk), dw_blk in zip(blocks, acc):
                c_blk = cols[d0:d1, :nc].reshape(-1, (g1 - g0) * row)[:, (r0 - g0) * row:(r0 - g0 + nh) * row]
                part = xp.matmul(w_blk, c_blk)                           # (C, nh n Wr)
                dx_ab = part if dx_ab is None else xp.add(dx_ab, part, out=dx_ab)
                dw_blk += xp.matmul(c_blk, x_ab.T)
            dx[s:e, :, h0::sh, w0::sw] = dx_ab.reshape(C, nh, n, Wr)[..., c0:c0 + nw].transpose(2, 0, 1, 3)
    dw = xp.empty(w.shape, dtype=dy.dtype)
    for (a, b, blocks), acc in zip(phases, dw_blocks):
        for (d0, d1, nc, _), dw_blk in zip(blocks, acc):
            dw[:, :, a + sh * d0:a + sh * d1:sh, b:b + sw * nc:sw] = \
                dw_blk.reshape(d1 - d0, nc, F, C).transpose(2, 3, 0, 1)
    return dx, dw
