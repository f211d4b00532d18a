"""Value generators that keep off kinks, and the naive loop oracles (CS231n's *_naive)."""
import numpy as np


def away_from_zero(rng, shape, low=0.1):
    """Values with |x| >= low and random signs (no ReLU kinks, no zero norms)."""
    mag = rng.uniform(low, 2.0, size=shape)
    return mag * rng.choice([-1.0, 1.0], size=shape)


def shuffled_linspace(rng, shape, gap=1e-2):
    """Distinct values, well separated (>= gap apart), shuffled: no max-pool ties."""
    n = int(np.prod(shape))
    v = np.arange(n, dtype=np.float64) * gap - n * gap / 2
    rng.shuffle(v)
    return v.reshape(shape)


def noncontiguous(a):
    """The same values in a non-contiguous view (every other element of a bigger buffer)."""
    b = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    b[..., ::2] = a
    return b[..., ::2]


def conv2d_naive(x, w, b, stride, padding):
    """Four nested loops; stride and padding an int or a (rows, columns) pair."""
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = [(v, v) if isinstance(v, int) else tuple(v) for v in (stride, padding)]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    Ho = (H + 2 * ph - kh) // sh + 1
    Wo = (W + 2 * pw - kw) // sw + 1
    y = np.zeros((N, F, Ho, Wo))
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    win = xp[n, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    y[n, f, i, j] = (win * w[f]).sum() + (b[f] if b is not None else 0.0)
    return y


def grouped_conv2d_naive(x, w, b, stride, padding, groups):
    """Grouped convolution from its definition: filter f of group g = f // (F / G) sees only the
    input channels of group g; each group is the four-loop convolution of its slices."""
    C, F = x.shape[1], w.shape[0]
    cg, fg = C // groups, F // groups
    return np.concatenate([
        conv2d_naive(x[:, g * cg:(g + 1) * cg], w[g * fg:(g + 1) * fg],
                     None if b is None else b[g * fg:(g + 1) * fg], stride, padding)
        for g in range(groups)], axis=1)


def maxpool_naive(x, k, s, p):
    N, C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    y = np.zeros((N, C, Ho, Wo))
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    y[n, c, i, j] = xp[n, c, i * s:i * s + k, j * s:j * s + k].max()
    return y


def maxpool_backward_naive(x, dy, k, s, p):
    """Each dy[n, c, i, j] added to the first maximum of its window in row-major order."""
    N, C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    dxp = np.zeros_like(xp)
    for n in range(N):
        for c in range(C):
            for i in range(dy.shape[2]):
                for j in range(dy.shape[3]):
                    window = xp[n, c, i * s:i * s + k, j * s:j * s + k]
                    u, v = np.unravel_index(np.argmax(window), window.shape)  # argmax: first maximum
                    dxp[n, c, i * s + u, j * s + v] += dy[n, c, i, j]
    return dxp[:, :, p:p + H, p:p + W]


def bilinear_taps(H, W, Ho, Wo):
    """align_corners=True from the definition: for every output pixel (i, j), its four input
    pixels and their weights [((y, x), weight), ...]."""
    for i in range(Ho):
        sy = 0.0 if Ho == 1 else i * (H - 1) / (Ho - 1)
        y0 = min(int(np.floor(sy)), max(H - 2, 0))
        y1 = min(y0 + 1, H - 1)
        fy = sy - y0
        for j in range(Wo):
            sx = 0.0 if Wo == 1 else j * (W - 1) / (Wo - 1)
            x0 = min(int(np.floor(sx)), max(W - 2, 0))
            x1 = min(x0 + 1, W - 1)
            fx = sx - x0
            yield (i, j), [((y0, x0), (1 - fy) * (1 - fx)), ((y0, x1), (1 - fy) * fx),
                           ((y1, x0), fy * (1 - fx)), ((y1, x1), fy * fx)]


def bilinear_naive(x, Ho, Wo):
    """Bilinear upsampling pixel by pixel: each output is the weighted sum of its four taps."""
    N, C, H, W = x.shape
    y = np.zeros((N, C, Ho, Wo))
    for (i, j), taps in bilinear_taps(H, W, Ho, Wo):
        for (a, b), weight in taps:
            y[:, :, i, j] += weight * x[:, :, a, b]
    return y


def bilinear_backward_naive(dy, H, W):
    """The adjoint of bilinear_naive, pixel by pixel: each output's gradient is scattered to its
    four taps with the same weights."""
    N, C, Ho, Wo = dy.shape
    dx = np.zeros((N, C, H, W))
    for (i, j), taps in bilinear_taps(H, W, Ho, Wo):
        for (a, b), weight in taps:
            dx[:, :, a, b] += weight * dy[:, :, i, j]
    return dx


def adjoint_gap(forward, x, y_like, rng):
    """|<A x, u> - <x, A^T u>| / scale for a linear op given as (forward, backward) on x."""
    fwd, bwd = forward
    ax, cache = fwd(x)
    u = rng.standard_normal(ax.shape)
    atu = bwd(u, cache)
    lhs, rhs = float((ax * u).sum()), float((x * atu).sum())
    return abs(lhs - rhs) / max(abs(lhs), abs(rhs), 1e-300)


#: A narrow network for tests that train or build whole models (same layout, far fewer channels).
TINY_NET = dict(widths=(8, 8, 16), stem_width=4, final_width=16, final_units=1)

#: A training run of seconds: that network on 64 generated shapes images.
TINY_RUN = dict(arch="attention56", dataset="shapes", n_train=64, n_test=32, batch_size=8,
                progress=False, model_kwargs=TINY_NET)


def need(module: str, extra: str):
    """``module`` imported, or the test file skipped saying which extra brings it; where
    MINIRATTN_REQUIRE_INTEROP=1 (CI installs the extras) a missing one fails instead."""
    import importlib
    import os
    import pytest
    try:
        return importlib.import_module(module)
    except ImportError:
        reason = f"needs {module}: pip install -e '.[{extra}]'"
        if os.environ.get("MINIRATTN_REQUIRE_INTEROP") == "1":
            raise RuntimeError(f"MINIRATTN_REQUIRE_INTEROP=1 but {reason}") from None
        pytest.skip(reason, allow_module_level=True)



# ---- networks of every kind, narrow (the interop tests) -----------------------------------------
#: Every (mask activation, learning rule, mask) of the paper's ablations.
ABLATIONS = [(a, lr, m) for a in ("mixed", "channel", "spatial") for lr in ("arl", "nal")
             for m in ("soft", "local")]


def narrow(name):
    """Overrides that make the registered network ``name`` build and run in about a second."""
    from minirattn.models import REGISTRY
    if REGISTRY[name][0].stem == "cifar":
        return dict(widths=(8, 8, 16), stem_width=4, final_width=16)
    return dict(widths=(32, 32, 32), stem_width=8, final_width=32, input_size=64, cardinality=4)


def with_running_stats(model, seed=0):
    """``model`` with the running statistics of one training-mode batch (batch norm's momentum
    set to 1 for it), as a trained network has: evaluation mode then differs from the identity
    BN of a fresh network, and the activations stay normalised however deep it is."""
    from minirattn import nn
    layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in layers]
    for m in layers:
        m.momentum = 1.0
    with model.mode(True):
        model(network_input(model, n=16, seed=seed, dtype=str(model.dtype)))
    for m, momentum in zip(layers, saved):
        m.momentum = momentum
    return model


def network_input(model, n=3, seed=1, dtype="float32"):
    """A random batch of the network's input shape."""
    s = model.spec
    return np.random.default_rng(seed).standard_normal(
        (n, s.in_channels, s.input_size, s.input_size)).astype(dtype)
