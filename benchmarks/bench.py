"""Side-by-side benchmark: minirattn (NumPy) against its PyTorch twin (CPU), in one run.

    pip install -e ".[bench]"            # torch==2.13.0, a CPU build from the local wheel here
    python benchmarks/bench.py --arch attention56 attention92 --batch 64 --threads 2

Before timing anything it checks that both compute the same thing: the twin's initial weights
are loaded into minirattn through load_state_dict, and on the same batch the first loss and all
gradients must agree in float64 to 1e-8 (relative; gradients in L2 norm over all parameters),
and the float32 loss to 1e-4. Float32 gradients cannot agree to 1e-4: PyTorch's own float32
gradients are 6e-3 (Attention-56) to 7e-3 (Attention-92) away from the float64 answer on the
same weights and batch (round-off through 56-92 batch-norm layers). So the float32 check is that
ours are no farther from the float64 answer than twice PyTorch's distance (measured: about the
same distance).
Then it alternates full training steps (forward, cross-entropy, backward, Nesterov SGD) of the
two and reports medians and the ratio minirattn / PyTorch. minirattn's step is timed with the
batch split over ``--threads`` threads (``minirattn train --threads N``;
minirattn.distributed.BatchThreads; its float64 answer is checked too), and beside it the plain
step (the default), where only the matrix products use the threads (the BLAS's own). Peak resident memory of a training
step is measured in a fresh child process for each.

With CuPy and a CUDA build of PyTorch on a machine with a GPU, the same command then does it all
again on the GPU: minirattn with backend "cupy" against the twin on CUDA, the same-answer check
first (float64 exact, float32 as above), then alternating steps, each ending with a device
synchronisation; PyTorch's TF32 is switched off (CuPy's float32 products do not use it). Without
them it prints why it skipped. `--only cpu` / `--only gpu` runs one half.

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


def _set_threads(n):
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def _setup(arch, batch, seed=0):
    import numpy as np
    import torch
    from minirattn.interop.torch import to_torch
    from minirattn.models import build
    torch.manual_seed(seed)
    ours = build(arch, num_classes=10, seed=seed)
    twin = to_torch(ours)                       # the same weights under the same names
    n_t = sum(p.numel() for p in twin.parameters())
    assert n_t == ours.num_parameters(), (n_t, ours.num_parameters())
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    return twin, ours, x, y


def _backend_for(device):
    """minirattn's backend for a PyTorch device: NumPy beside "cpu", CuPy beside "cuda"."""
    return "numpy" if device == "cpu" else "cupy"


def _loss_and_grads(twin, ours, x, y, device="cpu"):
    """Both networks' loss and gradients (name -> float64 NumPy array) on the same batch; on the
    GPU (device "cuda") minirattn runs on CuPy and the twin on CUDA."""
    import torch
    from minirattn import backend as B, functional as F
    name = _backend_for(device)
    logits = ours(B.to_device(x, name))
    loss, d = F.softmax_cross_entropy(logits, B.to_device(y, name))
    ours.zero_grad()
    ours.backward(d)
    lt = torch.nn.functional.cross_entropy(twin(torch.tensor(x, device=device)), torch.tensor(y, device=device))
    twin.zero_grad()
    lt.backward()
    g_o = {k: B.to_numpy(g).astype("float64") for k, _, g in ours.named_parameters()}
    g_t = {k: v.grad.cpu().numpy().astype("float64") for k, v in twin.named_parameters()}
    return float(loss), lt.item(), g_o, g_t


def _rel_l2(a, b):
    """||a - b|| / ||b|| over all parameters' gradients together."""
    num = sum(float(((a[k] - b[k]) ** 2).sum()) for k in b)
    den = sum(float((b[k] ** 2).sum()) for k in b)
    return (num / den) ** 0.5


