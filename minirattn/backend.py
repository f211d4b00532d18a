"""The array backend: the only module in minirattn that imports numpy, cupy, scipy or numba.

Everything else asks for its array module with :func:`xp_of` (from the arrays it
was given) or :func:`get` (by name), so the same code runs on NumPy and CuPy and a
machine without a GPU never touches CUDA.

``import minirattn`` imports NumPy only; CuPy is imported the first time someone
asks for ``"cupy"`` or hands us a CuPy array, numba the first time a :func:`jit` kernel runs.
"""
from __future__ import annotations

import importlib.util
import os
import threading

import numpy as np

__all__ = [
    "BackendError", "BACKENDS", "get", "xp_of", "name_of", "is_array", "to_device",
    "to_numpy", "pad", "numpy", "default_rng", "is_floating",
    "synchronize", "device_key", "use_device", "nccl", "current_stream_ptr", "device_count",
    "fuse", "FUSED", "jit", "JITTED", "jit_available", "use_jit", "matmul", "blas_threads",
]

BACKENDS = ("numpy", "cupy")

#: NumPy itself, for code that must run on the host (data loading, RNG, I/O).
numpy = np

_cupy = None


class BackendError(RuntimeError):
    """Raised when a backend is asked for but cannot be used here."""


def _import_cupy():
    """Import CuPy and check a CUDA device is usable; clear errors otherwise."""
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy  # noqa: WPS433 (the one allowed place)
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise BackendError(
            "backend 'cupy' was requested but CuPy is not installed "
            "(pip install 'minirattn[gpu]' or a cupy-cudaXXx wheel matching your CUDA); "
            f"import failed with: {exc}"
        ) from exc
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # pragma: no cover - depends on the machine
        raise BackendError(
            f"backend 'cupy' was requested and CuPy is installed, but no CUDA device is usable: "
            f"{exc}"
        ) from exc
    if n < 1:  # pragma: no cover
        raise BackendError("backend 'cupy' was requested but CUDA reports 0 devices")
    _cupy = cupy
    return cupy


def get(name: str):
    """Return the array module called ``name`` ("numpy" or "cupy")."""
    if name == "numpy":
        return np
    if name == "cupy":
        return _import_cupy()
    raise ValueError(f"unknown backend {name!r}: expected one of {BACKENDS}")


def _is_cupy_array(a) -> bool:
    return type(a).__module__.split(".")[0] == "cupy"


def xp_of(*arrays):
    """The array module of the given arrays (cupy if any is a CuPy array, else numpy).

    ``None`` entries and Python scalars are ignored.
    """
    for a in arrays:
        if _is_cupy_array(a):
            return _import_cupy()
    return np


def name_of(a) -> str:
    """"cupy" for a CuPy array, "numpy" otherwise."""
    return "cupy" if _is_cupy_array(a) else "numpy"


def is_array(a) -> bool:
    return isinstance(a, np.ndarray) or _is_cupy_array(a)


def is_floating(a) -> bool:
    return is_array(a) and np.dtype(a.dtype).kind == "f"


def to_device(a, name: str):
    """Move array ``a`` to backend ``name`` (a no-op when it is already there)."""
    xp = get(name)
    if name == "numpy":
        return to_numpy(a)
    return xp.asarray(a)


def to_numpy(a):
    """A NumPy copy/view of ``a`` whichever backend holds it."""
    if _is_cupy_array(a):
        return a.get()
    return np.asarray(a)


def synchronize(a=None) -> None:
    """Wait until the current device has finished all its work, on every stream (no-op on NumPy).
    Call only when logging or timing."""
    if _cupy is not None and (a is None or _is_cupy_array(a)):
        _cupy.cuda.Device().synchronize()


def device_key(xp) -> tuple:
    """Which memory arrays made now by module ``xp`` live in: ("numpy",) or ("cupy", device id).
    Caches of device arrays are keyed by it, so two GPUs never share one's arrays."""
    if xp is np:
        return ("numpy",)
    return ("cupy", xp.cuda.Device().id)


