"""The pre-activation bottleneck residual unit (He et al. 2016), as the paper's Caffe prototxt.

    a = ReLU(BN(x))
    r = conv1x1(C_out/4) -> BN-ReLU -> conv3x3(C_out/4, stride) -> BN-ReLU -> conv1x1(C_out)  (on a)
    y = r + x                  when the shape is kept
    y = r + conv1x1_stride(a)  (projection shortcut from the first BN-ReLU output) otherwise

All convolutions are bias-free and He-initialised. The ReLUs work in place (each overwrites the
batch norm output before it, which nothing else reads).
Derivation of the backward: docs/math/networks.md
"""

from __future__ import annotations

from .. import nn


class ResidualUnit(nn.Module):
    """(N, in_ch, H, W) -> (N, out_ch, H/stride, W/stride)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, *, rng=None, dtype="float32"):
        super().__init__()
        if out_ch < 4 or out_ch % 4:
            raise ValueError(f"ResidualUnit: out_ch must be a positive multiple of 4 (bottleneck "
                             f"out_ch/4), got {out_ch}")
        mid = out_ch // 4
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride
        self.bn1, self.relu1 = nn.BatchNorm2d(in_ch, dtype=dtype), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_ch, mid, 1, bias=False, rng=rng, dtype=dtype)
        self.bn2, self.relu2 = nn.BatchNorm2d(mid, dtype=dtype), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(
            mid, mid, 3, stride=stride, padding=1, bias=False, rng=rng, dtype=dtype
        )
        self.bn3, self.relu3 = nn.BatchNorm2d(mid, dtype=dtype), nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(mid, out_ch, 1, bias=False, rng=rng, dtype=dtype)
        self.shortcut = (
            nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False, rng=rng, dtype=dtype)
            if (in_ch != out_ch or stride != 1)
            else None
        )

    def forward(self, x):
        a = self.relu1(self.bn1(x))
        r = self.conv1(a)
        r = self.conv2(self.relu2(self.bn2(r)))
        r = self.conv3(self.relu3(self.bn3(r)))
        return r + (self.shortcut(a) if self.shortcut is not None else x)

    def backward(self, dy):
        # residual branch, in reverse
        dr = self.bn3.backward(self.relu3.backward(self.conv3.backward(dy)))
        dr = self.bn2.backward(self.relu2.backward(self.conv2.backward(dr)))
        da = self.conv1.backward(dr)
        if self.shortcut is not None:
            da = da + self.shortcut.backward(dy)        # both branches start at a
            return self.bn1.backward(self.relu1.backward(da))
        return self.bn1.backward(self.relu1.backward(da)) + dy   # identity shortcut adds dy

    def extra_repr(self):
        return f"{self.in_ch}, {self.out_ch}, stride={self.stride}"


def stack(n: int, channels: int, *, rng=None, dtype="float32") -> nn.Sequential:
    """n residual units that keep the shape (an empty Sequential for n = 0)."""
    return nn.Sequential(
        *[ResidualUnit(channels, channels, rng=rng, dtype=dtype) for _ in range(n)]
    )
