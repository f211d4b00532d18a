# %% [markdown]
# # 06 · The three mask activations f1, f2, f3 and their Jacobians
#
# The soft mask branch ends in an activation that turns features into a mask (paper Sec. 3.3):
#
# * f1, mixed attention: $M = \sigma(x)$ for every channel and position;
# * f2, channel attention: $M_c = x_c / \sqrt{\sum_{c'} x_{c'}^2 + \epsilon}$ at every position;
# * f3, spatial attention: $M = \sigma\big((x - \mu)/\sqrt{\sigma^2 + \epsilon}\big)$, statistics per sample and
#   channel over positions.
#
# Run with `python tutorials/06_mask_activations.py`.

# %%
import numpy as np

import minirattn as mr
from minirattn import functional as F

rng = np.random.default_rng(0)
x = rng.standard_normal((2, 4, 5, 5)) + 0.5

# %% [markdown]
# ## What each one normalises

# %%
m1, _ = F.f1_mixed_forward(x)
m2, _ = F.f2_channel_forward(x)
m3, _ = F.f3_spatial_forward(x)
assert ((m1 > 0) & (m1 < 1)).all()                                    # f1: a gate in (0, 1)
assert np.allclose((m2 ** 2).sum(axis=1), 1)                            # f2: unit length over channels
z = np.log(m3 / (1 - m3))                                               # f3: undo the sigmoid ...
assert np.allclose(z.mean(axis=(2, 3)), 0, atol=1e-9)                   # ... zero mean and
assert np.allclose(z.std(axis=(2, 3)), 1, atol=1e-3)                    # unit spread per channel
print("f1 range", m1.min().round(3), m1.max().round(3), "| f2 channel norms 1 | f3 standardised then squashed")

# %% [markdown]
# ## Their Jacobians
# f1 is elementwise: $\partial M/\partial x = M(1-M)$. f2 couples the channels at a position:
# $\partial M_c/\partial x_k = (\mathbb 1[c=k] - M_c M_k)/n$, a projection that removes the radial
# direction, so moving $x$ along itself does not change $M$. f3 couples the positions of a channel, with
# the same algebra as batch norm. Derivations: `docs/math/mask_activations.md`.

# %%
# The f2 Jacobian at each position is symmetric, so the backward applied to x computes J x, the change
# of M when x moves along itself: zero (up to the tiny epsilon in the norm).
y, cache = F.f2_channel_forward(x)
Jx = F.f2_channel_backward(x, cache)
print(f"f2: |J x| = {np.abs(Jx).max():.1e} (scale invariance)")
assert np.abs(Jx).max() < 1e-9

for name, (fwd, bwd) in {"f1": (F.f1_mixed_forward, F.f1_mixed_backward),
                         "f2": (F.f2_channel_forward, F.f2_channel_backward),
                         "f3": (F.f3_spatial_forward, F.f3_spatial_backward)}.items():
    r = mr.gradcheck(fwd, [x], bwd)
    print(f"{name}: finite differences agree, worst relative error {r.worst_error:.1e}")
    assert r.ok
