"""NumPy vs CuPy parity, forward and backward. Marked `gpu`: skipped without CuPy and a device."""
import numpy as np
import pytest

from minirattn import backend, functional as F

pytestmark = pytest.mark.gpu

def _bn_vectors(x):
    """gamma, beta, running mean and variance (C,) on x's device, from x itself."""
    return x[0, :, 0, 0] + 1.5, x[1, :, 0, 0].copy(), x[2, :, 0, 0].copy(), x[3, :, 0, 0] ** 2 + 0.5


CASES = {
    "conv3x3": (lambda x: F.conv2d_forward(x, x[:4, :3, :3, :3].copy(), None, 1, 1), F.conv2d_backward),
    "conv3x3s2": (lambda x: F.conv2d_forward(x, x[:4, :3, :3, :3].copy(), None, 2, 1), F.conv2d_backward),
    "conv1x1s2": (lambda x: F.conv2d_forward(x, x[:4, :3, :1, :1].copy(), None, 2, 0), F.conv2d_backward),
    "maxpool": (lambda x: F.maxpool2d_forward(x, 3, 2, 1), F.maxpool2d_backward),
    "maxpool_textbook": (lambda x: F.maxpool2d_forward(x, 3, 2, 1, method="textbook"),
                         F.maxpool2d_backward),
    "bilinear": (lambda x: F.bilinear_forward(x, (13, 16)), F.bilinear_backward),
    "f1": (F.f1_mixed_forward, F.f1_mixed_backward),
    "f2": (F.f2_channel_forward, F.f2_channel_backward),
    "f3": (F.f3_spatial_forward, F.f3_spatial_backward),
    "relu": (F.relu_forward, F.relu_backward),
    "relu_inplace": (lambda x: F.relu_forward(x.copy(), inplace=True),
                     lambda dy, c: F.relu_backward(dy.copy(), c, inplace=True)),
    "batchnorm": (lambda x: F.batchnorm2d_forward(x, *_bn_vectors(x)[:2]), F.batchnorm2d_backward),
    "bn_relu": (lambda x: F.batchnorm2d_forward(x, *_bn_vectors(x)[:2], relu=True),
                F.batchnorm2d_backward),
    "bn_eval": (lambda x: F.batchnorm2d_forward(x, *_bn_vectors(x), training=False),
                F.batchnorm2d_backward),
    "bn_relu_eval": (lambda x: F.batchnorm2d_forward(x, *_bn_vectors(x), training=False, relu=True),
                     F.batchnorm2d_backward),
    "bn_textbook": (lambda x: F.batchnorm2d_forward(x, *_bn_vectors(x)[:2], relu=True,
                                                    method="textbook"), F.batchnorm2d_backward),
    "bn_eval_textbook": (lambda x: F.batchnorm2d_forward(x, *_bn_vectors(x), training=False,
                                                         method="textbook"),
                         F.batchnorm2d_backward),
    "gap": (F.global_avgpool_forward, F.global_avgpool_backward),
}


@pytest.mark.parametrize("name", list(CASES))
def test_numpy_cupy_parity(name):
    fwd, bwd = CASES[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 8, 8))
    y, c = fwd(x)
    dy = rng.standard_normal(y.shape)
    g = bwd(dy, c)
    xg = backend.to_device(x, "cupy")
    yg, cg = fwd(xg)
    gg = bwd(backend.to_device(dy, "cupy"), cg)
    np.testing.assert_allclose(backend.to_numpy(yg), y, rtol=1e-10, atol=1e-12)
    g, gg = (g if isinstance(g, tuple) else (g,)), (gg if isinstance(gg, tuple) else (gg,))
    for a, b in zip(g, gg):
        if a is not None:
            np.testing.assert_allclose(backend.to_numpy(b), a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("unit", ["preact", "resnext", "inception"])
def test_tiny_network_numpy_cupy_parity(unit):
    from minirattn import functional as F
    from minirattn.models import build
    kw = dict(widths=(8, 8, 16), stem_width=4, final_width=16, final_units=1, input_size=16,
              unit=unit, cardinality=2)
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16))
    y = np.array([0, 1, 2, 1])
    grads = {}
    for name in ("numpy", "cupy"):
        net = build("attention56", num_classes=3, dtype="float64", seed=0, **kw).to(name)
        logits = net(backend.to_device(x, name))
        loss, d = F.softmax_cross_entropy(logits, backend.to_device(y, name))
        net.backward(d)
        grads[name] = (float(loss), {k: backend.to_numpy(g) for k, _, g in net.named_parameters()})
    assert abs(grads["numpy"][0] - grads["cupy"][0]) < 1e-10
    for k, g in grads["numpy"][1].items():
        np.testing.assert_allclose(grads["cupy"][1][k], g, rtol=1e-8, atol=1e-10, err_msg=k)


def test_a_training_run_on_cupy(tmp_path):
    from minirattn.training import train_cifar
    r = train_cifar(arch="attention56", dataset="shapes", n_train=64, n_test=32, batch_size=16, iterations=4,
                    eval_every=2, backend="cupy", checkpoint_dir=str(tmp_path), progress=False,
                    model_kwargs=dict(widths=(8, 8, 16), stem_width=4, final_width=16, final_units=1))
    assert r.model.backend == "cupy" and np.isfinite(r.history[-1]["loss"])


