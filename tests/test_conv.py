"""conv2d: forward against the naive loop, backward against finite differences, adjoint, errors."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minirattn import functional as F, gradcheck
from minirattn.functional import _columns, conv as conv_mod, conv_planes
from helpers import conv2d_naive, grouped_conv2d_naive, noncontiguous


@st.composite
def conv_case(draw):
    k = draw(st.sampled_from([1, 2, 3, 5]))
    stride = draw(st.integers(1, 3))
    padding = draw(st.integers(0, k // 2 + 1))
    H = draw(st.integers(max(1, k - 2 * padding), 7))
    W = draw(st.integers(max(1, k - 2 * padding), 7))
    N, C, Fo = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    return N, C, Fo, H, W, k, stride, padding, bias, seed


def make(case):
    N, C, Fo, H, W, k, stride, padding, bias, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((Fo, C, k, k))
    b = rng.standard_normal(Fo) if bias else None
    return x, w, b, stride, padding


def fast_and_textbook(x, w, b, stride, padding, dy, method="planes", max_col_bytes=None):
    """((y, grads) from ``method``, (y, grads) from the textbook im2col/col2im path), both with
    column buffers bounded by ``max_col_bytes`` when given (to make a batch span several chunks)."""
    out = []
    for m in (method, "im2col"):
        y, c = F.conv2d_forward(x, w, b, stride, padding, method=m, max_col_bytes=max_col_bytes)
        assert c.method == m
        out.append((y, F.conv2d_backward(dy, c)))
    return out


def assert_same_gradients(fast, slow, n_inputs):
    assert len(fast) == len(slow) == n_inputs               # one gradient per input given
    for a, c in zip(fast, slow):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["im2col", "auto"])
@given(case=conv_case())
def test_forward_matches_naive_loops(method, case):
    x, w, b, s, p = make(case)
    y, _ = F.conv2d_forward(x, w, b, s, p, method=method)
    np.testing.assert_allclose(y, conv2d_naive(x, w, b, s, p), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("method", ["im2col", "auto"])
@given(case=conv_case())
def test_backward_matches_finite_differences(method, case):
    x, w, b, s, p = make(case)
    inputs = [x, w] + ([b] if b is not None else [])
    fwd = lambda x, w, b=None: F.conv2d_forward(x, w, b, s, p, method=method)
    gradcheck(fwd, inputs, F.conv2d_backward, tol=1e-6)


@st.composite
def rectangular_case(draw):
    """Kernel, stride and padding drawn per axis: the plane path mixes a shared-padding axis
    (stride 1) with a phase axis (stride > 1)."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    H = draw(st.integers(max(1, kh - 2 * ph), 7))
    W = draw(st.integers(max(1, kw - 2 * pw), 7))
    N, C, Fo = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return N, C, Fo, H, W, (kh, kw), (sh, sw), (ph, pw), draw(st.integers(0, 2**31 - 1))


@given(rectangular_case())
def test_rectangular_kernels_strides_and_paddings(case):
    """Forward against the naive loops, backward against finite differences, for per-axis kernel
    sizes, strides and paddings."""
    N, C, Fo, H, W, (kh, kw), stride, padding, seed = case
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((Fo, C, kh, kw)), rng.standard_normal(Fo)
    y, _ = F.conv2d_forward(x, w, b, stride, padding)
    np.testing.assert_allclose(y, conv2d_naive(x, w, b, stride, padding), rtol=1e-10, atol=1e-10)
    gradcheck(lambda x, w, b: F.conv2d_forward(x, w, b, stride, padding), [x, w, b],
              F.conv2d_backward, tol=1e-6)