def check_same_answer(twin, ours, x, y, device="cpu", threads=1):
    """float64: loss and gradients to 1e-8. float32: loss to 1e-4, and our float32 gradients no
    farther from the exact (float64) ones than 2x PyTorch's own float32 gradients are. On the GPU
    (device "cuda") the same, minirattn on CuPy against the twin on CUDA. ``threads`` > 1 (NumPy):
    the float64 loss and gradients of the batch split over that many threads too.

    Returns a dict of the measured relative errors."""
    from minirattn.interop.torch import numpy_state
    name = _backend_for(device)
    twin.double().to(device)
    ours.to(name, dtype="float64")
    ours.load_state_dict(numpy_state(twin))
    l_o, l_t, g_o, exact = _loss_and_grads(twin, ours, x.astype("float64"), y, device)
    err = {"loss64": abs(l_o - l_t) / abs(l_t), "grad64": _rel_l2(g_o, exact)}
    assert err["loss64"] < 1e-8 and err["grad64"] < 1e-8, \
        f"float64: loss rel {err['loss64']:.1e}, gradient rel L2 {err['grad64']:.1e}"
    if threads > 1 and name == "numpy":            # the batch over threads: the same answer
        from minirattn.distributed import BatchThreads
        from minirattn.training.loop import forward_backward
        parts = BatchThreads(ours, threads).run(forward_backward, x.astype("float64"), y)
        l_th = sum(float(loss) for loss, _ in parts)
        g_th = {k: g.astype("float64") for k, _, g in ours.named_parameters()}
        err.update(loss64_threads=abs(l_th - l_t) / abs(l_t), grad64_threads=_rel_l2(g_th, exact))
        assert err["loss64_threads"] < 1e-8 and err["grad64_threads"] < 1e-8, \
            f"float64, {threads} threads: loss rel {err['loss64_threads']:.1e}, gradients " \
            f"{err['grad64_threads']:.1e}"
    twin.float()                                   # the float64 weights were float32 values: exact
    ours.to(dtype="float32")
    ours.load_state_dict(numpy_state(twin))
    l_o, l_t, g_o, g_t = _loss_and_grads(twin, ours, x, y, device)
    err.update(loss32=abs(l_o - l_t) / abs(l_t), grad32=_rel_l2(g_o, g_t),
               ours32_exact=_rel_l2(g_o, exact), torch32_exact=_rel_l2(g_t, exact))
    assert err["loss32"] < 1e-4, f"float32 losses differ by {err['loss32']:.1e} relative"
    assert err["ours32_exact"] <= 2 * err["torch32_exact"], (
        f"float32 gradients are {err['ours32_exact']:.1e} from the float64 answer, PyTorch's "
        f"{err['torch32_exact']:.1e}: more than twice as far")
    return err


def minirattn_step(net, opt, x, y, threads=None):
    """One training step of a minirattn network: forward, cross-entropy, backward, SGD update;
    ``threads`` (a BatchThreads) splits the batch over threads of this process."""
    from minirattn.training import train_step
    train_step(net, opt, x, y, opt.lr, threads=threads)


def _alternate(steps, repeats):
    """{name: median seconds} of each step function, run in turn (so drift hits all alike)
    after a warm-up."""
    for step in steps.values():
        step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter(); step(); times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def time_steps(twin, ours, x, y, repeats, device="cpu", threads=1):
    """Alternating full training steps; on the GPU each step ends with a synchronisation, so the
    time is the step's, not its launch's. Returns median seconds {"ours": minirattn's step with
    the batch split over ``threads`` threads, "ours_blas": the plain step (the matrix products
    alone on ``threads`` BLAS threads; only where threads > 1), "torch": PyTorch's}."""
    import copy
    import torch
    from minirattn import backend as B
    from minirattn.distributed import BatchThreads
    from minirattn.training import SGD
    name = _backend_for(device)
    opt_t = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    plain = copy.deepcopy(ours)                    # its own weights, so neither run sees the other's
    opt_o, opt_p = SGD(ours, lr=0.01), SGD(plain, lr=0.01)
    bt = BatchThreads(ours, threads if name == "numpy" else 1)
    xo, yo = B.to_device(x, name), B.to_device(y, name)
    xt, yt = torch.tensor(x, device=device), torch.tensor(y, device=device)

    def step_ours():
        minirattn_step(ours, opt_o, xo, yo, bt)
        B.synchronize()                                   # a no-op on NumPy

    def step_plain():
        minirattn_step(plain, opt_p, xo, yo)

    def step_torch():
        opt_t.zero_grad()
        torch.nn.functional.cross_entropy(twin(xt), yt).backward()
        opt_t.step()
        if device != "cpu":
            torch.cuda.synchronize()
    steps = {"ours": step_ours, "torch": step_torch}
    if bt.size > 1:
        steps["ours_blas"] = step_plain
    return _alternate(steps, repeats)


