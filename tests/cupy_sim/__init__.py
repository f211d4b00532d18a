"""Real CuPy over a simulated CUDA device, so CuPy itself checks the GPU path on a machine without one.

CuPy's compiled modules reach the CUDA runtime and driver through C function pointers they import
when they load, from the ``__pyx_capi__`` tables of ``cupy_backends.cuda.api.runtime`` and
``.driver`` (Cython's cross-module calls). :func:`install`, called **before** ``import cupy``,
replaces those entries (and the modules' Python-level functions) with ctypes callbacks of the same
C signatures. What the callbacks give CuPy is one sm_90 device, memory addresses handed out
without allocating, modules "loaded" from the compiled code, and kernel launches recorded instead
of run. cuBLAS is a stub module that records its calls. Everything above that layer is real CuPy:
``cupy.fuse`` traces the Python function and writes CUDA C++, elementwise and reduction kernels
are generated, and NVIDIA's real NVRTC compiles each to sm_90 code on the CPU.

No value is ever computed, so this checks what CuPy accepts and what a step asks of the device
(:data:`LOG`: launches by kernel name, cuBLAS calls, synchronisations and copies to the host with
the line that made them); the NumPy-backed stand-in (tests/cupy_standin) keeps checking numbers.

Pinned to the versions it was written against (the ``gpu-sim`` extra): CuPy 14.2 for CUDA 12 and
NVRTC 12.9. Only the entries listed in ``_RUNTIME`` and ``_DRIVER`` are simulated; a call to any
other entry of the two tables is recorded in ``LOG.unsupported`` (and returns a harmless value),
so a CuPy feature the simulation does not know shows up as a failure, never as silence.
CUB and cuTENSOR are compiled C++ that call CUDA directly, so the simulation turns CuPy's
accelerators off (``CUPY_ACCELERATORS=""``): reductions are CuPy's own kernels.
"""
from __future__ import annotations

import collections
import ctypes
import itertools
import os
import sys
import traceback
import types

SUPPORTED_CUPY = "14.2."
_HERE = os.path.dirname(os.path.abspath(__file__))
_BACKEND = os.path.join("minirattn", "backend.py")
_OWN = {os.path.join(_HERE, f) for f in ("__init__.py", "exercise.py")}


class Log:
    """What the simulated device was asked to do since the last :meth:`reset`."""

    def __init__(self):
        self.record_sites = False                  # also count launches by call site (slow)
        self.reset()
        self.unsupported = []          # (entry, args): never reset, always a failure
        self.ever = collections.Counter()          # kernel name -> launches, never reset

    def reset(self):
        self.launches = collections.Counter()      # kernel name -> launches
        self.cublas = collections.Counter()        # cuBLAS function -> calls
        self.syncs = []                            # (what, call site): the host waits
        self.to_host = []                          # (bytes, call site): device -> host copies
        self.to_device = 0                         # host -> device copies
        self.sites = collections.Counter()         # (kernel, call site): with record_sites

    @property
    def n_launches(self):
        return sum(self.launches.values())

    @property
    def n_cublas(self):
        return sum(self.cublas.values())

    def summary(self):
        return {"launches": dict(self.launches), "cublas": dict(self.cublas),
                "syncs": self.syncs, "to_host": self.to_host, "to_device": self.to_device,
                "unsupported": self.unsupported}


LOG = Log()


