"""Run minirattn on real CuPy over the simulated device; print what CuPy did as one JSON object.

    python tests/cupy_sim/exercise.py [--step ARCH BATCH] [--planted FILE]

Run in a subprocess (the simulation must be installed before CuPy is imported, and the rest of
the suite keeps the NumPy-backed stand-in). It does, under real CuPy 14.2 with every kernel
compiled by NVRTC into a fresh cache:

* every ``backend.fuse`` function with the arguments the package really passes: the GPU parity
  cases of tests/test_gpu.py in float32 and float64, batch norm synchronized over two simulated
  ranks (0-d device counts), and a training step of a small network;
* with ``--step``, two training steps of ``ARCH`` (full width) at batch ``BATCH``, the second
  counted: launches by kernel, cuBLAS calls, synchronisations and copies to the host;
* with ``--planted FILE``, the fused functions that FILE defines, through its ``exercise(cupy)``.

:func:`problems` reads the report and names every defect: a fused function that no scenario
reached, one CuPy could not trace or compile, one that fell back to CuPy's new fusion, one whose
results differ in dtype or shape from the NumPy path, one whose kernel computes in float16, int8
or float64 where its arrays are float32 (or in float16 or int8 where they are float64).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
ROOT = os.path.dirname(TESTS)


def _describe(value):
    """A JSON-able description of an argument or result: kind, shape, dtype (and scalars' value)."""
    import numpy
    if hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, numpy.generic):
        return ["array", list(value.shape), str(value.dtype)]
    if isinstance(value, numpy.generic):
        return ["numpy scalar", str(value.dtype), value.item()]
    if isinstance(value, (bool, int, float)):
        return ["scalar", type(value).__name__, value]
    if value is None:
        return None
    if isinstance(value, tuple):
        return ["tuple", [_describe(v) for v in value]]
    return ["other", type(value).__name__]


def _host_twin(desc):
    """A NumPy argument of the described kind (ones: values do not matter, types do)."""
    import numpy
    if desc[0] == "array":
        return numpy.ones(desc[1], dtype=desc[2])
    if desc[0] == "numpy scalar":
        return numpy.dtype(desc[1]).type(desc[2])
    return desc[2]


def _wrap_fused(calls, failures):
    """Record every call of every fused function, by replacing it in each module that holds it."""
    from minirattn import backend

    def wrapper(name, f):
        def recorded(*args):
            try:
                out = f(*args)
            except Exception as exc:
                failures.setdefault(name, f"{type(exc).__name__}: {exc}")
                raise
            key = json.dumps([_describe(a) for a in args])
            calls.setdefault(name, {})[key] = _describe(out)
            return out
        return recorded

    originals = {id(f): (name, f) for name, f in backend.FUSED.items()}
    for module in list(sys.modules.values()):
        if not getattr(module, "__name__", "").startswith(("minirattn", "planted")):
            continue
        for attr, value in list(vars(module).items()):
            if id(value) in originals:
                setattr(module, attr, wrapper(*originals[id(value)]))


def _import_everything():
    import importlib
    import pkgutil
    import minirattn
    for info in pkgutil.walk_packages(minirattn.__path__, "minirattn."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)


def _scenarios(cupy):
    """The fused functions' real arguments: the parity cases, synchronized batch norm, a step."""
    import numpy as np
    from test_gpu import CASES
    from minirattn import backend, functional as F
    from minirattn.functional._reduce import channel_dot
    from minirattn.models import build
    from minirattn.training import SGD, train_step
    rng = np.random.default_rng(0)
    for dtype in ("float32", "float64"):
        x = cupy.asarray(rng.standard_normal((4, 3, 8, 8)).astype(dtype))
        for name, (fwd, bwd) in CASES.items():
            y, cache = fwd(x)
            bwd(cupy.ones_like(y), cache)
        g, b = cupy.ones(3, dtype), cupy.zeros(3, dtype)
        for relu in (False, True):          # two ranks: every sum doubled, counts 0-d arrays
            for shift in (None, cupy.zeros(3, dtype)):       # two passes, one pass
                rm, rv = cupy.zeros(3, dtype), cupy.ones(3, dtype)
                y, cache = F.batchnorm2d_forward(x, g, b, *((rm, rv) if relu else ()),
                                                 reduce=lambda a: a + a, relu=relu, shift=shift)
                F.batchnorm2d_running_stats(cache, rm, rv)
                F.batchnorm2d_backward(cupy.ones_like(y), cache)
        channel_dot(x, x)
        for learning in ("arl", "nal"):
            h, cache = F.attention_residual_forward(x, x + 1, learning)
            F.attention_residual_backward(h, cache)
    net = build("attention56", num_classes=10, seed=0, widths=(8, 8, 16), stem_width=4,
                final_width=16, final_units=1).to("cupy")
    xs = cupy.asarray(rng.standard_normal((4, 3, 32, 32)).astype(np.float32))
    train_step(net, SGD(net, lr=0.1), xs, cupy.asarray(np.array([0, 1, 2, 3])), 0.1)
    backend.synchronize()


