"""Residual unit, soft mask branch, attention module, networks: gradients, Eq. (2), counts, Fig. 4."""
import numpy as np
import pytest

from minirattn import gradcheck, nn
from minirattn.functional import LEARNING_RULES, MASK_ACTIVATIONS
from minirattn.models import (AttentionModule, LocalMask, ResidualUnit, SoftMaskBranch, build,
                              collect_masks, feature_response, list_models)

D = "float64"
# Composite checks use eps = 1e-6: a difference step must not carry a ReLU input or a
# max-pool near-tie across its kink, and the chance of that grows with eps (docs/testing.md).
EPS = 1e-6
TINY = dict(widths=(8, 8, 16), stem_width=4, final_width=16, final_units=1, input_size=8)


def x_of(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ---- residual unit ----------------------------------------------------------------------------
@pytest.mark.parametrize("in_ch,out_ch,stride", [(8, 8, 1), (4, 8, 1), (8, 8, 2), (8, 16, 2)])
def test_residual_unit_gradients(in_ch, out_ch, stride):
    unit = ResidualUnit(in_ch, out_ch, stride, rng=1, dtype=D)
    assert (unit.shortcut is None) == (in_ch == out_ch and stride == 1)
    gradcheck(unit, [x_of((3, in_ch, 6, 6))], eps=EPS, elementwise_limit=64, tol=1e-6)


def test_residual_unit_shapes_and_bias_free():
    unit = ResidualUnit(16, 64, 2)
    assert unit(np.zeros((2, 16, 8, 8), np.float32)).shape == (2, 64, 4, 4)
    assert all("bias" not in m.params for m in unit.modules() if isinstance(m, nn.Conv2d))
    assert unit.conv1.params["weight"].shape == (16, 16, 1, 1)       # bottleneck C_out / 4
    with pytest.raises(ValueError, match="multiple of 4"):
        ResidualUnit(8, 6)


# ---- soft mask branch and local mask ----------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 3])
def test_soft_mask_branch_gradients(k):
    branch = SoftMaskBranch(4, k, r=1, rng=2, dtype=D)
    x = x_of((3, 4, 8, 8), seed=k)
    m = branch(x)
    assert m.shape == x.shape and (m > 0).all() and (m < 1).all()
    skips = [n for n, _ in branch.named_modules() if n.startswith("skip") and "." not in n]
    assert len(skips) == k - 1                                         # k - 1 skip connections
    gradcheck(branch, [x], eps=EPS, elementwise_limit=0, n_directions=2, tol=1e-6)


def test_soft_mask_branch_upsamples_odd_sizes_back():
    branch = SoftMaskBranch(4, 2, rng=0)
    assert branch(np.ones((2, 4, 7, 7), np.float32)).shape == (2, 4, 7, 7)   # 7 -> 4 -> 2 -> 4 -> 7


def test_local_mask_gradients():
    gradcheck(LocalMask(4, 3, rng=3, dtype=D), [x_of((2, 4, 4, 4))], eps=EPS, elementwise_limit=0, n_directions=2)


# ---- attention module -------------------------------------------------------------------------
@pytest.mark.parametrize("learning", LEARNING_RULES)
@pytest.mark.parametrize("activation", sorted(MASK_ACTIVATIONS))
def test_attention_module_gradients(activation, learning):
    mod = AttentionModule(4, 2, p=1, t=1, r=1, mask_activation=activation, learning=learning, rng=4,
                          dtype=D)
    gradcheck(mod, [x_of((3, 4, 8, 8), seed=5)], eps=EPS, elementwise_limit=0, n_directions=2, tol=1e-6)
    assert mod.last_mask.shape == mod.last_trunk.shape == (3, 4, 8, 8)


@pytest.mark.parametrize("learning", LEARNING_RULES)
def test_attention_module_with_local_mask_gradients(learning):
    mod = AttentionModule(4, 2, p=1, t=1, learning=learning, mask="local", rng=6, dtype=D)
    gradcheck(mod, [x_of((2, 4, 4, 4))], eps=EPS, elementwise_limit=0, n_directions=2)


def _trunk_grads(mod):
    return {n: g.copy() for n, _, g in mod.trunk.named_parameters()}


@pytest.mark.parametrize("learning", LEARNING_RULES)
def test_eq2_trunk_gradient_is_filtered_by_the_mask(learning):
    """Eq. (2): dL/dphi (trunk parameters) = back-propagation of dL/dH * M (NAL) or dL/dH * (1 + M)
    (ARL) through the trunk alone, and both agree with finite differences of the whole module."""
    mod = AttentionModule(4, 2, p=1, t=2, learning=learning, rng=7, dtype=D)
    x, dy = x_of((3, 4, 8, 8)), x_of((3, 4, 8, 8), seed=9)
    mod.zero_grad(); mod(x); mod.backward(dy)
    full = _trunk_grads(mod)
    # the same numbers from the formula: filter dL/dH by the mask, push it through the trunk only
    mod.zero_grad(); mod(x)
    dH = mod.post.backward(dy)
    M = mod.last_mask
    mod.trunk.backward(dH * (M if learning == "nal" else 1.0 + M))
    formula = _trunk_grads(mod)
    for name in full:
        np.testing.assert_allclose(full[name], formula[name], rtol=1e-12, atol=1e-14)
    assert any(np.abs(g).max() > 1e-3 for g in full.values())
    # and the trunk parameters' gradients are right: finite differences of the whole module
    gradcheck(mod, [x], dy=dy, eps=EPS, elementwise_limit=0, n_directions=2)


class ZeroMask(nn.Module):
    """A mask branch that outputs M = 0 everywhere."""

    def forward(self, a):
        return np.zeros_like(a)

    def backward(self, dm):
        return np.zeros_like(dm)


def test_eq2_where_mask_is_zero_nal_blocks_the_trunk_and_arl_passes_identity():
    x, dy = x_of((3, 4, 8, 8)), x_of((3, 4, 8, 8), seed=9)
    grads = {}
    for learning in LEARNING_RULES:
        mod = AttentionModule(4, 2, p=1, t=2, learning=learning, rng=7, dtype=D)
        mod.mask = ZeroMask()
        mod.zero_grad(); mod(x); mod.backward(dy)
        grads[learning] = _trunk_grads(mod)
    assert all((g == 0).all() for g in grads["nal"].values())          # NAL: no gradient at all
    # ARL with M = 0 is H = T: the trunk gets exactly dL/dH through the identity path
    ref = AttentionModule(4, 2, p=1, t=2, rng=7, dtype=D)
    ref.zero_grad(); ref.pre(x)
    a = ref.pre(x); ref.post(ref.trunk(a))
    ref.trunk.backward(ref.post.backward(dy))
    for name, g in _trunk_grads(ref).items():
        np.testing.assert_allclose(grads["arl"][name], g, rtol=1e-12, atol=1e-14)
        assert np.abs(g).max() > 0


# ---- networks ---------------------------------------------------------------------------------
def test_tiny_network_end_to_end_gradients():
    net = build("attention56", num_classes=3, seed=1, dtype=D, **TINY)
    x = x_of((2, 3, 8, 8), seed=11)
    gradcheck(net, [x], eps=EPS, elementwise_limit=0, n_directions=1, tol=1e-6)


@pytest.mark.parametrize("name,expected", [("attention56", 1_148_826), ("attention92", 1_959_706),
                                           ("attention236", 5_203_226)])
def test_cifar_parameter_counts_are_exact(name, expected):
    assert build(name, num_classes=10).num_parameters() == expected


@pytest.mark.parametrize("name,paper", [("attention56_imagenet", 31.9e6), ("attention92_imagenet", 51.3e6)])
def test_imagenet_parameter_counts_within_3_percent(name, paper):
    n = build(name, num_classes=1000).num_parameters()
    assert abs(n / paper - 1) < 0.03, (name, n)


def test_resnet164_is_the_papers_baseline():
    net = build("resnet164")
    assert abs(net.num_parameters() / 1.7e6 - 1) < 0.01
    assert sum(isinstance(m, ResidualUnit) for m in net.modules()) == 54           # 3 x 18 units
    assert not net.attention_modules()


@pytest.mark.parametrize("name", [n for n, _, _ in list_models()])
def test_every_registered_network_builds_and_has_the_right_output_shape(name):
    imagenet = name.endswith("imagenet")
    # ImageNet networks at 64 pixels: the same layers, a twelfth of the arithmetic
    net = build(name, num_classes=7, input_size=64) if imagenet else build(name, num_classes=7)
    size = 64 if imagenet else 32
    y = net(np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32))
    assert y.shape == (2, 7) and y.dtype == np.float32
    depth_modules = {"attention56": 3, "attention56_small": 3, "attention92": 6, "attention128": 9, "attention164": 12,
                     "attention236": 18, "attention452": 18, "resnet164": 0,
                     "attention56_imagenet": 3, "attention92_imagenet": 6,
                     "attentionnext56_imagenet": 3, "attentionnext92_imagenet": 6,
                     "attentioninception56_imagenet": 3}
    assert len(net.attention_modules()) == depth_modules[name]