@given(rectangular_case(), st.sampled_from(["matmul", "planes"]), st.booleans())
def test_fast_paths_match_the_textbook(case, method, bias):
    """Every fast path, wherever it applies, against im2col/col2im: output and every gradient to
    1e-12, kernel sizes, strides and paddings drawn per axis, batches split into small chunks."""
    N, C, Fo, H, W, (kh, kw), stride, (ph, pw), seed = case
    if method == "matmul":                                      # the geometry each path needs
        kh, kw, ph, pw = 1, 1, 0, 0
    elif stride[1] == 1:
        pw = min(pw, kw - 1)
    H, W = max(H, kh - 2 * ph), max(W, kw - 2 * pw)
    padding = (ph, pw)
    assert conv_mod.conv_method((kh, kw), stride, padding, method) == method
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((N, C, H, W)), rng.standard_normal((Fo, C, kh, kw))
    b = rng.standard_normal(Fo) if bias else None
    dy = rng.standard_normal(F.conv2d_forward(x, w, b, stride, padding)[0].shape)
    (y, fast), (y_ref, slow) = fast_and_textbook(x, w, b, stride, padding, dy, method, max_col_bytes=500)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    assert_same_gradients(fast, slow, 3 if bias else 2)


def test_methods_are_chosen_by_name_and_refused_where_they_do_not_apply():
    assert conv_mod.conv_method((1, 1), (2, 2), (0, 0)) == "matmul"
    assert conv_mod.conv_method((3, 3), (2, 2), (1, 1)) == "planes"
    assert conv_mod.conv_method((3, 3), (1, 1), (3, 3)) == "im2col"      # stride-1 columns padded by k
    assert conv_mod.conv_method((3, 3), (1, 1), (3, 3), "im2col") == "im2col"
    x, w = np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3))
    with pytest.raises(ValueError, match="'matmul' needs a 1x1 kernel without padding"):
        F.conv2d_forward(x, w, None, 1, 1, method="matmul")
    with pytest.raises(ValueError, match="'planes' needs column stride > 1"):
        F.conv2d_forward(x, w, None, 1, 3, method="planes")
    with pytest.raises(ValueError, match="unknown conv2d method 'fft'"):
        F.conv2d_forward(x, w, method="fft")


@given(conv_case())
def test_adjoint_identity_in_x(case):
    """<conv(x), u> = <x, conv^T(u)> exactly (up to round-off), with no bias."""
    x, w, _, s, p = make(case)
    rng = np.random.default_rng(1)
    y, cache = F.conv2d_forward(x, w, None, s, p)
    u = rng.standard_normal(y.shape)
    dx, _ = F.conv2d_backward(u, cache)
    lhs, rhs = (y * u).sum(), (x * dx).sum()
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


@given(conv_case())
def test_plane_path_at_stride_1_matches_slice_loop_on_drawn_cases(case):
    """The phase-plane path at stride 1 (one phase, rows W + p wide, no col2im) against the general
    im2col/col2im path."""
    x, w, b, _, p = make(case)
    k = w.shape[2]
    p = min(p, k - 1)
    assert conv_mod.conv_method((k, k), (1, 1), (p, p)) == ("planes" if k > 1 else "matmul" if p == 0 else "im2col")
    dy = np.random.default_rng(1).standard_normal(F.conv2d_forward(x, w, b, 1, p)[0].shape)
    (fast_y, fast_g), (slow_y, slow_g) = fast_and_textbook(x, w, b, 1, p, dy)
    np.testing.assert_allclose(fast_y, slow_y, rtol=1e-12, atol=1e-12)
    assert_same_gradients(fast_g, slow_g, 2 if b is None else 3)


def test_numpy_chunks_by_max_col_bytes():
    per_sample = _columns.MAX_COL_BYTES // 3 + 1                 # two samples fit, three do not
    assert _columns.chunks(5, per_sample, np.zeros(1)) == [(0, 2), (2, 4), (4, 5)]
    assert _columns.chunks(3, 10 * _columns.MAX_COL_BYTES, np.zeros(1)) == [(0, 1), (1, 2), (2, 3)]
    assert _columns.chunks(5, 10, np.zeros(1), max_col_bytes=20) == [(0, 2), (2, 4), (4, 5)]


