"""A strict, NumPy-backed stand-in for CuPy, so that the GPU path is tested on every machine.

Installed as ``cupy`` (``install()``; the ``gpu`` tests get it from ``tests/conftest.py`` where no
real GPU is present). It behaves as CuPy does where NumPy code usually breaks on a GPU:

* a host (NumPy) array in a device operation, indexing or assignment raises ``TypeError``;
* implicit conversion to a host array (``numpy.asarray(device_array)``) raises ``TypeError``;
* only names the real CuPy has exist (``names.json``, made from the CuPy package by
  ``refresh_names.py``); a CuPy name the stand-in does not implement raises NotImplementedError.

It counts what a GPU would do (``COUNT``): kernel launches (one per elementwise operation,
reduction or routine, one per ``fuse``d function call, one per matrix product plus one per operand
it must copy to a contiguous layout, one per copying reshape or astype), device synchronisations with their call sites (reading
a value on the host: ``float()``, ``int()``, ``bool()``, ``.item()``, ``.get()``; CuPy's ``bincount``
checks its input on the host twice), and host<->device transfers. ``strict()`` makes any
synchronisation raise, as ``cupyx.allow_synchronize(False)`` does on a real GPU.

``fuse`` checks what ``cupy.fuse`` accepts (elementwise operations, at most one reduction as the
last step; ``FusionError`` otherwise) and types Python scalar arguments as CuPy 14.2 does: weak
against arrays, but arithmetic between two of them runs in the smallest type, float16 for floats
and int8 for integers (so ``m - 1`` with ``m = 65536`` wraps, and ``1.0 - 0.1`` is 0.8999).

``cuda.cublas`` holds the cuBLAS routines minirattn.backend calls itself (strided-batched GEMM),
as cuBLAS defines them: column-major matrices at the raw addresses of the stand-in arrays' NumPy
storage (``ndarray.data.ptr``), so the numbers of ``backend.matmul``'s GPU path are checked here.

Reshapes follow NumPy's rule (a view when the strides allow one, else a copy), which is CuPy's
rule too for the C-ordered reshapes the library makes.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
import types

import numpy

_NAMES = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "names.json")))
MODULE_NAMES, NDARRAY_NAMES = set(_NAMES["module"]), set(_NAMES["ndarray"])
_HERE = os.path.dirname(os.path.abspath(__file__))


class Counters:
    """What the device did since the last ``reset()``."""

    def __init__(self):
        self.reset()
        self.strict = False

    def reset(self):
        self.launches, self.syncs, self.h2d, self.d2h = 0, [], 0, 0

    def __repr__(self):
        return (f"launches={self.launches} syncs={len(self.syncs)} h2d={self.h2d} d2h={self.d2h}")


COUNT = Counters()
_fusing = [0, False]            # depth of fused calls, whether the fused call has reduced


def _site():
    """file:line of the first caller outside the stand-in and NumPy."""
    for frame in reversed(traceback.extract_stack()[:-1]):
        if not frame.filename.startswith(_HERE) and "/numpy/" not in frame.filename:
            return f"{os.path.relpath(frame.filename)}:{frame.lineno}"
    return "?"


def _sync(what):
    site = _site()
    if COUNT.strict:
        raise RuntimeError(f"device synchronisation ({what}) is not allowed here (strict mode), "
                           f"at {site}")
    COUNT.syncs.append((what, site))


class FusionError(TypeError):
    """What ``cupy.fuse`` refuses: an operation that is not elementwise, or anything after the
    reduction (the stand-in is stricter than CuPy, which allows scalar post-map operations)."""


def _launch(n=1, kind="elementwise", what="this operation"):
    """One kernel (``n``) outside a fused function; inside one, check that ``cupy.fuse`` could
    fuse it: ``kind`` is "elementwise", "reduction" (at most one, the last step) or "other"."""
    if not _fusing[0]:
        COUNT.launches += n
        return
    if kind == "other":
        raise FusionError(f"cupy.fuse cannot fuse {what}: only elementwise operations and one "
                          f"final reduction")
    if _fusing[1]:
        raise FusionError(f"cupy.fuse: {what} after the reduction; the reduction must be the "
                          f"fused function's last step")
    if kind == "reduction":
        _fusing[1] = True


@contextlib.contextmanager
def strict():
    """Any device synchronisation inside raises RuntimeError (``cupyx.allow_synchronize(False)``)."""
    was, COUNT.strict = COUNT.strict, True
    try:
        yield COUNT
    finally:
        COUNT.strict = was


def _host_error(x):
    return TypeError(f"Unsupported type {type(x)}: a host (NumPy) array cannot take part in a device "
                     f"operation; move it with cupy.asarray first")


class _FusedScalar:
    """A Python scalar given to a fused function, as ``cupy.fuse`` (CuPy 14.2) sees it: weak
    against arrays (float32 arrays stay float32), but an operation between two scalars is
    computed in float16 (floats) or int8 (integers, wrapping around), the types CuPy's fusion
    gives a result of two scalars; that NumPy scalar then meets arrays as such."""

    def __init__(self, value):
        self.value = value

    def _op(self, other, name):
        if isinstance(other, _FusedScalar):
            other = other.value
        if isinstance(other, (int, float, numpy.generic)):
            r = getattr(self.value, name)(other)
            kind = numpy.float16 if isinstance(r, float) else numpy.int8
            return numpy.asarray(r).astype(kind)[()]             # int8 wraps, as in the kernel
        return NotImplemented


for _name in ("add", "sub", "mul", "truediv", "pow", "floordiv", "mod"):
    for _fmt in ("__{}__", "__r{}__"):
        setattr(_FusedScalar, _fmt.format(_name),
                lambda self, other, _n=_fmt.format(_name): self._op(other, _n))
_FusedScalar.__neg__ = lambda self: -self.value        # one scalar: still weak


def _unwrap(x):
    """Device arrays to their NumPy storage; Python and NumPy scalars, dtypes, slices pass; NumPy
    arrays raise TypeError (CuPy refuses them)."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, _FusedScalar):
        return x.value
    if isinstance(x, numpy.ndarray):
        raise _host_error(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    return x


def _wrap(r):
    if isinstance(r, numpy.ndarray):
        return ndarray(r)
    if isinstance(r, numpy.generic):             # reductions give 0-d device arrays on CuPy
        return ndarray(numpy.asarray(r))
    if isinstance(r, tuple):
        return tuple(_wrap(v) for v in r)
    return r


def _copies(a: numpy.ndarray) -> int:
    """Operand copies CuPy's matmul makes: one unless the operand is C- or F-contiguous."""
    return 0 if (a.flags.c_contiguous or a.flags.f_contiguous) else 1


class ndarray:
    """A device array: NumPy storage, CuPy's rules at the host/device boundary."""
    __array_priority__ = 1000
    __array_ufunc__ = None                       # numpy_array + device_array -> TypeError

    def __init__(self, a):
        object.__setattr__(self, "_a", a)

    def __getattribute__(self, name):
        if not name.startswith("_") and name not in NDARRAY_NAMES:
            raise AttributeError(f"'cupy.ndarray' object has no attribute '{name}'")
        return object.__getattribute__(self, name)

    # -- metadata (no device work) ------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray(self._a.T))
    data = property(lambda self: types.SimpleNamespace(ptr=self._a.ctypes.data))   # its address

    def __len__(self):
        return len(self._a)

    def __repr__(self):
        return f"array({self._a!r}, device=stand-in)"

    # -- the host boundary ---------------------------------------------------------------------
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` "
                        "to construct a NumPy array explicitly.")

    def _read_back(self, what, convert):
        """A value the host reads: a device sync and a device->host transfer."""
        _sync(what)
        COUNT.d2h += 1
        return convert(self._a)

    def get(self, stream=None, out=None):
        return self._read_back("get", numpy.copy)

    def item(self):
        return self._read_back("item", lambda a: a.item())

    def __float__(self):
        return self._read_back("float", float)

    def __int__(self):
        return self._read_back("int", int)

    def __bool__(self):
        return self._read_back("bool", bool)

    def __index__(self):
        _sync("index")
        return self._a.__index__()

    # -- views and copies ---------------------------------------------------------------------
    def reshape(self, *shape, order="C"):
        r = self._a.reshape(*shape, order=order)
        _launch(0 if numpy.may_share_memory(r, self._a) else 1, "other", "reshape")
        return ndarray(r)

    def ravel(self):
        return self.reshape(-1)

    def transpose(self, *axes):
        _launch(0, "other", "transpose")
        return ndarray(self._a.transpose(*axes))

    def swapaxes(self, a, b):
        return ndarray(self._a.swapaxes(a, b))

    def squeeze(self, axis=None):
        return ndarray(self._a.squeeze(axis))

    def view(self, dtype=None):
        return ndarray(self._a.view(dtype) if dtype is not None else self._a.view())

    def astype(self, dtype, copy=True, **kw):
        r = self._a.astype(dtype, copy=copy, **kw)
        _launch(0 if r is self._a else 1)
        return ndarray(r)

    def copy(self, order="C"):
        _launch(1, "other", "copy")
        return ndarray(self._a.copy(order))

    def fill(self, value):
        _launch(1, "other", "fill")
        self._a.fill(_unwrap(value))

    def __getitem__(self, key):
        _launch(0, "other", "indexing")
        r = self._a[_unwrap(key)]
        if isinstance(r, numpy.ndarray) and not numpy.may_share_memory(r, self._a):
            _launch()                            # fancy indexing gathers
        return _wrap(r)

    def __setitem__(self, key, value):
        _launch(1, "other", "item assignment")
        self._a[_unwrap(key)] = _unwrap(value)

    def __iter__(self):
        return (ndarray(numpy.asarray(v)) if not isinstance(v, numpy.ndarray) else ndarray(v)
                for v in self._a)

    # -- reductions ------------------------------------------------------------------------------
    def _reduce(self, name, *args, **kwargs):
        _launch(1, "reduction", name)
        out = kwargs.get("out")
        r = getattr(self._a, name)(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()})
        return out if out is not None else _wrap(r)

    def dot(self, other):
        return matmul(self, other)


def _binary(op, inplace=False, reflected=False):
    def method(self, other):
        if isinstance(other, numpy.ndarray):
            raise _host_error(other)
        if not isinstance(other, (ndarray, int, float, bool, complex, numpy.generic, _FusedScalar)):
            return NotImplemented
        _launch()
        a, b = self._a, _unwrap(other)
        if inplace:
            getattr(a, f"__i{op}__")(b)
            return self
        return _wrap(getattr(a, f"__{'r' if reflected else ''}{op}__")(b))
    return method


for _op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor"):
    setattr(ndarray, f"__{_op}__", _binary(_op))
    setattr(ndarray, f"__r{_op}__", _binary(_op, reflected=True))
    setattr(ndarray, f"__i{_op}__", _binary(_op, inplace=True))
for _op in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(ndarray, f"__{_op}__", _binary(_op))
for _name in ("sum", "mean", "max", "min", "argmax", "all", "any", "var"):
    setattr(ndarray, _name, lambda self, *a, _name=_name, **k: self._reduce(_name, *a, **k))
ndarray.__matmul__ = lambda self, other: matmul(self, other)
ndarray.__neg__ = lambda self: (_launch(), ndarray(-self._a))[1]
ndarray.__abs__ = lambda self: (_launch(), ndarray(abs(self._a)))[1]
ndarray.__invert__ = lambda self: (_launch(), ndarray(~self._a))[1]
ndarray.__hash__ = None
ndarray.__module__ = "cupy"                      # what minirattn.backend recognises


# ---- module functions ----------------------------------------------------------------------------
_REDUCTIONS = ("sum", "mean", "argmax")
_ELEMENTWISE = ("abs", "sqrt", "exp", "log", "maximum", "minimum", "isfinite", "isnan", "add",
                "subtract", "multiply", "divide", "negative", "where", "clip", "tanh", "square")


def _routine(name, launches=1):
    fn = getattr(numpy, name)
    kind = ("reduction" if name in _REDUCTIONS else "elementwise" if name in _ELEMENTWISE
            else "other")

    def routine(*args, **kwargs):
        _launch(launches, kind, f"cupy.{name}")
        out = kwargs.get("out")
        r = fn(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()})
        return out if out is not None else _wrap(r)
    routine.__name__ = name
    return routine


def matmul(a, b, out=None):
    a_, b_ = _unwrap(a), _unwrap(b)
    _launch(1 + _copies(a_) + _copies(b_), "other", "matmul")
    r = numpy.matmul(a_, b_, out=_unwrap(out)) if out is not None else numpy.matmul(a_, b_)
    return out if out is not None else _wrap(r)


def asarray(a, dtype=None, order=None):
    if isinstance(a, ndarray):
        return a.astype(dtype, copy=False) if dtype is not None else a
    COUNT.h2d += 1                                # a host -> device copy
    return ndarray(numpy.array(a, dtype=dtype, order=order or "K", copy=True))


def array(a, dtype=None, copy=True, order="K"):
    if isinstance(a, ndarray):
        _launch()
        return ndarray(numpy.array(a._a, dtype=dtype, copy=True, order=order))
    return asarray(a, dtype=dtype)


def ascontiguousarray(a, dtype=None):
    if isinstance(a, numpy.ndarray):
        raise _host_error(a)
    r = numpy.ascontiguousarray(a._a, dtype=dtype)
    _launch(0 if r is a._a else 1)
    return ndarray(r)


def empty(shape, dtype=float, order="C"):
    return ndarray(numpy.empty(shape, dtype=dtype, order=order))       # allocation, no kernel


def empty_like(a, dtype=None):
    return ndarray(numpy.empty_like(_unwrap(a), dtype=dtype))


def bincount(x, weights=None, minlength=0):
    _sync("bincount checks that its input is non-negative")
    _sync("bincount reads the largest value to size its output")
    _launch(3)
    return _wrap(numpy.bincount(_unwrap(x), _unwrap(weights), minlength))


def as_strided(x, shape=None, strides=None):
    """cupy.lib.stride_tricks.as_strided: a view with the given strides (bytes), no kernel."""
    if not isinstance(x, ndarray):
        raise _host_error(x) if isinstance(x, numpy.ndarray) else TypeError(
            f"as_strided needs a cupy.ndarray, got {type(x)}")
    return ndarray(numpy.lib.stride_tricks.as_strided(x._a, shape=shape, strides=strides))


def fuse(*args, **kwargs):
    """cupy.fuse: one kernel for the whole function."""
    def decorate(f):
        def fused(*a, **k):
            for v in a:
                if not isinstance(v, (ndarray, int, float, bool, numpy.generic)):
                    raise TypeError(f"a fused function takes device arrays and scalars, got "
                                    f"{type(v)}")
            _launch()
            was, _fusing[:] = list(_fusing), [_fusing[0] + 1, False]
            a = [_FusedScalar(v) if isinstance(v, (int, float)) and not isinstance(v, bool)
                 else v for v in a]
            try:
                return f(*a, **k)
            finally:
                _fusing[:] = was
        return fused
    return decorate(args[0]) if args and callable(args[0]) else decorate


_ROUTINES = ("zeros", "ones", "full", "zeros_like", "ones_like", "full_like", "arange", "abs",
             "sqrt", "exp", "log", "maximum", "minimum", "isfinite", "isnan", "add", "subtract",
             "multiply", "divide", "negative", "where", "stack", "concatenate", "kron",
             "broadcast_to", "sum", "mean", "clip", "tanh", "square", "argmax", "eye")
_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "intp",
           "bool_", "dtype", "ndim", "shape", "result_type")


def _module():
    m = types.ModuleType("cupy")
    m.__doc__ = "minirattn's strict NumPy-backed CuPy stand-in (tests/cupy_standin)."
    m.ndarray = ndarray
    m.matmul, m.asarray, m.array, m.ascontiguousarray = matmul, asarray, array, ascontiguousarray
    m.empty, m.empty_like, m.bincount, m.fuse = empty, empty_like, bincount, fuse
    for name in _ROUTINES:
        setattr(m, name, _routine(name, launches=0 if name == "broadcast_to" else 1))
    for name in _DTYPES:
        setattr(m, name, getattr(numpy, name))
    m.newaxis = None
    m.lib = types.SimpleNamespace(stride_tricks=types.SimpleNamespace(as_strided=as_strided))
    m.__version__ = _NAMES["version"] + "+standin"
    m.cuda = _cuda_module()
    m.random = types.SimpleNamespace(default_rng=lambda *a, **k: (_ for _ in ()).throw(
        NotImplementedError("the stand-in has no device random numbers")))

    def __getattr__(name):
        if name in MODULE_NAMES:
            raise NotImplementedError(f"cupy.{name} exists in CuPy but not in the stand-in: add it "
                                      f"to tests/cupy_standin")
        raise AttributeError(f"module 'cupy' has no attribute '{name}'")
    m.__getattr__ = __getattr__
    m._standin = sys.modules[__name__]
    return m


def _cuda_module():
    class Stream:
        def synchronize(self):
            _sync("stream synchronize")

    current = [0]

    class Device:
        """Device ids only: every "device" shares the host's memory, but caches keyed by the
        current device can be told apart."""

        def __init__(self, i=None):
            self.id = current[0] if i is None else i

        def synchronize(self):
            _sync("device synchronize")

        def use(self):
            current[0] = self.id

        def __enter__(self):
            self._was, current[0] = current[0], self.id
            return self

        def __exit__(self, *exc):
            current[0] = self._was
            return False

    Stream.null = Stream()
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, deviceSynchronize=lambda: _sync(
        "device synchronize"))
    handle = lambda: 1                           # noqa: E731 (one cuBLAS handle)
    return types.SimpleNamespace(runtime=runtime, Stream=Stream, Device=Device,
                                 get_current_stream=lambda: Stream.null, cublas=_Cublas(),
                                 device=types.SimpleNamespace(get_cublas_handle=handle),
                                 get_cublas_handle=handle)


class _Cublas:
    """The cuBLAS routines minirattn.backend calls, as cuBLAS defines them: column-major
    matrices at raw addresses (here the NumPy storage of stand-in arrays), leading dimensions,
    strides in elements, alpha and beta at host addresses; beta = 0 ignores what C held. Bad
    sizes raise as cuBLAS's CUBLAS_STATUS_INVALID_VALUE would. One launch per call."""

    def sgemmStridedBatched(self, *args):
        self._gemm(numpy.float32, *args)

    def dgemmStridedBatched(self, *args):
        self._gemm(numpy.float64, *args)

    @staticmethod
    def _gemm(dtype, handle, transa, transb, m, n, k, alpha, A, lda, stride_a, B, ldb, stride_b,
              beta, C, ldc, stride_c, count):
        import ctypes
        item = numpy.dtype(dtype).itemsize
        ctype = ctypes.c_float if dtype == numpy.float32 else ctypes.c_double

        def matrix(address, rows, cols, ld, stride, i):
            if ld < max(1, rows):
                raise ValueError(f"cuBLAS: CUBLAS_STATUS_INVALID_VALUE (leading dimension {ld} "
                                 f"< {rows} rows)")
            extent = (cols - 1) * ld + rows
            buffer = numpy.ctypeslib.as_array((ctype * extent).from_address(
                address + i * stride * item))
            return numpy.lib.stride_tricks.as_strided(buffer, (rows, cols), (item, ld * item))

        if min(m, n, k, count) < 0 or transa not in (0, 1) or transb not in (0, 1):
            raise ValueError("cuBLAS: CUBLAS_STATUS_INVALID_VALUE")
        _launch(what="cuBLAS strided-batched GEMM")
        scale = ctype.from_address(alpha).value
        keep = ctype.from_address(beta).value
        for i in range(count):
            a = matrix(A, *((m, k) if transa == 0 else (k, m)), lda, stride_a, i)
            b = matrix(B, *((k, n) if transb == 0 else (n, k)), ldb, stride_b, i)
            c = matrix(C, m, n, ldc, stride_c, i)
            product = scale * ((a if transa == 0 else a.T) @ (b if transb == 0 else b.T))
            c[...] = product if keep == 0 else product + keep * c


CUPY = _module()


@contextlib.contextmanager
def installed():
    """``cupy`` is the stand-in inside (minirattn.backend forgets any CuPy it had imported)."""
    from minirattn import backend
    saved_module, saved_backend = sys.modules.get("cupy"), backend._cupy
    sys.modules["cupy"] = CUPY
    backend._cupy = None
    COUNT.reset()
    try:
        yield CUPY
    finally:
        if saved_module is None:
            sys.modules.pop("cupy", None)
        else:
            sys.modules["cupy"] = saved_module
        backend._cupy = saved_backend
