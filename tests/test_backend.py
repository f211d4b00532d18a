"""The backend: the only numpy/cupy/scipy/numba importer, clear errors when CuPy is missing."""
import ast
import importlib.util
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minirattn import backend

PKG = pathlib.Path(__file__).resolve().parents[1] / "minirattn"


def test_only_backend_imports_numpy_cupy_scipy_or_numba():
    offenders = []
    for path in PKG.rglob("*.py"):
        if path.name == "backend.py" and path.parent == PKG:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(PKG)}: {n}" for n in names
                          if n.split(".")[0] in ("numpy", "cupy", "cupyx", "scipy", "numba")]
    assert offenders == [], f"only minirattn/backend.py may import numpy/cupy/scipy/numba: {offenders}"


def test_import_minirattn_never_touches_cuda():
    code = "import sys, minirattn; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_get_and_xp_of():
    assert backend.get("numpy") is np
    assert backend.xp_of(np.zeros(2), None, 3.0) is np
    with pytest.raises(ValueError, match="unknown backend 'torch'"):
        backend.get("torch")


def test_cupy_request_without_cupy_or_gpu_is_a_clear_error():
    try:
        import cupy  # noqa: F401
        has_device = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        has_device = False
    if has_device:
        pytest.skip("a GPU is present: the error path cannot be reached here")
    with pytest.raises(backend.BackendError, match="CuPy is not installed|no CUDA device"):
        backend.get("cupy")


def test_pad():
    x = np.arange(4.0).reshape(1, 1, 2, 2)
    p = backend.pad(x, 1, 2, value=-1.0)
    assert p.shape == (1, 1, 4, 6) and p[0, 0, 0, 0] == -1 and p[0, 0, 1, 2] == 0.0
    assert backend.to_device(x, "numpy") is not None and backend.to_numpy(x) is x


def test_fuse_is_the_plain_function_on_numpy():
    """backend.fuse(fn) calls fn(numpy, *args) on NumPy arrays: the same results, in-place updates
    included (on CuPy it is one cupy.fuse kernel: tests/test_standin.py)."""
    def scale_shift(xp, x, a, b):
        return xp.sqrt(x) * a + b

    def add_into(xp, acc, g):
        acc += g
    fused = backend.fuse(scale_shift)
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(fused(x, 2.0, np.ones(3)), np.sqrt(x) * 2.0 + 1.0)
    assert fused.plain is scale_shift and fused.__name__ == "scale_shift"
    acc = np.zeros(3)
    assert backend.fuse(add_into)(acc, np.arange(3.0)) is None
    np.testing.assert_array_equal(acc, [0.0, 1.0, 2.0])


#: The layers of the package, lowest first (docs/architecture.md): a module imports only from its
#: own package or from layers below it, lazily imported names included.
LAYERS = ["backend", "checks", "files", "functional", "nn", "gradcheck", "models", "viz", "data",
          "distributed", "training", "interop", "selfcheck", "experiments", "cli", "__main__",
          "__init__"]


def test_no_import_runs_back_up_the_layers():
    import ast
    import pathlib
    import minirattn
    root = pathlib.Path(minirattn.__file__).parent
    upward = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        me = parts[0].removesuffix(".py")
        assert me in LAYERS, f"{path}: a module the layer list does not know"
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.level):
                continue
            if node.level - 1 < len(parts) - 1:               # within its own package
                continue
            targets = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
            upward += [f"{path.relative_to(root)} imports {t}" for t in targets
                       if t in LAYERS and LAYERS.index(t) > LAYERS.index(me)]
    assert not upward, upward


@pytest.mark.gpu
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5), st.integers(1, 5),
       st.sampled_from(["shared a", "shared b", "both batched", "2-D", "batch of ones",
                        "sliced rows", "sliced batch"]),
       st.booleans(), st.booleans(), st.sampled_from(["float32", "float64"]),
       st.sampled_from([None, "out", "accumulate"]))
