# %% [markdown]
# # 02 · Convolution as im2col and a matrix product
#
# A convolution reads, for every output position, a $C \times k \times k$ patch of the (padded) input.
# im2col copies those patches into the columns of a matrix, one strided slice per kernel offset, so the
# convolution becomes one matrix product with the weights reshaped to $F \times Ck^2$. The backward is the
# transpose of each step: $\partial W = \delta\,\mathrm{cols}^\top$, $\partial\mathrm{cols} = W^\top\delta$,
# and col2im (the same slice loop with `+=`) adds the columns back. `conv2d_forward(..., method="im2col")`
# runs exactly this. The last sections show the faster layout `method="auto"` (the default) runs for
# 3x3 kernels, phase planes, and its backward. Derivations: `docs/math/conv.md` and
# `docs/math/conv_planes.md`.
# Run with `python tutorials/02_convolution_im2col.py`.

# %%
import numpy as np

import minirattn as mr
from minirattn import functional as F
from minirattn.functional.conv import col2im, im2col

rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 6, 6))
w = rng.standard_normal((4, 3, 3, 3))

# %% [markdown]
# ## The columns
# With padding 1 and stride 1, the 6x6 input gives 36 columns of $3 \cdot 3 \cdot 3 = 27$ values per image.

# %%
xpad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
cols = im2col(xpad, 3, 3, 1, 1, 6, 6)
print("columns per image:", cols.shape[1:])
assert cols.shape == (2, 27, 36)
assert np.allclose(cols[0, :, 7], xpad[0, :, 1:4, 1:4].ravel())       # column 7 = the patch at (1, 1)

# %% [markdown]
# ## Forward = one matrix product, checked against the definition

# %%
y, cache = F.conv2d_forward(x, w, None, 1, 1, method="im2col")
assert cache.method == "im2col"
assert np.allclose(y.reshape(2, 4, 36), w.reshape(4, 27) @ cols)
by_loops = np.zeros_like(y)
for n in range(2):
    for f in range(4):
        for i in range(6):
            for j in range(6):
                by_loops[n, f, i, j] = (xpad[n, :, i:i + 3, j:j + 3] * w[f]).sum()
assert np.allclose(y, by_loops)

# %% [markdown]
# ## col2im is the adjoint of im2col
# $\langle \mathrm{im2col}(x), c\rangle = \langle x, \mathrm{col2im}(c)\rangle$ for any $c$: that is what makes
# col2im the right backward.

# %%
c = rng.standard_normal(cols.shape)
back = col2im(c, np.zeros_like(xpad), 3, 3, 1, 1, 6, 6)
assert np.isclose((cols * c).sum(), (xpad * back).sum())

# %% [markdown]
# ## The backward, proven
# A 1x1 convolution needs no columns at all: it is a matrix product over channels.

# %%
r = mr.gradcheck(lambda x, w: F.conv2d_forward(x, w, None, 2, 1, method="im2col"), [x, w],
                 F.conv2d_backward)                                 # one gradient per input: dx, dw
print(f"3x3 stride 2: worst relative error {r.worst_error:.1e}")
assert r.ok
w1 = rng.standard_normal((5, 3, 1, 1))
y1, c1 = F.conv2d_forward(x, w1)
assert c1.method == "matmul"                                         # what "auto" picks for 1x1
assert np.allclose(y1, np.einsum("fc,nchw->nfhw", w1[:, :, 0, 0], x))

# %% [markdown]
# ## What `conv2d` runs instead of the slice loop: phase planes
# The slice loop copies with strides, which is slow. `method="planes"` (what "auto" picks for this 3x3
# kernel) first splits the padded input into its
# stride *phases*, $P_{ab} = \tilde x_{a::s,\, b::s}$ (stride 1: one phase, $\tilde x$ itself). Kernel offset
# $(u, v)$ reads, for every output, phase $(u \bmod s, v \bmod s)$ shifted by $(\lfloor u/s\rfloor, \lfloor v/s\rfloor)$:
# a plain window of one phase. Here for stride 2, against the slice-loop columns:

# %%
cols2 = im2col(xpad, 3, 3, 2, 2, 3, 3).reshape(2, 3, 3, 3, 3, 3)      # (n, C, u, v, Ho, Wo)
phase = {(a, b): xpad[:, :, a::2, b::2] for a in (0, 1) for b in (0, 1)}
for u in range(3):
    for v in range(3):
        window = phase[u % 2, v % 2][:, :, u // 2:u // 2 + 3, v // 2:v // 2 + 3]
        assert np.array_equal(cols2[:, :, u, v], window)

# %% [markdown]
# Stored row by row (channel-major, a chunk's samples side by side in every row, rows $W_r$ wide per
# sample), such a window is ONE contiguous run, so the columns are nine contiguous copies and the forward
# one matrix product per chunk. The library's own functions, checked against the slice loop:

# %%
from minirattn.functional import conv_planes

R, Wr, Dh, Dw = conv_planes.plane_geometry(6, 6, (2, 2), (1, 1), 3, 3)
planes = conv_planes.phase_planes(x, (2, 2), (1, 1), R, Wr, Dw)     # (2, 2, C, R * n * Wr + spare)
runs = conv_planes.plane_windows(planes, 2, 3, 3, (2, 2), Wr, 3)    # (C k k, Ho * n * Wr)
runs = runs.reshape(3, 3, 3, 3, 2, Wr)[..., :3]                     # (C, u, v, i, n, j); drop j >= Wo
assert np.array_equal(runs.transpose(4, 0, 1, 2, 3, 5), cols2)

# %% [markdown]
# ## The backward by phases
# Differentiating, phase $(a, b)$ of $\partial L/\partial\tilde x$ only receives from the offsets
# $(a + 2\delta_u, b + 2\delta_v)$: it is a stride-1 convolution of $\delta$ with the sub-kernel
# `w[:, :, a::2, b::2]`, transposed in channels and flipped, over $\delta$ zero-padded by the sub-kernel's
# size minus one. No col2im. Checked against col2im of $W^\top\delta$:

# %%
y2, _ = F.conv2d_forward(x, w, None, 2, 1)
dy = rng.standard_normal(y2.shape)                                   # (2, 4, 3, 3)
dxpad = col2im(np.matmul(w.reshape(4, 27).T, dy.reshape(2, 4, 9)), np.zeros_like(xpad), 3, 3, 2, 2, 3, 3)
for a in (0, 1):
    for b in (0, 1):
        sub = w[:, :, a::2, b::2]                                    # (F, C, nr, nc)
        nr, nc = sub.shape[2:]
        flipped = np.ascontiguousarray(sub[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))    # (C, F, nr, nc)
        full, _ = F.conv2d_forward(dy, flipped, None, 1, (nr - 1, nc - 1))            # (n, C, 3 + nr - 1, ..)
        target = dxpad[:, :, a::2, b::2]                             # (n, C, 4, 4)
        grown = np.zeros_like(target)
        grown[:, :, :full.shape[2], :full.shape[3]] = full           # rows no output reaches get nothing
        assert np.allclose(grown, target)
y2, cache2 = F.conv2d_forward(x, w, None, 2, 1, method="planes")
dx, dw = F.conv2d_backward(dy, cache2)
assert np.allclose(dx, dxpad[:, :, 1:7, 1:7])
