# %% [markdown]
# # 04 · Max pooling, where its gradient goes, and global average pooling
#
# The soft mask branch goes down with 3x3 max pools of stride 2 and padding 1; the network ends with a
# global average pool. Run with `python tutorials/04_pooling.py`.

# %%
import numpy as np

import minirattn as mr
from minirattn import functional as F

rng = np.random.default_rng(0)

# %% [markdown]
# ## Max pooling routes each gradient to one input
# $y_{ij} = \max_{(u,v) \in \text{window}_{ij}} x_{uv}$ is piecewise linear: its derivative is 1 at the
# selected input and 0 elsewhere, so every upstream gradient lands on exactly one input, and where
# windows overlap (stride 2 < kernel 3) an input can collect several.

# %%
x = rng.permutation(36).reshape(1, 1, 6, 6).astype(float)      # distinct values: no ties
y, cache = F.maxpool2d_forward(x, 3, 2, 1)
dy = rng.standard_normal(y.shape)
dx = F.maxpool2d_backward(dy, cache)
print("output 6x6 -> ", y.shape[2:], "\nwhere the gradient lands:\n", (dx != 0).astype(int)[0, 0])
assert y.shape == (1, 1, 3, 3)
assert np.isclose(dx.sum(), dy.sum())                             # nothing lost, nothing invented
assert mr.gradcheck(lambda x: F.maxpool2d_forward(x, 3, 2, 1), [x], F.maxpool2d_backward).ok

# %% [markdown]
# ## Ties go to the first maximum
# When several inputs share the maximum, the subgradient is a choice. minirattn, like most frameworks,
# gives the whole gradient to the first maximum in row-major order of the window. The padding is
# $-\infty$, so it never wins, even against very negative inputs.

# %%
y, cache = F.maxpool2d_forward(np.array([[[[1.0, 5.0], [5.0, 5.0]]]]), 2, 2, 0)
dx = F.maxpool2d_backward(np.ones((1, 1, 1, 1)), cache)
print(dx[0, 0])
assert dx[0, 0, 0, 1] == 1 and dx.sum() == 1
y, _ = F.maxpool2d_forward(np.full((1, 1, 4, 4), -1e30), 3, 2, 1)
assert (y == -1e30).all()

# %% [markdown]
# ## The textbook pair, and the path the networks take
# `method="textbook"` computes the definition: the $k^2$ strided views of the padded input (one
# per window offset), stacked; their max, and the index of the first view that reaches it
# (`argmax` returns the first, so ties go to the first maximum in row-major order). The backward
# adds $\delta$ back through the view that won. `method="auto"` runs the separable passes (the max
# along each row, then along each column: $2k$ views instead of $k^2$) and gives the same numbers.

# %%
x = rng.integers(0, 3, (2, 3, 9, 9)).astype(float)               # small integers: ties everywhere
y_t, cache_t = F.maxpool2d_forward(x, 3, 2, 1, method="textbook")
y_a, cache_a = F.maxpool2d_forward(x, 3, 2, 1)
dy = rng.standard_normal(y_t.shape)
assert np.array_equal(y_t, y_a)
# (where windows overlap an input collects several dy, added in another order: equal to round-off)
assert np.allclose(F.maxpool2d_backward(dy, cache_t), F.maxpool2d_backward(dy, cache_a),
                   rtol=1e-12, atol=1e-15)
print("textbook and separable max pool: the same output and the same gradient, ties included")

# %% [markdown]
# ## Global average pooling spreads the gradient evenly
# $y_{nc} = \frac{1}{HW}\sum_{ij} x_{ncij}$, so $\partial L/\partial x_{ncij} = \delta_{nc}/(HW)$.

# %%
x = rng.standard_normal((2, 3, 4, 4))
y, cache = F.global_avgpool_forward(x)
dx = F.global_avgpool_backward(np.ones_like(y), cache)
assert np.allclose(dx, 1 / 16)
assert mr.gradcheck(F.global_avgpool_forward, [x], F.global_avgpool_backward).ok