def use_device(index: int) -> None:
    """Make CUDA device ``index`` the current one (a data-parallel rank picks its own GPU)."""
    cupy = _import_cupy()
    n = cupy.cuda.runtime.getDeviceCount()
    if not 0 <= index < n:
        raise BackendError(f"CUDA device {index} was asked for, but this machine has {n} "
                           f"(devices 0..{n - 1}): run at most {n} ranks per machine")
    cupy.cuda.Device(index).use()


def device_count() -> int:
    """How many CUDA devices CuPy sees."""
    return int(_import_cupy().cuda.runtime.getDeviceCount())


def nccl():
    """CuPy's NCCL binding (``cupy.cuda.nccl``), or None where CuPy was built without it."""
    cupy = _import_cupy()
    try:
        from cupy.cuda import nccl as module  # noqa: WPS433
    except ImportError:
        return None
    return module if getattr(module, "available", True) else None


def current_stream_ptr() -> int:
    """The raw handle of the current CUDA stream (NCCL calls are queued on it)."""
    return _import_cupy().cuda.get_current_stream().ptr


def pad(x, ph: int, pw: int, value: float = 0.0):
    """Pad the last two axes of an NCHW array by ``ph`` rows and ``pw`` columns each side."""
    if ph == 0 and pw == 0:
        return x
    xp = xp_of(x)
    out = xp.full(x.shape[:-2] + (x.shape[-2] + 2 * ph, x.shape[-1] + 2 * pw), value, dtype=x.dtype)
    out[..., ph:ph + x.shape[-2], pw:pw + x.shape[-1]] = x
    return out


#: Every function made by :func:`fuse`, by "module.name": the tests run each on real CuPy.
FUSED = {}


def fuse(fn):
    """``fn(xp, *args)`` as one kernel on CuPy (``cupy.fuse``), the plain function on NumPy.

    The math is written once, with operators and ``xp`` ufuncs: ``xp`` is the array module of the
    arguments. What ``cupy.fuse`` accepts is the rule: elementwise operations on arrays (which
    broadcast) and Python scalars, at most one reduction (``xp.sum(..., axis=...)``) as the last
    step, several results as a tuple, in-place updates of an argument (``acc += g``); no
    reshapes, indexing or matrix products inside. The tests' CuPy stand-in enforces it. Write
    per-channel factors in parentheses, ``(x - mu) * (gamma * inv_std)``: NumPy then computes
    them once on the small arrays, while the fused kernel recomputes them per element for free.
    docs/architecture.md ("One kernel per step on the GPU").
    """
    kernels = {}

    def call(*args):
        xp = xp_of(*args)
        if xp is np:
            return fn(np, *args)
        kernel = kernels.get(id(xp))
        if kernel is None:
            name = fn.__name__ if fn.__name__.isidentifier() else "fused"   # a CUDA name
            kernel = kernels[id(xp)] = xp.fuse(kernel_name=name)(lambda *a: fn(xp, *a))
        return kernel(*args)

    call.__name__, call.__doc__, call.plain = fn.__name__, fn.__doc__, fn
    call.kernels = kernels
    FUSED[f"{fn.__module__}.{fn.__name__}"] = call
    return call


#: Every function made by :func:`jit`, by "module.name".
JITTED = {}

# MINIRATTN_JIT=0 in the environment turns the compiled kernels off for a run (use_jit() in code)
_jit = {"on": os.environ.get("MINIRATTN_JIT", "1") != "0", "lock": threading.Lock()}


def jit_available() -> bool:
    """Whether the NumPy paths may run :func:`jit` kernels: numba is installed (the ``fast``
    extra) and they were not turned off (``MINIRATTN_JIT=0``, :func:`use_jit`)."""
    if "found" not in _jit:                      # looked up once: this is asked at every layer
        _jit["found"] = importlib.util.find_spec("numba") is not None
    return _jit["on"] and _jit["found"]


