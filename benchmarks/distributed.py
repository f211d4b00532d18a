"""Data-parallel training measured on this machine, and modelled for GPUs and clusters.

    pip install -e ".[dist,bench]"
    python benchmarks/distributed.py --arch attention56 attention92 --batch 64 --steps 5 --rounds 2

Measured, in one run, each configuration in a fresh process (never two at once), in rounds so the
run-to-run spread shows: a training step of the global batch

* minirattn, one process, 2 BLAS threads;
* minirattn, 2 ranks of 1 thread each (``mpiexec -n 2``, synchronized batch norm): NumPy's
  elementwise work is single-threaded, so two ranks may use the two cores better;
* the PyTorch twin (minirattn.interop.torch) with 1 and with 2 threads (its best is reported).

Also counted on the 2 ranks: the bytes each rank hands to all-reduce per step and the number of
calls (the gradient buffer once, synchronized batch norm three times per layer).

Modelled (printed and written with the measurements): the time a step spends communicating on
R GPUs with a ring all-reduce: every link of the ring carries 2 (R - 1) / R of the gradient bytes
(across nodes the slowest link is a node's network card), plus the latency of one all-reduce; each
synchronized batch norm adds three small all-reduces, latency only. The scaling efficiency is
compute / (compute + communication), nothing overlapped (minirattn all-reduces after the backward).
The compute per step on a GPU is not measured here (no GPU): it is the larger of the launch-bound
time (the kernel launches benchmarks/launches.py counts, at an assumed 10 us each) and the FLOPs
counted here at an assumed achieved float32 rate; both assumptions are printed and can be changed
(--launch-us, --gpu-tflops).

Not part of the test suite: timings are reported, never asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

def step_launches(arch):
    """Kernel launches of one CuPy training step, counted now on the CuPy stand-in
    (benchmarks/launches.py; the count does not depend on the batch size)."""
    import launches
    return launches.count_step(arch, 2)[0]


#: The paper's ImageNet networks (Table 2): parameters and forward multiply-adds per image in
#: billions (the paper's "FLOPs", counted as ResNet's paper counts them: one per multiply-add).
IMAGENET = {"attention56_imagenet": (31.9e6, 6.2), "attention92_imagenet": (51.3e6, 10.4)}
#: Links of the scaling model: (name, ranks, bytes/s of the ring's slowest link, seconds of one
#: small all-reduce). NVLink: NCCL's large-message bus bandwidth on 8 H100/H200 is 350-450 GB/s,
#: small all-reduces 10-20 us; 100 Gb/s Ethernet/InfiniBand: about 11 GB/s achieved, 30-50 us.
LINKS = [
    ("8 GPUs, one node (NVLink, 300 GB/s)", 8, 300e9, 15e-6),
    ("4 nodes x 8 GPUs, 100 Gb/s between nodes", 32, 11e9, 40e-6),
]


def _threads_env(n):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(n)
    return env


def _batch(batch, size=32, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, 3, size, size)).astype(np.float32),
            rng.integers(0, 10, batch))


# ---- children: each prints one JSON line ---------------------------------------------------
def child_ours(arch, batch, steps):
    """One process, or every rank of an mpiexec job (rank 0 reports)."""
    from minirattn import distributed as D
    from minirattn.models import build
    from minirattn.training import train_step
    from minirattn.training.optim import SGD
    comm = D.MPICommunicator() if D.launched_ranks() > 1 else D.Communicator()
    sent = {"bytes": 0, "calls": 0}
    if comm.size > 1:
        plain = comm.allreduce

        def counting(a):
            sent["bytes"] += int(a.nbytes)
            sent["calls"] += 1
            return plain(a)
        comm.allreduce = counting
    model = build(arch, num_classes=10, seed=0)
    opt = SGD(model, lr=0.01)
    D.sync_batchnorm(model, comm)
    D.broadcast_model(model, comm)
    x, y = _batch(batch)
    lo, hi = D.shard(batch, comm.rank, comm.size)
    extra = dict(comm=comm, global_batch=batch) if comm.size > 1 else {}
    times = []
    for i in range(steps + 1):                           # the first step warms caches up
        sent.update(bytes=0, calls=0)
        t0 = time.perf_counter()
        train_step(model, opt, x[lo:hi], y[lo:hi], 0.01, **extra)
        times.append(time.perf_counter() - t0)
    if comm.rank == 0:
        print(json.dumps(dict(times=times[1:], bytes=sent["bytes"], calls=sent["calls"],
                              parameters=model.num_parameters(),
                              bn_layers=D.sync_batchnorm(model, comm))))


def child_torch(arch, batch, steps, threads):
    import torch
    from minirattn.interop.torch import to_torch
    from minirattn.models import build
    torch.set_num_threads(threads)
    twin = to_torch(build(arch))
    opt = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                          weight_decay=1e-4)
    x, y = (torch.tensor(a) for a in _batch(batch))
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(twin(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    print(json.dumps(dict(times=times[1:])))


def forward_flops(arch, size=32, num_classes=10):
    """Multiply-adds x 2 of one image's forward pass through convolutions and the classifier,
    counted by watching the ops run on one image."""
    import numpy as np
    from minirattn import functional as F
    from minirattn.models import build
    total = [0]
    conv, linear = F.conv2d_forward, F.linear_forward

    def counting_conv(x, w, *args, **kwargs):
        y, cache = conv(x, w, *args, **kwargs)
        total[0] += 2 * y.size * int(np.prod(w.shape[1:]))
        return y, cache

    def counting_linear(x, w, *args, **kwargs):
        y, cache = linear(x, w, *args, **kwargs)
        total[0] += 2 * y.size * w.shape[1]                 # w: (D_out, D_in)
        return y, cache
    F.conv2d_forward, F.linear_forward = counting_conv, counting_linear
    try:
        model = build(arch, num_classes=num_classes, seed=0)
        model.eval()
        model(np.zeros((1, 3, size, size), dtype=np.float32))
    finally:
        F.conv2d_forward, F.linear_forward = conv, linear
    return total[0]


# ---- the parent ------------------------------------------------------------------------------
def _run(cmd, env):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(arch, batch, steps, rounds):
    me = [sys.executable, os.path.abspath(__file__)]
    configs = {
        "minirattn 1 process x 2 threads": (me + ["--child", "ours", arch], 2),
        "minirattn 2 ranks x 1 thread": (["mpiexec", "-n", "2"] + me + ["--child", "ours", arch],
                                         1),
        "PyTorch 1 process x 2 threads": (me + ["--child", "torch2", arch], 2),
        "PyTorch 1 process x 1 thread": (me + ["--child", "torch1", arch], 1),
    }
    results = {name: [] for name in configs}
    raw = {}
    for r in range(rounds):
        for name, (cmd, threads) in configs.items():
            got = _run(cmd + ["--batch", str(batch), "--steps", str(steps)], _threads_env(threads))
            results[name].append(statistics.median(got["times"]))
            raw.setdefault(name, []).append(got)
            print(f"  round {r + 1} {name}: {statistics.median(got['times']):.3f} s/step",
                  flush=True)
    summary = {}
    for name, meds in results.items():
        m = statistics.median(meds)
        summary[name] = dict(step_s=m, images_per_s=batch / m, rounds=meds,
                             spread=(max(meds) - min(meds)) / m)
    ranks = raw["minirattn 2 ranks x 1 thread"][0]
    torch_best = min((n for n in summary if n.startswith("PyTorch")),
                     key=lambda n: summary[n]["step_s"])
    return dict(arch=arch, batch=batch, steps=steps, rounds=rounds, configs=summary,
                torch_best=torch_best, bytes_per_step=ranks["bytes"],
                allreduce_calls_per_step=ranks["calls"], parameters=ranks["parameters"],
                bn_layers=ranks["bn_layers"])


def model_scaling(name, params, flops_per_image, bn_layers, bn_channels, batch_per_gpu,
                  launches, launch_us, gpu_tflops):
    """Predicted scaling efficiency of one network on each LINK (see the module docstring)."""
    compute_flops = 3 * flops_per_image * batch_per_gpu / (gpu_tflops * 1e12)
    compute_launch = launches * launch_us * 1e-6 if launches else 0.0
    compute = max(compute_flops, compute_launch)
    rows = []
    for link, R, bw, lat in LINKS:
        grad = 2 * (R - 1) / R * 4 * params / bw + lat
        bn = bn_layers * 3 * lat
        rows.append(dict(link=link, ranks=R, compute_s=compute, grad_allreduce_s=grad,
                         bn_allreduce_s=bn, efficiency=compute / (compute + grad + bn)))
    return dict(network=name, parameters=params, forward_gflops=flops_per_image / 1e9,
                batch_per_gpu=batch_per_gpu, bn_layers=bn_layers, mean_bn_channels=bn_channels,
                compute_bound_by="launches" if compute_launch > compute_flops else "FLOPs",
                rows=rows)


def bn_shape(arch):
    from minirattn.models import build
    model = build(arch, num_classes=1000 if arch.endswith("imagenet") else 10, seed=0)
    widths = [m.num_features for m in model.modules() if type(m).__name__ == "BatchNorm2d"]
    return len(widths), sum(widths) / len(widths), model.num_parameters()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", nargs="+", default=["attention56", "attention92"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--launch-us", type=float, default=10.0)
    p.add_argument("--gpu-tflops", type=float, default=25.0,
                   help="achieved float32 TFLOP/s assumed for a GPU step (H200 peak: 67)")
    p.add_argument("--model-only", action="store_true", help="skip the measurements")
    p.add_argument("--out", default=os.path.join(HERE, "results", "distributed.json"))
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        kind, arch = args.child
        if kind == "ours":
            child_ours(arch, args.batch, args.steps)
        else:
            child_torch(arch, args.batch, args.steps, int(kind[-1]))
        return 0
    from environment import describe, line
    print(line(), flush=True)
    report = dict(date=time.strftime("%Y-%m-%d"), commit=_commit(), environment=describe(),
                  measured=[], modelled=[],
                  assumptions=dict(launch_us=args.launch_us, gpu_tflops=args.gpu_tflops,
                                   links=LINKS))
    if not args.model_only:
        for arch in args.arch:
            print(f"{arch}, global batch {args.batch}:", flush=True)
            report["measured"].append(measure(arch, args.batch, args.steps, args.rounds))
    for arch in args.arch:
        n_bn, width, params = bn_shape(arch)
        report["modelled"].append(model_scaling(
            arch, params, forward_flops(arch), n_bn, width, 64, step_launches(arch),
            args.launch_us, args.gpu_tflops))
    for arch, (params, gflops) in IMAGENET.items():
        n_bn, width, _ = bn_shape(arch)
        report["modelled"].append(model_scaling(arch, params, 2 * gflops * 1e9, n_bn, width, 32,
                                                None, args.launch_us, args.gpu_tflops))
    if args.model_only:       # keep the measurements a previous full run wrote, with their date
        report.update(_previous_measurements(args.out))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".tmp", "w") as f:
        json.dump(report, f, indent=1)
    os.replace(args.out + ".tmp", args.out)
    _print(report)
    return 0


def _previous_measurements(path):
    """{"measured", "measured_date", "measured_commit", "measured_environment"} from an earlier
    report at ``path`` (the environment those measurements ran in), or {}."""
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return {}
    if not old.get("measured"):
        return {}
    return dict(measured=old["measured"], measured_date=old.get("measured_date", old.get("date")),
                measured_commit=old.get("measured_commit", old.get("commit")),
                measured_environment=old.get("measured_environment", old.get("environment")))


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=ROOT).stdout.strip()
    except OSError:
        return "unknown"


def _print(report):
    for m in report["measured"]:
        base = m["configs"]["minirattn 1 process x 2 threads"]
        print(f"\n{m['arch']}, global batch {m['batch']} ({m['rounds']} rounds x {m['steps']} "
              f"steps, median; spread = (max - min) / median over rounds)")
        for name, c in m["configs"].items():
            print(f"  {name:<34} {c['step_s']:.3f} s/step  {c['images_per_s']:6.1f} img/s  "
                  f"x{base['step_s'] / c['step_s']:.2f} of 1 process  spread {c['spread']:.0%}")
        print(f"  sent per rank per step: {m['bytes_per_step'] / 2**20:.2f} MiB in "
              f"{m['allreduce_calls_per_step']} all-reduces ({m['parameters']:,} parameters = "
              f"{4 * m['parameters'] / 2**20:.2f} MiB of gradients; {m['bn_layers']} batch norms x 3)")
    a = report["assumptions"]
    print(f"\nModel (launch {a['launch_us']} us, achieved {a['gpu_tflops']} TFLOP/s float32):")
    for m in report["modelled"]:
        print(f"  {m['network']} ({m['parameters'] / 1e6:.1f}M parameters, "
              f"{m['forward_gflops']:.2f} GFLOPs/image, batch {m['batch_per_gpu']}/GPU, "
              f"{m['bn_layers']} BN layers; compute bound by {m['compute_bound_by']})")
        for r in m["rows"]:
            print(f"    {r['link']:<46} compute {1e3 * r['compute_s']:7.1f} ms, gradients "
                  f"{1e3 * r['grad_allreduce_s']:6.2f} ms, BN {1e3 * r['bn_allreduce_s']:6.2f} ms:"
                  f" efficiency {r['efficiency']:.0%}")


if __name__ == "__main__":
    sys.exit(main())
