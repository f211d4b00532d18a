"""Modules: the contract (accumulating grads, state_dict, train/eval, to) and their gradients."""
import numpy as np
import pytest

from minirattn import gradcheck, nn
from helpers import away_from_zero, shuffled_linspace

D = "float64"


def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=1, dtype=D), (2, 3, 5, 5)),
    (lambda: nn.Conv2d(3, 4, 1, bias=False, rng=1, dtype=D), (2, 3, 4, 4)),
    (lambda: nn.BatchNorm2d(3, dtype=D), (2, 3, 3, 3)),
    (lambda: nn.MaskActivation("spatial"), (2, 3, 3, 3)),
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, rng=1, dtype=D), nn.BatchNorm2d(4, dtype=D),
                           nn.ReLU(), nn.MaxPool2d(3, 2, 1)), (2, 3, 6, 6)),
])
def test_module_gradients(make, shape):
    m = make()
    x = shuffled_linspace(rng(), shape, gap=0.05)
    gradcheck(m, [x])


def test_linear_and_pool_modules():
    gradcheck(nn.Linear(5, 3, rng=2, dtype=D), [rng().standard_normal((4, 5))])
    gradcheck(nn.GlobalAvgPool2d(), [rng().standard_normal((2, 3, 2, 2))])
    gradcheck(nn.ReLU(), [away_from_zero(rng(), (2, 3))])


def test_backward_accumulates_and_zero_grad_resets():
    m = nn.Conv2d(2, 3, 3, padding=1, rng=0, dtype=D)
    x = rng().standard_normal((2, 2, 4, 4))
    dy = rng().standard_normal((2, 3, 4, 4))
    m(x); m.backward(dy)
    g1 = m.grads["weight"].copy()
    m(x); m.backward(dy)
    np.testing.assert_allclose(m.grads["weight"], 2 * g1)
    m.zero_grad()
    assert not m.grads["weight"].any() and not m.grads["bias"].any()


def test_backward_before_forward_is_a_clear_error():
    with pytest.raises(RuntimeError, match="before forward"):
        nn.ReLU().backward(np.ones(3))


def test_state_dict_keys_and_round_trip():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False, rng=0), nn.BatchNorm2d(4), nn.Linear(4, 2, rng=0))
    sd = net.state_dict()
    assert list(sd) == ["0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                        "2.weight", "2.bias"]
    other = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False, rng=5), nn.BatchNorm2d(4), nn.Linear(4, 2, rng=5))
    sd2 = {k: v.copy() + 1 for k, v in sd.items()}
    sd2["1.num_batches_tracked"] = np.array(3)         # PyTorch's counter is accepted and ignored
    other.load_state_dict(sd2)
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, sd[k] + 1)
    with pytest.raises(KeyError, match="missing keys"):
        other.load_state_dict({"0.weight": sd["0.weight"]})
    bad = dict(sd)
    bad["2.bias"] = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match=r"2.bias has shape \(5,\), expected \(2,\)"):
        other.load_state_dict(bad)


def test_train_eval_switches_batchnorm_and_updates_running_stats():
    bn = nn.BatchNorm2d(2)
    x = (rng().standard_normal((8, 2, 3, 3)) * 3 + 1).astype(np.float32)
    bn(x)
    assert not np.allclose(bn.buffers["running_mean"], 0)
    seq = nn.Sequential(bn, nn.ReLU())
    seq.eval()
    assert not bn.training
    y_eval = seq(x)
    seq.train()
    assert bn.training and not np.allclose(seq(x), y_eval)


def test_to_dtype_and_named_parameters():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert net.dtype == np.float32
    net.to(dtype="float64")
    assert all(p.dtype == np.float64 and g.dtype == np.float64 for _, p, g in net.named_parameters())
    assert net.state_dict()["1.running_var"].dtype == np.float64
    assert [n for n, _, _ in net.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert net.num_parameters() == 4 * 3 * 9 + 4 + 4 + 4
    assert net.backend == "numpy"
    net.to("numpy")


def test_bn_relu_pairs_keep_pytorchs_numbering_in_state_dict_keys():
    """One BatchNorm2d(relu=True) stands for PyTorch's BatchNorm2d + ReLU: the mask head and the
    ImageNet stem are numbered as PyTorch numbers the separate modules, so keys still match."""
    from minirattn.models.attention import MaskHead
    from minirattn.models import build
    keys = {k.rsplit(".", 1)[0] for k in MaskHead(8).state_dict()}
    assert keys == {"body.0", "body.2", "body.3", "body.5"}       # BN, conv, BN, conv
    assert {k.rsplit(".", 1)[0] for k in MaskHead(8, pre_activation=False).state_dict()} == \
        {"body.0", "body.1", "body.3"}                           # conv, BN, conv
    head = MaskHead(8)
    assert [type(m).__name__ for m in head.body] == ["BatchNorm2d", "Conv2d", "BatchNorm2d",
                                                     "Conv2d", "MaskActivation"]
    net = build("attention56_imagenet", num_classes=3, input_size=64)
    assert list(net.stem._children) == ["0", "1", "3"]           # conv, BN(-ReLU), max pool
    with pytest.raises(ValueError, match="distinct names"):
        nn.Sequential(nn.ReLU(), nn.ReLU(), names=("a", "a"))