def _step(cupy, log, arch, batch):
    """Two training steps of the full-width ``arch``; what the second asked of the device."""
    import numpy as np
    from minirattn.models import build
    from minirattn.training import SGD, train_step
    net = build(arch, num_classes=10, seed=0).to("cupy")
    opt = SGD(net, lr=0.1)
    rng = np.random.default_rng(0)
    x_host = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y_host = rng.integers(0, 10, batch)
    train_step(net, opt, cupy.asarray(x_host), cupy.asarray(y_host), 0.1)
    x, y = cupy.asarray(x_host), cupy.asarray(y_host)
    log.reset()
    log.record_sites = True
    train_step(net, opt, x, y, 0.1)
    log.record_sites = False
    summary = log.summary()
    by_site = {}
    for (kernel, site), n in log.sites.items():
        by_site[f"{site} {kernel}"] = n
    summary["by_site"] = by_site
    summary["n_launches"], summary["n_cublas"] = log.n_launches, log.n_cublas
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--step", nargs=2, metavar=("ARCH", "BATCH"))
    p.add_argument("--planted", help="a Python file of fused functions with exercise(cupy)")
    p.add_argument("--no-scenarios", action="store_true", help="only --step / --planted")
    args = p.parse_args(argv)
    sys.path[:0] = [ROOT, TESTS]
    os.environ["CUPY_CACHE_DIR"] = tempfile.mkdtemp(prefix="cupy-sim-cache-")
    import cupy_sim
    log = cupy_sim.install()
    import cupy
    from cupy.cuda import compiler
    sources = []
    compile_ = compiler._compile_using_nvrtc_no_warning

    def compile_and_keep(source, *a, **k):
        sources.append(source)
        return compile_(source, *a, **k)
    compiler._compile_using_nvrtc_no_warning = compile_and_keep
    _import_everything()
    from minirattn import backend
    planted = None
    if args.planted:
        import importlib.util
        spec = importlib.util.spec_from_file_location("planted", args.planted)
        planted = importlib.util.module_from_spec(spec)
        sys.modules["planted"] = planted
        spec.loader.exec_module(planted)
    calls, failures = {}, {}
    _wrap_fused(calls, failures)
    report = {"cupy": cupy.__version__, "errors": [], "syncs": [], "to_host": []}
    try:
        if not args.no_scenarios:
            _scenarios(cupy)
        if planted is not None:
            planted.exercise(cupy)
        report["syncs"], report["to_host"] = list(log.syncs), list(log.to_host)
        if args.step:
            report["step"] = _step(cupy, log, args.step[0], int(args.step[1]))
    except Exception:
        report["errors"].append(traceback.format_exc(limit=8))
    report["fused"] = sorted(backend.FUSED)
    report["calls"] = calls
    report["failures"] = failures
    report["new_fusion"] = sorted(n for n, f in backend.FUSED.items()
                                  if any(getattr(k, "new_fusion", None) is not None
                                         for k in f.kernels.values()))
    report["launched"] = dict(log.ever)
    report["sources"] = sources
    report["unsupported"] = log.unsupported
    report["host_results"] = _host_results(calls)
    sys.stdout.write("\nREPORT " + json.dumps(report) + "\n")
    sys.stdout.flush()
    os._exit(0)                  # CuPy's teardown would call into the simulated device


