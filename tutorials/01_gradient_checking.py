# %% [markdown]
# # 01 · Gradient checking
#
# Every backward pass in minirattn is written by hand, so every one must be proven. The proof is
# a finite difference: for a scalar $L(x)$,
#
# $$\frac{\partial L}{\partial x_i} \approx \frac{L(x + \epsilon e_i) - L(x - \epsilon e_i)}{2\epsilon},$$
#
# whose error is $O(\epsilon^2)$ (the one-sided quotient's is $O(\epsilon)$). Four habits make it trustworthy;
# each is shown, and asserted, below. Run with `python tutorials/01_gradient_checking.py`.

# %%
import numpy as np

import minirattn as mr
from minirattn import functional as F

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Central, not one-sided, differences
# For $L = \sum \sin(x)$ the exact gradient is $\cos(x)$. The central difference is about $10^5$ times
# more accurate at $\epsilon = 10^{-5}$.

# %%
x = rng.standard_normal(5)
exact = np.cos(x)
eps = 1e-5
central = np.array([(np.sin(x[i] + eps) - np.sin(x[i] - eps)) / (2 * eps) for i in range(5)])
forward = np.array([(np.sin(x[i] + eps) - np.sin(x[i])) / eps for i in range(5)])
err_c, err_f = np.abs(central - exact).max(), np.abs(forward - exact).max()
print(f"central {err_c:.1e}, one-sided {err_f:.1e}")
assert err_c < 1e-9 and err_f > 1e-7

# %% [markdown]
# ## 2. float64, never float32
# In float32 the round-off of $L$ (about $10^{-7}$ relative) divided by $2\epsilon$ swamps the quotient.

# %%
x32 = x.astype(np.float32)
central32 = np.array([(np.sin(x32[i] + np.float32(eps)) - np.sin(x32[i] - np.float32(eps))) / (2 * eps)
                      for i in range(5)])
err32 = np.abs(central32 - exact).max()
print(f"float32 central difference error {err32:.1e}")
assert err32 > 1e-3

# %% [markdown]
# ## 3. A random upstream gradient
# We check $L = \sum y \odot dy$ for a random $dy$. With $dy = 1$ some bugs are invisible: batch norm's
# exact input gradient is then zero, so a backward missing its whole variance term would pass.

# %%
x = rng.standard_normal((4, 3, 2, 2))
c3 = np.ones(3)
y, cache = F.batchnorm2d_forward(x, c3, 0 * c3)
dx_ones, _, _ = F.batchnorm2d_backward(np.ones_like(y), cache)
print(f"batch norm input gradient for dy = 1: max |dx| = {np.abs(dx_ones).max():.1e}")
assert np.abs(dx_ones).max() < 1e-12

# gamma and beta are fixed here, so their gradients (after dx) are not checked
report = mr.gradcheck(lambda x: F.batchnorm2d_forward(x, c3, 0 * c3), [x], F.batchnorm2d_backward)
print(report)
assert report.ok and report.worst_error < 1e-6

# %% [markdown]
# ## 4. Keep off the kinks
# ReLU and max pooling are not differentiable everywhere. If a perturbation of size $\epsilon$ moves an
# input across 0 (or changes which value is the maximum), the difference quotient measures a jump,
# not a slope. Here one input sits $10^{-7}$ from the kink:

# %%
x = np.array([[0.5, -1e-7, 2.0]])
bad = mr.gradcheck(F.relu_forward, [x], F.relu_backward, raise_on_failure=False)
print(f"near the kink: worst relative error {bad.worst_error:.2f}")
assert not bad.ok
good = mr.gradcheck(F.relu_forward, [np.array([[0.5, -0.3, 2.0]])], F.relu_backward)
assert good.ok
# %% [markdown]
# That is why the tests draw ReLU inputs with $|x| \ge 0.1$ and max-pool inputs that are distinct and
# well separated, and why whole-network checks use $\epsilon = 10^{-6}$. See `docs/testing.md`.