@pytest.mark.parametrize("method", ["im2col", "planes"])
@pytest.mark.parametrize("stride", [1, 2])   # one phase plane; four
def test_chunked_matches_unchunked(method, stride):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((5, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    y_full, c = F.conv2d_forward(x, w, None, stride, 1, method=method)
    g_full = F.conv2d_backward(y_full, c)
    y_chunk, c = F.conv2d_forward(x, w, None, stride, 1, method=method, max_col_bytes=1)  # 1 sample each
    g_chunk = F.conv2d_backward(y_full, c)
    np.testing.assert_allclose(y_chunk, y_full, rtol=1e-12)
    assert_same_gradients(g_full, g_chunk, 2)


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (1, 3)])   # planes (1 phase, 4); slice loop
@pytest.mark.parametrize("limit", [1, 3000, 20000, 10**9])
def test_column_buffer_never_exceeds_bound(monkeypatch, stride, padding, limit):
    """Every column buffer, forward and backward, is at most max(max_col_bytes, one sample's columns)."""
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((7, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    sizes = []
    for module, name in ((conv_planes, "plane_windows"), (conv_planes, "shifted_runs"), (conv_mod, "im2col")):
        original = getattr(module, name)

        def recording(*args, _original=original, _name=name):
            cols = _original(*args)
            samples = cols.shape[0] if _name == "im2col" else args[1]     # (planes, n, ..)
            sizes.append((cols.nbytes, samples))
            return cols
        monkeypatch.setattr(module, name, recording)
    y, c = F.conv2d_forward(x, w, None, stride, padding, max_col_bytes=limit)
    F.conv2d_backward(rng.standard_normal(y.shape), c)
    assert sizes, "no column buffer was built"
    for nbytes, n in sizes:
        assert nbytes <= max(limit, nbytes // n), (nbytes, n, limit)
    assert sum(n for _, n in sizes) >= 2 * x.shape[0]       # every sample went through (fwd + bwd)


@pytest.mark.parametrize("k,stride,padding", [(1, 1, 0), (1, 2, 0), (3, 2, 1), (1, 1, 1)])
def test_inputs_not_mutated_and_noncontiguous_ok(k, stride, padding):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, k, k))
    xn, wn = noncontiguous(x), noncontiguous(w)
    x0, w0 = xn.copy(), wn.copy()
    y, cache = F.conv2d_forward(xn, wn, None, stride, padding)
    dy = rng.standard_normal(y.shape)
    dx, dw = F.conv2d_backward(dy, cache)
    np.testing.assert_array_equal(xn, x0)
    np.testing.assert_array_equal(wn, w0)
    y2, cache2 = F.conv2d_forward(x, w, None, stride, padding)
    np.testing.assert_allclose(y, y2, rtol=1e-12)
    np.testing.assert_allclose(dx, F.conv2d_backward(dy, cache2)[0], rtol=1e-12)


def test_float32_stays_float32():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y, c = F.conv2d_forward(x, w, np.zeros(4, np.float32), 1, 1)
    assert y.dtype == np.float32
    assert all(g.dtype == np.float32 for g in F.conv2d_backward(y, c))


@pytest.mark.parametrize("x_shape,w_shape,kwargs,exc,words", [
    ((3, 5, 5), (4, 3, 3, 3), {}, ValueError, "4-D"),
    ((2, 3, 5, 5), (4, 2, 3, 3), {}, ValueError, "3 channels"),
    ((2, 3, 2, 2), (4, 3, 5, 5), {}, ValueError, "larger than the padded input"),
    ((2, 3, 5, 5), (4, 3, 3, 3), {"stride": 0}, ValueError, ">= 1"),
    ((2, 3, 5, 5), (4, 3, 3, 3), {"padding": -1}, ValueError, ">= 0"),
])
def test_bad_input_errors(x_shape, w_shape, kwargs, exc, words):
    with pytest.raises(exc, match=words):
        F.conv2d_forward(np.zeros(x_shape), np.zeros(w_shape), None, **kwargs)


def test_integer_and_mixed_dtypes_rejected():
    with pytest.raises(TypeError, match="floating-point.*int64"):
        F.conv2d_forward(np.zeros((1, 1, 3, 3), dtype=np.int64), np.zeros((1, 1, 1, 1)))
    with pytest.raises(TypeError, match="float32.*float64|float64.*float32"):
        F.conv2d_forward(np.zeros((1, 1, 3, 3), np.float32), np.zeros((1, 1, 1, 1)))
    with pytest.raises(ValueError, match="bias has 2 entries, expected 1"):
        F.conv2d_forward(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 1, 1)), np.zeros(2))


