"""The fast layout of 2-D convolution: phase planes (``conv2d_forward(..., method="planes")``).

Derivation: docs/math/conv_planes.md. The textbook im2col/col2im path is in ``conv.py``; this
module computes the same numbers (tested to 1e-12 against it) with contiguous copies only.

The zero-padded input is split into its s_h s_w *phases* (rows a, a + s_h, .., columns
b, b + s_w, ..; stride 1 is one phase, the padded input itself), channel-major, a chunk's
samples side by side in every row, flattened row by row. Kernel offset (u, v) then reads ONE
contiguous run of phase (u % s_h, v % s_w) for the whole chunk: the columns are kh kw
contiguous copies and one matrix product per chunk. With stride 1 a sample's row is W + p wide
(its right padding is the left padding of what follows). In backward each phase of dx is a
stride-1 convolution of dy with that phase's sub-kernel, computed from contiguous runs of dy on
the same grid, whose columns also give dw: no col2im, one set of columns.
"""
from __future__ import annotations

from .. import backend
from ._columns import chunks


def applies(stride, padding, kh, kw) -> bool:
    """Whether the layout can run this convolution: always, unless the columns have stride 1 and
    a padding above kw - 1 (a row's zero columns are shared with what follows it, which needs
    pw <= kw - 1)."""
    return stride[1] > 1 or padding[1] <= kw - 1