def test_masks_are_collected_per_module():
    net = build("attention56", seed=0, **TINY)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    masks = collect_masks(net, x)
    assert list(masks) == ["stage1.1", "stage2.1", "stage3.1"]
    assert [m.shape for m in masks.values()] == [(2, 8, 8, 8), (2, 8, 4, 4), (2, 16, 2, 2)]
    assert all(((m >= 0) & (m <= 1)).all() and m.std() > 0 for m in masks.values())   # sigmoid masks
    assert net.training                                             # mode restored


def test_fig4_in_miniature_nal_attenuates_the_deep_stack():
    """At initialisation, with batch statistics as during training, a deep NAL stack (Attention-164
    spec, narrow) responds far less in its last stage than the same ARL network: each NAL module
    multiplies its trunk by M < 1, and the loss compounds with depth.
    Measured (seed 0, batch 8, 32x32): NAL/ARL last-stage ratio 0.10 for Attention-164, 0.44 for
    Attention-56."""
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    spec = dict(widths=(16, 32, 64), final_width=64, stem_width=8)
    ratio = {}
    for name in ("attention56", "attention164"):
        resp = {learning: feature_response(build(name, learning=learning, seed=0, **spec), x, training=True)
                for learning in LEARNING_RULES}
        ratio[name] = resp["nal"][-1] / resp["arl"][-1]
    assert ratio["attention164"] < 0.2, ratio
    assert ratio["attention164"] < 0.5 * ratio["attention56"], ratio      # deeper: worse


