# %% [markdown]
# # 03 · Batch normalisation: forward, and the compact backward
#
# Per channel, over the $M = NHW$ values of a batch:
# $\hat x = (x - \mu)/\sqrt{\sigma^2 + \epsilon}$, $y = \gamma \hat x + \beta$. Because $\mu$ and $\sigma$ depend on every
# input, the gradient couples them all, yet it collapses to one line (derivation: `docs/math/batchnorm.md`):
#
# $$\frac{\partial L}{\partial x} = \frac{\gamma}{M\sqrt{\sigma^2+\epsilon}}\Big(M\delta - \sum\delta - \hat x \sum \delta\hat x\Big).$$
#
# The code to read is the textbook pair, `_forward_textbook` and `_backward_textbook` in
# `minirattn/functional/batchnorm.py`: these formulas one array operation a line, printed below.
# `batchnorm2d_forward(..., method="auto")` runs a faster arrangement of the same formulas (compiled
# loops on NumPy where numba is installed, `batchnorm_compiled.py`, else in place on NumPy; one fused
# kernel per step on the GPU, `batchnorm_fast.py`); the last section shows that every path gives the
# textbook pair's numbers.
#
# Run with `python tutorials/03_batch_normalisation.py`.

# %%
import inspect

import numpy as np

import minirattn as mr
from minirattn import backend, functional as F

rng = np.random.default_rng(0)
x = rng.standard_normal((8, 3, 4, 4)) * np.array([0.5, 2.0, 5.0])[None, :, None, None] + 3.0
gamma, beta = np.array([1.0, 0.5, 2.0]), np.array([0.0, 1.0, -1.0])
rm, rv = np.zeros(3), np.ones(3)

# %% [markdown]
# ## Forward: the statistics conventions
# The batch is normalised with the biased variance; the running variance is updated with the unbiased
# one, with PyTorch's momentum 0.1. The running statistics are not part of the differentiable op: the
# forward keeps the batch's statistics in its cache, and `batchnorm2d_running_stats` returns the
# updated running pair from them.

# %%
y, cache = F.batchnorm2d_forward(x, gamma, beta, rm, rv, training=True)
new_mean, new_var = F.batchnorm2d_running_stats(cache, rm, rv, momentum=0.1)
xhat = (y - beta[None, :, None, None]) / gamma[None, :, None, None]
assert np.allclose(xhat.mean(axis=(0, 2, 3)), 0) and np.allclose(xhat.var(axis=(0, 2, 3)), 1, atol=1e-4)
M = 8 * 4 * 4
assert np.allclose(new_var, 0.9 * rv + 0.1 * x.var(axis=(0, 2, 3)) * M / (M - 1))
print("per-channel batch std", x.std(axis=(0, 2, 3)).round(2), "-> normalised to 1")

# %% [markdown]
# ## The textbook pair
# Forward and backward, side by side, as the library writes them (`column(v)` reshapes a per-channel
# vector `(C,)` to `(1, C, 1, 1)` so that it broadcasts against the batch; `reduce` is the sum over
# data-parallel ranks of tutorial 11, `None` in one process):

# %%
from minirattn.functional import batchnorm

print(inspect.getsource(batchnorm._forward_textbook))
print(inspect.getsource(batchnorm._backward_textbook))

# %% [markdown]
# ## The compact backward, written out here, equals the library's and finite differences

# %%
dy = rng.standard_normal(x.shape)
inv_std = 1 / np.sqrt(x.var(axis=(0, 2, 3)) + 1e-5)
s1, s2 = dy.sum(axis=(0, 2, 3)), (dy * xhat).sum(axis=(0, 2, 3))
by_formula = (gamma * inv_std / M)[None, :, None, None] * (M * dy - s1[None, :, None, None]
                                                          - xhat * s2[None, :, None, None])
dx, dgamma, dbeta = F.batchnorm2d_backward(dy, cache)
assert np.allclose(dx, by_formula) and np.allclose(dgamma, s2) and np.allclose(dbeta, s1)
r = mr.gradcheck(lambda x, g, b: F.batchnorm2d_forward(x, g, b), [x, gamma, beta],
                 F.batchnorm2d_backward)
print(f"finite differences: worst relative error {r.worst_error:.1e}")
assert r.ok

# %% [markdown]
# ## In evaluation mode the statistics are constants
# Then the layer is an affine map per channel and its gradient is just $\gamma\,\delta/\sqrt{\sigma^2_{run}+\epsilon}$.

# %%
y, cache = F.batchnorm2d_forward(x, gamma, beta, new_mean, new_var, training=False)
dx, _, _ = F.batchnorm2d_backward(dy, cache)
assert np.allclose(dx, dy * (gamma / np.sqrt(new_var + 1e-5))[None, :, None, None])

# %% [markdown]
# ## The ReLU that follows, in the same op
# In every unit a ReLU follows the batch norm. `relu=True` applies it in the normalising pass and
# takes its gradient into the batch norm's backward: the upstream gradient becomes
# $\delta\,\mathbb 1[y > 0]$ and every formula above holds with it. Same numbers, one op (and on a GPU
# no kernels of the ReLU's own).

# %%
y_bn, cache_bn = F.batchnorm2d_forward(x, gamma, beta)
z, cache_relu = F.relu_forward(y_bn)
z_fused, cache_fused = F.batchnorm2d_forward(x, gamma, beta, relu=True)
assert np.array_equal(z_fused, z)
separate = F.batchnorm2d_backward(F.relu_backward(dy, cache_relu), cache_bn)
for a, b in zip(F.batchnorm2d_backward(dy, cache_fused), separate):
    assert np.allclose(a, b, rtol=1e-12, atol=1e-12)
print("BN then ReLU, and BN with relu=True: the same output and gradients")

# %% [markdown]
# ## Every path gives the textbook pair's numbers
# `method` chooses how the numbers are computed: `"textbook"` (above), `"in_place"` (NumPy: the
# same formulas on one centred array, fewer passes over memory), `"fused"` (one kernel per step on
# the GPU; on NumPy the plain functions), `"compiled"` (NumPy with numba: each pass over memory one
# compiled loop), `"auto"` (compiled, or in place without numba, on NumPy; fused on CuPy). The
# backward takes its forward's path.

# %%
methods = [m for m in F.BATCHNORM_METHODS if m != "compiled" or backend.jit_available()]
for training in (True, False):
    reference = None
    for method in methods:
        y, c = F.batchnorm2d_forward(x, gamma, beta, new_mean, new_var, training=training,
                                     relu=True, method=method)
        out = (y, *F.batchnorm2d_backward(dy, c))
        reference = reference or out
        assert all(np.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip(out, reference))
print(", ".join(methods) + ": the same outputs and gradients, training and evaluation")
