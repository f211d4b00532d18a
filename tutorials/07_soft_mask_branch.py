# %% [markdown]
# # 07 · The soft mask branch and the attention module
#
# The mask branch is bottom-up top-down (paper Fig. 2): max-pools shrink the map to gather global
# context, bilinear upsampling brings it back to the trunk's size, and skip connections carry each
# level's features across. With $k$ pools and $r$ units per level (2r at the bottom):
#
# going down, $d_i = \mathrm{units}_i(\mathrm{pool}(d_{i-1}))$; coming up,
# $u_i = \mathrm{units}'_i(\mathrm{up}(u_{i+1}) + \mathrm{skip}_i(d_i))$; then BN-ReLU-1x1-BN-ReLU-1x1 and the mask
# activation. Run with `python tutorials/07_soft_mask_branch.py`.

# %%
import numpy as np

import minirattn as mr
from minirattn.models import AttentionModule, SoftMaskBranch

rng = np.random.default_rng(0)

# %% [markdown]
# ## Shapes on the way down and up (stage 1 of the CIFAR network: k = 3 on 32x32)

# %%
branch = SoftMaskBranch(8, k=3, r=1, rng=0)
x = rng.standard_normal((2, 8, 32, 32)).astype(np.float32)
sizes, d = [], x
for i in range(3):
    d = getattr(branch, f"down{i}")(getattr(branch, f"pool{i}")(d))
    sizes.append(d.shape[2])
print("down path sizes:", sizes)
assert sizes == [16, 8, 4]
skips = [n for n, _ in branch.named_modules() if n.startswith("skip") and "." not in n]
assert skips == ["skip0", "skip1"]                       # k - 1 skip connections
M = branch(x)
assert M.shape == x.shape and ((M > 0) & (M < 1)).all()  # f1 (sigmoid) mask at the trunk's size

# %% [markdown]
# ## The backward sums where the paths join
# Each $d_i$ above the bottom feeds both the next pool and its skip unit, so its gradient is the sum of
# the two. The gradient check of the whole branch (float64, a smaller map) proves the bookkeeping.

# %%
small = SoftMaskBranch(4, k=2, r=1, rng=1, dtype="float64")
r = mr.gradcheck(small, [rng.standard_normal((3, 4, 8, 8))], eps=1e-6, elementwise_limit=0, n_directions=2)
print(f"soft mask branch, k = 2: worst relative error {r.worst_error:.1e} over {len(r.rows)} checks")
assert r.ok

# %% [markdown]
# ## The attention module: trunk and mask from the same input
# $a = \mathrm{pre}(x)$ feeds the trunk $T$ and the mask $M$, so $\partial L/\partial a$ is the sum of what comes
# back through each; $H = (1 + M) \odot T$, then the post units.

# %%
mod = AttentionModule(4, k=2, p=1, t=1, rng=2, dtype="float64")
x = rng.standard_normal((3, 4, 8, 8))
y = mod(x)
assert y.shape == x.shape and np.allclose(mod.post(((1 + mod.last_mask) * mod.last_trunk)), y)
r = mr.gradcheck(mod, [x], eps=1e-6, elementwise_limit=0, n_directions=2)
print(f"attention module: worst relative error {r.worst_error:.1e}")
assert r.ok
