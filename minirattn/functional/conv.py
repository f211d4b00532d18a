"""2-D convolution (cross-correlation, as every framework), forward and backward: the textbook.

Derivation: docs/math/conv.md

im2col copies, for every output position, the C kh kw inputs it reads into one column (one
strided slice copy per kernel offset); the forward is then one matrix product with the weight
reshaped to (F, C kh kw). The backward is the transpose of each step: dW = dy cols^T,
dcols = W^T dy, and col2im (the same slice loop with ``+=``) adds the columns back into dx.
A 1x1 kernel without padding needs no columns at all: it is one matrix product over channels.

``groups`` splits the input channels and the filters into that many groups and convolves each
group of inputs with its group of filters only (ResNeXt's grouped convolution; docs/math/conv.md,
"Groups"): the weight is (F, C / groups, kh, kw). The im2col and matmul paths do every group in one
batched matrix product (the columns of one group are contiguous); the planes path does one group
at a time.

``method`` chooses how the numbers are computed; every method gives the same result:

* ``"im2col"``: the textbook above, for any kernel, stride and padding (the tests' reference);
* ``"matmul"``: 1x1 kernels without padding, one matrix product over channels;
* ``"planes"``: the phase-plane layout of ``conv_planes.py`` (docs/math/conv_planes.md):
  contiguous copies only, no col2im;
* ``"auto"`` (default): the fastest that applies: matmul for 1x1 without padding, planes for
  other kernels where that layout applies, im2col otherwise.

Column buffers never exceed ``max_col_bytes`` (default :data:`MAX_COL_BYTES`, or
:data:`MAX_COL_BYTES_CUPY` on CuPy) or one sample's columns: the batch is processed in chunks,
and backward recomputes the columns instead of keeping them.
"""
from __future__ import annotations

from typing import NamedTuple

from .. import backend
from ..checks import check_array, check_choice, check_positive_int, check_same_dtype, pair
from . import conv_planes
from ._columns import MAX_COL_BYTES, MAX_COL_BYTES_CUPY, chunks
from ._reduce import channel_sum, sum_over_batch

__all__ = ["conv2d_forward", "conv2d_backward", "conv_output_size", "conv_method", "im2col",
           "col2im", "CONV_METHODS", "ConvCache", "MAX_COL_BYTES", "MAX_COL_BYTES_CUPY"]

#: The values of ``conv2d_forward(..., method=...)``.
CONV_METHODS = ("auto", "im2col", "matmul", "planes")


