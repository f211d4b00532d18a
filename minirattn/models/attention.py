"""The attention module: trunk branch, soft mask branch, and their combination (paper Sec. 3).

    a = pre(x)                  p residual units
    T = trunk(a)                t residual units
    M = mask(a)                 soft mask branch (bottom-up top-down) or local convolutions
    H = (1 + M) * T             ARL (Eq. 3), or M * T for NAL
    y = post(H)                 p residual units

Soft mask branch with k max-pools (stage 1/2/3 of the CIFAR network: k = 3/2/1):
going down, each max-pool is followed by r units (2r at the lowest resolution);
coming up, each bilinear upsample to the next level's size is summed with that
level's skip connection (one residual unit on the down-path feature) and followed
by r units; the last upsample returns to the trunk's size and feeds
BN-ReLU-1x1-BN-ReLU-1x1 and the mask activation f1/f2/f3 (1x1-BN-ReLU-1x1 when the units are
post-activation ResNeXt units, whose outputs are normalised already, as in the authors'
AttentionNeXt prototxts).

Every unit in a module (p, t, r, the skips and the local mask's) is made by one ``unit``
constructor (models/units.py), so one argument turns an Attention network into an AttentionNeXt
or AttentionInception one.

Every backward is the reverse of its forward, summing gradients where branches
join. Derivation: docs/math/networks.md
"""
from __future__ import annotations

from .. import functional as F
from .. import nn
from ..checks import check_choice
from .units import ResidualUnit, is_post_activation, stack

MASKS = ("soft", "local")


def check_choices(mask_activation="mixed", learning="arl", mask="soft"):
    """Raise a clear ValueError for an unknown mask activation, learning rule or mask."""
    for name, value, choices in (("mask_activation", mask_activation, tuple(F.MASK_ACTIVATIONS)),
                                 ("learning", learning, F.LEARNING_RULES), ("mask", mask, MASKS)):
        check_choice(name, value, choices)


class MaskHead(nn.Module):
    """BN-ReLU-conv1x1-BN-ReLU-conv1x1-activation, the end of every mask branch (without the
    first BN-ReLU after post-activation units); each BN-ReLU pair is one
    ``BatchNorm2d(relu=True)``."""

    def __init__(self, channels, mask_activation="mixed", *, pre_activation=True, rng=None,
                 dtype="float32"):
        super().__init__()
        first = (nn.BatchNorm2d(channels, relu=True, dtype=dtype),) if pre_activation else ()
        layers = (*first,
                  nn.Conv2d(channels, channels, 1, bias=False, rng=rng, dtype=dtype),
                  nn.BatchNorm2d(channels, relu=True, dtype=dtype),
                  nn.Conv2d(channels, channels, 1, bias=False, rng=rng, dtype=dtype),
                  nn.MaskActivation(mask_activation))
        # numbered as PyTorch numbers BN, ReLU, conv, BN, ReLU, conv, act (each BN here applies
        # the ReLU after it), so that state_dict keys match a model of separate modules
        names = ("0", "2", "3", "5", "6") if pre_activation else ("0", "1", "3", "4")
        self.body = nn.Sequential(*layers, names=names)

    def forward(self, x):
        return self.body(x)

    def backward(self, dm):
        return self.body.backward(dm)


