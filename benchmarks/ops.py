"""Per-op benchmark: forward + backward of each op at the shapes the CIFAR Attention-56/92 use,
minirattn (NumPy) against PyTorch CPU, side by side in one run.

    pip install -e ".[bench]"
    python benchmarks/ops.py --threads 2 --repeats 7

For every case it first checks that both compute the same output and input gradient (the same
weights, input and upstream gradient; float32 to 1e-3 relative max error, and the whole attention
module in float64 to 1e-8), then alternates
the two and prints medians and the ratio minirattn / PyTorch. For convolutions it also prints
the FLOP rate reached (3 x 2 N F C k^2 Ho Wo for forward + backward) and NumPy's own matrix-product
rate on the same GEMM shape, (F, C k^2) @ (C k^2, N Ho Wo): how far the convolution is from the
limit that a matrix product sets on this machine (the target is 60% of it). The last column
is a tighter limit: the time of the three products a convolution's forward + backward needs, each
at its own shape (forward (F, C k^2) @ (C k^2, P), weight gradient (F, P) @ (P, C k^2), input
gradient (C k^2, F) @ (F, P), P = N Ho Wo), against the convolution's time; the three run at
different rates when one of them is only F or C = 16 deep. For both, the convolution and the products
are timed back to back (the same cache state for all); the ratio column alternates minirattn with
PyTorch, so each starts after the other has run.

Not part of the test suite: timings are reported, never asserted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable, NamedTuple

HERE = os.path.dirname(os.path.abspath(__file__))
N = 64

# (C_in, C_out, k, stride, H): every convolution shape of the residual units of Attention-56/92.
CONVS = [(64, 16, 1, 1, 32), (16, 64, 1, 1, 32), (16, 16, 3, 1, 32), (32, 32, 3, 2, 32),
         (128, 32, 1, 1, 16), (32, 128, 1, 1, 16), (32, 32, 3, 1, 16), (64, 64, 3, 2, 16),
         (256, 64, 1, 1, 8), (64, 256, 1, 1, 8), (64, 64, 3, 1, 8)]
MAPS = [(64, 32), (128, 16), (256, 8)]          # (channels, size) of the three stages


class Case(NamedTuple):
    """ours(x, dy) and theirs(x, dy) return (y, dx); dy(shape) gives the upstream gradient (the
    same numbers for both). conv: (C_in, C_out, k, stride, H) for the FLOP rate, or None.
    checked: True when the case compared itself with PyTorch (in float64) as it was built."""
    name: str
    x: object
    ours: Callable
    theirs: Callable
    conv: tuple | None = None
    checked: bool = False


def _cases(np, torch):
    """Yield a Case for every op at every shape."""
    from minirattn import functional as F
    tf = torch.nn.functional
    rng = np.random.default_rng(0)

    def arr(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    for cin, cout, k, s, H in CONVS:
        x, w = arr(N, cin, H, H), (arr(cout, cin, k, k) * (2.0 / (cin * k * k)) ** 0.5).astype(np.float32)

        def ours(x, dy, w=w, s=s, k=k):
            y, c = F.conv2d_forward(x, w, None, s, k // 2)
            return y, F.conv2d_backward(dy(y.shape), c)[0]

        def theirs(x, dy, w=w, s=s, k=k):
            wt = torch.from_numpy(w).requires_grad_()
            y = tf.conv2d(x, wt, None, s, k // 2)
            return y, torch.autograd.grad(y, (x, wt), dy(y.shape))[0]
        yield Case(f"conv{k}x{k} {cin}->{cout} s{s} @{H}px", x, ours, theirs, (cin, cout, k, s, H))
    for C, H in MAPS:
        x, g, b = arr(N, C, H, H), arr(C), arr(C)

        def ours(x, dy, g=g, b=b):
            y, c = F.batchnorm2d_forward(x, g, b)
            return y, F.batchnorm2d_backward(dy(y.shape), c)[0]

        def theirs(x, dy, g=g, b=b):
            gt, bt = torch.from_numpy(g).requires_grad_(), torch.from_numpy(b).requires_grad_()
            y = tf.batch_norm(x, torch.zeros(len(g)), torch.ones(len(g)), gt, bt, True)
            return y, torch.autograd.grad(y, (x, gt, bt), dy(y.shape))[0]
        yield Case(f"batchnorm {C}ch @{H}px", x, ours, theirs)

        def ours(x, dy):
            y, c = F.relu_forward(x)
            return y, F.relu_backward(dy(y.shape), c)

        def theirs(x, dy):
            y = tf.relu(x)
            return y, torch.autograd.grad(y, x, dy(y.shape))[0]
        yield Case(f"relu {C}ch @{H}px", x, ours, theirs)

        def ours(x, dy):
            y, c = F.maxpool2d_forward(x, 3, 2, 1)
            return y, F.maxpool2d_backward(dy(y.shape), c)

        def theirs(x, dy):
            y = tf.max_pool2d(x, 3, 2, 1)
            return y, torch.autograd.grad(y, x, dy(y.shape))[0]
        yield Case(f"maxpool 3/2/1 {C}ch @{H}px", x, ours, theirs)
    for C, H in ((64, 4), (64, 8), (64, 16), (128, 4), (128, 8), (256, 4)):
        x = arr(N, C, H, H)

        def ours(x, dy, H=H):
            y, c = F.bilinear_forward(x, (2 * H, 2 * H))
            return y, F.bilinear_backward(dy(y.shape), c)

        def theirs(x, dy, H=H):
            y = tf.interpolate(x, size=(2 * H, 2 * H), mode="bilinear", align_corners=True)
            return y, torch.autograd.grad(y, x, dy(y.shape))[0]
        yield Case(f"bilinear {C}ch {H}->{2 * H}px", x, ours, theirs)
    x = arr(N, 64, 32, 32)
    for kind in ("mixed", "channel", "spatial"):
        def ours(x, dy, kind=kind):
            y, c = F.mask_activation_forward(x, kind)
            return y, F.mask_activation_backward(dy(y.shape), c)

        def theirs(x, dy, kind=kind):
            if kind == "mixed":
                y = torch.sigmoid(x)
            elif kind == "channel":
                y = x / torch.sqrt((x * x).sum(1, keepdim=True) + 1e-12)
            else:
                m, v = x.mean((2, 3), keepdim=True), x.var((2, 3), unbiased=False, keepdim=True)
                y = torch.sigmoid((x - m) / torch.sqrt(v + 1e-5))
            return y, torch.autograd.grad(y, x, dy(y.shape))[0]
        yield Case(f"mask activation {kind} 64ch @32px", x, ours, theirs)
    yield _attention_module_case(np, torch, arr)


def _attention_module_case(np, torch, arr):
    from minirattn.interop.torch import numpy_state, to_torch
    from minirattn.models import AttentionModule
    ours_m = AttentionModule(64, 3, 1, 2, 1, rng=0)
    twin = to_torch(ours_m)
    # the same answer first, in float64 (through its eleven batch norms float32 round-off alone moves
    # the input gradient by ~1e-2, as in bench.py): output and input gradient to 1e-8
    twin.double()
    ours_m.to(dtype="float64")
    ours_m.load_state_dict(numpy_state(twin))
    x64 = arr(N, 64, 32, 32).astype(np.float64)
    dy64 = np.random.default_rng(4).standard_normal(x64.shape)
    xt = torch.from_numpy(x64).requires_grad_()
    yt = twin(xt)
    dxt = torch.autograd.grad(yt, xt, torch.from_numpy(dy64))[0].numpy()
    y64 = ours_m(x64)
    dx64 = ours_m.backward(dy64)
    for what, a, b in (("output", y64, yt.detach().numpy()), ("input gradient", dx64, dxt)):
        err = float(np.abs(a - b).max() / np.abs(b).max())
        assert err < 1e-8, f"attention module: float64 {what} differs from PyTorch's by {err:.1e}"
    twin.float()
    ours_m.to(dtype="float32")
    ours_m.load_state_dict(numpy_state(twin))

    def ours(x, dy):
        y = ours_m(x)
        return y, ours_m.backward(dy(y.shape))

    def theirs(x, dy):
        y = twin(x)
        return y, torch.autograd.grad(y, x, dy(y.shape))[0]
    return Case("attention module stage 1 (64ch @32px, k=3)", arr(N, 64, 32, 32), ours, theirs, checked=True)


def _seconds(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _median_time(fn, repeats):
    fn()                                                  # warm-up
    return statistics.median(_seconds(fn) for _ in range(repeats))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--only", default="", help="run the cases whose name contains this text")
    args = p.parse_args(argv)
    sys.path.insert(0, HERE)
    from bench import _set_threads
    _set_threads(args.threads)
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    print(f"numpy {np.__version__}, torch {torch.__version__}, {args.threads} threads, batch {N}")
    print(f"{'op (forward + backward)':44s} {'minirattn':>10s} {'PyTorch':>10s} {'ratio':>6s}"
          "   conv GF/s vs NumPy GEMM GF/s   3 products' time / conv's")
    rows = []
    for name, x, ours, theirs, conv, checked in _cases(np, torch):
        if args.only not in name:
            continue
        grads = {}

        def dy_np(shape):
            if shape not in grads:
                grads[shape] = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
            return grads[shape]

        def dy_torch(shape):
            return torch.from_numpy(dy_np(tuple(shape)))
        xt = torch.from_numpy(x).requires_grad_()
        y_o, dx_o = ours(x, dy_np)
        y_t, dx_t = theirs(xt, dy_torch)
        if not checked:
            for what, a, b in (("output", y_o, y_t), ("input gradient", dx_o, dx_t)):
                b = b.detach().numpy()
                err = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
                assert err < 1e-3, f"{name}: {what} differs from PyTorch's by {err:.1e} (relative max)"
        t_o, t_t = [], []
        for _ in range(args.repeats):                      # alternate, so drift hits both alike
            t_o.append(_seconds(lambda: ours(x, dy_np)))
            t_t.append(_seconds(lambda: theirs(xt, dy_torch)))
        m_o, m_t = statistics.median(t_o), statistics.median(t_t)
        extra = ""
        if conv is not None:
            cin, cout, k, s, H = conv
            Ho = (H + 2 * (k // 2) - k) // s + 1
            flops = 2 * N * cout * cin * k * k * Ho * Ho
            A = np.random.default_rng(2).standard_normal((cout, cin * k * k)).astype(np.float32)
            B = np.random.default_rng(3).standard_normal((cin * k * k, N * Ho * Ho)).astype(np.float32)
            D = np.random.default_rng(4).standard_normal((cout, N * Ho * Ho)).astype(np.float32)
            t_g = _median_time(lambda: A @ B, args.repeats)
            t_3 = t_g + _median_time(lambda: D @ B.T, args.repeats) + _median_time(lambda: A.T @ D, args.repeats)
            t_c = _median_time(lambda: ours(x, dy_np), args.repeats)    # back to back, as the GEMMs
            conv_rate, gemm_rate = 3 * flops / t_c / 1e9, flops / t_g / 1e9
            extra = f"   {conv_rate:6.1f} vs {gemm_rate:6.1f} = {conv_rate / gemm_rate:4.0%}   {t_3 / t_c:4.0%}"
        rows.append((name, m_o, m_t))
        print(f"{name:44s} {m_o * 1e3:8.2f}ms {m_t * 1e3:8.2f}ms {m_o / m_t:5.2f}x{extra}", flush=True)
    return rows


if __name__ == "__main__":
    main()