def use_jit(on: bool) -> bool:
    """Allow (True) or forbid (False) the compiled kernels from now on; returns what was set
    before. What ``"auto"`` paths choose follows it (benchmarks compare both in one process)."""
    before, _jit["on"] = _jit["on"], bool(on)
    return before


def jit(fn=None, *, sums=False):
    """``fn`` (plain Python loops over NumPy arrays) compiled by numba on its first call: machine
    code for each argument type, run without the GIL (threads over the batch run it at once),
    cached on disk. ``sums=True`` (``@jit(sums=True)``) for a kernel whose loops accumulate:
    their additions may then be reordered (numba's fastmath "reassoc"), so that the compiler
    keeps several partial sums in vector lanes (batch norm's sum loops 3.7x and 14x faster at
    (32, 64, 32, 32); without it each addition waits for the one before). Only the NumPy paths
    that :func:`jit_available` allows call it; ``.plain`` is ``fn`` itself, which the tests
    also run uncompiled. docs/architecture.md ("Compiled kernels on the CPU")."""
    if fn is None:
        return lambda f: jit(f, sums=sums)
    compiled = []

    def call(*args):
        if not compiled:
            with _jit["lock"]:                 # threads calling it first compile it once
                if not compiled:
                    import numba  # noqa: WPS433 (the one allowed place)
                    compiled.append(numba.njit(nogil=True, cache=True,
                                               fastmath={"reassoc"} if sums else False)(fn))
        return compiled[0](*args)

    call.__name__, call.__doc__, call.plain = fn.__name__, fn.__doc__, fn
    JITTED[f"{fn.__module__}.{fn.__name__}"] = call
    return call


def matmul(a, b, *, trans_a=False, trans_b=False, out=None, accumulate=False):
    """``op(a) @ op(b)`` as NumPy's matmul broadcasts it, ``op`` transposing the last two axes
    where ``trans_a`` / ``trans_b`` say so. ``out``: the array to write it into (returned), and
    with ``accumulate=True`` to add it to, in place (on CuPy cuBLAS's beta = 1: no extra kernel).

    On CuPy a product whose operands cuBLAS can read in place (contiguous rows one row stride
    apart; a batch of one stride, or none) is ONE cuBLAS strided-batched GEMM: a shared operand
    gets stride 0, a transposed one a transpose flag, a slice of a wider matrix its row stride.
    CuPy's own matmul would copy a transposed view and send a broadcast operand through three
    pointer-table kernels and a pointer-array GEMM. Anything else goes to ``xp.matmul``.
    docs/architecture.md ("One kernel per step on the GPU").
    """
    if accumulate and out is None:
        raise ValueError("matmul: accumulate=True needs out=, the array to add the product to")
    xp = xp_of(a, b)
    if xp is not np:
        plan = _strided_batched_plan(a, b, trans_a, trans_b)
        if plan is not None:
            layout = None if out is None else _gemm_layout(out, plan[4])
            if out is None or (layout is not None and out.shape == plan[4] + plan[5:8:2]
                               and out.dtype == a.dtype):
                return _gemm_strided_batched(xp, *plan, out, layout, accumulate)
    product = xp.matmul(a.swapaxes(-1, -2) if trans_a else a,
                        b.swapaxes(-1, -2) if trans_b else b)
    if out is None:
        return product
    if accumulate:
        out += product
    else:
        out[...] = product
    return out


