# %% [markdown]
# # 11 · Synchronized batch norm and data parallelism
#
# Data-parallel training splits each global batch over $R$ ranks. Every layer but one works image by
# image, so each rank can run it on its slice alone; **batch norm** is the exception: its statistics
# are over the whole batch. Synchronized batch norm sums them over the ranks (derivation:
# `docs/math/sync_batchnorm.md`):
#
# $$\mu = \frac{\mathrm{AR}(\sum_m x)}{\mathrm{AR}(M_r)},\qquad
# \sigma^2 = \frac{\mathrm{AR}(\sum_m (x-\mu)^2)}{M},$$
#
# where AR is the all-reduce, a sum over ranks that every rank receives. Here two ranks are simulated
# with threads (`minirattn.distributed.ThreadRanks`): each gets the communicator the real MPI ranks
# get, with the same `allreduce`. Run with `python tutorials/11_data_parallel_batchnorm.py`; the same
# code runs across processes under `mpiexec -n 2` (`tests/test_mpi.py`).

# %%
import numpy as np

from minirattn import distributed as D, functional as F, gradcheck
from minirattn.models import build
from minirattn.training import SGD, train_step

rng = np.random.default_rng(0)
C = 3
x = rng.standard_normal((10, C, 4, 4)) * np.array([1.0, 3.0, 0.5])[None, :, None, None] + 2.0
gamma, beta = rng.uniform(0.5, 1.5, C), rng.standard_normal(C)
shards = [x[:6], x[6:]]                           # two ranks, uneven: 6 and 4 images

# %% [markdown]
# ## The synchronized forward equals batch norm on the whole batch
# `reduce=comm.reduce` is all it takes: `batchnorm2d_forward` sends (sum x, count) through it, then
# the sum of squared deviations.

# %%
def forward_on_ranks(comm, x_r):
    y, cache = F.batchnorm2d_forward(x_r, gamma, beta, reduce=comm.reduce)
    return y, cache

outs = D.ThreadRanks(2).run(forward_on_ranks, [(s,) for s in shards])
y_whole, cache_whole = F.batchnorm2d_forward(x, gamma, beta)
y_ranks = np.concatenate([y for y, _ in outs])
assert np.allclose(y_ranks, y_whole, rtol=1e-12, atol=1e-12)
assert np.allclose(outs[0][1].mean, x.mean(axis=(0, 2, 3)))          # every rank: the global mean
print("global count per channel:", float(outs[1][1].count), "= 10 images x 16 pixels")

# %% [markdown]
# ## The backward needs exactly two sums from the other ranks
# Batch norm's input gradient (tutorial 03) is
# $\frac{\gamma r}{M}\big(M\delta - \sum\delta - \hat x\sum\delta\hat x\big)$: everything in it is local
# except $\sum\delta$ and $\sum\delta\hat x$, which run over the whole batch. So the backward
# all-reduces those two $C$-vectors (one call of $2C$ numbers). The parameter gradients it returns are
# each rank's *share*; the data-parallel step sums every parameter gradient over the ranks anyway.

# %%
dy = rng.standard_normal(x.shape)
dy_shards = [dy[:6], dy[6:]]

def backward_on_ranks(comm, x_r, dy_r):
    y, cache = F.batchnorm2d_forward(x_r, gamma, beta, reduce=comm.reduce)
    return F.batchnorm2d_backward(dy_r, cache)

grads = D.ThreadRanks(2).run(backward_on_ranks, list(zip(shards, dy_shards)))
dx_whole, dgamma_whole, dbeta_whole = F.batchnorm2d_backward(dy, cache_whole)
assert np.allclose(np.concatenate([g[0] for g in grads]), dx_whole, rtol=1e-10, atol=1e-12)
assert np.allclose(grads[0][1] + grads[1][1], dgamma_whole)          # shares add up
assert np.allclose(grads[0][2] + grads[1][2], dbeta_whole)

# the two sums by hand, from each rank's own data:
xhat = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
local = [(d.sum(axis=(0, 2, 3)), (d * h).sum(axis=(0, 2, 3)))
         for d, h in zip(dy_shards, (xhat[:6], xhat[6:]))]
