"""The GPU check: everything a machine with CuPy and a GPU can prove, in one run, one table.

    PYTHONPATH=. python3 benchmarks/gpu_check.py             # on a GPU machine: about 5-8 minutes
    PYTHONPATH=. python3 benchmarks/gpu_check.py --dry-run   # the same steps, small, on the stand-in

Run from the checkout, with nothing installed: it needs only what a GPU machine usually has
(Python 3.10+, NumPy, SciPy, pytest and hypothesis for step 1, any CuPy 13 or 14 built for CUDA 12
or 13, PyTorch with CUDA for step 2, mpi4py for step 5; tqdm and matplotlib are not needed). The
checkout itself is put on ``sys.path`` (and on the steps' ``PYTHONPATH``), so ``PYTHONPATH=.`` is
only a reminder; ``pip install`` is never called.

Steps, each with its own time limit, each a row of the summary:
1. ``pytest -m gpu`` on the real device (the NumPy/CuPy parity tests);
2. ``benchmarks/bench.py --only gpu``: minirattn on CuPy against the PyTorch twin on CUDA (the same
   answer first, then alternating timed steps);
3. a training step under ``cupyx.allow_synchronize(False)`` (no device sync inside a step);
4. a training run (default 2,000 iterations of Attention-56, batch 64) on generated CIFAR-shaped
   data (the ``shapes`` set: 3x32x32, 10 classes), reporting images/s;
5. the data-parallel communicator's all-reduce of a device array on one rank (through NCCL where
   CuPy has it: the only place the NCCL path runs on a one-GPU machine), if mpi4py is installed.

--dry-run runs steps 3 and 4 on the strict NumPy-backed stand-in of the test suite, small, to check
the script itself on a machine without a GPU (steps 1 and 2 need the real device and are skipped).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)                 # the checkout's minirattn, installed or not


def _run(cmd, timeout):
    t = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                             env=env)
        tail = (out.stdout + out.stderr).strip().splitlines()[-1:] or [""]
        return ("ok" if out.returncode == 0 else f"FAILED ({out.returncode})"), tail[0], \
            time.perf_counter() - t, out.stdout + out.stderr
    except subprocess.TimeoutExpired:
        return "TIMEOUT", f"over {timeout} s", time.perf_counter() - t, ""


@contextlib.contextmanager
def _device(dry_run):
    if dry_run:
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        import cupy_standin
        with cupy_standin.installed():
            yield cupy_standin.strict
    else:
        import cupyx
        yield lambda: cupyx.allow_synchronize(False)


def step_without_sync(dry_run, arch, batch):
    """One training step (after a warm-up step) where any device synchronisation raises."""
    import numpy as np
    from minirattn import backend
    from minirattn.models import build
    from minirattn.training import SGD, train_step
    t = time.perf_counter()
    with _device(dry_run) as no_sync:
        net = build(arch, num_classes=10, seed=0).to("cupy")
        opt = SGD(net, lr=0.1)
        rng = np.random.default_rng(0)
        x = backend.to_device(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32), "cupy")
        y = backend.to_device(rng.integers(0, 10, batch), "cupy")
        train_step(net, opt, x, y, 0.1)
        backend.synchronize()
        try:
            with no_sync():
                train_step(net, opt, x, y, 0.1)
            status, note = "ok", "no sync inside the step"
        except Exception as exc:  # noqa: BLE001 - reported in the table
            status, note = "FAILED", f"{type(exc).__name__}: {str(exc)[:90]}"
        backend.synchronize()
    return status, note, time.perf_counter() - t


def training_run(dry_run, arch, iterations, batch):
    """A training run on the generated data; images/s from the run's own history."""
    import tempfile
    from minirattn.training import train_cifar
    t = time.perf_counter()
    with _device(dry_run):
        r = train_cifar(arch=arch, dataset="shapes", iterations=iterations, batch_size=batch,
                        eval_every=iterations, log_every=max(1, iterations // 10), n_test=500,
                        backend="cupy", checkpoint_dir=tempfile.mkdtemp(prefix="gpu-check-"),
                        progress=False, echo=lambda *a: None)
    steady = [h["images_per_s"] for h in r.history[1:]] or [r.history[-1]["images_per_s"]]
    note = (f"{iterations} it of {arch}, batch {batch}: {sorted(steady)[len(steady) // 2]:.0f} images/s, "
            f"test accuracy {100 * r.final_test_accuracy:.1f}%")
    return "ok", note, time.perf_counter() - t


def nccl_allreduce(dry_run):
    """MPICommunicator.allreduce of a CuPy array on this one rank: NCCL where CuPy has it (a
    one-rank NCCL communicator), else the host copies; the sum of one rank is the array itself."""
    t = time.perf_counter()
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "skipped", "mpi4py is not installed (pip install -e '.[dist]')", 0.0
    import numpy as np
    from minirattn import backend, distributed
    with _device(dry_run):
        comm = distributed.MPICommunicator()
        a = backend.to_device(np.arange(1000, dtype=np.float32), "cupy")
        comm.allreduce(a)
        backend.synchronize()
        same = bool(np.array_equal(backend.to_numpy(a), np.arange(1000, dtype=np.float32)))
        path = "NCCL" if comm._nccl else "host copies (no NCCL here)"
    return ("ok" if same else "FAILED"), f"one rank through {path}: sum {'right' if same else 'WRONG'}", \
        time.perf_counter() - t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="on the CuPy stand-in, small (no GPU needed)")
    p.add_argument("--arch", default="attention56")
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args(argv)
    if args.dry_run:
        args.iterations, args.batch = min(args.iterations, 4), min(args.batch, 8)
        args.arch = "attention56_small"
    rows = []
    if not args.dry_run:
        s, note, t, _ = _run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"], 240)
        rows.append(("pytest -m gpu", s, note, t))
        s, note, t, out = _run([sys.executable, os.path.join(HERE, "bench.py"), "--only", "gpu", "--repeats",
                                "5"], 240)
        lines = [ln for ln in out.splitlines() if "same answer" in ln or "skipped" in ln]
        for ln in lines or [note]:
            rows.append(("bench.py --only gpu", s, ln.strip()[:160], t))
    for name, fn, fargs in (("step, no sync", step_without_sync, (args.arch, args.batch)),
                            ("training run", training_run, (args.arch, args.iterations, args.batch)),
                            ("all-reduce (NCCL)", nccl_allreduce, ())):
        try:
            s, note, t = fn(args.dry_run, *fargs)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            s, note, t = "FAILED", f"{type(exc).__name__}: {str(exc)[:120]}", 0.0
        rows.append((name, s, note, t))
    print("\n| check | status | result | seconds |\n| --- | --- | --- | ---: |")
    for name, s, note, t in rows:
        print(f"| {name} | {s} | {note} | {t:.0f} |")
    return 0 if all(r[1] in ("ok", "skipped") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
