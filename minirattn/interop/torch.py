"""Weights to and from PyTorch: the same network as a ``torch.nn.Module``, parameter for parameter.

:func:`to_torch` walks a minirattn network's module tree and builds its twin from PyTorch's own
layers, child by child under the same names, so ``state_dict`` keys match one to one (PyTorch's
``num_batches_tracked`` counters aside); the composite modules (units, the mask branches, the
attention module, the network) have a PyTorch forward of their own below, written with PyTorch's
operations, not minirattn's. :func:`from_torch` goes back: a twin module or its ``state_dict``
into a freshly built minirattn network. Proven by equal logits and gradients in float64
(``tests/test_interop.py``; ``benchmarks/bench.py`` asserts the same before timing).

Needs PyTorch (the ``torch`` extra). Usage: docs/using.md.
"""
from __future__ import annotations

import functools
from collections import OrderedDict

from .. import backend as B
from .. import nn
from ..models import build
from ..models.attention import AttentionModule, LocalMask, MaskHead, SoftMaskBranch
from ..models.networks import ResidualAttentionNetwork
from ..models.units import InceptionUnit, ResidualUnit, ResNeXtUnit


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError("PyTorch interop needs PyTorch: pip install -e '.[torch]'") from None
    return torch


@functools.lru_cache(maxsize=None)
def _classes():
    """The twin's module classes, made once, when PyTorch is first needed (minirattn imports
    without it)."""
    torch = _torch()
    tnn, TF = torch.nn, torch.nn.functional

    class BatchNormReLU(tnn.BatchNorm2d):
        """minirattn's ``BatchNorm2d(relu=True)``: BN, then ReLU, one module of BN's parameters."""

        def forward(self, x):
            return TF.relu(super().forward(x))

    class MaskActivation(tnn.Module):
        def __init__(self, activation):
            super().__init__()
            self.activation = activation

        def forward(self, x):
            if self.activation == "mixed":
                return torch.sigmoid(x)
            if self.activation == "channel":
                return x / torch.sqrt((x * x).sum(1, keepdim=True) + 1e-12)
            mu = x.mean((2, 3), keepdim=True)
            var = ((x - mu) ** 2).mean((2, 3), keepdim=True)
            return torch.sigmoid((x - mu) / torch.sqrt(var + 1e-5))

    class GlobalAvgPool(tnn.Module):
        def forward(self, x):
            return x.mean((2, 3))

    class Upsample(tnn.Module):
        def forward(self, x, size):
            return TF.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)

    class Twin(tnn.Module):
        """A composite module: its children under minirattn's names, and a forward below."""

        def __init__(self, kind, children, forward, settings):
            super().__init__()
            self._forward, self.kind = forward, kind
            for name, child in children.items():
                self.add_module(name, child)
            for name, value in settings.items():     # what the forward reads besides children
                setattr(self, name, value)

        def extra_repr(self):
            return self.kind

        def forward(self, x):
            return self._forward(self, x)

    return dict(BatchNormReLU=BatchNormReLU, MaskActivation=MaskActivation,
                GlobalAvgPool=GlobalAvgPool, Upsample=Upsample, Twin=Twin, torch=torch)


# ---- the forwards of the composite modules, in PyTorch ---------------------------------------
def _residual_unit(m, x):
    a = m.bn1(x)
    r = m.conv3(m.bn3(m.conv2(m.bn2(m.conv1(a)))))
    return r + (m.shortcut(a) if "shortcut" in m._modules else x)


def _resnext_unit(m, x):
    r = m.bn3(m.conv3(m.bn2(m.conv2(m.bn1(m.conv1(x))))))
    return m.relu(r + (m.shortcut(x) if "shortcut" in m._modules else x))


def _inception_unit(m, x):
    torch = _torch()
    a = m.bn(x)
    r = m.mix(torch.cat([m.branch1(a), m.branch2(a), m.branch3(a)], 1))
    return r + (m.shortcut(a) if "shortcut" in m._modules else x)


def _soft_mask_branch(m, x):
    feats, d = [], x
    for i in range(m.k):
        d = getattr(m, f"down{i}")(getattr(m, f"pool{i}")(d))
        feats.append(d)
    u = feats[-1]
    for i in reversed(range(m.k - 1)):
        u = getattr(m, f"upsample{i}")(u, feats[i].shape[2:]) + getattr(m, f"skip{i}")(feats[i])
        u = getattr(m, f"up{i}")(u)
    return m.head(m.upsample_out(u, x.shape[2:]))


def _local_mask(m, x):
    return m.head(m.units(x))


def _mask_head(m, x):
    return m.body(x)


def _attention_module(m, x):
    a = m.pre(x)
    t, mask = m.trunk(a), m.mask(a)
    return m.post((1 + mask) * t if m.learning == "arl" else mask * t)


