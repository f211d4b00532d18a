"""`minirattn check`: run the finite-difference proof of every op on this machine."""
from __future__ import annotations

from . import backend, functional as F
from .checks import check_positive_int
from .gradcheck import gradcheck


def _cases(rng):
    np = backend.numpy
    x = rng.standard_normal((2, 3, 6, 6))
    distinct = (rng.permutation(x.size).reshape(x.shape) * 0.01)
    c = np.ones(3)
    return {
        "conv2d 3x3 stride 2 pad 1": (
            lambda x, w, b: F.conv2d_forward(x, w, b, 2, 1),
            [x, rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)],
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
        "relu": (F.relu_forward, [x + np.sign(x) * 0.1], F.relu_backward),
        "sigmoid": (F.sigmoid_forward, [x], F.sigmoid_backward),
        "max pool 3/2/1": (
            lambda x: F.maxpool2d_forward(x, 3, 2, 1),
            [distinct],
            F.maxpool2d_backward,
        ),
        "global average pool": (F.global_avgpool_forward, [x], F.global_avgpool_backward),
        "bilinear 6->13": (lambda x: F.bilinear_forward(x, 13), [x], F.bilinear_backward),
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


def run_selfcheck(seed: int = 0, echo=print) -> bool:
    """Gradient-check every op in float64; print one line each; True when all pass."""
    rng = backend.default_rng(check_positive_int("seed", seed, 0))
    ok = True
    for name, (fwd, inputs, bwd) in _cases(rng).items():
        res = gradcheck(fwd, inputs, bwd, raise_on_failure=False, seed=seed)
        ok &= res.ok
        echo(
            f"{'ok  ' if res.ok else 'FAIL'} {name:<28} worst relative error {res.worst_error:.1e}"
        )
    echo("all gradients agree with finite differences" if ok else "SOME GRADIENTS ARE WRONG")
    return ok
