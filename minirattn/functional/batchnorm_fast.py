"""Batch norm's fast paths: the formulas of :mod:`minirattn.functional.batchnorm`'s textbook pair,
arranged for speed. Read the textbook pair first; this module gives the same numbers.

Derivation: docs/math/batchnorm.md

- ``"fused"`` (the GPU path): each step is one kernel (``backend.fuse``): forward, the sums of
  x - shift and (x - shift)^2 (one reduction whose two rows they are; the shift is the previous
  batch's mean, or this one's from one more pass), the statistics with the running update (one
  kernel over the channels) and the normalisation (+ ReLU); backward, sum dy and sum dy xhat
  (one reduction) and dx. Nothing per
  channel gets a kernel of its own: mu = total / count and 1 / sqrt(var + eps) are recomputed
  inside each kernel from the sums the cache keeps (docs/architecture.md, "One kernel per step on
  the GPU"). On NumPy ``backend.fuse`` is the plain function, so this path runs there too (the
  tests compare it with the textbook pair on NumPy and on the CuPy stand-in).
- ``"in_place"`` (NumPy only): where what costs is passes over memory and fresh arrays, the same
  formulas run in place on one centred array, each per-channel factor laid over one image
  (:func:`over_image`) so that NumPy's loops run one long row per image.

Both take the arguments :func:`~minirattn.functional.batchnorm.batchnorm2d_forward` has checked
and return what the textbook pair returns; the tests hold them to it at 1e-12 in float64.
"""
from __future__ import annotations

from .. import backend
from ._reduce import channel_dot, channel_sum, device_constant
from .activations import relu_grad


def column(v):
    """(C,) -> (1, C, 1, 1), a view that broadcasts against the NCHW batch."""
    return v.reshape(1, -1, 1, 1)


def over_image(v, x):
    """(C,) -> (1, C, H, W): v laid over one image of the NCHW batch ``x``, for the in-place
    path's per-channel operations (NumPy). Against a (1, C, 1, 1) column NumPy's loop runs one
    (n, c) row of H W values at a time, paying a fixed cost per row; against this array each
    image is one row of C H W values. Making it writes one image's worth; the operation then
    takes 0.5-0.65x the time (benchmarks/README.md, 2026-12-07)."""
    out = backend.numpy.empty((1,) + tuple(x.shape[1:]), dtype=v.dtype)
    out[...] = column(v)
    return out


# -- the math as CuPy runs it, each function one fused kernel ---------------------------------
def mean_inv_std(xp, total, squares, count, eps):
    """mu and 1 / sqrt(var + eps) from the sums."""
    return total / count, 1.0 / xp.sqrt(squares / count + eps)


def _bn(xp, x, total, squares, count, eps, gamma, beta):
    mu, inv_std = mean_inv_std(xp, total, squares, count, eps)
    return (x - mu) * (gamma * inv_std) + beta


@backend.fuse
def _normalize(xp, x, total, squares, count, eps, gamma, beta):
    """y = (x - mu) gamma / sqrt(var + eps) + beta."""
    return _bn(xp, x, total, squares, count, eps, gamma, beta)


@backend.fuse
def _normalize_relu(xp, x, total, squares, count, eps, gamma, beta):
    """y = max((x - mu) gamma / sqrt(var + eps) + beta, 0)."""
    return xp.maximum(_bn(xp, x, total, squares, count, eps, gamma, beta), 0)


def _input_grad_of(xp, g, x, total, squares, count, eps, gamma, sum_g, sum_g_xhat, plus):
    """dx = gamma inv_std (g - sum(g) / M - xhat sum(g xhat) / M) + plus, xhat = (x - mu)
    inv_std; ``plus`` is what another branch sends to the same input (or 0)."""
    mu, inv_std = mean_inv_std(xp, total, squares, count, eps)
    return ((g - sum_g / count - (x - mu) * (inv_std * sum_g_xhat / count))
            * (gamma * inv_std) + plus)


@backend.fuse
def _input_grad(xp, dy, x, total, squares, count, eps, gamma, sum_g, sum_g_xhat, plus):
    return _input_grad_of(xp, dy, x, total, squares, count, eps, gamma, sum_g, sum_g_xhat,
                          plus)


@backend.fuse
def _input_grad_relu(xp, dy, y, x, total, squares, count, eps, gamma, sum_g, sum_g_xhat, plus):
    """As :func:`_input_grad` for g = dy [y > 0], the gradient through the ReLU."""
    return _input_grad_of(xp, dy * (y > 0), x, total, squares, count, eps, gamma, sum_g,
                          sum_g_xhat, plus)


@backend.fuse
def _shifted_sums(xp, x, ref_total, ref_count, pick):
    """[sum d, sum d^2] over (N, H, W), d = x - K with K = ref_total / ref_count per channel:
    one (2, C) reduction, its rows laid by ``pick`` = (1, 0) (row k sums
    d (pick_k + (1 - pick_k) d))."""
    d = x - ref_total / ref_count
    return xp.sum(d * (pick + (1 - pick) * d), axis=(1, 3, 4))


