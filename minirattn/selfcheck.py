"""`minirattn check`: run the finite-difference proof of every op on this machine: each op of
``minirattn.functional`` and each of its paths (``method=``), batch norm in both modes, with its
fused ReLU and synchronized over two simulated ranks, grouped convolution and the loss."""
from __future__ import annotations

from . import backend, distributed as D, functional as F
from .checks import check_positive_int
from .gradcheck import gradcheck


def _cases(rng):
    np = backend.numpy
    x = rng.standard_normal((2, 3, 6, 6))
    distinct = (rng.permutation(x.size).reshape(x.shape) * 0.01)
    gamma, labels = rng.uniform(0.5, 1.0, 3), rng.integers(0, 5, 4)
    return {
        "conv2d 3x3 stride 2 pad 1": (
            lambda x, w, b: F.conv2d_forward(x, w, b, 2, 1),
            [x, rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)],
            F.conv2d_backward,
        ),
        "conv2d 3x3 im2col (textbook)": (
            lambda x, w: F.conv2d_forward(x, w, None, 1, 1, method="im2col"),
            [x, rng.standard_normal((4, 3, 3, 3))],
            F.conv2d_backward,
        ),
        "conv2d 3x3 grouped (3 groups)": (
            lambda x, w: F.conv2d_forward(x, w, None, 1, 1, groups=3),
            [x, rng.standard_normal((6, 1, 3, 3))],
            F.conv2d_backward,
        ),
        "conv2d 1x1": (
            lambda x, w: F.conv2d_forward(x, w),
            [x, rng.standard_normal((4, 3, 1, 1))],
            F.conv2d_backward,
        ),
        "linear": (
            F.linear_forward,
            [x.reshape(2, -1), rng.standard_normal((5, 108)), rng.standard_normal(5)],
            F.linear_backward,
        ),
        "batchnorm (training)": (
            lambda x, g, b: F.batchnorm2d_forward(x, g, b),
            [x, rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)],
            F.batchnorm2d_backward,
        ),
        "batchnorm (textbook)": (
            lambda x, g, b: F.batchnorm2d_forward(x, g, b, method="textbook"),
            [x, rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)],
            F.batchnorm2d_backward,
        ),
        # |xhat| <= sqrt(M - 1) = 8.4 for M = 72 values a channel, so with gamma <= 1 a beta of
        # 9 / -9 keeps every output off the ReLU's kink: channels 0 and 2 pass, 1 is cut
        "batchnorm + ReLU (fused)": (
            lambda x, g: F.batchnorm2d_forward(x, g, np.array([9.0, -9.0, 9.0]), relu=True),
            [x, gamma],
            F.batchnorm2d_backward,
        ),
        "batchnorm (evaluation)": (
            lambda x, g, b: F.batchnorm2d_forward(x, g, b, np.full(3, 0.2),
                                                  np.full(3, 1.5), training=False),
            [x, rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)],
            F.batchnorm2d_backward,
        ),
        "batchnorm synchronized (2 ranks)": _synchronized_batchnorm(x, gamma, np.zeros(3)),
        "softmax cross-entropy": (
            lambda z: F.softmax_cross_entropy(z, labels),
            [rng.standard_normal((4, 5))],
            lambda dloss, dlogits: (dloss * dlogits,),
        ),
        "relu": (F.relu_forward, [x + np.sign(x) * 0.1], F.relu_backward),
        "sigmoid": (F.sigmoid_forward, [x], F.sigmoid_backward),
        "max pool 3/2/1": (
            lambda x: F.maxpool2d_forward(x, 3, 2, 1),
            [distinct],
            F.maxpool2d_backward,
        ),
        "max pool 3/2/1 (textbook)": (
            lambda x: F.maxpool2d_forward(x, 3, 2, 1, method="textbook"),
            [distinct],
            F.maxpool2d_backward,
        ),
        "global average pool": (F.global_avgpool_forward, [x], F.global_avgpool_backward),
        "bilinear 6->13": (lambda x: F.bilinear_forward(x, 13), [x], F.bilinear_backward),
        "bilinear 6->40 (separable)": (lambda x: F.bilinear_forward(x, 40), [x],
                                       F.bilinear_backward),
        "f1 mixed": (F.f1_mixed_forward, [x], F.f1_mixed_backward),
        "f2 channel": (F.f2_channel_forward, [x], F.f2_channel_backward),
        "f3 spatial": (F.f3_spatial_forward, [x], F.f3_spatial_backward),
        "ARL (1+M)T": (
            lambda t, m: F.attention_residual_forward(t, m, "arl"),
            [x, rng.uniform(0, 1, x.shape)],
            F.attention_residual_backward,
        ),
        "NAL MT": (
            lambda t, m: F.attention_residual_forward(t, m, "nal"),
            [x, rng.uniform(0, 1, x.shape)],
            F.attention_residual_backward,
        ),
    }


def _synchronized_batchnorm(x, gamma, beta):
    """Batch norm synchronized over two simulated ranks (threads), the first image on rank 0 and
    the second on rank 1, as one function of the whole batch: its gradient is the ranks'
    input gradients side by side (gamma and beta are fixed here)."""
    np = backend.numpy

    def ranks(x, dy=None):
        def rank(comm, xr, dyr):
            y, cache = F.batchnorm2d_forward(xr, gamma, beta, reduce=comm.reduce)
            return y if dyr is None else F.batchnorm2d_backward(dyr, cache)[0]
        dys = [None, None] if dy is None else [dy[:1], dy[1:]]
        return np.concatenate(D.ThreadRanks(2).run(rank, [(x[:1], dys[0]), (x[1:], dys[1])]))

    return (lambda x: (ranks(x), x), [x], lambda dy, x: (ranks(x, dy),))


def run_selfcheck(seed: int = 0, echo=print) -> bool:
    """Gradient-check every op in float64; print one line each; True when all pass."""
    rng = backend.default_rng(check_positive_int("seed", seed, 0))
    ok = True
    for name, (fwd, inputs, bwd) in _cases(rng).items():
        res = gradcheck(fwd, inputs, bwd, raise_on_failure=False, seed=seed)
        ok &= res.ok
        echo(
            f"{'ok  ' if res.ok else 'FAIL'} {name:<33} worst relative error {res.worst_error:.1e}"
        )
    echo("all gradients agree with finite differences" if ok else "SOME GRADIENTS ARE WRONG")
    return ok
