# %% [markdown]
# # 10 · Label noise, Eq. (7)
#
# The paper tests robustness by corrupting CIFAR-10's training labels with the confusion matrix
#
# $$Q_{ij} = \begin{cases} r & i = j \\ \frac{1-r}{K-1} & i \ne j \end{cases}$$
#
# each label kept with probability $r$, otherwise replaced by one of the other $K-1$ classes uniformly;
# the noise level is $1-r$. `minirattn.train.add_label_noise` draws exactly that, seeded, and records
# which labels it flipped; `train_cifar(label_noise=...)` applies it to the training set only.
# Run with `python tutorials/10_label_noise.py`.

# %%
import numpy as np

from minirattn.train import add_label_noise

K, noise = 10, 0.3
y = np.random.default_rng(0).integers(0, K, 50_000)
noisy, flipped = add_label_noise(y, noise, K, seed=0)

# %% [markdown]
# ## The empirical confusion matrix is Q

# %%
Q = np.zeros((K, K))
np.add.at(Q, (y, noisy), 1)
Q /= Q.sum(axis=1, keepdims=True)
print("diagonal ~ r =", 1 - noise, ":", Q.diagonal().round(3))
print("off-diagonal ~ (1-r)/(K-1) =", round(noise / (K - 1), 4), ": mean", Q[~np.eye(K, dtype=bool)].mean().round(4))
assert np.abs(Q.diagonal() - (1 - noise)).max() < 0.02
assert np.abs(Q[~np.eye(K, dtype=bool)] - noise / (K - 1)).max() < 0.01
assert (noisy[flipped] != y[flipped]).all()               # a flipped label is never the true class
assert abs(len(flipped) / len(y) - noise) < 0.01
again, _ = add_label_noise(y, noise, K, seed=0)
assert (again == noisy).all()                             # the same seed, the same noise

# %% [markdown]
# What the masks do with wrong labels (the paper's Table 6 and its argument that the mask's gradient
# filtering makes ARL robust) needs a real training run on CIFAR-10; it is not part of this tutorial
# yet. `minirattn train --dataset cifar10 --label-noise 0.3` runs it.
