"""Where a minirattn training step spends its time, per kind of layer (and per convolution shape).

    python benchmarks/profile_step.py --arch attention92 --batch 64 --threads 2

Wraps the forward and backward of every leaf layer of the network (instances only; the classes are
untouched) with a timer, runs a few training steps and prints milliseconds per step for each kind
of layer, then for each convolution shape, largest first. Whatever is left of the step (residual
sums, the attention combination, the loss, Python) is printed as "rest". This is how the tables in
benchmarks/README.md were found; cProfile sees the same but cannot tell the shapes apart.

Not part of the test suite: timings are reported, never asserted.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _leaf_name(module, x):
    """"Conv2d 3x3 s1 16->16 @32" for convolutions, the class name for everything else."""
    kind = type(module).__name__
    if kind == "Conv2d":
        kh, kw = module.kernel_size
        return f"{kind} {kh}x{kw} s{module.stride} {module.in_ch}->{module.out_ch} @{x.shape[2]}"
    return kind


def instrument(net, totals):
    """Time every leaf module's forward and backward into ``totals[(kind, "F" | "B")]``."""
    for module in net.modules():
        if any(True for _ in module.children()):
            continue

        def forward(*args, _m=module, _f=module.forward):
            _m._profile_name = _leaf_name(_m, args[0])
            t0 = time.perf_counter()
            out = _f(*args)
            totals[(_m._profile_name, "F")] += time.perf_counter() - t0
            return out

        def backward(dy, _m=module, _b=module.backward, **kwargs):   # dx_into=, plus=
            t0 = time.perf_counter()
            out = _b(dy, **kwargs)
            totals[(_m._profile_name, "B")] += time.perf_counter() - t0
            return out
        module.forward, module.backward = forward, backward


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="attention56")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args(argv)
    sys.path.insert(0, HERE)
    from bench import _set_threads, minirattn_step
    _set_threads(args.threads)
    import numpy as np
    from minirattn.models import build
    from minirattn.training import SGD

    net = build(args.arch, num_classes=10, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    opt = SGD(net, lr=0.01)
    totals = collections.defaultdict(float)
    instrument(net, totals)

    minirattn_step(net, opt, x, y)                       # warm-up
    totals.clear()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        minirattn_step(net, opt, x, y)
    per_step = (time.perf_counter() - t0) / args.steps

    kinds = collections.defaultdict(lambda: [0.0, 0.0])   # layer kind -> [forward, backward] per step
    convs = collections.defaultdict(lambda: [0.0, 0.0])
    for (name, phase), seconds in totals.items():
        i = 0 if phase == "F" else 1
        kinds[name.split(" ")[0]][i] += seconds / args.steps
        if name.startswith("Conv2d "):
            convs[name[len("Conv2d "):]][i] += seconds / args.steps
    print(f"{args.arch}, batch {args.batch}, {args.threads} threads: {per_step * 1e3:.0f} ms a step")
    print(f"{'layer':34s} {'forward':>9s} {'backward':>9s}")
    for name, (f, b) in sorted(kinds.items(), key=lambda kv: -sum(kv[1])):
        print(f"{name:34s} {f * 1e3:7.1f}ms {b * 1e3:7.1f}ms")
    rest = per_step - sum(f + b for f, b in kinds.values())
    print(f"{'rest':34s} {rest * 1e3:7.1f}ms")
    print(f"\n{'convolution':34s} {'forward':>9s} {'backward':>9s}")
    for name, (f, b) in sorted(convs.items(), key=lambda kv: -sum(kv[1])):
        print(f"{name:34s} {f * 1e3:7.1f}ms {b * 1e3:7.1f}ms")


if __name__ == "__main__":
    main()