assert np.allclose(local[0][0] + local[1][0], dbeta_whole)            # sum of delta
assert np.allclose(local[0][1] + local[1][1], dgamma_whole)           # sum of delta x-hat
print("rank shares of dgamma:", grads[0][1].round(3), "+", grads[1][1].round(3))

# %% [markdown]
# ## And finite differences agree, across both ranks at once
# The whole two-rank computation is one function of both ranks' inputs and of $\gamma, \beta$;
# `gradcheck` differentiates it numerically and compares with the ranks' backward.

# %%
def two_ranks(x0, x1, g, b):
    outs = D.ThreadRanks(2).run(lambda comm, xr: F.batchnorm2d_forward(xr, g, b, reduce=comm.reduce),
                                [(x0,), (x1,)])
    return np.concatenate([y for y, _ in outs]), (x0, x1, g, b)

def two_ranks_backward(d, cache):
    x0, x1, g, b = cache
    def rank(comm, xr, dr):
        _, c = F.batchnorm2d_forward(xr, g, b, reduce=comm.reduce)
        return F.batchnorm2d_backward(dr, c)
    (dx0, dg0, db0), (dx1, dg1, db1) = D.ThreadRanks(2).run(rank, [(x0, d[:len(x0)]), (x1, d[len(x0):])])
    return dx0, dx1, dg0 + dg1, db0 + db1

r = gradcheck(two_ranks, [shards[0], shards[1], gamma, beta], two_ranks_backward)
print(f"finite differences across two ranks: worst relative error {r.worst_error:.1e}")
assert r.ok

# %% [markdown]
# ## What goes wrong with per-rank batch norm on small slices
# Without synchronization each rank normalises its slice with its own statistics. With many ranks and
# small slices (2 images a rank here) the statistics are noisy: each slice is normalised differently,
# and the running statistics, which evaluation uses, come from slices too. In the limit of one image of
# one pixel per rank the variance is 0 and the layer's output carries no information at all.

# %%
big = rng.standard_normal((8, C, 2, 2)) * 2.0 + 1.0
per_rank = np.concatenate([F.batchnorm2d_forward(s, np.ones(C), np.zeros(C))[0]
                           for s in np.split(big, 4)])                  # 4 ranks, 2 images each
synced = np.concatenate(D.ThreadRanks(4).run(
    lambda comm, s: F.batchnorm2d_forward(s, np.ones(C), np.zeros(C), reduce=comm.reduce)[0],
    [(s,) for s in np.split(big, 4)]))
whole = F.batchnorm2d_forward(big, np.ones(C), np.zeros(C))[0]
gap = np.abs(per_rank - whole).max()
print(f"largest difference from whole-batch batch norm: per-rank {gap:.2f}, synchronized "
      f"{np.abs(synced - whole).max():.1e}")
assert gap > 0.1 and np.allclose(synced, whole)

# %% [markdown]
# ## A whole training step on two ranks is the one-process step
# `train_step(..., comm=, global_batch=)` scales each rank's loss gradient by its share of the global
# batch ($n_r/B$), so the ranks' gradients add up to the gradient of the global mean loss, and
# all-reduces the flat gradient buffer once; `sync_batchnorm` gives every batch norm the reduction.
# In float64, two ranks and one process end a step with the same weights to round-off.

# %%
narrow = dict(widths=(8, 8, 16), stem_width=4, final_width=16, final_units=1, input_size=16)
xb = rng.standard_normal((6, 3, 16, 16))
yb = rng.integers(0, 3, 6)

def network():
    net = build("attention56", num_classes=3, seed=0, **narrow).to(dtype="float64")
    return net, SGD(net, lr=0.05)

def rank_step(comm, lo, hi):
    net, opt = network()
    D.sync_batchnorm(net, comm)
    train_step(net, opt, xb[lo:hi], yb[lo:hi], 0.05, comm=comm, global_batch=6)
    return net.state_dict()

ranks = D.ThreadRanks(2).run(rank_step, [D.shard(6, r, 2) for r in range(2)])
one, opt = network()
train_step(one, opt, xb, yb, 0.05)
worst = max(np.abs(ranks[0][k] - v).max() for k, v in one.state_dict().items())
print(f"two ranks vs one process after a step: largest weight difference {worst:.1e}")
assert worst < 1e-12 and all(np.array_equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