class ConvCache(NamedTuple):
    """What conv2d_backward needs; ``method`` names the path that made it ("im2col", "matmul",
    "planes"), ``saved`` is the input x, or on the planes path its chunks [(s, e, planes)] (one
    list per group)."""
    method: str
    saved: object
    w: object
    has_bias: bool
    stride: tuple
    padding: tuple
    x_shape: tuple
    max_col_bytes: int | None
    groups: int = 1


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """floor((size + 2 padding - kernel) / stride) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def im2col(xpad, kh, kw, sh, sw, Ho, Wo):
    """(n, C, Hp, Wp) padded input -> (n, C kh kw, Ho Wo) columns: column (i, j) holds the
    patch xpad[:, :, sh i:sh i + kh, sw j:sw j + kw], one strided slice per kernel offset."""
    xp = backend.xp_of(xpad)
    n, C = xpad.shape[:2]
    cols = xp.empty((n, C, kh, kw, Ho, Wo), dtype=xpad.dtype)
    for u in range(kh):
        for v in range(kw):
            cols[:, :, u, v] = xpad[:, :, u:u + sh * (Ho - 1) + 1:sh, v:v + sw * (Wo - 1) + 1:sw]
    return cols.reshape(n, C * kh * kw, Ho * Wo)


def col2im(dcols, out, kh, kw, sh, sw, Ho, Wo):
    """The adjoint of :func:`im2col`: add (n, C kh kw, Ho Wo) columns into the padded ``out``
    (n, C, Hp, Wp), in place, and return it."""
    n, C = out.shape[:2]
    dc = dcols.reshape(n, C, kh, kw, Ho, Wo)
    for u in range(kh):
        for v in range(kw):
            out[:, :, u:u + sh * (Ho - 1) + 1:sh, v:v + sw * (Wo - 1) + 1:sw] += dc[:, :, u, v]
    return out


def conv_method(kernel, stride, padding, method="auto") -> str:
    """The path ``conv2d_forward`` takes for this geometry: ``method`` itself when it applies
    (ValueError saying why when it does not), or what ``"auto"`` picks. All pairs (rows, cols)."""
    check_choice("conv2d method", method, CONV_METHODS)
    (kh, kw), (ph, pw) = kernel, padding
    is_1x1 = (kh, kw) == (1, 1) and (ph, pw) == (0, 0)
    if method == "auto":
        if is_1x1:
            return "matmul"
        return "planes" if conv_planes.applies(stride, padding, kh, kw) else "im2col"
    if method == "matmul" and not is_1x1:
        raise ValueError(f"conv2d method 'matmul' needs a 1x1 kernel without padding, got kernel "
                         f"{kh}x{kw}, padding {(ph, pw)}")
    if method == "planes" and not conv_planes.applies(stride, padding, kh, kw):
        raise ValueError(f"conv2d method 'planes' needs column stride > 1 or column padding <= "
                         f"kernel width - 1, got stride {tuple(stride)}, padding {(ph, pw)}, "
                         f"kernel {kh}x{kw}")
    return method


def _validate(x, w, b, stride, padding, groups=1):
    check_array("conv2d input x", x, ndim=4)
    check_array("conv2d weight w", w, ndim=4)
    if b is not None:
        check_array("conv2d bias b", b, ndim=1)
    check_same_dtype(x=x, w=w, b=b)
    stride, padding = pair("stride", stride, 1), pair("padding", padding, 0)
    (N, C, H, W), (F, Cw, kh, kw) = x.shape, w.shape
    check_positive_int("conv2d groups", groups)
    if C % groups or F % groups:
        raise ValueError(f"conv2d: groups={groups} must divide the input channels ({C}) and the "
                         f"filters ({F})")
    if C != Cw * groups:
        raise ValueError(f"conv2d: input has {C} channels but the weight expects {Cw * groups} "
                         f"({Cw} per group x {groups} groups; weight shape {tuple(w.shape)})")
    if b is not None and b.shape[0] != F:
        raise ValueError(f"conv2d: bias has {b.shape[0]} entries, expected {F} "
                         f"(one per output channel)")
    Hp, Wp = H + 2 * padding[0], W + 2 * padding[1]
    if kh > Hp or kw > Wp:
        raise ValueError(f"conv2d: kernel {kh}x{kw} is larger than the padded input {Hp}x{Wp}")
    return stride, padding


def _group_axis(groups):
    """The shape of the group axis the batched products carry: none for one group (the ordinary
    convolution's products, unchanged), (G,) otherwise."""
    return () if groups == 1 else (groups,)


def conv2d_forward(x, w, b=None, stride=1, padding=0, *, groups=1, method="auto",
                   max_col_bytes=None):
    """y[n,f] = sum_c w[f,c] (*) x[n,c] + b[f], the sum over the channels of f's group.

    x: (N, C, H, W); w: (F, C / groups, kh, kw); b: (F,) or None; stride, padding: int or
    (rows, cols); groups: divides C and F (filters g F/G .. (g+1) F/G - 1 see channels
    g C/G .. (g+1) C/G - 1 only). method: "auto" | "im2col" | "matmul" | "planes" (module
    docstring); max_col_bytes: bound of one column buffer (default by backend).
    Returns y: (N, F, Ho, Wo) with Ho = floor((H + 2 ph - kh) / sh) + 1, and a :class:`ConvCache`.
    """
    (sh, sw), (ph, pw) = _validate(x, w, b, stride, padding, groups)
    xp = backend.xp_of(x, w)
    N, C, H, W = x.shape
    F, Cg, kh, kw = w.shape
    G, Fg, K = groups, F // groups, Cg * kh * kw
    method = conv_method((kh, kw), (sh, sw), (ph, pw), method)
    Ho, Wo = conv_output_size(H, kh, sh, ph), conv_output_size(W, kw, sw, pw)
    g_ = _group_axis(G)
    wg = w.reshape(g_ + (Fg, K))        # group g's filters, each a row of its C/G kh kw inputs
    saved = x
    if method == "matmul":
        xs = x[:, :, ::sh, ::sw] if (sh, sw) != (1, 1) else x
        y = backend.matmul(wg, xs.reshape((N,) + g_ + (Cg, Ho * Wo))).reshape(N, F, Ho, Wo)
    elif method == "planes":
        if G == 1:
            y, saved = conv_planes.forward(x, w, (sh, sw), (ph, pw), Ho, Wo, max_col_bytes)
        else:
            parts = [conv_planes.forward(x[:, g * Cg:(g + 1) * Cg], w[g * Fg:(g + 1) * Fg],
                                         (sh, sw), (ph, pw), Ho, Wo, max_col_bytes)
                     for g in range(G)]
            y = xp.concatenate([p[0] for p in parts], axis=1)
            saved = [p[1] for p in parts]
    else:
        xpad = backend.pad(x, ph, pw)
        y = xp.empty((N, F, Ho, Wo), dtype=x.dtype)
        per_sample = C * kh * kw * Ho * Wo * x.dtype.itemsize
        for s, e in chunks(N, per_sample, x, max_col_bytes):
            cols = im2col(xpad[s:e], kh, kw, sh, sw, Ho, Wo)      # (n, C kh kw, P), C-major
            cols = cols.reshape((e - s,) + g_ + (K, Ho * Wo))
            y[s:e] = backend.matmul(wg, cols).reshape(e - s, F, Ho, Wo)
    if b is not None:
        y += b.reshape(1, F, 1, 1)
    return y, ConvCache(method, saved, w, b is not None, (sh, sw), (ph, pw), (N, C, H, W),
                        max_col_bytes, G)


def conv2d_backward(dy, cache, *, accumulate=None, dx_into=None):
    """Returns (dx, dw), and db after them when the forward had a bias.

    db = sum over n, h, w of dy. im2col: dw = sum_n dy_n cols_n^T, dx = col2im(w^T dy).
    matmul: dx = w^T dy, dw = sum_n dy_n x_n^T. planes: :func:`conv_planes.backward`.
    (A batched matmul against the transposed operand and a sum over n is ~3x faster here than
    tensordot, which copies both operands into 2-D layouts; ``backend.matmul`` transposes by a
    flag, so on CuPy each product is one GEMM without a copy.)
    accumulate: None, or the arrays (dw_acc, and db_acc with a bias) that dw (and db) are added
    into, in place, and returned as (what ``nn.Conv2d`` does with its gradients: on CuPy the sum
    over n and the addition are then one GEMM with a row of ones, no kernel of their own).
    dx_into: None, or an array of x's shape that dx is added into, in place, and returned as dx
    (where two branches' gradients meet; a 1x1 convolution's dx is then cuBLAS's beta = 1).
    """
    method, x, w, has_bias, (sh, sw), (ph, pw), (N, C, H, W), max_col_bytes, G = cache
    xp = backend.xp_of(dy, w)
    F, Cg, kh, kw = w.shape
    dw_into, db_into = _accumulators(accumulate, w.shape, has_bias)
    if dx_into is not None and tuple(dx_into.shape) != (N, C, H, W):
        raise ValueError(f"conv2d_backward: dx_into has shape {tuple(dx_into.shape)}, expected "
                         f"the input's {(N, C, H, W)}")
    Fg, K = F // G, Cg * kh * kw
    Ho, Wo = dy.shape[2], dy.shape[3]
    g_ = _group_axis(G)
    wg = w.reshape(g_ + (Fg, K))                            # ([G,] F/G, K), used transposed
    dyg = dy.reshape((N,) + g_ + (Fg, Ho * Wo))
    if method == "matmul":
        xs = x[:, :, ::sh, ::sw] if (sh, sw) != (1, 1) else x
        xs = xs.reshape((N,) + g_ + (Cg, Ho * Wo))
        dw = sum_over_batch(backend.matmul(dyg, xs, trans_b=True), into=dw_into)
        if (sh, sw) == (1, 1):      # the product adds into dx_into itself where it can
            into = dx_into is not None and dx_into.flags.c_contiguous
            out = dx_into.reshape((N,) + g_ + (Cg, Ho * Wo)) if into else None
            dx = backend.matmul(wg, dyg, trans_a=True, out=out, accumulate=into).reshape(x.shape)
            dx_into = None if into else dx_into
        else:                       # dx is zero between the strided positions
            dx = xp.zeros_like(x) if dx_into is None else dx_into
            dx[:, :, ::sh, ::sw] += backend.matmul(wg, dyg, trans_a=True).reshape(N, C, Ho, Wo)
            dx_into = None
    elif method == "planes":
        if G == 1:
            dx, dw = conv_planes.backward(dy, x, (N, C, H, W), w, (sh, sw), (ph, pw), dw_into)
        else:
            parts = [conv_planes.backward(dy[:, g * Fg:(g + 1) * Fg], x[g], (N, Cg, H, W),
                                          w[g * Fg:(g + 1) * Fg], (sh, sw), (ph, pw),
                                          None if dw_into is None
                                          else dw_into[g * Fg:(g + 1) * Fg])
                     for g in range(G)]
            dx = xp.concatenate([p[0] for p in parts], axis=1)
            dw = dw_into if dw_into is not None else xp.concatenate([p[1] for p in parts])
    else:
        xpad = backend.pad(x, ph, pw)
        dxpad = xp.zeros(xpad.shape, dtype=x.dtype)
        dw = xp.zeros(g_ + (Fg, K), dtype=x.dtype) if dw_into is None else dw_into
        per_sample = C * kh * kw * Ho * Wo * x.dtype.itemsize
        for s, e in chunks(N, per_sample, x, max_col_bytes):
            n = e - s
            cols = im2col(xpad[s:e], kh, kw, sh, sw, Ho, Wo).reshape((n,) + g_ + (K, Ho * Wo))
            sum_over_batch(backend.matmul(dyg[s:e], cols, trans_b=True), into=dw)
            dcols = backend.matmul(wg, dyg[s:e], trans_a=True).reshape(n, C * kh * kw, Ho * Wo)
            col2im(dcols, dxpad[s:e], kh, kw, sh, sw, Ho, Wo)
        dx = xp.ascontiguousarray(dxpad[:, :, ph:ph + H, pw:pw + W])
    if dx_into is not None:
        dx_into += dx
        dx = dx_into
    grads = (dx, dw_into if dw_into is not None else dw.reshape(w.shape))
    if not has_bias:
        return grads
    db = channel_sum(dy)
    if db_into is not None:
        db_into += db
        db = db_into
    return grads + (db,)


def _accumulators(accumulate, w_shape, has_bias):
    """(dw_acc, db_acc) from ``accumulate`` (None: (None, None)), checked against the weight."""
    if accumulate is None:
        return None, None
    accumulate = list(accumulate)
    if len(accumulate) != 1 + has_bias:
        raise ValueError(f"conv2d_backward: accumulate needs {1 + has_bias} arrays (dw"
                         f"{', db' if has_bias else ''}), got {len(accumulate)}")
    F = w_shape[0]
    for name, acc, shape in zip(("dw", "db"), accumulate, (tuple(w_shape), (F,))):
        if tuple(acc.shape) != shape:
            raise ValueError(f"conv2d_backward: the {name} accumulator has shape "
                             f"{tuple(acc.shape)}, expected {shape}")
    return accumulate[0], (accumulate[1] if has_bias else None)
