"""Networks built from one spec: the CIFAR and ImageNet Residual Attention Networks and ResNet.

CIFAR layout (docs/architecture.md, paper Sec. 4.1): 3x3 conv (16) -> residual unit (64) -> m
attention modules at 32x32 -> residual unit (128, stride 2) -> m modules at 16x16 -> residual unit
(256, stride 2) -> m modules at 8x8 -> 3 residual units (256) -> BN-ReLU-global average
pool -> FC. Trunk depth 36m + 20.

ImageNet layout (paper Table 2): 7x7 conv (64, stride 2)-BN-ReLU -> 3x3 max pool (stride 2) ->
residual unit (256) -> stage 1 at 56x56 -> (512, /2) -> stage 2 at 28x28 -> (1024, /2) ->
stage 3 at 14x14 -> 3 residual units (2048, the first /2) at 7x7 -> BN-ReLU-avg pool -> FC.

``spec.unit`` picks the basic unit everything above is made of: the pre-activation residual unit
("preact"), the ResNeXt unit ("resnext": AttentionNeXt; post-activation, so the final BN-ReLU
before the pooling is not there, as in the authors' prototxt) or the Inception unit
("inception": AttentionInception). See models/units.py.
"""

from __future__ import annotations

from dataclasses import dataclass, asdict

from .. import backend
from .. import nn
from ..checks import check_positive_int
from .attention import AttentionModule, check_choices
from .units import UNITS, inner_width, is_post_activation, unit_factory


@dataclass(frozen=True)
class NetworkSpec:
    """Everything that distinguishes one network of the family from another."""
    modules: tuple = (1, 1, 1)          # attention modules per stage
    widths: tuple = (64, 128, 256)      # channels of each stage
    pools: tuple = (3, 2, 1)            # max-pools k in each stage's soft mask branch
    p: int = 1
    t: int = 2
    r: int = 1
    units: tuple = (0, 0, 0)  # plain residual units per stage after the transition (ResNet)
    stem: str = "cifar"  # "cifar": 3x3 conv; "imagenet": 7x7/2 conv-BN-ReLU + max pool
    stem_width: int = 16
    final_width: int = 256
    final_units: int = 3
    final_stride: int = 1
    input_size: int = 32
    in_channels: int = 3
    unit: str = "preact"  # "preact" | "resnext" | "inception" (models/units.py)
    cardinality: int = 32  # groups of the ResNeXt unit's 3x3 convolution

    def replace(self, **kw) -> "NetworkSpec":
        d = asdict(self)
        d.update(kw)
        return NetworkSpec(**d)


def validate_spec(spec: NetworkSpec) -> None:
    """Raise a clear ValueError before any array is allocated."""
    n = len(spec.widths)
    for name in ("modules", "pools", "units"):
        if len(getattr(spec, name)) != n:
            raise ValueError(f"spec.{name} has {len(getattr(spec, name))} entries but there are "
                             f"{n} stages (widths)")
    for name in ("p", "t", "r"):
        check_positive_int(f"spec.{name}", getattr(spec, name), 1)
    for name in ("stem_width", "final_width", "input_size", "in_channels"):
        check_positive_int(f"spec.{name}", getattr(spec, name), 1)
    check_positive_int("spec.final_units", spec.final_units, 0)
    for i, (m, k, u, w) in enumerate(zip(spec.modules, spec.pools, spec.units, spec.widths)):
        check_positive_int(f"spec.modules[{i}]", m, 0)
        check_positive_int(f"spec.units[{i}]", u, 0)
        check_positive_int(f"spec.pools[{i}]", k, 1)
    if spec.unit not in UNITS:
        raise ValueError(f"spec.unit: expected one of {list(UNITS)}, got {spec.unit!r}")
    check_positive_int("spec.cardinality", spec.cardinality, 1)
    for where, w in [(f"spec.widths[{i}]", w) for i, w in enumerate(spec.widths)] + [
            ("spec.final_width", spec.final_width)]:
        inner_width(spec.unit, w, spec.cardinality, who=where)
    if spec.stem not in ("cifar", "imagenet"):
        raise ValueError(f"spec.stem: expected 'cifar' or 'imagenet', got {spec.stem!r}")
    size = spec.input_size
    if spec.stem == "imagenet":
        if size % 4:
            raise ValueError(f"input size {size} is not divisible by 4 as the ImageNet stem (conv "
                             f"/2, pool /2) needs")
        size //= 4
    for i, (m, k) in enumerate(zip(spec.modules, spec.pools)):
        if i > 0:
            if size % 2:
                raise ValueError(f"stage {i + 1} halves an odd size {size} (input size "
                                 f"{spec.input_size})")
            size //= 2
        if m and size % (2 ** k):
            raise ValueError(
                f"input size {spec.input_size} gives stage {i + 1} a {size}x{size} map, which its "
                f"soft mask branch cannot halve {k} times exactly (needs a multiple of {2 ** k})")
    if spec.final_stride == 2 and size % 2:
        raise ValueError(f"the final stride 2 halves an odd size {size}")


