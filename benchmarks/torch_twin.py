"""The PyTorch twin of minirattn's networks, built from the same NetworkSpec, with the same
module names, so ``state_dict`` keys match one to one (PyTorch's BN counters aside).

Only for benchmarks and cross-checks; minirattn itself never imports torch.
"""
from __future__ import annotations

import torch
import torch.nn as tnn
import torch.nn.functional as TF


class ResidualUnit(tnn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        mid = cout // 4
        self.bn1, self.conv1 = tnn.BatchNorm2d(cin), tnn.Conv2d(cin, mid, 1, bias=False)
        self.bn2, self.conv2 = tnn.BatchNorm2d(mid), tnn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn3, self.conv3 = tnn.BatchNorm2d(mid), tnn.Conv2d(mid, cout, 1, bias=False)
        self.shortcut = tnn.Conv2d(cin, cout, 1, stride, bias=False) if (cin != cout or stride != 1) else None

    def forward(self, x):
        a = TF.relu(self.bn1(x))
        r = self.conv1(a)
        r = self.conv2(TF.relu(self.bn2(r)))
        r = self.conv3(TF.relu(self.bn3(r)))
        return r + (self.shortcut(a) if self.shortcut is not None else x)


def stack(n, c):
    return tnn.Sequential(*[ResidualUnit(c, c) for _ in range(n)])


class MaskHead(tnn.Module):
    def __init__(self, c, mask_activation):
        super().__init__()
        self.body = tnn.Sequential(tnn.BatchNorm2d(c), tnn.ReLU(), tnn.Conv2d(c, c, 1, bias=False),
                                   tnn.BatchNorm2d(c), tnn.ReLU(), tnn.Conv2d(c, c, 1, bias=False))
        self.mask_activation = mask_activation

    def forward(self, x):
        x = self.body(x)
        if self.mask_activation == "mixed":
            return torch.sigmoid(x)
        if self.mask_activation == "channel":
            return x / torch.sqrt((x * x).sum(1, keepdim=True) + 1e-12)
        mu = x.mean((2, 3), keepdim=True)
        var = ((x - mu) ** 2).mean((2, 3), keepdim=True)
        return torch.sigmoid((x - mu) / torch.sqrt(var + 1e-5))


class SoftMaskBranch(tnn.Module):
    def __init__(self, c, k, r, mask_activation):
        super().__init__()
        self.k = k
        for i in range(k):
            self.add_module(f"down{i}", stack(2 * r if i == k - 1 else r, c))
        for i in range(k - 1):
            self.add_module(f"skip{i}", ResidualUnit(c, c))
            self.add_module(f"up{i}", stack(r, c))
        self.head = MaskHead(c, mask_activation)

    def forward(self, x):
        feats, d = [], x
        for i in range(self.k):
            d = getattr(self, f"down{i}")(TF.max_pool2d(d, 3, 2, 1))
            feats.append(d)
        u = feats[-1]
        for i in reversed(range(self.k - 1)):
            u = TF.interpolate(u, size=feats[i].shape[2:], mode="bilinear", align_corners=True)
            u = getattr(self, f"up{i}")(u + getattr(self, f"skip{i}")(feats[i]))
        return self.head(TF.interpolate(u, size=x.shape[2:], mode="bilinear", align_corners=True))


class AttentionModule(tnn.Module):
    def __init__(self, c, k, p, t, r, mask_activation, learning):
        super().__init__()
        self.pre, self.trunk, self.post = stack(p, c), stack(t, c), stack(p, c)
        self.mask = SoftMaskBranch(c, k, r, mask_activation)
        self.learning = learning

    def forward(self, x):
        a = self.pre(x)
        t, m = self.trunk(a), self.mask(a)
        return self.post((1 + m) * t if self.learning == "arl" else m * t)


class Network(tnn.Module):
    def __init__(self, spec, num_classes=10, mask_activation="mixed", learning="arl"):
        super().__init__()
        if spec.stem == "cifar":
            self.stem = tnn.Sequential(tnn.Conv2d(spec.in_channels, spec.stem_width, 3, 1, 1, bias=False))
        else:
            self.stem = tnn.Sequential(tnn.Conv2d(spec.in_channels, spec.stem_width, 7, 2, 3, bias=False),
                                       tnn.BatchNorm2d(spec.stem_width), tnn.ReLU(), tnn.MaxPool2d(3, 2, 1))
        ch = spec.stem_width
        for i, (w, m, k, u) in enumerate(zip(spec.widths, spec.modules, spec.pools, spec.units)):
            blocks = [ResidualUnit(ch, w, 1 if i == 0 else 2)] + [ResidualUnit(w, w) for _ in range(u)]
            blocks += [AttentionModule(w, k, spec.p, spec.t, spec.r, mask_activation, learning) for _ in range(m)]
            self.add_module(f"stage{i + 1}", tnn.Sequential(*blocks))
            ch = w
        final = []
        for j in range(spec.final_units):
            final.append(ResidualUnit(ch, spec.final_width, spec.final_stride if j == 0 else 1))
            ch = spec.final_width
        self.final = tnn.Sequential(*final)
        self.bn, self.fc = tnn.BatchNorm2d(ch), tnn.Linear(ch, num_classes)
        self.n_stages = len(spec.widths)

    def forward(self, x):
        h = self.stem(x)
        for i in range(self.n_stages):
            h = getattr(self, f"stage{i + 1}")(h)
        h = TF.relu(self.bn(self.final(h)))
        return self.fc(h.mean((2, 3)))


def numpy_state(model):
    """The twin's state_dict as NumPy arrays (what minirattn's load_state_dict takes)."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
