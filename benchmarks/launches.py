"""Kernel launches, cuBLAS calls, device syncs and copies to the host of one training step.

    pip install -e ".[gpu-sim]"                        # CuPy 14.2 and NVRTC for the simulation
    python benchmarks/launches.py                      # Attention-56 and -92, batch 64
    python benchmarks/launches.py --arch attention92 --by-site
    python benchmarks/launches.py --arch attention92 --by-layer   # the stand-in's estimate

What a GPU is asked to do, without a GPU. The count is real CuPy's: CuPy 14.2 runs the second of
two training steps of the full-width network over the tests' simulated device (tests/cupy_sim),
which records every kernel launch and cuBLAS call. The estimate beside it is the tests' NumPy-backed
stand-in's (tests/cupy_standin: one launch per elementwise operation, reduction, routine, fused
function, product and copy it models), kept because it attributes launches to layers
(``--by-layer``); it is a model and undercounts what CuPy does inside its routines. At CuPy's
8-15 us of host time per launch, the count bounds the step time from below whatever the GPU.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))


def count_step(arch, batch, by_layer=False, **spec):
    """(launches, syncs, h2d, d2h, {layer kind: launches}) of the second training step; ``spec``
    overrides NetworkSpec fields (narrow widths count the same launches, faster)."""
    import numpy as np
    import cupy_standin
    from cupy_standin import COUNT
    from minirattn import backend
    from minirattn.models import build
    from minirattn.training import SGD, train_step
    with cupy_standin.installed():
        net = build(arch, num_classes=10, seed=0, **spec).to("cupy")
        opt = SGD(net, lr=0.1)
        rng = np.random.default_rng(0)
        x_host = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
        y_host = rng.integers(0, 10, batch)
        train_step(net, opt, backend.to_device(x_host, "cupy"), backend.to_device(y_host, "cupy"), 0.1)
        kinds = collections.Counter()
        if by_layer:
            _wrap_layers(net, kinds, COUNT)
        COUNT.reset()
        x, y = backend.to_device(x_host, "cupy"), backend.to_device(y_host, "cupy")
        train_step(net, opt, x, y, 0.1)
        return COUNT.launches, len(COUNT.syncs), COUNT.h2d, COUNT.d2h, kinds


def _wrap_layers(net, kinds, count):
    """Attribute launches to leaf layers by kind (forward + backward), the rest to 'other'."""
    for _, m in net.named_modules():
        if m._children:
            continue
        for name in ("forward", "backward"):
            f = getattr(m, name)

            def counted(*a, _f=f, _kind=type(m).__name__, **k):
                before = count.launches
                out = _f(*a, **k)
                kinds[_kind] += count.launches - before
                return out
            object.__setattr__(m, name, counted)


def count_real(arch, batch):
    """Real CuPy's report of the second training step (tests/cupy_sim/exercise.py)."""
    from cupy_sim import exercise
    return exercise.run("--step", arch, str(batch), "--no-scenarios")["step"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", nargs="+", default=["attention56", "attention92"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--by-site", action="store_true", help="real CuPy's launches by source line")
    p.add_argument("--by-layer", action="store_true", help="the stand-in's estimate by layer")
    args = p.parse_args(argv)
    print("| network | CuPy: kernel launches | cuBLAS calls | in all | syncs | device->host "
          "| stand-in's estimate |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for arch in args.arch:
        real = count_real(arch, args.batch)
        launches, syncs, h2d, d2h, kinds = count_step(arch, args.batch, args.by_layer)
        print(f"| {arch} | {real['n_launches']:,} | {real['n_cublas']:,} | "
              f"{real['n_launches'] + real['n_cublas']:,} | {len(real['syncs'])} | "
              f"{len(real['to_host'])} | {launches:,} |")
        if args.by_site:
            for site, n in sorted(real["by_site"].items(), key=lambda kv: -kv[1])[:25]:
                print(f"|   {site} | {n:,} | | | | | |")
        if args.by_layer:
            layers = sum(kinds.values())
            for kind, n in kinds.most_common():
                print(f"|   {kind} (estimate) | | | | | | {n:,} |")
            print(f"|   other (optimizer, zero_grad, loss, joins) | | | | | | "
                  f"{launches - layers:,} |")


if __name__ == "__main__":
    main()