class ResidualAttentionNetwork(nn.Module):
    """(N, in_channels, S, S) -> logits (N, num_classes). ``stage_outputs`` keeps each stage's
    output of the last forward (for the feature response of the paper's Fig. 4)."""

    def __init__(self, spec: NetworkSpec = NetworkSpec(), num_classes=10, mask_activation="mixed",
                 learning="arl", mask="soft", *, seed=0, dtype="float32", name="custom"):
        super().__init__()
        validate_spec(spec)
        check_positive_int("num_classes", num_classes, 2)
        check_choices(mask_activation, learning, mask)
        self.spec, self.num_classes, self.name = spec, num_classes, name
        self.config = dict(mask_activation=mask_activation, learning=learning, mask=mask)
        rng = backend.default_rng(seed)
        kw = dict(rng=rng, dtype=dtype)
        unit = unit_factory(spec.unit, spec.cardinality)
        if spec.stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(spec.in_channels, spec.stem_width, 3, padding=1, bias=False, **kw)
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(
                    spec.in_channels, spec.stem_width, 7, stride=2, padding=3, bias=False, **kw
                ),
                nn.BatchNorm2d(spec.stem_width, relu=True, dtype=dtype),
                nn.MaxPool2d(3, 2, 1),
                names=("0", "1", "3"),  # PyTorch's conv, BN, ReLU, pool: the BN applies the ReLU
            )
        ch = spec.stem_width
        self.stages = []
        for i, (w, m, k, u) in enumerate(zip(spec.widths, spec.modules, spec.pools, spec.units)):
            blocks = [unit(ch, w, stride=1 if i == 0 else 2, **kw)]
            blocks += [unit(w, w, **kw) for _ in range(u)]
            blocks += [
                AttentionModule(w, k, spec.p, spec.t, spec.r, mask_activation, learning, mask,
                                unit=unit, **kw)
                for _ in range(m)
            ]
            stage = self.add_module(f"stage{i + 1}", nn.Sequential(*blocks))
            self.stages.append(stage)
            ch = w
        final = []
        for j in range(spec.final_units):
            final.append(unit(ch, spec.final_width, stride=spec.final_stride if j == 0 else 1,
                              **kw))
            ch = spec.final_width
        self.final = nn.Sequential(*final)
        # pre-activation units leave a sum: normalise it before pooling; post-activation units
        # end in BN-ReLU already
        self.bn = (None if is_post_activation(unit) else
                   nn.BatchNorm2d(ch, relu=True, dtype=dtype))
        self.pool = nn.GlobalAvgPool2d()
        self.fc = nn.Linear(ch, num_classes, **kw)
        self.stage_outputs = []

    def _check_input(self, x):
        s = self.spec
        if not backend.is_array(x) or x.ndim != 4:
            raise ValueError(f"{self.name}: expected an (N, {s.in_channels}, {s.input_size}, "
                             f"{s.input_size}) array, got {getattr(x, 'shape', type(x).__name__)}")
        if tuple(x.shape[1:]) != (s.in_channels, s.input_size, s.input_size):
            raise ValueError(f"{self.name}: expected input of shape (N, {s.in_channels}, "
                             f"{s.input_size}, {s.input_size}), got {tuple(x.shape)}")

    def forward(self, x):
        self._check_input(x)
        self._batch = x.shape[0]
        h = self.stem(x)
        self.stage_outputs = []
        for stage in self.stages:
            h = stage(h)
            self.stage_outputs.append(h)
        h = self.final(h)
        if self.bn is not None:
            h = self.bn(h)                              # ReLU(BN(h))
        return self.fc(self.pool(h))

    def backward(self, dlogits):
        expected = (getattr(self, "_batch", "N"), self.num_classes)
        if not backend.is_array(dlogits) or tuple(dlogits.shape) != expected:
            raise ValueError(f"{self.name}.backward: expected the gradient of the logits, shape "
                             f"{expected} (the last forward's batch, num_classes), got "
                             f"{getattr(dlogits, 'shape', type(dlogits).__name__)}")
        d = self.pool.backward(self.fc.backward(dlogits))
        if self.bn is not None:
            d = self.bn.backward(d)
        d = self.final.backward(d)
        for stage in reversed(self.stages):
            d = stage.backward(d)
        return self.stem.backward(d)

    def attention_modules(self):
        """(dotted_name, AttentionModule) pairs in forward order."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, AttentionModule)]

    def extra_repr(self):
        return f"{self.name!r}, num_classes={self.num_classes}, " + ", ".join(
            f"{k}={v!r}" for k, v in self.config.items()
        )