@pytest.mark.parametrize("kwargs,words", [
    (dict(name="attention57"), "unknown network 'attention57'"),
    (dict(name="attention56", mask_activation="soft"), "unknown mask_activation 'soft'"),
    (dict(name="attention56", attention="soft"), "unknown mask_activation 'soft'"),   # old name
    (dict(name="attention56", learning="residual"), "unknown learning 'residual'"),
    (dict(name="attention56", mask="global"), "unknown mask 'global'"),
    (dict(name="attention56", p=0), r"spec.p: expected an int >= 1, got 0"),
    (dict(name="attention56", t=-1), r"spec.t: expected an int >= 1, got -1"),
    (dict(name="attention56", r=0), r"spec.r: expected an int >= 1, got 0"),
    (dict(name="attention56", input_size=28), "cannot halve 3 times exactly"),
    (dict(name="attention56", num_classes=1), "num_classes: expected an int >= 2"),
    (dict(name="attention56", widths=(64, 128)), "3 entries but there are 2 stages"),
    (dict(name="attention56", depth=3), "unknown spec fields"),
])
def test_bad_arguments_raise_before_any_computation(kwargs, words):
    with pytest.raises(ValueError, match=words):
        build(**kwargs)


def test_wrong_input_shape_is_a_clear_error():
    net = build("attention56", **TINY)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, 8, 8\), got \(2, 3, 9, 9\)"):
        net(np.zeros((2, 3, 9, 9), np.float32))