def plane_geometry(H, W, stride, padding, kh, kw):
    """(R, Wr, Dh, Dw): rows and (per sample) row width of a phase plane, and the largest shift
    floor((k - 1) / s) of a kernel offset within its phase, per axis.

    A phase holds R = ceil((H + 2 p) / s) rows of the padded input (stride 1: H + 2 p). Rows are
    ceil((W + 2 p) / s) wide per sample, but with stride 1 W + p: a row's right padding is the
    left padding of what follows it (docs/math/conv_planes.md)."""
    (sh, sw), (ph, pw) = stride, padding
    Wr = W + pw if sw == 1 else -(-(W + 2 * pw) // sw)
    return -(-(H + 2 * ph) // sh), Wr, (kh - 1) // sh, (kw - 1) // sw


def phase_slices(size, stride, pad):
    """For each phase a: (first x index, its position in the phase, count) of the x indices i
    whose padded index i + pad is a modulo stride."""
    out = []
    for a in range(stride):
        i0 = (a - pad) % stride
        out.append((i0, (i0 + pad) // stride, len(range(i0, size, stride))))
    return out


def dx_rows(H, sh, ph):
    """(g0, g1): the phase rows that hold some row of x, over all phases (the backward's grid)."""
    held = [(r0, r0 + nh) for _, r0, nh in phase_slices(H, sh, ph) if nh]
    return min(r for r, _ in held), max(r for _, r in held)


def phase_planes(x, stride, padding, R, Wr, spare):
    """(n, C, H, W) -> (sh, sw, C, R n Wr + spare): zero-padded phase planes, samples side by side.

    Phase (a, b) holds the padded input's rows a, a + sh, .. and columns b, b + sw, ..; for each
    channel, row r holds row r of every sample, one after the other (Wr each), and the rows follow
    one another, then ``spare`` zeros (the last row's dropped windows overrun it by up to Dw)."""
    xp = backend.xp_of(x)
    (sh, sw), (ph, pw) = stride, padding
    n, C, H, W = x.shape
    planes = xp.zeros((sh, sw, C, R * n * Wr + spare), dtype=x.dtype)
    grid = planes[:, :, :, :R * n * Wr].reshape(sh, sw, C, R, n, Wr)
    xt = x.transpose(1, 2, 0, 3)                                          # (C, H, n, W)
    for a, (h0, r0, nh) in enumerate(phase_slices(H, sh, ph)):
        for b, (w0, c0, nw) in enumerate(phase_slices(W, sw, pw)):
            if nh and nw:
                grid[a, b, :, r0:r0 + nh, :, c0:c0 + nw] = xt[:, h0::sh, :, w0::sw]
    return planes


def strided(a, shape, steps):
    """A view of ``a`` (whose last axis is contiguous) with the given shape, ``steps[k]`` elements
    apart along axis k (None: ``a``'s own first-axis stride). No copy: every window of a run
    layout at once, for one copy instead of one per kernel offset."""
    xp = backend.xp_of(a)
    strides = tuple(a.strides[0] if k is None else k * a.itemsize for k in steps)
    return xp.lib.stride_tricks.as_strided(a, shape=shape, strides=strides)


def plane_windows(planes, n, kh, kw, stride, Wr, Ho):
    """Columns (C kh kw, Ho n Wr) of a chunk of n samples, for an output grid of Ho rows n Wr
    wide: kernel offset (u, v) reads, for every channel, ONE contiguous run of phase
    (u mod sh, v mod sw), starting floor(u / sh) rows and floor(v / sw) columns in."""
    xp = backend.xp_of(planes)
    sh, sw = stride
    C, row = planes.shape[2], n * Wr
    if (sh, sw) == (1, 1):     # one plane: the runs are one strided view, copied in one pass
        runs = strided(planes[0, 0], (C, kh, kw, Ho * row), (None, row, 1, 1))
        return xp.ascontiguousarray(runs).reshape(C * kh * kw, Ho * row)
    cols = xp.empty((C, kh, kw, Ho * row), dtype=planes.dtype)
    for u in range(kh):
        for v in range(kw):
            start = (u // sh) * row + v // sw
            cols[:, u, v] = planes[u % sh, v % sw, :, start:start + Ho * row]
    return cols.reshape(C * kh * kw, Ho * row)


def shifted_runs(dy_planes, n, Dh, Dw, Wr, g0, G):
    """Columns (Dh + 1, Dw + 1, F, G n Wr): for every shift (dr, dc), dy moved down dr rows and
    right dc columns on the grid of phase rows g0..g0 + G - 1, one contiguous run each."""
    xp = backend.xp_of(dy_planes)
    F, row = dy_planes.shape[0], n * Wr
    # runs[i, j] starts i rows and j columns past row g0: the shift (Dh - i, Dw - j)
    runs = strided(dy_planes[:, g0 * row:], (Dh + 1, Dw + 1, F, G * row), (row, 1, None, 1))
    return xp.ascontiguousarray(runs[::-1, ::-1])


def phase_kernels(w, stride):
    """For each phase (a, b) that some kernel offset reads: (a, b, blocks), a block being
    (d0, d1, nc, w_block) for the shifts dr in d0..d1-1 and dc in 0..nc-1, with w_block (C, K)
    the offsets (a + sh dr, b + sw dc) in the order of the shifted-run columns. One block when its
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


def forward(x, w, stride, padding, Ho, Wo, max_col_bytes=None):
    """y (N, F, Ho, Wo) without bias, and the chunks [(s, e, planes)] that backward reads again.

    Chunks are sized for the larger of the forward's and the backward's columns."""
    xp = backend.xp_of(x, w)
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    w2 = w.reshape(F, C * kh * kw)
    R, Wr, Dh, Dw = plane_geometry(H, W, stride, padding, kh, kw)
    g0, g1 = dx_rows(H, stride[0], padding[0])
    y = xp.empty((N, F, Ho, Wo), dtype=x.dtype)
    kept = []
    per_sample = max(C * kh * kw * Ho, (Dh + 1) * (Dw + 1) * F * (g1 - g0)) * Wr * x.dtype.itemsize
    for s, e in chunks(N, per_sample, x, max_col_bytes):
        planes = phase_planes(x[s:e], stride, padding, R, Wr, Dw)
        z = backend.matmul(w2, plane_windows(planes, e - s, kh, kw, stride, Wr, Ho))  # (F, Ho n Wr)
        y[s:e] = z.reshape(F, Ho, e - s, Wr)[..., :Wo].transpose(2, 0, 1, 3)       # drop the rest
        kept.append((s, e, planes))
    return y, kept


def backward(dy, kept, x_shape, w, stride, padding, dw_into=None):
    """(dx, dw) from the forward's chunks ``kept`` [(s, e, planes)]; with ``dw_into`` (of w's
    shape) dw is added into it, in place, and it is returned as dw.

    Each phase of dx is a stride-1 convolution of dy with that phase's sub-kernel
    w[:, :, a::sh, b::sw] (transposed in channels): dx_ab[r, c] = sum over its offsets of
    w[., ., a + sh dr, b + sw dc]^T dy[r - dr, c - dc]. So dy is laid on the planes' grid once
    per chunk (``dy_planes``, shifted by (Dh, Dw)), every shift is one contiguous run
    (:func:`shifted_runs`), each phase is one product per block of its offsets over the part of
    the runs on its own rows of x, cropped (and, for strides above 1, interleaved) into dx; and
    the same columns times the phase plane give dw:
    dw[f, c, a + sh dr, b + sw dc] = sum runs[dr, dc, f] x_ab[c] (docs/math/conv_planes.md).
    """
    xp = backend.xp_of(w)
    (sh, sw), (ph, pw) = stride, padding
    N, C, H, W = x_shape
    F, _, kh, kw = w.shape
    Ho, Wo = dy.shape[2], dy.shape[3]
    _, Wr, Dh, Dw = plane_geometry(H, W, stride, padding, kh, kw)
    g0, g1 = dx_rows(H, sh, ph)                                   # dx's grid: phase rows g0..g1-1
    phases = phase_kernels(w, stride)
    rows, cols_of = phase_slices(H, sh, ph), phase_slices(W, sw, pw)
    new = xp.zeros if kh < sh or kw < sw else xp.empty            # phases no offset reads stay 0
    dx = new(x_shape, dtype=dy.dtype)
    dw_blocks = [[None] * len(blocks) for *_, blocks in phases]   # the first chunk sets them
    for s, e, planes in kept:
        n = e - s
        row = n * Wr
        dy_planes = xp.zeros((F, (max(Ho, g1) + Dh) * row + Dw), dtype=dy.dtype)
        start = Dh * row + Dw  # dy[i, m, j] at start + i row + m Wr + j
        dy_grid = dy_planes[:, start:start + Ho * row].reshape(F, Ho, n, Wr)
        dy_grid[..., :Wo] = dy[s:e].transpose(1, 2, 0, 3)
        cols = shifted_runs(dy_planes, n, Dh, Dw, Wr, g0, g1 - g0)
        for (a, b, blocks), acc in zip(phases, dw_blocks):
            (h0, r0, nh), (w0, c0, nw) = rows[a], cols_of[b]
            if not (nh and nw):
                continue                                          # this phase holds only padding
            x_ab = planes[a, b, :, r0 * row:(r0 + nh) * row]      # (C, nh n Wr): its rows of x only
            dx_ab = None
            for k, (d0, d1, nc, w_blk) in enumerate(blocks):
                c_blk = cols[d0:d1, :nc].reshape(-1, (g1 - g0) * row)
                c_blk = c_blk[:, (r0 - g0) * row:(r0 - g0 + nh) * row]
                part = backend.matmul(w_blk, c_blk)                # (C, nh n Wr)
                dx_ab = part if dx_ab is None else xp.add(dx_ab, part, out=dx_ab)
                part = backend.matmul(c_blk, x_ab, trans_b=True)   # (K, C)
                acc[k] = part if acc[k] is None else xp.add(acc[k], part, out=acc[k])
            dx_phase = dx_ab.reshape(C, nh, n, Wr)[..., c0:c0 + nw]
            dx[s:e, :, h0::sh, w0::sw] = dx_phase.transpose(2, 0, 1, 3)
    dw = xp.empty(w.shape, dtype=dy.dtype) if dw_into is None else dw_into
    for (a, b, blocks), acc in zip(phases, dw_blocks):
        for (d0, d1, nc, _), dw_blk in zip(blocks, acc):
            taps = dw[:, :, a + sh * d0:a + sh * d1:sh, b:b + sw * nc:sw]
            if dw_blk is None:                                    # offsets that read only padding
                if dw_into is None:
                    taps[...] = 0
            elif dw_into is None:
                taps[...] = dw_blk.reshape(d1 - d0, nc, F, C).transpose(2, 3, 0, 1)
            else:
                taps += dw_blk.reshape(d1 - d0, nc, F, C).transpose(2, 3, 0, 1)
    return dx, dw
