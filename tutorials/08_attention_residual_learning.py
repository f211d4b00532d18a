# %% [markdown]
# # 08 · Attention residual learning vs naive attention
#
# An attention module combines its trunk output $T$ and mask $M \in (0, 1)$. Naive attention learning
# (NAL) uses $H = M \odot T$; attention residual learning (ARL, the paper's Eq. 3) uses
# $H = (1 + M) \odot T$. The gradient that reaches the trunk is filtered by the mask (Eq. 2):
#
# $$\frac{\partial L}{\partial T} = \frac{\partial L}{\partial H} \odot M \ \ (\text{NAL}), \qquad
# \frac{\partial L}{\partial T} = \frac{\partial L}{\partial H} \odot (1 + M) \ \ (\text{ARL}).$$
#
# Run with `python tutorials/08_attention_residual_learning.py` (`MINIRATTN_FAST=1` for a quick run).

# %%
import os

import numpy as np

from minirattn.models import AttentionModule, build, feature_response

FAST = os.environ.get("MINIRATTN_FAST") == "1"
rng = np.random.default_rng(0)

# %% [markdown]
# ## Eq. (2), numerically, on one attention module
# Back-propagate through the whole module, then recompute the trunk's parameter gradients from the
# formula: filter $\partial L/\partial H$ by the mask and push it through the trunk alone.

# %%
for learning in ("nal", "arl"):
    mod = AttentionModule(4, 2, learning=learning, rng=7, dtype="float64")
    x, dy = rng.standard_normal((3, 4, 8, 8)), rng.standard_normal((3, 4, 8, 8))
    mod.zero_grad(); mod(x); mod.backward(dy)
    full = {n: g.copy() for n, _, g in mod.trunk.named_parameters()}
    mod.zero_grad(); mod(x)
    dH, M = mod.post.backward(dy), mod.last_mask
    mod.trunk.backward(dH * (M if learning == "nal" else 1 + M))
    gap = max(np.abs(full[n] - g).max() for n, _, g in mod.trunk.named_parameters())
    print(f"{learning}: largest difference between backward and Eq. (2): {gap:.1e}")
    assert gap < 1e-12

# %% [markdown]
# ## Why it matters: stacking modules (the paper's Fig. 4)
# Each NAL module multiplies its trunk's features by $M < 1$; stack enough of them and the signal
# fades. We measure each stage's mean absolute output at initialisation, with batch statistics as in
# training, for a narrow Attention-164 (4 modules a stage) and Attention-56 (1 a stage).

# %%
x = rng.standard_normal((4 if FAST else 8, 3, 32, 32)).astype(np.float32)
narrow = dict(widths=(16, 32, 64), final_width=64, stem_width=8)
ratios = {}
for name in ("attention56",) + (() if FAST else ("attention164",)):
    resp = {r: feature_response(build(name, learning=r, seed=0, **narrow), x, training=True) for r in ("arl", "nal")}
    ratios[name] = resp["nal"][-1] / resp["arl"][-1]
    print(f"{name}: last-stage response NAL/ARL = {ratios[name]:.2f}")
assert ratios["attention56"] < 0.7
if not FAST:
    assert ratios["attention164"] < 0.5 * ratios["attention56"]