def test_bench_gpu_half_checks_the_answer_and_times_both():
    """benchmarks/bench.py's GPU half on a small network: minirattn on CuPy computes the same loss
    and gradients as the PyTorch twin on CUDA (float64 1e-8, asserted inside), and both steps time."""
    import os
    import sys
    torch = pytest.importorskip("torch", reason="the benchmark's twin needs PyTorch (pip install -e '.[bench]')")
    if not torch.cuda.is_available():
        pytest.skip(f"PyTorch {torch.__version__} has no CUDA device (a CPU build?)")
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    import bench
    assert bench.gpu_unavailable() is None
    (arch, err, t_ours, t_torch), = bench.run_gpu(["attention56_small"], batch=8, repeats=1)
    assert arch == "attention56_small" and err["grad64"] < 1e-8 and t_ours > 0 and t_torch > 0


def test_cupy_chunks_by_its_own_column_budget():
    """On CuPy the batch is chunked by MAX_COL_BYTES_CUPY (few large chunks), not NumPy's cache-sized bound."""
    from minirattn.functional import _columns
    per_sample = _columns.MAX_COL_BYTES // 2
    assert len(_columns.chunks(64, per_sample, np.zeros(1))) == 32
    assert len(_columns.chunks(64, per_sample, backend.to_device(np.zeros(1), "cupy"))) == 1


@pytest.mark.parametrize("stride", [1, 2])
def test_chunked_phase_plane_conv_numpy_cupy_parity(stride):
    """The phase-plane path in small chunks (samples side by side, writes through reshaped views of
    slices) gives the same output, dx and dw on CuPy as on NumPy."""
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((7, 3, 9, 8)), rng.standard_normal((4, 3, 3, 3))
    kw = dict(method="planes", max_col_bytes=3000)
    y, c = F.conv2d_forward(x, w, None, stride, 1, **kw)
    dy = rng.standard_normal(y.shape)
    g = F.conv2d_backward(dy, c)
    yg, cg = F.conv2d_forward(backend.to_device(x, "cupy"), backend.to_device(w, "cupy"), None, stride, 1, **kw)
    gg = F.conv2d_backward(backend.to_device(dy, "cupy"), cg)
    assert cg.method == "planes" and len(cg.saved) > 2      # several chunks
    np.testing.assert_allclose(backend.to_numpy(yg), y, rtol=1e-10, atol=1e-12)
    assert len(g) == len(gg) == 2
    for a, b in zip(g, gg):
        np.testing.assert_allclose(backend.to_numpy(b), a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["im2col", "planes", "matmul"])
def test_grouped_conv_numpy_cupy_parity(method):
    """Grouped convolution on every path: the same output, dx and dw on CuPy as on NumPy."""
    rng = np.random.default_rng(2)
    k, pad = (1, 0) if method == "matmul" else (3, 1)
    x, w = rng.standard_normal((3, 6, 8, 7)), rng.standard_normal((4, 3, k, k))
    y, c = F.conv2d_forward(x, w, None, 2, pad, groups=2, method=method)
    dy = rng.standard_normal(y.shape)
    g = F.conv2d_backward(dy, c)
    yg, cg = F.conv2d_forward(backend.to_device(x, "cupy"), backend.to_device(w, "cupy"), None, 2,
                              pad, groups=2, method=method)
    gg = F.conv2d_backward(backend.to_device(dy, "cupy"), cg)
    np.testing.assert_allclose(backend.to_numpy(yg), y, rtol=1e-10, atol=1e-12)
    for a, b in zip(g, gg):
        np.testing.assert_allclose(backend.to_numpy(b), a, rtol=1e-10, atol=1e-12)


#: What a GPU machine with nothing installed holds besides CuPy and PyTorch (the GPU check's needs).
BARE_PACKAGES = ("numpy", "scipy", "pytest", "hypothesis", "matplotlib", "tqdm", "pillow")


@pytest.mark.slow
def test_the_gpu_check_runs_from_the_checkout_with_nothing_installed(pytestconfig, tmp_path):
    """`PYTHONPATH=. python3 benchmarks/gpu_check.py --dry-run` in a venv holding only NumPy,
    SciPy, pytest, hypothesis, matplotlib, tqdm and Pillow, not the project (as on a lent GPU
    machine that reaches no package registry)."""
    import pathlib
    import subprocess
    import sys
    root = pathlib.Path(__file__).parent.parent
    venv = pathlib.Path(pytestconfig.cache.mkdir("bare-venv")) / "v1"
    python = venv / "bin" / "python"
    if not (venv / "complete").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                       timeout=300)
        out = subprocess.run([str(python), "-m", "pip", "install", "-q", *BARE_PACKAGES],
                             capture_output=True, text=True, timeout=1800)
        assert out.returncode == 0, out.stderr[-2000:]
        (venv / "complete").write_text("")
    bare = subprocess.run([str(python), "-c", "import minirattn"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert bare.returncode != 0 and "No module named 'minirattn'" in bare.stderr   # not installed
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = "."
    done = subprocess.run([str(python), "benchmarks/gpu_check.py", "--dry-run"], cwd=root,
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")][2:]
    assert [r.split(" | ")[1] for r in rows] == ["ok", "ok", "skipped"], done.stdout