def _from_shifted_sums(xp, ref_total, ref_count, s1, s2, count):
    """total = M K + sum d, squares = sum d^2 - (sum d)^2 / M: sum x and sum (x - mean)^2."""
    return count * (ref_total / ref_count) + s1, s2 - s1 * (s1 / count)


@backend.fuse
def _statistics(xp, ref_total, ref_count, s1, s2, count):
    """(total, squares, mean) from the shifted sums, one kernel over (C,)."""
    total, squares = _from_shifted_sums(xp, ref_total, ref_count, s1, s2, count)
    return total, squares, total / count


@backend.fuse
def _statistics_running(xp, ref_total, ref_count, s1, s2, count, count_less_one,
                        running_mean, running_var, keep, momentum):
    """(total, squares, mean, new running mean, new running variance), one kernel over (C,):
    each running value becomes keep running + momentum batch (keep = 1 - momentum, given: no
    arithmetic between two scalars inside a fused function), the batch variance unbiased."""
    total, squares = _from_shifted_sums(xp, ref_total, ref_count, s1, s2, count)
    return (total, squares, total / count, keep * running_mean + momentum * (total / count),
            keep * running_var + momentum * (squares / count_less_one))


@backend.fuse
def _eval_input_grad(xp, g, squares, count, eps, gamma, plus):
    """dx = g gamma / sqrt(var + eps) + plus: in evaluation mode mu and var are constants."""
    return g * (gamma / xp.sqrt(squares / count + eps)) + plus


def _both_sums(xp, g, x, total, squares, count, eps, pick):
    """[sum g xhat, sum g] over (N, H, W) as one (2, C) reduction: ``pick`` is (1, 0) on a
    leading axis of its own, so row k sums g (pick_k xhat + 1 - pick_k)."""
    mu, inv_std = mean_inv_std(xp, total, squares, count, eps)
    return xp.sum(g * (pick * ((x - mu) * inv_std) + (1 - pick)), axis=(1, 3, 4))


@backend.fuse
def _sums_g_xhat_and_g(xp, dy, x, total, squares, count, eps, pick):
    """[dgamma, dbeta] = [sum dy xhat, sum dy]: the backward's two reductions, one kernel."""
    return _both_sums(xp, dy, x, total, squares, count, eps, pick)


@backend.fuse
def _sums_g_xhat_and_g_relu(xp, dy, y, x, total, squares, count, eps, pick):
    """As :func:`_sums_g_xhat_and_g` for g = dy [y > 0], the gradient through the ReLU."""
    return _both_sums(xp, dy * (y > 0), x, total, squares, count, eps, pick)


def pick_rows(xp, dtype):
    """The (2, 1, 1, 1, 1) array (1, 0) that lays two sums on the rows of one reduction."""
    return device_constant(xp, backend.numpy.array([1, 0], dtype=dtype).reshape(2, 1, 1, 1, 1))


@backend.fuse
def running(xp, running_mean, running_var, total, squares, count, count_less_one, keep,
            momentum):
    """keep running + momentum batch (keep = 1 - momentum), the batch variance made unbiased.
    (No arithmetic between two scalars inside a fused function: cupy.fuse gives its result a
    type of its own, which can turn the float32 arrays it meets into another type.)"""
    return (keep * running_mean + momentum * (total / count),
            keep * running_var + momentum * (squares / count_less_one))


def over_ranks(reduce, a, b):
    """1-D arrays a and b summed over every rank in one reduction; themselves when ``reduce`` is
    None (one process)."""
    if reduce is None:
        return a, b
    both = reduce(backend.xp_of(a).concatenate((a, b)))
    return both[:a.shape[0]], both[a.shape[0]:]


def total_and_count(x, reduce):
    """(sum x over N, H, W, N H W): with ``reduce`` both over every rank in one reduction (the
    count then a 0-d array on the device: no sync)."""
    N, _, H, W = x.shape
    total, M = channel_sum(x), N * H * W
    if reduce is None:
        return total, M
    total, M = over_ranks(reduce, total, backend.xp_of(x).full(1, M, dtype=x.dtype))
    return total, M[0]


def statistics(x, training, running_mean, running_var, reduce, centred_on_numpy):
    """(total, squares, count) as the cache keeps them, and x - mean where the in-place path
    made it (else None). Training (the in-place path; the fused one: :func:`fused_statistics`):
    sum x, sum (x - mean)^2 and N H W, each over all ranks with ``reduce`` (count then a 0-d
    array on the device: no sync); evaluation: the running mean and variance and a count of 1."""
    if not training:
        total, squares = running_mean.astype(x.dtype), running_var.astype(x.dtype)
        return total, squares, 1, (x - over_image(total, x) if centred_on_numpy else None)
    total, M = total_and_count(x, reduce)
    centred = x - over_image(total / M, x)
    squares = channel_dot(centred, centred)
    return total, (reduce(squares) if reduce is not None else squares), M, centred


