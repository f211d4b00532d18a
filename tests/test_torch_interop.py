"""Weights to and from PyTorch (minirattn.interop.torch): the same names, the same outputs and
gradients in float64, for every unit kind and ablation; round trips both ways."""
import numpy as np
import pytest

from minirattn.models import build
from helpers import ABLATIONS, TINY_NET, narrow, need, network_input, with_running_stats

torch = need("torch", "torch")


def _close(theirs, ours, what, scale=None):
    """Equal to round-off: the largest difference under 1e-9 of ``scale`` (the tensor's largest
    entry; for parameter gradients the largest of all of them, since some are zero up to
    round-off, such as the bias of a conv followed by batch norm)."""
    scale = scale or float(np.abs(ours).max())
    err = float(np.abs(theirs - ours).max()) / scale
    assert err < 1e-9, f"{what}: PyTorch differs by {err:.1e} relative"


def _grads_agree(model, twin, seed=0):
    """float64: the same logits, input gradient and gradient of every parameter (by name)."""
    x = network_input(model, n=2, seed=seed, dtype="float64")
    y = model(x)
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    model.zero_grad()
    dx = model.backward(dy)
    xt = torch.tensor(x, requires_grad=True)
    yt = twin(xt)
    (yt * torch.tensor(dy)).sum().backward()
    _close(yt.detach().numpy(), y, "logits")
    _close(xt.grad.numpy(), dx, "input gradient")
    grads = {k: g for k, _, g in model.named_parameters()}
    theirs = {k: p.grad.numpy() for k, p in twin.named_parameters()}
    assert set(grads) == set(theirs)
    scale = max(float(np.abs(g).max()) for g in grads.values())
    for k in grads:
        _close(theirs[k], grads[k], k, scale)


@pytest.mark.parametrize("name", ["attention56", "resnet164", "attention92_imagenet",
                                  "attentionnext56_imagenet", "attentioninception56_imagenet"])
def test_to_torch_computes_the_same_outputs_and_gradients(name):
    from minirattn.interop.torch import to_torch
    model = build(name, dtype="float64", **narrow(name))
    twin = to_torch(model)
    assert [k for k in twin.state_dict() if not k.endswith("num_batches_tracked")] == \
        list(model.state_dict())                                   # the same names, in order
    _grads_agree(model, twin)


@pytest.mark.parametrize("activation,learning,mask", ABLATIONS[::3])
def test_to_torch_covers_every_ablation(activation, learning, mask):
    from minirattn.interop.torch import to_torch
    model = build("attention56", dtype="float64", mask_activation=activation, learning=learning,
                  mask=mask, **TINY_NET)
    _grads_agree(model, to_torch(model))


def test_from_torch_round_trips_a_module_and_a_state_dict_and_refuses_another_network():
    from minirattn.interop.torch import from_torch, to_torch
    model = with_running_stats(build("attention56", seed=3, **TINY_NET))
    twin = to_torch(model)
    for source in (twin, twin.state_dict()):
        back = from_torch(source, "attention56", **TINY_NET)
        for (k, a), b in zip(model.state_dict().items(), back.state_dict().values()):
            np.testing.assert_array_equal(a, b, err_msg=k)
    twin.eval()
    x = network_input(model)
    with model.mode(False):
        np.testing.assert_allclose(twin(torch.tensor(x)).detach().numpy(), model(x), rtol=1e-4,
                                   atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        from_torch(twin, "attention56", widths=(8, 8, 32), stem_width=4, final_width=32,
                   final_units=1)
    with pytest.raises(KeyError, match="missing keys"):
        from_torch(twin, "attention92", **TINY_NET)


