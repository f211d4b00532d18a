"""The three basic units an attention network can be built from (paper Sec. 3 and 4.3).

Pre-activation bottleneck residual unit (He et al. 2016), as the paper's CIFAR Caffe prototxt:

    a = ReLU(BN(x))
    r = conv1x1(C_out/4) -> BN-ReLU -> conv3x3(C_out/4, stride) -> BN-ReLU -> conv1x1(C_out)  (on a)
    y = r + x                  when the shape is kept
    y = r + conv1x1_stride(a)  (projection shortcut from the first BN-ReLU output) otherwise

ResNeXt unit (Xie et al. 2017), as the authors' AttentionNeXt prototxts: post-activation,
cardinality 32, bottleneck width C_out/2, the stride in the grouped 3x3:

    r = conv1x1(C_out/2)-BN-ReLU -> conv3x3(C_out/2, stride, groups=32)-BN-ReLU -> conv1x1(C_out)-BN
    y = ReLU(r + x)   or   ReLU(r + BN(conv1x1_stride(x)))

Inception unit (a pre-activation Inception-ResNet-A block; the layout the paper leaves open is
chosen here and documented in docs/architecture.md): with b = C_out/8,

    a = ReLU(BN(x))
    branch 1: conv1x1(b, stride)                                          (on a)
    branch 2: conv1x1(b) -> BN-ReLU -> conv3x3(b, stride)
    branch 3: conv1x1(b) -> BN-ReLU -> conv3x3(b) -> BN-ReLU -> conv3x3(b, stride)
    r = concat(branches) (3b channels) -> BN-ReLU -> conv1x1(C_out)
    y = r + x   or   r + conv1x1_stride(a)

All convolutions are bias-free and He-initialised. ReLUs work in place where nothing else reads
the array they overwrite. Every unit's backward is its forward in reverse, summing the gradients
of the two paths where they meet. Derivation: docs/math/networks.md
"""

from __future__ import annotations

from functools import partial

from .. import backend
from .. import nn
from ..checks import check_choice, check_positive_int

UNITS = ("preact", "resnext", "inception")


def _conv(in_ch, out_ch, k, stride=1, groups=1, **kw):
    return nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=k // 2, bias=False, groups=groups,
                     **kw)


def inner_width(kind: str, width: int, cardinality: int = 32, who: str = "unit") -> int:
    """The inner width of a ``kind`` unit of output ``width`` (preact: the bottleneck width/4;
    resnext: the grouped width/2, a multiple of ``cardinality``; inception: each branch's
    width/8), or a ValueError naming ``who``. Units and ``validate_spec`` both ask here."""
    if kind == "resnext":
        if width < 2 or width % 2 or (width // 2) % cardinality:
            raise ValueError(f"{who}: a ResNeXt unit needs width/2 to be a multiple of the "
                             f"cardinality {cardinality}, got width {width}")
        return width // 2
    parts, name, what = {"preact": (4, "a residual", "bottleneck width/4"),
                         "inception": (8, "an Inception", "three branches of width/8")}[kind]
    if width < parts or width % parts:
        raise ValueError(f"{who}: {name} unit needs a positive multiple of {parts}, got {width} "
                         f"({what})")
    return width // parts


def _bn_relu(ch, dtype):
    """BN followed by ReLU, one module (``BatchNorm2d(relu=True)``)."""
    return nn.BatchNorm2d(ch, relu=True, dtype=dtype)


class ResidualUnit(nn.Module):
    """Pre-activation bottleneck: (N, in_ch, H, W) -> (N, out_ch, H/stride, W/stride)."""
    post_activation = False     # its output is a sum, not yet normalised (see MaskHead)

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, *, rng=None, dtype="float32"):
        super().__init__()
        mid = inner_width("preact", out_ch, who="ResidualUnit")
        kw = dict(rng=rng, dtype=dtype)
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride
        self.bn1 = _bn_relu(in_ch, dtype)
        self.conv1 = _conv(in_ch, mid, 1, **kw)
        self.bn2 = _bn_relu(mid, dtype)
        self.conv2 = _conv(mid, mid, 3, stride, **kw)
        self.bn3 = _bn_relu(mid, dtype)
        self.conv3 = _conv(mid, out_ch, 1, **kw)
        self.shortcut = (_conv(in_ch, out_ch, 1, stride, **kw)
                         if (in_ch != out_ch or stride != 1) else None)

    def forward(self, x):
        a = self.bn1(x)                                 # ReLU(BN(x))
        r = self.conv1(a)
        r = self.conv2(self.bn2(r))
        r = self.conv3(self.bn3(r))
        return r + (self.shortcut(a) if self.shortcut is not None else x)

    def backward(self, dy):
        # residual branch, in reverse
        dr = self.bn3.backward(self.conv3.backward(dy))
        dr = self.bn2.backward(self.conv2.backward(dr))
        da = self.conv1.backward(dr)
        if self.shortcut is not None:                   # both branches start at a:
            return self.bn1.backward(self.shortcut.backward(dy, dx_into=da))   # da += ...
        return self.bn1.backward(da, plus=dy)           # identity shortcut adds dy

    def extra_repr(self):
        return f"{self.in_ch}, {self.out_ch}, stride={self.stride}"