class SoftMaskBranch(nn.Module):
    """Bottom-up top-down mask with ``k`` max-pools: (N, C, H, W) -> M of the same shape."""

    def __init__(self, channels, k, r=1, mask_activation="mixed", *, unit=ResidualUnit,
                 rng=None, dtype="float32"):
        super().__init__()
        self.k, self.r = k, r
        kw = dict(rng=rng, dtype=dtype)
        for i in range(k):
            self.add_module(f"pool{i}", nn.MaxPool2d(3, 2, 1))
            self.add_module(f"down{i}", stack(2 * r if i == k - 1 else r, channels, unit=unit,
                                              **kw))
        for i in range(k - 1):
            self.add_module(f"skip{i}", unit(channels, channels, **kw))
            self.add_module(f"upsample{i}", nn.UpsampleBilinear())
            self.add_module(f"up{i}", stack(r, channels, unit=unit, **kw))
        self.upsample_out = nn.UpsampleBilinear()
        self.head = MaskHead(channels, mask_activation, pre_activation=not is_post_activation(unit),
                             **kw)

    def _m(self, kind, i):
        return getattr(self, f"{kind}{i}")

    def forward(self, x):
        feats, d = [], x
        for i in range(self.k):                               # bottom-up: pool, then r units
            d = self._m("down", i)(self._m("pool", i)(d))
            feats.append(d)
        u = feats[-1]
        for i in reversed(range(self.k - 1)):  # top-down: upsample + skip, then r units
            u = self._m("upsample", i)(u, feats[i].shape[2:]) + self._m("skip", i)(feats[i])
            u = self._m("up", i)(u)
        return self.head(self.upsample_out(u, x.shape[2:]))

    def backward(self, dm):
        du = self.upsample_out.backward(self.head.backward(dm))
        dfeat_skip = [None] * (self.k - 1)
        for i in range(self.k - 1):                           # reverse of the top-down loop
            du = self._m("up", i).backward(du)
            dfeat_skip[i] = self._m("skip", i).backward(du)   # the sum fans the gradient out
            du = self._m("upsample", i).backward(du)
        g = du                                                # dL/dfeats[k-1]
        for i in reversed(range(self.k)):                     # reverse of the bottom-up loop
            if i < self.k - 1:
                g = g + dfeat_skip[i]  # feats[i] fed the skip and the next pool
            g = self._m("pool", i).backward(self._m("down", i).backward(g))
        return g

    def extra_repr(self):
        return f"k={self.k}, r={self.r}"


class LocalMask(nn.Module):
    """Table 4's "local convolutions" mask: residual units at full resolution, same head."""

    def __init__(self, channels, n_units=3, mask_activation="mixed", *, unit=ResidualUnit,
                 rng=None, dtype="float32"):
        super().__init__()
        self.units = stack(n_units, channels, unit=unit, rng=rng, dtype=dtype)
        self.head = MaskHead(channels, mask_activation, pre_activation=not is_post_activation(unit),
                             rng=rng, dtype=dtype)

    def forward(self, x):
        return self.head(self.units(x))

    def backward(self, dm):
        return self.units.backward(self.head.backward(dm))


class AttentionModule(nn.Module):
    """(N, C, H, W) -> (N, C, H, W). Keeps its last mask ``last_mask`` (M) and trunk output
    ``last_trunk`` (T) for inspection."""

    def __init__(self, channels, k, p=1, t=2, r=1, mask_activation="mixed", learning="arl",
                 mask="soft", *, unit=ResidualUnit, rng=None, dtype="float32"):
        super().__init__()
        check_choices(mask_activation, learning, mask)
        kw = dict(unit=unit, rng=rng, dtype=dtype)
        self.learning, self.mask_activation, self.mask_kind = learning, mask_activation, mask
        self.pre = stack(p, channels, **kw)
        self.trunk = stack(t, channels, **kw)
        self.mask = (SoftMaskBranch(channels, k, r, mask_activation, **kw) if mask == "soft"
                     else LocalMask(channels, 3, mask_activation, **kw))
        self.post = stack(p, channels, **kw)
        self.last_mask = self.last_trunk = None
        self._cache = None

    def forward(self, x):
        a = self.pre(x)
        t = self.trunk(a)
        m = self.mask(a)
        h, self._cache = F.attention_residual_forward(t, m, self.learning)
        self.last_mask, self.last_trunk = m, t
        return self.post(h)

    def backward(self, dy):
        dh = self.post.backward(dy)
        dt, dm = F.attention_residual_backward(dh, self._need_cache(self._cache))
        da = self.trunk.backward(dt) + self.mask.backward(dm)   # a fed both branches
        return self.pre.backward(da)

    def extra_repr(self):
        return (f"learning={self.learning!r}, mask_activation={self.mask_activation!r}, "
                f"mask={self.mask_kind!r}")
