# %% [markdown]
# # 14 · The same code on a GPU
#
# Every op in this library takes its array module from its inputs (`xp = backend.xp_of(x)`), so
# the NumPy code *is* the GPU code: give it CuPy arrays and it runs on the device. What changes is
# what things cost. This tutorial shows the three costs that decide how GPU code is written, and
# counts them live: the host/device boundary, synchronisations, and kernel launches.
#
# It counts with the test suite's CuPy stand-in (`tests/cupy_standin`, so run it from a checkout):
# a strict NumPy-backed model of CuPy that refuses what CuPy refuses and counts what a GPU would be
# asked to do. On a machine with a GPU, `train_cifar(backend="cupy")` runs the same code on the
# real device; `benchmarks/gpu_check.py` measures it there (docs/architecture.md, "One kernel per
# step on the GPU").

# %%
import pathlib
import sys

import numpy as np

import minirattn
from minirattn import backend, functional as F
from minirattn.models import build
from minirattn.training import SGD, train_step

sys.path.insert(0, str(pathlib.Path(minirattn.__file__).resolve().parents[1] / "tests"))
import cupy_standin                                  # noqa: E402  (tests/, beside the package)
from cupy_standin import COUNT                       # noqa: E402

rng = np.random.default_rng(0)

# %% [markdown]
# ## The host/device boundary
# A GPU has its own memory. `backend.to_device(x, "cupy")` copies a NumPy array there (one
# host-to-device transfer), `backend.to_numpy` copies it back. An operation between a device array
# and a host array is refused: CuPy will not copy behind your back, because a copy across the bus
# costs far more than the arithmetic.

# %%
with cupy_standin.installed():
    x_host = rng.standard_normal((8, 4, 16, 16)).astype(np.float32)
    x = backend.to_device(x_host, "cupy")
    print(type(x).__module__, backend.name_of(x), x.shape, x.dtype, COUNT)
    assert COUNT.h2d == 1
    try:
        x + x_host                                   # a device array and a host array
        raise AssertionError("CuPy refuses this")
    except TypeError as err:
        print("refused:", err)
    assert np.array_equal(backend.to_numpy(x), x_host) and COUNT.d2h == 1

# %% [markdown]
# ## Why a synchronisation costs
# The host does not wait for the device: each operation is queued and the Python line returns at
# once, so the host can queue the next kernels while the device computes. Reading a value on the
# host (`float(loss)`, `int(correct)`, `.item()`, `if (x > 0).any():`) must wait until everything
# queued before it has run: a *synchronisation*. One inside the training step would stall the
# queue every iteration. The stand-in records each one with its file and line; in strict mode a
# synchronisation raises, as `cupyx.allow_synchronize(False)` does on a real GPU.

# %%
with cupy_standin.installed():
    loss = backend.to_device(np.float32(2.5), "cupy") * 2
    print(float(loss), "-> syncs:", len(COUNT.syncs), COUNT.syncs[0])
    assert len(COUNT.syncs) == 1
    with cupy_standin.strict():
        try:
            float(loss)
            raise AssertionError("strict mode refuses a synchronisation")
        except RuntimeError as err:
            print("strict:", str(err)[:90])

# %% [markdown]
# A whole training step of a network makes none: the loss and the number correct stay on the
# device (the training loop sums them there and reads them back once per log step).

# %%
def one_step(arch, batch=4, **spec):
    """Launches, syncs of the second training step (the first one makes the caches)."""
    with cupy_standin.installed():
        net = build(arch, num_classes=10, seed=0, **spec).to("cupy")
        opt = SGD(net, lr=0.1)
        xb = backend.to_device(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32), "cupy")
        yb = backend.to_device(rng.integers(0, 10, batch), "cupy")
        train_step(net, opt, xb, yb, 0.1)
        COUNT.reset()
        with cupy_standin.strict():                  # any synchronisation would raise here
            train_step(net, opt, xb, yb, 0.1)
        return COUNT.launches, len(COUNT.syncs)


launches, syncs = one_step("attention56_small")
print(f"attention56_small, one training step: {launches:,} kernel launches, {syncs} syncs")
assert syncs == 0

# %% [markdown]
# ## What a kernel launch is, and why fusing matters
# Every array operation on the GPU is a *kernel*: a small program the host asks the device to run
# over the array's elements. `y = a * x + b` is two kernels (a multiply, an add), each reading
# and writing the whole array. A launch costs the host several microseconds however small the
# array, so a network of many small layers can spend more time launching than computing.
# `backend.fuse` writes an elementwise expression once and on CuPy compiles it into one kernel
# (`cupy.fuse`); on NumPy it is the plain function.
#
# Batch norm shows the difference. The textbook pair (`method="textbook"`, the formulas one array
# operation a line: the version to read) launches one kernel per operation; the fused path
# (`method="fused"`, what `"auto"` picks on the GPU) one per step: sum, centred squares and
# normalise going forward; two fused sums and the input gradient going back.

# %%
def bn_launches(method, relu=True):
    with cupy_standin.installed():
        x = backend.to_device(rng.standard_normal((8, 16, 8, 8)).astype(np.float32), "cupy")
        dy = backend.to_device(rng.standard_normal((8, 16, 8, 8)).astype(np.float32), "cupy")
        gamma, beta = x[0, :, 0, 0] + 1, x[1, :, 0, 0] * 0
        COUNT.reset()
        y, cache = F.batchnorm2d_forward(x, gamma, beta, relu=relu, method=method)
        forward = COUNT.launches
        F.batchnorm2d_backward(dy, cache)
        return forward, COUNT.launches - forward


for method in ("textbook", "fused"):
    fwd, bwd = bn_launches(method)
    print(f"BN-ReLU {method:>8}: {fwd:>2} launches forward, {bwd:>2} backward")
textbook, fused = sum(bn_launches("textbook")), sum(bn_launches("fused"))
assert fused * 3 <= textbook                         # a third of the launches or fewer

# %% [markdown]
# Both give the same numbers (the tests hold every path to the textbook pair at 1e-12 in float64),
# and on NumPy the `"in_place"` path is faster still, because there what costs is passes over
# memory rather than launches. Across a whole network the difference adds up: at an assumed
# 10 microseconds of host time a launch, the full-width Attention-92's launches cost this much per
# step before any arithmetic:

# %%
launches_92, _ = one_step("attention92", batch=2)    # launches do not depend on the batch size
print(f"attention92, one training step: {launches_92:,} launches "
      f"~ {launches_92 * 10e-6 * 1e3:.0f} ms at 10 us each")
assert launches_92 < 4000                            # the budget the test suite holds it to