class ResNeXtUnit(nn.Module):
    """Post-activation aggregated-transform unit: (N, in_ch, H, W) -> (N, out_ch, H/s, W/s)."""
    post_activation = True      # its output has been through BN and ReLU already

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, *, cardinality: int = 32,
                 rng=None, dtype="float32"):
        super().__init__()
        check_positive_int("cardinality", cardinality, 1)
        mid = inner_width("resnext", out_ch, cardinality, who="ResNeXtUnit")
        kw = dict(rng=rng, dtype=dtype)
        self.in_ch, self.out_ch, self.stride, self.cardinality = in_ch, out_ch, stride, cardinality
        self.conv1 = _conv(in_ch, mid, 1, **kw)
        self.bn1 = _bn_relu(mid, dtype)
        self.conv2 = _conv(mid, mid, 3, stride, groups=cardinality, **kw)
        self.bn2 = _bn_relu(mid, dtype)
        self.conv3 = _conv(mid, out_ch, 1, **kw)
        self.bn3 = nn.BatchNorm2d(out_ch, dtype=dtype)
        self.shortcut = (nn.Sequential(_conv(in_ch, out_ch, 1, stride, **kw),
                                       nn.BatchNorm2d(out_ch, dtype=dtype))
                         if (in_ch != out_ch or stride != 1) else None)
        # not in place: its backward would overwrite the caller's dy, which the mask branch's
        # skip connections read again after this unit's backward
        self.relu = nn.ReLU()

    def forward(self, x):
        r = self.bn1(self.conv1(x))
        r = self.bn2(self.conv2(r))
        r = self.bn3(self.conv3(r))
        s = self.shortcut(x) if self.shortcut is not None else x
        r += s                      # r is this unit's own array: the sum needs no new one
        return self.relu(r)

    def backward(self, dy):
        ds = self.relu.backward(dy)                 # dL/d(r + s): reaches both paths unchanged
        dr = self.conv3.backward(self.bn3.backward(ds))
        dr = self.conv2.backward(self.bn2.backward(dr))
        dx = self.conv1.backward(self.bn1.backward(dr))
        return dx + (self.shortcut.backward(ds) if self.shortcut is not None else ds)

    def extra_repr(self):
        return (f"{self.in_ch}, {self.out_ch}, stride={self.stride}, "
                f"cardinality={self.cardinality}")


class InceptionUnit(nn.Module):
    """Pre-activation Inception-ResNet-A unit: (N, in_ch, H, W) -> (N, out_ch, H/s, W/s)."""
    post_activation = False

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, *, rng=None, dtype="float32"):
        super().__init__()
        b = inner_width("inception", out_ch, who="InceptionUnit")
        kw = dict(rng=rng, dtype=dtype)
        self.in_ch, self.out_ch, self.stride, self.branch_width = in_ch, out_ch, stride, b
        self.bn = _bn_relu(in_ch, dtype)
        self.branch1 = nn.Sequential(_conv(in_ch, b, 1, stride, **kw))
        self.branch2 = nn.Sequential(_conv(in_ch, b, 1, **kw), _bn_relu(b, dtype),
                                     _conv(b, b, 3, stride, **kw))
        self.branch3 = nn.Sequential(_conv(in_ch, b, 1, **kw), _bn_relu(b, dtype),
                                     _conv(b, b, 3, **kw), _bn_relu(b, dtype),
                                     _conv(b, b, 3, stride, **kw))
        self.mix = nn.Sequential(_bn_relu(3 * b, dtype), _conv(3 * b, out_ch, 1, **kw))
        self.shortcut = (_conv(in_ch, out_ch, 1, stride, **kw)
                         if (in_ch != out_ch or stride != 1) else None)

    def _branches(self):
        return self.branch1, self.branch2, self.branch3

    def forward(self, x):
        a = self.bn(x)
        xp = backend.xp_of(a)
        h = xp.concatenate([branch(a) for branch in self._branches()], axis=1)
        r = self.mix(h)
        return r + (self.shortcut(a) if self.shortcut is not None else x)

    def backward(self, dy):
        dh = self.mix.backward(dy)
        b = self.branch_width
        # the concatenation's backward hands each branch its own channels of dh
        da = sum(branch.backward(dh[:, i * b:(i + 1) * b])
                 for i, branch in enumerate(self._branches()))
        if self.shortcut is not None:
            return self.bn.backward(da + self.shortcut.backward(dy))
        return self.bn.backward(da) + dy

    def extra_repr(self):
        return f"{self.in_ch}, {self.out_ch}, stride={self.stride}, branches=3x{self.branch_width}"


def unit_factory(kind: str = "preact", cardinality: int = 32):
    """The constructor ``(in_ch, out_ch, stride=1, *, rng, dtype) -> unit`` for a unit kind."""
    check_choice("unit", kind, UNITS)
    if kind == "resnext":
        return partial(ResNeXtUnit, cardinality=cardinality)
    return ResidualUnit if kind == "preact" else InceptionUnit


def stack(n: int, channels: int, *, unit=ResidualUnit, rng=None, dtype="float32") -> nn.Sequential:
    """n units that keep the shape (an empty Sequential for n = 0)."""
    return nn.Sequential(*[unit(channels, channels, rng=rng, dtype=dtype) for _ in range(n)])


def is_post_activation(unit) -> bool:
    """Whether units made by ``unit`` (a class or a partial of one) end in BN-ReLU."""
    return getattr(getattr(unit, "func", unit), "post_activation", False)
