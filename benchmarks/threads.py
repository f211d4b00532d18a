"""Where one process's step on threads loses against PyTorch's: one core against one core, and
what threading costs each.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/threads.py --arch attention56 --threads 2

Alternates, in one run, five full training steps of the same network (minirattn's and its PyTorch
twin, built as in bench.py) on the same batch:

- ``threads``: minirattn, the batch split over ``--threads`` threads (``BatchThreads``, what
  ``--threads N`` trains with), batch norm summing its statistics over the threads;
- ``apart``: the same threads, but each batch norm normalises its own thread's slice (the threads
  never meet): what the threads would take if their exchanges cost nothing. A timing experiment,
  not the same computation;
- ``slice``: minirattn, one thread on one thread's slice of the batch: what perfectly parallel
  threads would take;
- ``torch``: PyTorch, the whole batch on ``--threads`` threads;
- ``torch slice``: PyTorch, one thread on the same slice.

and prints each median (with the fastest and slowest run), then three ratios: one core against
one core (slice / torch slice), what threading costs each (threads / slice, torch / torch slice),
and how much of minirattn's cost is the threads meeting at batch norm (threads / apart).
bench.py checks beforehand that the threaded step computes the one-thread step (float64, 1e-13).

Not part of the test suite: timings are reported, never asserted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _own(self, rank, value):
    """A ThreadRanks exchange that hands each rank its own value as every rank's: the sums are
    then size x the thread's own (count included), so each thread normalises its own slice."""
    return [value] * self.size


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="attention56")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    if args.threads < 2 or args.batch % args.threads:
        p.error(f"--threads must be 2 or more and divide --batch {args.batch}")
    sys.path.insert(0, HERE)
    from bench import _set_threads, _setup, minirattn_step
    _set_threads(args.threads)
    import copy
    import torch
    from environment import line
    from minirattn import backend as B
    from minirattn import distributed as D
    from minirattn.training import SGD

    print(f"{args.arch}, batch {args.batch}, {args.threads} threads; {line()}", flush=True)
    twin, ours, x, y = _setup(args.arch, args.batch)
    n = args.batch // args.threads
    nets = {k: copy.deepcopy(ours) for k in ("threads", "apart", "slice")}
    opts = {k: SGD(m, lr=0.01) for k, m in nets.items()}
    split = {k: D.BatchThreads(nets[k], args.threads) for k in ("threads", "apart")}
    opt_t = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                            weight_decay=1e-4)
    xt, yt = torch.tensor(x), torch.tensor(y)
    meet = D.ThreadRanks._exchange

    def torch_step(count, xs, ys):
        torch.set_num_threads(count)
        opt_t.zero_grad()
        torch.nn.functional.cross_entropy(twin(xs), ys).backward()
        opt_t.step()

    def threaded(kind):
        D.ThreadRanks._exchange = meet if kind == "threads" else _own
        try:
            minirattn_step(nets[kind], opts[kind], x, y, split[kind])
        finally:
            D.ThreadRanks._exchange = meet

    def one_slice():
        with B.blas_threads(1):
            minirattn_step(nets["slice"], opts["slice"], x[:n], y[:n])

    steps = {"threads": lambda: threaded("threads"), "apart": lambda: threaded("apart"),
             "slice": one_slice, "torch": lambda: torch_step(args.threads, xt, yt),
             "torch slice": lambda: torch_step(1, xt[:n], yt[:n])}
    for step in steps.values():
        step()                                               # warm-up
    runs = {k: [] for k in steps}
    for _ in range(args.repeats):
        for k, step in steps.items():
            t0 = time.perf_counter()
            step()
            runs[k].append(time.perf_counter() - t0)
    torch.set_num_threads(args.threads)
    med = {k: statistics.median(v) for k, v in runs.items()}
    for k, v in runs.items():
        print(f"  {k:12s} {med[k]:.3f} s  ({min(v):.3f}-{max(v):.3f}, {args.repeats} runs)")
    print(f"one core against one core (batch {n}): {med['slice'] / med['torch slice']:.2f}x; "
          f"threading costs minirattn {med['threads'] / med['slice']:.2f}x its slice, PyTorch "
          f"{med['torch'] / med['torch slice']:.2f}x; threads that never meet "
          f"{med['apart'] / med['slice']:.2f}x; the step {med['threads'] / med['torch']:.2f}x "
          f"PyTorch's (never meeting: {med['apart'] / med['torch']:.2f}x)")
    return med


if __name__ == "__main__":
    main()