def _host_results(calls):
    """The NumPy path's results for every recorded call, described as the device's were."""
    import numpy as np
    from minirattn import backend
    out = {}
    with np.errstate(all="ignore"):
        for name, by_args in calls.items():
            plain = backend.FUSED[name].plain
            for key in by_args:
                args = [_host_twin(d) for d in json.loads(key)]
                try:
                    out.setdefault(name, {})[key] = _describe(plain(np, *args))
                except Exception as exc:
                    out.setdefault(name, {})[key] = ["error", f"{type(exc).__name__}: {exc}"]
    return out


# ---------------------------------------------------------------------------- reading a report
_BANNED = {"float": ("double", "float16", "signed char"),
           "double": ("float16", "signed char")}


def _kernel_sources(report, name):
    short = name.rsplit(".", 1)[1]
    pattern = re.compile(r"__global__\s+void\s+" + re.escape(short) + r"\s*\(")
    return [s for s in report["sources"] if pattern.search(s)]


_CONSTANT = re.compile(r"const double v\d+ = [-+0-9.e]+;$"   # a literal, cast where it is used
                       r"|__device__ \w+ _(pre|post)_map\(")  # a reduction's scalar parameters


def _computes_in(source):
    """(widest float type of the kernel's arrays, the code that computes: the helper functions
    and the kernel's body, without #include lines and without the parameter list, where CuPy
    declares Python scalars double and casts them at once to the arrays' type, and without the
    double constants that hold a literal such as ``1.0``, which are cast where they are used, and
    a reduction's map functions' parameter lists, where the same holds)."""
    head, _, kernel = source.partition("__global__")
    params, _, body = kernel.partition(") {")
    arrays = re.findall(r"CArray<\s*([a-z ]+?)\s*,", params)
    kind = "double" if "double" in arrays else ("float" if "float" in arrays else None)
    code = "\n".join(line for line in (head + body).splitlines()
                     if not line.lstrip().startswith("#include")
                     and not _CONSTANT.match(line.strip()))
    return kind, code


def problems(report, names=None):
    """Every defect the report shows, one line each (an empty list: none)."""
    out = [f"error while running: {e}" for e in report["errors"]]
    out += [f"{u[0]}: CUDA call the simulation does not know ({u[1]})"
            for u in report["unsupported"]]
    names = report["fused"] if names is None else names
    for name in names:
        if name in report["failures"]:
            out.append(f"{name}: CuPy refused it: {report['failures'][name]}")
            continue
        if name not in report["calls"]:
            out.append(f"{name}: no scenario calls this fused function (add one to "
                       f"tests/cupy_sim/exercise.py)")
            continue
        if name in report["new_fusion"]:
            out.append(f"{name}: CuPy fell back to its experimental new fusion")
        short = name.rsplit(".", 1)[1]
        if not report["launched"].get(short):
            out.append(f"{name}: no kernel named {short} was launched")
        sources = _kernel_sources(report, name)
        if not sources:
            out.append(f"{name}: no kernel named {short} was compiled by NVRTC")
        for source in sources:
            kind, body = _computes_in(source)
            for banned in _BANNED.get(kind, ()):
                if re.search(r"\b" + banned + r"\b", body):
                    out.append(f"{name}: its {kind} kernel computes in {banned}")
        for key, device in report["calls"][name].items():
            host = report["host_results"][name][key]
            if _strip_values(device) != _strip_values(host):
                out.append(f"{name}{tuple(json.loads(key))}: CuPy returns {device}, "
                           f"NumPy {host}")
    return sorted(set(out))


def _strip_values(desc):
    """Kinds, shapes and dtypes only (a scalar's value is not a type)."""
    if desc is None:
        return None
    if desc[0] == "tuple":
        return ["tuple", [_strip_values(d) for d in desc[1]]]
    return desc[:3] if desc[0] == "array" else desc[:2]


def run(*args, timeout=600):
    """Run this script in a fresh interpreter; its report (dict), or RuntimeError with its output."""
    import subprocess
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("REPORT "):
            return json.loads(line[len("REPORT "):])
    raise RuntimeError(f"the simulated-device run gave no report (exit {proc.returncode}):\n"
                       f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


if __name__ == "__main__":
    main()