@pytest.mark.parametrize("k,p,shape", [
    (k, p, shape)
    for k, p in [(3, 1), (5, 2), (3, 0), (3, 2), (2, 1), (2, 0)]
    for shape in [(5, 3, 7, 6), (2, 2, 1, 1), (2, 1, 2, 1), (3, 2, 1, 4)]
    if k <= min(shape[2:]) + 2 * p])                    # the kernel fits the padded image
def test_plane_path_at_stride_1_matches_the_slice_loop(k, p, shape):
    """The phase-plane path at stride 1 (samples side by side, rows W + p wide each, the column
    padding shared with what follows; dW from the dy columns) against the general im2col/col2im
    path, for every padding it takes, images down to 1x1 (the spare zeros that absorb the last
    row's overrun) and a batch that spans several chunks."""
    rng = np.random.default_rng(k * 10 + p)
    x, w = rng.standard_normal(shape), rng.standard_normal((4, shape[1], k, k))
    dy = rng.standard_normal(F.conv2d_forward(x, w, None, 1, p)[0].shape)
    (y, fast), (_, slow) = fast_and_textbook(x, w, None, 1, p, dy, max_col_bytes=4000)
    np.testing.assert_allclose(y, conv2d_naive(x, w, None, 1, p), rtol=1e-10, atol=1e-10)
    assert_same_gradients(fast, slow, 2)


@pytest.mark.parametrize("k,stride,padding", [
    ((3, 3), (1, 1), (4, 1)), ((3, 2), (1, 1), (3, 0)), ((3, 3), (2, 1), (0, 2)), ((1, 3), (1, 2), (2, 4))])
def test_plane_path_with_mixed_axes_matches_the_slice_loop(k, stride, padding):
    """Rows padded by k or more at stride 1 (rows share no padding, so the plane path takes them), and
    a stride-1 axis next to a strided one: output against the naive loops, dx and dw against the
    general path."""
    assert conv_mod.conv_method(k, stride, padding) == "planes"
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((3, 2, 5, 6)), rng.standard_normal((4, 2) + k)
    dy = rng.standard_normal(F.conv2d_forward(x, w, None, stride, padding)[0].shape)
    (y, fast), (_, slow) = fast_and_textbook(x, w, None, stride, padding, dy)
    np.testing.assert_allclose(y, conv2d_naive(x, w, None, stride, padding), rtol=1e-10, atol=1e-10)
    assert_same_gradients(fast, slow, 2)


@pytest.mark.parametrize("k,s,p,shape", [
    (k, s, p, shape)
    for k, s, p in [(3, 2, 1), (3, 2, 0), (2, 2, 0), (3, 3, 1), (5, 2, 2), (2, 3, 1), (3, 2, 2)]
    for shape in [(5, 3, 7, 6), (2, 2, 1, 1), (3, 2, 2, 5), (2, 1, 8, 8)]
    if k <= min(shape[2:]) + 2 * p])                    # the kernel fits the padded image
