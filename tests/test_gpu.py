"""NumPy vs CuPy parity, forward and backward. Marked `gpu`: skipped without CuPy and a device."""
import numpy as np
import pytest

from minirattn import backend, functional as F

pytestmark = pytest.mark.gpu

CASES = {
    "conv3x3": (lambda x: F.conv2d_forward(x, x[:4, :3, :3, :3].copy(), None, 1, 1), F.conv2d_backward),
    "conv1x1s2": (lambda x: F.conv2d_forward(x, x[:4, :3, :1, :1].copy(), None, 2, 0), F.conv2d_backward),
    "maxpool": (lambda x: F.maxpool2d_forward(x, 3, 2, 1), F.maxpool2d_backward),
    "bilinear": (lambda x: F.bilinear_forward(x, (13, 16)), F.bilinear_backward),
    "f1": (F.f1_mixed_forward, F.f1_mixed_backward),
    "f2": (F.f2_channel_forward, F.f2_channel_backward),
    "f3": (F.f3_spatial_forward, F.f3_spatial_backward),
    "relu": (F.relu_forward, F.relu_backward),
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