def _strided_batched_plan(a, b, trans_a, trans_b):
    """(a, b, trans_a, trans_b, batch shape, M, K, N, (ld, stride) of a, of b) when one
    strided-batched GEMM computes the product, else None. An operand qualifies when its rows are
    contiguous, one row stride apart (the leading dimension), and its batch is one stride."""
    if a.ndim < 2 or b.ndim < 2 or a.dtype != b.dtype or a.dtype.char not in "fd":
        return None
    M, K = a.shape[-2:][::-1] if trans_a else a.shape[-2:]
    K2, N = b.shape[-2:][::-1] if trans_b else b.shape[-2:]
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    if K != K2 or 0 in (M, K, N) or 0 in batch:
        return None
    layouts = [_gemm_layout(x, batch) for x in (a, b)]
    if None in layouts:
        return None
    return (a, b, trans_a, trans_b, batch, M, K, N, *layouts)


def _gemm_layout(x, batch):
    """(leading dimension, batch stride) of ``x`` in elements, or None where cuBLAS cannot read
    it in place. Stride 0: one matrix shared by the whole batch."""
    item, (rows, cols) = x.itemsize, x.shape[-2:]
    if cols > 1 and x.strides[-1] != item:
        return None
    ld = x.strides[-2] // item if rows > 1 else cols
    if ld < cols or x.strides[-2] % item:
        return None
    lead = x.shape[:-2]
    if all(d == 1 for d in lead):
        return ld, 0
    if lead != batch:
        return None                              # broadcast on some batch axes only
    for i in range(len(lead) - 1):              # the batch axes must make one stride
        if lead[i + 1] > 1 and x.strides[i] != lead[i + 1] * x.strides[i + 1]:
            return None
    step = next((x.strides[i] for i in range(len(lead) - 1, -1, -1) if lead[i] > 1), 0)
    if step % item or step < 0:
        return None
    return ld, step // item


def _gemm_strided_batched(xp, a, b, trans_a, trans_b, batch, M, K, N, layout_a, layout_b,
                          out=None, layout_out=None, accumulate=False):
    """out[i] = op(a[i]) op(b[i]) (+ out[i]) through cuBLAS, which is column-major: a row-major
    (r, c) matrix of row stride ld is its column-major (c, r) transpose with leading dimension
    ld, so out^T = op(b)^T op(a)^T is computed, with b as cuBLAS's first operand and a as its
    second."""
    if out is None:
        out = xp.empty(batch + (M, N), dtype=a.dtype)
        layout_out = (N, M * N)
    count = int(np.prod(batch, dtype=np.int64))
    gemm = xp.cuda.cublas.sgemmStridedBatched if a.dtype.char == "f" else \
        xp.cuda.cublas.dgemmStridedBatched
    one, beta = np.ones((), a.dtype), np.array(1 if accumulate else 0, a.dtype)
    (lda, stride_a), (ldb, stride_b), (ldc, stride_c) = layout_a, layout_b, layout_out
    gemm(xp.cuda.device.get_cublas_handle(), int(trans_b), int(trans_a), N, M, K,
         one.ctypes.data, b.data.ptr, ldb, stride_b, a.data.ptr, lda, stride_a,
         beta.ctypes.data, out.data.ptr, ldc, stride_c, count)
    return out


_blas_controller = None


def blas_threads(n: int):
    """``with blas_threads(1): ...`` runs NumPy's matrix products on ``n`` threads inside, and
    puts back what was set after (threadpoolctl). :class:`minirattn.distributed.BatchThreads`
    runs each thread's products on one BLAS thread this way: threads of our own over the batch and
    the BLAS's own threads would otherwise compete for the same cores."""
    global _blas_controller
    from threadpoolctl import ThreadpoolController
    if _blas_controller is None:                  # looks the loaded libraries up once
        _blas_controller = ThreadpoolController()
    return _blas_controller.limit(limits=n, user_api="blas")


def default_rng(seed=None):
    """A NumPy random Generator (host side) for initialisation and data order."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def student_t_ppf(q: float, df: int) -> float:
    """The q-quantile of Student's t with ``df`` degrees of freedom (SciPy, imported here only:
    the statistics of ``minirattn.experiments`` need it)."""
    from scipy import stats
    return float(stats.t.ppf(q, df))