def _network(m, x):
    h = m.stem(x)
    for i in range(m.n_stages):
        h = getattr(m, f"stage{i + 1}")(h)
    h = m.final(h)
    if "bn" in m._modules:
        h = m.bn(h)
    return m.fc(m.pool(h))


COMPOSITES = {
    ResidualUnit: _residual_unit, ResNeXtUnit: _resnext_unit, InceptionUnit: _inception_unit,
    SoftMaskBranch: _soft_mask_branch, LocalMask: _local_mask, MaskHead: _mask_head,
    AttentionModule: _attention_module, ResidualAttentionNetwork: _network,
}


def _leaf(m, c):
    """PyTorch's layer for a minirattn leaf module (weights copied by the caller)."""
    tnn = c["torch"].nn
    if isinstance(m, nn.Conv2d):
        return tnn.Conv2d(m.in_ch, m.out_ch, m.kernel_size, m.stride, m.padding,
                          groups=m.groups, bias="bias" in m.params)
    if isinstance(m, nn.BatchNorm2d):
        cls = c["BatchNormReLU"] if m.relu else tnn.BatchNorm2d
        return cls(m.num_features, eps=m.eps, momentum=m.momentum)
    if isinstance(m, nn.Linear):
        return tnn.Linear(m.in_features, m.out_features, bias="bias" in m.params)
    if isinstance(m, nn.ReLU):
        return tnn.ReLU()
    if isinstance(m, nn.Sigmoid):
        return tnn.Sigmoid()
    if isinstance(m, nn.MaxPool2d):
        return tnn.MaxPool2d(m.kernel_size, m.stride, m.padding)
    if isinstance(m, nn.GlobalAvgPool2d):
        return c["GlobalAvgPool"]()
    if isinstance(m, nn.UpsampleBilinear):
        return c["Upsample"]()
    if isinstance(m, nn.MaskActivation):
        return c["MaskActivation"](m.activation)
    return None


def _build(m, c):
    """The twin of module ``m`` and, recursively, of its children."""
    leaf = _leaf(m, c)
    if leaf is not None:
        return leaf
    children = OrderedDict((name, _build(child, c)) for name, child in m._children.items())
    if isinstance(m, nn.Sequential):
        return c["torch"].nn.Sequential(children)
    if type(m) not in COMPOSITES:
        raise TypeError(f"to_torch: no PyTorch twin for {type(m).__name__}: add its forward to "
                        f"minirattn.interop.torch.COMPOSITES")
    settings = {SoftMaskBranch: lambda: dict(k=m.k),
                AttentionModule: lambda: dict(learning=m.learning),
                ResidualAttentionNetwork: lambda: dict(n_stages=len(m.stages))}
    made = settings.get(type(m), dict)()
    return c["Twin"](type(m).__name__, children, COMPOSITES[type(m)], made)


def to_torch(model, dtype=None):
    """A ``torch.nn.Module`` computing what ``model`` (a network, or any module of one: an
    attention module, a unit) computes, holding its weights and running statistics under the
    same ``state_dict`` names, in the same mode; float64 when ``model`` is (or ``dtype``)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"to_torch: expected a minirattn network or module, got "
                        f"{type(model).__name__}")
    c = _classes()
    torch = c["torch"]
    twin = _build(model, c)
    dtype = dtype or str(model.dtype)
    twin = twin.to({"float32": torch.float32, "float64": torch.float64}[dtype])
    state = {k: torch.from_numpy(B.numpy.ascontiguousarray(B.to_numpy(v)).astype(dtype))
             for k, v in model.state_dict().items()}
    missing, unexpected = twin.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:                          # pragma: no cover - a twin out of step
        raise RuntimeError(f"to_torch: the twin's names differ: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    twin.train(model.training)
    return twin


def numpy_state(module_or_state_dict) -> dict:
    """A PyTorch module's (or ``state_dict``'s) tensors as host arrays, without the
    ``num_batches_tracked`` counters minirattn does not keep."""
    state = (module_or_state_dict.state_dict() if hasattr(module_or_state_dict, "state_dict")
             else module_or_state_dict)
    return {k: v.detach().cpu().numpy() for k, v in state.items()
            if not k.endswith("num_batches_tracked")}


def from_torch(module_or_state_dict, arch: str, *, num_classes: int = 10, dtype="float32",
               **build_kwargs):
    """A minirattn network ``arch`` (built as :func:`minirattn.models.build` builds it, with
    ``build_kwargs``) holding the weights of a PyTorch twin or its ``state_dict``; a name or
    shape that does not match is refused, naming it."""
    model = build(arch, num_classes=num_classes, dtype=dtype, **build_kwargs)
    state = numpy_state(module_or_state_dict)
    model.load_state_dict({k: v.astype(dtype) for k, v in state.items()})
    return model