def test_matmul_is_numpys_matmul_with_transposes(n, M, K, N, layout, trans_a, trans_b, dtype,
                                                 into):
    """backend.matmul: one strided-batched GEMM on CuPy (the stand-in runs cuBLAS's
    column-major definition on its storage), NumPy's matmul of the transposed operands."""
    rng = np.random.default_rng(n * 1000 + M * 100 + K * 10 + N)
    a_batch, b_batch = {"shared a": ((), (n,)), "shared b": ((n,), ()),
                        "both batched": ((n,), (n,)), "2-D": ((), ()),
                        "batch of ones": ((1,), (n,)), "sliced rows": ((), ()),
                        "sliced batch": ((n,), (n,))}[layout]
    a = rng.standard_normal(a_batch + ((K, M) if trans_a else (M, K))).astype(dtype)
    b = rng.standard_normal(b_batch + ((N, K) if trans_b else (K, N))).astype(dtype)
    if layout.startswith("sliced"):      # views of wider arrays: a row stride above the width
        a = np.concatenate([a, a[..., :1] + 1], axis=-1)[..., :-1]
        b = np.concatenate([b, b], axis=-1)[..., b.shape[-1]:]
    want = np.matmul(a.swapaxes(-1, -2) if trans_a else a, b.swapaxes(-1, -2) if trans_b else b)
    start = rng.standard_normal(want.shape).astype(dtype)
    if into == "accumulate":
        want = want + start
    for name in ("numpy", "cupy"):
        on = {"numpy": lambda v: v, "cupy": lambda v: _sliced_like(v, backend.to_device)}[name]
        out = None if into is None else backend.to_device(start.copy(), name)
        got = backend.matmul(on(a), on(b), trans_a=trans_a, trans_b=trans_b, out=out,
                             accumulate=into == "accumulate")
        assert got.shape == want.shape and got.dtype == want.dtype
        assert out is None or got is out
        np.testing.assert_allclose(backend.to_numpy(got), want, rtol=1e-5, atol=1e-5)


def _sliced_like(v, to_device):
    """``v`` on the device with ``v``'s own strides: a wider array moved, then sliced alike."""
    if v.flags.c_contiguous:
        return to_device(v, "cupy")
    base = v.base
    while base is not None and base.base is not None:
        base = base.base
    whole = to_device(np.ascontiguousarray(base), "cupy")
    offset = (v.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // v.itemsize
    flat = whole.reshape(-1)[offset:]
    return backend.get("cupy").lib.stride_tricks.as_strided(flat, v.shape, v.strides)


def test_use_jit_turns_the_compiled_kernels_off_and_says_what_was_set():
    before = backend.use_jit(False)
    try:
        assert backend.jit_available() is False
        assert backend.use_jit(True) is False
        assert backend.jit_available() == (importlib.util.find_spec("numba") is not None)
    finally:
        backend.use_jit(before)


def test_minirattn_jit_0_in_the_environment_turns_them_off_for_a_run():
    code = ("from minirattn import backend, functional as F; import numpy as np; "
            "print(backend.jit_available(), F.batchnorm2d_forward(np.ones((2, 1, 1, 2)), "
            "np.ones(1), np.zeros(1))[1].method)")
    env = dict(os.environ, MINIRATTN_JIT="0")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    assert out.stdout.split() == ["False", "in_place"]


def test_every_jit_kernel_is_registered_with_its_plain_python():
    from minirattn.functional import batchnorm_compiled   # noqa: F401 (registers its kernels)
    names = {n for n in backend.JITTED if n.startswith("minirattn.functional.batchnorm_compiled.")}
    assert {n.rsplit(".", 1)[1] for n in names} == {"_centred_squares", "_normalize",
                                                      "_gradient_sums", "_input_grad"}
    for n in names:
        kernel = backend.JITTED[n]
        assert callable(kernel.plain) and kernel.plain.__name__ == kernel.__name__