def test_plane_path_with_strides_matches_the_slice_loop(k, s, p, shape):
    """Strided convolutions through phase planes against the general im2col/col2im path: output,
    dx and dw, for odd and even sizes, kernels larger and smaller than the stride, chunked batches."""
    assert conv_mod.conv_method((k, k), (s, s), (p, p)) == "planes"
    rng = np.random.default_rng(k * 100 + s * 10 + p)
    x, w = rng.standard_normal(shape), rng.standard_normal((4, shape[1], k, k))
    dy = rng.standard_normal(F.conv2d_forward(x, w, None, s, p)[0].shape)
    (fast_y, fast), (slow_y, slow) = fast_and_textbook(x, w, None, s, p, dy, max_col_bytes=2000)
    np.testing.assert_allclose(fast_y, conv2d_naive(x, w, None, s, p), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fast_y, slow_y, rtol=1e-12, atol=1e-12)
    assert_same_gradients(fast, slow, 2)


# ---- groups -------------------------------------------------------------------------------------
@st.composite
def grouped_case(draw):
    groups = draw(st.integers(1, 4))
    cg, fg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.sampled_from([1, 2, 3])), draw(st.sampled_from([1, 2, 3]))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh // 2 + 1)), draw(st.integers(0, kw // 2 + 1))
    H = draw(st.integers(max(1, kh - 2 * ph), 7))
    W = draw(st.integers(max(1, kw - 2 * pw), 7))
    N, bias, seed = draw(st.integers(1, 2)), draw(st.booleans()), draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, groups * cg, H, W))
    w = rng.standard_normal((groups * fg, cg, kh, kw))
    b = rng.standard_normal(groups * fg) if bias else None
    return x, w, b, (sh, sw), (ph, pw), groups


def grouped_methods(w, stride, padding):
    """Every method that applies to this geometry."""
    out = []
    for m in conv_mod.CONV_METHODS:
        try:
            conv_mod.conv_method(w.shape[2:], stride, padding, m)
            out.append(m)
        except ValueError:
            pass
    return out


@given(grouped_case())
def test_grouped_forward_matches_the_definition_on_every_path(case):
    x, w, b, s, p, groups = case
    ref = grouped_conv2d_naive(x, w, b, s, p, groups)
    for m in grouped_methods(w, s, p):
        y, cache = F.conv2d_forward(x, w, b, s, p, groups=groups, method=m)
        assert cache.groups == groups
        np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10, err_msg=m)


@given(grouped_case())
def test_grouped_backward_matches_finite_differences_on_every_path(case):
    x, w, b, s, p, groups = case
    inputs = [x, w] + ([b] if b is not None else [])
    for m in grouped_methods(w, s, p):
        fwd = (lambda x, w, b=None, m=m: F.conv2d_forward(x, w, b, s, p, groups=groups, method=m))
        gradcheck(fwd, inputs, F.conv2d_backward, tol=1e-6)


@given(grouped_case())
def test_grouped_adjoint_identity_and_block_structure(case):
    """<conv(x), u> = <x, conv^T(u)>; and the grouped convolution is the ordinary one with a
    block-diagonal weight (zeros between groups), gradients included (dw off the blocks is 0)."""
    x, w, _, s, p, groups = case
    y, cache = F.conv2d_forward(x, w, None, s, p, groups=groups)
    u = np.random.default_rng(1).standard_normal(y.shape)
    dx, dw = F.conv2d_backward(u, cache)
    assert abs((y * u).sum() - (x * dx).sum()) <= 1e-12 * max(1.0, abs((y * u).sum()))
    Fo, cg = w.shape[:2]
    full = np.zeros((Fo, cg * groups) + w.shape[2:])
    fg = Fo // groups
    for g in range(groups):
        full[g * fg:(g + 1) * fg, g * cg:(g + 1) * cg] = w[g * fg:(g + 1) * fg]
    y_full, c_full = F.conv2d_forward(x, full, None, s, p)
    dx_full, dw_full = F.conv2d_backward(u, c_full)
    np.testing.assert_allclose(y, y_full, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, dx_full, rtol=1e-10, atol=1e-10)
    for g in range(groups):
        np.testing.assert_allclose(dw[g * fg:(g + 1) * fg],
                                   dw_full[g * fg:(g + 1) * fg, g * cg:(g + 1) * cg],
                                   rtol=1e-10, atol=1e-10)