def step_flops(model, x):
    """Floating-point operations of one training step's matrix products: every convolution and
    the FC layer, 2 multiply-adds' worth per product in the forward and twice that in the
    backward (dx and dW), so 3x the forward's. Batch norm, ReLU, pooling and the rest are left
    out (they are memory-bound and a small share of the arithmetic)."""
    from minirattn import nn
    total, seen = 0, []
    originals = {cls: cls.forward for cls in (nn.Conv2d, nn.Linear)}

    def recording(cls):
        def forward(self, a):
            y = originals[cls](self, a)
            seen.append((self, a.shape, y.shape))
            return y
        return forward
    for cls in originals:
        cls.forward = recording(cls)
    try:
        with model.mode(False):
            model(x)
    finally:
        for cls, f in originals.items():
            cls.forward = f
    for m, xs, ys in seen:
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            total += 2 * ys[0] * ys[1] * ys[2] * ys[3] * (m.in_ch // m.groups) * kh * kw
        else:
            total += 2 * xs[0] * m.in_features * m.out_features
    return 3 * total


def sgemm_rate(n=2048, repeats=5):
    """This machine's float32 matrix-product rate through NumPy (GFLOP/s, best of ``repeats``
    n x n products): the limit the step's products run against."""
    import numpy as np
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = a.T.copy()
    a @ b
    best = min(_seconds_of(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _seconds_of(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def gpu_unavailable():
    """Why the CuPy-vs-PyTorch-CUDA half cannot run here (a sentence), or None when it can."""
    import torch
    from minirattn import backend as B
    try:
        B.get("cupy")
    except Exception as exc:                              # no CuPy, or CuPy without a device
        return str(exc)
    if not torch.cuda.is_available():
        return f"PyTorch {torch.__version__} sees no CUDA device"
    return None


def run_gpu(archs, batch, repeats):
    """minirattn on CuPy against the twin on PyTorch CUDA: same answer first, then alternating
    steps. TF32 is switched off in PyTorch (CuPy's float32 products do not use it either)."""
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"GPU: {torch.cuda.get_device_name()}, TF32 off")
    rows = []
    for arch in archs:
        twin, ours, x, y = _setup(arch, batch)
        err = check_same_answer(twin, ours, x, y, device="cuda")
        times = time_steps(twin, ours, x, y, repeats, device="cuda")
        t_o, t_t = times["ours"], times["torch"]
        rows.append((arch, err, t_o, t_t))
        print(f"{arch} (cupy vs CUDA): same answer (float64: loss {err['loss64']:.0e}, gradients "
              f"{err['grad64']:.0e}; float32 loss {err['loss32']:.0e}); step {t_o * 1e3:.1f} ms vs "
              f"{t_t * 1e3:.1f} ms = {t_o / t_t:.2f}x", flush=True)
    return rows


def _child_peak(which, arch, batch, threads):
    code = (f"import sys; sys.path.insert(0, {HERE!r}); import bench; bench._set_threads({threads}); "
            f"bench._peak_child({which!r}, {arch!r}, {batch})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _hwm_kib():
    """Peak resident set of this process (VmHWM). Not ru_maxrss: Linux carries that over from the
    parent through fork and exec, so a child would report the benchmark's own peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def _peak_child(which, arch, batch):
    import numpy as np
    if which == "ours":
        from minirattn.distributed import BatchThreads
        from minirattn.models import build
        from minirattn.training import SGD
        net = build(arch, num_classes=10)
        opt = SGD(net, lr=0.01)
        bt = BatchThreads(net, int(os.environ.get("OMP_NUM_THREADS", "2")))
        x = np.random.default_rng(0).standard_normal((batch, 3, 32, 32)).astype(np.float32)
        y = np.random.default_rng(0).integers(0, 10, batch)
        base = _hwm_kib()
        for _ in range(2):
            minirattn_step(net, opt, x, y, bt)
    else:
        import torch
        from minirattn.interop.torch import to_torch
        from minirattn.models import build
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
        net = to_torch(build(arch))
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        x = torch.randn(batch, 3, 32, 32)
        y = torch.randint(0, 10, (batch,))
        base = _hwm_kib()
        for _ in range(2):
            opt.zero_grad(); torch.nn.functional.cross_entropy(net(x), y).backward(); opt.step()
    peak = _hwm_kib()
    print(json.dumps({"peak_mib": peak / 1024, "step_mib": (peak - base) / 1024}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", nargs="+", default=["attention56", "attention92"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--only", choices=("cpu", "gpu"), help="run one half (default: both; the GPU half "
                   "only where CuPy and PyTorch CUDA are present)")
    args = p.parse_args(argv)
    _set_threads(args.threads)
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    from environment import line
    print(f"{args.threads} threads, batch {args.batch}; {line()}")
    out = {"cpu": [], "gpu": []}
    rate = sgemm_rate() if args.only != "gpu" else None
    if rate:
        print(f"NumPy sgemm (2048^3, float32): {rate:.0f} GFLOP/s", flush=True)
    for arch in (args.arch if args.only != "gpu" else ()):
        twin, ours, x, y = _setup(arch, args.batch)
        err = check_same_answer(twin, ours, x, y, threads=args.threads)
        times = time_steps(twin, ours, x, y, args.repeats, threads=args.threads)
        t_o, t_t, t_b = times["ours"], times["torch"], times.get("ours_blas")
        m_o = _child_peak("ours", arch, args.batch, args.threads)
        m_t = _child_peak("torch", arch, args.batch, args.threads)
        flops = step_flops(ours, x)
        out["cpu"].append((arch, err, t_o, t_t, m_o["step_mib"], m_t["step_mib"], flops, t_b))
        threaded = (f"; float64 on {args.threads} threads: loss {err['loss64_threads']:.0e}, "
                    f"gradients {err['grad64_threads']:.0e}" if "loss64_threads" in err else "")
        plain = (f"; the step with only the products on {args.threads} BLAS threads {t_b:.3f} s = "
                 f"{t_b / t_t:.2f}x" if t_b else "")
        print(f"{arch}: same answer (float64: loss {err['loss64']:.0e}, gradients {err['grad64']:.0e}"
              f"{threaded}; float32: loss {err['loss32']:.0e}, gradients {err['grad32']:.0e} apart, and "
              f"from the float64 answer ours {err['ours32_exact']:.1e}, PyTorch's {err['torch32_exact']:.1e}); "
              f"step ({args.threads} threads over the batch) {t_o:.3f} s vs {t_t:.3f} s = {t_o / t_t:.2f}x"
              f"{plain}; step memory {m_o['step_mib']:.0f} MiB vs {m_t['step_mib']:.0f} MiB = "
              f"{m_o['step_mib'] / max(m_t['step_mib'], 1):.2f}x; "
              f"{flops / 1e9:.1f} GFLOP of products a step: {flops / t_o / 1e9:.0f} GFLOP/s "
              f"({100 * flops / t_o / 1e9 / rate:.0f}% of sgemm) vs PyTorch's "
              f"{flops / t_t / 1e9:.0f} GFLOP/s ({100 * flops / t_t / 1e9 / rate:.0f}%)", flush=True)
    if args.only != "cpu":
        reason = gpu_unavailable()
        if reason is None:
            out["gpu"] = run_gpu(args.arch, args.batch, args.repeats)
        else:
            print(f"cupy vs PyTorch CUDA: skipped ({reason})")
    return out


if __name__ == "__main__":
    main()