def _site():
    """file:line of the innermost caller that is neither CuPy nor this module."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        f = frame.filename
        if (f not in _OWN and "/site-packages/cupy" not in f and "/numpy/" not in f
                and not f.endswith(_BACKEND)):
            return f"{os.path.basename(f)}:{frame.lineno}"
    return "?"


# ----------------------------------------------------------------------------------- the device
_ATTRIBUTES = {      # cudaDeviceAttr values an sm_90 part reports (others: 1, "supported")
    "MultiProcessorCount": 132,
    "MaxThreadsPerBlock": 1024, "MaxBlockDimX": 1024, "MaxBlockDimY": 1024, "MaxBlockDimZ": 64,
    "MaxGridDimX": 2 ** 31 - 1, "MaxGridDimY": 65535, "MaxGridDimZ": 65535, "WarpSize": 32,
    "MaxSharedMemoryPerBlock": 49152, "MaxSharedMemoryPerBlockOptin": 232448,
    "MaxSharedMemoryPerMultiprocessor": 233472, "MaxRegistersPerBlock": 65536,
    "MaxThreadsPerMultiProcessor": 2048, "MaxBlocksPerMultiprocessor": 32, "L2CacheSize": 52428800,
    "ClockRate": 1980000, "MemoryClockRate": 2619000, "GlobalMemoryBusWidth": 5120,
    "TotalConstantMemory": 65536, "PciBusId": 0, "PciDeviceId": 0, "PciDomainId": 0,
    "Integrated": 0, "MultiGpuBoardGroupID": 0, "ComputeMode": 0, "MemoryPoolsSupported": 1,
}
_MEMORY = 80 * 2 ** 30
_DEVICE_BASE = 1 << 60           # device addresses: far above any host address (< 2**47)
_LIBC = ctypes.CDLL(None)
_LIBC.malloc.restype, _LIBC.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
_LIBC.free.restype, _LIBC.free.argtypes = None, [ctypes.c_void_p]
_VERSION = 12090                 # CUDA 12.9, runtime and driver


class _Device:
    """The simulated device's state: a bump allocator, handles, loaded kernels."""

    def __init__(self):
        self.next_address = _DEVICE_BASE
        self.handles = itertools.count(0x1000, 0x10)
        self.functions = {}                # CUfunction handle -> kernel name
        self.current = 0

    def malloc(self, size):
        address = self.next_address
        self.next_address += max(512, (int(size) + 511) // 512 * 512)
        return address

    def handle(self):
        return next(self.handles)


_DEV = _Device()


_CC = {75: 9, 76: 0}              # cudaDevAttrComputeCapabilityMajor / Minor (CUDA's enum values)


def _attribute(attr, device=0):
    from cupy_backends.cuda.api import runtime
    if attr in _CC:
        return _CC[attr]
    for name, value in _ATTRIBUTES.items():
        if getattr(runtime, "cudaDevAttr" + name, None) == attr:
            return value
    return 1


def _properties(device=0):
    return {"name": b"Simulated sm_90", "totalGlobalMem": _MEMORY, "sharedMemPerBlock": 49152,
            "regsPerBlock": 65536, "warpSize": 32, "maxThreadsPerBlock": 1024,
            "maxThreadsDim": (1024, 1024, 64), "maxGridSize": (2 ** 31 - 1, 65535, 65535),
            "clockRate": 1980000, "totalConstMem": 65536, "major": 9, "minor": 0,
            "multiProcessorCount": 132, "l2CacheSize": 52428800,
            "maxThreadsPerMultiProcessor": 2048, "memoryBusWidth": 5120, "integrated": 0,
            "canMapHostMemory": 1, "concurrentKernels": 1, "pciBusID": 0, "pciDeviceID": 0,
            "pciDomainID": 0, "uuid": b"\0" * 16, "sharedMemPerMultiprocessor": 233472,
            "managedMemory": 1, "computeMode": 0, "ECCEnabled": 1, "unifiedAddressing": 1,
            "asyncEngineCount": 3, "memoryClockRate": 2619000, "luid": b"", "luidDeviceNodeMask": 0,
            "textureAlignment": 512, "texturePitchAlignment": 32, "memPitch": 2 ** 31 - 1}


def _sync(what):
    LOG.syncs.append((what, _site()))


def _memcpy(dst, src, size, kind, stream=0):
    from cupy_backends.cuda.api import runtime
    if kind == runtime.memcpyDeviceToHost or (kind == runtime.memcpyDefault and dst < _DEVICE_BASE):
        LOG.to_host.append((int(size), _site()))
    elif kind == runtime.memcpyHostToDevice or (kind == runtime.memcpyDefault
                                                 and src < _DEVICE_BASE):
        LOG.to_device += 1


def _launch(f, *grid_and_rest):
    _record_launch(_DEV.functions.get(f, "?"))


def _record_launch(name):
    """One kernel (or memset) on the device: counted by name, and by call site when asked."""
    LOG.launches[name] += 1
    LOG.ever[name] += 1
    if LOG.record_sites:
        LOG.sites[name, _site()] += 1


def _get_function(module, name):
    f = _DEV.handle()
    _DEV.functions[f] = name.decode() if isinstance(name, bytes) else str(name)
    return f


def _set_device(d):
    if d != 0:
        raise ValueError(f"the simulated machine has one device (0), asked for {d}")


# entry -> what it does (the C signature comes from the capsule); None returns None / 0
_RUNTIME = {
    "getDevice": lambda: _DEV.current, "getDeviceCount": lambda: 1, "setDevice": _set_device,
    "runtimeGetVersion": lambda: _VERSION, "driverGetVersion": lambda: _VERSION,
    "_getCUDAMajorVersion": lambda: _VERSION // 1000, "_ensure_context": None,
    "deviceGetAttribute": _attribute, "getDeviceProperties": _properties,
    "deviceCanAccessPeer": lambda d, p: 0, "deviceGetPCIBusId": lambda d: "0000:00:00.0",
    "deviceSynchronize": lambda: _sync("deviceSynchronize"),
    "streamSynchronize": lambda s: _sync("streamSynchronize"),
    "eventSynchronize": lambda e: _sync("eventSynchronize"),
    "streamQuery": lambda s: _sync("streamQuery"), "eventQuery": lambda e: _sync("eventQuery"),
    "memGetInfo": lambda: (_MEMORY, _MEMORY), "malloc": _DEV.malloc,
    "mallocAsync": lambda size, stream: _DEV.malloc(size), "free": None,
    "freeAsync": None, "mallocManaged": lambda size, opt=0: _DEV.malloc(size),
    # pinned host memory is real memory: CuPy stages host->device copies through it
    "hostAlloc": lambda size, flags: _LIBC.malloc(max(int(size), 1)),
    "freeHost": lambda p: _LIBC.free(p),
    "hostRegister": None, "hostUnregister": None,
    "memcpy": lambda d, s, n, k: _memcpy(d, s, n, k),
    "memcpyAsync": lambda d, s, n, k, st: _memcpy(d, s, n, k, st),
    "memset": None, "memsetAsync": lambda p, v, n, s: _record_launch("memset"),
    "streamCreate": _DEV.handle, "streamCreateWithFlags": lambda flags: _DEV.handle(),
    "streamCreateWithPriority": lambda flags, p: _DEV.handle(), "streamDestroy": None,
    "streamGetFlags": lambda s: 0, "streamGetPriority": lambda s: 0,
    "streamIsCapturing": lambda s: 0, "streamWaitEvent": None,
    "eventCreate": _DEV.handle, "eventCreateWithFlags": lambda flags: _DEV.handle(),
    "eventDestroy": None, "eventRecord": None, "eventElapsedTime": lambda a, b: 0.0,
    "deviceGetLimit": lambda limit: 0, "deviceSetLimit": None,
    "pointerGetMemoryType": lambda p: 2, "check_status": None,
    "profilerStart": None, "profilerStop": None,
}
_DRIVER = {
    "ctxGetCurrent": lambda: 0x42, "ctxGetDevice": lambda: _DEV.current,
    "get_build_version": lambda: _VERSION,
    "moduleLoadData": lambda image: _DEV.handle(), "moduleLoad": lambda path: _DEV.handle(),
    "moduleUnload": None, "moduleGetFunction": _get_function,
    "moduleGetGlobal": lambda module, name: _DEV.malloc(8),
    "launchKernel": _launch, "launchCooperativeKernel": _launch,
    "funcGetAttribute": lambda attr, f: 1024 if attr == 0 else 0, "funcSetAttribute": None,
    "occupancyMaxActiveBlocksPerMultiprocessor": lambda f, block, shmem: 2,
    "occupancyMaxPotentialBlockSize": lambda f, shmem, limit: (132, 1024),
}

_C = {"int": ctypes.c_int, "CUdevice": ctypes.c_int, "cudaMemcpyKind": ctypes.c_int,
      "unsigned int": ctypes.c_uint, "intptr_t": ctypes.c_ssize_t, "size_t": ctypes.c_size_t,
      "uintmax_t": ctypes.c_uint64, "float": ctypes.c_float, "PyObject *": ctypes.py_object}
_KEEP = []                       # callbacks and capsule names must outlive every caller


def _ctype(decl):
    """The ctypes type of one C declaration from a capsule signature ("int __pyx_skip_dispatch")."""
    decl = decl.replace("__pyx_skip_dispatch", "").replace("*__pyx_optional_args", "*").strip()
    if decl in _C:
        return _C[decl]
    if decl.startswith("struct __pyx_obj_"):
        return ctypes.py_object          # a cdef class instance is a PyObject *
    if decl.startswith("struct ") and decl.endswith("*"):
        return ctypes.c_void_p
    return None                          # a struct by value: not simulated


def _capsule(signature, fn, entry):
    """A PyCapsule named ``signature`` that points at a ctypes callback running ``fn``."""
    ret, args = signature.split("(", 1)
    ret = ret.strip()
    args = [a for a in args[:-1].split(", ") if a and a != "void"]
    restype = _ctype(ret)
    argtypes = [_ctype(a) for a in args]
    if None in argtypes or (restype is None and ret != "void"):
        return None
    n_real = sum(1 for a in args if "__pyx_skip_dispatch" not in a and "__pyx_optional" not in a)

    def callback(*a):
        try:
            value = fn(*a[:n_real])
        except Exception as exc:         # a callback cannot raise into Cython: record it
            LOG.unsupported.append((entry, f"{type(exc).__name__}: {exc}"))
            value = None
        if restype is ctypes.py_object:
            return value
        return 0 if value is None else value

    c_fn = ctypes.CFUNCTYPE(restype, *argtypes)(callback)
    name = signature.encode()
    new = ctypes.pythonapi.PyCapsule_New
    new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    _KEEP.extend([c_fn, name])
    return new(ctypes.cast(c_fn, ctypes.c_void_p), name, None)


def _patch(module, table):
    capi = module.__pyx_capi__
    name_of = ctypes.pythonapi.PyCapsule_GetName
    name_of.restype, name_of.argtypes = ctypes.c_char_p, [ctypes.py_object]
    for entry, capsule in list(capi.items()):
        signature = name_of(capsule).decode()
        if "(" not in signature:
            continue                      # a module-level variable (an enum value), kept
        if entry in table:
            fn = table[entry] or (lambda *a: None)
        else:
            fn = (lambda e: lambda *a: LOG.unsupported.append((e, repr(a))))(entry)
        replacement = _capsule(signature, fn, entry)
        if replacement is None:
            continue                      # returns a struct by value; CuPy's step never calls it
        capi[entry] = replacement
        setattr(module, entry, (lambda e, f: lambda *a: f(*a))(entry, fn))


#: cuBLAS bindings minirattn calls itself, and their argument counts in CuPy 14.2
_ARITY = {"sgemmStridedBatched": 18, "dgemmStridedBatched": 18}


class _Cublas(types.ModuleType):
    """``cupy_backends.cuda.libs.cublas``: constants are small ints, every function records a call
    and returns a handle (``create``) or None."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name.isupper() or name[:1].isupper():
            value = abs(hash(name)) % 97
        else:
            def value(*args, _name=name):
                if _name in _ARITY and len(args) != _ARITY[_name]:
                    LOG.unsupported.append((_name, f"{len(args)} arguments, CuPy's binding "
                                                   f"takes {_ARITY[_name]}"))
                LOG.cublas[_name] += 1
                return _DEV.handle() if _name == "create" else (0 if _name.startswith("get") else None)
        setattr(self, name, value)
        return value


def install():
    """Give the CuPy about to be imported a simulated sm_90 device; returns :data:`LOG`."""
    if "cupy" in sys.modules:
        raise RuntimeError("install() must run before cupy is imported")
    os.environ["CUPY_ACCELERATORS"] = ""
    import nvidia.cuda_nvrtc
    import nvidia.cuda_runtime
    os.environ.setdefault("CUDA_PATH", list(nvidia.cuda_runtime.__path__)[0])
    lib = os.path.join(list(nvidia.cuda_nvrtc.__path__)[0], "lib")
    for so in sorted(os.listdir(lib)):
        if so.startswith(("libnvrtc.so", "libnvrtc-builtins.so")):
            ctypes.CDLL(os.path.join(lib, so), mode=ctypes.RTLD_GLOBAL)
    from cupy_backends.cuda.api import driver, runtime
    _patch(runtime, _RUNTIME)
    _patch(driver, _DRIVER)
    import cupy_backends.cuda.libs as libs
    libs.cublas = sys.modules["cupy_backends.cuda.libs.cublas"] = _Cublas(
        "cupy_backends.cuda.libs.cublas")
    import cupy
    if not cupy.__version__.startswith(SUPPORTED_CUPY):
        raise RuntimeError(f"the simulated device is written for CuPy {SUPPORTED_CUPY}x, "
                           f"this is CuPy {cupy.__version__}")
    return LOG