def test_grouped_bad_input_errors():
    x = np.zeros((1, 6, 4, 4))
    with pytest.raises(ValueError, match="groups=4 must divide the input channels \\(6\\)"):
        F.conv2d_forward(x, np.zeros((4, 1, 3, 3)), groups=4)
    with pytest.raises(ValueError, match="weight expects 4 \\(2 per group x 2 groups"):
        F.conv2d_forward(x, np.zeros((4, 2, 3, 3)), groups=2)
    with pytest.raises(ValueError, match="groups"):
        F.conv2d_forward(x, np.zeros((6, 3, 3, 3)), groups=0)


def test_grouped_conv2d_module_initialises_by_its_fan_in():
    from minirattn import nn
    m = nn.Conv2d(32, 64, 3, padding=1, groups=8, bias=False, rng=0, dtype="float64")
    assert m.params["weight"].shape == (64, 4, 3, 3) and "groups=8" in repr(m)
    assert abs(m.params["weight"].std() - np.sqrt(2 / (4 * 9))) < 0.02
    gradcheck(nn.Conv2d(4, 6, 3, padding=1, groups=2, rng=0, dtype="float64"),
              [np.random.default_rng(0).standard_normal((2, 4, 5, 5))])
    with pytest.raises(ValueError, match="groups=3 must divide in_ch \\(4\\)"):
        nn.Conv2d(4, 6, 3, groups=3)


@given(rectangular_case(), st.sampled_from(["im2col", "matmul", "planes"]), st.booleans(),
       st.sampled_from([1, 2]))
def test_accumulate_adds_the_parameter_gradients_into_the_given_arrays(case, method, bias,
                                                                         groups):
    """conv2d_backward(..., accumulate=[dw_acc, db_acc]) returns those arrays, each now its old
    value plus the gradient the plain backward returns; dx is the same."""
    N, C, Fo, H, W, (kh, kw), stride, (ph, pw), seed = case
    if method == "matmul":
        kh, kw, ph, pw = 1, 1, 0, 0
    elif method == "planes" and stride[1] == 1:
        pw = min(pw, kw - 1)
    H, W = max(H, kh - 2 * ph), max(W, kw - 2 * pw)
    C, Fo = C * groups, Fo * groups
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((N, C, H, W)), rng.standard_normal((Fo, C // groups, kh, kw))
    b = rng.standard_normal(Fo) if bias else None
    y, cache = F.conv2d_forward(x, w, b, stride, (ph, pw), groups=groups, method=method,
                                max_col_bytes=500)
    dy = rng.standard_normal(y.shape)
    plain = F.conv2d_backward(dy, cache)
    start = [rng.standard_normal(w.shape)] + ([rng.standard_normal(Fo)] if bias else [])
    acc = [a.copy() for a in start]
    got = F.conv2d_backward(dy, cache, accumulate=acc)
    np.testing.assert_allclose(got[0], plain[0], rtol=1e-12, atol=1e-12)
    for g, a, s, p in zip(got[1:], acc, start, plain[1:]):
        assert g is a
        np.testing.assert_allclose(a, s + p, rtol=1e-12, atol=1e-12)


def test_accumulate_names_a_wrong_accumulator():
    x, w = np.ones((1, 2, 4, 4)), np.ones((3, 2, 1, 1))
    y, cache = F.conv2d_forward(x, w)
    with pytest.raises(ValueError, match=r"dw accumulator has shape \(3, 2\), expected \(3, 2, 1, 1\)"):
        F.conv2d_backward(np.ones(y.shape), cache, accumulate=[np.zeros((3, 2))])
    with pytest.raises(ValueError, match="accumulate needs 1 arrays"):
        F.conv2d_backward(np.ones(y.shape), cache, accumulate=[np.zeros(w.shape)] * 2)
