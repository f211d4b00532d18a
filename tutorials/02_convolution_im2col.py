# %% [markdown]
# # 02 · Convolution as im2col and a matrix product
#
# A convolution reads, for every output position, a $C \times k \times k$ patch of the (padded) input.
# im2col copies those patches into the columns of a matrix, one strided slice per kernel offset, so the
# convolution becomes one matrix product with the weights reshaped to $F \times Ck^2$. The backward is the
# transpose of each step: $\partial W = \delta\,\mathrm{cols}^\top$, $\partial\mathrm{cols} = W^\top\delta$,
# and col2im (the same slice loop with `+=`) adds the columns back. Derivation: `docs/math/conv.md`.
# Run with `python tutorials/02_convolution_im2col.py`.

# %%
import numpy as np

import minirattn as mr
from minirattn import functional as F
from minirattn.functional.conv import _col2im, _im2col

rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 6, 6))
w = rng.standard_normal((4, 3, 3, 3))

# %% [markdown]
# ## The columns
# With padding 1 and stride 1, the 6x6 input gives 36 columns of $3 \cdot 3 \cdot 3 = 27$ values per image.

# %%
xpad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
cols = _im2col(xpad, 3, 3, 1, 1, 6, 6)
print("columns per image:", cols.shape[1:])
assert cols.shape == (2, 27, 36)
assert np.allclose(cols[0, :, 7], xpad[0, :, 1:4, 1:4].ravel())       # column 7 = the patch at (1, 1)

# %% [markdown]
# ## Forward = one matrix product, checked against the definition

# %%
y, cache = F.conv2d_forward(x, w, None, 1, 1)
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
back = _col2im(c, np.zeros_like(xpad), 3, 3, 1, 1, 6, 6)
assert np.isclose((cols * c).sum(), (xpad * back).sum())

# %% [markdown]
# ## The backward, proven
# A 1x1 convolution needs no columns at all: it is a matrix product over channels.

# %%
r = mr.gradcheck(lambda x, w: F.conv2d_forward(x, w, None, 2, 1), [x, w], lambda dy, c: F.conv2d_backward(dy, c)[:2])
print(f"3x3 stride 2: worst relative error {r.worst_error:.1e}")
assert r.ok
w1 = rng.standard_normal((5, 3, 1, 1))
y1, _ = F.conv2d_forward(x, w1)
assert np.allclose(y1, np.einsum("fc,nchw->nfhw", w1[:, :, 0, 0], x))
