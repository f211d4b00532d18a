# %% [markdown]
# # 05 · Bilinear upsampling and its adjoint
#
# The soft mask branch shrinks its input with max pools and grows it back with bilinear
# interpolation. With `align_corners=True` (Caffe's `Interp`, PyTorch's `UpsamplingBilinear2d`),
# output row $i$ of $H_o$ reads input position $s_i = i\,(H-1)/(H_o-1)$, so the first and last pixels
# line up exactly. Run with `python tutorials/05_bilinear_upsampling.py`.

# %%
import numpy as np

import minirattn as mr
from minirattn import functional as F

rng = np.random.default_rng(0)

# %% [markdown]
# ## Interpolation is a matrix
# In one dimension, upsampling 4 values to 7 is multiplication by a $7\times 4$ matrix $A$ with at most
# two non-zeros per row, each row summing to one.

# %%
A = F.interpolation_matrix(7, 4, np, np.float64)
print(np.round(A, 3))
assert np.allclose(A.sum(axis=1), 1) and ((A > 0).sum(axis=1) <= 2).all()
assert A[0, 0] == 1 and A[-1, -1] == 1                       # the corners align

# %% [markdown]
# ## Separable: $Y = A_h X A_w^\top$
# An image is interpolated along rows and columns independently, so the 2-D operation is two small
# matrix products. `bilinear_forward` is exactly that; we compare with the definition written out.

# %%
x = rng.standard_normal((1, 1, 4, 5))
y, cache = F.bilinear_forward(x, (7, 9))
A_h, A_w = F.interpolation_matrix(7, 4, np, np.float64), F.interpolation_matrix(9, 5, np, np.float64)
assert np.allclose(y[0, 0], A_h @ x[0, 0] @ A_w.T)
i, j = 3, 4                                                 # one pixel by hand
sy, sx = i * 3 / 6, j * 4 / 8
y0, x0 = int(sy), int(sx)
fy, fx = sy - y0, sx - x0
by_hand = ((1 - fy) * (1 - fx) * x[0, 0, y0, x0] + (1 - fy) * fx * x[0, 0, y0, x0 + 1]
           + fy * (1 - fx) * x[0, 0, y0 + 1, x0] + fy * fx * x[0, 0, y0 + 1, x0 + 1])
assert np.isclose(y[0, 0, i, j], by_hand)

# %% [markdown]
# ## The backward is the transpose
# A linear map's gradient is its adjoint: $\partial L/\partial X = A_h^\top\,\delta\,A_w$. The adjoint
# identity $\langle A x, u\rangle = \langle x, A^\top u\rangle$ holds to round-off, and the finite-difference
# check agrees.

# %%
u = rng.standard_normal(y.shape)
lhs, rhs = (y * u).sum(), (x * F.bilinear_backward(u, cache)).sum()
print(f"<Ax, u> = {lhs:.12f}, <x, A^T u> = {rhs:.12f}")
assert abs(lhs - rhs) < 1e-12
assert mr.gradcheck(lambda x: F.bilinear_forward(x, (7, 9)), [x], F.bilinear_backward).ok

# %% [markdown]
# ## Any size ratio
# Odd sizes happen in the mask branch (7 → 4 → 7); nothing assumes a factor of two.

# %%
y, _ = F.bilinear_forward(rng.standard_normal((2, 3, 7, 7)), 16)
assert y.shape == (2, 3, 16, 16)