def fused_statistics(x, reduce, shift, running, momentum):
    """The fused path's training statistics: (total, squares, count, batch mean, (new running
    mean, new running variance) or None), in two kernels, three without ``shift``.

    Given ``shift`` (C,), a value near each channel's batch mean (``nn.BatchNorm2d`` passes the
    previous batch's), ONE pass sums d = x - shift and d^2, and total = M shift + sum d,
    squares = sum d^2 - (sum d)^2 / M (the shifted-data algorithm: round-off grows as
    1 + ((mean - shift) / std)^2, about 1 for the previous batch's mean). Without it, total
    first, then the same sums about total / M (the corrected two-pass algorithm). A kernel over
    (C,) then makes total, squares, the mean and, given ``running`` (mean, variance), their
    update with ``momentum``. With ``reduce`` every sum (and the count) is over all ranks: one
    reduction with a shift, two without (docs/math/batchnorm.md, "One pass about a shift")."""
    xp = backend.xp_of(x)
    N, _, H, W = x.shape
    M, pick = N * H * W, pick_rows(xp, x.dtype)
    if shift is None:
        ref, M = total_and_count(x, reduce)
        ref_count = M
        sums = _shifted_sums(x, column(ref), ref_count, pick)
        if reduce is not None:
            sums = reduce(sums.reshape(-1)).reshape(2, -1)
    else:
        ref, ref_count = shift, 1
        sums = _shifted_sums(x, column(shift), 1, pick)
        if reduce is not None:
            both = reduce(xp.concatenate((sums.reshape(-1), xp.full(1, M, dtype=x.dtype))))
            sums, M = both[:-1].reshape(2, -1), both[-1]
    if running is None:
        total, squares, mean = _statistics(ref, ref_count, sums[0], sums[1], M)
        return total, squares, M, mean, None
    total, squares, mean, new_mean, new_var = _statistics_running(
        ref, ref_count, sums[0], sums[1], M, M - 1, *running, 1.0 - momentum, momentum)
    return total, squares, M, mean, (new_mean, new_var)


def forward_fused(x, gamma, beta, total, squares, count, eps, relu):
    """y from the statistics, one kernel."""
    return (_normalize_relu if relu else _normalize)(
        x, column(total), column(squares), count, eps, column(gamma), column(beta))


def forward_in_place(centred, squares, count, eps, gamma, beta, relu):
    """y = (x - mu) gamma inv_std + beta (then max(y, 0)), written into ``centred``."""
    np = backend.numpy
    y = centred
    y *= over_image(gamma / np.sqrt(squares / count + eps), y)
    y += over_image(beta, y)
    return np.maximum(y, 0, out=y) if relu else y


def backward_in_place(dy, cache, plus=None):
    """The backward on NumPy: g = dy [y > 0], x - mu made once, dx written into it: the passes
    of the formula and two new arrays (g, x - mu)."""
    np = backend.numpy
    x, M = cache.x, cache.count
    mu, inv_std = mean_inv_std(np, cache.total, cache.squares, M, cache.eps)
    g = relu_grad(dy, cache.y) if cache.relu else dy
    dx = x - over_image(mu, x)
    dbeta, dgamma = channel_sum(g), channel_dot(g, dx) * inv_std
    if not cache.training:
        np.multiply(g, over_image(cache.gamma * inv_std, g), out=dx)
    else:
        sum_g, sum_g_xhat = over_ranks(cache.reduce, dbeta, dgamma)
        dx *= over_image(-inv_std * sum_g_xhat / M, dx)   # - xhat sum(g xhat) / M, over inv_std
        dx += g
        dx -= over_image(sum_g / M, dx)
        dx *= over_image(cache.gamma * inv_std, dx)
    if plus is not None:
        dx += plus
    return dx, dgamma, dbeta


def _gradient_sums(dy, cache):
    """(sum g, sum g xhat) over this rank's batch, g = dy or, after a ReLU, dy [y > 0], from one
    reduction kernel; and g itself, or None where the kernels mask dy themselves (training with
    a ReLU)."""
    x, y, (total, squares, M, eps) = cache.x, cache.y, cache[3:7]
    stats = (column(total), column(squares), M, eps, pick_rows(backend.xp_of(dy), dy.dtype))
    if cache.relu and cache.training:
        both, g = _sums_g_xhat_and_g_relu(dy, y, x, *stats), None
    else:
        g = relu_grad(dy, y) if cache.relu else dy
        both = _sums_g_xhat_and_g(g, x, *stats)
    return both[1], both[0], g


def backward_fused(dy, cache, plus=None):
    """The backward as two kernels: one fused reduction (whose rows are dgamma and dbeta) and
    dx (with ``plus`` added in the same kernel)."""
    x = cache.x
    plus = 0 if plus is None else plus
    dbeta, dgamma, g = _gradient_sums(dy, cache)
    stats = (column(cache.total), column(cache.squares), cache.count, cache.eps)
    gamma = column(cache.gamma)
    if not cache.training:
        return _eval_input_grad(g, *stats[1:], gamma, plus), dgamma, dbeta
    sums = tuple(column(s) for s in over_ranks(cache.reduce, dbeta, dgamma))
    if g is not None:
        return _input_grad(g, x, *stats, gamma, *sums, plus), dgamma, dbeta
    return _input_grad_relu(dy, cache.y, x, *stats, gamma, *sums, plus), dgamma, dbeta
